import { CrynuxError } from "./errors.js";

/** Task types as numbered on-chain: `0` = Stable Diffusion (images), `1` = GPT (text). */
export const TaskType = {
  SD: 0,
  GPT: 1,
} as const;

/** A task type number: `0` (SD) or `1` (GPT). */
export type TaskType = (typeof TaskType)[keyof typeof TaskType];

/** Whether `value` is a known task type number. */
export function isTaskType(value: unknown): value is TaskType {
  return value === TaskType.SD || value === TaskType.GPT;
}

/** Thrown for a task type number other than `0` (SD) or `1` (GPT). */
export class UnknownTaskTypeError extends CrynuxError {
  override name = "UnknownTaskTypeError";
  readonly taskType: unknown;
  constructor(taskType: unknown) {
    super(`Unknown task type ${String(taskType)}: expected 0 (SD) or 1 (GPT).`);
    this.taskType = taskType;
  }
}
