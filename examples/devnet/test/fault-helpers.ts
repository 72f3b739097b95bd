// Test-only building blocks for the fault-injection tests: anvil with the contracts, the relay and the bridge
// as real child processes (their CLIs, PGlite on disk) that can be SIGKILLed and restarted on the same port
// and data directory, and three in-process nodes on a shared GPT executor (as `startDevnet` builds them).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRelayClient } from "@crynux/client";
import { type CrynuxDeployment, deployCrynux } from "@crynux/contracts";
import { type AnvilInstance, startAnvil } from "@crynux/contracts/testing";
import {
  type CrynuxNode,
  createGptExecutor,
  createModelResolver,
  createNode,
  type GptExecutor,
  jsonLinesLogger,
} from "@crynux/node-core";
import { type DevnetModel, prepareModel } from "../src/model.js";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const CLIS = {
  relay: join(REPO, "examples/relay/src/cli.ts"),
  bridge: join(REPO, "examples/bridge/src/cli.ts"),
} as const;

/** Anvil accounts: 0 deploys, 1–3 are the nodes, 4 the app, 5 the bridge wallet, 6–9 spare creators. */
export const ACCOUNTS = { deployer: 0, nodes: [1, 2, 3], app: 4, bridge: 5, spare: [6, 7, 8, 9] } as const;
/** All three nodes register this card, so they form one group and every GPT task can use them. */
export const CARD = { gpuName: "Crynux Faults CPU", gpuVram: 8 };
/** Set FAULTS_LOG=1 to see the nodes' logs and the services' output on stderr. */
export const VERBOSE = process.env.FAULTS_LOG === "1";

/** A port nothing listens on now (the service binds it itself, and again after each restart). */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw error;
  }
}

