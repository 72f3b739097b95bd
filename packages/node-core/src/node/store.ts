import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { type Hex, isAddress, isHex } from "viem";
import { z } from "zod";
import { NodeStoreError } from "./errors.js";

const hex = z
  .string()
  .refine((value) => isHex(value, { strict: true }), "a 0x-prefixed hex string") as z.ZodType<Hex>;
const hash32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/, "a 32-byte hex hash") as unknown as z.ZodType<Hex>;
const address = z
  .string()
  .refine((value) => isAddress(value, { strict: false }), "an address") as z.ZodType<`0x${string}`>;
const decimal = z.string().regex(/^(0|[1-9][0-9]*)$/, "a decimal integer");

/**
 * The steps of a task on this node, in order. Each one is persisted before what follows it is attempted,
 * so a restart knows what was done (the chain decides what really landed).
 */
export const TASK_STEPS = [
  /** TaskStarted seen (confirmed); nothing done yet. */
  "started",
  /** Executed: the result (or the error result) and the secret nonce are stored; commitment not yet sent. */
  "executed",
  /** The commitment is on-chain. */
  "committed",
  /** The result (or the error report) is disclosed on-chain. */
  "disclosed",
  /** Result node: the result files are on the relay; `reportResultsUploaded` not yet confirmed. */
  "uploaded",
  /** Nothing more to do: the node is released from the task (paid, slashed, cancelled or absent). */
  "done",
] as const;
/**
 * How far this node got with a task (see {@link TASK_STEPS}); the step is saved before the next action, so a
 * restart resumes there.
 */
export type TaskStep = (typeof TASK_STEPS)[number];

/** How the task ended for this node. */
export const TASK_OUTCOMES = [
  /** The task succeeded and this node's result agreed (paid). */
  "success",
  /** 2 error reports agreed: the task was broken (reporters paid). */
  "error",
  /** Aborted (results mismatch, cancelled after the deadline, evicted). */
  "aborted",
  /** This node's result disagreed with the agreeing pair: its stake is gone. */
  "slashed",
  /** This node missed the commit deadline while its partners committed (penalty, paused). */
  "absent",
  /** The task is not on the chain any more (a reorg), or this node is not one of its nodes. */
  "vanished",
] as const;
/** How a task ended for this node (see {@link TASK_OUTCOMES}). */
export type TaskOutcome = (typeof TASK_OUTCOMES)[number];

const chainEventSchema = z.strictObject({
  event: z.string(),
  blockNumber: decimal,
  blockHash: hash32,
  logIndex: z.int().min(0),
  transactionHash: hash32,
  /** The event's arguments that matter to the node, as strings (bigints in decimal). */
  data: z.record(z.string(), z.string()),
});
/** A confirmed event of the task, as delivered by the chain watcher. */
export type StoredChainEvent = z.output<typeof chainEventSchema>;

const gptOutputSchema = z.strictObject({
  kind: z.literal("result"),
  /** What is committed and disclosed: 32 bytes (GPT) or 8 bytes per image (SD). */
  result: hex,
  /** GPT: the response JSON to upload (canonicalized by the relay client). */
  response: z.record(z.string(), z.unknown()).optional(),
  /** SD: the number of images, stored as `<taskId>.images/<index>.png` beside the record. */
  imageCount: z.int().min(1).optional(),
});
const errorOutputSchema = z.strictObject({
  kind: z.literal("error"),
  /** Machine-readable reason (`bad_args`, `cap_too_low`, `model_invalid`, `prompt_too_long`, …). */
  reason: z.string(),
  message: z.string(),
});

/**
 * Schema of a task record file (`tasks/<taskId>.json`, version 1): bigints as decimal strings, the result
 * and secret nonce once executed, and the confirmed chain events.
 */
