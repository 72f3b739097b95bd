import { nodeAbi, qosAbi, TaskState, taskAbi } from "@crynux/contracts";
import { type Address, decodeFunctionData, type Hex, parseEventLogs } from "viem";
import type { Devnet } from "../src/network.js";

// What the devnet tests read back from the chain: rounds, QoS, stakes, deadlines, and every task's money from
// the Task contract's events.

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `read` until it returns something other than undefined/false; fails after `timeoutMs` naming `what`. */
export async function waitFor<T>(
  what: string,
  read: () => Promise<T | undefined | false>,
  { timeoutMs = 120_000, intervalMs = 250 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs / 1000} s waiting for ${what}.`);
    await sleep(intervalMs);
  }
}

export type RoundView = { node: Address; commitPlace: number; disclosePlace: number; flags: number };

export async function readRounds(devnet: Devnet, taskId: bigint): Promise<RoundView[]> {
  const rounds = await Promise.all(
    [0n, 1n, 2n].map((round) =>
      devnet.anvil.publicClient.readContract({
        address: devnet.contracts.task,
        abi: taskAbi,
        functionName: "getRound",
        args: [taskId, round],
      }),
    ),
  );
  return rounds.map(([node, commitPlace, disclosePlace, flags]) => ({
    node,
    commitPlace,
    disclosePlace,
    flags,
  }));
}

export async function readTaskState(devnet: Devnet, taskId: bigint): Promise<number> {
  const task = await devnet.anvil.publicClient.readContract({
    address: devnet.contracts.task,
    abi: taskAbi,
    functionName: "getTask",
    args: [taskId],
  });
  return task[2];
}

/**
 * Moves the chain's clock just past a task's commit deadline (anvil `evm_increaseTime` + a block), instead of
 * waiting the real 10 minutes.
 */
export async function passCommitDeadline(devnet: Devnet, taskId: bigint): Promise<void> {
  const { publicClient, testClient } = devnet.anvil;
  const [commitDeadline] = await publicClient.readContract({
    address: devnet.contracts.task,
    abi: taskAbi,
    functionName: "getTaskDeadlines",
    args: [taskId],
  });
  if (commitDeadline === 0n) throw new Error(`Task ${taskId} has not started: it has no commit deadline.`);
  const { timestamp } = await publicClient.getBlock({ blockTag: "latest" });
  if (timestamp <= commitDeadline)
    await testClient.increaseTime({ seconds: Number(commitDeadline - timestamp) + 1 });
  await testClient.mine({ blocks: 1 });
  const after = await publicClient.getBlock({ blockTag: "latest" });
  if (after.timestamp <= commitDeadline)
    throw new Error(
      `The chain's clock (${after.timestamp}) is not past the commit deadline ${commitDeadline}.`,
    );
}

export type QosView = {
  ring: readonly bigint[];
  recentCount: bigint;
  /** Lifetime number of recorded tasks and the sum of their scores. */
  count: bigint;
  sum: bigint;
  weight: bigint;
  averageScore: bigint;
  /** The kick-out sum: last 3 scores, missing slots counting 20. */
  recentScoreSum: bigint;
};

export async function readQos(devnet: Devnet, node: Address): Promise<QosView> {
  const { publicClient } = devnet.anvil;
  const address = devnet.contracts.qos;
  const [[ring, recentCount, count, sum], weight, averageScore, recentScoreSum] = await Promise.all([
    publicClient.readContract({ address, abi: qosAbi, functionName: "getScore", args: [node] }),
    publicClient.readContract({ address, abi: qosAbi, functionName: "weightOf", args: [node] }),
    publicClient.readContract({ address, abi: qosAbi, functionName: "averageScore", args: [node] }),
    publicClient.readContract({ address, abi: qosAbi, functionName: "recentScoreSum", args: [node] }),
  ]);
  return { ring, recentCount, count, sum, weight, averageScore, recentScoreSum };
}

/** A node's status code (NodeStatus of @crynux/contracts) and the stake it holds. */
export async function readNode(devnet: Devnet, node: Address): Promise<{ status: number; stake: bigint }> {
  const info = await devnet.anvil.publicClient.readContract({
    address: devnet.contracts.node,
    abi: nodeAbi,
    functionName: "getNodeInfo",
    args: [node],
  });
  return { status: info[0], stake: info[3] };
}

/** What a transaction cost its sender in gas, in wei. */
export async function gasCost(devnet: Devnet, hash: Hex): Promise<bigint> {
  const receipt = await devnet.anvil.publicClient.getTransactionReceipt({ hash });
  return receipt.gasUsed * receipt.effectiveGasPrice;
}

// ---------------------------------------------------------------------------------------------------------
// The money of every task, from the Task contract's events

export type TaskMoney = {
  taskId: bigint;
  creator: Address;
  /** The fee escrowed at creation: TaskQueued's `fee`, or the value of the createTask call that started it. */
  fee: bigint;
  feeFrom: "TaskQueued" | "createTask";
  /** The createTask transaction (the creator paid its gas). */
  createTx: Hex | undefined;
  /** TaskNodeSuccess amounts (nodes' payouts, pushed or credited in `owed`). */
  payouts: bigint;
  /** TaskRefunded amounts (back to the creator: cancellation, eviction, slashed or absent shares). */
  refunds: bigint;
  /** TaskNodeSuccess count, TaskNodeSlashed / TaskNodeAbsent / TaskNodeCancelled nodes. */
  paidNodes: number;
  slashed: Address[];
  absent: Address[];
  cancelled: Address[];
  /** TaskAborted reasons ("cancelled", "evicted", "task error", "results mismatch"). */
  aborted: string[];
  success: boolean;
  uploaded: boolean;
};

