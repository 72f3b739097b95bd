import { taskAbi } from "@crynux/contracts";
import {
  type GptResponse,
  gptResultHash,
  pngPHash,
  sdResultFromPHashes,
  sdResultsMatch,
} from "@crynux/tasks";
import type { Hex } from "viem";
import { readContract } from "viem/actions";
import {
  type RelayConnectionError,
  type RelayRequestError,
  type RelayResponseError,
  type TaskNotFoundError,
  TaskResultMismatchError,
  TaskResultNotAvailableError,
} from "../errors.js";
import { getTask } from "./getTask.js";
import type { CrynuxBaseClient } from "./types.js";

/** Parameters of {@link getTaskResult}: the task id and how long to wait for the result node's upload. */
export type GetTaskResultParameters = {
  taskId: bigint;
  /**
   * How long to keep asking while the result node has not uploaded the files yet (it does so after
   * `TaskSuccess`), in ms. Default 120 000.
   */
  waitMs?: number | undefined;
  signal?: AbortSignal | undefined;
};

/** A checked result, by task type: the GPT response, or the SD images as PNG bytes with their pHashes. */
export type GetTaskResultReturnType =
  | {
      taskId: bigint;
      taskType: 1;
      response: GptResponse;
      /** The on-chain result: sha256 of the canonical response. */
      result: Hex;
    }
  | {
      taskId: bigint;
      taskType: 0;
      /** PNG bytes of each image, in order. */
      images: Uint8Array[];
      /** The pHash of each image, as computed here from the PNG. */
      pHashes: bigint[];
      /** The on-chain result: the agreed 8-byte pHashes. */
      result: Hex;
    };

/**
 * Errors {@link getTaskResult} may throw: unknown task, no result yet, files that do not match the on-chain
 * result, or relay errors.
 */
export type GetTaskResultErrorType =
  | TaskNotFoundError
  | TaskResultNotAvailableError
  | TaskResultMismatchError
  | RelayRequestError
  | RelayResponseError
  | RelayConnectionError;

/**
 * Downloads a finished task's result from the relay (signed by the creator) and checks it against the result
 * the nodes agreed on on-chain, since the relay is not trusted: a GPT response must hash (`gptResultHash`) to
 * it exactly; SD images are decoded and pHashed (`pngPHash`) and must match it as the contract compares
 * results (each image fewer than `distanceThreshold` bits apart).
 *
 * @throws {TaskResultNotAvailableError} when the task is not in state success / uploaded.
 * @throws {TaskResultMismatchError} when the relay's files do not match the on-chain result.
 */
export async function getTaskResult(
  client: CrynuxBaseClient,
  { taskId, waitMs, signal }: GetTaskResultParameters,
): Promise<GetTaskResultReturnType> {
  const task = await getTask(client, { taskId });
  if (task.result === null) throw new TaskResultNotAvailableError(taskId, task.state);
  const onChain = task.result;
  const downloaded = await client.relay.getResult(taskId, { waitMs: waitMs ?? 120_000, signal });
  if (downloaded.taskType !== task.taskType)
    throw new TaskResultMismatchError(taskId, {
      details: `the task's type is ${task.taskType}, the relay answered a result of type ${downloaded.taskType}`,
    });

  if (downloaded.taskType === 1) {
    const hash = gptResultHash(downloaded.response);
    if (hash.toLowerCase() !== onChain.toLowerCase())
      throw new TaskResultMismatchError(taskId, {
        details: `on-chain ${onChain}, relay response hashes to ${hash}`,
      });
    return { taskId, taskType: 1, response: downloaded.response, result: onChain };
  }

  let pHashes: bigint[];
  try {
    pHashes = downloaded.images.map((image) => pngPHash(image));
  } catch (cause) {
    throw new TaskResultMismatchError(taskId, {
      cause,
      details: "An image from the relay is not a readable PNG.",
    });
  }
  const [, , distanceThreshold] = await readContract(client.publicClient, {
    address: client.contracts.task,
    abi: taskAbi,
    functionName: "getConfig",
  });
  const computed = sdResultFromPHashes(pHashes);
  if (!sdResultsMatch(onChain, computed, Number(distanceThreshold)))
    throw new TaskResultMismatchError(taskId, {
      details: `on-chain ${onChain}, pHashes of the relay's images ${computed}`,
    });
  return { taskId, taskType: 0, images: downloaded.images, pHashes, result: onChain };
}
