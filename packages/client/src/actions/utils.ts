import { withSelectionGasMargin } from "@crynux/contracts";
import { type Abi, BaseError, ContractFunctionRevertedError, type Hex, type TransactionReceipt } from "viem";
import { estimateContractGas } from "viem/actions";
import { waitForReceipt } from "../chain/receipt.js";
import { AccountRequiredError, TaskContractError } from "../errors.js";
import type { CrynuxBaseClient } from "./types.js";

/** The wallet client of a write action, or a typed error naming the action. */
export function requireWallet(
  client: CrynuxBaseClient,
  action: string,
): NonNullable<CrynuxBaseClient["walletClient"]> {
  const wallet = client.walletClient;
  if (!wallet?.account) throw new AccountRequiredError(action);
  return wallet;
}

/**
 * Estimates (which runs the call, so a refusal surfaces before anything is signed), adds the selection
 * margin — every Task call may start a task and so draw nodes, whose gas depends on `block.prevrandao` —
 * sends, and waits for the receipt.
 */
export async function sendTaskContractCall(
  client: CrynuxBaseClient,
  parameters: {
    action: string;
    address: `0x${string}`;
    abi: Abi;
    functionName: string;
    args: readonly unknown[];
    value?: bigint | undefined;
  },
): Promise<TransactionReceipt> {
  const wallet = requireWallet(client, parameters.action);
  const { address, abi, functionName, args, value } = parameters;
  const request = { address, abi, functionName, args, account: wallet.account, value } as never;
  let gas: bigint;
  try {
    gas = await estimateContractGas(client.publicClient, request);
  } catch (cause) {
    const errorName = revertName(cause);
    throw new TaskContractError(
      `${functionName} would be refused by the contract${errorName ? `: ${errorName}` : ""}.`,
      { functionName, errorName, cause, details: shortMessageOf(cause) },
    );
  }
  let hash: Hex;
  try {
    hash = await wallet.writeContract({
      ...(request as object),
      chain: wallet.chain,
      gas: withSelectionGasMargin(gas),
    } as never);
  } catch (cause) {
    throw new TaskContractError(`Could not send ${functionName}.`, {
      functionName,
      errorName: revertName(cause),
      cause,
      details: shortMessageOf(cause),
    });
  }
  const receipt = await waitForReceipt(client.publicClient, { hash, heads: client.heads });
  if (receipt.status !== "success")
    throw new TaskContractError(`The ${functionName} transaction reverted.`, {
      functionName,
      transactionHash: hash,
    });
  return receipt;
}

function revertName(error: unknown): string | undefined {
  if (!(error instanceof BaseError)) return undefined;
  const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError);
  return reverted instanceof ContractFunctionRevertedError ? reverted.data?.errorName : undefined;
}

function shortMessageOf(error: unknown): string | undefined {
  if (error instanceof BaseError) return error.shortMessage;
  return error instanceof Error ? error.message : undefined;
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    function onAbort() {
      clearTimeout(timer);
      reject(signal!.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
