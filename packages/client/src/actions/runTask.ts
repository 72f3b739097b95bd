import type { FeeSuggestion } from "@crynux/pricing";
import type { Address, Hex } from "viem";
import { TaskAbortedError } from "../errors.js";
import { type CreateTaskErrorType, type CreateTaskParameters, createTask } from "./createTask.js";
import { type GetTaskResultErrorType, type GetTaskResultReturnType, getTaskResult } from "./getTaskResult.js";
import type { CrynuxBaseClient } from "./types.js";
import { type UploadTaskArgsErrorType, uploadTaskArgs } from "./uploadTaskArgs.js";
import { type TaskProgress, type WaitForTaskErrorType, waitForTask } from "./waitForTask.js";

/** Options shared by `runTask`, `runGptTask` and `runSdTask`. */
export type RunTaskOptions = {
  /** Fee in wei; default `suggestTaskFee` for `targetWaitSeconds`. */
  fee?: bigint | undefined;
  targetWaitSeconds?: number | undefined;
  vramLimit?: bigint | undefined;
  dataHash?: Hex | undefined;
  /** Stops waiting (upload, task, download): rejects with `signal.reason`. The task goes on on-chain. */
  signal?: AbortSignal | undefined;
  /** Stages of the task, in order: queued → started → committed → success / error / aborted. */
  onProgress?: ((progress: TaskProgress) => void) | undefined;
  /** Longest wait for the task to finish, in ms (`waitForTask`). Default 20 minutes. */
  timeoutMs?: number | undefined;
  /** Longest wait for the relay (indexer catching up, result upload), in ms. Default 120 000. */
  relayWaitMs?: number | undefined;
  /** Poll interval of `waitForTask`. */
  pollingIntervalMs?: number | undefined;
};

/** Parameters of {@link runTask}: those of `createTask` plus the shared run options. */
export type RunTaskParameters = CreateTaskParameters & RunTaskOptions;

/**
 * What {@link runTask} returns: the checked result plus the createTask transaction, the fee paid (wei) and
 * the result node.
 */
export type RunTaskReturnType = GetTaskResultReturnType & {
  txHash: Hex;
  /** Block of the createTask transaction. */
  blockNumber: bigint;
  fee: bigint;
  feeSuggestion?: FeeSuggestion | null;
  resultNode: Address | null;
};

/** Errors {@link runTask} may throw: those of each step it runs (create, upload, wait, get the result). */
export type RunTaskErrorType =
  | CreateTaskErrorType
  | UploadTaskArgsErrorType
  | WaitForTaskErrorType
  | GetTaskResultErrorType
  | TaskAbortedError;

/**
 * Runs one task from start to result: `createTask` → `uploadTaskArgs` → `waitForTask` → `getTaskResult`.
 * When a step after the creation fails, the task exists on-chain: its id is in the events already reported
 * to `onProgress`, and `cancelTask` refunds it after its deadline.
 *
 * @throws {TaskAbortedError} when the task ends in `error` or `aborted` (results mismatch, cancelled, evicted).
 */
export async function runTask(
  client: CrynuxBaseClient,
  parameters: RunTaskParameters,
): Promise<RunTaskReturnType> {
  const { signal, onProgress, timeoutMs, pollingIntervalMs } = parameters;
  const waitMs = parameters.relayWaitMs ?? 120_000;
  const created = await createTask(client, parameters);
  await uploadTaskArgs(client, {
    taskId: created.taskId,
    args: parameters.args,
    waitForTaskMs: waitMs,
    signal,
  });
  const final = await waitForTask(client, {
    taskId: created.taskId,
    taskHash: created.taskHash,
    fromBlock: created.blockNumber,
    signal,
    onProgress,
    timeoutMs,
    pollingIntervalMs,
  });
  if (final.outcome !== "success")
    throw new TaskAbortedError(created.taskId, final.outcome, final.reason ?? undefined);
  const result = await getTaskResult(client, { taskId: created.taskId, waitMs, signal });
  return {
    ...result,
    txHash: created.txHash,
    blockNumber: created.blockNumber,
    fee: created.fee,
    ...(created.feeSuggestion === undefined ? {} : { feeSuggestion: created.feeSuggestion }),
    resultNode: final.resultNode,
  };
}
