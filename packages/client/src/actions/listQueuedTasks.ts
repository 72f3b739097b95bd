import { taskAbi, taskQueueAbi } from "@crynux/contracts";
import { compareTaskValue } from "@crynux/pricing";
import { isTaskType, type TaskType } from "@crynux/tasks";
import { type Address, getAbiItem, type Hex } from "viem";
import { getBlockNumber, getLogs, readContract } from "viem/actions";
import type { CrynuxBaseClient } from "./types.js";

/**
 * Parameters of {@link listQueuedTasks}: how far back and in what chunks to search for `TaskQueued` events.
 */
export type ListQueuedTasksParameters = {
  /** Oldest block to search for `TaskQueued` events. Default 0. */
  fromBlock?: bigint | undefined;
  /** Blocks per `eth_getLogs` request, walking back from the head. Default 10 000. */
  blockRange?: bigint | undefined;
};

/**
 * One task waiting in the queue, with its fee (wei) and queue value (wei per second of estimated work;
 * higher starts first).
 */
export type QueuedTask = {
  taskId: bigint;
  taskType: TaskType;
  creator: Address;
  taskHash: Hex;
  vramLimit: bigint;
  cap: bigint;
  fee: bigint;
  /** Queue value, wei per second of estimated work: higher starts first. */
  value: bigint;
  /** Block of the `TaskQueued` event. */
  blockNumber: bigint;
};

/** The queued tasks in dispatch order (highest value first, older first on equal values). */
export type ListQueuedTasksReturnType = QueuedTask[];

/** {@link listQueuedTasks} throws only viem's transport and contract errors. */
export type ListQueuedTasksErrorType = never;

const taskQueuedEvent = getAbiItem({ abi: taskAbi, name: "TaskQueued" });

/**
 * Lists the tasks waiting in the queue. TaskQueue has no view that enumerates its heaps, so this walks the
 * `TaskQueued` events back from the head, keeps the tasks `TaskQueue.contains` still holds, and stops as soon as
 * it has found `TaskQueue.size()` of them (the queue holds at most its size limit, 50 by default).
 */
export async function listQueuedTasks(
  client: CrynuxBaseClient,
  { fromBlock = 0n, blockRange = 10_000n }: ListQueuedTasksParameters = {},
): Promise<ListQueuedTasksReturnType> {
  const { publicClient, contracts } = client;
  const head = await getBlockNumber(publicClient, { cacheTime: 0 });
  // Read at one block so that the count and the membership checks agree.
  const at = { blockNumber: head };
  const size = await readContract(publicClient, {
    address: contracts.taskQueue,
    abi: taskQueueAbi,
    functionName: "size",
    ...at,
  });
  const found: QueuedTask[] = [];
  let to = head;
  while (BigInt(found.length) < size && to >= fromBlock) {
    const from = to - blockRange + 1n > fromBlock ? to - blockRange + 1n : fromBlock;
    const logs = await getLogs(publicClient, {
      address: contracts.task,
      event: taskQueuedEvent,
      fromBlock: from,
      toBlock: to,
      strict: true,
    });
    const queued = await Promise.all(
      logs.map(async (log) => {
        const { taskId } = log.args;
        const [contains, value] = await Promise.all([
          readContract(publicClient, {
            address: contracts.taskQueue,
            abi: taskQueueAbi,
            functionName: "contains",
            args: [taskId],
            ...at,
          }),
          readContract(publicClient, {
            address: contracts.taskQueue,
            abi: taskQueueAbi,
            functionName: "valueOf",
            args: [taskId],
            ...at,
          }),
        ]);
        return contains ? { log, value } : null;
      }),
    );
    for (const entry of queued) {
      if (!entry) continue;
      const { args, blockNumber } = entry.log;
      if (!isTaskType(args.taskType)) continue;
      found.push({
        taskId: args.taskId,
        taskType: args.taskType,
        creator: args.creator,
        taskHash: args.taskHash,
        vramLimit: args.vramLimit,
        cap: args.cap,
        fee: args.fee,
        value: entry.value,
        blockNumber: blockNumber!,
      });
    }
    to = from - 1n;
  }
  return found.sort(compareTaskValue);
}
