import { followerCursorToJson, parseFollowerCursor } from "@crynux/client";
import { type Address, getAddress, type Hex } from "viem";
import { z } from "zod";
import { RelayError, StoreConflictError } from "../errors.js";
import type {
  FollowerCursor,
  IndexedTask,
  IndexedTaskState,
  RelayStore,
  StoredResults,
  TaskEvent,
} from "./types.js";

/**
 * The few operations the store needs from a database. PGlite and node-postgres both implement it, so
 * every query of the store runs through the same code whichever backs it (and the PGlite tests cover
 * the PostgreSQL path too).
 */
export interface SqlQueryable {
  /** One statement, `$1`-style parameters (strings, numbers or null). */
  query<Row extends Record<string, unknown>>(text: string, params?: unknown[]): Promise<{ rows: Row[] }>;
}

export interface SqlExecutor extends SqlQueryable {
  /** Runs `fn` in a transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

// Both drivers parse result columns differently (int8, numeric, jsonb), so every query selects such
// columns as text (or int4) and the store parses them itself.
const MIGRATIONS: { version: number; statements: string[] }[] = [
  {
    version: 1,
    statements: [
      `CREATE TABLE tasks (
        task_id NUMERIC(78, 0) PRIMARY KEY,
        task_type SMALLINT NOT NULL,
        creator TEXT NOT NULL,
        task_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        nodes JSONB NOT NULL,
        result_node TEXT,
        result TEXT,
        updated_block BIGINT NOT NULL
      )`,
      `CREATE TABLE task_events (
        block_number BIGINT NOT NULL,
        log_index INTEGER NOT NULL,
        block_hash TEXT NOT NULL,
        transaction_hash TEXT NOT NULL,
        task_id NUMERIC(78, 0) NOT NULL,
        event_name TEXT NOT NULL,
        args JSONB NOT NULL,
        PRIMARY KEY (block_number, log_index)
      )`,
      "CREATE INDEX task_events_task_id ON task_events (task_id, block_number, log_index)",
      `CREATE TABLE task_args (
        task_id NUMERIC(78, 0) NOT NULL,
        task_hash TEXT NOT NULL,
        canonical_json TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (task_id, task_hash)
      )`,
      `CREATE TABLE task_results (
        task_id NUMERIC(78, 0) NOT NULL,
        task_hash TEXT NOT NULL,
        results TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (task_id, task_hash)
      )`,
      `CREATE TABLE follower_cursor (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        checkpoints JSONB NOT NULL
      )`,
    ],
  },
];

/** Newest schema version this code knows. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

// Arbitrary constant: serializes concurrent migrations of several relays sharing one PostgreSQL database.
const MIGRATION_LOCK_KEY = 0x72656c6179;

/** Brings the schema to {@link SCHEMA_VERSION}; a no-op when it is there already. */
export async function migrate(db: SqlExecutor): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
    await tx.query(
      `CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
    );
    const { rows } = await tx.query<{ version: number }>("SELECT version FROM schema_migrations");
    const applied = new Set(rows.map((r) => r.version));
    const newest = Math.max(0, ...applied);
    if (newest > SCHEMA_VERSION) {
      throw new RelayError(`The relay database has schema version ${newest}, newer than this relay's`, {
        code: "schema_too_new",
        status: 500,
        details: `This relay knows schema versions up to ${SCHEMA_VERSION}; upgrade the relay.`,
      });
    }
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      for (const statement of migration.statements) await tx.query(statement);
      await tx.query("INSERT INTO schema_migrations (version) VALUES ($1)", [migration.version]);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Encodings

const hexSchema = z.string().regex(/^0x([0-9a-fA-F]{2})*$/, "expected 0x-prefixed hex bytes");
const bytes32Schema = z.string().regex(/^0x[0-9a-fA-F]{64}$/, "expected 32 bytes of hex");
const addressSchema = z
  .string()
  .regex(/^0x[0-9a-fA-F]{40}$/, "expected an address")
  .transform((a) => getAddress(a));
