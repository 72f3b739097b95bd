import { readFile, stat } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { webSocketUrlSchema } from "@crynux/client";
import { DTYPES, SD_TASK_VERSIONS } from "@crynux/tasks";
import { getAddress, type Hex, isAddress, isHex } from "viem";
import { z } from "zod";
import { BridgeConfigError } from "./errors.js";

const address = z
  .string()
  .refine((value) => isAddress(value, { strict: false }), "must be a 20-byte hex address")
  .transform((value) => getAddress(value));
const wei = z
  .union([z.bigint().min(0n), z.int().min(0), z.string().regex(/^(0|[1-9][0-9]*)$/, "must be decimal wei")])
  .transform((value) => BigInt(value));
const privateKey = z
  .string()
  .refine((value) => isHex(value) && value.length === 66, "must be a 32-byte 0x-prefixed hex private key")
  .transform((value) => value as Hex);
const vramLimit = z.int().min(0).max(1024).optional();
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

/** A chat model the bridge offers: OpenAI model id → GPT task arguments. */
export const gptModelSchema = z.strictObject({
  type: z.literal("gpt"),
  /** Model reference of the GPT task (`hf:owner/repo/file.gguf`, `owner/repo:Q4_0`). */
  model: z.string().min(1),
  dtype: z.enum(DTYPES).optional(),
  quantizeBits: z.union([z.literal(4), z.literal(8)]).optional(),
  /** Minimum GPU memory (GB) of the nodes. */
  vramLimit,
  /** `max_new_tokens` when the request sets neither `max_tokens` nor `max_completion_tokens`. */
  defaultMaxTokens: z.int().min(1).default(256),
  /** Largest `max_tokens` a request may ask for (bounds the work units, hence the fee). */
  maxTokens: z.int().min(1).default(4096),
  description: z.string().optional(),
});

/** An image model: OpenAI model id → SD base model. */
export const sdModelSchema = z.strictObject({
  type: z.literal("sd"),
  baseModel: z.string().min(1),
  variant: z.string().nullable().optional(),
  version: z.enum(SD_TASK_VERSIONS).optional(),
  vramLimit,
  steps: z.int().min(1).max(100).optional(),
  cfg: z.number().min(0).max(20).optional(),
  /** `size` when the request gives none. */
  defaultSize: z
    .string()
    .regex(/^[0-9]+x[0-9]+$/)
    .default("512x512"),
  description: z.string().optional(),
});

export const modelSchema = z.discriminatedUnion("type", [gptModelSchema, sdModelSchema]);
export type BridgeModel = z.output<typeof modelSchema>;
export type GptModelConfig = z.output<typeof gptModelSchema>;
export type SdModelConfig = z.output<typeof sdModelSchema>;

/** One API key: a name (what usage is recorded under), the key or its sha256, its limits. */
export const apiKeySchema = z
  .strictObject({
    name: z.string().min(1),
    /** The bearer token itself. Prefer `keySha256` in files that are shared. */
    key: z.string().min(16).optional(),
    /** Hex sha256 of the bearer token. */
    keySha256: z
      .string()
      .regex(/^(0x)?[0-9a-fA-F]{64}$/)
      .transform((value) => value.replace(/^0x/, "").toLowerCase())
      .optional(),
    /** Requests per `windowMs` (token bucket), over every endpoint. */
    rateLimit: z
      .strictObject({ requests: z.int().positive(), windowMs: z.int().positive().default(60_000) })
      .optional(),
    quota: z
      .strictObject({
        /** Paid tasks per UTC day. */
        tasksPerDay: z.int().min(0).optional(),
        /** Fees paid per UTC day, in wei. */
        spendPerDayWei: wei.optional(),
      })
      .optional(),
  })
  .refine((key) => (key.key === undefined) !== (key.keySha256 === undefined), {
    message: "give exactly one of key and keySha256",
    path: ["key"],
  });
