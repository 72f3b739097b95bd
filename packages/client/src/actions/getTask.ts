import { taskAbi } from "@crynux/contracts";
import { isTaskType, type TaskType, UnknownTaskTypeError } from "@crynux/tasks";
import { type Address, type Hex, zeroAddress } from "viem";
import { readContract } from "viem/actions";
import { TaskNotFoundError } from "../errors.js";
import { type CrynuxBaseClient, type TaskStateName, taskStateName } from "./types.js";

/** Parameters of {@link getTask}: the task id and optionally the block to read at. */
export type GetTaskParameters = { taskId: bigint; blockNumber?: bigint | undefined };

/**
 * A task as the Task contract holds it, with its state by name, amounts in wei and the agreed result once
 * there is one.
 */
export type GetTaskReturnType = {
  taskId: bigint;
  creator: Address;
  taskType: TaskType;
  state: TaskStateName;
  /** The on-chain number of `state` (0 NONE … 6 ABORTED). */
  stateCode: number;
  taskHash: Hex;
  vramLimit: bigint;
  cap: bigint;
  /** Fee paid at creation, in wei. */
  fee: bigint;
  /** Part of the fee not paid out or refunded yet. */
  balance: bigint;
  /** Unix seconds after which the task may be cancelled; `null` while it has not started. */
  deadline: bigint | null;
  /** Unix seconds after which commitments are refused; `null` while it has not started. */
  commitDeadline: bigint | null;
  /** The 3 selected nodes by round; empty while queued. */
  nodes: Address[];
  /** The round of the result node, once the result is agreed. */
  resultRound: number | null;
  /** The agreed result (GPT: 32-byte sha256, SD: 8-byte pHashes), once the state is success or uploaded. */
  result: Hex | null;
};

/** {@link getTask} throws `TaskNotFoundError` for an id the contract does not know. */
export type GetTaskErrorType = TaskNotFoundError;

/**
 * Reads a task from the Task contract, with its state by name and, once agreed, its result.
 * @throws {TaskNotFoundError} when no task has this id.
 */
export async function getTask(
  client: CrynuxBaseClient,
  { taskId, blockNumber }: GetTaskParameters,
): Promise<GetTaskReturnType> {
  const at = blockNumber === undefined ? {} : { blockNumber };
  const address = client.contracts.task;
  const [task, deadlines] = await Promise.all([
    readContract(client.publicClient, {
      address,
      abi: taskAbi,
      functionName: "getTask",
      args: [taskId],
      ...at,
    }),
    readContract(client.publicClient, {
      address,
      abi: taskAbi,
      functionName: "getTaskDeadlines",
      args: [taskId],
      ...at,
    }),
  ]);
  const [creator, taskType, stateCode, taskHash, vramLimit, cap, fee, balance, , nodes, resultRound] = task;
  if (stateCode === 0) throw new TaskNotFoundError(taskId);
  if (!isTaskType(taskType)) throw new UnknownTaskTypeError(taskType);
  const state = taskStateName(stateCode);
  const agreed = state === "success" || state === "uploaded";
  const result = agreed
    ? await readContract(client.publicClient, {
        address,
        abi: taskAbi,
        functionName: "getTaskResult",
        args: [taskId],
        ...at,
      })
    : null;
  const started = deadlines[0] !== 0n;
  return {
    taskId,
    creator,
    taskType,
    state,
    stateCode,
    taskHash,
    vramLimit,
    cap,
    fee,
    balance,
    deadline: started ? deadlines[1] : null,
    commitDeadline: started ? deadlines[0] : null,
    nodes: nodes.filter((node) => node !== zeroAddress),
    resultRound: agreed || state === "error" ? resultRound : null,
    result,
  };
}
