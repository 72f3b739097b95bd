import type { Hex } from "viem";
import type { IndexedTask, RelayStore } from "./types.js";

export type CachedStoreOptions = {
  /** Bytes of argument text kept in memory (least recently used first out). Default 64 MiB. */
  maxArgsBytes?: number;
  /** Task records kept. Default 10,000. */
  maxTasks?: number;
  /**
   * How long a task record is served from memory, in ms (default 1,000). This process's indexer clears the
   * cache whenever it applies or rolls back events; the time limit covers other relay instances writing to
   * a shared PostgreSQL database.
   */
  taskTtlMs?: number;
  now?: () => number;
};

/**
 * A read-through cache in front of a {@link RelayStore} for the hot path of nodes and creators polling
 * `GET /v1/tasks/:id/args`: every such request reads the task and its arguments, two database queries of
 * ~0.4 ms each on PGlite. Arguments never change once stored (they are keyed by task id and task hash), so
 * they are cached until evicted; task records change with every indexed event, so the cache is cleared by
 * `applyTaskEvents` / `rollback` and entries also expire after `taskTtlMs`. Misses are not cached.
 */
export function cachedStore(store: RelayStore, options: CachedStoreOptions = {}): RelayStore {
  const maxArgsBytes = options.maxArgsBytes ?? 64 * 1024 * 1024;
  const maxTasks = options.maxTasks ?? 10_000;
  const taskTtlMs = options.taskTtlMs ?? 1_000;
  const now = options.now ?? Date.now;
  // Map iteration order is insertion order: re-inserting on a hit makes the first key the least recent.
  const args = new Map<string, string>();
  let argsBytes = 0;
  const tasks = new Map<bigint, { task: IndexedTask; at: number }>();
  let generation = 0;

  const argsKey = (taskId: bigint, taskHash: Hex) => `${taskId}:${taskHash.toLowerCase()}`;
  const rememberArgs = (key: string, text: string) => {
    if (text.length > maxArgsBytes) return;
    const old = args.get(key);
    if (old !== undefined) {
      args.delete(key);
      argsBytes -= old.length;
    }
    args.set(key, text);
    argsBytes += text.length;
    while (argsBytes > maxArgsBytes) {
      const [oldestKey, oldest] = args.entries().next().value as [string, string];
      args.delete(oldestKey);
      argsBytes -= oldest.length;
    }
  };

  return {
    getResults: (taskId, taskHash) => store.getResults(taskId, taskHash),
    putResults: (taskId, taskHash, results) => store.putResults(taskId, taskHash, results),
    loadCursor: () => store.loadCursor(),
    counts: () => store.counts(),
    close: () => store.close(),
    async getTask(taskId) {
      const hit = tasks.get(taskId);
      if (hit && now() - hit.at < taskTtlMs) return hit.task;
      const started = generation;
      const task = await store.getTask(taskId);
      // an indexer write while the query ran may have made the answer stale: do not keep it then
      if (task && started === generation) {
        tasks.delete(taskId);
        tasks.set(taskId, { task, at: now() });
        if (tasks.size > maxTasks) tasks.delete(tasks.keys().next().value as bigint);
      }
      return task;
    },
    async getArgs(taskId, taskHash) {
      const key = argsKey(taskId, taskHash);
      const hit = args.get(key);
      if (hit !== undefined) {
        rememberArgs(key, hit);
        return hit;
      }
      const text = await store.getArgs(taskId, taskHash);
      if (text !== null) rememberArgs(key, text);
      return text;
    },
    async putArgs(taskId, taskHash, canonicalJson) {
      const result = await store.putArgs(taskId, taskHash, canonicalJson);
      rememberArgs(argsKey(taskId, taskHash), canonicalJson);
      return result;
    },
    async applyTaskEvents(events, cursor) {
      generation++;
      tasks.clear();
      try {
        await store.applyTaskEvents(events, cursor);
      } finally {
        generation++;
        tasks.clear();
      }
    },
    async rollback(fromBlock, cursor) {
      generation++;
      tasks.clear();
      try {
        await store.rollback(fromBlock, cursor);
      } finally {
        generation++;
        tasks.clear();
      }
    },
  };
}
