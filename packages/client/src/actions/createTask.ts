import { nodeAbi, taskAbi } from "@crynux/contracts";
import type { FeeSuggestion } from "@crynux/pricing";
import {
  taskHash as computeTaskHash,
  type GptTaskArgsInput,
  parseGptTaskArgs,
  parseSdTaskArgs,
  type SdTaskArgsInput,
  TaskArgsError,
  TaskType,
  UnknownTaskTypeError,
  workUnits,
} from "@crynux/tasks";
import { type Address, type Hex, parseEventLogs, zeroHash } from "viem";
import {
  type AccountRequiredError,
  type FeeSuggestionError,
  InvalidTaskArgsError,
  TaskContractError,
} from "../errors.js";
import { suggestTaskFee } from "./suggestTaskFee.js";
import type { CrynuxBaseClient } from "./types.js";
import { requireWallet, sendTaskContractCall } from "./utils.js";

/**
 * Parameters of {@link createTask}: the task type with matching arguments, plus the fee in wei and the other
 * options.
 */
export type CreateTaskParameters = (
  | { taskType: typeof TaskType.GPT; args: GptTaskArgsInput }
  | { taskType: typeof TaskType.SD; args: SdTaskArgsInput }
) & {
  /**
   * Fee in wei. Default: `suggestTaskFee` (the `suggestFee` of `@crynux/pricing` on a snapshot read from the
   * chain) for `targetWaitSeconds`.
   */
  fee?: bigint | undefined;
  /** Used for the default fee only. Default 60. */
  targetWaitSeconds?: number | undefined;
  /** Minimum GPU VRAM (GB) of the nodes. Default 0 (any node). */
  vramLimit?: bigint | undefined;
  /** An opaque hash recorded with the task (`TaskQueued` / `TaskStarted`). Default zero. */
  dataHash?: Hex | undefined;
};

/**
 * What {@link createTask} returns once the transaction is mined: the task id and hash, the fee paid (wei),
 * and whether it was queued or started at once.
 */
export type CreateTaskReturnType = {
  taskId: bigint;
  txHash: Hex;
  /** Block of the transaction: pass it to `waitForTask` / `getTaskHistory` as `fromBlock`. */
  blockNumber: bigint;
  /** The task waits in the queue (no 3 suitable nodes were available). */
  queued: boolean;
  /** The 3 selected nodes, by round, when the task started at once. */
  nodes?: Address[];
  taskHash: Hex;
  cap: bigint;
  fee: bigint;
  /** The suggestion the default fee came from (absent when `fee` was given). */
  feeSuggestion?: FeeSuggestion | null;
};

/**
 * Errors {@link createTask} may throw: invalid arguments, no fee suggestion available, a refused Task
 * contract call or no account.
 */
export type CreateTaskErrorType =
  | InvalidTaskArgsError
  | FeeSuggestionError
  | TaskContractError
  | AccountRequiredError;

/**
 * Validates the arguments with `@crynux/tasks` for the task type, computes the task hash (of the arguments
 * exactly as they will be uploaded) and the cap (`workUnits`), picks the fee (default: {@link suggestTaskFee})
 * and sends `Task.createTask` with a gas margin for the random node selection.
 *
 * Upload the same `args` afterwards (`uploadTaskArgs`): the nodes fetch them from the relay.
 *
 * @throws {InvalidTaskArgsError} before anything is sent, for arguments the nodes would refuse.
 * @throws {TaskContractError} when the contract refuses the call (`errorName`: `ZeroValue`, `QueueFull`, …).
 */
export async function createTask(
  client: CrynuxBaseClient,
  parameters: CreateTaskParameters,
): Promise<CreateTaskReturnType> {
  requireWallet(client, "createTask");
  const { taskType, args } = parameters;
  let cap: bigint;
  try {
    if (taskType === TaskType.GPT) parseGptTaskArgs(args);
    else if (taskType === TaskType.SD) parseSdTaskArgs(args);
    else throw new UnknownTaskTypeError(taskType);
    cap = workUnits(taskType, args);
  } catch (cause) {
    if (cause instanceof TaskArgsError)
      throw new InvalidTaskArgsError(cause.shortMessage, {
        cause,
        details: cause.details,
        issues: cause.issues,
      });
    if (cause instanceof UnknownTaskTypeError)
      throw new InvalidTaskArgsError(cause.shortMessage, { cause, issues: [] });
    throw cause;
  }
  // Hash what is uploaded, without the defaults the parser fills in: the relay and nodes hash the same bytes.
  const taskHash = computeTaskHash(args);
  const vramLimit = parameters.vramLimit ?? 0n;

  let fee = parameters.fee;
  let feeSuggestion: FeeSuggestion | null | undefined;
  if (fee === undefined) {
    const suggested = await suggestTaskFee(client, {
      taskType,
      cap,
      vramLimit,
      targetWaitSeconds: parameters.targetWaitSeconds,
    });
    fee = suggested.fee;
    feeSuggestion = suggested.suggestion;
  }

  const receipt = await sendTaskContractCall(client, {
    action: "createTask",
    address: client.contracts.task,
    abi: taskAbi,
    functionName: "createTask",
    args: [taskType, taskHash, parameters.dataHash ?? zeroHash, vramLimit, cap],
    value: fee,
  });
  const logs = parseEventLogs({
    abi: [...taskAbi, ...nodeAbi],
    logs: receipt.logs,
    eventName: ["TaskQueued", "TaskStarted"],
  }).filter((log) => log.address.toLowerCase() === client.contracts.task.toLowerCase());
  const queuedLog = logs.find((log) => log.eventName === "TaskQueued");
  const started = logs
    .filter((log) => log.eventName === "TaskStarted")
    .sort((a, b) => a.args.round - b.args.round);
  const taskId = queuedLog?.args.taskId ?? started[0]?.args.taskId;
  if (taskId === undefined)
    throw new TaskContractError("createTask succeeded but emitted neither TaskQueued nor TaskStarted.", {
      functionName: "createTask",
      transactionHash: receipt.transactionHash,
      details: "Is `contracts.task` the Task contract of this chain?",
    });
  return {
    taskId,
    txHash: receipt.transactionHash,
    blockNumber: receipt.blockNumber,
    queued: queuedLog !== undefined,
    ...(started.length > 0 ? { nodes: started.map((log) => log.args.selectedNode) } : {}),
    taskHash,
    cap,
    fee,
    ...(feeSuggestion === undefined ? {} : { feeSuggestion }),
  };
}
