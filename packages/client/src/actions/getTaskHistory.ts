import { taskAbi } from "@crynux/contracts";
import { type BlockTag, formatLog, numberToHex, parseEventLogs, type RpcLog } from "viem";
import type { FollowedLog } from "../chain/followLogs.js";
import type { CrynuxBaseClient } from "./types.js";

/** One event of the Task contract, decoded and narrowed by `eventName`. */
export type TaskEvent = FollowedLog<typeof taskAbi>;

/** Parameters of {@link getTaskHistory}: the task id and the block range to search. */
export type GetTaskHistoryParameters = {
  taskId: bigint;
  /**
   * First block to search. Default `earliest`: fine on a devnet; on a long chain pass the block of the
   * task's creation (`createTask` returns it) or a bound the RPC accepts.
   */
  fromBlock?: bigint | undefined;
  /** Last block to search. Default `latest`. */
  toBlock?: bigint | BlockTag | undefined;
};

/** The task's events in chain order (block, then log index). */
export type GetTaskHistoryReturnType = TaskEvent[];

/** {@link getTaskHistory} throws only viem's transport errors. */
export type GetTaskHistoryErrorType = never;

/**
 * The Task contract's events about one task (TaskQueued, TaskStarted × 3, TaskCommitmentsReady, TaskSuccess,
 * TaskAborted, payments, …) in chain order. One `eth_getLogs` filtered on the indexed `taskId` topic, which
 * every task event carries first.
 */
export async function getTaskHistory(
  client: CrynuxBaseClient,
  { taskId, fromBlock, toBlock }: GetTaskHistoryParameters,
): Promise<GetTaskHistoryReturnType> {
  const raw = (await client.publicClient.request({
    method: "eth_getLogs",
    params: [
      {
        address: client.contracts.task,
        fromBlock: fromBlock === undefined ? "earliest" : numberToHex(fromBlock),
        toBlock:
          toBlock === undefined ? "latest" : typeof toBlock === "bigint" ? numberToHex(toBlock) : toBlock,
        // Topic 1 is `taskId` for every task event; events keyed by an address (PaymentDeferred) are dropped below.
        topics: [null, numberToHex(taskId, { size: 32 })],
      },
    ],
  })) as RpcLog[];
  const logs = parseEventLogs({ abi: taskAbi, logs: raw.map((log) => formatLog(log)), strict: true });
  const events: TaskEvent[] = [];
  for (const log of logs) {
    const args = log.args as { taskId?: unknown };
    if (args.taskId !== taskId || log.blockNumber === null || log.logIndex === null) continue;
    events.push({
      eventName: log.eventName,
      args: log.args,
      address: log.address,
      blockNumber: log.blockNumber,
      blockHash: log.blockHash!,
      logIndex: log.logIndex,
      transactionHash: log.transactionHash!,
    } as TaskEvent);
  }
  return events.sort((a, b) =>
    a.blockNumber === b.blockNumber ? a.logIndex - b.logIndex : a.blockNumber < b.blockNumber ? -1 : 1,
  );
}