export const taskRecordSchema = z.strictObject({
  version: z.literal(1),
  taskId: decimal,
  round: z.int().min(0).max(2),
  taskType: z.union([z.literal(0), z.literal(1)]),
  taskHash: hash32,
  creator: address,
  /** Where TaskStarted was seen; a record created from the chain's views at start-up has none. */
  startedIn: z.strictObject({ blockNumber: decimal, blockHash: hash32, transactionHash: hash32 }).nullable(),
  step: z.enum(TASK_STEPS),
  output: z.discriminatedUnion("kind", [gptOutputSchema, errorOutputSchema]).optional(),
  /**
   * The secret of the commitment, drawn with crypto.getRandomValues and stored (with the output) before the
   * commitment is sent: without it the node cannot disclose.
   */
  nonce: hash32.optional(),
  commitment: hash32.optional(),
  /** Hashes of the transactions sent for this task, by function name (the latest attempt). */
  txs: z.record(z.string(), hash32),
  /**
   * A transaction signed and about to be (or being) broadcast, stored before it can land: after a crash the
   * node waits for it, or finds that the chain never saw it, before deciding anything.
   */
  pendingTx: z.strictObject({ functionName: z.string(), hash: hash32 }).optional(),
  events: z.array(chainEventSchema),
  outcome: z.enum(TASK_OUTCOMES).optional(),
  /**
   * Done records: the block whose state the task was finished on, and the step it was at. A reorg reaching
   * down to that block may have dropped what ended the task (a release buried under fewer blocks than the
   * reorg's depth): the record is then reopened at that step and the chain is read again.
   */
  finishedIn: z.strictObject({ blockNumber: decimal, step: z.enum(TASK_STEPS) }).optional(),
  /** Why the node stopped working on the task before its end (no executor, lost result, deadline). */
  note: z.string().optional(),
  /** The last failure of a step (kept for status and logs; the step is retried). */
  lastError: z.string().optional(),
  createdAt: z.int(),
  updatedAt: z.int(),
});
/** A node's record of one of its tasks, as parsed by {@link taskRecordSchema}. */
export type TaskRecord = z.output<typeof taskRecordSchema>;

const nodeMetaSchema = z.strictObject({
  version: z.literal(1),
  /** The node's address this directory belongs to: a state directory is never shared by two accounts. */
  address: address.optional(),
  /**
   * The chain this directory's cursor and task records come from: chain id, genesis block hash and Task
   * contract. A directory is never used on another chain (a restarted devnet can have the same chain id and
   * addresses, but not the same genesis).
   */
  chain: z.strictObject({ id: z.int().positive(), genesis: hash32, task: address }).optional(),
  /** First block the watcher reads when its cursor is empty (the head before the node first joined). */
  fromBlock: decimal.optional(),
  /** The chain watcher's cursor (`followerCursorToJson`), written after the records it produced. */
  cursor: z
    .strictObject({ checkpoints: z.array(z.strictObject({ number: decimal, hash: hash32 })) })
    .optional(),
});
/**
 * The node's own state file (`node.json`): the account it belongs to, the first block to watch and the chain
 * watcher's cursor.
 */
export type NodeMeta = z.output<typeof nodeMetaSchema>;

const archiveSchema = z.strictObject({
  version: z.literal(1),
  /** Finished task records pruned so far. */
  tasks: z.int().min(0),
  outcomes: z.partialRecord(z.enum(TASK_OUTCOMES), z.int().min(0)),
  /** Sum of the pruned records' payments (wei, decimal). */
  earnings: decimal,
  /**
   * The ids of the last pruning batch, counted above before their files were removed: after a crash between
   * the two, the files still there are removed without being counted twice.
   */
  counted: z.array(decimal),
});
/** Totals of the finished task records that were pruned (`archive.json`). */
export type TaskArchive = z.output<typeof archiveSchema>;

/** What a task paid this node (its `TaskNodeSuccess` events), in wei. */
export function taskEarnings(record: TaskRecord): bigint {
  let earned = 0n;
  for (const event of record.events)
    if (event.event === "TaskNodeSuccess") earned += BigInt(event.data.fee ?? "0");
  return earned;
}

/**
 * The node's durable state: `node.json`, one JSON file per task under `tasks/`, and `archive.json` with the
 * totals of pruned records.
 */
