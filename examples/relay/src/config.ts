import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { webSocketUrlSchema } from "@crynux/client";
import { getAddress, isAddress } from "viem";
import { z } from "zod";
import { RelayError } from "./errors.js";

const address = z
  .string()
  .refine((value) => isAddress(value, { strict: false }), "must be a 20-byte hex address")
  .transform((value) => getAddress(value));
const blockNumber = z
  .union([
    z.bigint().min(0n),
    z.int().min(0),
    z.string().regex(/^(0|[1-9][0-9]*)$/, "must be a decimal block number"),
  ])
  .transform((value) => BigInt(value));
/** A web origin (`scheme://host[:port]`, as browsers send it in `Origin`), or `*` for any. */
const corsOrigin = z.union([
  z.literal("*"),
  z
    .url({ protocol: /^https?$/ })
    .refine((value) => {
      // zod runs this check even when the url check failed; that one reports it.
      if (!URL.canParse(value)) return true;
      const url = new URL(value);
      return url.pathname === "/" && !url.search && !url.hash && !url.username && !url.password;
    }, "must be an origin (scheme://host[:port]) without path, query or credentials")
    .transform((value) => new URL(value).origin),
]);

/** `dataDir` value that keeps the PGlite database in memory (PGlite's own spelling). */
export const IN_MEMORY = "memory://";

/**
 * The relay's configuration. Every field has a default except the Task contract, which comes from
 * `taskContract` or from a `deploymentFile`. Relative paths in a config file are relative to that file.
 */
export const relayConfigSchema = z
  .strictObject({
    /** EIP-712 domain name; clients read it from `GET /v1/info`. */
    name: z.string().min(1).default("Crynux Relay"),
    host: z.string().min(1).default("127.0.0.1"),
    /** 0 picks a free port. */
    port: z.int().min(0).max(65_535).default(8088),
    rpcUrl: z.url().default("http://127.0.0.1:8545"),
    /** When given, the RPC's chain id must match it (guards against pointing at the wrong chain). */
    chainId: z.int().positive().optional(),
    taskContract: address.optional(),
    /** JSON file written at deployment: `{ task, chainId?, blockNumber?, ...other addresses }`. */
    deploymentFile: z.string().min(1).optional(),
    /** First block to index when the database is new (the deployment block; 0 by default). */
    fromBlock: blockNumber.optional(),
    /** Blocks an event must be buried under before the relay trusts it. */
    confirmations: z.int().min(0).default(2),
    pollingIntervalMs: z.int().positive().default(1000),
    /**
     * The RPC's WebSocket endpoint (`ws://…`; anvil serves it on its HTTP port): the indexer then reads the
     * chain as soon as a block comes (`eth_subscribe("newHeads")`) and polls only as a fallback.
     */
    webSocketUrl: webSocketUrlSchema.optional(),
    /** PGlite data directory; `memory://` keeps it in memory. Ignored when `databaseUrl` is set. */
    dataDir: z.string().min(1).default("./.relay-data/db"),
    blobDir: z.string().min(1).default("./.relay-data/blobs"),
    /** `postgres://…`: use a PostgreSQL server instead of the embedded PGlite. */
    databaseUrl: z.string().min(1).optional(),
    limits: z
      .strictObject({
        maxArgsBytes: z
          .int()
          .positive()
          .default(1024 * 1024),
        maxResultBytes: z
          .int()
          .positive()
          .default(64 * 1024 * 1024),
      })
      .default({ maxArgsBytes: 1024 * 1024, maxResultBytes: 64 * 1024 * 1024 }),
    /** Per signing address: `requests` per `windowMs` (token bucket). */
    rateLimit: z
      .strictObject({
        requests: z.int().positive().default(600),
        windowMs: z.int().positive().default(60_000),
      })
      .default({ requests: 600, windowMs: 60_000 }),
    requestTimeoutMs: z.int().positive().default(30_000),
    maxSkewSeconds: z.int().positive().default(60),
    /**
     * Web origins whose pages may call the relay from a browser (CORS), e.g. `["https://app.example.com"]`;
     * `["*"]` allows every origin. Default none: browsers then refuse cross-origin calls. Requests are
     * authorized by their EIP-712 signature headers, never by cookies, so an allowed origin gains nothing
     * without the signer's key.
     */
    cors: z.array(corsOrigin).default([]),
  })
  .refine((config) => config.taskContract !== undefined || config.deploymentFile !== undefined, {
    message: "taskContract is required unless a deploymentFile is given",
    path: ["taskContract"],
  });

export type RelayConfigInput = z.input<typeof relayConfigSchema>;
export type RelayConfig = z.output<typeof relayConfigSchema>;

/** What a deployment file must hold; other fields (the other contracts' addresses) are ignored. */
export const deploymentFileSchema = z.object({
  task: address,
  chainId: z.int().positive().optional(),
  /** Block of the deployment: indexing starts there. */
  blockNumber: blockNumber.optional(),
});

