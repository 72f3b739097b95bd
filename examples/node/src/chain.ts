import { type CrynuxDeployment, defineCrynuxChain, nodeAbi, qosAbi, taskAbi } from "@crynux/contracts";
import { NODE_STATUSES, type NodeChainStatus } from "@crynux/node-core";
import {
  type Account,
  type Address,
  BaseError,
  type Chain,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  http,
  type PublicClient,
  type Transport,
  type WalletClient,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import type { NodeConfig, NodeContracts } from "./config.js";
import { NodeConfigError, NodeProgramError } from "./errors.js";

export type NodeChainClients = {
  chain: Chain;
  publicClient: PublicClient;
  walletClient: WalletClient<Transport, Chain, Account>;
  contracts: CrynuxDeployment;
};

/**
 * Connects to the configured chain: checks the chain id, builds the clients with the node's key and fills
 * in the contract addresses the configuration left out (read from the Node and Task contracts).
 */
export async function connectChain(config: NodeConfig): Promise<NodeChainClients> {
  const probe = createPublicClient({ transport: http(config.chain.rpcUrl) });
  let chainId: number;
  try {
    chainId = await probe.getChainId();
  } catch (cause) {
    throw new NodeProgramError(`Cannot reach the chain RPC at ${config.chain.rpcUrl}.`, { cause });
  }
  if (config.chain.chainId !== undefined && config.chain.chainId !== chainId)
    throw new NodeConfigError(
      `The RPC serves chain ${chainId}, but the configuration says ${config.chain.chainId}.`,
      {
        issues: [{ path: "chain.chainId", message: `the RPC serves chain ${chainId}` }],
      },
    );
  const chain = defineCrynuxChain({ id: chainId, name: `Crynux ${chainId}`, rpcUrl: config.chain.rpcUrl });
  const transport = http(config.chain.rpcUrl);
  // Receipts are polled at the node's pace (viem's default of 4 s would slow every transaction down).
  const pollingInterval = config.pollingIntervalMs;
  const publicClient = createPublicClient({ chain, transport, pollingInterval }) as PublicClient;
  const walletClient = createWalletClient({
    account: privateKeyToAccount(config.account.privateKey.reveal()),
    chain,
    transport,
    pollingInterval,
  });
  const contracts = await completeContracts(publicClient, config.chain.contracts);
  return { chain, publicClient, walletClient, contracts };
}

/** The addresses the configuration left out, read from the contracts that know them. */
export async function completeContracts(
  client: PublicClient,
  given: NodeContracts,
): Promise<CrynuxDeployment> {
  const read = async (address: Address, abi: typeof taskAbi | typeof nodeAbi, functionName: string) => {
    try {
      return (await client.readContract({ address, abi, functionName } as never)) as Address;
    } catch (cause) {
      throw new NodeProgramError(`Cannot read ${functionName}() of the contract at ${address}.`, {
        details: "Check chain.contracts / chain.deploymentFile: is it the Crynux deployment of this chain?",
        cause,
      });
    }
  };
  const [taskQueue, networkStats, qos, treasury] = await Promise.all([
    given.taskQueue ?? read(given.task, taskAbi, "queue"),
    given.networkStats ?? read(given.task, taskAbi, "stats"),
    given.qos ?? read(given.node, nodeAbi, "qos"),
    given.treasury ?? read(given.node, nodeAbi, "treasury"),
  ]);
  return { node: given.node, task: given.task, taskQueue, networkStats, qos, treasury };
}

/** The node's standing as the chain sees it, without the node program. */
export type ChainNodeStatus = {
  address: Address;
  chainStatus: NodeChainStatus;
  stake: bigint;
  groupKey: `0x${string}`;
  gpuVram: bigint;
  taskId: bigint;
  balance: bigint;
  qos: { averageScore: bigint; weight: bigint; recentScoreSum: bigint };
};

export async function readChainNodeStatus(
  client: PublicClient,
  contracts: Pick<CrynuxDeployment, "node" | "qos">,
  address: Address,
): Promise<ChainNodeStatus> {
  const qosRead = (functionName: "averageScore" | "weightOf" | "recentScoreSum") =>
    client.readContract({ address: contracts.qos, abi: qosAbi, functionName, args: [address] });
  const [info, balance, averageScore, weight, recentScoreSum] = await Promise.all([
    client.readContract({
      address: contracts.node,
      abi: nodeAbi,
      functionName: "getNodeInfo",
      args: [address],
    }),
    client.getBalance({ address }),
    qosRead("averageScore"),
    qosRead("weightOf"),
    qosRead("recentScoreSum"),
  ]);
  const [status, groupKey, gpuVram, stake, , taskId] = info;
  return {
    address,
    chainStatus: NODE_STATUSES[status] ?? "QUIT",
    stake,
    groupKey,
    gpuVram,
    taskId,
    balance,
    qos: { averageScore, weight, recentScoreSum },
  };
}

/**
 * Sends `pause`, `resume` or `quit` from the node's key, for when the node program is not running (while it
 * runs, its API does it, so that its transaction sender keeps the nonces in order). Returns the status after.
 *
 * @throws {NodeProgramError} naming the contract's error when it refuses (e.g. `IllegalNodeStatus`).
 */
export async function sendNodeAction(
  clients: Pick<NodeChainClients, "publicClient" | "walletClient" | "contracts">,
  action: "pause" | "resume" | "quit",
): Promise<NodeChainStatus> {
  const { publicClient, walletClient, contracts } = clients;
  try {
    const { request } = await publicClient.simulateContract({
      account: walletClient.account,
      address: contracts.node,
      abi: nodeAbi,
      functionName: action,
    });
    const hash = await walletClient.writeContract(request);
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new NodeProgramError(`${action} reverted (transaction ${hash}).`);
  } catch (error) {
    if (error instanceof NodeProgramError) throw error;
    const reverted =
      error instanceof BaseError ? error.walk((e) => e instanceof ContractFunctionRevertedError) : undefined;
    if (reverted instanceof ContractFunctionRevertedError)
      throw new NodeProgramError(
        `${action} reverted: ${reverted.data?.errorName ?? reverted.reason ?? "unknown"}.`,
        {
          details: `The node is ${NODE_STATUSES[await readStatusCode(clients)] ?? "?"} on-chain.`,
          cause: error,
        },
      );
    throw new NodeProgramError(`Cannot send ${action}.`, {
      details: error instanceof BaseError ? error.shortMessage : String(error),
      cause: error,
    });
  }
  return NODE_STATUSES[await readStatusCode(clients)] ?? "QUIT";
}

function readStatusCode(clients: Pick<NodeChainClients, "publicClient" | "walletClient" | "contracts">) {
  return clients.publicClient.readContract({
    address: clients.contracts.node,
    abi: nodeAbi,
    functionName: "getNodeStatus",
    args: [clients.walletClient.account.address],
  });
}