/** One run of a service CLI (`crynux-relay` or `crynux-bridge`). */
export type ServiceProcess = {
  kind: keyof typeof CLIS;
  child: ChildProcess;
  pid: number;
  url: string;
  /** stdout and stderr, line by line. */
  log: string[];
  /** Resolves with the exit code (null) and signal once the process is gone. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
};

/** Every service process the helpers started and has not seen exit yet: `killAll` ends them by PID. */
const started = new Set<ServiceProcess>();

/**
 * Starts a service CLI from the sources (`node --conditions=source --import tsx cli.ts --config … --port …`)
 * and resolves once it logs where it listens. Rejects (after killing it) if it exits or takes too long.
 */
export async function spawnService(
  kind: keyof typeof CLIS,
  options: { config: string; port: number; timeoutMs?: number },
): Promise<ServiceProcess> {
  const child = spawn(
    process.execPath,
    [
      "--conditions=source",
      "--import",
      "tsx",
      CLIS[kind],
      "--config",
      options.config,
      "--port",
      `${options.port}`,
    ],
    { cwd: REPO, env: { ...process.env, FORCE_COLOR: "0" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  if (child.pid === undefined) throw new Error(`${kind}: the process did not start`);
  const log: string[] = [];
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (!line.trim()) continue;
      log.push(line);
      if (VERBOSE) console.error(`[${kind} ${child.pid}] ${line}`);
    }
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const service: ServiceProcess = {
    kind,
    child,
    pid: child.pid,
    url: `http://127.0.0.1:${options.port}`,
    log,
    exit,
  };
  started.add(service);
  void exit.then(() => started.delete(service));

  // A loaded 2-core machine takes a minute to start tsx and create a PGlite database.
  const deadline = Date.now() + (options.timeoutMs ?? 240_000);
  for (;;) {
    if (log.some((line) => line.includes("listening on"))) return service;
    const exited = child.exitCode !== null || child.signalCode !== null;
    if (exited || Date.now() > deadline) {
      await kill9(service);
      throw new Error(
        `${kind} ${exited ? "exited" : "did not start in time"}; its output:\n${log.slice(-40).join("\n")}`,
      );
    }
    await sleep(100);
  }
}

/** SIGKILL: no handler runs, nothing is flushed or closed. Resolves once the process is gone. */
export async function kill9(service: ServiceProcess): Promise<void> {
  if (service.child.exitCode === null && service.child.signalCode === null) {
    try {
      process.kill(service.pid, "SIGKILL");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
    }
  }
  await service.exit;
}

/** SIGTERM (a clean stop: the CLI closes its database); SIGKILL if it is still running after `graceMs`. */
export async function terminate(service: ServiceProcess, graceMs = 30_000): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  process.kill(service.pid, "SIGTERM");
  const stopped = await Promise.race([service.exit.then(() => true), sleep(graceMs).then(() => false)]);
  if (!stopped) await kill9(service);
}

/** Kills, by PID, every service process still running (afterAll, whatever the tests did). */
export async function killAll(): Promise<void> {
  await Promise.all([...started].map((service) => kill9(service)));
}

export type FaultNetwork = {
  dir: string;
  anvil: AnvilInstance;
  contracts: CrynuxDeployment;
  deploymentBlock: bigint;
  model: DevnetModel;
  executor: GptExecutor;
  nodes: CrynuxNode[];
  /**
   * Buries transactions under the confirmation depth: one block per `blockIntervalMs`, one at a time (with
   * automine off, the only blocks). After each block `afterMine` may stop the miner (it then mines nothing
   * more until started again).
   */
  startMining(options?: { afterMine?: () => Promise<boolean> }): void;
  /** Resolves once the miner is stopped, with no block of its own still being mined. */
  stopMining(): Promise<void>;
  /** Resolves when the miner stopped (by `stopMining` or by its `beforeMine`). */
  minerStopped(): Promise<void>;
  /** Starts the three nodes against `relayUrl`; `fetch` lets a test step into their relay requests. */
  startNodes(relayUrl: string, options?: { fetch?: typeof globalThis.fetch }): Promise<CrynuxNode[]>;
  stop(): Promise<void>;
};

/**
 * Anvil with the contracts deployed, the devnet's generated model and one GPT executor for all nodes. The
 * nodes start later (`startNodes`), once the test knows the relay's URL.
 */
export async function startFaultNetwork(options: {
  confirmations: number;
  blockIntervalMs?: number;
}): Promise<FaultNetwork> {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  const stop = async () => {
    const errors: unknown[] = [];
    for (const step of cleanup.reverse()) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    cleanup.length = 0;
    if (errors.length > 0) throw new AggregateError(errors, "The fault network did not stop cleanly.");
  };
  try {
    const dir = await mkdtemp(join(tmpdir(), "crynux-faults-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const model = await prepareModel();
    const anvil = await startAnvil({ accounts: 10 });
    cleanup.push(() => anvil.stop());
    const contracts = await deployCrynux(anvil.walletClient(ACCOUNTS.deployer), anvil.publicClient);
    const deploymentBlock = await anvil.publicClient.getBlockNumber();
    const executor = await createGptExecutor({
      resolveModel: createModelResolver({ modelDir: model.modelDir, cacheDir: model.cacheDir }),
    });
    cleanup.push(() => executor.dispose());

    // A loop rather than setInterval: after stopMining() resolves no block of the miner can still land.
    let miner: { stop: boolean; done: Promise<void> } | undefined;
    const stopMining = async () => {
      const running = miner;
      if (!running) return;
      running.stop = true;
      await running.done;
    };
    cleanup.push(stopMining);
    const nodes: CrynuxNode[] = [];
    cleanup.push(async () => {
      const results = await Promise.allSettled(nodes.map((node) => node.stop()));
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
    });

    return {
      dir,
      anvil,
      contracts,
      deploymentBlock,
      model,
      executor,
      nodes,
      startMining(miningOptions = {}) {
        if (miner && !miner.stop) return;
        const state: { stop: boolean; done: Promise<void> } = { stop: false, done: Promise.resolve() };
        state.done = (async () => {
          while (!state.stop) {
            await sleep(options.blockIntervalMs ?? 250);
            if (state.stop) break;
            await anvil.testClient.mine({ blocks: 1 }).catch(() => {});
            if (await miningOptions.afterMine?.().catch(() => false)) break;
          }
          if (miner === state) miner = undefined;
        })();
        miner = state;
      },
      stopMining,
      async minerStopped() {
        await miner?.done;
      },
      async startNodes(relayUrl, nodeOptions = {}) {
        for (const [i, index] of ACCOUNTS.nodes.entries()) {
          const walletClient = anvil.walletClient(index);
          nodes.push(
            createNode({
              publicClient: anvil.publicClient,
              walletClient,
              contracts,
              relayUrl,
              relay: createRelayClient({
                url: relayUrl,
                account: walletClient.account as never,
                pollIntervalMs: 200,
                ...(nodeOptions.fetch ? { fetch: nodeOptions.fetch } : {}),
              }),
              stateDir: join(dir, `node-${i + 1}`),
              gpt: executor,
              card: CARD,
              confirmations: options.confirmations,
              pollingIntervalMs: 100,
              argsWaitMs: 2000,
              ...(VERBOSE ? { logger: jsonLinesLogger({ level: "info", base: { node: i + 1 } }) } : {}),
            }),
          );
        }
        await Promise.all(nodes.map((node) => node.start()));
        return nodes;
      },
      stop,
    };
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
}

/** Writes the relay's JSON config (PGlite and blobs on disk under `dir`) and returns its path. */
export async function writeRelayConfig(
  network: FaultNetwork,
  dir: string,
  options: { confirmations: number },
): Promise<string> {
  const file = join(dir, "relay.json");
  await writeFile(
    file,
    JSON.stringify({
      rpcUrl: network.anvil.rpcUrl,
      taskContract: network.contracts.task,
      fromBlock: Number(network.deploymentBlock),
      confirmations: options.confirmations,
      pollingIntervalMs: 100,
      dataDir: "relay-db",
      blobDir: "relay-blobs",
    }),
  );
  return file;
}

/** Writes the bridge's JSON config (PGlite on disk under `dir`, one GPT model, one API key). */
export async function writeBridgeConfig(
  network: FaultNetwork,
  dir: string,
  options: { relayUrl: string; apiKey: string; modelId: string },
): Promise<string> {
  const file = join(dir, "bridge.json");
  // The bridge refuses a key written in its config file: it reads it from a file only its user can read.
  await writeFile(join(dir, "wallet.key"), network.anvil.accounts[ACCOUNTS.bridge]!.privateKey, {
    mode: 0o600,
  });
  await writeFile(
    file,
    JSON.stringify({
      rpcUrl: network.anvil.rpcUrl,
      relayUrl: options.relayUrl,
      privateKeyFile: "wallet.key",
      contracts: network.contracts,
      dataDir: "bridge-db",
      pollingIntervalMs: 200,
      relayWaitMs: 120_000,
      models: {
        [options.modelId]: { type: "gpt", model: network.model.ref, defaultMaxTokens: 8, maxTokens: 64 },
      },
      apiKeys: [{ name: "faults", key: options.apiKey }],
    }),
  );
  return file;
}