export type ApiKeyConfig = z.output<typeof apiKeySchema>;

const deploymentSchema = z.object({
  node: address,
  task: address,
  taskQueue: address,
  qos: address,
  networkStats: address,
  treasury: address,
});

/**
 * The bridge's configuration. Every field has a default except the wallet key, the contracts (`contracts`
 * or a `deploymentFile`), the models and the API keys. Relative paths in a config file are relative to it.
 */
export const bridgeConfigSchema = z
  .strictObject({
    host: z.string().min(1).default("127.0.0.1"),
    /** 0 picks a free port. */
    port: z.int().min(0).max(65_535).default(8090),
    rpcUrl: z.url().default("http://127.0.0.1:8545"),
    /**
     * The RPC's WebSocket endpoint (`ws://…`; anvil serves it on its HTTP port): task waits and receipts then
     * look at the chain as soon as a block comes (`eth_subscribe("newHeads")`), polling only as a fallback.
     */
    webSocketUrl: webSocketUrlSchema.optional(),
    /** When given, the RPC's chain id must match it. */
    chainId: z.int().positive().optional(),
    relayUrl: z.url().default("http://127.0.0.1:8088"),
    /** The application wallet: pays every task and signs relay requests. */
    privateKey: privateKey.optional(),
    /** File holding the private key (hex), instead of `privateKey`. */
    privateKeyFile: z.string().min(1).optional(),
    contracts: deploymentSchema.optional(),
    /** JSON file written at deployment, holding the contract addresses (and `blockNumber`). */
    deploymentFile: z.string().min(1).optional(),
    /** PGlite data directory; `memory://` keeps it in memory (tasks are then lost on restart). */
    dataDir: z.string().min(1).default("./.bridge-data/db"),
    models: z.record(z.string().min(1), modelSchema).refine((models) => Object.keys(models).length > 0, {
      message: "configure at least one model",
    }),
    apiKeys: z.array(apiKeySchema).min(1),
    fees: z
      .strictObject({
        /** Fees are suggested by `@crynux/pricing` to start the task within this many seconds. */
        targetWaitSeconds: z.int().positive().default(60),
        /** Upper bound of a task's fee, in wei. */
        maxFeeWei: wei.default(10n ** 18n),
      })
      .default({ targetWaitSeconds: 60, maxFeeWei: 10n ** 18n }),
    /** Wei the wallet keeps for gas beyond the fee; below fee + reserve a request is refused (402). */
    walletReserveWei: wei.default(10n ** 16n),
    /** Chain polling interval while a task runs. */
    pollingIntervalMs: z.int().positive().default(1000),
    /** Longest wait for a paid task to finish. */
    taskTimeoutMs: z
      .int()
      .positive()
      .default(20 * 60_000),
    /** Longest wait for the relay (indexer catching up, result upload). */
    relayWaitMs: z.int().positive().default(120_000),
    /** SSE comment sent while a streamed request waits for its task, so proxies keep the connection. */
    keepAliveMs: z.int().positive().default(15_000),
    maxBodyBytes: z
      .int()
      .positive()
      .default(2 * 1024 * 1024),
    /**
     * Web origins whose pages may call the API from a browser (CORS), e.g. `["https://chat.example.com"]`;
     * `["*"]` allows every origin. Default none: browsers then refuse cross-origin calls. API keys travel in the
     * Authorization header, never in cookies, so an allowed origin gains nothing without a key.
     */
    cors: z.array(corsOrigin).default([]),
  })
  .refine((config) => config.contracts !== undefined || config.deploymentFile !== undefined, {
    message: "contracts is required unless a deploymentFile is given",
    path: ["contracts"],
  })
  .refine((config) => config.privateKey !== undefined || config.privateKeyFile !== undefined, {
    message: "privateKey or privateKeyFile is required",
    path: ["privateKey"],
  });

