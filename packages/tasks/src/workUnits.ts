import { type GptTaskArgs, parseGptTaskArgs, resolveGenerationConfig } from "./gpt.js";
import { parseSdTaskArgs, type SdTaskArgs } from "./sd.js";
import { TaskType, UnknownTaskTypeError } from "./taskType.js";

/**
 * The work units (`cap`) a task declares on-chain, computed from its arguments:
 * SD = `num_images`; GPT = `max_new_tokens × num_return_sequences` (defaults 256 and 1 when unset).
 * The arguments are validated first, so the defaults are the ones a node applies.
 *
 * A node that finds the on-chain cap lower than this reports a task error: the creator under-declared.
 *
 * @throws {TaskArgsError} when the arguments are not valid for the task type.
 * @throws {UnknownTaskTypeError} for a task type other than 0 or 1.
 * @example
 * workUnits(TaskType.GPT, { model: "o/r:Q4_0", messages: [...], generation_config: { max_new_tokens: 100, num_return_sequences: 2 } }) // 200n
 */
export function workUnits(taskType: typeof TaskType.GPT, args: unknown): bigint;
export function workUnits(taskType: typeof TaskType.SD, args: unknown): bigint;
export function workUnits(taskType: TaskType, args: unknown): bigint;
export function workUnits(taskType: TaskType, args: unknown): bigint {
  if (taskType === TaskType.GPT) return gptWorkUnits(parseGptTaskArgs(args));
  if (taskType === TaskType.SD) return sdWorkUnits(parseSdTaskArgs(args));
  throw new UnknownTaskTypeError(taskType);
}

/** Work units of already-parsed GPT arguments. */
export function gptWorkUnits(args: GptTaskArgs): bigint {
  const config = resolveGenerationConfig(args.generation_config);
  return BigInt(config.max_new_tokens) * BigInt(config.num_return_sequences);
}

/** Work units of already-parsed SD arguments. */
export function sdWorkUnits(args: SdTaskArgs): bigint {
  return BigInt(args.task_config.num_images);
}
