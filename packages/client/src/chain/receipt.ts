import type { Client, Hex, TransactionReceipt } from "viem";
import { getTransactionReceipt, waitForTransactionReceipt } from "viem/actions";
import type { HeadSource } from "./heads.js";

/** What {@link waitForReceipt} takes. */
export type WaitForReceiptParameters = {
  hash: Hex;
  /** New-head notifications: the receipt is asked for as soon as a block comes. */
  heads?: HeadSource | undefined;
  /** Gives up after this many ms (viem's `WaitForTransactionReceiptTimeoutError`); default: viem's (180 s). */
  timeoutMs?: number | undefined;
  /** Rejects with the signal's reason when it aborts. */
  signal?: AbortSignal | undefined;
};

/**
 * The receipt of a sent transaction, as soon as the chain has it: asked for at once (a chain that mines on
 * arrival usually has it already), then on every new head when `heads` is given, and by viem's
 * `waitForTransactionReceipt` polling at the client's `pollingInterval` in any case (the fallback when no head
 * comes).
 */
export async function waitForReceipt(
  client: Client,
  parameters: WaitForReceiptParameters,
): Promise<TransactionReceipt> {
  const { hash, heads, timeoutMs, signal } = parameters;
  if (signal?.aborted) throw signal.reason;
  const lookup = () => getTransactionReceipt(client, { hash }).catch(() => undefined);
  const first = await lookup();
  if (first) return first;
  if (signal?.aborted) throw signal.reason;

  return new Promise<TransactionReceipt>((resolve, reject) => {
    let settled = false;
    let unsubscribe: (() => void) | undefined;
    const onAbort = () => settle(() => reject(signal!.reason));
    function settle(done: () => void) {
      if (settled) return;
      settled = true;
      unsubscribe?.();
      signal?.removeEventListener("abort", onAbort);
      done();
    }
    waitForTransactionReceipt(client, {
      hash,
      ...(timeoutMs !== undefined ? { timeout: timeoutMs } : {}),
    }).then(
      (receipt) => settle(() => resolve(receipt)),
      (error: unknown) => settle(() => reject(error)),
    );
    // One lookup at a time; heads that come during one make it look once more.
    let looking = false;
    let again = false;
    const check = async () => {
      if (looking) {
        again = true;
        return;
      }
      looking = true;
      try {
        do {
          again = false;
          const receipt = await lookup();
          if (receipt) return settle(() => resolve(receipt));
        } while (again && !settled);
      } finally {
        looking = false;
      }
    };
    unsubscribe = heads?.subscribe(() => {
      if (!settled) void check();
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
