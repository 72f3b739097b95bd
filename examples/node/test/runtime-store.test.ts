import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NodeStoreError, openNodeStore, type TaskRecord } from "@crynux/node-core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-node-store-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const record = (taskId: bigint, extra: Partial<TaskRecord> = {}): TaskRecord => ({
  version: 1,
  taskId: taskId.toString(),
  round: 1,
  taskType: 1,
  taskHash: `0x${"ab".repeat(32)}`,
  creator: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
  startedIn: {
    blockNumber: "12",
    blockHash: `0x${"01".repeat(32)}`,
    transactionHash: `0x${"02".repeat(32)}`,
  },
  step: "started",
  txs: {},
  events: [],
  createdAt: 1,
  updatedAt: 1,
  ...extra,
});

describe("node store", () => {
  test("records and meta survive reopening; writes leave no temp files", async () => {
    const store = await openNodeStore(dir);
    expect(await store.readMeta()).toEqual({ version: 1 });
    await store.putTask(record(7n, { nonce: `0x${"11".repeat(32)}`, step: "executed" }));
    await store.writeMeta({
      version: 1,
      fromBlock: "5",
      cursor: { checkpoints: [{ number: "9", hash: `0x${"03".repeat(32)}` }] },
    });

    const reopened = await openNodeStore(dir);
    expect((await reopened.getTask(7n))?.nonce).toBe(`0x${"11".repeat(32)}`);
    expect((await reopened.readMeta()).fromBlock).toBe("5");
    expect(await reopened.getTask(8n)).toBeUndefined();
    expect(await readdir(join(dir, "tasks"))).toEqual(["7.json"]);
    expect((await readdir(dir)).sort()).toEqual(["node.json", "tasks"]);
  });

  test("concurrent updates of one record are serialized (none is lost)", async () => {
    const store = await openNodeStore(dir);
    await store.putTask(record(1n));
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        store.updateTask(1n, (r) =>
          r ? { ...r, txs: { ...r.txs, [`f${i}`]: `0x${"0a".repeat(32)}` } } : undefined,
        ),
      ),
    );
    expect(Object.keys((await store.getTask(1n))!.txs)).toHaveLength(20);
  });

  test("a corrupt or invalid file is an error naming it, never skipped", async () => {
    const store = await openNodeStore(dir);
    await store.putTask(record(3n));
    const path = join(dir, "tasks", "3.json");
    await writeFile(path, "{ not json");
    await expect(store.getTask(3n)).rejects.toBeInstanceOf(NodeStoreError);
    await expect(store.listTasks()).rejects.toThrow(path);

    const valid = JSON.parse(JSON.stringify(record(3n)));
    valid.nonce = "0x1234"; // not 32 bytes
    await writeFile(path, JSON.stringify(valid));
    const error = await store.getTask(3n).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NodeStoreError);
    expect((error as NodeStoreError).path).toBe(path);
    expect((error as NodeStoreError).details).toContain("nonce");

    await writeFile(join(dir, "node.json"), JSON.stringify({ version: 2 }));
    await expect(store.readMeta()).rejects.toBeInstanceOf(NodeStoreError);
  });

  test("an invalid record is refused before anything is written", async () => {
    const store = await openNodeStore(dir);
    await expect(store.putTask({ ...record(4n), round: 3 })).rejects.toThrow();
    expect(await readdir(join(dir, "tasks"))).toEqual([]);
  });

  test("SD images are stored beside the record and removed with it", async () => {
    const store = await openNodeStore(dir);
    await store.putTask(record(5n));
    await store.writeImages(5n, [new Uint8Array([1, 2]), new Uint8Array([3])]);
    expect(await store.readImages(5n, 2)).toEqual([new Uint8Array([1, 2]), new Uint8Array([3])]);
    await expect(store.readImages(5n, 3)).rejects.toBeInstanceOf(NodeStoreError);
    await store.deleteTask(5n);
    expect(await readdir(join(dir, "tasks"))).toEqual([]);
    expect(JSON.parse(await readFile(join(dir, "node.json"), "utf8").catch(() => "null"))).toBeNull();
  });

  test("pruning removes old finished records only, and keeps their outcomes and earnings in the archive", async () => {
    const store = await openNodeStore(dir);
    const paid = (fee: string) => ({
      event: "TaskNodeSuccess",
      blockNumber: "20",
      blockHash: `0x${"04".repeat(32)}` as const,
      logIndex: 0,
      transactionHash: `0x${"05".repeat(32)}` as const,
      data: { fee },
    });
    await store.putTask(record(1n, { step: "done", outcome: "success", events: [paid("400")] }));
    await store.putTask(record(2n, { step: "done", outcome: "slashed" }));
    await store.putTask(record(3n, { step: "committed" })); // unfinished: never pruned
    await store.writeImages(2n, [new Uint8Array([1])]);
    // Only records last updated before the cut are pruned (these were updated at 1 ms).
    const cut = 1_000;
    await store.putTask(
      record(4n, { step: "done", outcome: "success", events: [paid("7")], updatedAt: cut + 1 }),
    );

    expect(await store.readArchive()).toMatchObject({ tasks: 0, earnings: "0" });
    expect(await store.pruneTasks(cut)).toBe(2);
    expect((await store.listTasks()).map((r) => r.taskId)).toEqual(["3", "4"]);
    expect(await readdir(join(dir, "tasks"))).toEqual(["3.json", "4.json"]);
    const archive = await (await openNodeStore(dir)).readArchive();
    expect(archive).toMatchObject({ tasks: 2, earnings: "400", outcomes: { success: 1, slashed: 1 } });
    expect(await store.pruneTasks(cut)).toBe(0);
    expect(await store.readArchive()).toEqual(archive);
  });

  test("a crash between the archive write and the removal does not count a record twice", async () => {
    const store = await openNodeStore(dir);
    const done = record(9n, { step: "done", outcome: "error", updatedAt: 1 });
    await store.putTask(done);
    expect(await store.pruneTasks(Date.now() + 1)).toBe(1);
    // As if the process died before the file was removed: the record is back, the archive already counts it.
    await writeFile(join(dir, "tasks", "9.json"), JSON.stringify(done));
    expect(await store.pruneTasks(Date.now() + 1)).toBe(1);
    expect(await store.readArchive()).toMatchObject({ tasks: 1, outcomes: { error: 1 } });
    expect(await readdir(join(dir, "tasks"))).toEqual([]);
  });
});
