import { WebSocket } from "isows";
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
  /**
   * Connection failures (refused, dropped, `eth_subscribe` refused), each followed by a reconnection after
   * `reconnectDelayMs` (doubling per failure in a row, up to `maxReconnectDelayMs`). Listeners are served by
   * their own polls meanwhile. Default: `console.error`.
   */
  onError?: ((error: HeadWatcherError) => void) | undefined;
  /** First delay before reconnecting, in ms (default 1 000). */
  reconnectDelayMs?: number | undefined;
  /** Longest delay between reconnection attempts, in ms (default 30 000). */
  maxReconnectDelayMs?: number | undefined;
};

/** A {@link HeadSource} with a connection to close. */
export type HeadWatcher = HeadSource & {
  /** Whether the `newHeads` subscription is live now. */
  readonly connected: boolean;
  /** Ends the subscription and the connection at once, whatever state they are in; listeners are not called any more. */
  close(): void;
};

/** The head watcher's URL was refused, or its connection or subscription failed. */
export class HeadWatcherError extends ClientError {
  override name = "HeadWatcherError";
}

/** A `ws://` or `wss://` URL: what {@link createHeadWatcher} takes (services use it for their config field). */
export const webSocketUrlSchema = z.url({ protocol: /^wss?$/, error: "must be a ws(s) URL" });
const SUBSCRIBE_ID = 1;

/**
 * Follows new heads over a WebSocket (`eth_subscribe("newHeads")`) and fans them out to any number of
 * listeners — {@link followLogs} loops, task waits — with one connection. Pushed heads take the polling out of
 * the latency of every chain step; the listeners keep polling (at a slower interval) in case the connection
 * drops. The connection opens with the first listener and stays open until `close()`; when it drops it is
 * opened again (with backoff), and the listeners are called once it is back, since heads may have come
 * meanwhile. Works in Node.js (the `ws` package) and in browsers (the native WebSocket).
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
  const parsed = webSocketUrlSchema.safeParse(parameters.url);
  if (!parsed.success)
    throw new HeadWatcherError("Invalid head watcher URL", {
      details: `url: ${z.prettifyError(parsed.error)}`,
    });
  const url = parsed.data;
  const report =
    parameters.onError ??
    ((error: HeadWatcherError) => {
      console.error(error);
    });
  const firstDelay = parameters.reconnectDelayMs ?? 1000;
  const maxDelay = parameters.maxReconnectDelayMs ?? 30_000;
  const listeners = new Set<() => void>();
  let socket: WebSocket | undefined;
  let subscribed = false;
  let reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  let failuresInARow = 0;
  let closed = false;

  function notify() {
    for (const listener of [...listeners]) {
      try {
        listener();
      } catch (error) {
        report(new HeadWatcherError("A head listener threw", { cause: error }));
      }
    }
  }

  function end(ws: WebSocket) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    // ws's error event must keep a listener: an abort while connecting emits one.
    ws.onerror = () => {};
    const terminate = (ws as { terminate?: () => void }).terminate;
    try {
      if (terminate) terminate.call(ws);
      else ws.close();
    } catch {}
  }

  /** The connection failed or dropped: report it once, then try again later. */
  function fail(ws: WebSocket, error: HeadWatcherError) {
    if (socket !== ws) return;
    socket = undefined;
    subscribed = false;
    end(ws);
    if (closed) return;
    report(error);
    const delay = Math.min(firstDelay * 2 ** failuresInARow, maxDelay);
    failuresInARow++;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      connect();
    }, delay);
  }

  function connect() {
    if (closed || socket || reconnectTimer) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch (cause) {
      closed = true;
      report(new HeadWatcherError(`Cannot open a WebSocket to ${url}`, { cause }));
      return;
    }
    socket = ws;
    ws.onopen = () => {
      ws.send(
        JSON.stringify({ jsonrpc: "2.0", id: SUBSCRIBE_ID, method: "eth_subscribe", params: ["newHeads"] }),
      );
    };
    ws.onmessage = (event) => {
      let message: { id?: unknown; method?: unknown; error?: { message?: unknown } };
      try {
        const data = event.data;
        message = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data as ArrayBuffer));
      } catch {
        return;
      }
      if (message.method === "eth_subscription") return notify();
      if (message.id !== SUBSCRIBE_ID) return;
      if (message.error)
        return fail(
          ws,
          new HeadWatcherError(`${url} refused eth_subscribe("newHeads")`, {
            details: String(message.error.message ?? JSON.stringify(message.error)),
          }),
        );
      subscribed = true;
      failuresInARow = 0;
      // Heads may have come while the connection was down (or being set up): listeners look once.
      notify();
    };
    ws.onerror = () => {
      // A close event follows, with the code.
    };
    ws.onclose = (event) =>
      fail(
        ws,
        new HeadWatcherError(`The WebSocket connection to ${url} closed`, {
          details: `code ${event.code}${event.reason ? `, ${event.reason}` : ""}; reconnecting`,
        }),
      );
  }

  return {
    get connected() {
      return subscribed;
    },
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
      if (reconnectTimer) clearTimeout(reconnectTimer);
      reconnectTimer = undefined;
      subscribed = false;
      if (socket) end(socket);
      socket = undefined;
    },
  };
}
