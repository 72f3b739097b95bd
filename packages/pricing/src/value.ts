import { TaskType } from "@crynux/tasks";
import { PricingInputError } from "./errors.js";

/**
 * The execution-time constants of the value formula, per task type, in milliseconds (owner-settable on
 * the contract; these are its defaults). SD: 30 s of overhead plus 20 s per image, the Crynux docs'
 * example; GPT: 30 s of overhead plus 50 ms per token (20 tokens/s).
 */
export type TimeParameters = Record<TaskType, { overheadMs: bigint; perUnitMs: bigint }>;

/** The contract's default time constants. */
export const DEFAULT_TIME_PARAMETERS: Readonly<TimeParameters> = Object.freeze({
  [TaskType.SD]: Object.freeze({ overheadMs: 30_000n, perUnitMs: 20_000n }),
  [TaskType.GPT]: Object.freeze({ overheadMs: 30_000n, perUnitMs: 50n }),
});

/**
 * Estimated execution time in milliseconds: `overheadMs[taskType] + perUnitMs[taskType] × cap`, exactly as
 * the contract computes it.
 */
export function estimateMillis(
  taskType: TaskType,
  cap: bigint,
  parameters: TimeParameters = DEFAULT_TIME_PARAMETERS,
): bigint {
  if (cap <= 0n) throw new PricingInputError(`cap must be positive, got ${cap}.`);
  const constants = parameters[taskType];
  if (!constants) throw new PricingInputError(`Unknown task type ${String(taskType)}.`);
  return constants.overheadMs + constants.perUnitMs * cap;
}

/** {@link estimateMillis} in seconds, as a number for display. */
export function estimateSeconds(
  taskType: TaskType,
  cap: bigint,
  parameters: TimeParameters = DEFAULT_TIME_PARAMETERS,
): number {
  return Number(estimateMillis(taskType, cap, parameters)) / 1000;
}

/**
 * Task value `V = fee / T` in wei per second, with the contract's integer rounding:
 * `fee × 1000 / estimatedMs` (floor). The queue serves the highest value first; a task whose value is 0
 * is rejected at creation.
 *
 * @example
 * // The docs' example: 10 CNX for 1 image (50 s) vs 15 CNX for 2 images (70 s).
 * taskValue(parseCnx("10"), estimateMillis(TaskType.SD, 1n)) // 0.2 CNX/s
 * taskValue(parseCnx("15"), estimateMillis(TaskType.SD, 2n)) // 0.214… CNX/s: the second task goes first
 */
export function taskValue(fee: bigint, estimatedMs: bigint): bigint {
  if (fee < 0n) throw new PricingInputError(`fee must not be negative, got ${fee}.`);
  if (estimatedMs <= 0n) throw new PricingInputError(`estimatedMs must be positive, got ${estimatedMs}.`);
  return (fee * 1000n) / estimatedMs;
}

/** The smallest fee (wei) whose value is at least `value` for a task of `estimatedMs`. */
export function feeForValue(value: bigint, estimatedMs: bigint): bigint {
  if (value <= 0n) return 0n;
  // Smallest fee with floor(fee × 1000 / T) ≥ value  ⇔  fee ≥ ceil(value × T / 1000).
  return (value * estimatedMs + 999n) / 1000n;
}

/** A queued task as the queue orders it. */
export type QueuedTaskOrder = { taskId: bigint; value: bigint };

/**
 * Queue order: higher value first; equal values by task id (older first). Use with `Array#sort` to list
 * a queue in dispatch order.
 */
export function compareTaskValue(a: QueuedTaskOrder, b: QueuedTaskOrder): number {
  if (a.value !== b.value) return a.value > b.value ? -1 : 1;
  if (a.taskId !== b.taskId) return a.taskId < b.taskId ? -1 : 1;
  return 0;
}