export type NodeStore = {
  readonly dir: string;
  /** Reads `node.json`; a fresh directory reads as `{ version: 1 }`. */
  readMeta(): Promise<NodeMeta>;
  /** Validates and writes `node.json` atomically. */
  writeMeta(meta: NodeMeta): Promise<void>;
  /** Reads one task record; `undefined` when there is none. */
  getTask(taskId: bigint): Promise<TaskRecord | undefined>;
  /** Reads every task record still in the store (pruned ones are only counted in the archive). */
  listTasks(): Promise<TaskRecord[]>;
  /** Writes the record atomically (temp file, fsync, rename, fsync of the directory). */
  putTask(record: TaskRecord): Promise<void>;
  /**
   * Read-modify-write of one record, serialized with every other update of this store object (the chain
   * watcher and the task pipeline both write records). `mutate` returns the new record, or `undefined` to
   * leave it as it is. Returns the record as stored afterwards.
   */
  updateTask(
    taskId: bigint,
    mutate: (record: TaskRecord | undefined) => TaskRecord | undefined,
  ): Promise<TaskRecord | undefined>;
  /** Removes a task record and its images. */
  deleteTask(taskId: bigint): Promise<void>;
  /**
   * Saves an SD task's PNG images (`tasks/<taskId>.images/<index>.png`) so that a restart can still upload
   * them.
   */
  writeImages(taskId: bigint, images: Uint8Array[]): Promise<void>;
  /** Reads back the `count` PNG images saved by `writeImages`, in order. */
  readImages(taskId: bigint, count: number): Promise<Uint8Array[]>;
  /** Totals of the records removed by {@link NodeStore.pruneTasks} (zero when none was). */
  readArchive(): Promise<TaskArchive>;
  /**
   * Removes the records of finished tasks (step `done`) last updated before `before` (ms since the epoch),
   * after adding their outcomes and earnings to the archive; unfinished tasks are never removed. Returns how
   * many records were removed.
   */
  pruneTasks(before: number): Promise<number>;
};

/**
 * Opens (creating it if needed) a node state directory. Every write is atomic and durable; every read is
 * validated, and a file that is not what it should be throws {@link NodeStoreError} naming it: a task the
 * node committed to must never be forgotten quietly.
 */
