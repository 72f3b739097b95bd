/**
 * `crynux-deploy`: deploys the Crynux contracts to an existing EVM chain and prints the deployment file the
 * relay, node and bridge read (`deploymentFile` in their configs). Kept out of the package index: it needs
 * Node.js (files, process), and the library runs in browsers.
 */
import { readFile, stat, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  type Address,
  createPublicClient,
  createWalletClient,
  formatEther,
  getAddress,
  type Hex,
  http,
  isAddress,
  isHex,
  parseEther,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { z } from "zod";
import { defineCrynuxChain } from "../chains.js";
import { type CrynuxDeployment, type DeployCrynuxOptions, deployCrynux } from "../deploy.js";
import { ContractsError } from "../errors.js";

/** Environment variable holding the deployer's private key when no `--key-file` is given. */
export const DEPLOYER_KEY_ENV = "CRYNUX_DEPLOYER_PRIVATE_KEY";

export const DEPLOY_USAGE = `Usage: crynux-deploy --rpc-url <url> --chain-id <id> [--key-file <file>] [options]

Deploys the Crynux contracts (QOS, NetworkStats, TaskQueue, Node, Task and a Treasury unless --treasury
is given), wires them together and prints the deployment as JSON: the deploymentFile of the relay, the
node and the bridge. The deployer account becomes the owner of every contract.

Required:
  --rpc-url <url>              JSON-RPC endpoint of the chain (http or https)
  --chain-id <id>              the chain id the RPC must report; nothing is sent otherwise
  --key-file <file>            file holding the deployer's 0x-prefixed private key; must not be readable
                               by group or others (chmod 600). Or set ${DEPLOYER_KEY_ENV} instead.

Options:
  --out <file.json>            also write the deployment JSON to this file (never overwrites one)
  --stake <CNX>                stake a node deposits to join, in CNX (default 400)
  --absence-penalty <CNX>      taken from a node that misses a commit deadline, in CNX (default 40)
  --timeout <seconds>          from a task's start to its deadline, when it can be cancelled (default 900)
  --commit-timeout <seconds>   from a task's start to its commit deadline (default 600, or 2/3 of --timeout)
  --queue-size <n>             most tasks waiting in the queue (default 50)
  --max-groups <n>             most node groups (card, VRAM, runtime, task types) with nodes (default 64)
  --distance-threshold <n>     SD: images match when their pHashes differ in fewer bits (default 5)
  --treasury <address>         where slashed stakes go (default: a new Treasury contract)
  -h, --help                   this text`;

/** Thrown for a bad flag, a key file others can read, a wrong chain, or a failed deployment. */
export class DeployCommandError extends ContractsError {
  override name = "DeployCommandError";
  /** The flag (or environment variable) at fault, if one is. */
  readonly flag: string | undefined;

  constructor(shortMessage: string, options: { flag?: string; details?: string; cause?: unknown } = {}) {
    super(shortMessage, options.details, { cause: options.cause });
    this.flag = options.flag;
  }
}

const decimal = z.string().regex(/^(0|[1-9][0-9]*)$/, "must be a whole decimal number");
const cnx = z
  .string()
  .regex(/^(0|[1-9][0-9]*)(\.[0-9]{1,18})?$/, "must be an amount in CNX, e.g. 400 or 0.5")
  .transform((value) => parseEther(value));
const seconds = decimal.transform(Number).pipe(
  z
    .int()
    .min(1, "must be at least 1")
    .max(2 ** 32 - 1),
);

/** The flags, as `parseArgs` returns them (strings), validated one by one so an error names its flag. */
const flagsSchema = z
  .object({
    "rpc-url": z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }),
    "chain-id": decimal
      .transform(Number)
      .pipe(z.int().min(1, "must be positive").max(Number.MAX_SAFE_INTEGER)),
    "key-file": z.string().min(1).optional(),
    out: z.string().min(1).optional(),
    stake: cnx.refine((wei) => wei > 0n, "must be more than 0").optional(),
    "absence-penalty": cnx.optional(),
    timeout: seconds.optional(),
    "commit-timeout": seconds.optional(),
    "queue-size": decimal.transform(Number).pipe(z.int().min(1, "must be at least 1")).optional(),
    "max-groups": decimal.transform(Number).pipe(z.int().min(1, "must be at least 1")).optional(),
    "distance-threshold": decimal
      .transform(Number)
      .pipe(z.int().min(1, "must be at least 1").max(64, "must be at most 64"))
      .optional(),
    treasury: z
      .string()
      .refine((value) => isAddress(value, { strict: false }), "must be a 20-byte hex address")
      .transform((value) => getAddress(value))
      .optional(),
  })
  .superRefine((flags, context) => {
    // The Task contract's rule (setTimeouts): commit < total and total − commit < 65,536.
    const total = flags.timeout ?? 900;
    const commit =
      flags["commit-timeout"] ??
      (flags.timeout === undefined ? 600 : Math.max(1, Math.floor((total * 2) / 3)));
    if (commit >= total)
      context.addIssue({
        code: "custom",
        path: [flags["commit-timeout"] === undefined ? "timeout" : "commit-timeout"],
        message: `the commit timeout (${commit} s) must be below the timeout (${total} s)`,
      });
    else if (total - commit >= 65_536)
      context.addIssue({
        code: "custom",
        path: ["timeout"],
        message: "the timeout may exceed the commit timeout by at most 65,535 seconds",
      });
  });

