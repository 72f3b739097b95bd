import { type Chain, createPublicClient, webSocket } from "viem";
import { z } from "zod";
import { ClientError } from "../errors.js";

/**
 * Tells its listeners that the chain has a new head block, so that they look at the chain now instead of at
 * their next poll. Listeners get no data: they read what they need themselves, so a missed or doubled
 * notification costs at most a poll interval or one idle poll.
 */
export type HeadSource = {
  /** Calls `onHead` on every new head until the returned function is called. */
  subscribe(onHead: () => void): () => void;
};

/** What {@link createHeadWatcher} takes. */
export type CreateHeadWatcherParameters = {
  /** The node's WebSocket endpoint (`ws://` or `wss://`; anvil serves it on its HTTP port). */
  url: string;
  /** The chain, when known (only its id is used, for viem's checks). */
  chain?: Chain | undefined;
  /**
   * Subscription failures (the endpoint refuses `eth_subscribe`, the connection dropped and could not be
   * re-established). Listeners are then only served by their own polls. Default: `console.error`.
   */
  onError?: ((error: unknown) => void) | undefined;
};

/** A {@link HeadSource} with a connection to close. */
export type HeadWatcher = HeadSource & {
  /** Ends the subscription and the connection; listeners are not called any more. */
  close(): void;
};

/** The head watcher's URL or its subscription was refused. */
export class HeadWatcherError extends ClientError {
  override name = "HeadWatcherError";
}

const urlSchema = z.url({ protocol: /^wss?$/, error: "must be a ws(s) URL" });

/**
 * Follows new heads over a WebSocket (`eth_subscribe("newHeads")`) and fans them out to any number of
 * listeners — {@link followLogs} loops, task waits — with one connection. Pushed heads take the polling out of
 * the latency of every chain step; the listeners keep polling (at a slower interval) in case the connection
 * drops. The connection is opened with the first listener and reconnects on its own (viem's WebSocket
 * transport).
 *
 * @throws {HeadWatcherError} when `url` is not a ws(s) URL.
 * @example
 * const heads = createHeadWatcher({ url: "ws://127.0.0.1:8545" });
 * const follower = followLogs({ ...parameters, heads, pollingIntervalMs: 2000 });
 * follower.start();
 * // ...
 * await follower.stop();
 * heads.close();
 */
export function createHeadWatcher(parameters: CreateHeadWatcherParameters): HeadWatcher {
  const parsed = urlSchema.safeParse(parameters.url);
  if (!parsed.success)
    throw new HeadWatcherError("Invalid head watcher URL", {
      details: `url: ${z.prettifyError(parsed.error)}`,
    });
  const report =
    parameters.onError ??
    ((error: unknown) => {
      console.error(error);
    });
  const listeners = new Set<() => void>();
  const url = parsed.data;
  let subscription: Promise<(() => Promise<unknown>) | undefined> | undefined;
  let closed = false;
  // Reconnects (viem's WebSocket transport) re-subscribe on their own.
  const client = createPublicClient({
    ...(parameters.chain ? { chain: parameters.chain } : {}),
    transport: webSocket(url, {
      keepAlive: { interval: 30_000 },
      reconnect: { attempts: 1_000, delay: 1_000 },
    }),
  });

  function notify() {
    for (const listener of [...listeners]) {
      try {
        listener();
      } catch (error) {
        report(error);
      }
    }
  }

  function connect() {
    if (subscription || closed) return;
    sockets.set(url, (sockets.get(url) ?? 0) + 1);
    const onError = (error: unknown) =>
      report(new HeadWatcherError("The newHeads subscription failed", { cause: error }));
    subscription = client.transport.subscribe({ params: ["newHeads"], onData: notify, onError }).then(
      ({ unsubscribe }: { unsubscribe: () => Promise<unknown> }) => unsubscribe,
      (error: unknown) => {
        onError(error);
        return undefined;
      },
    );
  }

  return {
    subscribe(onHead) {
      if (closed) return () => {};
      listeners.add(onHead);
      connect();
      return () => {
        listeners.delete(onHead);
      };
    },
    close() {
      if (closed) return;
      closed = true;
      listeners.clear();
      if (!subscription) return;
      void subscription.then(async (unsubscribe) => {
        await unsubscribe?.().catch(() => {});
        // viem keeps one socket per URL for every client in the process: the last watcher closes it.
        const left = (sockets.get(url) ?? 1) - 1;
        if (left > 0) return void sockets.set(url, left);
        sockets.delete(url);
        const rpc = await client.transport.getRpcClient().catch(() => undefined);
        rpc?.close();
      });
    },
  };
}

/** Open head watchers per WebSocket URL (viem shares one socket per URL and options in a process). */
const sockets = new Map<string, number>();