export type BridgeConfigInput = z.input<typeof bridgeConfigSchema>;
export type BridgeConfig = z.output<typeof bridgeConfigSchema> & {
  contracts: z.output<typeof deploymentSchema>;
  privateKey: Hex;
  /** Block of the deployment, from the deployment file (a lower bound for chain scans). */
  deploymentBlock?: bigint | undefined;
};

/** Environment variables, each overriding the config file's field of the same meaning. */
export const BRIDGE_ENV: Record<string, { path: string[]; kind: "string" | "int" | "list" }> = {
  CRYNUX_BRIDGE_HOST: { path: ["host"], kind: "string" },
  CRYNUX_BRIDGE_PORT: { path: ["port"], kind: "int" },
  CRYNUX_BRIDGE_RPC_URL: { path: ["rpcUrl"], kind: "string" },
  CRYNUX_BRIDGE_WS_URL: { path: ["webSocketUrl"], kind: "string" },
  CRYNUX_BRIDGE_CHAIN_ID: { path: ["chainId"], kind: "int" },
  CRYNUX_BRIDGE_RELAY_URL: { path: ["relayUrl"], kind: "string" },
  CRYNUX_BRIDGE_PRIVATE_KEY: { path: ["privateKey"], kind: "string" },
  CRYNUX_BRIDGE_PRIVATE_KEY_FILE: { path: ["privateKeyFile"], kind: "string" },
  CRYNUX_BRIDGE_DEPLOYMENT_FILE: { path: ["deploymentFile"], kind: "string" },
  CRYNUX_BRIDGE_DATA_DIR: { path: ["dataDir"], kind: "string" },
  CRYNUX_BRIDGE_TARGET_WAIT_SECONDS: { path: ["fees", "targetWaitSeconds"], kind: "int" },
  CRYNUX_BRIDGE_MAX_FEE_WEI: { path: ["fees", "maxFeeWei"], kind: "string" },
  CRYNUX_BRIDGE_WALLET_RESERVE_WEI: { path: ["walletReserveWei"], kind: "string" },
  CRYNUX_BRIDGE_POLLING_INTERVAL_MS: { path: ["pollingIntervalMs"], kind: "int" },
  CRYNUX_BRIDGE_TASK_TIMEOUT_MS: { path: ["taskTimeoutMs"], kind: "int" },
  CRYNUX_BRIDGE_RELAY_WAIT_MS: { path: ["relayWaitMs"], kind: "int" },
  CRYNUX_BRIDGE_MAX_BODY_BYTES: { path: ["maxBodyBytes"], kind: "int" },
  /** Comma-separated origins. */
  CRYNUX_BRIDGE_CORS: { path: ["cors"], kind: "list" },
};

export type LoadBridgeConfigParameters = {
  /** JSON config file (`--config`, or `CRYNUX_BRIDGE_CONFIG`). */
  file?: string | undefined;
  env?: Record<string, string | undefined>;
  /** Applied last (e.g. from command-line flags). */
  overrides?: Partial<BridgeConfigInput>;
};

/**
 * Builds the configuration from, in increasing priority: the embedded defaults, the JSON config file,
 * `CRYNUX_BRIDGE_*` environment variables, then `overrides`; reads the key and deployment files.
 */
