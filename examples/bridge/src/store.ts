import type { TaskType } from "@crynux/tasks";
import { PGlite } from "@electric-sql/pglite";
import type { Hex } from "viem";

/**
 * Where a request's task stands:
 * - `recorded`: the bridge committed to paying (args and fee saved) and may have sent the transaction;
 * - `paid`: the task exists on-chain (tx hash, task id);
 * - `succeeded`: the result is stored; `failed`: the paid task ended without one (error stored).
 * A request whose payment was refused is deleted, so a retry starts afresh.
 */
export type TaskRecordState = "recorded" | "paid" | "succeeded" | "failed";

/** Which endpoint created the record; decides how the result is answered. */
export type RequestKind = "chat" | "completion" | "image" | "native";

export type StoredError = { status: number; type: string; code: string; message: string };

/** A stored SD result: base64 PNGs. */
export type StoredImages = { images: string[] };

export type TaskRecord = {
  /** The `Idempotency-Key` of the request, or one the bridge drew. Unique per API key. */
  requestId: string;
  apiKey: string;
  kind: RequestKind;
  /** The model id the request named (`null` for native tasks). */
  model: string | null;
  /** sha256 of the request's meaningful content: a key reused for another request is refused. */
  fingerprint: string;
  taskType: TaskType;
  /** The task arguments, as uploaded and hashed. */
  args: Record<string, unknown>;
  vramLimit: bigint;
  fee: bigint;
  /** Recorded with the task on-chain, so a payment whose receipt was lost can be found again. */
  dataHash: Hex;
  /** The chain head when the record was made: the task, if paid, is at or after it. */
  fromBlock: bigint;
  state: TaskRecordState;
  txHash: Hex | null;
  taskId: bigint | null;
  blockNumber: bigint | null;
  result: unknown;
  error: StoredError | null;
  /** Unix milliseconds. */
  createdAt: number;
  updatedAt: number;
};

export type NewTaskRecord = Omit<
  TaskRecord,
  "state" | "txHash" | "taskId" | "blockNumber" | "result" | "error" | "updatedAt"
>;

export type UsageSince = { tasks: number; spentWei: bigint };

export type BridgeStore = {
  insert(record: NewTaskRecord): Promise<TaskRecord>;
  get(apiKey: string, requestId: string): Promise<TaskRecord | null>;
  markPaid(
    apiKey: string,
    requestId: string,
    paid: { txHash: Hex; taskId: bigint; blockNumber: bigint },
  ): Promise<TaskRecord>;
  markSucceeded(apiKey: string, requestId: string, result: unknown): Promise<TaskRecord>;
  markFailed(apiKey: string, requestId: string, error: StoredError): Promise<TaskRecord>;
  /** Drops a record whose task was never paid. */
  delete(apiKey: string, requestId: string): Promise<void>;
  /** Records still `recorded` or `paid`: what a restart resumes. */
  unfinished(): Promise<TaskRecord[]>;
  /** Tasks and fees of a key's records created at or after `sinceMs` (unpaid refusals are deleted). */
  usageSince(apiKey: string, sinceMs: number): Promise<UsageSince>;
  /** Every record of the store, oldest first (for tests and operators). */
  all(): Promise<TaskRecord[]>;
  close(): Promise<void>;
};

const SCHEMA = `
CREATE TABLE IF NOT EXISTS bridge_tasks (
  api_key TEXT NOT NULL,
  request_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  model TEXT,
  fingerprint TEXT NOT NULL,
  task_type INTEGER NOT NULL,
  args TEXT NOT NULL,
  vram_limit NUMERIC(78, 0) NOT NULL,
  fee NUMERIC(78, 0) NOT NULL,
  data_hash TEXT NOT NULL,
  from_block NUMERIC(78, 0) NOT NULL,
  state TEXT NOT NULL,
  tx_hash TEXT,
  task_id NUMERIC(78, 0),
  block_number NUMERIC(78, 0),
  result TEXT,
  error TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (api_key, request_id)
);
CREATE INDEX IF NOT EXISTS bridge_tasks_usage ON bridge_tasks (api_key, created_at);
CREATE INDEX IF NOT EXISTS bridge_tasks_state ON bridge_tasks (state);
`;

type Row = {
  api_key: string;
  request_id: string;
  kind: RequestKind;
  model: string | null;
  fingerprint: string;
  task_type: number;
  args: string;
  vram_limit: string;
  fee: string;
  data_hash: Hex;
  from_block: string;
  state: TaskRecordState;
  tx_hash: Hex | null;
  task_id: string | null;
  block_number: string | null;
  result: string | null;
  error: string | null;
  created_at: string | number;
  updated_at: string | number;
};

// NUMERIC columns come back as strings, so bigints round-trip exactly.
const COLUMNS = `api_key, request_id, kind, model, fingerprint, task_type, args, vram_limit::text AS vram_limit,
  fee::text AS fee, data_hash, from_block::text AS from_block, state, tx_hash, task_id::text AS task_id,
  block_number::text AS block_number, result, error, created_at, updated_at`;