const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, "expected a lowercase sha256 hex digest");
const decimalSchema = z.string().regex(/^\d+$/, "expected a decimal integer");
const sizeSchema = z.number().int().nonnegative();

const storedResultsSchema = z.discriminatedUnion("taskType", [
  z.object({ taskType: z.literal(1), response: z.object({ sha256: sha256Schema, size: sizeSchema }) }),
  z.object({
    taskType: z.literal(0),
    images: z
      .array(z.object({ index: z.number().int().nonnegative(), sha256: sha256Schema, size: sizeSchema }))
      .min(1)
      .refine(
        (images) => images.every((image, i) => image.index === i),
        "image indexes must be 0, 1, … in order",
      ),
  }),
]);

/** Fixed key order, so that equal results always have equal text and can be compared as text. */
function encodeResults(results: StoredResults): string {
  const parsed = storedResultsSchema.safeParse(results);
  if (!parsed.success) {
    throw new RelayError("Invalid results record", {
      code: "invalid_results_record",
      status: 500,
      details: z.prettifyError(parsed.error),
    });
  }
  const r = parsed.data;
  return JSON.stringify(
    r.taskType === 1
      ? { taskType: 1, response: { sha256: r.response.sha256, size: r.response.size } }
      : { taskType: 0, images: r.images.map((i) => ({ index: i.index, sha256: i.sha256, size: i.size })) },
  );
}

// Event args hold bigints (uint256), which JSON cannot; tag them so that stored args round-trip exactly.
function encodeArgs(args: Record<string, unknown>): string {
  return JSON.stringify(args, (_key, value) =>
    typeof value === "bigint" ? { $bigint: value.toString() } : value,
  );
}

function decodeArgs(text: string): Record<string, unknown> {
  return JSON.parse(text, (_key, value) => {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const keys = Object.keys(value);
      if (keys.length === 1 && keys[0] === "$bigint" && typeof value.$bigint === "string") {
        return BigInt(value.$bigint);
      }
    }
    return value;
  });
}

function taskKey(taskId: bigint, taskHash: Hex): [string, string] {
  if (taskId < 0n) {
    throw new RelayError(`Invalid task id ${taskId}`, { code: "invalid_task_id", status: 400 });
  }
  if (!bytes32Schema.safeParse(taskHash).success) {
    throw new RelayError(`Invalid task hash ${taskHash}`, { code: "invalid_task_hash", status: 400 });
  }
  return [taskId.toString(), taskHash.toLowerCase()];
}

// ---------------------------------------------------------------------------------------------------
// Deriving a task from its events

const taskIdArg = z.object({ taskId: z.bigint().nonnegative() });
const taskTypeSchema = z.union([z.literal(0), z.literal(1)]);
const eventArgSchemas = {
  TaskQueued: z.object({
    taskId: z.bigint(),
    taskType: taskTypeSchema,
    creator: addressSchema,
    taskHash: bytes32Schema,
  }),
  TaskStarted: z.object({
    taskId: z.bigint(),
    taskType: taskTypeSchema,
    creator: addressSchema,
    selectedNode: addressSchema,
    taskHash: bytes32Schema,
    round: z.number().int().min(0).max(2),
  }),
  TaskSuccess: z.object({ taskId: z.bigint(), result: hexSchema, resultNode: addressSchema }),
  TaskAborted: z.object({ taskId: z.bigint(), reason: z.string() }),
  TaskResultUploaded: z.object({ taskId: z.bigint() }),
} as const;
type DerivingEvent = keyof typeof eventArgSchemas;

function invalidEvent(event: Pick<TaskEvent, "eventName" | "blockNumber" | "logIndex">, error: z.ZodError) {
  return new RelayError(`Malformed ${event.eventName} event in block ${event.blockNumber}`, {
    code: "invalid_event",
    status: 500,
    details: `log index ${event.logIndex}: ${z.prettifyError(error)}`,
  });
}

/** The reason the Task contract gives when the agreed outcome is an error (task state ERROR). */
export const TASK_ERROR_REASON = "task error";

