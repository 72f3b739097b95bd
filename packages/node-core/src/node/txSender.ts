import { type HeadSource, waitForReceipt as waitForChainReceipt } from "@crynux/client";
import { nodeAbi, qosAbi, taskAbi, withSelectionGasMargin } from "@crynux/contracts";
import {
  type Abi,
  type Account,
  type Address,
  BaseError,
  type Chain,
  ContractFunctionRevertedError,
  Eip1559FeesNotSupportedError,
  encodeFunctionData,
  type Hex,
  InsufficientFundsError,
  keccak256,
  NonceTooHighError,
  NonceTooLowError,
  type PublicClient,
  TransactionNotFoundError,
  type TransactionReceipt,
  type Transport,
  type WalletClient,
} from "viem";
import { NodeStoppedError, TxRevertedError, TxSendError } from "./errors.js";

/** What {@link createTxSender} takes. */
export type CreateTxSenderParameters = {
  /** Signs and pays; a local account (private key) lets the sender know the hash before broadcasting. */
  walletClient: WalletClient<Transport, Chain | undefined, Account>;
  publicClient: PublicClient;
  /** Error fragments to decode reverts with besides the called ABI's (default: Task, Node and QOS errors). */
  errorAbi?: Abi;
  /** Attempts on RPC / network errors before giving up (default 6). */
  maxAttempts?: number;
  /** First backoff delay in ms, doubled per attempt (default 500, at most 15 000). */
  backoffMs?: number;
  /** How long to wait for a receipt, in ms (default 120 000). */
  receiptTimeoutMs?: number;
  /**
   * How long fee estimates are reused, in ms (default 3 000; 0 asks for every transaction). A reused
   * EIP-1559 estimate allows twice the base fee it was taken at (only the base fee and the tip are charged);
   * a failed send drops it.
   */
  feeCacheMs?: number;
  /** Called for each retry (logging). */
  onRetry?: (info: { functionName: string; attempt: number; error: unknown }) => void;
  /** New-head notifications: a receipt is asked for as soon as a block comes, not at the next poll. */
  heads?: HeadSource | undefined;
};

/** A contract call to send: address, ABI, function and arguments, the value in wei and a least gas limit. */
export type SendTransactionParameters = {
  address: Address;
  abi: Abi;
  functionName: string;
  args?: readonly unknown[];
  value?: bigint;
  /**
   * Least gas limit to send with. For calls whose cost depends on what lands before them in the same
   * block (the second disclosure settles the task, pays, frees nodes and may start a queued task, while
   * the first only records): the estimate is taken on the state before them.
   */
  minGas?: bigint;
  /** Called with the hash before the transaction is broadcast (local accounts) or right after: persist it. */
  onHash?: (hash: Hex) => Promise<void> | void;
  /**
   * Called once the RPC accepted the transaction, before its receipt is awaited (observability: a crash
   * right after it leaves a transaction the restarted node must find by its stored hash). What it throws
   * is ignored.
   */
  onSent?: (hash: Hex) => void;
  /** Aborts waiting (the transaction may still land; its hash was given to `onHash`). */
  signal?: AbortSignal;
};

/** A mined transaction: its hash and successful receipt. */
export type SentTransaction = { hash: Hex; receipt: TransactionReceipt };

/** Sends a node's transactions one at a time with locally managed nonces (see {@link createTxSender}). */
export type TxSender = {
  readonly address: Address;
  /**
   * Simulates (a revert throws {@link TxRevertedError} with the contract's error name, nothing is sent),
   * estimates gas plus the selection margin, signs with the next local nonce, broadcasts and waits for the
   * receipt. One transaction of the account is in flight at a time; RPC errors are retried with backoff.
   */
  send(parameters: SendTransactionParameters): Promise<SentTransaction>;
  /** Waits for a transaction sent earlier (e.g. before a restart); `undefined` when the chain does not know it. */
  waitForKnown(hash: Hex, signal?: AbortSignal): Promise<TransactionReceipt | undefined>;
};

/** How often a transaction waiting for its receipt is checked for being still known to the chain. */
const DROP_CHECK_MS = 3_000;

const DEFAULT_ERROR_ABI = [...taskAbi, ...nodeAbi, ...qosAbi].filter((item) => item.type === "error") as Abi;