function fromRow(row: Row): TaskRecord {
  return {
    apiKey: row.api_key,
    requestId: row.request_id,
    kind: row.kind,
    model: row.model,
    fingerprint: row.fingerprint,
    taskType: row.task_type as TaskType,
    args: JSON.parse(row.args) as Record<string, unknown>,
    vramLimit: BigInt(row.vram_limit),
    fee: BigInt(row.fee),
    dataHash: row.data_hash,
    fromBlock: BigInt(row.from_block),
    state: row.state,
    txHash: row.tx_hash,
    taskId: row.task_id === null ? null : BigInt(row.task_id),
    blockNumber: row.block_number === null ? null : BigInt(row.block_number),
    result: row.result === null ? null : JSON.parse(row.result),
    error: row.error === null ? null : (JSON.parse(row.error) as StoredError),
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

export type OpenBridgeStoreOptions = {
  /** PGlite data directory; in memory when absent. One process at a time may open it. */
  dataDir?: string | undefined;
  /** Clock in unix milliseconds. */
  now?: (() => number) | undefined;
};

/**
 * Opens the bridge's task records in PGlite (PostgreSQL in WASM, in this process). Every state change is one
 * statement, committed before the bridge acts on it: a record exists before its task is paid.
 */
export async function openBridgeStore(options: OpenBridgeStoreOptions = {}): Promise<BridgeStore> {
  const pg = await PGlite.create(options.dataDir);
  const now = options.now ?? Date.now;
  try {
    await pg.exec(SCHEMA);
  } catch (error) {
    await pg.close();
    throw error;
  }

  const one = async (text: string, params: unknown[]): Promise<TaskRecord> => {
    const { rows } = await pg.query<Row>(text, params);
    const row = rows[0];
    if (!row) throw new Error(`No task record matched (${params.slice(0, 2).join(", ")}).`);
    return fromRow(row);
  };
  const update = (apiKey: string, requestId: string, set: string, params: unknown[]) =>
    one(
      `UPDATE bridge_tasks SET ${set}, updated_at = $3 WHERE api_key = $1 AND request_id = $2 RETURNING ${COLUMNS}`,
      [apiKey, requestId, now(), ...params],
    );

  return {
    insert(record) {
      return one(
        `INSERT INTO bridge_tasks (api_key, request_id, kind, model, fingerprint, task_type, args, vram_limit, fee,
           data_hash, from_block, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::numeric, $9::numeric, $10, $11::numeric, 'recorded', $12, $12)
         RETURNING ${COLUMNS}`,
        [
          record.apiKey,
          record.requestId,
          record.kind,
          record.model,
          record.fingerprint,
          record.taskType,
          JSON.stringify(record.args),
          record.vramLimit.toString(),
          record.fee.toString(),
          record.dataHash,
          record.fromBlock.toString(),
          record.createdAt,
        ],
      );
    },
    async get(apiKey, requestId) {
      const { rows } = await pg.query<Row>(
        `SELECT ${COLUMNS} FROM bridge_tasks WHERE api_key = $1 AND request_id = $2`,
        [apiKey, requestId],
      );
      return rows[0] ? fromRow(rows[0]) : null;
    },
    markPaid: (apiKey, requestId, paid) =>
      update(
        apiKey,
        requestId,
        "state = 'paid', tx_hash = $4, task_id = $5::numeric, block_number = $6::numeric",
        [paid.txHash, paid.taskId.toString(), paid.blockNumber.toString()],
      ),
    markSucceeded: (apiKey, requestId, result) =>
      update(apiKey, requestId, "state = 'succeeded', result = $4", [JSON.stringify(result)]),
    markFailed: (apiKey, requestId, error) =>
      update(apiKey, requestId, "state = 'failed', error = $4", [JSON.stringify(error)]),
    async delete(apiKey, requestId) {
      await pg.query("DELETE FROM bridge_tasks WHERE api_key = $1 AND request_id = $2", [apiKey, requestId]);
    },
    async unfinished() {
      const { rows } = await pg.query<Row>(
        `SELECT ${COLUMNS} FROM bridge_tasks WHERE state IN ('recorded', 'paid') ORDER BY created_at`,
      );
      return rows.map(fromRow);
    },
    async usageSince(apiKey, sinceMs) {
      const { rows } = await pg.query<{ tasks: number; spent: string }>(
        `SELECT count(*)::int AS tasks, coalesce(sum(fee), 0)::text AS spent
         FROM bridge_tasks WHERE api_key = $1 AND created_at >= $2`,
        [apiKey, sinceMs],
      );
      return { tasks: rows[0]?.tasks ?? 0, spentWei: BigInt(rows[0]?.spent ?? "0") };
    },
    async all() {
      const { rows } = await pg.query<Row>(`SELECT ${COLUMNS} FROM bridge_tasks ORDER BY created_at`);
      return rows.map(fromRow);
    },
    close: () => pg.close(),
  };
}
