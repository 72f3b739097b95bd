import fc from "fast-check";
import { type Address, type Hex, keccak256, toHex } from "viem";
import { describe, expect, test } from "vitest";
import { CNX, type Crynux, Status, TaskState, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux({ queueSizeLimit: 4 });
const R1: Hex = keccak256(toHex("r1"));
const R2: Hex = keccak256(toHex("r2"));
const NODES = [1, 2, 3, 4, 5, 6, 7];
const CREATORS = [20, 21];
const GROUPS = [
  ["A", 24n, "rt"],
  ["A", 24n, "rt"],
  ["B", 16n, "rt"],
] as const;

const R3: Hex = keccak256(toHex("r3"));

/** The result a round discloses, by task: all agree, a cheater, two errors, 3 different, one error. */
function resultOf(taskId: bigint, round: number): Hex {
  switch (Number(taskId % 6n)) {
    case 1:
      return round === 1 ? R2 : R1;
    case 2:
      return round === 1 ? R1 : "0x";
    case 3:
      return [R1, R2, R3][round]!;
    case 4:
      return round === 0 ? "0x" : R1;
    default:
      return R1;
  }
}

type Op =
  | { k: "join" | "pause" | "resume" | "quit"; i: number; g: number }
  | { k: "create"; who: number; type: number; fee: number; vram: number }
  | { k: "act"; pick: number; steps: number }
  | { k: "timeout"; pick: number }
  | { k: "lapse" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constantFrom("join" as const, "pause" as const, "resume" as const, "quit" as const),
      i: fc.constantFrom(...NODES),
      g: fc.nat({ max: GROUPS.length - 1 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("create" as const),
      who: fc.constantFrom(...CREATORS),
      type: fc.nat({ max: 1 }),
      fee: fc.integer({ min: 1, max: 100 }),
      vram: fc.constantFrom(0, 16, 24),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant("act" as const),
      pick: fc.nat(),
      steps: fc.integer({ min: 1, max: 8 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("timeout" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("lapse" as const) }) },
);

/** Tasks where one node never commits (it is absent): every 4th, the round taskId % 3. */
const absentRound = (taskId: bigint): number | undefined =>
  taskId % 4n === 3n ? Number(taskId % 3n) : undefined;

async function attempt(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch {
    // a revert: the operation was not allowed in this state
  }
}

async function act(c: Crynux, taskId: bigint): Promise<void> {
  const t = await c.getTask(taskId);
  const rounds = await Promise.all(
    [0, 1, 2].map((r) =>
      c.read<[Address, number, number, number, Hex]>("task", "getRound", [taskId, BigInt(r)]),
    ),
  );
  if (t.state === TaskState.SUCCESS) {
    await attempt(c.uploaded(taskId, t.resultRound, t.nodes[t.resultRound]!));
    return;
  }
  if (t.state !== TaskState.RUNNING && t.state !== TaskState.UPLOADED && t.state !== TaskState.ERROR) return;
  const uncommitted = rounds.findIndex((r, i) => r[1] === 0 && i !== absentRound(taskId));
  if (uncommitted >= 0) {
    try {
      await c.commit(taskId, uncommitted, t.nodes[uncommitted]!, resultOf(taskId, uncommitted));
      return;
    } catch {
      // past the commit deadline: the committed nodes go on
    }
  }
  const undisclosed = rounds.findIndex((r) => r[1] !== 0 && r[2] === 0);
  if (undisclosed >= 0) {
    await attempt(c.disclose(taskId, undisclosed, t.nodes[undisclosed]!, resultOf(taskId, undisclosed)));
  }
}

async function checkInvariants(c: Crynux, taskIds: bigint[]): Promise<void> {
  const s = await c.checkSolvency();
  expect(s.nodeOk, "Node balance == staked + owed").toBe(true);
  expect(s.taskOk, "Task balance == escrow + owed").toBe(true);
  let escrow = 0n;
  const bound = new Map<Address, bigint>();
  for (const id of taskIds) {
    const t = await c.getTask(id);
    escrow += t.balance;
    if (t.state === TaskState.ABORTED || t.state === TaskState.QUEUED) continue;
    for (let r = 0; r < 3; r++) {
      const [node, , , flags] = await c.read<[Address, number, number, number]>("task", "getRound", [
        id,
        BigInt(r),
      ]);
      if ((flags & 2) === 0) bound.set(node, id);
    }
  }
  expect(escrow).toBe(s.escrow);
  let available = 0;
  let busy = 0;
  let total = 0;
  let staked = 0n;
  for (const i of NODES) {
    const info = await c.nodeInfo(c.account(i));
    const isBusy =
      info.status === Status.BUSY ||
      info.status === Status.PENDING_PAUSE ||
      info.status === Status.PENDING_QUIT;
    if (isBusy) {
      busy++;
      expect(info.taskId, "a busy node is bound to a task").not.toBe(0n);
      expect(bound.get(c.account(i)), "its task holds it").toBe(info.taskId);
    } else {
      expect(bound.has(c.account(i)), "a node bound to a task is busy").toBe(false);
    }
    if (info.status === Status.AVAILABLE) available++;
    if (info.status !== Status.QUIT) total++;
    staked += info.stake;
  }
  expect(staked).toBe(s.staked);
  const joinedGroups = new Set<string>();
  for (const i of NODES) {
    const info = await c.nodeInfo(c.account(i));
    if (info.status !== Status.QUIT) joinedGroups.add(info.groupKey);
  }
  expect(await c.read("node", "groupCount"), "groupCount = groups with joined nodes").toBe(
    BigInt(joinedGroups.size),
  );
  expect(await c.stats()).toMatchObject({ availableNodes: available, busyNodes: busy, totalNodes: total });
}

describe("invariants over random operation sequences", () => {
  test("balances cover stakes and escrow; no busy node without a task; counters agree", {
    timeout: 300_000,
  }, async () => {
    const c0 = crynux();
    const base = await c0.anvil.testClient.snapshot();
    let snapshot = base;
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 25 }), async (ops) => {
        await c0.anvil.testClient.revert({ id: snapshot });
        snapshot = await c0.anvil.testClient.snapshot();
        const c = c0;
        const taskIds: bigint[] = [];
        // start from a network of 5 nodes in 2 groups; the operations change it
        for (const i of [1, 2, 3, 4, 5]) {
          const [name, vram, rt] = GROUPS[i === 5 ? 2 : 0]!;
          await c.join(i, name, vram, rt);
        }
        for (const op of ops) {
          switch (op.k) {
            case "join": {
              const [name, vram, rt] = GROUPS[op.g]!;
              await attempt(c.join(op.i, name, vram, rt));
              break;
            }
            case "pause":
            case "resume":
            case "quit":
              await attempt(c.tx(op.i, "node", op.k, []));
              break;
            case "create":
              await attempt(
                c.createTask(op.who, {
                  taskType: op.type,
                  fee: BigInt(op.fee) * CNX,
                  vramLimit: BigInt(op.vram),
                }),
              );
              // the ids come from the chain: a call that timed out on a loaded machine may still have landed
              taskIds.length = 0;
              for (let id = 1n; id <= (await c.read<bigint>("task", "totalTasks")); id++) taskIds.push(id);
              break;
            case "act": {
              const active: bigint[] = [];
              for (const id of taskIds) {
                const state = (await c.getTask(id)).state;
                if (state !== TaskState.QUEUED && state !== TaskState.ABORTED) active.push(id);
              }
              if (active.length === 0) break;
              for (let k = 0; k < op.steps; k++) await act(c, active[op.pick % active.length]!);
              break;
            }
            case "timeout": {
              if (taskIds.length === 0) break;
              const id = taskIds[op.pick % taskIds.length]!;
              await c.anvil.testClient.increaseTime({ seconds: 15 * 60 + 1 });
              await c.anvil.testClient.mine({ blocks: 1 });
              const t = await c.getTask(id);
              await attempt(c.tx(c.indexOf(t.creator), "task", "cancelTask", [id]));
              break;
            }
            case "lapse":
              // past the commit deadline of the running tasks, not their deadline
              await c.anvil.testClient.increaseTime({ seconds: 10 * 60 + 1 });
              await c.anvil.testClient.mine({ blocks: 1 });
              break;
          }
        }
        await checkInvariants(c, taskIds);
        for (const id of taskIds) {
          const state = (await c.getTask(id)).state;
          seen.set(state, (seen.get(state) ?? 0) + 1);
          for (let r = 0; r < 3; r++) {
            const [, , , flags] = await c.read<[Address, number, number, number]>("task", "getRound", [
              id,
              BigInt(r),
            ]);
            if (flags & 8) seen.set(-2, (seen.get(-2) ?? 0) + 1);
          }
        }
        for (const i of NODES) if ((await c.status(i)) === Status.BUSY) seen.set(-1, (seen.get(-1) ?? 0) + 1);
      }),
      { numRuns: 200, seed: 42 },
    );
    console.log(`final task states over all runs: ${JSON.stringify([...seen.entries()].sort())}`);
    // the sequences reach every task outcome
    for (const state of [
      TaskState.QUEUED,
      TaskState.RUNNING,
      TaskState.UPLOADED,
      TaskState.ERROR,
      TaskState.ABORTED,
    ]) {
      expect(seen.get(state) ?? 0, `tasks ending in state ${state}`).toBeGreaterThan(0);
    }
    expect(seen.get(-2) ?? 0, "absent nodes").toBeGreaterThan(0);
  });
});
