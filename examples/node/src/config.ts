import { readFile, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { inspect } from "node:util";
import { webSocketUrlSchema } from "@crynux/client";
import { DEFAULT_EXECUTION_PROFILE, type ExecutionProfile } from "@crynux/node-core";
import { parseModelRef } from "@crynux/tasks";
import { type Address, getAddress, type Hex, isAddress, parseEther } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { z } from "zod";
import { NodeConfigError } from "./errors.js";

/** Config file read when neither `--config` nor `CRYNUX_NODE_CONFIG` names one (if it exists). */
export const DEFAULT_CONFIG_FILE = "crynux-node.jsonc";

const address = z
  .string()
  .refine((value) => isAddress(value, { strict: false }), "must be a 20-byte hex address")
  .transform((value) => getAddress(value));
const privateKey = z
  .string()
  .regex(/^0x[0-9a-fA-F]{64}$/, "must be a 0x-prefixed 32-byte hex private key")
  .transform((value) => value as Hex);
const httpUrl = z.url({
  protocol: /^https?$/,
  error: (issue) => (issue.input === undefined ? "required" : "must be an http(s) URL"),
});
const path = z.string().min(1, "must be a non-empty path");
const modelRef = z.string().superRefine((value, ctx) => {
  try {
    parseModelRef(value);
  } catch (error) {
    ctx.addIssue({
      code: "custom",
      message: (error as { shortMessage?: string }).shortMessage ?? String(error),
    });
  }
});
/** CNX as a decimal string ("400", "0.5"); JSON numbers cannot hold 18 decimals exactly. */
const cnx = z
  .string()
  .regex(/^(0|[1-9][0-9]*)(\.[0-9]{1,18})?$/, 'must be an amount of CNX as a decimal string, e.g. "400"')
  .transform((value) => parseEther(value));

const contractsSchema = z.strictObject({
  node: address,
  task: address,
  /** The others are read from the Node and Task contracts when left out. */
  taskQueue: address.optional(),
  qos: address.optional(),
  networkStats: address.optional(),
  treasury: address.optional(),
});

/**
 * The node's configuration file (JSON; `//` and `/* *\/` comments are allowed). Relative paths are relative
 * to the file. Every field but the chain, the contracts and the relay has a default.
 */
export const nodeConfigSchema = z.strictObject({
  chain: z
    .strictObject({
      rpcUrl: httpUrl,
      /**
       * The RPC's WebSocket endpoint (`ws://…`; anvil serves it on its HTTP port): the node reads the chain as
       * soon as a block comes (`eth_subscribe("newHeads")`) and polls only as a fallback.
       */
      webSocketUrl: webSocketUrlSchema.optional(),
      /** When given, the RPC must serve this chain (guards against pointing at the wrong one). */
      chainId: z.int().positive().optional(),
      contracts: contractsSchema.optional(),
      /** JSON written at deployment: `{ node, task, taskQueue?, qos?, networkStats?, treasury?, chainId? }`. */
      deploymentFile: path.optional(),
    })
    .refine((chain) => chain.contracts !== undefined || chain.deploymentFile !== undefined, {
      message: "required unless chain.deploymentFile is given",
      path: ["contracts"],
    }),
  relayUrl: httpUrl,
  account: z
    .strictObject({
      /** Prefer `privateKeyFile` or `CRYNUX_NODE_PRIVATE_KEY`: a key in the config file is easy to leak. */
      privateKey: privateKey.optional(),
      privateKeyFile: path.optional(),
    })
    .prefault({}),
  /** Task records and the chain cursor; one directory per account. */
  stateDir: path.default("./.crynux-node/state"),
  models: z
    .strictObject({
      /** Base of `file:` model references. */
      modelDir: path.default("./models"),
      /** Hugging Face downloads, content hashes and quantized copies. */
      cacheDir: path.default("./.crynux-node/cache"),
      /** Use only what is already cached; never download. */
      offline: z.boolean().default(false),
      hubUrl: httpUrl.optional(),
      /** Refuse models larger than this many bytes. */
      maxBytes: z.int().positive().optional(),
      /** Models downloaded (and quantized) at start, before the node joins. */
      prepare: z
        .array(
          z.strictObject({
            model: modelRef,
            quantizeBits: z.union([z.literal(4), z.literal(8), z.null()]).default(null),
          }),
        )
        .default([]),
    })
    .prefault({}),
  /** The deterministic execution profile: part of the node's group (runtime id). */
  gpt: z
    .strictObject({
      threads: z.int().min(1).max(256).default(DEFAULT_EXECUTION_PROFILE.threads),
      batchSize: z.int().min(1).max(8192).default(DEFAULT_EXECUTION_PROFILE.batchSize),
      contextSize: z.int().min(128).max(1_048_576).default(DEFAULT_EXECUTION_PROFILE.contextSize),
      /** Bytes of models kept loaded; default 60 % of RAM. */
      memoryBudgetBytes: z.int().positive().optional(),
    })
    .prefault({}),
  /**
   * An image engine for SD tasks. The node declares the task types it runs when it joins (part of its group
   * key): SD only with an engine here. Without one it joins for GPT only and is never selected for SD tasks.
   */
  sd: z
    .discriminatedUnion("kind", [
      z.strictObject({
        kind: z.literal("automatic1111"),
        url: httpUrl,
        timeoutMs: z.int().positive().optional(),
        modelMap: z.record(z.string(), z.string()).optional(),
      }),
    ])
    .optional(),
  /** The card to join with; detected (GPU, else CPU and RAM) when left out. */
  card: z
    .strictObject({
      gpuName: z.string().min(1).max(256),
      gpuVram: z.int().min(1).max(1_000_000),
    })
    .optional(),
  confirmations: z.int().min(0).max(1000).default(2),
  pollingIntervalMs: z.int().min(10).max(600_000).default(1000),
  /** Finished task records are kept this many days, then folded into the state's archive (0: keep all). */
  keepTaskRecordsDays: z.number().min(0).max(36_500).default(30),
  /** Stake to join with, in CNX (default: the Node contract's stake amount). */
  stake: cnx.optional(),
  api: z
    .strictObject({
      host: z.string().min(1).default("127.0.0.1"),
      /** 0 picks a free port (the CLI finds it in the state directory). */
      port: z.int().min(0).max(65_535).default(8089),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(["debug", "info", "warn", "error"]).default("info"),
      format: z.enum(["json", "pretty"]).default("json"),
    })
    .prefault({}),
});

export type NodeConfigInput = z.input<typeof nodeConfigSchema>;
type ParsedConfig = z.output<typeof nodeConfigSchema>;

/** A secret that stays out of logs, JSON and `console.log`: read it with `reveal()`. */
export class Secret<T extends string = string> {
  readonly #value: T;
  constructor(value: T) {
    this.#value = value;
  }
  reveal(): T {
    return this.#value;
  }
  toJSON(): string {
    return "[redacted]";
  }
  toString(): string {
    return "[redacted]";
  }
  [inspect.custom](): string {
    return "[redacted]";
  }
}

export type NodeContracts = z.output<typeof contractsSchema>;

/** The resolved configuration: paths absolute, the key read, the deployment file folded in. */
export type NodeConfig = Omit<ParsedConfig, "account" | "chain" | "gpt"> & {
  /** The config file it came from, if any. */
  file: string | undefined;
  chain: {
    rpcUrl: string;
    webSocketUrl: string | undefined;
    chainId: number | undefined;
    contracts: NodeContracts;
  };
  account: { address: Address; privateKey: Secret<Hex>; source: "config" | "env" | "file" };
  gpt: ExecutionProfile & { memoryBudgetBytes: number | undefined };
  /** Things that work but should be fixed (a key file others can read, …). */
  warnings: string[];
};

type EnvKind = "string" | "int" | "bool";
/** Environment variables, each overriding the config file's field at `path`. */
export const NODE_ENV: Record<string, { path: string[]; kind: EnvKind }> = {
  CRYNUX_NODE_RPC_URL: { path: ["chain", "rpcUrl"], kind: "string" },
  CRYNUX_NODE_WS_URL: { path: ["chain", "webSocketUrl"], kind: "string" },
  CRYNUX_NODE_CHAIN_ID: { path: ["chain", "chainId"], kind: "int" },
  CRYNUX_NODE_DEPLOYMENT_FILE: { path: ["chain", "deploymentFile"], kind: "string" },
  CRYNUX_NODE_RELAY_URL: { path: ["relayUrl"], kind: "string" },
  CRYNUX_NODE_PRIVATE_KEY: { path: ["account", "privateKey"], kind: "string" },
  CRYNUX_NODE_PRIVATE_KEY_FILE: { path: ["account", "privateKeyFile"], kind: "string" },
  CRYNUX_NODE_STATE_DIR: { path: ["stateDir"], kind: "string" },
  CRYNUX_NODE_MODEL_DIR: { path: ["models", "modelDir"], kind: "string" },
  CRYNUX_NODE_CACHE_DIR: { path: ["models", "cacheDir"], kind: "string" },
  CRYNUX_NODE_OFFLINE: { path: ["models", "offline"], kind: "bool" },
  CRYNUX_NODE_GPT_THREADS: { path: ["gpt", "threads"], kind: "int" },
  CRYNUX_NODE_GPT_BATCH_SIZE: { path: ["gpt", "batchSize"], kind: "int" },
  CRYNUX_NODE_GPT_CONTEXT_SIZE: { path: ["gpt", "contextSize"], kind: "int" },
  CRYNUX_NODE_SD_URL: { path: ["sd", "url"], kind: "string" },
  CRYNUX_NODE_CONFIRMATIONS: { path: ["confirmations"], kind: "int" },
  CRYNUX_NODE_POLLING_INTERVAL_MS: { path: ["pollingIntervalMs"], kind: "int" },
  CRYNUX_NODE_KEEP_TASK_RECORDS_DAYS: { path: ["keepTaskRecordsDays"], kind: "int" },
  CRYNUX_NODE_STAKE: { path: ["stake"], kind: "string" },
  CRYNUX_NODE_API_HOST: { path: ["api", "host"], kind: "string" },
  CRYNUX_NODE_API_PORT: { path: ["api", "port"], kind: "int" },
  CRYNUX_NODE_LOG_LEVEL: { path: ["log", "level"], kind: "string" },
  CRYNUX_NODE_LOG_FORMAT: { path: ["log", "format"], kind: "string" },
};

/** What a deployment file must hold; other fields are ignored (the relay reads the same file). */
export const nodeDeploymentFileSchema = z.object({
  node: address,
  task: address,
  taskQueue: address.optional(),
  qos: address.optional(),
  networkStats: address.optional(),
  treasury: address.optional(),
  chainId: z.int().positive().optional(),
});

export type LoadNodeConfigParameters = {
  /** The config file (`--config`); default `CRYNUX_NODE_CONFIG`, else {@link DEFAULT_CONFIG_FILE} if it exists. */
  file?: string | undefined;
  env?: Record<string, string | undefined>;
  /** Base of relative paths that do not come from a file (environment, defaults); default the cwd. */
  cwd?: string;
};

/**
 * Builds the configuration from, in increasing priority: the embedded defaults, the config file, then the
 * `CRYNUX_NODE_*` environment variables; reads the private key and the deployment file.
 *
 * @throws {NodeConfigError} listing every bad field by its path (`chain.rpcUrl: must be an http(s) URL`).
 */
export async function loadNodeConfig(parameters: LoadNodeConfigParameters = {}): Promise<NodeConfig> {
  const env = parameters.env ?? process.env;
  const cwd = parameters.cwd ?? process.cwd();
  let file = parameters.file ?? env["CRYNUX_NODE_CONFIG"];
  if (file === undefined) {
    const fallback = resolve(cwd, DEFAULT_CONFIG_FILE);
    if (await exists(fallback)) file = fallback;
  }
  let input: Record<string, unknown> = {};
  let base = cwd;
  if (file !== undefined) {
    file = resolve(cwd, file);
    input = await readJsonFile(file, "config file");
    base = dirname(file);
  }
  const fromEnv = new Map<string, string>();
  const relativeTo = new Map<string, string>();
  for (const [name, { path: fieldPath, kind }] of Object.entries(NODE_ENV)) {
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    let value: unknown = raw;
    if (kind === "int" && /^-?[0-9]+$/.test(raw)) value = Number(raw);
    if (kind === "bool" && /^(true|1|yes)$/i.test(raw)) value = true;
    if (kind === "bool" && /^(false|0|no)$/i.test(raw)) value = false;
    let target = input;
    for (const key of fieldPath.slice(0, -1)) {
      const next = target[key];
      target[key] = typeof next === "object" && next !== null && !Array.isArray(next) ? { ...next } : {};
      target = target[key] as Record<string, unknown>;
    }
    // The SD URL alone implies the only engine kind there is.
    if (name === "CRYNUX_NODE_SD_URL") target["kind"] ??= "automatic1111";
    target[fieldPath.at(-1)!] = value;
    fromEnv.set(fieldPath.join("."), name);
    relativeTo.set(fieldPath.join("."), cwd);
  }
  return resolveNodeConfig(input, { file, base, cwd, env: fromEnv, relativeTo });
}

/**
 * Validates a configuration object (as read from a file) and resolves it: paths against `base`, the key,
 * the deployment file.
 */
export async function resolveNodeConfig(
  input: unknown,
  context: {
    file?: string | undefined;
    base?: string;
    cwd?: string;
    /** Field path → the environment variable it came from, named in errors. */
    env?: Map<string, string>;
    /** Field path → the base its relative path is resolved against, when not `base`. */
    relativeTo?: Map<string, string>;
  } = {},
): Promise<NodeConfig> {
  const base = context.base ?? context.cwd ?? process.cwd();
  const parsed = nodeConfigSchema.safeParse(input);
  if (!parsed.success) {
    const issues = parsed.error.issues.flatMap((issue) => {
      const at = issue.path.map(String);
      if (issue.code === "unrecognized_keys")
        return issue.keys.map((key) => ({ path: [...at, key].join("."), message: "unknown field" }));
      const name = at.join(".");
      const variable = context.env?.get(name);
      return [
        {
          path: name || "(config)",
          message: variable ? `${issue.message} (from ${variable})` : issue.message,
        },
      ];
    });
    throw new NodeConfigError(
      context.file ? `Invalid node configuration in ${context.file}.` : "Invalid node configuration.",
      { issues, cause: parsed.error },
    );
  }
  const config = parsed.data;
  const abs = (field: string, value: string) => resolve(context.relativeTo?.get(field) ?? base, value);
  const warnings: string[] = [];

  let contracts: NodeContracts | undefined = config.chain.contracts;
  let chainId = config.chain.chainId;
  if (config.chain.deploymentFile) {
    const deploymentFile = abs("chain.deploymentFile", config.chain.deploymentFile);
    const raw = await readJsonFile(deploymentFile, "deployment file", "chain.deploymentFile");
    const deployment = nodeDeploymentFileSchema.safeParse(raw);
    if (!deployment.success)
      throw new NodeConfigError(`Invalid deployment file ${deploymentFile} (chain.deploymentFile).`, {
        issues: deployment.error.issues.map((issue) => ({
          path: `chain.deploymentFile: ${issue.path.join(".") || "(file)"}`,
          message: issue.message,
        })),
      });
    const { chainId: deployedOn, ...addresses } = deployment.data;
    // Explicit settings win over the deployment file.
    contracts = { ...addresses, ...config.chain.contracts };
    chainId ??= deployedOn;
  }

  const account = await resolveAccount(config.account, context.env, abs, context.file);
  return {
    ...config,
    file: context.file,
    chain: {
      rpcUrl: config.chain.rpcUrl,
      webSocketUrl: config.chain.webSocketUrl,
      chainId,
      contracts: contracts!,
    },
    account,
    stateDir: abs("stateDir", config.stateDir),
    models: {
      ...config.models,
      modelDir: abs("models.modelDir", config.models.modelDir),
      cacheDir: abs("models.cacheDir", config.models.cacheDir),
    },
    gpt: {
      backend: "cpu",
      threads: config.gpt.threads,
      batchSize: config.gpt.batchSize,
      contextSize: config.gpt.contextSize,
      memoryBudgetBytes: config.gpt.memoryBudgetBytes,
    },
    warnings,
  };
}

async function resolveAccount(
  account: ParsedConfig["account"],
  env: Map<string, string> | undefined,
  abs: (field: string, value: string) => string,
  file: string | undefined,
): Promise<NodeConfig["account"]> {
  let key: Hex;
  let source: NodeConfig["account"]["source"];
  if (account.privateKey) {
    source = env?.has("account.privateKey") ? "env" : "config";
    // A config file gets copied, committed and pasted into bug reports; the key belongs in the environment or
    // in a file of its own. (An object passed in code, with no file, is the caller's business.)
    if (source === "config" && file !== undefined)
      throw new NodeConfigError(`The config file ${file} holds the private key itself; that is refused.`, {
        issues: [
          {
            path: "account.privateKey",
            message:
              "remove it from the file; set CRYNUX_NODE_PRIVATE_KEY or account.privateKeyFile (a key file with mode 600)",
          },
        ],
      });
    key = account.privateKey;
  } else if (account.privateKeyFile) {
    const keyFile = abs("account.privateKeyFile", account.privateKeyFile);
    let text: string;
    let mode: number;
    try {
      mode = (await stat(keyFile)).mode;
      text = await readFile(keyFile, "utf8");
    } catch (cause) {
      throw new NodeConfigError(`Cannot read the key file ${keyFile}.`, {
        issues: [{ path: "account.privateKeyFile", message: `cannot read ${keyFile}` }],
        cause,
      });
    }
    // Refused rather than warned about: other users of the machine could already have copied the key.
    if (process.platform !== "win32" && (mode & 0o077) !== 0)
      throw new NodeConfigError(
        `The key file ${keyFile} can be read or written by other users (mode ${(mode & 0o777).toString(8)}).`,
        {
          issues: [
            {
              path: "account.privateKeyFile",
              message: `mode ${(mode & 0o777).toString(8)} is refused: chmod 600 ${keyFile} (or 400)`,
            },
          ],
        },
      );
    const parsed = privateKey.safeParse(text.trim());
    if (!parsed.success)
      // The content is never echoed: it is (almost) a key.
      throw new NodeConfigError(`The key file ${keyFile} does not hold a private key.`, {
        issues: [{ path: "account.privateKeyFile", message: "must hold one 0x-prefixed 32-byte hex key" }],
      });
    key = parsed.data;
    source = "file";
  } else {
    throw new NodeConfigError("No private key for the node's account.", {
      issues: [
        {
          path: "account",
          message: "set CRYNUX_NODE_PRIVATE_KEY or account.privateKeyFile (a key file with mode 600)",
        },
      ],
    });
  }
  return { address: privateKeyToAccount(key).address, privateKey: new Secret(key), source };
}

/** `JSON.parse` of a file that may hold `//` and `/* *\/` comments (outside strings). */
export function parseJsonWithComments(text: string): unknown {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      // Keep the line count so JSON.parse positions still point at the right line.
      const comment = text.slice(i, end < 0 ? text.length : end + 2);
      out += comment.replace(/[^\n]/g, " ");
      i += comment.length;
    } else {
      out += c;
      i++;
    }
  }
  return JSON.parse(out);
}

async function readJsonFile(file: string, what: string, field?: string): Promise<Record<string, unknown>> {
  const issue = (message: string) => (field ? { issues: [{ path: field, message }] } : {});
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (cause) {
    throw new NodeConfigError(`Cannot read the ${what} ${file}.`, { ...issue(`cannot read ${file}`), cause });
  }
  let value: unknown;
  try {
    value = parseJsonWithComments(text);
  } catch (cause) {
    throw new NodeConfigError(`The ${what} ${file} is not valid JSON.`, {
      details: (cause as Error).message,
      cause,
    });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new NodeConfigError(
      `The ${what} ${file} must hold a JSON object.`,
      issue("must hold a JSON object"),
    );
  return value as Record<string, unknown>;
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
