import { PricingInputError } from "./errors.js";
import { compareTaskValue, taskValue } from "./value.js";

/** A task in a simulation: when it arrives, what it pays, its estimated and its actual execution time. */
export type SimulatedTask = {
  id: number;
  arrivalMs: number;
  fee: bigint;
  /** The estimate the contract orders by (`estimateMillis`). */
  estimatedMs: bigint;
  /** How long the task really occupies its three nodes. */
  durationMs: number;
};

/** What {@link simulateQueue} takes. */
export type SimulateQueueParameters = {
  /** Nodes that can run the tasks (all of one group); each task takes three of them. */
  nodes: number;
  /** Tasks, in any order; each is queued at its arrival unless three nodes are free. */
  tasks: readonly SimulatedTask[];
  /** Queue size limit; when full, the lowest-value task is evicted (and refunded). Default 50. */
  queueSizeLimit?: number;
  /** Times (ms) at which the currently busy node triples become free; default: all free at 0. */
  busyUntilMs?: readonly number[];
};

/** What happened to one task. */
export type SimulatedOutcome =
  | { id: number; status: "started"; startMs: number; waitMs: number }
  | { id: number; status: "evicted"; evictedMs: number }
  | { id: number; status: "queued" };

type Queued = { task: SimulatedTask; value: bigint };

/**
 * A discrete-event simulation of the task queue: tasks arrive, start at once when three nodes are free,
 * otherwise wait in the value-ordered queue (highest `fee / estimate` first, ties by id), and the lowest-value
 * task is evicted when the queue is over its limit. When a task ends, its three nodes take the best queued
 * task. The same rules as the contract, with execution times given instead of observed.
 */
export function simulateQueue(parameters: SimulateQueueParameters): Map<number, SimulatedOutcome> {
  const slots = Math.floor(parameters.nodes / 3);
  if (slots < 1) throw new PricingInputError("At least 3 nodes are needed to run a task.");
  const limit = parameters.queueSizeLimit ?? 50;
  const freeAt = Array.from({ length: slots }, (_, i) => parameters.busyUntilMs?.[i] ?? 0);
  const arrivals = [...parameters.tasks].sort((a, b) => a.arrivalMs - b.arrivalMs || a.id - b.id);
  const outcomes = new Map<number, SimulatedOutcome>();
  let queue: Queued[] = [];
  const byValue = (a: Queued, b: Queued) =>
    compareTaskValue(
      { taskId: BigInt(a.task.id), value: a.value },
      { taskId: BigInt(b.task.id), value: b.value },
    );

  const start = (entry: Queued, slot: number, now: number) => {
    outcomes.set(entry.task.id, {
      id: entry.task.id,
      status: "started",
      startMs: now,
      waitMs: now - entry.task.arrivalMs,
    });
    freeAt[slot] = now + entry.task.durationMs;
  };
  // Starts queued tasks on every slot that is free at `now`.
  const dispatch = (now: number) => {
    for (let slot = 0; slot < slots && queue.length > 0; slot++) {
      if (freeAt[slot]! <= now) start(queue.shift()!, slot, Math.max(now, freeAt[slot]!));
    }
  };

  for (const task of arrivals) {
    // Complete every task that ends before this arrival, in time order, dispatching as slots free up.
    for (;;) {
      let next = -1;
      for (let slot = 0; slot < slots; slot++) {
        if (
          freeAt[slot]! <= task.arrivalMs &&
          (next < 0 || freeAt[slot]! < freeAt[next]!) &&
          queue.length > 0
        )
          next = slot;
      }
      if (next < 0) break;
      start(queue.shift()!, next, freeAt[next]!);
    }
    queue.push({ task, value: taskValue(task.fee, task.estimatedMs) });
    queue.sort(byValue);
    dispatch(task.arrivalMs);
    if (queue.length > limit) {
      const evicted = queue.pop()!;
      outcomes.set(evicted.task.id, { id: evicted.task.id, status: "evicted", evictedMs: task.arrivalMs });
    }
  }
  // Drain the queue after the last arrival.
  while (queue.length > 0) {
    let next = 0;
    for (let slot = 1; slot < slots; slot++) if (freeAt[slot]! < freeAt[next]!) next = slot;
    start(queue.shift()!, next, freeAt[next]!);
  }
  queue = [];
  for (const task of arrivals)
    if (!outcomes.has(task.id)) outcomes.set(task.id, { id: task.id, status: "queued" });
  return outcomes;
}

/** A small seeded generator (mulberry32) for reproducible workloads. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What {@link poissonWorkload} takes. */
export type PoissonWorkloadParameters = {
  seed: number;
  count: number;
  /** Mean arrivals per second. */
  ratePerSecond: number;
  /** Draws one task's fee, estimate and duration. */
  draw: (random: () => number) => Omit<SimulatedTask, "id" | "arrivalMs">;
  startMs?: number;
  firstId?: number;
};

/** Tasks arriving as a Poisson process (exponential gaps), with properties drawn by `draw`. */
export function poissonWorkload(parameters: PoissonWorkloadParameters): SimulatedTask[] {
  const random = seededRandom(parameters.seed);
  const tasks: SimulatedTask[] = [];
  let now = parameters.startMs ?? 0;
  for (let i = 0; i < parameters.count; i++) {
    now += (-Math.log(1 - random()) / parameters.ratePerSecond) * 1000;
    tasks.push({ id: (parameters.firstId ?? 0) + i, arrivalMs: now, ...parameters.draw(random) });
  }
  return tasks;
}
