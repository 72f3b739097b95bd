import {
  getNetworkStats,
  type RelayDomain,
  RelaySignatureError,
  type RelayStats,
  relayDomain,
  taskIdParamSchema,
  verifyRelayRequest,
} from "@crynux/client";
import { taskAbi } from "@crynux/contracts";
import { Hono, type MiddlewareHandler } from "hono";
import { every } from "hono/combine";
import { cors } from "hono/cors";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Address, PublicClient } from "viem";
import { RateLimitedError, RelayError } from "./errors.js";
import { createRateLimiter, type RateLimitConfig } from "./rateLimit.js";
import { nativeRecoverAddress } from "./recover.js";
import { registerPublicRoutes } from "./routes/public.js";
import { registerTaskRoutes } from "./routes/tasks.js";
import type { BlobStore, RelayStore } from "./store/types.js";

/** Where the indexer stands; both `null` before it has read anything. */
export type IndexerStatus = { indexedBlock: bigint | null; headBlock: bigint | null };

export type RelayAppConfig = {
  /** EIP-712 domain name; clients read it from `GET /v1/info`. */
  name: string;
  /** Confirmation depth of the indexer, reported by `GET /v1/info`. */
  confirmations: number;
  limits: { maxArgsBytes: number; maxResultBytes: number };
  /** Per signing address, over every signed endpoint. */
  rateLimit: RateLimitConfig;
  requestTimeoutMs: number;
  maxSkewSeconds: number;
  /** Origins allowed to call from a browser (`*`: any); empty: no CORS headers. */
  cors: readonly string[];
};

export const DEFAULT_RELAY_APP_CONFIG: RelayAppConfig = {
  name: "Crynux Relay",
  confirmations: 2,
  limits: { maxArgsBytes: 1024 * 1024, maxResultBytes: 64 * 1024 * 1024 },
  rateLimit: { requests: 600, windowMs: 60_000 },
  requestTimeoutMs: 30_000,
  maxSkewSeconds: 60,
  cors: [],
};

export type RelayAppDeps = {
  store: RelayStore;
  blobs: BlobStore;
  chain: {
    chainId: number;
    taskContract: Address;
    /** Used by the default stats reader (NetworkStats contract at the indexed block). */
    publicClient?: PublicClient | undefined;
  };
  indexerStatus: () => IndexerStatus | Promise<IndexerStatus>;
  /** `GET /v1/stats`; by default read from the NetworkStats contract at the indexed block. */
  stats?: (() => Promise<RelayStats>) | undefined;
  config?: Partial<Omit<RelayAppConfig, "limits">> & { limits?: Partial<RelayAppConfig["limits"]> };
  /** Clock in unix milliseconds (tests move it). */
  now?: (() => number) | undefined;
  /** Unexpected errors (answered 500 `internal` without details) are reported here; console.error by default. */
  onInternalError?: ((error: unknown) => void) | undefined;
};

export type RelayEnv = {
  Variables: {
    /** The request body as received (what the signature covers). */
    body: Uint8Array;
    /** Recovered signer of the request. */
    signer: Address;
    taskId: bigint;
  };
};

/** What the route modules need from the app. */
export type RelayContext = {
  deps: RelayAppDeps;
  config: RelayAppConfig;
  domain: RelayDomain;
  now: () => number;
  /** Middleware of a signed task route: task id, body (with its size limit), signature, rate limit, in order. */
  signed: (maxBodyBytes: number) => MiddlewareHandler<RelayEnv>;
};

/**
 * The relay's HTTP API as a hono app; `serve.ts` only adds the listening socket. Tests call
 * `app.request()` in-process with a store and blob store of their choice.
 */