export type DeployFlags = z.output<typeof flagsSchema>;

/** What `crynux-deploy` prints and writes: what the relay, node and bridge take as `deploymentFile`. */
export type DeploymentFile = {
  chainId: number;
  /** A block at or before the first deployment transaction: where indexers start. */
  blockNumber: number;
  /** The deployer: owner of every contract. */
  owner: Address;
} & CrynuxDeployment;

/** Parses the command line; `undefined` when `--help` was asked for. */
export function parseDeployArgs(argv: readonly string[]): DeployFlags | undefined {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        "rpc-url": { type: "string" },
        "chain-id": { type: "string" },
        "key-file": { type: "string" },
        out: { type: "string" },
        stake: { type: "string" },
        "absence-penalty": { type: "string" },
        timeout: { type: "string" },
        "commit-timeout": { type: "string" },
        "queue-size": { type: "string" },
        "max-groups": { type: "string" },
        "distance-threshold": { type: "string" },
        treasury: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (cause) {
    // parseArgs names the flag itself ("Unknown option '--stak'", "Option '--out <value>' argument missing").
    throw new DeployCommandError((cause as Error).message, { cause });
  }
  if (values["help"]) return undefined;
  const { help: _, ...flags } = values;
  const parsed = flagsSchema.safeParse(flags);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const flag = `--${String(issue.path[0])}`;
    const message =
      issue.code === "invalid_type" && issue.input === undefined ? "is required" : issue.message;
    throw new DeployCommandError(`${flag} ${message}`, {
      flag,
      details:
        parsed.error.issues
          .slice(1)
          .map((other) => `--${String(other.path[0])}: ${other.message}`)
          .join("\n") || undefined,
    });
  }
  return parsed.data;
}

/**
 * The deployer's key: from `--key-file` (refused when group or others may read it) or the environment.
 * Error messages never contain the key or the file's content.
 */
export async function readDeployerKey(keyFile: string | undefined, env: NodeJS.ProcessEnv): Promise<Hex> {
  const fromEnv = env[DEPLOYER_KEY_ENV];
  if (keyFile !== undefined && fromEnv !== undefined)
    throw new DeployCommandError(
      `Give the key either with --key-file or with ${DEPLOYER_KEY_ENV}, not both.`,
      {
        flag: "--key-file",
      },
    );
  let text: string;
  let source: string;
  if (keyFile !== undefined) {
    const file = resolve(keyFile);
    let mode: number;
    try {
      const info = await stat(file);
      if (!info.isFile()) throw new Error("not a regular file");
      mode = info.mode;
      text = await readFile(file, "utf8");
    } catch (cause) {
      throw new DeployCommandError(`--key-file: cannot read ${file}.`, { flag: "--key-file", cause });
    }
    // A deployer key owns every contract: a copy readable by other users is refused, not warned about.
    if (process.platform !== "win32" && (mode & 0o077) !== 0)
      throw new DeployCommandError(
        `--key-file: ${file} is accessible to group or others (mode ${(mode & 0o777).toString(8)}); run chmod 600 on it.`,
        { flag: "--key-file" },
      );
    source = `--key-file ${file}`;
  } else if (fromEnv !== undefined) {
    text = fromEnv;
    source = DEPLOYER_KEY_ENV;
  } else {
    throw new DeployCommandError(`--key-file is required (or set ${DEPLOYER_KEY_ENV}).`, {
      flag: "--key-file",
    });
  }
  const key = text.trim();
  if (!isHex(key) || key.length !== 66)
    throw new DeployCommandError(`${source} must hold one 0x-prefixed 32-byte hex private key.`, {
      flag: keyFile === undefined ? DEPLOYER_KEY_ENV : "--key-file",
    });
  return key;
}

export type RunDeployCommandParameters = {
  argv: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** Receives the deployment JSON (and the usage text). */
  stdout?: (text: string) => void;
  /** Receives progress and errors. */
  stderr?: (text: string) => void;
};

/**
 * Runs `crynux-deploy` and resolves to its exit code: 0 deployed, 1 failed, 2 bad command line. Never throws
 * and never calls `process.exit`, so tests run it in-process.
 */
