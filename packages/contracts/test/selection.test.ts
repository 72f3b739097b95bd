// Statistical checks of the weighted random selection: over a few hundred createTask draws (each on a snapshot
// that is reverted, so the network is the same every time), the observed frequencies must fit the weights
// (chi-square goodness of fit). The draws are seeded by prevrandao and the task hash; anvil picks a random
// prevrandao per block, so runs differ: the test rejects at p = 1e-6 (a false alarm once in a million runs),
// which still catches a lost weighting (uniform draws would give chi² ≈ 37 for the groups, ≈ 220 inside a group).
import { type Address, createWalletClient, http, keccak256, parseEther, toHex } from "viem";
import { describe, expect, test } from "vitest";
import { qosAbi } from "../src/generated/index.js";
import { type Crynux, GPT, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux();
const CREATOR = 20;
const SAMPLES = 300;

/** Chi-square critical values at p = 1e-6 by degrees of freedom. */
const CHI2_CRITICAL: Record<number, number> = { 1: 23.928, 3: 30.665 };

function chiSquare(observed: number[], expected: number[]): number {
  return observed.reduce((sum, o, i) => sum + (o - expected[i]!) ** 2 / expected[i]!, 0);
}

/** Samples `SAMPLES` task starts and returns the selected nodes of each. */
async function sample(c: Crynux, taskType: number): Promise<Address[][]> {
  const draws: Address[][] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const snapshot = await c.anvil.testClient.snapshot();
    const { nodes } = await c.createTask(CREATOR, { taskType, taskHash: keccak256(toHex(`draw ${i}`)) });
    expect(nodes).toHaveLength(3);
    draws.push(nodes);
    await c.anvil.testClient.revert({ id: snapshot });
  }
  return draws;
}

/** Gives a node a QoS history (before it joins) by recording task scores as the Node contract would. */
async function setHistory(c: Crynux, node: Address, scores: number[]) {
  await c.anvil.testClient.impersonateAccount({ address: c.addr.node });
  await c.anvil.testClient.setBalance({ address: c.addr.node, value: parseEther("10") });
  const asNode = createWalletClient({
    account: c.addr.node,
    chain: c.anvil.chain,
    transport: http(c.anvil.rpcUrl),
  });
  for (const score of scores) {
    const hash = await asNode.writeContract({
      address: c.addr.qos,
      abi: qosAbi,
      functionName: "recordTask",
      args: [node, BigInt(score)],
    });
    await c.anvil.publicClient.waitForTransactionReceipt({ hash });
  }
  await c.anvil.testClient.stopImpersonatingAccount({ address: c.addr.node });
}

/**
 * Probability that each node is the one left out when 3 of 4 are drawn one by one, each draw proportional to
 * the weights of the nodes not drawn yet.
 */
function leftOutProbabilities(weights: number[]): number[] {
  const result = weights.map(() => 0);
  const walk = (remaining: number[], p: number, depth: number) => {
    if (depth === 3) {
      result[remaining[0]!]! += p;
      return;
    }
    const total = remaining.reduce((s, i) => s + weights[i]!, 0);
    for (const i of remaining) {
      walk(
        remaining.filter((j) => j !== i),
        (p * weights[i]!) / total,
        depth + 1,
      );
    }
  };
  walk(
    weights.map((_, i) => i),
    1,
    0,
  );
  return result;
}

