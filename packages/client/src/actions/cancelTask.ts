import { taskAbi } from "@crynux/contracts";
import { type Hex, parseEventLogs } from "viem";
import type { AccountRequiredError, TaskContractError } from "../errors.js";
import type { CrynuxBaseClient } from "./types.js";
import { sendTaskContractCall } from "./utils.js";

/** Parameters of {@link cancelTask}: the id of the task to cancel. */
export type CancelTaskParameters = { taskId: bigint };

/**
 * What {@link cancelTask} returns once the cancel transaction is mined: its hash, block and the wei refunded.
 */
export type CancelTaskReturnType = {
  taskId: bigint;
  txHash: Hex;
  blockNumber: bigint;
  /** Wei refunded to the creator by this transaction. */
  refunded: bigint;
};

/**
 * Errors {@link cancelTask} may throw: a reverted or refused Task contract call, or a client without an
 * account.
 */
export type CancelTaskErrorType = TaskContractError | AccountRequiredError;

/**
 * Cancels a task: a queued task by its creator at any time (full refund); a running one by its creator or a
 * selected node after its deadline, or once it can no longer get 2 commitments after the commit deadline
 * (the unpaid balance is refunded).
 * @throws {TaskContractError} when the contract refuses (`errorName`: `Unauthorized`, `DeadlineNotReached`,
 * `IllegalTaskState`, `TaskNotFound`); nothing is sent then.
 */
export async function cancelTask(
  client: CrynuxBaseClient,
  { taskId }: CancelTaskParameters,
): Promise<CancelTaskReturnType> {
  const receipt = await sendTaskContractCall(client, {
    action: "cancelTask",
    address: client.contracts.task,
    abi: taskAbi,
    functionName: "cancelTask",
    args: [taskId],
  });
  const refunds = parseEventLogs({ abi: taskAbi, logs: receipt.logs, eventName: "TaskRefunded" }).filter(
    (log) => log.args.taskId === taskId && log.address.toLowerCase() === client.contracts.task.toLowerCase(),
  );
  return {
    taskId,
    txHash: receipt.transactionHash,
    blockNumber: receipt.blockNumber,
    refunded: refunds.reduce((sum, log) => sum + log.args.amount, 0n),
  };
}