/**
 * Folds a task's events (ordered by block, log index) into its indexed state; `null` when none of them
 * names the task's creator, type and hash (TaskQueued or TaskStarted), e.g. when the index starts after
 * the task was created.
 */
export function deriveTask(
  taskId: bigint,
  events: Pick<TaskEvent, "eventName" | "args" | "blockNumber" | "logIndex">[],
): IndexedTask | null {
  let identity: { taskType: 0 | 1; creator: Address; taskHash: Hex } | undefined;
  let state: IndexedTaskState | undefined;
  const nodesByRound = new Map<number, Address>();
  let resultNode: Address | null = null;
  let result: Hex | null = null;
  let updatedBlock = 0n;
  for (const event of events) {
    if (event.blockNumber > updatedBlock) updatedBlock = event.blockNumber;
    if (!(event.eventName in eventArgSchemas)) continue;
    const name = event.eventName as DerivingEvent;
    const parsed = eventArgSchemas[name].safeParse(event.args);
    if (!parsed.success) throw invalidEvent(event, parsed.error);
    const args = parsed.data;
    switch (name) {
      case "TaskQueued": {
        const a = args as z.infer<(typeof eventArgSchemas)["TaskQueued"]>;
        identity = { taskType: a.taskType, creator: a.creator, taskHash: a.taskHash.toLowerCase() as Hex };
        state = "queued";
        break;
      }
      case "TaskStarted": {
        // A task that finds 3 nodes at once is never queued: TaskStarted names it too.
        const a = args as z.infer<(typeof eventArgSchemas)["TaskStarted"]>;
        identity = { taskType: a.taskType, creator: a.creator, taskHash: a.taskHash.toLowerCase() as Hex };
        nodesByRound.set(a.round, a.selectedNode);
        state = "started";
        break;
      }
      case "TaskSuccess": {
        const a = args as z.infer<(typeof eventArgSchemas)["TaskSuccess"]>;
        result = a.result.toLowerCase() as Hex;
        resultNode = a.resultNode;
        state = "success";
        break;
      }
      case "TaskResultUploaded":
        state = "uploaded";
        break;
      case "TaskAborted": {
        const a = args as z.infer<(typeof eventArgSchemas)["TaskAborted"]>;
        state = a.reason === TASK_ERROR_REASON ? "error" : "aborted";
        break;
      }
    }
  }
  if (!identity || !state) return null;
  const rounds = [...nodesByRound.keys()].sort((a, b) => a - b);
  return {
    taskId,
    ...identity,
    state,
    nodes: rounds.map((r) => nodesByRound.get(r) as Address),
    resultNode,
    result,
    updatedBlock,
  };
}

// ---------------------------------------------------------------------------------------------------
// The store

type TaskRow = {
  task_id: string;
  task_type: number;
  creator: string;
  task_hash: string;
  state: string;
  nodes: string;
  result_node: string | null;
  result: string | null;
  updated_block: string;
};

const taskRowSchema = z
  .object({
    task_id: decimalSchema,
    task_type: taskTypeSchema,
    creator: addressSchema,
    task_hash: bytes32Schema,
    state: z.enum(["queued", "started", "success", "error", "aborted", "uploaded"]),
    nodes: z.string(),
    result_node: addressSchema.nullable(),
    result: hexSchema.nullable(),
    updated_block: decimalSchema,
  })
  .transform(
    (r): IndexedTask => ({
      taskId: BigInt(r.task_id),
      taskType: r.task_type,
      creator: r.creator,
      taskHash: r.task_hash as Hex,
      state: r.state,
      nodes: z.array(addressSchema).parse(JSON.parse(r.nodes)),
      resultNode: r.result_node,
      result: r.result as Hex | null,
      updatedBlock: BigInt(r.updated_block),
    }),
  );

type EventRow = { event_name: string; args: string; block_number: string; log_index: number };