describe("selection weights (statistical)", () => {
  test("GPT: a group is picked in proportion to the sum of its nodes' weights", {
    timeout: 300_000,
  }, async () => {
    const c = crynux();
    for (const i of [1, 2, 3]) await c.join(i, "A", 24n, "rt");
    for (const i of [4, 5, 6, 7, 8, 9]) await c.join(i, "B", 24n, "rt");
    const draws = await sample(c, GPT);
    const groupA = new Set([1, 2, 3].map((i) => c.account(i).toLowerCase()));
    const inA = draws.filter((nodes) => nodes.every((n) => groupA.has(n.toLowerCase()))).length;
    // never mixed: all 3 in A or all 3 in B
    for (const nodes of draws) {
      const a = nodes.filter((n) => groupA.has(n.toLowerCase())).length;
      expect(a === 0 || a === 3).toBe(true);
    }
    const observed = [inA, SAMPLES - inA];
    const expected = [SAMPLES / 3, (SAMPLES * 2) / 3]; // weight sums 60 and 120
    const chi2 = chiSquare(observed, expected);
    console.log(
      `group draws ${JSON.stringify(observed)} expected ${JSON.stringify(expected)}: chi² ${chi2.toFixed(2)}`,
    );
    expect(chi2).toBeLessThan(CHI2_CRITICAL[1]!);
  });

  test("GPT: inside a group a node is drawn in proportion to its QoS weight", {
    timeout: 300_000,
  }, async () => {
    const c = crynux();
    // node 4 has a lifetime average of 5 (weight 5), the others are new (weight 20)
    await setHistory(c, c.account(4), [5, 5, 5, 5]);
    for (const i of [1, 2, 3, 4]) await c.join(i, "A", 24n, "rt");
    const weights = await Promise.all(
      [1, 2, 3, 4].map(async (i) => Number((await c.nodeInfo(c.account(i))).weight)),
    );
    expect(weights).toEqual([20, 20, 20, 5]);
    const draws = await sample(c, GPT);
    const accounts = [1, 2, 3, 4].map((i) => c.account(i).toLowerCase());
    const observed = [0, 0, 0, 0];
    for (const nodes of draws) {
      const picked = new Set(nodes.map((n) => n.toLowerCase()));
      expect(picked.size).toBe(3); // nobody twice
      observed[accounts.findIndex((a) => !picked.has(a))]! += 1;
    }
    const expected = leftOutProbabilities(weights).map((p) => p * SAMPLES);
    const chi2 = chiSquare(observed, expected);
    console.log(
      `left-out counts ${JSON.stringify(observed)} expected ${JSON.stringify(expected.map((x) => Number(x.toFixed(1))))}: chi² ${chi2.toFixed(2)}`,
    );
    expect(chi2).toBeLessThan(CHI2_CRITICAL[3]!);
    // the low-weight node is left out most of the time
    expect(observed[3]!).toBeGreaterThan(observed[0]! + observed[1]! + observed[2]!);
  });

  test("SD: nodes of all groups are drawn in proportion to their weights", { timeout: 300_000 }, async () => {
    const c = crynux();
    await setHistory(c, c.account(4), [10, 10]);
    await c.join(1, "A", 24n, "rt");
    await c.join(2, "A", 24n, "rt");
    await c.join(3, "B", 16n, "rt");
    await c.join(4, "C", 24n, "rt");
    const weights = await Promise.all(
      [1, 2, 3, 4].map(async (i) => Number((await c.nodeInfo(c.account(i))).weight)),
    );
    expect(weights).toEqual([20, 20, 20, 10]);
    const draws = await sample(c, 0);
    const accounts = [1, 2, 3, 4].map((i) => c.account(i).toLowerCase());
    const observed = [0, 0, 0, 0];
    for (const nodes of draws) {
      const picked = new Set(nodes.map((n) => n.toLowerCase()));
      expect(picked.size).toBe(3);
      observed[accounts.findIndex((a) => !picked.has(a))]! += 1;
    }
    // SD draws a group by its weight sum, then a node in it by weight: overall each draw is proportional to the
    // node's weight among the nodes not drawn yet, as for one group.
    const expected = leftOutProbabilities(weights).map((p) => p * SAMPLES);
    const chi2 = chiSquare(observed, expected);
    console.log(
      `SD left-out counts ${JSON.stringify(observed)} expected ${JSON.stringify(expected.map((x) => Number(x.toFixed(1))))}: chi² ${chi2.toFixed(2)}`,
    );
    expect(chi2).toBeLessThan(CHI2_CRITICAL[3]!);
  });
});
