import { type FollowLogsPollResult, followLogs, type HeadSource } from "@crynux/client";
import { taskAbi } from "@crynux/contracts";
import type { Address, PublicClient } from "viem";
import type { RelayStore, TaskEvent } from "./store/types.js";

export type TaskIndexerParameters = {
  client: PublicClient;
  /** Address of the Task contract. */
  taskContract: Address;
  store: RelayStore;
  /** A block is indexed once `head - block >= confirmations`. */
  confirmations: number;
  /** First block to read when the store has no cursor yet (the Task contract's deployment block). */
  fromBlock: bigint;
  /** Most blocks per `eth_getLogs` (default 2000). */
  batchSize?: bigint;
  /** Milliseconds between polls once up to date (default 1000). */
  pollingIntervalMs?: number;
  /** New-head notifications: index as soon as a block comes (see `followLogs`). */
  heads?: HeadSource | undefined;
  /** Errors of the loop started by `start()` (RPC down, database down); the loop keeps going with backoff. */
  onError?: (error: unknown) => void;
};

export type TaskIndexer = {
  /** Polls until `stop()`. */
  start(): void;
  /** Resolves once the loop has stopped and the batch in flight is stored. */
  stop(): Promise<void>;
  /** One step: roll back a reorg if there was one, then index at most one batch. */
  poll(): Promise<FollowLogsPollResult>;
  /** Newest indexed block; `null` before the first poll, or while nothing was indexed. */
  readonly indexedBlock: bigint | null;
};

/**
 * Indexes the Task contract's events into `store`, `confirmations` blocks behind the head. Each batch of
 * events is stored together with the follower cursor in one transaction, so a restart (with the same store)
 * continues exactly where the last stored batch ended; a reorg of indexed blocks rolls their events back
 * and re-derives the tasks they touched.
 */
export function createTaskIndexer(parameters: TaskIndexerParameters): TaskIndexer {
  const { store } = parameters;
  const follower = followLogs({
    client: parameters.client,
    address: parameters.taskContract,
    abi: taskAbi,
    fromBlock: parameters.fromBlock,
    confirmations: parameters.confirmations,
    batchSize: parameters.batchSize,
    pollingIntervalMs: parameters.pollingIntervalMs,
    heads: parameters.heads,
    onError: parameters.onError,
    loadCursor: () => store.loadCursor(),
    onLogs: ({ logs, cursor }) =>
      store.applyTaskEvents(
        logs.map(
          (log): TaskEvent => ({
            eventName: log.eventName,
            args: log.args as Record<string, unknown>,
            blockNumber: log.blockNumber,
            logIndex: log.logIndex,
            blockHash: log.blockHash,
            transactionHash: log.transactionHash,
          }),
        ),
        cursor,
      ),
    onReorg: ({ fromBlock, cursor }) => store.rollback(fromBlock, cursor),
  });
  return {
    start: () => follower.start(),
    stop: () => follower.stop(),
    poll: () => follower.poll(),
    get indexedBlock() {
      return follower.indexedBlock;
    },
  };
}