export async function runDeployCommand(parameters: RunDeployCommandParameters): Promise<number> {
  const env = parameters.env ?? process.env;
  const stdout = parameters.stdout ?? ((text: string) => process.stdout.write(`${text}\n`));
  const stderr = parameters.stderr ?? ((text: string) => process.stderr.write(`${text}\n`));
  let flags: DeployFlags | undefined;
  try {
    flags = parseDeployArgs(parameters.argv);
  } catch (error) {
    stderr(`crynux-deploy: ${error instanceof ContractsError ? error.message : String(error)}`);
    stderr("Run crynux-deploy --help for the options.");
    return 2;
  }
  if (flags === undefined) {
    stdout(DEPLOY_USAGE);
    return 0;
  }
  try {
    const deployment = await deploy(flags, env, stderr);
    const json = JSON.stringify(deployment, null, 2);
    if (flags.out !== undefined) {
      const out = resolve(flags.out);
      try {
        // "wx": an existing deployment file is the record of live contracts; never replace it.
        await writeFile(out, `${json}\n`, { flag: "wx" });
      } catch (cause) {
        stdout(json);
        throw new DeployCommandError(`--out: cannot write ${out} (the deployment above succeeded).`, {
          flag: "--out",
          details: (cause as Error).message,
          cause,
        });
      }
      stderr(`Wrote ${out}`);
    }
    stdout(json);
    return 0;
  } catch (error) {
    stderr(`crynux-deploy: ${error instanceof ContractsError ? error.message : describe(error)}`);
    return 1;
  }
}

function describe(error: unknown): string {
  // viem errors carry a one-line shortMessage; their full message repeats request bodies at length.
  if (error instanceof Error) return (error as { shortMessage?: string }).shortMessage ?? error.message;
  return String(error);
}

async function deploy(
  flags: DeployFlags,
  env: NodeJS.ProcessEnv,
  log: (text: string) => void,
): Promise<DeploymentFile> {
  const key = await readDeployerKey(flags["key-file"], env);
  if (flags.out !== undefined && (await exists(resolve(flags.out))))
    throw new DeployCommandError(`--out: ${resolve(flags.out)} already exists; nothing was deployed.`, {
      flag: "--out",
    });
  const account = privateKeyToAccount(key);
  const chain = defineCrynuxChain({
    id: flags["chain-id"],
    name: `chain ${flags["chain-id"]}`,
    rpcUrl: flags["rpc-url"],
  });
  const transport = http(flags["rpc-url"]);
  const publicClient = createPublicClient({ chain, transport });
  const walletClient = createWalletClient({ account, chain, transport });
  const rpc = new URL(flags["rpc-url"]).origin; // the path may hold an API key

  let chainId: number;
  try {
    chainId = await publicClient.getChainId();
  } catch (cause) {
    throw new DeployCommandError(`--rpc-url: no answer from ${rpc}.`, {
      flag: "--rpc-url",
      details: describe(cause),
      cause,
    });
  }
  if (chainId !== flags["chain-id"])
    throw new DeployCommandError(
      `--chain-id: the RPC at ${rpc} serves chain ${chainId}, not ${flags["chain-id"]}; nothing was deployed.`,
      { flag: "--chain-id" },
    );
  const balance = await publicClient.getBalance({ address: account.address });
  if (balance === 0n)
    throw new DeployCommandError(`The deployer ${account.address} has no funds on chain ${chainId}.`);
  // Every contract is created after this block, so indexers that start here miss no event.
  const blockNumber = Number(await publicClient.getBlockNumber());

  log(
    `Deploying the Crynux contracts to chain ${chainId} (${rpc}) from ${account.address} ` +
      `(balance ${formatEther(balance)} CNX): 6 contracts, then 6 wiring calls and one call per setting.`,
  );
  const options: DeployCrynuxOptions = {
    ...(flags.stake === undefined ? {} : { stake: flags.stake }),
    ...(flags["absence-penalty"] === undefined ? {} : { absencePenalty: flags["absence-penalty"] }),
    ...(flags.timeout === undefined ? {} : { timeoutSeconds: flags.timeout }),
    ...(flags["commit-timeout"] === undefined ? {} : { commitTimeoutSeconds: flags["commit-timeout"] }),
    ...(flags["queue-size"] === undefined ? {} : { queueSizeLimit: flags["queue-size"] }),
    ...(flags["max-groups"] === undefined ? {} : { maxGroups: flags["max-groups"] }),
    ...(flags["distance-threshold"] === undefined ? {} : { distanceThreshold: flags["distance-threshold"] }),
    ...(flags.treasury === undefined ? {} : { treasury: flags.treasury }),
  };
  let contracts: CrynuxDeployment;
  try {
    contracts = await deployCrynux(walletClient, publicClient, options);
  } catch (cause) {
    throw new DeployCommandError("The deployment failed.", { details: describe(cause), cause });
  }
  // Checksummed, as the configs and explorers print them (receipts give lowercase addresses).
  const checksummed = Object.fromEntries(
    Object.entries(contracts).map(([name, address]) => [name, getAddress(address)]),
  ) as CrynuxDeployment;
  return { chainId, blockNumber, ...checksummed, owner: account.address };
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
