import { NodeTaskTypes, nodeAbi } from "@crynux/contracts";
import { type Address, type Hex, zeroHash } from "viem";
import { readContract } from "viem/actions";
import { type CrynuxBaseClient, NODE_STATUSES, type NodeStatusName } from "./types.js";

/** Parameters of {@link getNodeInfo}: the node's address and optionally the block to read at. */
export type GetNodeInfoParameters = { address: Address; blockNumber?: bigint | undefined };

/**
 * A node as the Node contract holds it: status, group key, VRAM, stake (wei), QoS weight and declared task
 * types.
 */
export type GetNodeInfoReturnType = {
  address: Address;
  status: NodeStatusName;
  /** The on-chain number of `status` (0 QUIT … 5 PAUSED). */
  statusCode: number;
  /** `groupKey(gpuName, gpuVram, runtimeId, taskTypes)`; `null` for a node that is not joined. */
  groupKey: Hex | null;
  gpuVram: bigint;
  /** Stake held, in wei. */
  stake: bigint;
  /** QoS selection weight (1…20). */
  weight: number;
  /** The task the node is bound to, `null` when none. */
  taskId: bigint | null;
  /** The task types the node runs, as declared when it joined: `"sd"`, `"gpt"` (empty when not joined). */
  taskTypes: ("sd" | "gpt")[];
};

/** {@link getNodeInfo} throws only viem's transport and contract errors (an unknown node reads as `quit`). */
export type GetNodeInfoErrorType = never;

/** Reads a node from the Node contract; a node that never joined reads as `quit`. */
export async function getNodeInfo(
  client: CrynuxBaseClient,
  { address, blockNumber }: GetNodeInfoParameters,
): Promise<GetNodeInfoReturnType> {
  const [statusCode, groupKey, gpuVram, stake, weight, taskId, taskTypes] = await readContract(
    client.publicClient,
    {
      address: client.contracts.node,
      abi: nodeAbi,
      functionName: "getNodeInfo",
      args: [address],
      ...(blockNumber === undefined ? {} : { blockNumber }),
    },
  );
  const status = NODE_STATUSES[statusCode];
  if (status === undefined) throw new RangeError(`Unknown node status ${statusCode}.`);
  return {
    address,
    status,
    statusCode,
    groupKey: groupKey === zeroHash ? null : groupKey,
    gpuVram,
    stake,
    weight: Number(weight),
    taskId: taskId === 0n ? null : taskId,
    taskTypes: [
      ...((taskTypes & NodeTaskTypes.SD) !== 0 ? (["sd"] as const) : []),
      ...((taskTypes & NodeTaskTypes.GPT) !== 0 ? (["gpt"] as const) : []),
    ],
  };
}
