import type { AddressInfo } from "node:net";
import { type CrynuxClient, createCrynuxClient, createHeadWatcher } from "@crynux/client";
import { defineCrynuxChain } from "@crynux/contracts";
import { serve } from "@hono/node-server";
import { createPublicClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { createBridgeApp } from "./app.js";
import { type BridgeConfig, type BridgeConfigInput, IN_MEMORY, resolveBridgeConfig } from "./config.js";
import { BridgeConfigError } from "./errors.js";
import { type BridgeStore, openBridgeStore } from "./store.js";
import { createTaskRunner, type TaskRunner } from "./tasks.js";

export type RunningBridge = {
  /** `http://host:port` the bridge listens on; OpenAI clients take `url + "/v1"` as their base URL. */
  url: string;
  port: number;
  config: BridgeConfig;
  /** The application wallet's client. */
  client: CrynuxClient;
  store: BridgeStore;
  runner: TaskRunner;
  /**
   * Stops: closes every connection (requests waiting for a task get no answer and retry with their
   * Idempotency-Key), stops following tasks and closes the database. Paid tasks are resumed by the next start.
   */
  stop(): Promise<void>;
};

export type StartBridgeOptions = {
  /** Errors the bridge retries on its own (relay or RPC unreachable); console.error by default. */
  onTaskError?: (error: unknown) => void;
  /** Unexpected errors answered with 500; console.error by default. */
  onInternalError?: (error: unknown) => void;
};

/**
 * Starts a bridge: opens the task records (PGlite), resumes the paid tasks a previous run left unfinished
 * and serves the HTTP API, paying tasks from the configured wallet.
 */
export async function startBridge(
  input: BridgeConfigInput | BridgeConfig,
  options: StartBridgeOptions = {},
): Promise<RunningBridge> {
  const config = await resolveBridgeConfig(input);
  const probe = createPublicClient({ transport: http(config.rpcUrl) });
  let chainId: number;
  try {
    chainId = await probe.getChainId();
  } catch (cause) {
    throw new BridgeConfigError(`Cannot reach the chain RPC at ${config.rpcUrl}.`, { cause });
  }
  if (config.chainId !== undefined && config.chainId !== chainId)
    throw new BridgeConfigError(
      `The RPC serves chain ${chainId}, but the configuration says ${config.chainId}.`,
    );

  const account = privateKeyToAccount(config.privateKey);
  const heads = config.webSocketUrl
    ? createHeadWatcher({
        url: config.webSocketUrl,
        onError:
          options.onTaskError ?? ((error) => console.error("bridge: newHeads subscription", error.message)),
      })
    : undefined;
  const client = createCrynuxClient({
    heads,
    chain: defineCrynuxChain({ id: chainId, name: `Crynux ${chainId}`, rpcUrl: config.rpcUrl }),
    transport: http(config.rpcUrl),
    account,
    relayUrl: config.relayUrl,
    contracts: config.contracts,
    pollingInterval: config.pollingIntervalMs,
    relay: { pollIntervalMs: Math.min(1000, config.pollingIntervalMs) },
  });
  const store = await openBridgeStore(config.dataDir === IN_MEMORY ? {} : { dataDir: config.dataDir });
  const runner = createTaskRunner({
    client,
    store,
    wallet: account.address,
    pollingIntervalMs: config.pollingIntervalMs,
    taskTimeoutMs: config.taskTimeoutMs,
    relayWaitMs: config.relayWaitMs,
    onError: options.onTaskError,
  });
  const app = createBridgeApp({
    config,
    client,
    store,
    runner,
    wallet: account.address,
    onInternalError: options.onInternalError,
  });

  let server: ReturnType<typeof serve>;
  try {
    await runner.resume();
    server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s));
      s.once("error", reject);
    });
  } catch (error) {
    await runner.stop();
    heads?.close();
    await store.close();
    throw error;
  }
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;

  let stopping: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    config,
    client,
    store,
    runner,
    stop() {
      stopping ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        // Requests may wait minutes for a task: they are cut rather than awaited; their task goes on.
        if ("closeAllConnections" in server) server.closeAllConnections();
        await closed;
        await runner.stop();
        heads?.close();
        await store.close();
      })();
      return stopping;
    },
  };
}
