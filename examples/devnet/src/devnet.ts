import { readFileSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { defaultCacheDir } from "./model.js";
import { type Devnet, devnetEnv, startDevnet } from "./network.js";
import { onShutdownSignal } from "./signals.js";

const USAGE = `Usage:
  npm run devnet [-- --model <hf:owner/repo/file.gguf | owner/repo:QUANT | path.gguf>] [--seed n]
                    [--api-key sk-…] [--faucet-port n] [--block-interval ms] [--nodes n] [--verbose]
      starts a local Crynux network and keeps it running until Ctrl-C
  npm run devnet -- faucet <address> <amount in CNX> [--url http://127.0.0.1:<port>]
      sends CNX to an address through the running devnet's faucet`;

/** Where a running devnet says how to reach it (for `devnet faucet`). */
const stateFile = () => join(defaultCacheDir(), "running.json");

async function faucetCommand(positionals: string[], url: string | undefined): Promise<number> {
  const [address, amount] = positionals;
  if (!address || !amount) {
    console.error(USAGE);
    return 2;
  }
  let base = url;
  if (!base) {
    try {
      base = (JSON.parse(readFileSync(stateFile(), "utf8")) as { urls: { faucet?: string } }).urls.faucet;
    } catch {
      console.error(
        `No running devnet found (${stateFile()}); start one with \`npm run devnet\`, or pass --url.`,
      );
      return 1;
    }
  }
  const response = await fetch(`${base}/faucet`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ address, amount }),
  }).catch((error: unknown) => {
    console.error(`The faucet at ${base} does not answer: ${error instanceof Error ? error.message : error}`);
    return undefined;
  });
  if (!response) return 1;
  const text = await response.text();
  if (!response.ok) {
    console.error(`faucet: ${response.status} ${text.trim()}`);
    return 1;
  }
  const { txHash } = JSON.parse(text) as { txHash: string };
  console.log(`sent ${amount} CNX to ${address} (${txHash})`);
  return 0;
}

function describe(devnet: Devnet): string {
  const { urls, contracts, accounts } = devnet;
  const pad = (s: string) => s.padEnd(14);
  const lines = [
    "",
    "Crynux devnet is running. Ctrl-C stops it.",
    "",
    "URLs",
    `  ${pad("chain RPC")}${urls.rpc}   (chain id ${devnet.chainId}, native currency CNX)`,
    `  ${pad("relay")}${urls.relay}`,
    `  ${pad("bridge")}${urls.openai}   (OpenAI base URL)`,
    ...(urls.faucet ? [`  ${pad("faucet")}${urls.faucet}/faucet`] : []),
    "",
    "Bridge",
    `  ${pad("API key")}${devnet.apiKey}`,
    `  ${pad("model")}${devnet.model.bridgeModel}  →  ${devnet.model.ref}`,
    "",
    "Contracts (deployment file for nodes, relays and bridges)",
    ...JSON.stringify(
      { ...contracts, chainId: devnet.chainId, blockNumber: Number(devnet.deploymentBlock) },
      null,
      2,
    )
      .split("\n")
      .map((line) => `  ${line}`),
    "",
    "Accounts (anvil's well-known dev keys: never use them on a real chain)",
    ...[accounts.deployer, ...accounts.nodes, accounts.app, accounts.bridgeWallet, ...accounts.users].map(
      (a) => `  ${a.role.padEnd(32)} ${a.address}  ${a.privateKey}`,
    ),
    "",
    "Try it",
    `  curl -s ${urls.openai}/chat/completions -H "Authorization: Bearer ${devnet.apiKey}" \\`,
    `    -H "content-type: application/json" \\`,
    `    -d '{"model":"${devnet.model.bridgeModel}","messages":[{"role":"user","content":"Hi"}],"max_tokens":16}'`,
    ...(urls.faucet
      ? [
          `  curl -s ${urls.faucet}/faucet -H "content-type: application/json" -d '{"address":"0x…","amount":"10"}'`,
          "  npm run devnet -- faucet 0x… 10",
        ]
      : []),
    "",
    "SDK (the dApp quick start of packages/client/README.md reads these; paste them into your shell)",
    ...Object.entries(devnetEnv(devnet)).map(([name, value]) => `  export ${name}='${value}'`),
    "",
  ];
  return lines.join("\n");
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      model: { type: "string" },
      seed: { type: "string" },
      "api-key": { type: "string" },
      "faucet-port": { type: "string" },
      "block-interval": { type: "string" },
      nodes: { type: "string" },
      url: { type: "string" },
      verbose: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals[0] === "faucet") return faucetCommand(positionals.slice(1), values.url);
  if (positionals.length > 0) {
    console.error(USAGE);
    return 2;
  }
  const number = (value: string | undefined, name: string) => {
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer.`);
    return n;
  };

  let starting: Promise<Devnet> | undefined;
  let stopping: Promise<void> | undefined;
  onShutdownSignal(() => {
    console.log("\nstopping the devnet");
    stopping = (async () => {
      await rm(stateFile(), { force: true });
      // A signal during the start stops what has started once the start is done (or has failed).
      const devnet = await starting?.catch(() => undefined);
      await devnet?.stop();
    })();
    stopping.then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  });

  const nodeCount = number(values.nodes, "nodes") ?? 3;
  console.log(`starting a Crynux devnet: anvil + contracts + relay + ${nodeCount} nodes + bridge`);
  starting = startDevnet({
    model: values.model,
    seed: number(values.seed, "seed"),
    apiKey: values["api-key"],
    faucetPort: number(values["faucet-port"], "faucet-port") ?? 0,
    blockIntervalMs: number(values["block-interval"], "block-interval") ?? 1000,
    nodeCount,
    log: (line) => console.log(`  ${line}`),
    nodeLogLevel: values.verbose ? "info" : undefined,
  });
  const devnet = await starting;
  if (stopping) return new Promise<number>(() => {});
  await mkdir(defaultCacheDir(), { recursive: true });
  await writeFile(
    stateFile(),
    `${JSON.stringify({ pid: process.pid, urls: devnet.urls, chainId: devnet.chainId, contracts: devnet.contracts }, null, 2)}\n`,
  );
  console.log(describe(devnet));
  // Runs until a signal.
  return new Promise<number>(() => {});
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
