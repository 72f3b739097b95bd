import type { FollowerCursor } from "@crynux/client";
import type { Address, Hex } from "viem";

export type { FollowerCursor };

/** Where a task stands, as far as the indexed (confirmed) Task events tell. */
export type IndexedTaskState = "queued" | "started" | "success" | "error" | "aborted" | "uploaded";

/** A task as derived from the Task contract's events. */
export type IndexedTask = {
  taskId: bigint;
  /** SD 0, GPT 1. */
  taskType: 0 | 1;
  creator: Address;
  taskHash: Hex;
  state: IndexedTaskState;
  /** Selected nodes by round: length 3 once started, `[]` while queued. */
  nodes: Address[];
  /** From TaskSuccess. */
  resultNode: Address | null;
  /** On-chain result bytes from TaskSuccess (GPT 32 bytes, SD 8·n bytes). */
  result: Hex | null;
  /** Block of the last event applied. */
  updatedBlock: bigint;
};

/** Where the uploaded results of a task live in the blob store. */
export type StoredResults =
  /** Blob of the canonical GPT response JSON. */
  | { taskType: 1; response: { sha256: string; size: number } }
  | { taskType: 0; images: { index: number; sha256: string; size: number }[] };

/** A decoded Task contract event, as the indexer hands it to the store. */
export type TaskEvent = {
  eventName: string;
  args: Record<string, unknown>;
  blockNumber: bigint;
  logIndex: number;
  blockHash: Hex;
  transactionHash: Hex;
};

export interface RelayStore {
  getTask(taskId: bigint): Promise<IndexedTask | null>;
  /** Args are keyed by (taskId, taskHash): after a reorg a task id may name a different task. */
  getArgs(taskId: bigint, taskHash: Hex): Promise<string | null>;
  /**
   * Stores the canonical JSON text of the task arguments. The same text again → `{ stored: false }`;
   * different text for the same key throws `StoreConflictError`.
   */
  putArgs(taskId: bigint, taskHash: Hex, canonicalJson: string): Promise<{ stored: boolean }>;
  getResults(taskId: bigint, taskHash: Hex): Promise<StoredResults | null>;
  /** Same rule as `putArgs`. */
  putResults(taskId: bigint, taskHash: Hex, results: StoredResults): Promise<{ stored: boolean }>;
  /** The follower cursor persisted by the last `applyTaskEvents` / `rollback`. */
  loadCursor(): Promise<FollowerCursor | null>;
  /** Applies the events and persists `cursor` in one transaction. */
  applyTaskEvents(events: TaskEvent[], cursor: FollowerCursor): Promise<void>;
  /** Forgets the events of blocks >= `fromBlock`, re-derives the affected tasks and persists `cursor`, atomically. */
  rollback(fromBlock: bigint, cursor: FollowerCursor): Promise<void>;
  counts(): Promise<{ tasks: number; withArgs: number; withResults: number }>;
  close(): Promise<void>;
}

export interface BlobStore {
  /** Content-addressed, atomic (temp file + rename), idempotent. */
  put(bytes: Uint8Array): Promise<{ sha256: string; size: number }>;
  get(sha256: string): Promise<Uint8Array | null>;
  has(sha256: string): Promise<boolean>;
}

export type OpenPgliteStoreOptions = {
  /** Directory of the database; `undefined` keeps it in memory. */
  dataDir?: string;
};

export type OpenPostgresStoreOptions = {
  connectionString: string;
};