export type Ledger = {
  tasks: Map<bigint, TaskMoney>;
  fees: bigint;
  payouts: bigint;
  refunds: bigint;
  /** Every event of the Task contract in the range, by name. */
  eventCounts: Record<string, number>;
};

/**
 * Reads every event of the Task contract in [fromBlock, toBlock] and adds up, per task, the fee that went in
 * and the payouts and refunds that came out. TaskStarted carries no fee: a task that started in its own
 * createTask call has its fee from that transaction's value (its `to` and input are checked to be that call).
 */
export async function readLedger(devnet: Devnet, fromBlock: bigint, toBlock: bigint): Promise<Ledger> {
  const { publicClient } = devnet.anvil;
  const taskAddress = devnet.contracts.task;
  const raw = await publicClient.getLogs({ address: taskAddress, fromBlock, toBlock });
  const logs = parseEventLogs({ abi: taskAbi, logs: raw, strict: true });
  const tasks = new Map<bigint, TaskMoney>();
  const eventCounts: Record<string, number> = {};
  const entry = (taskId: bigint, creator?: Address): TaskMoney => {
    let money = tasks.get(taskId);
    if (!money) {
      money = {
        taskId,
        creator: creator ?? "0x0000000000000000000000000000000000000000",
        fee: 0n,
        feeFrom: "createTask",
        createTx: undefined,
        payouts: 0n,
        refunds: 0n,
        paidNodes: 0,
        slashed: [],
        absent: [],
        cancelled: [],
        aborted: [],
        success: false,
        uploaded: false,
      };
      tasks.set(taskId, money);
    }
    return money;
  };
  const startTxs = new Map<bigint, Hex>();
  for (const log of logs) {
    eventCounts[log.eventName] = (eventCounts[log.eventName] ?? 0) + 1;
    switch (log.eventName) {
      case "TaskQueued": {
        const money = entry(log.args.taskId, log.args.creator);
        money.fee = log.args.fee;
        money.feeFrom = "TaskQueued";
        money.createTx = log.transactionHash;
        break;
      }
      case "TaskStarted": {
        const money = entry(log.args.taskId, log.args.creator);
        if (money.feeFrom !== "TaskQueued" && log.args.round === 0)
          startTxs.set(log.args.taskId, log.transactionHash);
        break;
      }
      case "TaskNodeSuccess": {
        const money = entry(log.args.taskId);
        money.payouts += log.args.fee;
        money.paidNodes += 1;
        break;
      }
      case "TaskRefunded":
        entry(log.args.taskId).refunds += log.args.amount;
        break;
      case "TaskNodeSlashed":
        entry(log.args.taskId).slashed.push(log.args.node);
        break;
      case "TaskNodeAbsent":
        entry(log.args.taskId).absent.push(log.args.node);
        break;
      case "TaskNodeCancelled":
        entry(log.args.taskId).cancelled.push(log.args.node);
        break;
      case "TaskAborted":
        entry(log.args.taskId).aborted.push(log.args.reason);
        break;
      case "TaskSuccess":
        entry(log.args.taskId).success = true;
        break;
      case "TaskResultUploaded":
        entry(log.args.taskId).uploaded = true;
        break;
      default:
        break;
    }
  }
  // Tasks started in their createTask transaction: the fee is that call's value.
  await Promise.all(
    [...startTxs].map(async ([taskId, hash]) => {
      const money = tasks.get(taskId)!;
      if (money.feeFrom === "TaskQueued") return;
      const tx = await publicClient.getTransaction({ hash });
      const call = decodeFunctionData({ abi: taskAbi, data: tx.input });
      if (tx.to?.toLowerCase() !== taskAddress.toLowerCase() || call.functionName !== "createTask")
        throw new Error(`Task ${taskId} started in ${hash}, which is not a createTask call.`);
      money.fee = tx.value;
      money.createTx = hash;
    }),
  );
  let fees = 0n;
  let payouts = 0n;
  let refunds = 0n;
  for (const money of tasks.values()) {
    fees += money.fee;
    payouts += money.payouts;
    refunds += money.refunds;
  }
  return { tasks, fees, payouts, refunds, eventCounts };
}

/** The Task contract's money at one moment: escrowed fees, credited unpaid payments, its balance. */
export async function readEscrow(
  devnet: Devnet,
): Promise<{ totalEscrow: bigint; totalOwed: bigint; balance: bigint; queued: bigint }> {
  const { publicClient } = devnet.anvil;
  const address = devnet.contracts.task;
  const [totalEscrow, totalOwed, balance, queued] = await Promise.all([
    publicClient.readContract({ address, abi: taskAbi, functionName: "totalEscrow" }),
    publicClient.readContract({ address, abi: taskAbi, functionName: "totalOwed" }),
    publicClient.getBalance({ address }),
    publicClient.readContract({ address, abi: taskAbi, functionName: "queuedTasks" }),
  ]);
  return { totalEscrow, totalOwed, balance, queued };
}

/** States a task never leaves: UPLOADED (result node paid), ERROR, ABORTED. */
export const FINAL_STATES: readonly number[] = [TaskState.UPLOADED, TaskState.ERROR, TaskState.ABORTED];
