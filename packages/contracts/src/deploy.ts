import {
  type Account,
  type Address,
  type Chain,
  concat,
  encodeAbiParameters,
  type Hex,
  keccak256,
  type PublicClient,
  size,
  type Transport,
  type WalletClient,
} from "viem";
import {
  networkStatsAbi,
  networkStatsBytecode,
  nodeAbi,
  nodeBytecode,
  qosAbi,
  qosBytecode,
  taskAbi,
  taskBytecode,
  taskQueueAbi,
  taskQueueBytecode,
  treasuryAbi,
  treasuryBytecode,
} from "./generated/index.js";

/**
 * Options of {@link deployCrynux}: the stake (wei), task timeouts and treasury of the new deployment; every
 * field has a default.
 */
export type DeployCrynuxOptions = {
  /** Stake required to join, in wei (default 400 CNX = 400e18). */
  stake?: bigint;
  /** Seconds from a task's start to its deadline, after which it can be cancelled (default 900). */
  timeoutSeconds?: number;
  /**
   * Seconds from a task's start to its commit deadline (default 600, or two thirds of `timeoutSeconds` when
   * only that is given). Must be below `timeoutSeconds`, and the difference below 65,536.
   */
  commitTimeoutSeconds?: number;
  /** Taken from the stake of a node that misses a commit deadline, in wei (default 40 CNX). */
  absencePenalty?: bigint;
  /** Most node groups (gpuName, gpuVram, runtimeId) with joined nodes (default 64); bounds createTask's gas. */
  maxGroups?: number;
  /** Queue size limit (default 50). */
  queueSizeLimit?: number;
  /** SD pHash distance threshold: an image matches when fewer bits differ (default 5). */
  distanceThreshold?: number;
  /** Where slashed stakes go; default: a freshly deployed `Treasury` contract owned by the deployer. */
  treasury?: Address;
};

/**
 * Addresses of one deployment of the Crynux contracts, as {@link deployCrynux} returns them; pass them to
 * clients and nodes as `contracts`.
 */
export type CrynuxDeployment = {
  node: Address;
  task: Address;
  taskQueue: Address;
  qos: Address;
  networkStats: Address;
  /** The treasury address slashed stakes are sent to (deployed here unless given in the options). */
  treasury: Address;
};

/** A viem wallet client with an account: the deployer and owner of the contracts. */
export type DeployWalletClient = WalletClient<Transport, Chain | undefined, Account>;
/** A viem public client of the same chain. */
export type DeployPublicClient = PublicClient<Transport, Chain | undefined>;

/**
 * Deploys the Crynux contracts (QOS, NetworkStats, TaskQueue, Node, Task and, unless given, a Treasury),
 * wires them together (each wiring setter can be called once, by the owner), applies the options and waits
 * for every receipt. The wallet's account becomes the owner of every contract.
 */
export async function deployCrynux(
  walletClient: DeployWalletClient,
  publicClient: DeployPublicClient,
  options: DeployCrynuxOptions = {},
): Promise<CrynuxDeployment> {
  const account = walletClient.account;
  const chain = walletClient.chain;

  const deploy = async (abi: readonly unknown[], bytecode: Hex): Promise<Address> => {
    const hash = await walletClient.deployContract({
      abi: abi as never,
      bytecode,
      account,
      chain,
      args: [] as never,
    });
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success" || !receipt.contractAddress) {
      throw new Error(`deployment failed (transaction ${hash})`);
    }
    return receipt.contractAddress;
  };
  const call = async (address: Address, abi: readonly unknown[], functionName: string, args: unknown[]) => {
    const hash = await walletClient.writeContract({
      address,
      abi: abi as never,
      functionName: functionName as never,
      args: args as never,
      account,
      chain,
    });
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`${functionName} failed (transaction ${hash})`);
  };

  const qos = await deploy(qosAbi, qosBytecode);
  const networkStats = await deploy(networkStatsAbi, networkStatsBytecode);
  const taskQueue = await deploy(taskQueueAbi, taskQueueBytecode);
  const node = await deploy(nodeAbi, nodeBytecode);
  const task = await deploy(taskAbi, taskBytecode);
  const treasury = options.treasury ?? (await deploy(treasuryAbi, treasuryBytecode));

  await call(node, nodeAbi, "setContracts", [task, qos, networkStats]);
  await call(task, taskAbi, "setContracts", [node, taskQueue, networkStats]);
  await call(taskQueue, taskQueueAbi, "setContracts", [task, node]);
  await call(qos, qosAbi, "setNodeContract", [node]);
  await call(networkStats, networkStatsAbi, "setContracts", [node, task]);
  await call(node, nodeAbi, "setTreasury", [treasury]);

  if (options.stake !== undefined) await call(node, nodeAbi, "setStakeAmount", [options.stake]);
  if (options.timeoutSeconds !== undefined || options.commitTimeoutSeconds !== undefined) {
    const total = options.timeoutSeconds ?? 900;
    const commit =
      options.commitTimeoutSeconds ??
      (options.timeoutSeconds === undefined ? 600 : Math.max(1, Math.floor((total * 2) / 3)));
    await call(task, taskAbi, "setTimeouts", [BigInt(commit), BigInt(total)]);
  }
  if (options.maxGroups !== undefined) {
    await call(node, nodeAbi, "setMaxGroups", [BigInt(options.maxGroups)]);
  }
  if (options.absencePenalty !== undefined) {
    await call(node, nodeAbi, "setAbsencePenalty", [options.absencePenalty]);
  }
  if (options.queueSizeLimit !== undefined) {
    await call(taskQueue, taskQueueAbi, "setSizeLimit", [BigInt(options.queueSizeLimit)]);
  }
  if (options.distanceThreshold !== undefined) {
    await call(task, taskAbi, "setDistanceThreshold", [BigInt(options.distanceThreshold)]);
  }
  return { node, task, taskQueue, qos, networkStats, treasury };
}

/**
 * The Node contract's group key of a card: `keccak256(abi.encode(string gpuName, uint256 gpuVram, string
 * runtimeId, uint8 taskTypes))` (standard ABI encoding, not packed). GPT tasks run on 3 nodes of one group;
 * `taskTypes` is the set of task types the nodes run ({@link NodeTaskTypes}).
 */
export function groupKey(
  gpuName: string,
  gpuVram: bigint | number,
  runtimeId: string,
  taskTypes: number,
): Hex {
  return keccak256(
    encodeAbiParameters(
      [{ type: "string" }, { type: "uint256" }, { type: "string" }, { type: "uint8" }],
      [gpuName, BigInt(gpuVram), runtimeId, taskTypes],
    ),
  );
}

/**
 * The commitment a node submits: `keccak256(abi.encodePacked(bytes result, bytes32 nonce))`. The error report
 * is the commitment of the empty result (`taskCommitment("0x", nonce)`), disclosed with `reportTaskError`.
 */
export function taskCommitment(result: Hex, nonce: Hex): Hex {
  if (size(nonce) !== 32) throw new RangeError(`the nonce must be 32 bytes, got ${size(nonce)}`);
  return keccak256(concat([result, nonce]));
}

/**
 * A gas limit for calls whose cost depends on the random node selection (`createTask`, and `join`,
 * `resume`, disclosures and uploads that may start a queued task): the estimate plus 25 %. The draw —
 * seeded from `block.prevrandao` — differs between `eth_estimateGas` and the mined block, so an estimate
 * used as is can fall short; unused gas is not charged.
 */
export function withSelectionGasMargin(estimate: bigint): bigint {
  return estimate + estimate / 4n;
}
