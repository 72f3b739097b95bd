import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type CrynuxDeployment, deployCrynux, nodeAbi, taskAbi, taskCommitment } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { PGlite } from "@electric-sql/pglite";
import {
  type Abi,
  type Address,
  type Hex,
  keccak256,
  parseEventLogs,
  type TransactionReceipt,
  toHex,
  zeroAddress,
} from "viem";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { createTaskIndexer, type TaskIndexer } from "../src/indexer.js";
import {
  createSqlStore,
  type IndexedTask,
  type IndexedTaskState,
  openPgliteStore,
  pgliteExecutor,
  type RelayStore,
} from "../src/store/index.js";

const CNX = 10n ** 18n;
const SD = 0;
const GPT = 1;
const CREATOR = 7;
const R1: Hex = keccak256(toHex("result 1"));
const R2: Hex = keccak256(toHex("result 2"));
const R3: Hex = keccak256(toHex("result 3"));
const ERROR_RESULT: Hex = "0x";
// Chain states of the Task contract (NONE 0 … ABORTED 6) as the index names them.
const CHAIN_STATES: Record<number, IndexedTaskState> = {
  1: "queued",
  2: "started",
  3: "success",
  4: "uploaded",
  5: "error",
  6: "aborted",
};
// PGlite start-up takes seconds (initdb of a fresh data directory over 10 on a busy 2-core machine).
const SLOW_MS = 180_000;

const anvil = useAnvil({ accounts: 10 });
let addr: CrynuxDeployment;
let baseSnapshot: Hex;

// Two in-memory databases for the file: the index under test and a fresh index to compare it with.
let pgA: PGlite;
let pgB: PGlite;
let storeA: RelayStore;
let storeB: RelayStore;
const dirs: string[] = [];
const truncate = (pg: PGlite) =>
  pg.exec("TRUNCATE tasks, task_events, task_args, task_results, follower_cursor");

beforeAll(async () => {
  addr = await deployCrynux(anvil().walletClient(0), anvil().publicClient);
  baseSnapshot = await anvil().testClient.snapshot();
  pgA = await PGlite.create();
  storeA = await createSqlStore(pgliteExecutor(pgA));
  pgB = await PGlite.create();
  storeB = await createSqlStore(pgliteExecutor(pgB));
}, SLOW_MS);
afterAll(async () => {
  await storeA?.close();
  await storeB?.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});
// Every test starts from the fresh deployment and empty stores.
beforeEach(async () => {
  await anvil().testClient.revert({ id: baseSnapshot });
  baseSnapshot = await anvil().testClient.snapshot();
  await truncate(pgA);
  await truncate(pgB);
});

// ------------------------------------------------------------------------------------ chain helpers

const indexOf = (address: Address) =>
  anvil().accounts.findIndex((a) => a.address.toLowerCase() === address.toLowerCase());

async function send(
  from: number | Address,
  contract: "task" | "node",
  functionName: string,
  args: unknown[],
  value?: bigint,
): Promise<TransactionReceipt> {
  const i = typeof from === "number" ? from : indexOf(from);
  const hash = await anvil()
    .walletClient(i)
    .writeContract({
      address: addr[contract],
      abi: (contract === "task" ? taskAbi : nodeAbi) as Abi,
      functionName,
      args,
      value,
      gas: 10_000_000n,
    } as never);
  const receipt = await anvil().publicClient.waitForTransactionReceipt({ hash });
  if (receipt.status !== "success") throw new Error(`${functionName} reverted`);
  return receipt;
}

const join = (i: number) => send(i, "node", "join", ["NVIDIA GeForce RTX 4090", 24n, "rt", 3], 400n * CNX);

let taskCounter = 0;
async function createTask(options: { taskType?: number; vramLimit?: bigint; label?: string } = {}) {
  const taskHash = keccak256(toHex(options.label ?? `task ${taskCounter++}`));
  const receipt = await send(
    CREATOR,
    "task",
    "createTask",
    [options.taskType ?? GPT, taskHash, keccak256(toHex("data")), options.vramLimit ?? 0n, 1n],
    10n * CNX,
  );
  const [log] = parseEventLogs({
    abi: taskAbi,
    logs: receipt.logs,
    eventName: ["TaskQueued", "TaskStarted"],
  });
  if (!log) throw new Error("createTask emitted neither TaskQueued nor TaskStarted");
  return { taskId: log.args.taskId, taskHash };
}

async function chainTask(taskId: bigint) {
  const [creator, taskType, state, taskHash, , , , , , nodes] = await anvil().publicClient.readContract({
    address: addr.task,
    abi: taskAbi,
    functionName: "getTask",
    args: [taskId],
  });
  return { creator, taskType, state, taskHash, nodes: [...nodes] };
}

const nonce = (taskId: bigint, round: number): Hex => keccak256(toHex(`nonce ${taskId} ${round}`));