export async function openNodeStore(dir: string): Promise<NodeStore> {
  const tasksDir = join(dir, "tasks");
  await mkdir(tasksDir, { recursive: true });
  const metaPath = join(dir, "node.json");
  const archivePath = join(dir, "archive.json");
  const emptyArchive = (): TaskArchive => ({
    version: 1,
    tasks: 0,
    outcomes: {},
    earnings: "0",
    counted: [],
  });
  const taskPath = (taskId: bigint) => join(tasksDir, `${taskId}.json`);
  const imagesDir = (taskId: bigint) => join(tasksDir, `${taskId}.images`);

  async function readJson<S extends z.ZodType>(path: string, schema: S): Promise<z.output<S> | undefined> {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new NodeStoreError(`Cannot read ${path}.`, { path, cause: error });
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (cause) {
      throw new NodeStoreError(`${path} is not valid JSON.`, { path, cause });
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success)
      throw new NodeStoreError(`${path} is not a valid node state file.`, {
        path,
        details: z.prettifyError(parsed.error),
        cause: parsed.error,
      });
    return parsed.data;
  }

  let lock: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(work: () => Promise<T>): Promise<T> => {
    const run = lock.then(work, work);
    lock = run.catch(() => {});
    return run;
  };
  const put = async (record: TaskRecord) => {
    const valid = taskRecordSchema.parse(record);
    await writeFileAtomic(taskPath(BigInt(valid.taskId)), JSON.stringify(valid, null, 2));
  };

  return {
    dir,
    async readMeta() {
      return (await readJson(metaPath, nodeMetaSchema)) ?? { version: 1 };
    },
    async writeMeta(meta) {
      await writeFileAtomic(metaPath, JSON.stringify(nodeMetaSchema.parse(meta), null, 2));
    },
    getTask(taskId) {
      return readJson(taskPath(taskId), taskRecordSchema);
    },
    async listTasks() {
      const names = (await readdir(tasksDir)).filter((name) => /^\d+\.json$/.test(name));
      const records: TaskRecord[] = [];
      for (const name of names) {
        const record = await readJson(join(tasksDir, name), taskRecordSchema);
        if (record) records.push(record);
      }
      return records.sort((a, b) => (BigInt(a.taskId) < BigInt(b.taskId) ? -1 : 1));
    },
    putTask(record) {
      return exclusive(() => put(record));
    },
    updateTask(taskId, mutate) {
      return exclusive(async () => {
        const current = await readJson(taskPath(taskId), taskRecordSchema);
        const next = mutate(current);
        if (next === undefined) return current;
        const stored = { ...next, updatedAt: Date.now() };
        await put(stored);
        return stored;
      });
    },
    deleteTask(taskId) {
      return exclusive(async () => {
        await rm(taskPath(taskId), { force: true });
        await rm(imagesDir(taskId), { recursive: true, force: true });
        await fsyncDir(tasksDir);
      });
    },
    async readArchive() {
      return (await readJson(archivePath, archiveSchema)) ?? emptyArchive();
    },
    pruneTasks(before) {
      return exclusive(async () => {
        const archive = (await readJson(archivePath, archiveSchema)) ?? emptyArchive();
        const counted = new Set(archive.counted);
        const names = (await readdir(tasksDir)).filter((name) => /^\d+\.json$/.test(name));
        const batch: TaskRecord[] = [];
        for (const name of names) {
          const record = await readJson(join(tasksDir, name), taskRecordSchema);
          if (record && record.step === "done" && record.updatedAt < before) batch.push(record);
        }
        if (batch.length === 0) return 0;
        let earnings = BigInt(archive.earnings);
        const outcomes = { ...archive.outcomes };
        let tasks = archive.tasks;
        for (const record of batch) {
          if (counted.has(record.taskId)) continue;
          tasks += 1;
          earnings += taskEarnings(record);
          if (record.outcome) outcomes[record.outcome] = (outcomes[record.outcome] ?? 0) + 1;
        }
        const next: TaskArchive = {
          version: 1,
          tasks,
          outcomes,
          earnings: earnings.toString(),
          counted: batch.map((record) => record.taskId),
        };
        await writeFileAtomic(archivePath, JSON.stringify(archiveSchema.parse(next), null, 2));
        for (const record of batch) {
          await rm(taskPath(BigInt(record.taskId)), { force: true });
          await rm(imagesDir(BigInt(record.taskId)), { recursive: true, force: true });
        }
        await fsyncDir(tasksDir);
        return batch.length;
      });
    },
    async writeImages(taskId, images) {
      const target = imagesDir(taskId);
      await mkdir(target, { recursive: true });
      for (const [index, image] of images.entries())
        await writeFileAtomic(join(target, `${index}.png`), image);
      await fsyncDir(tasksDir);
    },
    async readImages(taskId, count) {
      const images: Uint8Array[] = [];
      for (let index = 0; index < count; index++) {
        const path = join(imagesDir(taskId), `${index}.png`);
        try {
          images.push(new Uint8Array(await readFile(path)));
        } catch (cause) {
          throw new NodeStoreError(`Image ${index} of task ${taskId} is missing from the node state.`, {
            path,
            cause,
          });
        }
      }
      return images;
    },
  };
}

/** Temp file in the same directory, fsync, rename over the target, fsync the directory (the rename). */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = join(path, "..");
  const temp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  const handle = await open(temp, "w", 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await fsyncDir(dir);
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } catch (error) {
    // Some file systems refuse fsync on a directory; the rename itself is still atomic there.
    if (
      (error as NodeJS.ErrnoException).code !== "EINVAL" &&
      (error as NodeJS.ErrnoException).code !== "EISDIR"
    )
      throw error;
  } finally {
    await handle.close();
  }
}
