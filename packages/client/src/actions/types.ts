import { type CrynuxDeployment, NodeStatus, TaskState } from "@crynux/contracts";
import type { Account, Chain, PublicClient, Transport, WalletClient } from "viem";
import type { HeadSource } from "../chain/heads.js";
import type { RelayClient } from "../relay/client.js";

/**
 * What every action takes as its first argument: the chain clients, the relay client and the contract
 * addresses. `createCrynuxClient` builds one and binds the actions to it; an app that already has viem clients
 * may assemble it by hand.
 */
export type CrynuxBaseClient = {
  publicClient: PublicClient<Transport, Chain | undefined>;
  /** Signs and sends transactions; absent on a read-only client. */
  walletClient?: WalletClient<Transport, Chain | undefined, Account> | undefined;
  relay: RelayClient;
  contracts: CrynuxDeployment;
  /**
   * New-head notifications (`createHeadWatcher` over the RPC's WebSocket): `waitForTask` then looks at the
   * chain as soon as a block comes instead of at its next poll.
   */
  heads?: HeadSource | undefined;
};

/** `PENDING_PAUSE` → `pendingPause`. */
type CamelCase<S extends string> = S extends `${infer Head}_${infer Tail}`
  ? `${Lowercase<Head>}${Capitalize<CamelCase<Tail>>}`
  : Lowercase<S>;
const camelCase = (name: string) =>
  name.toLowerCase().replace(/_([a-z])/g, (_match, letter: string) => letter.toUpperCase());

/** A Task contract state by name (`queued`, `running`, `success`, …), camelCased from `TaskState`. */
export type TaskStateName = CamelCase<keyof typeof TaskState>;
/** Task states of the Task contract, by name (index = the on-chain number; from `TaskState`). */
export const TASK_STATES = Object.keys(TaskState).map(camelCase) as readonly TaskStateName[];

/** A Node contract status by name (`available`, `busy`, `paused`, …), camelCased from `NodeStatus`. */
export type NodeStatusName = CamelCase<keyof typeof NodeStatus>;
/** Node statuses of the Node contract, by name (index = the on-chain number; from `NodeStatus`). */
export const NODE_STATUSES = Object.keys(NodeStatus).map(camelCase) as readonly NodeStatusName[];

/** The name of an on-chain task state number; throws `RangeError` on a number this client does not know. */
export function taskStateName(state: number): TaskStateName {
  const name = TASK_STATES[state];
  // A state added to the contract later must not be mistaken for a known one.
  if (name === undefined) throw new RangeError(`Unknown task state ${state}.`);
  return name;
}