/** Environment variables, each overriding the config file's field of the same meaning. */
export const RELAY_ENV: Record<string, { path: string[]; kind: "string" | "int" | "list" }> = {
  CRYNUX_RELAY_NAME: { path: ["name"], kind: "string" },
  CRYNUX_RELAY_HOST: { path: ["host"], kind: "string" },
  CRYNUX_RELAY_PORT: { path: ["port"], kind: "int" },
  CRYNUX_RELAY_RPC_URL: { path: ["rpcUrl"], kind: "string" },
  CRYNUX_RELAY_CHAIN_ID: { path: ["chainId"], kind: "int" },
  CRYNUX_RELAY_TASK_CONTRACT: { path: ["taskContract"], kind: "string" },
  CRYNUX_RELAY_DEPLOYMENT_FILE: { path: ["deploymentFile"], kind: "string" },
  CRYNUX_RELAY_FROM_BLOCK: { path: ["fromBlock"], kind: "string" },
  CRYNUX_RELAY_CONFIRMATIONS: { path: ["confirmations"], kind: "int" },
  CRYNUX_RELAY_POLLING_INTERVAL_MS: { path: ["pollingIntervalMs"], kind: "int" },
  CRYNUX_RELAY_WS_URL: { path: ["webSocketUrl"], kind: "string" },
  CRYNUX_RELAY_DATA_DIR: { path: ["dataDir"], kind: "string" },
  CRYNUX_RELAY_BLOB_DIR: { path: ["blobDir"], kind: "string" },
  CRYNUX_RELAY_DATABASE_URL: { path: ["databaseUrl"], kind: "string" },
  CRYNUX_RELAY_MAX_ARGS_BYTES: { path: ["limits", "maxArgsBytes"], kind: "int" },
  CRYNUX_RELAY_MAX_RESULT_BYTES: { path: ["limits", "maxResultBytes"], kind: "int" },
  CRYNUX_RELAY_RATE_LIMIT_REQUESTS: { path: ["rateLimit", "requests"], kind: "int" },
  CRYNUX_RELAY_RATE_LIMIT_WINDOW_MS: { path: ["rateLimit", "windowMs"], kind: "int" },
  CRYNUX_RELAY_REQUEST_TIMEOUT_MS: { path: ["requestTimeoutMs"], kind: "int" },
  CRYNUX_RELAY_MAX_SKEW_SECONDS: { path: ["maxSkewSeconds"], kind: "int" },
  /** Comma-separated origins. */
  CRYNUX_RELAY_CORS: { path: ["cors"], kind: "list" },
};

/** Thrown for a config file, environment variable or deployment file that cannot be used. */
export class RelayConfigError extends RelayError {
  override name = "RelayConfigError";
  constructor(shortMessage: string, parameters: { details?: string; cause?: unknown } = {}) {
    super(shortMessage, { code: "invalid_config", status: 500, ...parameters });
  }
}

export type LoadRelayConfigParameters = {
  /** JSON config file (`--config`, or `CRYNUX_RELAY_CONFIG`). */
  file?: string | undefined;
  env?: Record<string, string | undefined>;
  /** Applied last (e.g. from command-line flags). */
  overrides?: Partial<RelayConfigInput>;
};

/**
 * Builds the configuration from, in increasing priority: the embedded defaults, the JSON config
 * file, `CRYNUX_RELAY_*` environment variables, then `overrides`; reads the deployment file if one is
 * named. Paths come out absolute.
 */
export async function loadRelayConfig(parameters: LoadRelayConfigParameters = {}): Promise<RelayConfig> {
  const env = parameters.env ?? process.env;
  const file = parameters.file ?? env["CRYNUX_RELAY_CONFIG"];
  let input: Record<string, unknown> = {};
  if (file) {
    input = await readJsonFile(file, "config file");
    const base = dirname(resolve(file));
    for (const key of ["dataDir", "blobDir", "deploymentFile"] as const) {
      const value = input[key];
      if (typeof value === "string" && value !== IN_MEMORY && !isAbsolute(value))
        input[key] = resolve(base, value);
    }
  }
  for (const [name, { path, kind }] of Object.entries(RELAY_ENV)) {
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    const value =
      kind === "int" && /^-?[0-9]+$/.test(raw)
        ? Number(raw)
        : kind === "list"
          ? raw
              .split(",")
              .map((item) => item.trim())
              .filter((item) => item !== "")
          : raw;
    let target = input;
    for (const key of path.slice(0, -1)) {
      const next = target[key];
      target[key] = typeof next === "object" && next !== null ? { ...next } : {};
      target = target[key] as Record<string, unknown>;
    }
    target[path.at(-1)!] = value;
  }
  return resolveRelayConfig({ ...input, ...parameters.overrides } as RelayConfigInput);
}

/** Validates a configuration object and folds in its deployment file; paths come out absolute. */
export async function resolveRelayConfig(input: RelayConfigInput): Promise<RelayConfig> {
  const parsed = relayConfigSchema.safeParse(input);
  if (!parsed.success) {
    throw new RelayConfigError("Invalid relay configuration.", {
      details: parsed.error.issues.map((issue) => `- ${issue.path.join(".")}: ${issue.message}`).join("\n"),
      cause: parsed.error,
    });
  }
  const config = parsed.data;
  if (config.dataDir !== IN_MEMORY) config.dataDir = resolve(config.dataDir);
  config.blobDir = resolve(config.blobDir);
  if (config.deploymentFile) {
    config.deploymentFile = resolve(config.deploymentFile);
    const deployment = deploymentFileSchema.safeParse(
      await readJsonFile(config.deploymentFile, "deployment file"),
    );
    if (!deployment.success) {
      throw new RelayConfigError(`Invalid deployment file ${config.deploymentFile}.`, {
        details: deployment.error.issues
          .map((issue) => `- ${issue.path.join(".")}: ${issue.message}`)
          .join("\n"),
      });
    }
    // Explicit settings win over the deployment file.
    config.taskContract ??= deployment.data.task;
    config.chainId ??= deployment.data.chainId;
    config.fromBlock ??= deployment.data.blockNumber;
  }
  return config;
}

async function readJsonFile(file: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (cause) {
    throw new RelayConfigError(`Cannot read the ${what} ${file}.`, { cause });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new RelayConfigError(`The ${what} ${file} is not valid JSON.`, { cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new RelayConfigError(`The ${what} ${file} must hold a JSON object.`);
  }
  return value as Record<string, unknown>;
}