/** Creates the node's transaction sender: see {@link TxSender.send}. */
export function createTxSender(parameters: CreateTxSenderParameters): TxSender {
  const { walletClient, publicClient } = parameters;
  const account = walletClient.account;
  const errorAbi = parameters.errorAbi ?? DEFAULT_ERROR_ABI;
  const maxAttempts = parameters.maxAttempts ?? 6;
  const backoffMs = parameters.backoffMs ?? 500;
  const receiptTimeoutMs = parameters.receiptTimeoutMs ?? 120_000;
  const feeCacheMs = parameters.feeCacheMs ?? 3_000;
  let nextNonce: number | undefined;
  let queue: Promise<unknown> = Promise.resolve();

  const serialize = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work);
    queue = run.catch(() => {});
    return run;
  };

  let cachedChainId: Promise<number> | undefined;
  function chainId(): Promise<number> {
    cachedChainId ??= (
      walletClient.chain ? Promise.resolve(walletClient.chain.id) : publicClient.getChainId()
    ).catch((error: unknown) => {
      cachedChainId = undefined;
      throw error;
    });
    return cachedChainId;
  }

  type Fees =
    | { type: "eip1559"; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint }
    | { type: "legacy"; gasPrice: bigint };
  let feeCache: { fees: Promise<Fees>; at: number } | undefined;

  /** The fees of the next transaction: reused for `feeCacheMs` (two round trips saved per transaction). */
  function transactionFees(): Promise<Fees> {
    const now = Date.now();
    if (feeCache && now - feeCache.at < feeCacheMs) return feeCache.fees;
    const fees = estimateFees();
    const entry = { fees, at: now };
    feeCache = entry;
    fees.catch(() => {
      if (feeCache === entry) feeCache = undefined;
    });
    return fees;
  }

  /** EIP-1559 fees from the latest block, or a legacy gas price on a chain without a base fee. */
  async function estimateFees(): Promise<Fees> {
    const estimate = publicClient.estimateFeesPerGas as (parameters: {
      type: "eip1559" | "legacy";
    }) => Promise<{ maxFeePerGas?: bigint; maxPriorityFeePerGas?: bigint; gasPrice?: bigint }>;
    try {
      const { maxFeePerGas, maxPriorityFeePerGas } = await estimate({ type: "eip1559" });
      if (maxFeePerGas !== undefined && maxPriorityFeePerGas !== undefined)
        // viem allows 1.2 × the base fee; 2 × lets the estimate be reused while the base fee climbs.
        return {
          type: "eip1559",
          maxFeePerGas: maxPriorityFeePerGas + ((maxFeePerGas - maxPriorityFeePerGas) * 5n) / 3n,
          maxPriorityFeePerGas,
        };
    } catch (error) {
      if (!hasCause(error, Eip1559FeesNotSupportedError)) throw error;
    }
    const { gasPrice } = await estimate({ type: "legacy" });
    if (gasPrice === undefined) throw new TxSendError("The RPC gave no gas price.");
    return { type: "legacy", gasPrice };
  }

  async function sendOnce(p: SendTransactionParameters, fullAbi: Abi): Promise<SentTransaction> {
    const call = {
      account,
      address: p.address,
      abi: fullAbi,
      functionName: p.functionName,
      args: p.args ?? [],
      ...(p.value !== undefined ? { value: p.value } : {}),
    } as never;
    // The gas estimate executes the call, so a revert surfaces here with the contract's error (no separate
    // simulation). The estimate, the pending nonce and (local accounts) the fees are independent: one round
    // trip for the three.
    const local = account.type === "local";
    const [estimated, onChain, fees] = await Promise.all([
      publicClient.estimateContractGas(call).catch((error: unknown) => {
        throw asRevert(error, p.functionName) ?? error;
      }),
      publicClient.getTransactionCount({ address: account.address, blockTag: "pending" }),
      local ? transactionFees() : undefined,
      local ? chainId() : undefined,
    ]);
    let gas = withSelectionGasMargin(estimated);
    if (p.minGas !== undefined && gas < p.minGas) gas = p.minGas;
    let nonce = nextNonce ?? onChain;
    // A reorg drops mined transactions of ours, and they do not come back to the pool: the chain's count is
    // then below the local one, and a transaction sent with the local nonce would wait behind the gap (no
    // error, no receipt) until the receipt timeout.
    if (onChain < nonce) nonce = onChain;
    const data = encodeFunctionData({
      abi: fullAbi,
      functionName: p.functionName,
      args: p.args ?? [],
    } as never);
    let hash: Hex;
    if (account.type === "local" && fees) {
      // Signed here with every field known: no fill-in round trips to the RPC.
      const serialized = await account.signTransaction({
        chainId: await chainId(),
        to: p.address,
        data,
        gas,
        nonce,
        ...(p.value !== undefined ? { value: p.value } : {}),
        ...fees,
      } as never);
      hash = keccak256(serialized);
      // Persisted before it can land: after a crash the node looks this hash up instead of guessing.
      await p.onHash?.(hash);
      try {
        await publicClient.sendRawTransaction({ serializedTransaction: serialized });
      } catch (error) {
        if (!/already known|known transaction/i.test(errorText(error))) throw error;
      }
    } else {
      hash = await walletClient.writeContract({
        ...(call as object),
        chain: walletClient.chain,
        gas,
        nonce,
      } as never);
      await p.onHash?.(hash);
    }
    nextNonce = nonce + 1;
    try {
      p.onSent?.(hash);
    } catch {
      // An observer's failure must not make a broadcast transaction look failed: it would be sent again.
    }
    // Usually mined by now on a fast chain: waitForReceipt asks at once, then on new heads or polls.
    const receipt = await waitUnlessDropped(hash, p.signal);
    if (receipt.status !== "success") {
      // Replay it on the current state to learn the contract's reason (usually the same one).
      let revert: TxRevertedError | undefined;
      try {
        await publicClient.simulateContract(call);
      } catch (error) {
        revert = asRevert(error, p.functionName, hash);
      }
      throw revert ?? new TxRevertedError({ functionName: p.functionName, errorName: undefined, hash });
    }
    return { hash, receipt };
  }

  /**
   * Waits for the receipt, but gives up early when the chain no longer knows the transaction at all, neither
   * mined nor pending (twice, `DROP_CHECK_MS` apart): a reorg dropped it on a chain that does not put it back
   * in the pool, or the pool evicted it. The send is then retried with the chain's nonce, instead of waiting
   * out the receipt timeout.
   */
  async function waitUnlessDropped(hash: Hex, signal: AbortSignal | undefined): Promise<TransactionReceipt> {
    const done = new AbortController();
    const watch = signal ? AbortSignal.any([signal, done.signal]) : done.signal;
    const dropped = (async (): Promise<never> => {
      let misses = 0;
      for (;;) {
        await sleep(DROP_CHECK_MS, watch).catch(() => {});
        if (watch.aborted) return new Promise<never>(() => {});
        const known = await publicClient.getTransaction({ hash }).then(
          () => true,
          (error: unknown) => !hasCause(error, TransactionNotFoundError),
        );
        misses = known ? 0 : misses + 1;
        if (misses >= 2) throw new TxSendError(`The chain dropped transaction ${hash}: it is sent again.`);
      }
    })();
    dropped.catch(() => {}); // settled after the race at most: nobody else listens
    try {
      return await Promise.race([waitForReceipt(hash, signal), dropped]);
    } finally {
      done.abort();
    }
  }

  async function waitForReceipt(hash: Hex, signal: AbortSignal | undefined): Promise<TransactionReceipt> {
    try {
      return await waitForChainReceipt(publicClient, {
        hash,
        heads: parameters.heads,
        timeoutMs: receiptTimeoutMs,
        signal,
      });
    } catch (error) {
      if (signal?.aborted) throw new NodeStoppedError();
      throw error;
    }
  }

  return {
    address: account.address,
    send(p) {
      const fullAbi = [...p.abi, ...errorAbi] as Abi;
      return serialize(async () => {
        let lastError: unknown;
        for (let attempt = 1; attempt <= maxAttempts; attempt++) {
          if (p.signal?.aborted) throw new NodeStoppedError();
          try {
            return await sendOnce(p, fullAbi);
          } catch (error) {
            if (error instanceof TxRevertedError || error instanceof NodeStoppedError) throw error;
            if (hasCause(error, InsufficientFundsError))
              throw new TxSendError(`${p.functionName}: the node's account cannot pay for gas.`, {
                cause: error,
              });
            lastError = error;
            // Whatever failed, the pending nonce and the fees are asked again: the transaction may or may
            // not be in, and a fee below the base fee fails too.
            nextNonce = undefined;
            feeCache = undefined;
            const nonceProblem =
              hasCause(error, NonceTooLowError) ||
              hasCause(error, NonceTooHighError) ||
              /nonce too low|nonce too high|invalid nonce|replacement transaction underpriced|already known/i.test(
                errorText(error),
              );
            parameters.onRetry?.({ functionName: p.functionName, attempt, error });
            if (!nonceProblem)
              await sleep(Math.min(backoffMs * 2 ** (attempt - 1), 15_000), p.signal).catch(() => {});
          }
        }
        throw new TxSendError(`${p.functionName} could not be sent after ${maxAttempts} attempts.`, {
          cause: lastError,
          details: errorText(lastError).slice(0, 500),
        });
      });
    },
    async waitForKnown(hash, signal) {
      try {
        await publicClient.getTransaction({ hash });
      } catch {
        return undefined;
      }
      return waitForReceipt(hash, signal);
    },
  };
}

function asRevert(error: unknown, functionName: string, hash?: Hex): TxRevertedError | undefined {
  if (!(error instanceof BaseError)) return undefined;
  const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError);
  if (!(reverted instanceof ContractFunctionRevertedError)) return undefined;
  const errorName = reverted.data?.errorName ?? (reverted.reason !== undefined ? "Error" : undefined);
  const errorArgs = reverted.data?.args ?? (reverted.reason !== undefined ? [reverted.reason] : []);
  return new TxRevertedError({ functionName, errorName, errorArgs, hash, cause: error });
}

function hasCause(error: unknown, type: new (...args: never[]) => Error): boolean {
  return error instanceof BaseError
    ? error.walk((e) => e instanceof type) instanceof type
    : error instanceof type;
}

function errorText(error: unknown): string {
  if (error instanceof BaseError) return `${error.shortMessage} ${error.details ?? ""}`;
  return error instanceof Error ? error.message : String(error);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new NodeStoppedError());
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new NodeStoppedError());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