async function rederive(tx: SqlQueryable, taskIds: Iterable<string>): Promise<void> {
  for (const id of taskIds) {
    const { rows } = await tx.query<EventRow>(
      `SELECT event_name, args::text AS args, block_number::text AS block_number, log_index
       FROM task_events WHERE task_id = $1::numeric ORDER BY task_events.block_number, task_events.log_index`,
      [id],
    );
    const task = deriveTask(
      BigInt(id),
      rows.map((r) => ({
        eventName: r.event_name,
        args: decodeArgs(r.args),
        blockNumber: BigInt(r.block_number),
        logIndex: r.log_index,
      })),
    );
    if (!task) {
      await tx.query("DELETE FROM tasks WHERE task_id = $1::numeric", [id]);
      continue;
    }
    await tx.query(
      `INSERT INTO tasks (task_id, task_type, creator, task_hash, state, nodes, result_node, result, updated_block)
       VALUES ($1::numeric, $2, $3, $4, $5, $6::jsonb, $7, $8, $9::bigint)
       ON CONFLICT (task_id) DO UPDATE SET
         task_type = EXCLUDED.task_type, creator = EXCLUDED.creator, task_hash = EXCLUDED.task_hash,
         state = EXCLUDED.state, nodes = EXCLUDED.nodes, result_node = EXCLUDED.result_node,
         result = EXCLUDED.result, updated_block = EXCLUDED.updated_block`,
      [
        id,
        task.taskType,
        task.creator,
        task.taskHash,
        task.state,
        JSON.stringify(task.nodes),
        task.resultNode,
        task.result,
        task.updatedBlock.toString(),
      ],
    );
  }
}

async function saveCursor(tx: SqlQueryable, cursor: FollowerCursor): Promise<void> {
  await tx.query(
    `INSERT INTO follower_cursor (id, checkpoints) VALUES (1, $1::jsonb)
     ON CONFLICT (id) DO UPDATE SET checkpoints = EXCLUDED.checkpoints`,
    [JSON.stringify(followerCursorToJson(cursor))],
  );
}

/**
 * Insert-once with a content check: the first write wins, an identical write is a no-op and a
 * different one is refused, so an upload can be retried safely and stored data never changes.
 */
async function putOnce(
  db: SqlQueryable,
  table: "task_args" | "task_results",
  column: "canonical_json" | "results",
  kind: "args" | "results",
  taskId: bigint,
  taskHash: Hex,
  text: string,
): Promise<{ stored: boolean }> {
  const [id, hash] = taskKey(taskId, taskHash);
  const inserted = await db.query(
    `INSERT INTO ${table} (task_id, task_hash, ${column}) VALUES ($1::numeric, $2, $3)
     ON CONFLICT (task_id, task_hash) DO NOTHING RETURNING 1 AS inserted`,
    [id, hash, text],
  );
  if (inserted.rows.length > 0) return { stored: true };
  const { rows } = await db.query<{ text: string }>(
    `SELECT ${column} AS text FROM ${table} WHERE task_id = $1::numeric AND task_hash = $2`,
    [id, hash],
  );
  if (rows[0]?.text === text) return { stored: false };
  throw new StoreConflictError(kind, taskId, { details: `task hash ${hash}` });
}

