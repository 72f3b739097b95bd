import type { TaskType } from "@crynux/tasks";
import { PricingInputError } from "./errors.js";
import {
  DEFAULT_TIME_PARAMETERS,
  estimateMillis,
  feeForValue,
  type TimeParameters,
  taskValue,
} from "./value.js";

/** A snapshot of the network, as an app reads it before pricing a task. */
export type NetworkSnapshot = {
  /** Values (wei per second) of the tasks waiting in the queue. */
  queuedValues: readonly bigint[];
  /** Nodes that can run the task (for GPT: of its group); each task takes three. */
  nodes: number;
  /** Mean execution time of recent tasks, in seconds (the network's recent throughput). */
  meanTaskSeconds: number;
  /** Recent arrivals: tasks per second, and a sample of their values, to foresee who may overtake. */
  arrivals?: { ratePerSecond: number; recentValues: readonly bigint[] };
  /** Node triples free right now (0 when all are busy). Default 0. */
  freeSlots?: number;
};

/** What {@link suggestFee} takes. */
export type SuggestFeeParameters = {
  taskType: TaskType;
  /** The task's work units (`workUnits(taskType, args)` from `@crynux/tasks`). */
  cap: bigint;
  network: NetworkSnapshot;
  /** Start the task within this many seconds (with ~90 % confidence). */
  targetWaitSeconds: number;
  timeParameters?: TimeParameters;
  /** Never suggest less than this (wei). Default: the fee of value 1 wei/s. */
  minimumFee?: bigint;
};

/** A suggested fee and what it is expected to buy. */
export type FeeSuggestion = {
  fee: bigint;
  /** The task's value at that fee (wei per second). */
  value: bigint;
  /** Queued tasks expected to start before it. */
  queuedAhead: number;
  /** Expected wait before it starts, in seconds. */
  estimatedWaitSeconds: number;
};

/** One-sided 90 % quantile of a standard normal, for the Poisson margin on overtaking arrivals. */
const Z90 = 1.2816;

function tasksAhead(
  value: bigint,
  network: NetworkSnapshot,
  seconds: number,
): { queued: number; arriving: number } {
  // A new task loses ties (older first), so equal values count as ahead.
  const queued = network.queuedValues.filter((queuedValue) => queuedValue >= value).length;
  let arriving = 0;
  const arrivals = network.arrivals;
  if (arrivals && arrivals.recentValues.length > 0 && arrivals.ratePerSecond > 0) {
    const higher = arrivals.recentValues.filter((arrivalValue) => arrivalValue > value).length;
    arriving = arrivals.ratePerSecond * (higher / arrivals.recentValues.length) * seconds;
  }
  return { queued, arriving };
}

/** Seconds until `ahead` tasks have started on `slots` parallel node triples, plus our own start. */
function waitSeconds(ahead: number, network: NetworkSnapshot): number {
  const slots = Math.floor(network.nodes / 3);
  const free = network.freeSlots ?? 0;
  if (ahead < free) return 0;
  // Busy slots free up on average every meanTaskSeconds / slots; a random busy slot has half its task left.
  return ((ahead - free + 0.5) * network.meanTaskSeconds) / slots;
}

/**
 * Estimated seconds before a task of this fee starts, given the queue and recent arrivals: queued tasks of
 * higher (or equal) value go first, and so do tasks of higher value that arrive while it waits.
 */
export function estimateWait(
  parameters: Omit<SuggestFeeParameters, "targetWaitSeconds" | "minimumFee"> & { fee: bigint },
): number {
  const estimatedMs = estimateMillis(
    parameters.taskType,
    parameters.cap,
    parameters.timeParameters ?? DEFAULT_TIME_PARAMETERS,
  );
  const value = taskValue(parameters.fee, estimatedMs);
  let wait = waitSeconds(tasksAhead(value, parameters.network, 0).queued, parameters.network);
  // Arrivals during the wait extend it; a few fixed-point steps converge for any stable queue.
  for (let i = 0; i < 20; i++) {
    const ahead = tasksAhead(value, parameters.network, wait);
    const next = waitSeconds(ahead.queued + ahead.arriving, parameters.network);
    if (Math.abs(next - wait) < 1e-6) break;
    wait = next;
  }
  return wait;
}

/**
 * The lowest fee that starts a new task within `targetWaitSeconds` with about 90 % confidence: its value
 * must beat enough of the queue, and of the tasks expected to arrive meanwhile, that the work ahead of it
 * fits in the target on the available nodes. Checked against {@link simulateQueue} in the tests.
 *
 * @throws {PricingInputError} when fewer than 3 nodes are available or the target is not positive.
 */
export function suggestFee(parameters: SuggestFeeParameters): FeeSuggestion {
  const { network, targetWaitSeconds } = parameters;
  if (Math.floor(network.nodes / 3) < 1)
    throw new PricingInputError("At least 3 nodes are needed to run a task.");
  if (!(targetWaitSeconds > 0)) throw new PricingInputError("targetWaitSeconds must be positive.");
  const estimatedMs = estimateMillis(
    parameters.taskType,
    parameters.cap,
    parameters.timeParameters ?? DEFAULT_TIME_PARAMETERS,
  );

  // Candidate values: just above each known value, and the minimum value 1.
  const known = [...network.queuedValues, ...(network.arrivals?.recentValues ?? [])];
  const candidates = [...new Set([1n, ...known.map((value) => value + 1n)])].sort((a, b) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  const fits = (value: bigint) => {
    const ahead = tasksAhead(value, network, targetWaitSeconds);
    const margin = ahead.arriving > 0 ? Z90 * Math.sqrt(ahead.arriving) + 1 : 0;
    return waitSeconds(ahead.queued + ahead.arriving + margin, network) <= targetWaitSeconds;
  };
  let chosen = candidates.find(fits);
  // Nothing fits even ahead of everyone: beat every known value and hope for the best.
  chosen ??= candidates[candidates.length - 1]!;
  let fee = feeForValue(chosen, estimatedMs);
  const minimum = parameters.minimumFee ?? feeForValue(1n, estimatedMs);
  if (fee < minimum) fee = minimum;
  const value = taskValue(fee, estimatedMs);
  return {
    fee,
    value,
    queuedAhead: tasksAhead(value, network, 0).queued,
    estimatedWaitSeconds: estimateWait({ ...parameters, fee }),
  };
}
