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
    // String() of an object may throw (null prototype, hostile toString); the type is enough to say.
    const shown =
      taskType !== null && (typeof taskType === "object" || typeof taskType === "function")
        ? `(a value of type ${typeof taskType})`
        : String(taskType);
    super(`Unknown task type ${shown}: expected 0 (SD) or 1 (GPT).`);
    this.taskType = taskType;
  }
}