export async function loadBridgeConfig(parameters: LoadBridgeConfigParameters = {}): Promise<BridgeConfig> {
  const env = parameters.env ?? process.env;
  const file = parameters.file ?? env["CRYNUX_BRIDGE_CONFIG"];
  let input: Record<string, unknown> = {};
  if (file) {
    input = await readJsonFile(file, "config file");
    // A config file gets copied, committed and pasted into bug reports; the wallet key does not belong in it.
    if (input["privateKey"] !== undefined)
      throw new BridgeConfigError(
        `The config file ${file} holds the wallet's private key itself; that is refused.`,
        {
          details:
            "Remove privateKey from the file; set CRYNUX_BRIDGE_PRIVATE_KEY, or privateKeyFile / CRYNUX_BRIDGE_PRIVATE_KEY_FILE naming a key file with mode 600.",
        },
      );
    const base = dirname(resolve(file));
    for (const key of ["dataDir", "deploymentFile", "privateKeyFile"] as const) {
      const value = input[key];
      if (typeof value === "string" && value !== IN_MEMORY && !isAbsolute(value))
        input[key] = resolve(base, value);
    }
  }
  for (const [name, { path, kind }] of Object.entries(BRIDGE_ENV)) {
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
  return resolveBridgeConfig({ ...input, ...parameters.overrides } as BridgeConfigInput);
}

const deploymentFileSchema = deploymentSchema.extend({
  chainId: z.int().positive().optional(),
  blockNumber: wei.optional(),
});

/** Validates a configuration object and folds in its key and deployment files; paths come out absolute. */
export async function resolveBridgeConfig(input: BridgeConfigInput | BridgeConfig): Promise<BridgeConfig> {
  // A resolved configuration may be resolved again (startBridge takes both).
  const { deploymentBlock: resolvedBlock, ...rest } = input as BridgeConfigInput & {
    deploymentBlock?: bigint;
  };
  const parsed = bridgeConfigSchema.safeParse(rest);
  if (!parsed.success) {
    throw new BridgeConfigError("Invalid bridge configuration.", {
      details: formatIssues(parsed.error.issues),
      cause: parsed.error,
    });
  }
  const config = parsed.data;
  if (config.dataDir !== IN_MEMORY) config.dataDir = resolve(config.dataDir);
  let key = config.privateKey;
  if (key === undefined && config.privateKeyFile) {
    const keyFile = resolve(config.privateKeyFile);
    let mode: number;
    try {
      mode = (await stat(keyFile)).mode;
    } catch (cause) {
      throw new BridgeConfigError(`Cannot read the private key file ${keyFile}.`, { cause });
    }
    // Refused rather than warned about: other users of the machine could already have copied the key.
    if (process.platform !== "win32" && (mode & 0o077) !== 0)
      throw new BridgeConfigError(
        `The private key file ${keyFile} can be read or written by other users (mode ${(mode & 0o777).toString(8)}); chmod 600 it (or 400).`,
      );
    const text = (await readText(keyFile, "private key file")).trim();
    const checked = privateKey.safeParse(text.startsWith("0x") ? text : `0x${text}`);
    if (!checked.success)
      throw new BridgeConfigError(`The private key file ${config.privateKeyFile} holds no key.`);
    key = checked.data;
  }
  let contracts = config.contracts;
  let deploymentBlock = resolvedBlock;
  if (config.deploymentFile) {
    config.deploymentFile = resolve(config.deploymentFile);
    const deployment = deploymentFileSchema.safeParse(
      await readJsonFile(config.deploymentFile, "deployment file"),
    );
    if (!deployment.success) {
      throw new BridgeConfigError(`Invalid deployment file ${config.deploymentFile}.`, {
        details: formatIssues(deployment.error.issues),
      });
    }
    const { chainId, blockNumber, ...addresses } = deployment.data;
    // Explicit settings win over the deployment file.
    contracts ??= addresses;
    config.chainId ??= chainId;
    deploymentBlock ??= blockNumber;
  }
  return { ...config, contracts: contracts!, privateKey: key!, deploymentBlock };
}

function formatIssues(issues: readonly { path: PropertyKey[]; message: string }[]): string {
  return issues.map((issue) => `- ${issue.path.map(String).join(".")}: ${issue.message}`).join("\n");
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (cause) {
    throw new BridgeConfigError(`Cannot read the ${what} ${file}.`, { cause });
  }
}

async function readJsonFile(file: string, what: string): Promise<Record<string, unknown>> {
  const text = await readText(file, what);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new BridgeConfigError(`The ${what} ${file} is not valid JSON.`, { cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BridgeConfigError(`The ${what} ${file} must hold a JSON object.`);
  }
  return value as Record<string, unknown>;
}
