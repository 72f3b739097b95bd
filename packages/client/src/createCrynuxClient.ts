import type { CrynuxDeployment } from "@crynux/contracts";
import type { GptTaskArgsInput, SdTaskArgsInput } from "@crynux/tasks";
import {
  type Account,
  type Address,
  type Chain,
  createPublicClient,
  createWalletClient,
  type LocalAccount,
  type PublicClient,
  type Transport,
  type WalletClient,
} from "viem";
import { type CancelTaskParameters, type CancelTaskReturnType, cancelTask } from "./actions/cancelTask.js";
import { type CreateTaskParameters, type CreateTaskReturnType, createTask } from "./actions/createTask.js";
import {
  type GetNetworkStatsParameters,
  type GetNetworkStatsReturnType,
  getNetworkStats,
} from "./actions/getNetworkStats.js";
import {
  type GetNodeInfoParameters,
  type GetNodeInfoReturnType,
  getNodeInfo,
} from "./actions/getNodeInfo.js";
import { type GetTaskParameters, type GetTaskReturnType, getTask } from "./actions/getTask.js";
import {
  type GetTaskHistoryParameters,
  type GetTaskHistoryReturnType,
  getTaskHistory,
} from "./actions/getTaskHistory.js";
import {
  type GetTaskResultParameters,
  type GetTaskResultReturnType,
  getTaskResult,
} from "./actions/getTaskResult.js";
import {
  type ListQueuedTasksParameters,
  type ListQueuedTasksReturnType,
  listQueuedTasks,
} from "./actions/listQueuedTasks.js";
import { type RunGptTaskReturnType, runGptTask } from "./actions/runGptTask.js";
import { type RunSdTaskReturnType, runSdTask } from "./actions/runSdTask.js";
import type { RunTaskOptions } from "./actions/runTask.js";
import {
  type SuggestTaskFeeParameters,
  type SuggestTaskFeeReturnType,
  suggestTaskFee,
} from "./actions/suggestTaskFee.js";
import type { CrynuxBaseClient } from "./actions/types.js";
import {
  type UploadTaskArgsParameters,
  type UploadTaskArgsReturnType,
  uploadTaskArgs,
} from "./actions/uploadTaskArgs.js";
import {
  type WaitForTaskParameters,
  type WaitForTaskReturnType,
  waitForTask,
} from "./actions/waitForTask.js";
import type { HeadSource } from "./chain/heads.js";
import { type CreateRelayClientParameters, createRelayClient } from "./relay/client.js";
import type { RelaySigner } from "./relay/signing.js";

/**
 * Options of {@link createCrynuxClient}: chain and transport, the account that pays and signs, the relay URL
 * and the contract addresses.
 */
export type CreateCrynuxClientParameters = {
  /** The chain the contracts are deployed on (e.g. `crynuxDevnet`, or `defineCrynuxChain(...)`). */
  chain?: Chain | undefined;
  /** How to reach the chain: `http(url)` in Node, `custom(window.ethereum)` for a browser wallet. */
  transport: Transport;
  /**
   * Who creates tasks and signs relay requests: a local account (`privateKeyToAccount(key)`), or the address of
   * a JSON-RPC account the transport's wallet holds (a browser wallet: its transactions and EIP-712 relay
   * signatures are then confirmed by the user). Without one the client can only read.
   */
  account?: Account | Address | undefined;
  /** Base URL of the relay. */
  relayUrl: string | URL;
  /** The contract addresses (`deployCrynux` returns them; a deployment file holds them). */
  contracts: CrynuxDeployment;
  /** Options of the relay client (`retry`, `timeoutMs`, `domain`, `fetch`, `pollIntervalMs`). */
  relay?: Omit<CreateRelayClientParameters, "url" | "account"> | undefined;
  /** Block polling interval of the viem clients and default of `waitForTask`, in ms (viem's default: 4 000). */
  pollingInterval?: number | undefined;
  /**
   * New-head notifications, e.g. `createHeadWatcher({ url: "ws://…" })`: `waitForTask` looks at the chain as
   * soon as a block comes, and polls only as a fallback. The caller closes it.
   */
  heads?: HeadSource | undefined;
};

