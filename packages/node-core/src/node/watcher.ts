import {
  type FollowedLog,
  type FollowerCursor,
  followerCursorToJson,
  followLogs,
  type HeadSource,
  type LogFollower,
  parseFollowerCursor,
} from "@crynux/client";
import { type CrynuxDeployment, nodeAbi, taskAbi } from "@crynux/contracts";
import type { Address, PublicClient } from "viem";
import type { NodeStore, StoredChainEvent, TaskRecord } from "./store.js";

/** Longest time a cursor that changed nothing waits to be written. */
const CURSOR_FLUSH_MS = 10_000;
const watchedAbi = [...taskAbi, ...nodeAbi].filter((item) => item.type === "event");
type WatchedLog = FollowedLog<typeof watchedAbi>;

/** Task events recorded into a task record of this node (all of them name the task in `taskId`). */
const TASK_EVENTS = new Set([
  "TaskCommitmentsReady",
  "TaskErrorReported",
  "TaskSuccess",
  "TaskAborted",
  "TaskNodeAbsent",
  "TaskResultUploaded",
  "TaskNodeSuccess",
  "TaskNodeSlashed",
  "TaskNodeCancelled",
]);
/** Of those, the ones about one node: recorded only when that node is this one, except absence. */
const OWN_NODE_EVENTS = new Set(["TaskNodeSuccess", "TaskNodeSlashed", "TaskNodeCancelled"]);
const NODE_EVENTS = new Set([
  "NodeJoined",
  "NodeStatusChanged",
  "NodeQuit",
  "NodeKickedOut",
  "NodeSlashed",
  "NodePenalized",
]);

/** A confirmed event of the Node contract about this node. */
export type NodeChainEvent = { event: string; blockNumber: bigint; data: Record<string, string> };

/** What changed in the store after one delivered batch or rollback. */
export type WatcherChanges = {
  /** Tasks whose TaskStarted for this node was just recorded. */
  started: bigint[];
  /** Tasks of this node that got new events. */
  updated: bigint[];
  /** Tasks forgotten because their TaskStarted was in reorged blocks. */
  removed: bigint[];
  /**
   * Finished tasks reopened because they were finished on the state of a reorged block (what ended them
   * may be gone): they must be advanced again.
   */
  reopened: bigint[];
  nodeEvents: NodeChainEvent[];
};

/**
 * Options of {@link createChainWatcher}: the client, the Task and Node contracts, this node's address and
 * store, and the confirmation depth.
 */
export type CreateChainWatcherParameters = {
  client: PublicClient;
  contracts: Pick<CrynuxDeployment, "task" | "node">;
  /** This node's address. */
  address: Address;
  store: NodeStore;
  confirmations: number;
  pollingIntervalMs?: number;
  /** New-head notifications: read the chain at once when a block comes (see `followLogs`). */
  heads?: HeadSource | undefined;
  /** First block to read when the store has no cursor. */
  fromBlock: bigint;
  /** Called after the changes are persisted. */
  onChanges?: (changes: WatcherChanges) => void;
  /** Called when a poll fails; the watcher retries with backoff. Default: `console.error`. */
  onError?: (error: unknown) => void;
};

/**
 * A node's chain watcher (see {@link createChainWatcher}): poll it or run it, and read the newest block it
 * has applied.
 */
export type ChainWatcher = Pick<LogFollower, "poll" | "start" | "stop"> & {
  readonly indexedBlock: bigint | null;
};

/**
 * Follows the Task and Node contracts `confirmations` blocks behind the head and keeps this node's task
 * records up to date: a record is created on a confirmed TaskStarted naming this node, and the task's later
 * events are appended to it. Records are written before the cursor, and every update is idempotent (an
 * event is keyed by block hash and log index), so a crash between the two only replays a batch. On a reorg
 * the events of the reorged blocks are dropped, a task whose TaskStarted was reorged away is forgotten, and a
 * task finished on the state of a reorged block is reopened.
 */
