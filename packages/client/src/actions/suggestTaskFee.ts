import { NodeTaskTypes, nodeAbi, taskAbi } from "@crynux/contracts";
import {
  estimateMillis,
  type FeeSuggestion,
  feeForValue,
  type NetworkSnapshot,
  suggestFee,
  type TimeParameters,
} from "@crynux/pricing";
import { TaskType } from "@crynux/tasks";
import { readContract } from "viem/actions";
import { FeeSuggestionError } from "../errors.js";
import { getNetworkStats } from "./getNetworkStats.js";
import { listQueuedTasks } from "./listQueuedTasks.js";
import type { CrynuxBaseClient } from "./types.js";

/** Seconds a fee should buy when the caller does not say: start within a minute. */
export const DEFAULT_TARGET_WAIT_SECONDS = 60;

/**
 * Parameters of {@link suggestTaskFee}: the task type, its work units (`cap`) and how soon it should start.
 */
export type SuggestTaskFeeParameters = {
  taskType: TaskType;
  /** Work units of the task (`workUnits(taskType, args)`). */
  cap: bigint;
  /** SD: the VRAM (GB) the nodes need; counts the nodes that can take the task. Default 0. */
  vramLimit?: bigint | undefined;
  /** Start the task within this many seconds (~90 % confidence). Default 60. */
  targetWaitSeconds?: number | undefined;
  /**
   * Overrides of the snapshot read from the chain. The chain has no record of recent execution times nor of
   * arrivals: `meanTaskSeconds` defaults to this task's own estimate (`estimateMillis` with the contract's time
   * constants) and `arrivals` to none. Pass better figures (e.g. from an indexer) here.
   */
  network?: Partial<NetworkSnapshot> | undefined;
  /** Passed to `listQueuedTasks`. */
  fromBlock?: bigint | undefined;
};

/** The fee to pay in wei, with the pricing model's full answer when there was one. */
export type SuggestTaskFeeReturnType = {
  fee: bigint;
  /** `suggestFee`'s answer; `null` when fewer than 3 nodes are joined (see {@link suggestTaskFee}). */
  suggestion: FeeSuggestion | null;
  network: NetworkSnapshot;
  /** The contract's time constants the value is computed with. */
  timeParameters: TimeParameters;
  estimatedMs: bigint;
};

/** {@link suggestTaskFee} throws `FeeSuggestionError` when no fee can be suggested. */
export type SuggestTaskFeeErrorType = FeeSuggestionError;

/**
 * Suggests a fee for a task with `suggestFee` from `@crynux/pricing`, fed with a snapshot of the network read
 * from the contracts: the queued tasks' values (`listQueuedTasks`), the joined nodes (available + busy, from
 * NetworkStats), the node triples free now (GPT: per group, SD: nodes with enough VRAM) and the Task contract's
 * time constants. With fewer than 3 nodes no start time can be promised: the fee is then the one whose value
 * beats every queued task (at least 1 wei per second), so the task starts first once nodes join.
 */
export async function suggestTaskFee(
  client: CrynuxBaseClient,
  parameters: SuggestTaskFeeParameters,
): Promise<SuggestTaskFeeReturnType> {
  const { taskType, cap } = parameters;
  const vramLimit = parameters.vramLimit ?? 0n;
  const targetWaitSeconds = parameters.targetWaitSeconds ?? DEFAULT_TARGET_WAIT_SECONDS;
  let timeParameters: TimeParameters;
  let queuedValues: bigint[];
  let nodes: number;
  let freeSlots: number;
  try {
    const { publicClient, contracts } = client;
    const [config, queued, stats, free] = await Promise.all([
      readContract(publicClient, { address: contracts.task, abi: taskAbi, functionName: "getConfig" }),
      parameters.network?.queuedValues
        ? Promise.resolve(null)
        : listQueuedTasks(client, { fromBlock: parameters.fromBlock }),
      getNetworkStats(client),
      freeTriples(client, taskType, vramLimit),
    ]);
    const [, , , sdOverheadMs, sdPerUnitMs, gptOverheadMs, gptPerUnitMs] = config;
    timeParameters = {
      [TaskType.SD]: { overheadMs: sdOverheadMs, perUnitMs: sdPerUnitMs },
      [TaskType.GPT]: { overheadMs: gptOverheadMs, perUnitMs: gptPerUnitMs },
    };
    queuedValues = queued ? queued.map((task) => task.value) : [];
    nodes = stats.nodes.available + stats.nodes.busy;
    freeSlots = free;
  } catch (cause) {
    throw new FeeSuggestionError("Could not read the network snapshot to suggest a fee.", {
      cause,
      details: "Pass `fee` to set the fee yourself.",
    });
  }
  const estimatedMs = estimateMillis(taskType, cap, timeParameters);
  const network: NetworkSnapshot = {
    queuedValues,
    nodes,
    meanTaskSeconds: Number(estimatedMs) / 1000,
    freeSlots,
    ...parameters.network,
  };
  if (Math.floor(network.nodes / 3) < 1) {
    let highest = 0n;
    for (const value of network.queuedValues) if (value > highest) highest = value;
    return {
      fee: feeForValue(highest + 1n, estimatedMs),
      suggestion: null,
      network,
      timeParameters,
      estimatedMs,
    };
  }
  const suggestion = suggestFee({ taskType, cap, network, targetWaitSeconds, timeParameters });
  return { fee: suggestion.fee, suggestion, network, timeParameters, estimatedMs };
}

/** Node triples that could start this task right now. */
async function freeTriples(client: CrynuxBaseClient, taskType: TaskType, vramLimit: bigint): Promise<number> {
  const { publicClient, contracts } = client;
  if (taskType === TaskType.SD) {
    const available = await readContract(publicClient, {
      address: contracts.node,
      abi: nodeAbi,
      functionName: "availableAtLeast",
      args: [TaskType.SD, vramLimit],
    });
    return Math.floor(Number(available) / 3);
  }
  // GPT runs on 3 nodes of one group: count the triples within each group that runs GPT with enough memory.
  const groups = await readContract(publicClient, {
    address: contracts.node,
    abi: nodeAbi,
    functionName: "getActiveGroups",
  });
  const counts = await Promise.all(
    groups.map((key) =>
      readContract(publicClient, {
        address: contracts.node,
        abi: nodeAbi,
        functionName: "getGroupInfo",
        args: [key],
      }),
    ),
  );
  return counts.reduce(
    (sum, [gpuVram, available, , taskTypes]) =>
      (taskTypes & NodeTaskTypes.GPT) !== 0 && gpuVram >= vramLimit
        ? sum + Math.floor(Number(available) / 3)
        : sum,
    0,
  );
}
