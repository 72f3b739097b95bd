import type { AddressInfo } from "node:net";
import { createHeadWatcher } from "@crynux/client";
import { serve } from "@hono/node-server";
import { createPublicClient, http, type PublicClient } from "viem";
import { createRelayApp, type IndexerStatus } from "./app.js";
import {
  IN_MEMORY,
  type RelayConfig,
  RelayConfigError,
  type RelayConfigInput,
  resolveRelayConfig,
} from "./config.js";
import { RelayError } from "./errors.js";
import { createTaskIndexer, type TaskIndexer } from "./indexer.js";
import { openBlobStore } from "./store/blobs.js";
import { cachedStore } from "./store/cache.js";
import { openPgliteStore } from "./store/pglite.js";
import { openPostgresStore } from "./store/postgres.js";
import type { BlobStore, RelayStore } from "./store/types.js";

export type RunningRelay = {
  /** `http://host:port` the relay listens on. */
  url: string;
  port: number;
  config: RelayConfig;
  store: RelayStore;
  blobs: BlobStore;
  indexer: TaskIndexer;
  /** Stops accepting connections, stops the indexer (after its batch in flight) and closes the database. */
  stop(): Promise<void>;
};

export type StartRelayOptions = {
  /** Errors of the indexer loop (RPC down, …); it retries on its own. console.error by default. */
  onIndexerError?: (error: unknown) => void;
  /** Unexpected errors answered with 500; console.error by default. */
  onInternalError?: (error: unknown) => void;
};

/**
 * Starts a relay: opens the database (embedded PGlite, or PostgreSQL with `databaseUrl`) and the blob
 * directory, starts indexing the Task contract's events and serves the HTTP API.
 */
export async function startRelay(
  input: RelayConfigInput,
  options: StartRelayOptions = {},
): Promise<RunningRelay> {
  const config = await resolveRelayConfig(input);
  const taskContract = config.taskContract;
  if (!taskContract)
    throw new RelayConfigError("No Task contract address: set taskContract or deploymentFile.");

  const client = createPublicClient({ transport: http(config.rpcUrl) }) as PublicClient;
  let chainId: number;
  try {
    chainId = await client.getChainId();
  } catch (cause) {
    throw new RelayConfigError(`Cannot reach the chain RPC at ${config.rpcUrl}.`, { cause });
  }
  if (config.chainId !== undefined && config.chainId !== chainId) {
    throw new RelayConfigError(
      `The RPC serves chain ${chainId}, but the configuration says ${config.chainId}.`,
    );
  }

  const blobs = await openBlobStore(config.blobDir);
  const store = cachedStore(
    config.databaseUrl
      ? await openPostgresStore({ connectionString: config.databaseUrl })
      : await openPgliteStore(config.dataDir === IN_MEMORY ? {} : { dataDir: config.dataDir }),
  );

  const onIndexerError = options.onIndexerError ?? ((error) => console.error("relay: indexer error", error));
  const heads = config.webSocketUrl
    ? createHeadWatcher({ url: config.webSocketUrl, onError: onIndexerError })
    : undefined;
  const indexer = createTaskIndexer({
    client,
    taskContract,
    store,
    confirmations: config.confirmations,
    fromBlock: config.fromBlock ?? 0n,
    pollingIntervalMs: config.pollingIntervalMs,
    heads,
    onError: onIndexerError,
  });

  const indexerStatus = async (): Promise<IndexerStatus> => {
    let headBlock: bigint;
    try {
      headBlock = await client.getBlockNumber({ cacheTime: 1000 });
    } catch (cause) {
      throw new RelayError("The relay cannot reach its chain RPC.", {
        code: "chain_unavailable",
        status: 503,
        cause,
      });
    }
    return { indexedBlock: indexer.indexedBlock, headBlock };
  };

  const app = createRelayApp({
    store,
    blobs,
    chain: { chainId, taskContract, publicClient: client },
    indexerStatus,
    config: {
      name: config.name,
      confirmations: config.confirmations,
      limits: config.limits,
      rateLimit: config.rateLimit,
      requestTimeoutMs: config.requestTimeoutMs,
      maxSkewSeconds: config.maxSkewSeconds,
      cors: config.cors,
    },
    onInternalError: options.onInternalError,
  });

  let server: ReturnType<typeof serve>;
  try {
    server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s));
      s.once("error", reject);
    });
  } catch (error) {
    heads?.close();
    await store.close();
    throw error;
  }
  indexer.start();
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;

  let stopping: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    config,
    store,
    blobs,
    indexer,
    stop() {
      stopping ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        // Idle keep-alive connections would hold close() open; requests in flight still finish.
        if ("closeIdleConnections" in server) server.closeIdleConnections();
        await closed;
        await indexer.stop();
        heads?.close();
        await store.close();
      })();
      return stopping;
    },
  };
}
