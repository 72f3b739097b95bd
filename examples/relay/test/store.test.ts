import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { createPgConfig } from "@electric-sql/pglite/node-postgres";
import fc from "fast-check";
import { Pool } from "pg";
import { type Address, getAddress, type Hex, keccak256, toHex } from "viem";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { RelayError, StoreConflictError } from "../src/errors.js";
import {
  type BlobStore,
  createSqlStore,
  type FollowerCursor,
  type IndexedTask,
  migrate,
  openBlobStore,
  openPgliteStore,
  pgliteExecutor,
  postgresExecutor,
  type RelayStore,
  SCHEMA_VERSION,
  type SqlExecutor,
  type StoredResults,
  type TaskEvent,
} from "../src/store/index.js";

const tempDirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), `relay-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}
afterAll(async () => {
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

const addr = (i: number): Address => getAddress(`0x${(0xa0 + i).toString(16).padStart(40, "0")}`);
const hash = (label: string): Hex => keccak256(toHex(label));
const CREATOR = addr(0);
const NODES = [addr(1), addr(2), addr(3)] as const;
const R1 = hash("result 1");

let logCounter = 0;
function ev(eventName: string, blockNumber: bigint, args: Record<string, unknown>): TaskEvent {
  return {
    eventName,
    args,
    blockNumber,
    logIndex: logCounter++,
    blockHash: hash(`block ${blockNumber}`),
    transactionHash: hash(`tx ${logCounter}`),
  };
}
const queued = (taskId: bigint, block: bigint, taskType: 0 | 1 = 1, taskHash = hash(`task ${taskId}`)) =>
  ev("TaskQueued", block, {
    taskId,
    taskType,
    creator: CREATOR,
    taskHash,
    dataHash: hash("data"),
    vramLimit: 0n,
    cap: 1n,
    fee: 10n ** 18n,
    value: 10n ** 18n,
  });
const started = (taskId: bigint, block: bigint, taskType: 0 | 1 = 1, taskHash = hash(`task ${taskId}`)) =>
  [0, 1, 2].map((round) =>
    ev("TaskStarted", block, {
      taskId,
      taskType,
      creator: CREATOR,
      selectedNode: NODES[round],
      taskHash,
      dataHash: hash("data"),
      round,
    }),
  );
const success = (taskId: bigint, block: bigint, result: Hex = R1) =>
  ev("TaskSuccess", block, { taskId, result, resultNode: NODES[0] });
const uploaded = (taskId: bigint, block: bigint) => ev("TaskResultUploaded", block, { taskId });
const aborted = (taskId: bigint, block: bigint, reason: string) =>
  ev("TaskAborted", block, { taskId, reason });
const nodeSuccess = (taskId: bigint, block: bigint) =>
  ev("TaskNodeSuccess", block, { taskId, node: NODES[1], fee: 5n });

const cursorAt = (block: bigint): FollowerCursor => ({
  checkpoints: [{ number: block, hash: hash(`block ${block}`) }],
});

function task(taskId: bigint, fields: Partial<IndexedTask>): IndexedTask {
  return {
    taskId,
    taskType: 1,
    creator: CREATOR,
    taskHash: hash(`task ${taskId}`),
    state: "queued",
    nodes: [],
    resultNode: null,
    result: null,
    updatedBlock: 0n,
    ...fields,
  };
}

// initdb of a fresh PGlite data directory takes seconds (over 10 on a busy 2-core machine).
const PGLITE_START_MS = 120_000;

// One PGlite for the file (it takes a while to load). The store's SQL runs on it twice: through the PGlite
// executor, and through node-postgres (a real pg.Pool speaking to PGlite), the path used with PostgreSQL.
// Both stores share the database; tests start from empty tables.
let pg: PGlite;
let pool: Pool;
const backends = {} as Record<"PGlite" | "node-postgres", { executor: SqlExecutor; store: RelayStore }>;
beforeAll(async () => {
  pg = await PGlite.create(await tempDir("pglite"));
  const lite = pgliteExecutor(pg);
  backends.PGlite = { executor: lite, store: await createSqlStore(lite) };
  pool = new Pool(createPgConfig(pg));
  const viaPg = postgresExecutor(pool);
  backends["node-postgres"] = { executor: viaPg, store: await createSqlStore(viaPg) };
}, PGLITE_START_MS);
afterAll(async () => {
  // the pool does not own the PGlite instance: end it first, then close PGlite through the other store
  await backends["node-postgres"]?.store.close();
  await backends.PGlite?.store.close();
});
beforeEach(async () => {
  await pg.exec("TRUNCATE tasks, task_events, task_args, task_results, follower_cursor");
});

describe.each(["PGlite", "node-postgres"] as const)("store over %s", (backend) => {
  let executor: SqlExecutor;
  let store: RelayStore;
  beforeAll(() => {
    ({ executor, store } = backends[backend]);
  });

  describe("migrations", () => {
    test("run once per version, and again is a no-op", async () => {
      await migrate(executor);
      await migrate(executor);
      const { rows } = await pg.query<{ version: number }>(
        "SELECT version FROM schema_migrations ORDER BY version",
      );
      expect(rows.map((r) => r.version)).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
      await store.putArgs(1n, hash("t"), "{}");
      await migrate(executor);
      expect(await store.getArgs(1n, hash("t"))).toBe("{}");
    });

    test("a database with a newer schema is refused", async () => {
      await pg.query("INSERT INTO schema_migrations (version) VALUES ($1)", [SCHEMA_VERSION + 1]);
      try {
        await expect(migrate(executor)).rejects.toMatchObject({ code: "schema_too_new" });
      } finally {
        await pg.query("DELETE FROM schema_migrations WHERE version = $1", [SCHEMA_VERSION + 1]);
      }
    });
  });

  describe("args and results", () => {
    const H = hash("task hash");

    test("args: first put stores, same text is idempotent, different text is a conflict", async () => {
      expect(await store.getArgs(7n, H)).toBeNull();
      expect(await store.putArgs(7n, H, '{"a":1}')).toEqual({ stored: true });
      expect(await store.putArgs(7n, H, '{"a":1}')).toEqual({ stored: false });
      const error = await store.putArgs(7n, H, '{"a":2}').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreConflictError);
      expect(error).toBeInstanceOf(RelayError);
      expect(error).toMatchObject({ code: "conflict", status: 409, taskId: 7n, kind: "args" });
      expect(await store.getArgs(7n, H)).toBe('{"a":1}');
      // the hash is part of the key (a reorg may give the id to another task), in any letter case
      expect(await store.getArgs(7n, hash("other"))).toBeNull();
      expect(await store.putArgs(7n, hash("other"), '{"a":2}')).toEqual({ stored: true });
      expect(await store.getArgs(7n, H.toUpperCase().replace("0X", "0x") as Hex)).toBe('{"a":1}');
    });

    test("uint256 task ids are kept exactly", async () => {
      const big = 2n ** 256n - 1n;
      await store.putArgs(big, H, "big");
      await store.putArgs(big - 1n, H, "big - 1");
      expect(await store.getArgs(big, H)).toBe("big");
      expect(await store.getArgs(big - 1n, H)).toBe("big - 1");
      await store.applyTaskEvents([queued(big, 3n)], cursorAt(3n));
      expect((await store.getTask(big))?.taskId).toBe(big);
    });

    test("bad keys are refused", async () => {
      await expect(store.putArgs(1n, "0x1234", "{}")).rejects.toMatchObject({ code: "invalid_task_hash" });
      await expect(store.getArgs(-1n, H)).rejects.toMatchObject({ code: "invalid_task_id" });
    });

    test("results: GPT and SD records, idempotent, conflicts refused", async () => {
      const sha = (label: string) => hash(label).slice(2);
      const gpt: StoredResults = { taskType: 1, response: { sha256: sha("response"), size: 120 } };
      const sd: StoredResults = {
        taskType: 0,
        images: [
          { index: 0, sha256: sha("img 0"), size: 10 },
          { index: 1, sha256: sha("img 1"), size: 11 },
        ],
      };
      expect(await store.getResults(1n, H)).toBeNull();
      expect(await store.putResults(1n, H, gpt)).toEqual({ stored: true });
      // key order of the caller's object does not matter
      expect(
        await store.putResults(1n, H, { response: { size: 120, sha256: sha("response") }, taskType: 1 }),
      ).toEqual({ stored: false });
      expect(await store.putResults(2n, H, sd)).toEqual({ stored: true });
      expect(await store.putResults(2n, H, sd)).toEqual({ stored: false });
      expect(await store.getResults(1n, H)).toEqual(gpt);
      expect(await store.getResults(2n, H)).toEqual(sd);
      await expect(
        store.putResults(2n, H, { taskType: 0, images: [{ index: 0, sha256: sha("img 0"), size: 10 }] }),
      ).rejects.toBeInstanceOf(StoreConflictError);
      await expect(
        store.putResults(3n, H, { taskType: 0, images: [{ index: 1, sha256: sha("img 1"), size: 11 }] }),
      ).rejects.toMatchObject({ code: "invalid_results_record" });
      expect(await store.getResults(3n, H)).toBeNull();
    });
  });

  describe("events", () => {
    test("every state is derived, with nodes, result and the block of the last event", async () => {
      const events = [
        queued(1n, 10n), // stays queued
        queued(2n, 10n),
        ...started(2n, 11n), // queued, then started
        ...started(3n, 10n), // started at once (no TaskQueued)
        success(3n, 12n),
        nodeSuccess(3n, 13n),
        ...started(4n, 10n),
        success(4n, 12n),
        uploaded(4n, 14n),
        ...started(5n, 10n),
        aborted(5n, 12n, "task error"),
        ...started(6n, 10n),
        aborted(6n, 12n, "results mismatch"),
        queued(7n, 10n, 0),
        aborted(7n, 11n, "cancelled"),
        ...started(8n, 10n),
        success(8n, 12n),
        aborted(8n, 15n, "cancelled"), // success never uploaded, cancelled after the deadline
        ev("OwnershipTransferred", 10n, { previousOwner: addr(8), newOwner: addr(9) }),
      ];
      await store.applyTaskEvents(events, cursorAt(15n));
      const nodes = [...NODES];
      const expected = [
        task(1n, { state: "queued", updatedBlock: 10n }),
        task(2n, { state: "started", nodes, updatedBlock: 11n }),
        task(3n, { state: "success", nodes, result: R1, resultNode: NODES[0], updatedBlock: 13n }),
        task(4n, { state: "uploaded", nodes, result: R1, resultNode: NODES[0], updatedBlock: 14n }),
        task(5n, { state: "error", nodes, updatedBlock: 12n }),
        task(6n, { state: "aborted", nodes, updatedBlock: 12n }),
        task(7n, { state: "aborted", taskType: 0, updatedBlock: 11n }),
        task(8n, { state: "aborted", nodes, result: R1, resultNode: NODES[0], updatedBlock: 15n }),
      ];
      for (const t of expected) expect(await store.getTask(t.taskId)).toEqual(t);
      expect(await store.getTask(9n)).toBeNull();
      expect(await store.counts()).toEqual({ tasks: 8, withArgs: 0, withResults: 0 });
      expect(await store.loadCursor()).toEqual(cursorAt(15n));
    });

    test("events are ordered by block number, not by its decimal text (95 before 122)", async () => {
      const events = [queued(1n, 95n), ...started(1n, 99n), success(1n, 122n), uploaded(1n, 1001n)];
      for (const e of events) await store.applyTaskEvents([e], cursorAt(e.blockNumber));
      expect(await store.getTask(1n)).toMatchObject({ state: "uploaded", updatedBlock: 1001n });
    });

    test("events applied over several batches give the same tasks as one batch", async () => {
      const events = [queued(1n, 10n), ...started(1n, 11n), success(1n, 12n), uploaded(1n, 13n)];
      for (const e of events) await store.applyTaskEvents([e], cursorAt(e.blockNumber));
      expect(await store.getTask(1n)).toEqual(
        task(1n, {
          state: "uploaded",
          nodes: [...NODES],
          result: R1,
          resultNode: NODES[0],
          updatedBlock: 13n,
        }),
      );
      expect(await store.loadCursor()).toEqual(cursorAt(13n));
    });

    test("no cursor before the first batch; a batch without task events still moves the cursor", async () => {
      expect(await store.loadCursor()).toBeNull();
      await store.applyTaskEvents([], cursorAt(5n));
      expect(await store.loadCursor()).toEqual(cursorAt(5n));
      const many: FollowerCursor = {
        checkpoints: [3n, 4n, 5n].map((n) => ({ number: n, hash: hash(`block ${n}`) })),
      };
      await store.applyTaskEvents([], many);
      expect(await store.loadCursor()).toEqual(many);
    });

    test("a batch is applied whole or not at all, cursor included", async () => {
      await store.applyTaskEvents([queued(1n, 10n)], cursorAt(10n));
      // the database refuses the last row (log index beyond int4) after the others were written
      const bad = { ...uploaded(1n, 12n), logIndex: 2 ** 40 };
      await expect(store.applyTaskEvents([...started(1n, 11n), bad], cursorAt(12n))).rejects.toThrow();
      expect(await store.getTask(1n)).toEqual(task(1n, { state: "queued", updatedBlock: 10n }));
      expect(await store.loadCursor()).toEqual(cursorAt(10n));
      // malformed event args are refused before anything is written
      const malformed = ev("TaskStarted", 11n, { taskId: 1n, taskType: 1, round: 7 });
      await expect(store.applyTaskEvents([malformed], cursorAt(11n))).rejects.toMatchObject({
        code: "invalid_event",
      });
      expect(await store.loadCursor()).toEqual(cursorAt(10n));
    });

    test("a log position delivered again replaces the event it held", async () => {
      const first = queued(1n, 10n);
      await store.applyTaskEvents([first], cursorAt(10n));
      await store.applyTaskEvents([{ ...queued(2n, 10n), logIndex: first.logIndex }], cursorAt(10n));
      expect(await store.getTask(1n)).toBeNull();
      expect((await store.getTask(2n))?.state).toBe("queued");
    });
  });

  describe("rollback", () => {
    test("forgets blocks >= fromBlock and re-derives the tasks they touched", async () => {
      await store.applyTaskEvents(
        [
          queued(1n, 10n),
          queued(3n, 11n),
          ...started(1n, 12n),
          success(1n, 15n),
          uploaded(1n, 16n),
          ...started(2n, 16n),
        ],
        cursorAt(16n),
      );
      await store.putArgs(1n, hash("task 1"), "args 1");
      await store.putArgs(2n, hash("task 2"), "args 2");
      expect(await store.counts()).toEqual({ tasks: 3, withArgs: 2, withResults: 0 });

      await store.rollback(15n, cursorAt(14n));
      expect(await store.getTask(1n)).toEqual(
        task(1n, { state: "started", nodes: [...NODES], updatedBlock: 12n }),
      );
      expect(await store.getTask(2n)).toBeNull();
      expect(await store.getTask(3n)).toEqual(task(3n, { state: "queued", updatedBlock: 11n }));
      expect(await store.loadCursor()).toEqual(cursorAt(14n));
      // args stay (keyed by hash) but only count for tasks that exist
      expect(await store.counts()).toEqual({ tasks: 2, withArgs: 1, withResults: 0 });

      // the new chain gives id 2 to another task: the old args do not apply to it
      const otherHash = hash("another task 2");
      await store.applyTaskEvents([queued(2n, 15n, 0, otherHash)], cursorAt(15n));
      expect(await store.getTask(2n)).toMatchObject({ taskHash: otherHash, taskType: 0, state: "queued" });
      expect(await store.getArgs(2n, otherHash)).toBeNull();
      expect(await store.getArgs(2n, hash("task 2"))).toBe("args 2");
      expect(await store.counts()).toEqual({ tasks: 3, withArgs: 1, withResults: 0 });
    });

    test("rollback then re-apply equals applying only the kept events (property)", async () => {
      // A random history of tasks over blocks 1..12, cut at a random block.
      const history = fc.array(
        fc.record({
          taskId: fc.bigInt({ min: 1n, max: 4n }),
          block: fc.bigInt({ min: 1n, max: 12n }),
          kind: fc.constantFrom(
            "queued",
            "started",
            "success",
            "uploaded",
            "error",
            "aborted",
            "nodeSuccess",
          ),
        }),
        { maxLength: 14 },
      );
      const toEvents = (items: { taskId: bigint; block: bigint; kind: string }[]) =>
        [...items]
          .sort((a, b) => Number(a.block - b.block))
          .flatMap(({ taskId, block, kind }) => {
            switch (kind) {
              case "queued":
                return [queued(taskId, block)];
              case "started":
                return started(taskId, block);
              case "success":
                return [success(taskId, block)];
              case "uploaded":
                return [uploaded(taskId, block)];
              case "error":
                return [aborted(taskId, block, "task error")];
              case "aborted":
                return [aborted(taskId, block, "cancelled")];
              default:
                return [nodeSuccess(taskId, block)];
            }
          });
      const snapshot = async () => {
        const tasks = [];
        for (let id = 1n; id <= 4n; id++) tasks.push(await store.getTask(id));
        return { tasks, counts: await store.counts(), cursor: await store.loadCursor() };
      };
      await fc.assert(
        fc.asyncProperty(history, fc.bigInt({ min: 1n, max: 13n }), async (items, cut) => {
          await pg.exec("TRUNCATE tasks, task_events, task_args, task_results, follower_cursor");
          const events = toEvents(items);
          await store.applyTaskEvents(events, cursorAt(12n));
          await store.rollback(cut, cursorAt(cut - 1n));
          const rolledBack = await snapshot();
          await pg.exec("TRUNCATE tasks, task_events, task_args, task_results, follower_cursor");
          await store.applyTaskEvents(
            events.filter((e) => e.blockNumber < cut),
            cursorAt(cut - 1n),
          );
          expect(rolledBack).toEqual(await snapshot());
        }),
        { numRuns: 40 },
      );
    });
  });
});

describe("persistence", () => {
  test(
    "close and reopen the same dataDir: tasks, args, results and cursor intact",
    async () => {
      const dir = await tempDir("reopen");
      const first = await openPgliteStore({ dataDir: dir });
      try {
        await first.applyTaskEvents([queued(1n, 10n), ...started(2n, 11n), success(2n, 12n)], cursorAt(12n));
        await first.putArgs(2n, hash("task 2"), "args");
        await first.putResults(2n, hash("task 2"), {
          taskType: 1,
          response: { sha256: "a".repeat(64), size: 3 },
        });
      } finally {
        await first.close();
      }
      const second = await openPgliteStore({ dataDir: dir });
      try {
        expect(await second.getTask(1n)).toEqual(task(1n, { state: "queued", updatedBlock: 10n }));
        expect(await second.getTask(2n)).toMatchObject({ state: "success", result: R1, updatedBlock: 12n });
        expect(await second.getArgs(2n, hash("task 2"))).toBe("args");
        expect(await second.getResults(2n, hash("task 2"))).toEqual({
          taskType: 1,
          response: { sha256: "a".repeat(64), size: 3 },
        });
        expect(await second.loadCursor()).toEqual(cursorAt(12n));
        expect(await second.counts()).toEqual({ tasks: 2, withArgs: 1, withResults: 1 });
        // the re-derivation still sees the events of the first session
        await second.rollback(12n, cursorAt(11n));
        expect(await second.getTask(2n)).toMatchObject({ state: "started", result: null, updatedBlock: 11n });
      } finally {
        await second.close();
      }
    },
    2 * PGLITE_START_MS,
  );

  test(
    "a store without dataDir runs in memory",
    async () => {
      const memory = await openPgliteStore({});
      try {
        await memory.putArgs(1n, hash("t"), "x");
        expect(await memory.getArgs(1n, hash("t"))).toBe("x");
      } finally {
        await memory.close();
      }
    },
    PGLITE_START_MS,
  );
});

describe("blob store", () => {
  let dir: string;
  let blobs: BlobStore;
  beforeAll(async () => {
    dir = await tempDir("blobs");
    blobs = await openBlobStore(dir);
  });
  const blobFile = (sha256: string) => path.join(dir, sha256.slice(0, 2), sha256.slice(2, 4), sha256);
  const sha256Of = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

  test("content-addressed under ab/cd/<sha256>, idempotent", async () => {
    const bytes = new TextEncoder().encode("hello blob");
    const put = await blobs.put(bytes);
    expect(put).toEqual({ sha256: sha256Of(bytes), size: bytes.byteLength });
    expect(new Uint8Array(await readFile(blobFile(put.sha256)))).toEqual(bytes);
    expect(await blobs.put(bytes)).toEqual(put);
    expect(await blobs.has(put.sha256)).toBe(true);
    expect(await blobs.get(put.sha256)).toEqual(bytes);
    const empty = await blobs.put(new Uint8Array());
    expect(empty.size).toBe(0);
    expect(await blobs.get(empty.sha256)).toEqual(new Uint8Array());
    expect(await readdir(path.join(dir, "tmp"))).toEqual([]);
  });

  test("unknown blobs are absent; ids that are not sha256 hex are refused", async () => {
    const unknown = "0".repeat(64);
    expect(await blobs.has(unknown)).toBe(false);
    expect(await blobs.get(unknown)).toBeNull();
    for (const bad of ["../../etc/passwd", "A".repeat(64), "0".repeat(63)]) {
      await expect(blobs.get(bad)).rejects.toMatchObject({ code: "invalid_blob_id" });
      await expect(blobs.has(bad)).rejects.toMatchObject({ code: "invalid_blob_id" });
    }
  });

  test("concurrent puts of the same and of different bytes all land intact", async () => {
    const payloads = Array.from({ length: 8 }, (_, i) => new Uint8Array(64 * 1024).fill(i % 3));
    const results = await Promise.all(payloads.map((p) => blobs.put(p)));
    for (const [i, r] of results.entries()) expect(await blobs.get(r.sha256)).toEqual(payloads[i]);
    expect(new Set(results.map((r) => r.sha256)).size).toBe(3);
    expect(await readdir(path.join(dir, "tmp"))).toEqual([]);
  });

  test("partial temp files are never visible; stale ones are swept at open, fresh ones kept", async () => {
    const bytes = new TextEncoder().encode("written halfway");
    const sha256 = sha256Of(bytes);
    // what a crash in the middle of put() leaves behind
    const stale = path.join(dir, "tmp", `${sha256}.dead.tmp`);
    const fresh = path.join(dir, "tmp", `${sha256}.live.tmp`);
    await writeFile(stale, bytes.subarray(0, 5));
    await writeFile(fresh, bytes.subarray(0, 7));
    const longAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await utimes(stale, longAgo, longAgo);
    expect(await blobs.has(sha256)).toBe(false);
    expect(await blobs.get(sha256)).toBeNull();

    await openBlobStore(dir);
    expect((await readdir(path.join(dir, "tmp"))).sort()).toEqual([path.basename(fresh)]);
    expect(await blobs.put(bytes)).toEqual({ sha256, size: bytes.byteLength });
    expect(await blobs.get(sha256)).toEqual(bytes);
    await rm(fresh);
  });

  test("a blob damaged on disk is reported, not served, and put() repairs it", async () => {
    const bytes = new TextEncoder().encode("precious");
    const { sha256 } = await blobs.put(bytes);
    await writeFile(blobFile(sha256), "prec");
    await expect(blobs.get(sha256)).rejects.toMatchObject({ code: "blob_corrupted" });
    await blobs.put(bytes);
    expect(await blobs.get(sha256)).toEqual(bytes);
    expect((await stat(blobFile(sha256))).size).toBe(bytes.byteLength);
  });
});
