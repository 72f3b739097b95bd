import { type Hex, keccak256, toHex } from "viem";
import { describe, expect, test } from "vitest";
import { CNX, type Crynux, GPT, SD, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux({ queueSizeLimit: 200 });
const R: Hex = keccak256(toHex("result"));
const CREATOR = 20;

async function fullTask(c: Crynux, taskType = GPT, result: Hex = R) {
  const created = await c.createTask(CREATOR, { taskType, fee: 50n * CNX, cap: 1n });
  const gas: bigint[] = [created.receipt.gasUsed];
  const { taskId, nodes } = created;
  for (let r = 0; r < 3; r++) gas.push((await c.commit(taskId, r, nodes[r]!, result)).gasUsed);
  for (let r = 0; r < 3; r++) gas.push((await c.disclose(taskId, r, nodes[r]!, result)).gasUsed);
  gas.push((await c.uploaded(taskId, 0, nodes[0]!)).gasUsed);
  return gas;
}

const sum = (xs: bigint[]) => xs.reduce((a, b) => a + b, 0n);

describe("gas", () => {
  test("a full successful GPT task stays under 60 % of the original's 2.80 M", async () => {
    const c = crynux();
    for (let i = 1; i <= 6; i++) await c.join(i, "NVIDIA GeForce RTX 4090", 24n, "rt");
    const first = await fullTask(c);
    const steady = await fullTask(c);
    const sd = await fullTask(c, SD, `0x${"0123456789abcdef".repeat(6)}`);
    console.log(
      `GPT task gas: first ${sum(first)} [${first.join(", ")}]\n` +
        `GPT task gas: steady ${sum(steady)} [${steady.join(", ")}]\n` +
        `SD task gas (6 images): ${sum(sd)} [${sd.join(", ")}]`,
    );
    expect(sum(first)).toBeLessThanOrEqual(1_680_000n);
    expect(sum(steady)).toBeLessThanOrEqual(1_680_000n);
  });

  test("node actions and failure paths (logged)", async () => {
    const c = crynux();
    const j1 = await c.join(1, "A", 24n, "rt");
    const j2 = await c.join(2, "A", 24n, "rt");
    const j3 = await c.join(3, "B", 24n, "rt");
    const p = await c.tx(3, "node", "pause", []);
    const r = await c.tx(3, "node", "resume", []);
    const q = await c.tx(3, "node", "quit", []);
    console.log(
      `join first ${j1.gasUsed} / same group ${j2.gasUsed} / new group ${j3.gasUsed}; pause ${p.gasUsed} resume ${r.gasUsed} quit ${q.gasUsed}`,
    );
    await c.join(3, "A", 24n, "rt");
    const cheat: Hex = keccak256(toHex("cheat"));
    const path = async (results: Hex[]) => {
      const created = await c.createTask(CREATOR, { fee: 50n * CNX });
      let gas = created.receipt.gasUsed;
      const { taskId, nodes } = created;
      for (let k = 0; k < 3; k++) gas += (await c.commit(taskId, k, nodes[k]!, results[k]!)).gasUsed;
      for (let k = 0; k < 3; k++) gas += (await c.disclose(taskId, k, nodes[k]!, results[k]!)).gasUsed;
      const t = await c.getTask(taskId);
      if (t.state === 3) gas += (await c.uploaded(taskId, t.resultRound, t.nodes[t.resultRound]!)).gasUsed;
      return gas;
    };
    const errors = await path(["0x", "0x", "0x"]);
    const mismatch = await path([R, cheat, keccak256(toHex("x"))]);
    const slashed = await path([R, R, cheat]);
    console.log(`3 error reports ${errors}; 3 different results ${mismatch}; one cheater slashed ${slashed}`);
  });

  test("queued createTask is O(log n) in the queue length", { timeout: 120_000 }, async () => {
    const c = crynux();
    const costs: Record<number, bigint> = {};
    for (let n = 0; n < 128; n++) {
      // increasing fees: every new task is a new maximum (longest sift-up)
      const { receipt, queued } = await c.createTask(CREATOR, { fee: BigInt(n + 1) * CNX });
      expect(queued).toBe(true);
      if ([0, 1, 10, 50, 100, 127].includes(n)) costs[n] = receipt.gasUsed;
    }
    console.log(
      `queued createTask gas by queue length: ${JSON.stringify(costs, (_k, v) => (typeof v === "bigint" ? Number(v) : v))}`,
    );
    expect(costs[127]! - costs[1]!).toBeLessThan(120_000n);
  });
});