/** A Crynux client: the base clients and every action bound to them. */
export type CrynuxClient = CrynuxBaseClient & {
  publicClient: PublicClient<Transport, Chain | undefined>;
  walletClient: WalletClient<Transport, Chain | undefined, Account> | undefined;
  account: Account | undefined;
  /** Sends `createTask` with the fee (wei) attached; see the `createTask` action. */
  createTask(parameters: CreateTaskParameters): Promise<CreateTaskReturnType>;
  /** Uploads the task's arguments to the relay, signed by the account; see the `uploadTaskArgs` action. */
  uploadTaskArgs(parameters: UploadTaskArgsParameters): Promise<UploadTaskArgsReturnType>;
  /** Follows the task's events until success, error or abort; see the `waitForTask` action. */
  waitForTask(parameters: WaitForTaskParameters): Promise<WaitForTaskReturnType>;
  /**
   * Downloads the result from the relay and checks it against the on-chain result; see the `getTaskResult`
   * action.
   */
  getTaskResult(parameters: GetTaskResultParameters): Promise<GetTaskResultReturnType>;
  /**
   * Cancels a task (queued: by its creator; running: once past a deadline) and refunds the unpaid fee; see
   * the `cancelTask` action.
   */
  cancelTask(parameters: CancelTaskParameters): Promise<CancelTaskReturnType>;
  /** createTask → uploadTaskArgs → waitForTask → getTaskResult for GPT arguments. */
  runGptTask(args: GptTaskArgsInput, options?: RunTaskOptions): Promise<RunGptTaskReturnType>;
  /** createTask → uploadTaskArgs → waitForTask → getTaskResult for SD arguments. */
  runSdTask(args: SdTaskArgsInput, options?: RunTaskOptions): Promise<RunSdTaskReturnType>;
  /** Suggests a fee in wei from the chain's current load; see the `suggestTaskFee` action. */
  suggestTaskFee(parameters: SuggestTaskFeeParameters): Promise<SuggestTaskFeeReturnType>;
  /** Reads a task from the Task contract; see the `getTask` action. */
  getTask(parameters: GetTaskParameters): Promise<GetTaskReturnType>;
  /** Reads the Task contract's events about one task; see the `getTaskHistory` action. */
  getTaskHistory(parameters: GetTaskHistoryParameters): Promise<GetTaskHistoryReturnType>;
  /** Reads the NetworkStats contract's node and task counters; see the `getNetworkStats` action. */
  getNetworkStats(parameters?: GetNetworkStatsParameters): Promise<GetNetworkStatsReturnType>;
  /** Reads one node from the Node contract; see the `getNodeInfo` action. */
  getNodeInfo(parameters: GetNodeInfoParameters): Promise<GetNodeInfoReturnType>;
  /** Lists the queued tasks in dispatch order; see the `listQueuedTasks` action. */
  listQueuedTasks(parameters?: ListQueuedTasksParameters): Promise<ListQueuedTasksReturnType>;
};

/**
 * Creates a client of the Crynux network for an app: a viem public client, a wallet client for the account,
 * a relay client signing as the same account, and the actions bound to them.
 *
 * @example
 * // Node, with a private key:
 * const crynux = createCrynuxClient({
 *   chain: crynuxDevnet,
 *   transport: http("http://127.0.0.1:8545"),
 *   account: privateKeyToAccount(key),
 *   relayUrl: "http://127.0.0.1:8088",
 *   contracts: deployment,
 * });
 * // A browser, with an injected wallet (EIP-1193):
 * const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
 * const crynux = createCrynuxClient({ chain, transport: custom(window.ethereum), account: address, relayUrl, contracts });
 * const { response } = await crynux.runGptTask({ model: "owner/repo:Q4_0", messages: [{ role: "user", content: "Hi" }] });
 */
export function createCrynuxClient(parameters: CreateCrynuxClientParameters): CrynuxClient {
  const { chain, transport, account, pollingInterval } = parameters;
  const common = { chain, transport, ...(pollingInterval === undefined ? {} : { pollingInterval }) };
  const publicClient = createPublicClient(common) as PublicClient<Transport, Chain | undefined>;
  const walletClient =
    account === undefined
      ? undefined
      : (createWalletClient({ ...common, account }) as WalletClient<Transport, Chain | undefined, Account>);
  // A local account signs relay requests itself; a JSON-RPC account signs through the wallet (eth_signTypedData_v4).
  const signer: RelaySigner | undefined =
    walletClient === undefined
      ? undefined
      : walletClient.account.type === "local"
        ? (walletClient.account as LocalAccount)
        : walletClient;
  const relay = createRelayClient({ ...parameters.relay, url: parameters.relayUrl, account: signer });
  const base: CrynuxBaseClient = {
    publicClient,
    walletClient,
    relay,
    contracts: parameters.contracts,
    ...(parameters.heads ? { heads: parameters.heads } : {}),
  };
  return {
    ...base,
    publicClient,
    walletClient,
    account: walletClient?.account,
    createTask: (p) => createTask(base, p),
    uploadTaskArgs: (p) => uploadTaskArgs(base, p),
    waitForTask: (p) => waitForTask(base, p),
    getTaskResult: (p) => getTaskResult(base, p),
    cancelTask: (p) => cancelTask(base, p),
    runGptTask: (args, options = {}) => runGptTask(base, { ...options, args }),
    runSdTask: (args, options = {}) => runSdTask(base, { ...options, args }),
    suggestTaskFee: (p) => suggestTaskFee(base, p),
    getTask: (p) => getTask(base, p),
    getTaskHistory: (p) => getTaskHistory(base, p),
    getNetworkStats: (p) => getNetworkStats(base, p),
    getNodeInfo: (p) => getNodeInfo(base, p),
    listQueuedTasks: (p) => listQueuedTasks(base, p),
  };
}