/** Each round commits its result; then the given rounds disclose, in order ("0x" reports an error). */
async function run(taskId: bigint, results: Hex[], discloseOrder: number[]) {
  const { nodes } = await chainTask(taskId);
  for (const [round, result] of results.entries()) {
    await send(nodes[round]!, "task", "submitCommitment", [
      taskId,
      BigInt(round),
      taskCommitment(result, nonce(taskId, round)),
    ]);
  }
  for (const round of discloseOrder) {
    const result = results[round]!;
    if (result === ERROR_RESULT) {
      await send(nodes[round]!, "task", "reportTaskError", [taskId, BigInt(round), nonce(taskId, round)]);
    } else {
      await send(nodes[round]!, "task", "disclose", [taskId, BigInt(round), result, nonce(taskId, round)]);
    }
  }
  return nodes;
}

// ------------------------------------------------------------------------------------ index helpers

function indexer(store: RelayStore, confirmations: number): TaskIndexer {
  return createTaskIndexer({
    client: anvil().publicClient,
    taskContract: addr.task,
    store,
    confirmations,
    fromBlock: 0n,
    batchSize: 7n, // small, so that the tests cross batch boundaries
  });
}

/** Polls until the indexer has caught up with the head (minus its confirmations). */
async function sync(ix: TaskIndexer) {
  const seen: { reorg?: bigint; delivered: number } = { delivered: 0 };
  for (let i = 0; i < 1000; i++) {
    const result = await ix.poll();
    if (result.reorg) seen.reorg = result.reorg.fromBlock;
    if (result.delivered) seen.delivered++;
    if (result.upToDate) return seen;
  }
  throw new Error("the indexer did not catch up");
}

async function dump(store: RelayStore, maxTaskId = 8n) {
  const tasks: (IndexedTask | null)[] = [];
  for (let id = 1n; id <= maxTaskId; id++) tasks.push(await store.getTask(id));
  return { tasks, counts: await store.counts() };
}

/** The indexed task agrees with the Task contract's view of it. */
async function expectMatchesChain(store: RelayStore, taskId: bigint): Promise<IndexedTask> {
  const onChain = await chainTask(taskId);
  const indexed = await store.getTask(taskId);
  expect(indexed, `task ${taskId}`).not.toBeNull();
  const t = indexed as IndexedTask;
  expect(t).toMatchObject({
    taskId,
    taskType: onChain.taskType,
    creator: onChain.creator,
    taskHash: onChain.taskHash,
    state: CHAIN_STATES[onChain.state],
  });
  // a task that never left the queue has no nodes on chain either
  if (t.nodes.length === 0) expect(onChain.nodes).toEqual([zeroAddress, zeroAddress, zeroAddress]);
  else expect(t.nodes).toEqual(onChain.nodes);
  if (t.state === "queued") expect(t.nodes).toEqual([]);
  if (t.state === "success" || t.state === "uploaded") {
    const result = await anvil().publicClient.readContract({
      address: addr.task,
      abi: taskAbi,
      functionName: "getTaskResult",
      args: [taskId],
    });
    expect(t.result).toBe(result);
    expect(t.resultNode).toBe(onChain.nodes[0]);
  }
  return t;
}

// ------------------------------------------------------------------------------------ tests

