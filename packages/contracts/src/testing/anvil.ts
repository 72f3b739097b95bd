import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import path from "node:path";
import {
  type Account,
  type Address,
  type Chain,
  createPublicClient,
  createTestClient,
  createWalletClient,
  type Hex,
  type HttpTransport,
  http,
  type PublicClient,
  type TestClient,
  toHex,
  type WalletClient,
} from "viem";
import { type HDAccount, mnemonicToAccount } from "viem/accounts";
import { defineCrynuxChain } from "../chains.js";
import { ContractsError } from "../errors.js";

/** The mnemonic anvil derives its dev accounts from (`m/44'/60'/0'/0/i`). */
export const ANVIL_MNEMONIC = "test test test test test test test test test test test junk";

export type StartAnvilOptions = {
  /** Chain id; default 31337. */
  chainId?: number;
  /** Number of funded dev accounts; default 10. */
  accounts?: number;
  /** Balance of every dev account in whole ether (CNX); default 10000. */
  balanceEther?: number;
  /** Seconds between blocks (interval mining); default: a block per transaction (auto-mining). */
  blockTime?: number;
  /** EVM hardfork; default "cancun", the `evmVersion` the contracts are compiled for. */
  hardfork?: string;
  /** Extra command-line arguments for anvil, e.g. `["--disable-code-size-limit"]`. */
  args?: string[];
  /** How long to wait for the RPC to answer, in milliseconds; default 20000. */
  startTimeoutMs?: number;
  /** Polling interval of the viem clients in milliseconds; default 50 (anvil mines instantly). */
  pollingInterval?: number;
  /** Path of the anvil binary; default: the `@foundry-rs/anvil-<platform>-<arch>` package's binary. */
  binary?: string;
};

export type AnvilAccount = { address: Address; privateKey: Hex };

export type AnvilInstance = {
  rpcUrl: string;
  port: number;
  /** Process id of the anvil child process. */
  pid: number;
  chain: Chain;
  /** The funded dev accounts, derived from {@link ANVIL_MNEMONIC}. */
  accounts: AnvilAccount[];
  publicClient: PublicClient<HttpTransport, Chain>;
  /** Anvil cheat codes: mine, snapshot/revert, setBalance, impersonateAccount, increaseTime, ... */
  testClient: TestClient<"anvil", HttpTransport, Chain>;
  /** A wallet client signing locally with dev account `index` (default 0). */
  walletClient(index?: number): WalletClient<HttpTransport, Chain, Account>;
  /** Stops anvil (SIGTERM, then SIGKILL after 2 s) and resolves once the process has exited. */
  stop(): Promise<void>;
};

/** Thrown when anvil cannot be found or does not start. */
export class AnvilError extends ContractsError {
  override name = "AnvilError";
}

const ARCH: Partial<Record<NodeJS.Architecture, string>> = { x64: "amd64", arm64: "arm64" };

/** Path of the anvil binary shipped by the `@foundry-rs/anvil` npm package for this platform. */
export function anvilBinaryPath(): string {
  const arch = ARCH[process.arch] ?? process.arch;
  const platformPackage = `@foundry-rs/anvil-${process.platform}-${arch}`;
  const require = createRequire(import.meta.url);
  const candidates = [() => require.resolve(`${platformPackage}/package.json`)];
  // Not hoisted (pnpm, nested installs): the platform package sits next to @foundry-rs/anvil.
  candidates.push(() =>
    createRequire(require.resolve("@foundry-rs/anvil/package.json")).resolve(
      `${platformPackage}/package.json`,
    ),
  );
  for (const resolve of candidates) {
    try {
      const binary = path.join(
        path.dirname(resolve()),
        "bin",
        process.platform === "win32" ? "anvil.exe" : "anvil",
      );
      if (existsSync(binary)) return binary;
    } catch {
      // try the next way to find it
    }
  }
  throw new AnvilError(
    `anvil binary not found: the package ${platformPackage} is not installed`,
    `Install the anvil npm package (npm install -D @foundry-rs/anvil); its optional dependency ${platformPackage} ` +
      `carries the binary for ${process.platform}/${process.arch}. Or pass { binary } to startAnvil.`,
  );
}

// Every anvil this process started and has not yet seen exit: killed when the process exits.
const running = new Set<ChildProcess>();
let exitHooksInstalled = false;

function killAllSync(): void {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  running.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on("exit", killAllSync);
  // A signal skips 'exit' handlers. Kill the children, and when nobody else handles the signal,
  // re-raise it so the process still dies the way it would have.
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = (): void => {
      killAllSync();
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
}

// Deriving an account runs PBKDF2 over the mnemonic (~40 ms); the dev accounts are the same in every instance.
const accountCache = new Map<number, HDAccount>();
function devAccount(index: number): HDAccount {
  let account = accountCache.get(index);
  if (!account) {
    account = mnemonicToAccount(ANVIL_MNEMONIC, { addressIndex: index });
    accountCache.set(index, account);
  }
  return account;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Launch = { child: ChildProcess; output: () => string; exited: Promise<number | null> };

function launch(binary: string, args: string[]): Launch {
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const capture = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-16_384);
  };
  child.stdout?.on("data", capture);
  child.stderr?.on("data", capture);
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve(code ?? (signal ? -1 : null));
    });
    child.once("error", (error) => {
      running.delete(child);
      output += `\n${error.message}`;
      resolve(null);
    });
  });
  if (child.pid !== undefined) running.add(child);
  return { child, output: () => output, exited };
}

