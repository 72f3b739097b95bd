import { type Address, type Hex, keccak256, toHex } from "viem";
import { describe, expect, test } from "vitest";
import { CNX, type Crynux, GPT, SD, Status, TaskState, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux({ queueSizeLimit: 3 });
const R: Hex = keccak256(toHex("r"));
const CREATOR = 20;
const OTHER = 21;

/** V = fee * 1000 / (overheadMs + perUnitMs * cap), the defaults of the contract. */
function value(taskType: number, fee: bigint, cap: bigint): bigint {
  const [overhead, perUnit] = taskType === SD ? [30_000n, 20_000n] : [30_000n, 50n];
  return (fee * 1000n) / (overhead + perUnit * cap);
}

async function complete(c: Crynux, taskId: bigint) {
  const { nodes } = await c.getTask(taskId);
  for (let r = 0; r < 3; r++) await c.commit(taskId, r, nodes[r]!, R);
  for (let r = 0; r < 3; r++) await c.disclose(taskId, r, nodes[r]!, R);
  return c.uploaded(taskId, 0, nodes[0]!);
}

describe("task value", () => {
  test("matches fee * 1000 / estimatedMs; the docs' example orders 15 CNX / 2 images above 10 CNX / 1 image", async () => {
    const c = crynux();
    for (const [t, fee, cap] of [
      [SD, 10n * CNX, 1n],
      [SD, 15n * CNX, 2n],
      [GPT, 7n * CNX, 256n],
      [GPT, 12345n, 1000n],
    ] as const) {
      expect(await c.read("task", "taskValue", [t, fee, cap])).toBe(value(t, fee, cap));
    }
    expect(value(SD, 15n * CNX, 2n)).toBeGreaterThan(value(SD, 10n * CNX, 1n));
  });

  test("zero value, zero fee, zero cap and bad task types are rejected", async () => {
    const c = crynux();
    await expect(c.createTask(CREATOR, { fee: 30n, cap: 1n })).rejects.toThrow(/ZeroValue/);
    await expect(c.createTask(CREATOR, { fee: 0n })).rejects.toThrow(/ZeroFee/);
    await expect(c.createTask(CREATOR, { cap: 0n })).rejects.toThrow(/ZeroCap/);
    await expect(c.createTask(CREATOR, { taskType: 2 })).rejects.toThrow(/InvalidTaskType/);
    // 31 wei: 31000 / 30050 = 1
    expect((await c.createTask(CREATOR, { fee: 31n, cap: 1n })).queued).toBe(true);
  });
});

describe("queue", () => {
  test("the highest-value runnable task is dispatched when nodes become available", async () => {
    const c = crynux();
    const low = await c.createTask(CREATOR, { taskType: SD, fee: 10n * CNX, cap: 1n });
    const dataHash = keccak256(toHex("data of the high task"));
    const high = await c.createTask(CREATOR, { taskType: SD, fee: 15n * CNX, cap: 2n, dataHash });
    const mid = await c.createTask(CREATOR, { taskType: SD, fee: (105n * CNX) / 10n, cap: 1n });
    for (const t of [low, high, mid]) expect(t.queued).toBe(true);
    expect(await c.stats()).toMatchObject({ queuedTasks: 3, runningTasks: 0, totalTasks: 3 });
    await c.join(1, "A", 24n, "rt");
    await c.join(2, "B", 24n, "rt");
    const receipt = await c.join(3, "C", 24n, "rt");
    const started = c.events(receipt, "TaskStarted");
    expect(started).toHaveLength(3);
    expect(started[0]!.args.taskId).toBe(high.taskId);
    expect(started.map((e) => [e.args.round, e.args.dataHash, e.args.creator])).toEqual([
      [0, dataHash, c.account(CREATOR)],
      [1, dataHash, c.account(CREATOR)],
      [2, dataHash, c.account(CREATOR)],
    ]);
    expect(started[0]!.args.taskHash).toBe((await c.getTask(high.taskId)).taskHash);
    expect(await c.stats()).toMatchObject({ queuedTasks: 2, runningTasks: 1 });
    // at the end of the task its 3 nodes take the next task (mid), then low
    const end = await complete(c, high.taskId);
    expect(c.events(end, "TaskStarted").map((e) => e.args.taskId)).toEqual([
      mid.taskId,
      mid.taskId,
      mid.taskId,
    ]);
    const midTask = await c.getTask(mid.taskId);
    expect(midTask.state).toBe(TaskState.RUNNING);
    await complete(c, mid.taskId);
    expect((await c.getTask(low.taskId)).state).toBe(TaskState.RUNNING);
    expect(await c.read("taskQueue", "size")).toBe(0n);
  });

  test("ties dispatch the older task first", async () => {
    const c = crynux();
    const a = await c.createTask(CREATOR, { taskType: SD, fee: CNX });
    const b = await c.createTask(CREATOR, { taskType: SD, fee: CNX });
    for (let i = 1; i <= 3; i++) await c.join(i);
    expect((await c.getTask(a.taskId)).state).toBe(TaskState.RUNNING);
    expect((await c.getTask(b.taskId)).state).toBe(TaskState.QUEUED);
  });

  test("a node only takes a task it can run: vram for SD, 3 available in its group for GPT", async () => {
    const c = crynux();
    const gpt = await c.createTask(CREATOR, { taskType: GPT, fee: 100n * CNX, vramLimit: 8n });
    const sdBig = await c.createTask(CREATOR, { taskType: SD, fee: 90n * CNX, vramLimit: 40n });
    const sd = await c.createTask(CREATOR, { taskType: SD, fee: 1n * CNX, vramLimit: 8n });
    await c.join(1, "A", 24n, "rt");
    await c.join(2, "A", 24n, "rt");
    const r3 = await c.join(3, "B", 24n, "rt");
    // 3 nodes but not 3 of one group: the GPT task cannot run, the 40 GB SD task neither; the small SD task runs
    expect(c.events(r3, "TaskStarted")[0]!.args.taskId).toBe(sd.taskId);
    await complete(c, sd.taskId);
    expect((await c.getTask(gpt.taskId)).state).toBe(TaskState.QUEUED);
    const r4 = await c.join(4, "A", 24n, "rt");
    expect(c.events(r4, "TaskStarted")[0]!.args.taskId).toBe(gpt.taskId);
    const { nodes } = await c.getTask(gpt.taskId);
    expect(new Set(nodes)).toEqual(new Set([c.account(1), c.account(2), c.account(4)]));
    expect((await c.getTask(sdBig.taskId)).state).toBe(TaskState.QUEUED);
  });

  test("a full queue evicts and refunds the lowest-value task; a new lowest task is rejected", async () => {
    const c = crynux();
    const fees = [20n, 10n, 30n].map((x) => x * CNX);
    const ids: bigint[] = [];
    for (const fee of fees) ids.push((await c.createTask(CREATOR, { fee })).taskId);
    await expect(c.createTask(OTHER, { fee: 5n * CNX })).rejects.toThrow(/QueueFull/);
    await expect(c.createTask(OTHER, { fee: 10n * CNX })).rejects.toThrow(/QueueFull/); // tie: the newer one is lower
    const before = await c.balance(c.account(CREATOR));
    const { receipt, taskId } = await c.createTask(OTHER, { fee: 11n * CNX });
    const aborted = c.events(receipt, "TaskAborted");
    expect(aborted.map((e) => [e.args.taskId, e.args.reason])).toEqual([[ids[1], "evicted"]]);
    expect((await c.balance(c.account(CREATOR))) - before).toBe(10n * CNX);
    expect((await c.getTask(ids[1]!)).state).toBe(TaskState.ABORTED);
    expect(await c.read("taskQueue", "size")).toBe(3n);
    expect(await c.read("taskQueue", "lowest")).toBe(taskId);
    expect(await c.stats()).toMatchObject({ queuedTasks: 3, totalTasks: 4 });
    const s = await c.checkSolvency();
    expect(s.taskOk && s.escrow === 61n * CNX).toBe(true);
  });

  test("only the creator may cancel a queued task, at any time, with a full refund", async () => {
    const c = crynux();
    const { taskId } = await c.createTask(CREATOR, { fee: 7n * CNX });
    await expect(c.tx(OTHER, "task", "cancelTask", [taskId])).rejects.toThrow(/Unauthorized/);
    const receipt = await c.tx(CREATOR, "task", "cancelTask", [taskId]);
    expect(c.events(receipt, "TaskAborted")[0]!.args.reason).toBe("cancelled");
    expect(c.events(receipt, "TaskRefunded")[0]!.args.amount).toBe(7n * CNX);
    expect(await c.read("taskQueue", "contains", [taskId])).toBe(false);
    expect(await c.stats()).toMatchObject({ queuedTasks: 0 });
    await expect(c.tx(CREATOR, "task", "cancelTask", [taskId])).rejects.toThrow(/IllegalTaskState/);
  });

  test("resume dispatches; no node is selected twice and busy nodes are never selected", async () => {
    const c = crynux();
    for (let i = 1; i <= 4; i++) await c.join(i);
    await c.tx(4, "node", "pause", []);
    const first = await c.createTask(CREATOR);
    expect(new Set(first.nodes).size).toBe(3);
    const second = await c.createTask(CREATOR);
    expect(second.queued).toBe(true);
    await c.join(5);
    await c.join(6);
    expect((await c.getTask(second.taskId)).state).toBe(TaskState.QUEUED);
    const receipt = await c.tx(4, "node", "resume", []);
    const started = c.events(receipt, "TaskStarted").map((e) => e.args.selectedNode as Address);
    expect(new Set(started)).toEqual(new Set([c.account(4), c.account(5), c.account(6)]));
    for (const n of first.nodes) expect(started).not.toContain(n);
    for (let i = 1; i <= 6; i++) expect(await c.status(i)).toBe(Status.BUSY);
  });
});
