import { mkdir, open, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Address } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { DEFAULT_CONFIG_FILE } from "./config.js";
import { NodeConfigError, NodeProgramError } from "./errors.js";

/** Name of the key file `init` writes next to the config. */
export const DEFAULT_KEY_FILE = "node.key";

export type InitNodeParameters = {
  /** Directory to write into (created when missing). */
  dir: string;
  rpcUrl?: string | undefined;
  relayUrl?: string | undefined;
  chainId?: number | undefined;
  /** Deployment file (relative to `dir`, or absolute). */
  deploymentFile?: string | undefined;
  /** Overwrite an existing config file (an existing key is always kept). */
  force?: boolean | undefined;
};

export type InitNodeResult = {
  configFile: string;
  keyFile: string;
  address: Address;
  /** False when a key file was already there (and kept). */
  keyCreated: boolean;
};

/**
 * `crynux-node init`: writes a commented example config and, if there is none, a new private key file
 * readable by its owner only (0600). Never overwrites a key.
 */
export async function initNode(parameters: InitNodeParameters): Promise<InitNodeResult> {
  const dir = resolve(parameters.dir);
  await mkdir(dir, { recursive: true });
  const configFile = join(dir, DEFAULT_CONFIG_FILE);
  const keyFile = join(dir, DEFAULT_KEY_FILE);

  // Refuse before touching the key, so a refused init leaves the directory as it was.
  if (!parameters.force && (await exists(configFile)))
    throw new NodeProgramError(`${configFile} already exists; pass --force to overwrite it.`, {
      exitCode: 2,
    });

  let keyCreated = false;
  let key: `0x${string}`;
  try {
    // "wx": fails if the file exists, so a key is never replaced, even by a racing init.
    const handle = await open(keyFile, "wx", 0o600);
    key = generatePrivateKey();
    try {
      await handle.writeFile(`${key}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    keyCreated = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const existing = (await readFile(keyFile, "utf8")).trim();
    if (!/^0x[0-9a-fA-F]{64}$/.test(existing))
      throw new NodeConfigError(`${keyFile} exists but does not hold a private key; move it away first.`);
    key = existing as `0x${string}`;
  }

  const text = exampleConfig({
    rpcUrl: parameters.rpcUrl ?? "http://127.0.0.1:8545",
    relayUrl: parameters.relayUrl ?? "http://127.0.0.1:8088",
    chainId: parameters.chainId,
    deploymentFile: parameters.deploymentFile ?? "./deployment.json",
    keyFile: `./${DEFAULT_KEY_FILE}`,
  });
  try {
    const handle = await open(configFile, parameters.force ? "w" : "wx", 0o644);
    try {
      await handle.writeFile(text);
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST")
      throw new NodeProgramError(`${configFile} already exists; pass --force to overwrite it.`, {
        exitCode: 2,
      });
    throw error;
  }
  return { configFile, keyFile, address: privateKeyToAccount(key).address, keyCreated };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The commented config `init` writes (JSON with comments; every field shown has its default). */
export function exampleConfig(values: {
  rpcUrl: string;
  relayUrl: string;
  chainId?: number | undefined;
  deploymentFile: string;
  keyFile: string;
}): string {
  const s = JSON.stringify;
  return `// Crynux node configuration (JSON with comments). Relative paths are relative to this file.
// Every field can also be set by a CRYNUX_NODE_* environment variable: see examples/node/README.md.
{
  "chain": {
    // JSON-RPC endpoint of the chain the Crynux contracts live on.
    "rpcUrl": ${s(values.rpcUrl)},
    ${values.chainId === undefined ? "// " : ""}"chainId": ${values.chainId ?? 31337},
    // The deployment file: { "node": "0x…", "task": "0x…", … }. Or give the addresses instead:
    // "contracts": { "node": "0x…", "task": "0x…" },
    "deploymentFile": ${s(values.deploymentFile)}
  },
  // The relay that stores task arguments and results.
  "relayUrl": ${s(values.relayUrl)},
  "account": {
    // The node's key (0600). CRYNUX_NODE_PRIVATE_KEY overrides it. Never share it.
    "privateKeyFile": ${s(values.keyFile)}
  },
  // Task records and the chain cursor: keep it across restarts (one directory per account).
  "stateDir": "./state",
  "models": {
    "modelDir": "./models",
    "cacheDir": "./cache",
    "offline": false,
    // Models downloaded and quantized before the node joins, e.g.
    // { "model": "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-fp16.gguf", "quantizeBits": 4 }
    "prepare": []
  },
  // The execution profile is part of the node's group: change it only to join another group.
  "gpt": { "threads": 1, "batchSize": 512, "contextSize": 4096 },
  // An AUTOMATIC1111 WebUI (started with --api) for SD tasks:
  // "sd": { "kind": "automatic1111", "url": "http://127.0.0.1:7860" },
  // The card to register instead of the detected one:
  // "card": { "gpuName": "NVIDIA GeForce RTX 4090", "gpuVram": 24 },
  // Stake in CNX (default: the Node contract's stake amount):
  // "stake": "400",
  "confirmations": 2,
  "pollingIntervalMs": 1000,
  // The status API (pause / resume / quit only from this machine).
  "api": { "host": "127.0.0.1", "port": 8089 },
  "log": { "level": "info", "format": "json" }
}
`;
}