/** A {@link RelayStore} over any {@link SqlExecutor}; runs the migrations first. */
export async function createSqlStore(db: SqlExecutor): Promise<RelayStore> {
  await migrate(db);
  return {
    async getTask(taskId) {
      if (taskId < 0n) return null;
      const { rows } = await db.query<TaskRow>(
        `SELECT task_id::text AS task_id, task_type::int AS task_type, creator, task_hash, state,
                nodes::text AS nodes, result_node, result, updated_block::text AS updated_block
         FROM tasks WHERE task_id = $1::numeric`,
        [taskId.toString()],
      );
      return rows[0] ? taskRowSchema.parse(rows[0]) : null;
    },

    async getArgs(taskId, taskHash) {
      const [id, hash] = taskKey(taskId, taskHash);
      const { rows } = await db.query<{ canonical_json: string }>(
        "SELECT canonical_json FROM task_args WHERE task_id = $1::numeric AND task_hash = $2",
        [id, hash],
      );
      return rows[0]?.canonical_json ?? null;
    },

    async putArgs(taskId, taskHash, canonicalJson) {
      return putOnce(db, "task_args", "canonical_json", "args", taskId, taskHash, canonicalJson);
    },

    async getResults(taskId, taskHash) {
      const [id, hash] = taskKey(taskId, taskHash);
      const { rows } = await db.query<{ results: string }>(
        "SELECT results FROM task_results WHERE task_id = $1::numeric AND task_hash = $2",
        [id, hash],
      );
      const row = rows[0];
      return row ? (storedResultsSchema.parse(JSON.parse(row.results)) as StoredResults) : null;
    },

    async putResults(taskId, taskHash, results) {
      return putOnce(db, "task_results", "results", "results", taskId, taskHash, encodeResults(results));
    },

    async loadCursor() {
      const { rows } = await db.query<{ checkpoints: string }>(
        "SELECT checkpoints::text AS checkpoints FROM follower_cursor WHERE id = 1",
      );
      const row = rows[0];
      return row ? parseFollowerCursor(JSON.parse(row.checkpoints)) : null;
    },

    async applyTaskEvents(events, cursor) {
      // Validate everything before the transaction: a malformed event must not leave half a batch.
      const rows = events.flatMap((event) => {
        const parsed = taskIdArg.safeParse(event.args);
        // Events that name no task (ownership, config, deferred payments) say nothing about tasks.
        if (!parsed.success) return [];
        if (event.eventName in eventArgSchemas) {
          const full = eventArgSchemas[event.eventName as DerivingEvent].safeParse(event.args);
          if (!full.success) throw invalidEvent(event, full.error);
        }
        return [{ event, taskId: parsed.data.taskId.toString() }];
      });
      await db.transaction(async (tx) => {
        const affected = new Set<string>();
        for (const { event, taskId } of rows) {
          // A log position delivered again replaces what was there (and re-derives its former task).
          const replaced = await tx.query<{ task_id: string }>(
            "DELETE FROM task_events WHERE block_number = $1::bigint AND log_index = $2 RETURNING task_id::text AS task_id",
            [event.blockNumber.toString(), event.logIndex],
          );
          for (const r of replaced.rows) affected.add(r.task_id);
          await tx.query(
            `INSERT INTO task_events (block_number, log_index, block_hash, transaction_hash, task_id, event_name, args)
             VALUES ($1::bigint, $2, $3, $4, $5::numeric, $6, $7::jsonb)`,
            [
              event.blockNumber.toString(),
              event.logIndex,
              event.blockHash.toLowerCase(),
              event.transactionHash.toLowerCase(),
              taskId,
              event.eventName,
              encodeArgs(event.args),
            ],
          );
          affected.add(taskId);
        }
        await rederive(tx, affected);
        await saveCursor(tx, cursor);
      });
    },

    async rollback(fromBlock, cursor) {
      await db.transaction(async (tx) => {
        const { rows } = await tx.query<{ task_id: string }>(
          "DELETE FROM task_events WHERE block_number >= $1::bigint RETURNING task_id::text AS task_id",
          [fromBlock.toString()],
        );
        await rederive(tx, new Set(rows.map((r) => r.task_id)));
        await saveCursor(tx, cursor);
      });
    },

    async counts() {
      const { rows } = await db.query<{ tasks: number; with_args: number; with_results: number }>(
        `SELECT
           (SELECT count(*)::int FROM tasks) AS tasks,
           (SELECT count(*)::int FROM tasks t JOIN task_args a
              ON a.task_id = t.task_id AND a.task_hash = t.task_hash) AS with_args,
           (SELECT count(*)::int FROM tasks t JOIN task_results r
              ON r.task_id = t.task_id AND r.task_hash = t.task_hash) AS with_results`,
      );
      const row = rows[0];
      return { tasks: row?.tasks ?? 0, withArgs: row?.with_args ?? 0, withResults: row?.with_results ?? 0 };
    },

    close() {
      return db.close();
    },
  };
}