describe("task indexer", () => {
  test(
    "indexes tasks through queued, started, success, uploaded, error and aborted",
    async () => {
      const ix = indexer(storeA, 0);
      await join(1);
      await join(2);
      const a = await createTask(); // 2 nodes only: queued
      await sync(ix);
      expect(await expectMatchesChain(storeA, a.taskId)).toMatchObject({ state: "queued", nodes: [] });

      await join(3); // the third node starts A
      const cancelled = await createTask(); // nodes busy: queued, then cancelled by its creator
      await send(CREATOR, "task", "cancelTask", [cancelled.taskId]);
      const waiting = await createTask({ taskType: SD, vramLimit: 80n }); // no node has 80 GB: stays queued
      await sync(ix);
      expect((await expectMatchesChain(storeA, a.taskId)).state).toBe("started");
      expect((await expectMatchesChain(storeA, cancelled.taskId)).state).toBe("aborted");

      await run(a.taskId, [R1, R1, R1], [0, 1]);
      await sync(ix);
      expect(await expectMatchesChain(storeA, a.taskId)).toMatchObject({ state: "success", result: R1 });

      const nodesA = (await chainTask(a.taskId)).nodes;
      await send(nodesA[2]!, "task", "disclose", [a.taskId, 2n, R1, nonce(a.taskId, 2)]);
      await send(nodesA[0]!, "task", "reportResultsUploaded", [a.taskId, 0n]);
      const failing = await createTask();
      await run(failing.taskId, [ERROR_RESULT, ERROR_RESULT, ERROR_RESULT], [0, 1, 2]);
      const mismatch = await createTask();
      await run(mismatch.taskId, [R1, R2, R3], [0, 1, 2]);
      await sync(ix);

      const states: IndexedTaskState[] = [];
      for (const id of [a, cancelled, waiting, failing, mismatch].map((t) => t.taskId)) {
        states.push((await expectMatchesChain(storeA, id)).state);
      }
      expect(states).toEqual(["uploaded", "aborted", "queued", "error", "aborted"]);
      expect(await storeA.counts()).toEqual({ tasks: 5, withArgs: 0, withResults: 0 });
      expect(ix.indexedBlock).toBe(await anvil().publicClient.getBlockNumber());
    },
    SLOW_MS,
  );

  test("only blocks `confirmations` deep are indexed", async () => {
    const ix = indexer(storeA, 3);
    await sync(ix);
    const head = async () => anvil().publicClient.getBlockNumber();
    expect(ix.indexedBlock).toBe((await head()) - 3n);
    const { taskId } = await createTask();
    await sync(ix);
    expect(await storeA.getTask(taskId)).toBeNull();
    await anvil().testClient.mine({ blocks: 2 });
    await sync(ix);
    expect(await storeA.getTask(taskId)).toBeNull();
    expect(ix.indexedBlock).toBe((await head()) - 3n);
    await anvil().testClient.mine({ blocks: 1 });
    await sync(ix);
    expect(await storeA.getTask(taskId)).toMatchObject({ state: "queued" });
    expect(ix.indexedBlock).toBe((await head()) - 3n);
  });

  test(
    "a restarted indexer with the reopened store continues where it stopped",
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), "relay-indexer-"));
      dirs.push(dir);
      for (const i of [1, 2, 3]) await join(i);
      const a = await createTask();
      const b = await createTask(); // queued behind A

      let store = await openPgliteStore({ dataDir: dir });
      const first = indexer(store, 1);
      await sync(first);
      const stoppedAt = first.indexedBlock;
      expect(stoppedAt).not.toBeNull();
      expect((await store.getTask(a.taskId))?.state).toBe("started");
      await first.stop();
      await store.close();

      // the chain goes on while the relay is down
      await run(a.taskId, [R1, R1, R1], [0, 1, 2]);
      const nodesA = (await chainTask(a.taskId)).nodes;
      await send(nodesA[0]!, "task", "reportResultsUploaded", [a.taskId, 0n]);
      await anvil().testClient.mine({ blocks: 1 }); // the upload's block is 1 deep

      store = await openPgliteStore({ dataDir: dir });
      try {
        const second = indexer(store, 1);
        const step = await second.poll();
        expect(step.delivered?.fromBlock).toBe((stoppedAt as bigint) + 1n);
        await sync(second);
        expect((await expectMatchesChain(store, a.taskId)).state).toBe("uploaded");
        // B started once A's nodes were free
        expect((await expectMatchesChain(store, b.taskId)).state).toBe("started");
        // nothing twice, nothing missing: the same as indexing the whole chain at once
        await sync(indexer(storeB, 1));
        expect(await dump(store)).toEqual(await dump(storeB));
      } finally {
        await store.close();
      }
    },
    SLOW_MS,
  );

  test(
    "after a reorg the index equals a fresh index of the new chain",
    async () => {
      const ix = indexer(storeA, 0);
      for (const i of [1, 2, 3]) await join(i);
      const a = await createTask();
      const fork = await anvil().testClient.snapshot();

      // old chain: A succeeds, task 2 is queued and gets its args uploaded
      await run(a.taskId, [R1, R1, R1], [0, 1]);
      const old = await createTask({ label: "old task 2" });
      await anvil().testClient.mine({ blocks: 3 });
      await sync(ix);
      expect((await storeA.getTask(a.taskId))?.state).toBe("success");
      expect(await storeA.getTask(old.taskId)).toMatchObject({ state: "queued", taskHash: old.taskHash });
      await storeA.putArgs(old.taskId, old.taskHash, '{"old":true}');
      expect(await storeA.counts()).toEqual({ tasks: 2, withArgs: 1, withResults: 0 });

      // new chain from the fork: another task 2 (SD), and A's nodes disagree
      await anvil().testClient.revert({ id: fork });
      const other = await createTask({ taskType: SD, label: "new task 2" });
      expect(other.taskId).toBe(old.taskId);
      await run(a.taskId, [R1, R2, R3], [0, 1, 2]);

      const seen = await sync(ix);
      expect(seen.reorg).toBeDefined();
      expect((await expectMatchesChain(storeA, a.taskId)).state).toBe("aborted");
      expect(await expectMatchesChain(storeA, other.taskId)).toMatchObject({
        taskType: SD,
        taskHash: other.taskHash,
      });
      expect(await storeA.getArgs(other.taskId, other.taskHash)).toBeNull();
      expect(await storeA.getArgs(old.taskId, old.taskHash)).toBe('{"old":true}');

      await sync(indexer(storeB, 0));
      const fresh = await dump(storeB);
      expect(await dump(storeA)).toEqual({ ...fresh, counts: { ...fresh.counts, withArgs: 0 } });
      expect(await storeA.counts()).toEqual({ tasks: 2, withArgs: 0, withResults: 0 });
    },
    SLOW_MS,
  );
});
