/**
 * The contracts and @crynux/pricing compute the same things (task value, fee split): the same cases run
 * through both here, against a real anvil, and any difference fails.
 */
import {
  DEFAULT_TIME_PARAMETERS,
  estimateMillis,
  feeShares,
  shouldKickOut,
  taskValue,
} from "@crynux/pricing";
import fc from "fast-check";
import { type Hex, keccak256, toHex } from "viem";
import { describe, expect, test } from "vitest";
import { CNX, type Crynux, GPT, SD, Status, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux();
const CREATOR = 20;
const AGREED: Hex = keccak256(toHex("the agreed result"));
const OTHER: Hex = keccak256(toHex("a cheater's result"));

const permutations = [
  [0, 1, 2],
  [0, 2, 1],
  [1, 0, 2],
  [1, 2, 0],
  [2, 0, 1],
  [2, 1, 0],
];

/** Runs one GPT task through commit and disclose in the given orders; returns what each round was paid. */
async function runTask(
  c: Crynux,
  fee: bigint,
  commitOrder: number[],
  discloseOrder: number[],
  results: Hex[] = [AGREED, AGREED, AGREED],
): Promise<{ paid: bigint[]; refunded: bigint }> {
  for (let i = 1; i <= 3; i++)
    await c.join(i, "NVIDIA GeForce RTX 4090", 24n, "node-llama-cpp@3.22.1/cpu/t1/b512/c4096");
  const { taskId, nodes } = await c.createTask(CREATOR, { taskType: GPT, fee, cap: 100n });
  const receipts = [];
  for (const round of commitOrder)
    receipts.push(await c.commit(taskId, round, nodes[round]!, results[round]!));
  for (const round of discloseOrder)
    receipts.push(await c.disclose(taskId, round, nodes[round]!, results[round]!));
  const resultRound = Number((await c.getTask(taskId)).resultRound);
  receipts.push(await c.uploaded(taskId, resultRound, nodes[resultRound]!));
  const paid = [0n, 0n, 0n];
  let refunded = 0n;
  for (const receipt of receipts) {
    for (const event of c.events(receipt, "TaskNodeSuccess")) {
      paid[nodes.findIndex((n) => n.toLowerCase() === String(event.args.node).toLowerCase())]! += event.args
        .fee as bigint;
    }
    for (const event of c.events(receipt, "TaskRefunded")) refunded += event.args.amount as bigint;
  }
  return { paid, refunded };
}

describe("task value", () => {
  test("Task.taskValue equals taskValue(fee, estimateMillis(type, cap)) with the default constants", async () => {
    const c = crynux();
    const cases = fc.sample(
      fc.record({
        taskType: fc.constantFrom(SD, GPT),
        fee: fc.bigInt({ min: 1n, max: 10n ** 24n }),
        cap: fc.bigInt({ min: 1n, max: 1_000_000n }),
      }),
      { numRuns: 60, seed: 42 },
    );
    cases.push(
      { taskType: SD, fee: 10n * CNX, cap: 1n },
      { taskType: SD, fee: 15n * CNX, cap: 2n },
      { taskType: GPT, fee: 1n, cap: 1n },
    );
    for (const { taskType, fee, cap } of cases) {
      const onChain = await c.read<bigint>("task", "taskValue", [taskType, fee, cap]);
      expect(onChain, `type ${taskType} fee ${fee} cap ${cap}`).toBe(
        taskValue(fee, estimateMillis(taskType as 0 | 1, cap, DEFAULT_TIME_PARAMETERS)),
      );
    }
  });
});

describe("fee split", () => {
  const fee = 10n * CNX + 123_457n; // not a multiple of 50: the division leaves dust
  for (const commitOrder of permutations) {
    for (const discloseOrder of permutations) {
      test(`commit order ${commitOrder.join("")}, disclose order ${discloseOrder.join("")}`, async () => {
        const { paid, refunded } = await runTask(crynux(), fee, commitOrder, discloseOrder);
        const expected = feeShares({ fee, commitOrder, discloseOrder });
        expect(paid).toEqual(expected.shares);
        expect(refunded).toBe(expected.refund);
      });
    }
  }

  test("a cheater's share goes back to the creator, as feeShares says", async () => {
    const { paid, refunded } = await runTask(crynux(), fee, [2, 0, 1], [1, 2, 0], [AGREED, OTHER, AGREED]);
    const expected = feeShares({
      fee,
      commitOrder: [2, 0, 1],
      discloseOrder: [1, 2, 0],
      resultRound: 2,
      slashedRounds: [1],
    });
    expect(paid).toEqual(expected.shares);
    expect(refunded).toBe(expected.refund);
  });
});

/** How the watched node does in one task, and the task score that gives it. */
const OUTCOMES = {
  first: 20, // commits and discloses first
  last: 12, // commits and discloses last
  "commit-first-then-timeout": 10, // commits first; nobody discloses; cancelled after the deadline
  "commit-second-then-timeout": 9,
  absent: 0, // never commits; the others do; cancelled after the deadline (penalized, paused)
  "absent-settled": 0, // never commits; the others settle 2-of-2 after the commit deadline
} as const;
type Outcome = keyof typeof OUTCOMES;

describe("kick-out", () => {
  const RUNTIME = "node-llama-cpp@3.22.1/cpu/t1/b512/c4096";

  /** Runs one task in which the watched node (account 1) has the given outcome; returns whether it was kicked. */
  async function runOutcome(c: Crynux, outcome: Outcome): Promise<boolean> {
    for (const i of [2, 3])
      if ((await c.status(i)) === Status.QUIT) await c.join(i, "NVIDIA GeForce RTX 4090", 24n, RUNTIME);
    // an absent node is paused; it comes back
    if ((await c.status(1)) === Status.PAUSED) await c.tx(1, "node", "resume", []);
    const { taskId, nodes } = await c.createTask(CREATOR, { taskType: GPT, fee: 10n * CNX, cap: 10n });
    const me = nodes.findIndex((n) => n.toLowerCase() === c.account(1).toLowerCase());
    const others = [0, 1, 2].filter((r) => r !== me);
    const receipts = [];
    const commit = (round: number) => c.commit(taskId, round, nodes[round]!, AGREED);
    const disclose = (round: number) => c.disclose(taskId, round, nodes[round]!, AGREED);
    const timeout = async () => {
      await c.anvil.testClient.increaseTime({ seconds: 15 * 60 + 1 });
      await c.anvil.testClient.mine({ blocks: 1 });
      receipts.push(await c.tx(CREATOR, "task", "cancelTask", [taskId]));
    };
    if (outcome === "first" || outcome === "last") {
      const order = outcome === "first" ? [me, ...others] : [...others, me];
      for (const r of order) receipts.push(await commit(r));
      for (const r of order) receipts.push(await disclose(r));
      receipts.push(await c.uploaded(taskId, order[0]!, nodes[order[0]!]!));
    } else if (outcome === "absent") {
      for (const r of others) receipts.push(await commit(r));
      await timeout();
    } else if (outcome === "absent-settled") {
      for (const r of others) receipts.push(await commit(r));
      await c.anvil.testClient.increaseTime({ seconds: 10 * 60 + 1 });
      await c.anvil.testClient.mine({ blocks: 1 });
      for (const r of others) receipts.push(await disclose(r));
      receipts.push(await c.uploaded(taskId, others[0]!, nodes[others[0]!]!));
    } else {
      const order = outcome === "commit-first-then-timeout" ? [me, ...others] : [others[0]!, me, others[1]!];
      for (const r of order) receipts.push(await commit(r));
      await timeout();
    }
    const kicked = receipts.some((receipt) =>
      c
        .events(receipt, "NodeKickedOut")
        .some((e) => String(e.args.node).toLowerCase() === c.account(1).toLowerCase()),
    );
    expect(kicked).toBe((await c.status(1)) === Status.QUIT);
    return kicked;
  }

  const sequences: Outcome[][] = [
    ["absent", "absent"], // 0 + 0 + 20 (missing slot) = 20: kicked
    ["absent-settled", "absent"], // the same
    ["absent", "commit-first-then-timeout", "commit-first-then-timeout"], // 20: kicked
    ["absent", "last", "commit-second-then-timeout"], // 21: stays
    ["last", "last", "last"], // 36: the slowest honest node stays
    ["first", "absent", "absent"], // 20: kicked
    ["commit-second-then-timeout", "absent", "last", "absent"], // 9, 0, 12 = 21 stays, then 0 + 12 + 0 = 12: kicked
    ...fc.sample(
      fc.array(fc.constantFrom(...(Object.keys(OUTCOMES) as Outcome[])), { minLength: 1, maxLength: 4 }),
      {
        numRuns: 6,
        seed: 7,
      },
    ),
  ];
  for (const sequence of sequences) {
    test(`${sequence.join(", ")}: the contract kicks exactly when shouldKickOut says so`, async () => {
      const c = crynux();
      for (const i of [1, 2, 3]) await c.join(i, "NVIDIA GeForce RTX 4090", 24n, RUNTIME);
      const scores: number[] = [];
      for (const outcome of sequence) {
        scores.push(OUTCOMES[outcome]);
        const kicked = await runOutcome(c, outcome);
        expect(kicked, `after scores [${scores.join(", ")}]`).toBe(shouldKickOut(scores));
        if (kicked) break;
      }
    });
  }
});
