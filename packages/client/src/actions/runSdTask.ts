import { type SdTaskArgsInput, TaskType } from "@crynux/tasks";
import { TaskResultMismatchError } from "../errors.js";
import { type RunTaskErrorType, type RunTaskOptions, type RunTaskReturnType, runTask } from "./runTask.js";
import type { CrynuxBaseClient } from "./types.js";

/** Parameters of {@link runSdTask}: the Stable Diffusion arguments and the options shared with `runTask`. */
export type RunSdTaskParameters = RunTaskOptions & { args: SdTaskArgsInput };

/**
 * What {@link runSdTask} returns: the PNG images with their checked pHashes, the on-chain result and the
 * transaction details.
 */
export type RunSdTaskReturnType = Extract<RunTaskReturnType, { taskType: 0 }>;

/** Errors {@link runSdTask} may throw: those of `runTask`. */
export type RunSdTaskErrorType = RunTaskErrorType;

/**
 * Runs a Stable Diffusion task end to end (`runTask`) and returns the PNG images, whose pHashes are checked
 * against the on-chain result.
 * @throws {InvalidTaskArgsError} before any transaction, for arguments the nodes would refuse.
 * @throws {TaskAbortedError} when the task ends without a result.
 */
export async function runSdTask(
  client: CrynuxBaseClient,
  { args, ...options }: RunSdTaskParameters,
): Promise<RunSdTaskReturnType> {
  const result = await runTask(client, { taskType: TaskType.SD, args, ...options });
  if (result.taskType !== 0)
    throw new TaskResultMismatchError(result.taskId, {
      details: "The relay returned a GPT response for an SD task.",
    });
  return result;
}
