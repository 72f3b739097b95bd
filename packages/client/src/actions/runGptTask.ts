import { type GptTaskArgsInput, TaskType } from "@crynux/tasks";
import { TaskResultMismatchError } from "../errors.js";
import { type RunTaskErrorType, type RunTaskOptions, type RunTaskReturnType, runTask } from "./runTask.js";
import type { CrynuxBaseClient } from "./types.js";

/** Parameters of {@link runGptTask}: the GPT arguments and the options shared with `runTask`. */
export type RunGptTaskParameters = RunTaskOptions & { args: GptTaskArgsInput };

/**
 * What {@link runGptTask} returns: the checked GPT response, the on-chain result and the transaction details.
 */
export type RunGptTaskReturnType = Extract<RunTaskReturnType, { taskType: 1 }>;

/** Errors {@link runGptTask} may throw: those of `runTask`. */
export type RunGptTaskErrorType = RunTaskErrorType;

/**
 * Runs a GPT task end to end (`runTask`) and returns the response, checked against the on-chain result.
 * @throws {InvalidTaskArgsError} before any transaction, for arguments the nodes would refuse.
 * @throws {TaskAbortedError} when the task ends without a result.
 */
export async function runGptTask(
  client: CrynuxBaseClient,
  { args, ...options }: RunGptTaskParameters,
): Promise<RunGptTaskReturnType> {
  const result = await runTask(client, { taskType: TaskType.GPT, args, ...options });
  if (result.taskType !== 1)
    throw new TaskResultMismatchError(result.taskId, {
      details: "The relay returned images for a GPT task.",
    });
  return result;
}