async function rpcChainId(rpcUrl: string): Promise<number | undefined> {
  try {
    const response = await fetch(rpcUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
      signal: AbortSignal.timeout(1_000),
    });
    if (!response.ok) return undefined;
    const body = (await response.json()) as { result?: string };
    return body.result ? Number.parseInt(body.result, 16) : undefined;
  } catch {
    return undefined;
  }
}

function stopChild(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 2_000);
  return exited.then(() => clearTimeout(timer));
}

/**
 * Starts an anvil node on a free port of 127.0.0.1 and returns viem clients bound to it. Call `stop()`
 * when done; any instance still running when the process exits is killed.
 *
 * @example
 * const anvil = await startAnvil();
 * try {
 *   const hash = await anvil.walletClient(0).sendTransaction({ to: anvil.accounts[1]!.address, value: 1n });
 *   await anvil.publicClient.waitForTransactionReceipt({ hash });
 * } finally {
 *   await anvil.stop();
 * }
 */
export async function startAnvil(options: StartAnvilOptions = {}): Promise<AnvilInstance> {
  const {
    chainId = 31337,
    accounts: accountCount = 10,
    balanceEther = 10_000,
    blockTime,
    hardfork = "cancun",
    args = [],
    startTimeoutMs = 20_000,
    pollingInterval = 50,
  } = options;
  const binary = options.binary ?? anvilBinaryPath();
  installExitHooks();

  // anvil binds an ephemeral port itself (`--port 0`) and prints it: no window in which another process
  // could take a port chosen here, and no chance of talking to somebody else's node on that port.
  const commandLine = [
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--chain-id",
    String(chainId),
    "--accounts",
    String(accountCount),
    "--balance",
    String(balanceEther),
    "--hardfork",
    hardfork,
    ...(blockTime === undefined ? [] : ["--block-time", String(blockTime)]),
    ...args,
  ];
  const launched = launch(binary, commandLine);
  let exitCode: number | null | undefined;
  void launched.exited.then((code) => {
    exitCode = code;
  });
  const deadline = Date.now() + startTimeoutMs;
  let port: number | undefined;
  let answeredChainId: number | undefined;
  while (exitCode === undefined && Date.now() < deadline) {
    port ??= Number(/Listening on 127\.0\.0\.1:(\d+)/.exec(launched.output())?.[1]) || undefined;
    if (port !== undefined) {
      answeredChainId = await rpcChainId(`http://127.0.0.1:${port}`);
      if (answeredChainId !== undefined) break;
    }
    await sleep(25);
  }
  if (port === undefined || answeredChainId !== chainId || exitCode !== undefined) {
    await stopChild(launched.child, launched.exited);
    const output = launched.output().trim();
    const what =
      exitCode !== undefined
        ? `anvil exited (code ${exitCode}) before answering`
        : port === undefined
          ? `anvil did not report its port within ${startTimeoutMs} ms`
          : answeredChainId !== undefined
            ? `anvil answered with chain id ${answeredChainId}, not ${chainId}`
            : `anvil did not answer eth_chainId on port ${port} within ${startTimeoutMs} ms`;
    throw new AnvilError(
      what,
      [`command: ${binary} ${commandLine.join(" ")}`, output ? `output:\n${output}` : "no output"].join("\n"),
    );
  }
  const rpcUrl = `http://127.0.0.1:${port}`;
  const { child } = launched;
  // A forgotten stop() must not keep the process alive: the 'exit' hook kills anvil instead.
  child.unref();
  (child.stdout as Socket | null)?.unref();
  (child.stderr as Socket | null)?.unref();
  const chain = defineCrynuxChain({ id: chainId, name: "Crynux Anvil", rpcUrl, testnet: true });
  const transport = http(rpcUrl, { retryCount: 0 });
  const accounts = Array.from({ length: accountCount }, (_, index) => {
    const account = devAccount(index);
    return { address: account.address, privateKey: toHex(account.getHdKey().privateKey!) };
  });
  const walletClients = new Map<number, WalletClient<HttpTransport, Chain, Account>>();

  return {
    rpcUrl,
    port,
    pid: child.pid!,
    chain,
    accounts,
    // No caching: tests read right after they mine or write.
    publicClient: createPublicClient({ chain, transport, pollingInterval, cacheTime: 0 }),
    testClient: createTestClient({ chain, mode: "anvil", transport, pollingInterval, cacheTime: 0 }),
    walletClient(index = 0) {
      if (!Number.isInteger(index) || index < 0 || index >= accountCount) {
        throw new AnvilError(`No dev account ${index}: this anvil has accounts 0 to ${accountCount - 1}`);
      }
      let client = walletClients.get(index);
      if (!client) {
        client = createWalletClient({
          account: devAccount(index),
          chain,
          transport,
          pollingInterval,
          cacheTime: 0,
        });
        walletClients.set(index, client);
      }
      return client;
    },
    stop: () => stopChild(child, launched.exited),
  };
}

/** Runs `fn` against a fresh anvil and stops it afterwards, also when `fn` throws. */
export async function withAnvil<T>(
  fn: (anvil: AnvilInstance) => Promise<T> | T,
  options?: StartAnvilOptions,
): Promise<T> {
  const anvil = await startAnvil(options);
  try {
    return await fn(anvil);
  } finally {
    await anvil.stop();
  }
}
