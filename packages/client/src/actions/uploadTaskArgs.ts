import type { GptTaskArgsInput, SdTaskArgsInput } from "@crynux/tasks";
import type { RelayConnectionError, RelayRequestError, RelayResponseError } from "../errors.js";
import type { UploadTaskArgsReturnType } from "../relay/client.js";
import type { CrynuxBaseClient } from "./types.js";

/**
 * Parameters of {@link uploadTaskArgs}: the task id, its arguments and how long to wait for the relay to
 * index the task.
 */
export type UploadTaskArgsParameters = {
  taskId: bigint;
  /** Exactly the arguments given to `createTask` (their canonical JSON is what the task hash covers). */
  args: GptTaskArgsInput | SdTaskArgsInput;
  /**
   * How long to keep retrying while the relay's indexer has not seen the task yet (it follows the chain with a
   * confirmation depth), in ms. Default 60 000.
   */
  waitForTaskMs?: number | undefined;
  signal?: AbortSignal | undefined;
};

// The relay client's type, re-exported as the same symbol so that the package's `export *` stays unambiguous.
export type { UploadTaskArgsReturnType } from "../relay/client.js";

/**
 * Errors {@link uploadTaskArgs} may throw: the relay's refusals, unreadable answers or an unreachable relay.
 */
export type UploadTaskArgsErrorType = RelayRequestError | RelayResponseError | RelayConnectionError;

/**
 * Uploads a task's arguments to the relay, signed by the creator (the client's account), where the selected
 * nodes fetch them. The relay accepts them only if they hash to the on-chain task hash and validate.
 */
export function uploadTaskArgs(
  client: CrynuxBaseClient,
  { taskId, args, waitForTaskMs, signal }: UploadTaskArgsParameters,
): Promise<UploadTaskArgsReturnType> {
  return client.relay.uploadTaskArgs(taskId, args, { waitForTaskMs: waitForTaskMs ?? 60_000, signal });
}
