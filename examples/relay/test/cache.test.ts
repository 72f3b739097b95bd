import { getAddress, type Hex, keccak256, toHex } from "viem";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { cachedStore, openPgliteStore, type RelayStore, type TaskEvent } from "../src/store/index.js";

const hash = (label: string): Hex => keccak256(toHex(label));
const CREATOR = getAddress(`0x${"a0".padStart(40, "0")}`);
let logIndex = 0;
const queued = (taskId: bigint, block: bigint): TaskEvent => ({
  eventName: "TaskQueued",
  args: {
    taskId,
    taskType: 1,
    creator: CREATOR,
    taskHash: hash(`task ${taskId}`),
    dataHash: hash("data"),
    vramLimit: 0n,
    cap: 1n,
    fee: 1n,
    value: 1n,
  },
  blockNumber: block,
  logIndex: logIndex++,
  blockHash: hash(`block ${block}`),
  transactionHash: hash(`tx ${logIndex}`),
});
const aborted = (taskId: bigint, block: bigint): TaskEvent => ({
  eventName: "TaskAborted",
  args: { taskId, reason: "cancelled" },
  blockNumber: block,
  logIndex: logIndex++,
  blockHash: hash(`block ${block}`),
  transactionHash: hash(`tx ${logIndex}`),
});
const cursorAt = (block: bigint) => ({ checkpoints: [{ number: block, hash: hash(`block ${block}`) }] });

/** Counts the calls that reach the database. */
function counting(store: RelayStore) {
  const calls = { getTask: 0, getArgs: 0 };
  const counted: RelayStore = {
    ...store,
    getTask: (id) => {
      calls.getTask++;
      return store.getTask(id);
    },
    getArgs: (id, h) => {
      calls.getArgs++;
      return store.getArgs(id, h);
    },
    putArgs: (id, h, text) => store.putArgs(id, h, text),
    applyTaskEvents: (events, cursor) => store.applyTaskEvents(events, cursor),
    rollback: (from, cursor) => store.rollback(from, cursor),
  };
  return { counted, calls };
}

describe("cachedStore", () => {
  let base: RelayStore;
  beforeAll(async () => {
    base = await openPgliteStore({});
    await base.applyTaskEvents([queued(1n, 1n), queued(2n, 1n)], cursorAt(1n));
  }, 120_000);
  afterAll(async () => {
    await base?.close();
  });

  test("serves task records from memory until the indexer writes or the TTL passes", async () => {
    const { counted, calls } = counting(base);
    let clock = 0;
    const store = cachedStore(counted, { taskTtlMs: 1_000, now: () => clock });
    expect((await store.getTask(1n))?.state).toBe("queued");
    expect((await store.getTask(1n))?.state).toBe("queued");
    expect(calls.getTask).toBe(1);
    clock = 1_500;
    await store.getTask(1n);
    expect(calls.getTask).toBe(2);
    await store.applyTaskEvents([aborted(1n, 2n)], cursorAt(2n));
    expect((await store.getTask(1n))?.state).toBe("aborted");
    expect(calls.getTask).toBe(3);
    await store.rollback(2n, cursorAt(1n));
    expect((await store.getTask(1n))?.state).toBe("queued");
    // a missing task is not cached
    expect(await store.getTask(99n)).toBeNull();
    expect(await store.getTask(99n)).toBeNull();
    expect(calls.getTask).toBe(6);
  });

  test("keeps arguments once stored or read, bounded by bytes (least recently used out)", async () => {
    const { counted, calls } = counting(base);
    const store = cachedStore(counted, { maxArgsBytes: 25 });
    expect(await store.getArgs(1n, hash("task 1"))).toBeNull();
    expect(await store.getArgs(1n, hash("task 1"))).toBeNull();
    expect(calls.getArgs).toBe(2); // misses go to the database every time
    await store.putArgs(1n, hash("task 1"), '{"a":"0123456789"}'); // 18 bytes
    expect(await store.getArgs(1n, hash("task 1"))).toBe('{"a":"0123456789"}');
    expect(calls.getArgs).toBe(2);
    await store.putArgs(2n, hash("task 2"), '{"b":1}'); // 7 bytes: 25 in all
    await store.getArgs(1n, hash("task 1")); // task 1 becomes the most recent
    await base.putArgs(3n, hash("task 3"), '{"c":2}');
    expect(await store.getArgs(3n, hash("task 3"))).toBe('{"c":2}'); // 32 bytes > 25: task 2 leaves
    const before = calls.getArgs;
    await store.getArgs(1n, hash("task 1"));
    expect(calls.getArgs).toBe(before);
    await store.getArgs(2n, hash("task 2"));
    expect(calls.getArgs).toBe(before + 1);
    // another task hash for the same id is another key
    expect(await store.getArgs(1n, hash("other"))).toBeNull();
  });
});
