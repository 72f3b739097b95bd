import type { CrynuxDeployment } from "@crynux/contracts";
import type { Account, Chain, PublicClient, Transport, WalletClient } from "viem";
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
};

/** Task states of the Task contract, by name (index = the on-chain number). */
export const TASK_STATES = ["none", "queued", "running", "success", "uploaded", "error", "aborted"] as const;
export type TaskStateName = (typeof TASK_STATES)[number];

/** Node statuses of the Node contract, by name (index = the on-chain number). */
export const NODE_STATUSES = ["quit", "available", "busy", "pendingPause", "pendingQuit", "paused"] as const;
export type NodeStatusName = (typeof NODE_STATUSES)[number];

export function taskStateName(state: number): TaskStateName {
  const name = TASK_STATES[state];
  // A state added to the contract later must not be mistaken for a known one.
  if (name === undefined) throw new RangeError(`Unknown task state ${state}.`);
  return name;
}