export function createChainWatcher(parameters: CreateChainWatcherParameters): ChainWatcher {
  const { store } = parameters;
  const me = parameters.address.toLowerCase();
  const taskAddress = parameters.contracts.task.toLowerCase();

  /** The newest cursor not written yet, and when one was last written. */
  let unsaved: FollowerCursor | undefined;
  let savedAt = 0;
  const follower = followLogs({
    client: parameters.client,
    address: [parameters.contracts.task, parameters.contracts.node],
    abi: watchedAbi,
    fromBlock: parameters.fromBlock,
    confirmations: parameters.confirmations,
    pollingIntervalMs: parameters.pollingIntervalMs ?? 1000,
    heads: parameters.heads,
    loadCursor: async () => {
      const meta = await store.readMeta();
      return meta.cursor ? parseFollowerCursor(meta.cursor) : null;
    },
    onLogs: async (batch) => {
      const changes: WatcherChanges = { started: [], updated: [], removed: [], reopened: [], nodeEvents: [] };
      for (const log of batch.logs) await apply(log, changes);
      const changed = changes.started.length + changes.updated.length + changes.nodeEvents.length > 0;
      // A batch that changed nothing of this node's is written at most every CURSOR_FLUSH_MS (and at stop): a
      // write per block per node was most of a busy node's file traffic. After a crash, at most that many
      // seconds of blocks are read again, which changes nothing (every update is idempotent).
      if (changed || Date.now() - savedAt >= CURSOR_FLUSH_MS) await saveCursor(batch.cursor);
      else unsaved = batch.cursor;
      if (changed) parameters.onChanges?.(changes);
    },
    onReorg: async ({ fromBlock, cursor }) => {
      const changes: WatcherChanges = { started: [], updated: [], removed: [], reopened: [], nodeEvents: [] };
      for (const record of await store.listTasks()) {
        const taskId = BigInt(record.taskId);
        if (record.startedIn && BigInt(record.startedIn.blockNumber) >= fromBlock) {
          await store.deleteTask(taskId);
          changes.removed.push(taskId);
          continue;
        }
        if (
          record.step === "done" &&
          record.finishedIn &&
          BigInt(record.finishedIn.blockNumber) >= fromBlock
        ) {
          await store.updateTask(taskId, (r) =>
            r?.step === "done" && r.finishedIn
              ? { ...r, step: r.finishedIn.step, outcome: undefined, finishedIn: undefined }
              : undefined,
          );
          changes.reopened.push(taskId);
        }
        if (record.events.some((e) => BigInt(e.blockNumber) >= fromBlock)) {
          await store.updateTask(taskId, (r) =>
            r ? { ...r, events: r.events.filter((e) => BigInt(e.blockNumber) < fromBlock) } : undefined,
          );
          changes.updated.push(taskId);
        }
      }
      await saveCursor(cursor);
      parameters.onChanges?.(changes);
    },
    ...(parameters.onError ? { onError: parameters.onError } : {}),
  });

  async function saveCursor(cursor: FollowerCursor) {
    unsaved = undefined;
    savedAt = Date.now();
    const meta = await store.readMeta();
    await store.writeMeta({ ...meta, cursor: followerCursorToJson(cursor) });
  }

  async function apply(log: WatchedLog, changes: WatcherChanges) {
    const args = log.args as Record<string, unknown>;
    const fromTask = log.address.toLowerCase() === taskAddress;
    if (!fromTask) {
      if (NODE_EVENTS.has(log.eventName) && String(args.node).toLowerCase() === me)
        changes.nodeEvents.push({
          event: log.eventName,
          blockNumber: log.blockNumber,
          data: stringify(args),
        });
      return;
    }
    if (log.eventName === "TaskStarted") {
      if (String(args.selectedNode).toLowerCase() !== me) return;
      const taskId = args.taskId as bigint;
      const now = Date.now();
      const record: TaskRecord = {
        version: 1,
        taskId: taskId.toString(),
        round: Number(args.round),
        taskType: Number(args.taskType) === 0 ? 0 : 1,
        taskHash: args.taskHash as `0x${string}`,
        creator: args.creator as Address,
        startedIn: {
          blockNumber: log.blockNumber.toString(),
          blockHash: log.blockHash,
          transactionHash: log.transactionHash,
        },
        step: "started",
        txs: {},
        events: [],
        createdAt: now,
        updatedAt: now,
      };
      let created = false;
      await store.updateTask(taskId, (current) => {
        if (current) return undefined;
        created = true;
        return record;
      });
      if (created) changes.started.push(taskId);
      return;
    }
    if (!TASK_EVENTS.has(log.eventName)) return;
    if (OWN_NODE_EVENTS.has(log.eventName) && String(args.node).toLowerCase() !== me) return;
    const taskId = args.taskId as bigint;
    const event: StoredChainEvent = {
      event: log.eventName,
      blockNumber: log.blockNumber.toString(),
      blockHash: log.blockHash,
      logIndex: log.logIndex,
      transactionHash: log.transactionHash,
      data: stringify(args),
    };
    let changed = false;
    await store.updateTask(taskId, (current) => {
      if (!current) return undefined;
      if (current.events.some((e) => e.blockHash === event.blockHash && e.logIndex === event.logIndex))
        return undefined;
      changed = true;
      return { ...current, events: [...current.events, event] };
    });
    if (changed && !changes.updated.includes(taskId)) changes.updated.push(taskId);
  }

  return {
    poll: () => follower.poll(),
    start: () => follower.start(),
    async stop() {
      await follower.stop();
      if (unsaved) await saveCursor(unsaved);
    },
    get indexedBlock() {
      return follower.indexedBlock;
    },
  };
}

function stringify(args: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(args)) out[key] = String(value);
  return out;
}
