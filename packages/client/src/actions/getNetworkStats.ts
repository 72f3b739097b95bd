import { type CrynuxDeployment, networkStatsAbi } from "@crynux/contracts";
import { readContract } from "viem/actions";
import type { CrynuxBaseClient } from "./types.js";

/** Parameters of {@link getNetworkStats}: optionally the block to read at (default: latest). */
export type GetNetworkStatsParameters = { blockNumber?: bigint | undefined };

/** The NetworkStats contract's counters. */
export type GetNetworkStatsReturnType = {
  nodes: {
    /** Joined nodes (any status but quit). */
    total: number;
    available: number;
    /** Busy, pending pause or pending quit. */
    busy: number;
  };
  tasks: {
    /** Tasks ever created. */
    total: bigint;
    queued: number;
    /** Started and not finished (some node still bound to it). */
    running: number;
  };
};

/** {@link getNetworkStats} throws only viem's transport and contract errors. */
export type GetNetworkStatsErrorType = never;

/** Reads the node and task counters from the NetworkStats contract (straight from the chain, not the relay). */
export async function getNetworkStats(
  client: Pick<CrynuxBaseClient, "publicClient"> & { contracts: Pick<CrynuxDeployment, "networkStats"> },
  { blockNumber }: GetNetworkStatsParameters = {},
): Promise<GetNetworkStatsReturnType> {
  const read = (
    functionName:
      | "totalNodes"
      | "availableNodes"
      | "busyNodes"
      | "totalTasks"
      | "queuedTasks"
      | "runningTasks",
  ) =>
    readContract(client.publicClient, {
      address: client.contracts.networkStats,
      abi: networkStatsAbi,
      functionName,
      ...(blockNumber === undefined ? {} : { blockNumber }),
    });
  const [total, available, busy, totalTasks, queued, running] = await Promise.all([
    read("totalNodes"),
    read("availableNodes"),
    read("busyNodes"),
    read("totalTasks"),
    read("queuedTasks"),
    read("runningTasks"),
  ]);
  return {
    nodes: { total: Number(total), available: Number(available), busy: Number(busy) },
    tasks: { total: totalTasks, queued: Number(queued), running: Number(running) },
  };
}