export function createRelayApp(deps: RelayAppDeps): Hono<RelayEnv> {
  const config: RelayAppConfig = {
    ...DEFAULT_RELAY_APP_CONFIG,
    ...deps.config,
    limits: { ...DEFAULT_RELAY_APP_CONFIG.limits, ...deps.config?.limits },
    rateLimit: { ...DEFAULT_RELAY_APP_CONFIG.rateLimit, ...deps.config?.rateLimit },
  };
  const now = deps.now ?? Date.now;
  const recoverAddress = nativeRecoverAddress();
  const domain = relayDomain({
    name: config.name,
    chainId: deps.chain.chainId,
    taskContract: deps.chain.taskContract,
  });
  const limiter = createRateLimiter(config.rateLimit, now);
  const onInternalError =
    deps.onInternalError ?? ((error: unknown) => console.error("relay: internal error", error));

  const app = new Hono<RelayEnv>();

  if (config.cors.length > 0) {
    // Registered first, so that preflights (sent without the signature headers) are answered before any
    // route runs, and error answers carry the headers too: a page must be able to read the error body.
    app.use(
      "*",
      cors({
        origin: config.cors.includes("*") ? "*" : [...config.cors],
        allowMethods: ["GET", "PUT", "OPTIONS"],
        allowHeaders: ["Content-Type", "x-crynux-timestamp", "x-crynux-signature"],
        exposeHeaders: ["retry-after"],
        maxAge: 600,
      }),
    );
  }

  app.use("*", async (_c, next) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new RelayError(`The request took longer than ${config.requestTimeoutMs} ms.`, {
              code: "timeout",
              status: 503,
            }),
          ),
        config.requestTimeoutMs,
      );
    });
    const handled = next();
    // The handler keeps running after a timeout; its eventual outcome has nowhere to go.
    handled.catch(() => {});
    try {
      await Promise.race([handled, expired]);
    } finally {
      clearTimeout(timer);
    }
  });

  const taskIdParam: MiddlewareHandler<RelayEnv> = async (c, next) => {
    const parsed = taskIdParamSchema.safeParse(c.req.param("taskId"));
    if (!parsed.success) {
      throw new RelayError("The task id must be a decimal uint256 without leading zeros.", {
        code: "invalid_task_id",
        status: 400,
        field: "taskId",
      });
    }
    c.set("taskId", parsed.data);
    await next();
  };

  const readBody =
    (limit: number): MiddlewareHandler<RelayEnv> =>
    async (c, next) => {
      const declared = c.req.header("content-length");
      if (declared !== undefined && Number(declared) > limit) throw payloadTooLarge(limit);
      c.set("body", await readLimited(c.req.raw.body, limit));
      await next();
    };

  const authenticate: MiddlewareHandler<RelayEnv> = async (c, next) => {
    const url = new URL(c.req.url);
    let signer: Address;
    try {
      signer = await verifyRelayRequest({
        domain,
        method: c.req.method,
        path: url.pathname + url.search,
        body: c.get("body"),
        timestampHeader: c.req.header("x-crynux-timestamp"),
        signatureHeader: c.req.header("x-crynux-signature"),
        now: Math.floor(now() / 1000),
        maxSkewSeconds: config.maxSkewSeconds,
        recoverAddress,
      });
    } catch (error) {
      if (error instanceof RelaySignatureError) {
        throw new RelayError(error.shortMessage, {
          code: "unauthorized",
          status: 401,
          details: `signature ${error.reason}`,
          cause: error,
        });
      }
      throw error;
    }
    c.set("signer", signer);
    await next();
  };

  const rateLimit: MiddlewareHandler<RelayEnv> = async (c, next) => {
    const decision = limiter.take(c.get("signer").toLowerCase());
    if (!decision.allowed) throw new RateLimitedError(decision.retryAfterSeconds);
    await next();
  };

  const context: RelayContext = {
    deps,
    config,
    domain,
    now,
    signed: (maxBodyBytes) => every(taskIdParam, readBody(maxBodyBytes), authenticate, rateLimit),
  };
  registerPublicRoutes(app, { ...context, stats: deps.stats ?? networkStatsReader(deps) });
  registerTaskRoutes(app, context);

  app.notFound((c) =>
    c.json({ error: { code: "not_found", message: `No route ${c.req.method} ${c.req.path}.` } }, 404),
  );

  app.onError((error, c) => {
    if (error instanceof RelayError) {
      if (error instanceof RateLimitedError) c.header("retry-after", String(error.retryAfterSeconds));
      // The rest of an oversized body is never read, so the connection cannot carry another request.
      if (error.code === "payload_too_large") c.header("connection", "close");
      const body: { code: string; message: string; field?: string } = {
        code: error.code,
        message: error.shortMessage,
      };
      if (error.field !== undefined) body.field = error.field;
      return c.json({ error: body }, error.status as ContentfulStatusCode);
    }
    // hono raises these for input it cannot read (e.g. a malformed multipart body it was asked to parse).
    if (error instanceof HTTPException && error.status < 500) {
      return c.json({ error: { code: "bad_request", message: error.message } }, error.status);
    }
    onInternalError(error);
    return c.json({ error: { code: "internal", message: "Internal error." } }, 500);
  });

  return app;
}

function payloadTooLarge(limit: number): RelayError {
  return new RelayError(`The request body is larger than ${limit} bytes.`, {
    code: "payload_too_large",
    status: 413,
  });
}

/**
 * Reads a request body, giving up as soon as it passes `limit`: the content-length header is only a
 * claim (chunked uploads have none), so the bytes themselves are counted.
 */
async function readLimited(stream: ReadableStream<Uint8Array> | null, limit: number): Promise<Uint8Array> {
  if (!stream) return new Uint8Array();
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (cause) {
      // The client went away mid-body; nobody is left to read the answer, but it is not a server fault.
      throw new RelayError("The request body could not be read.", {
        code: "bad_request",
        status: 400,
        cause,
      });
    }
    const { done, value } = chunk;
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw payloadTooLarge(limit);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const body = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

/**
 * Stats from the NetworkStats contract (found through `Task.stats()`) at the indexed block, so they
 * agree with what the relay has indexed rather than with a head that may still be reorged.
 */
function networkStatsReader(deps: RelayAppDeps): () => Promise<RelayStats> {
  let address: Promise<Address> | undefined;
  return async () => {
    const client = deps.chain.publicClient;
    if (!client) {
      throw new RelayError("This relay has no chain client to read stats from.", {
        code: "unavailable",
        status: 503,
      });
    }
    address ??= client.readContract({
      address: deps.chain.taskContract,
      abi: taskAbi,
      functionName: "stats",
    });
    // A failed lookup is retried by the next request rather than remembered.
    const networkStats = await address.catch((error: unknown) => {
      address = undefined;
      throw error;
    });
    const { indexedBlock } = await deps.indexerStatus();
    const { nodes, tasks } = await getNetworkStats(
      { publicClient: client, contracts: { networkStats } },
      { blockNumber: indexedBlock ?? undefined },
    );
    return {
      nodes,
      tasks: { ...tasks, total: Number(tasks.total) },
      indexedBlock: Number(indexedBlock ?? 0n),
    };
  };
}
