import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CrynuxClient, createCrynuxClient, createHeadWatcher, createRelayClient } from "@crynux/client";
import { type CrynuxDeployment, deployCrynux, nodeAbi, taskAbi } from "@crynux/contracts";
import { type AnvilInstance, startAnvil } from "@crynux/contracts/testing";
import { type RunningBridge, startBridge } from "@crynux/example-bridge";
import { IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import {
  type CrynuxNode,
  createGptExecutor,
  createModelResolver,
  createNode,
  type GptExecutor,
  jsonLinesLogger,
} from "@crynux/node-core";
import { formatCnx } from "@crynux/pricing";
import { gptResultHash } from "@crynux/tasks";
import { type Address, type Hex, http } from "viem";
import { startFaucetServer } from "./faucet.js";
import { type DevnetModel, type PrepareModelOptions, prepareModel } from "./model.js";

export type DevnetAccount = { role: string; address: Address; privateKey: Hex };

export type StartDevnetOptions = PrepareModelOptions & {
  /**
   * Blocks an event must be buried under before the relay and the nodes act on it. With 1 (the default) a
   * block is mined every `blockIntervalMs` besides the blocks of transactions, so that events get buried;
   * with 0 nothing is mined but transactions.
   */
  confirmations?: 0 | 1 | undefined;
  /** Interval of the block miner (confirmations 1); default 250 ms. */
  blockIntervalMs?: number | undefined;
  /** The bridge's API key; default a random `sk-devnet-…`. */
  apiKey?: string | undefined;
  /** The bridge's model id (what OpenAI clients put in `model`); default `crynux-devnet`. */
  bridgeModel?: string | undefined;
  /**
   * Gives the third node a test-only executor that alters its answers while `cheater.setCheating(true)` is on,
   * so that it disagrees with the two others and is slashed. Default false.
   */
  cheater?: boolean | undefined;
  /** Port of the HTTP faucet (`POST /faucet`); default 0, a free port. `false`: no faucet server. */
  faucetPort?: number | false | undefined;
  /**
   * How many nodes join (default 3, the least a task needs). They all register the same card, so every GPT
   * task can use any three of them; nodes beyond the third use anvil accounts 10 and up.
   */
  nodeCount?: number | undefined;
  /**
   * New heads pushed over anvil's WebSocket (`createHeadWatcher`) to the relay, the nodes, the bridge and `app`:
   * they look at the chain when a block comes and poll only once a second, as a fallback. Less work per task
   * than polling every 100–200 ms (the network benchmark runs with it). Default false: with pushed heads the
   * honest nodes see the third commitment as fast as the `cheater` discloses, and the demo's slashing would
   * depend on which disclosure lands first.
   */
  pushHeads?: boolean | undefined;
  /** Progress lines while starting and stopping. */
  log?: ((line: string) => void) | undefined;
  /** JSON log lines of the nodes (and indexer errors of the relay) on stderr at this level. Default: none. */
  nodeLogLevel?: "debug" | "info" | "warn" | "error" | undefined;
};

export type Devnet = {
  urls: {
    /** Chain JSON-RPC (anvil). */
    rpc: string;
    relay: string;
    /** The bridge; OpenAI clients take `openai` as their base URL. */
    bridge: string;
    openai: string;
    /** The HTTP faucet (`POST /faucet`), unless started with `faucetPort: false`. */
    faucet: string | undefined;
  };
  chainId: number;
  /** Funded accounts with their keys (anvil's dev accounts: never use them on a real chain). */
  accounts: {
    deployer: DevnetAccount;
    nodes: DevnetAccount[];
    /** The account of `app`, the SDK client the demo creates tasks with. */
    app: DevnetAccount;
    /** The bridge's application wallet. */
    bridgeWallet: DevnetAccount;
    /** Spare funded accounts, for wallets and scripts. */
    users: DevnetAccount[];
  };
  contracts: CrynuxDeployment;
  /** Block the contracts were deployed in: a good `fromBlock` for event queries. */
  deploymentBlock: bigint;
  model: DevnetModel & { bridgeModel: string };
  apiKey: string;
  /** SDK client of `accounts.app`. */
  app: CrynuxClient;
  anvil: AnvilInstance;
  relay: RunningRelay;
  bridge: RunningBridge;
  nodes: CrynuxNode[];
  executor: GptExecutor;
  /** Present with the `cheater` option: the third node, and the switch of its altered answers. */
  cheater: { node: CrynuxNode; setCheating(on: boolean): void } | undefined;
  /** Sends `amount` wei of CNX (the chain's native currency) from the deployer to `address`. */
  faucet(address: Address, amount: bigint): Promise<Hex>;
  /** PIDs of the processes this devnet started (anvil: everything else runs in this process). */
  childPids(): number[];
  /** Stops everything, in the reverse order of the start, and removes the temporary directory. Idempotent. */
  stop(): Promise<void>;
};

/** All three nodes register the same card and runtime, so they form one group and every GPT task can use them. */
const CARD = { gpuName: "Crynux Devnet CPU", gpuVram: 8 };
const ROLES = { deployer: 0, nodes: [1, 2, 3], app: 4, bridgeWallet: 5, users: [6, 7, 8, 9] } as const;

/** Anvil account indices of the nodes: 1–3 (as always), then 10, 11, … */
const nodeIndices = (count: number): number[] =>
  Array.from({ length: count }, (_, i) =>
    i < ROLES.nodes.length ? ROLES.nodes[i]! : 10 + i - ROLES.nodes.length,
  );

/**
 * Starts a whole Crynux network on this machine: anvil (free port), the contracts, the relay (in-memory
 * index), three nodes and the bridge.
 *
 * The nodes run in this process and share one GPT executor (one node-llama-cpp engine, one thread, the model
 * loaded once). Three node processes would each load the engine and the model and compete for the cores; on a
 * small machine the shared executor keeps tasks fast, and it is still a true network: each node has its own
 * key, state directory, chain watcher, relay client and transaction sender, and executes every task itself
 * (the executor runs tasks one at a time). The only child process is anvil.
 */
export async function startDevnet(options: StartDevnetOptions = {}): Promise<Devnet> {
  const log = options.log ?? (() => {});
  const confirmations = options.confirmations ?? 1;
  const nodeCount = options.nodeCount ?? 3;
  if (!Number.isInteger(nodeCount) || nodeCount < 3 || nodeCount > 100) {
    throw new RangeError(`nodeCount must be an integer from 3 to 100 (got ${nodeCount}).`);
  }
  const nodeIndex = nodeIndices(nodeCount);
  // What to undo, pushed as each part starts: stop() (and a failed start) runs it backwards.
  const cleanup: { name: string; run: () => Promise<unknown> | unknown }[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      const errors: unknown[] = [];
      for (const step of cleanup.reverse()) {
        try {
          await step.run();
          log(`stopped ${step.name}`);
        } catch (error) {
          errors.push(error);
        }
      }
      if (errors.length > 0)
        throw new AggregateError(errors, "Some parts of the devnet did not stop cleanly.");
    })();
    return stopping;
  };

  try {
    const model = await prepareModel({ ...options, onProgress: options.onProgress ?? log });
    log(`model: ${model.description}${model.generated ? " — generated now, cached for the next runs" : ""}`);

    const dir = await mkdtemp(join(tmpdir(), "crynux-devnet-"));
    cleanup.push({ name: "temporary files", run: () => rm(dir, { recursive: true, force: true }) });

    const anvil = await startAnvil({ accounts: Math.max(10, ...nodeIndex.map((i) => i + 1)) });
    cleanup.push({ name: `anvil (pid ${anvil.pid})`, run: () => anvil.stop() });
    const account = (role: string, index: number): DevnetAccount => ({ role, ...anvil.accounts[index]! });
    const accounts: Devnet["accounts"] = {
      deployer: account("deployer, contract owner, faucet", ROLES.deployer),
      nodes: nodeIndex.map((index, i) => account(`node ${i + 1}`, index)),
      app: account("app (SDK)", ROLES.app),
      bridgeWallet: account("bridge wallet", ROLES.bridgeWallet),
      users: ROLES.users.map((index, i) => account(`user ${i + 1}`, index)),
    };
    log(`anvil: ${anvil.rpcUrl} (chain ${anvil.chain.id})`);

    const contracts = await deployCrynux(anvil.walletClient(ROLES.deployer), anvil.publicClient);
    const deploymentBlock = await anvil.publicClient.getBlockNumber();
    log(`contracts deployed at block ${deploymentBlock}: Task ${contracts.task}`);

    if (confirmations > 0) {
      // Transactions are mined at once (auto-mining); these blocks bury them under the confirmation depth.
      const miner = setInterval(() => {
        anvil.testClient.mine({ blocks: 1 }).catch(() => {});
      }, options.blockIntervalMs ?? 250);
      cleanup.push({ name: "block miner", run: () => clearInterval(miner) });
    }

    const quiet = options.nodeLogLevel === undefined;
    const webSocketUrl = options.pushHeads ? anvil.rpcUrl.replace(/^http/, "ws") : undefined;
    // polls are the fallback when heads are pushed
    const poll = (ms: number) => (webSocketUrl ? 1000 : ms);
    const heads = webSocketUrl
      ? createHeadWatcher({
          url: webSocketUrl,
          onError: quiet ? () => {} : (error) => console.error("devnet newHeads:", error.message),
        })
      : undefined;
    if (heads) cleanup.push({ name: "head watcher", run: () => heads.close() });
    const relay = await startRelay(
      {
        rpcUrl: anvil.rpcUrl,
        taskContract: contracts.task,
        fromBlock: Number(deploymentBlock),
        port: 0,
        confirmations,
        pollingIntervalMs: poll(100),
        webSocketUrl,
        dataDir: IN_MEMORY,
        blobDir: join(dir, "relay-blobs"),
        // A local network: any page (a dApp on a dev server, examples/chat) may call it.
        cors: ["*"],
      },
      { onIndexerError: quiet ? () => {} : (error) => console.error("relay indexer:", error) },
    );
    cleanup.push({ name: "relay", run: () => relay.stop() });
    log(`relay: ${relay.url}`);

    const executor = await createGptExecutor({
      resolveModel: createModelResolver({ modelDir: model.modelDir, cacheDir: model.cacheDir }),
    });
    cleanup.push({ name: "GPT executor", run: () => executor.dispose() });

    let cheating = false;
    const cheatingExecutor: Pick<GptExecutor, "execute" | "runtimeId" | "loadedModels"> = {
      runtimeId: executor.runtimeId,
      loadedModels: () => executor.loadedModels(),
      async execute(args, executeOptions) {
        const result = await executor.execute(args, executeOptions);
        if (!cheating) return result;
        // A dishonest node: it saves the work and makes up an answer, committing to what it made up.
        const response = structuredClone(result.response);
        for (const choice of response.choices) choice.message.content = "(made up without running the model)";
        await othersCommitted(executeOptions?.signal);
        return { ...result, response, resultHash: gptResultHash(response) };
      },
    };

    // The cheater commits last. A node discloses at once when its own commitment completes the three, while
    // the others wait for the next block to see it: so the cheater's wrong result is on-chain before the two
    // honest ones agree. (A node that finds the task already settled on another result withholds its own
    // disclosure, as node-core does, and would then not be slashed.)
    const cheaterAccount = accounts.nodes[accounts.nodes.length - 1]!.address;
    const othersCommitted = async (signal: AbortSignal | undefined) => {
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline && !signal?.aborted) {
        const [, , , , , taskId] = await anvil.publicClient.readContract({
          address: contracts.node,
          abi: nodeAbi,
          functionName: "getNodeInfo",
          args: [cheaterAccount],
        });
        if (taskId !== 0n) {
          const rounds = await Promise.all(
            [0n, 1n, 2n].map((round) =>
              anvil.publicClient.readContract({
                address: contracts.task,
                abi: taskAbi,
                functionName: "getRound",
                args: [taskId, round],
              }),
            ),
          );
          const others = rounds.filter(([node]) => node.toLowerCase() !== cheaterAccount.toLowerCase());
          if (others.every(([, commitPlace]) => commitPlace > 0)) return;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };

    const nodes = accounts.nodes.map((nodeAccount, i) => {
      const walletClient = anvil.walletClient(nodeIndex[i]!);
      const withCheater = options.cheater === true && i === accounts.nodes.length - 1;
      return createNode({
        publicClient: anvil.publicClient,
        walletClient,
        contracts,
        relayUrl: relay.url,
        relay: createRelayClient({
          url: relay.url,
          account: walletClient.account as never,
          pollIntervalMs: 200,
        }),
        stateDir: join(dir, `node-${i + 1}`),
        gpt: withCheater ? cheatingExecutor : executor,
        card: CARD,
        confirmations,
        pollingIntervalMs: poll(100),
        heads,
        argsWaitMs: 2000,
        ...(quiet
          ? {}
          : {
              logger: jsonLinesLogger({
                level: options.nodeLogLevel,
                base: { node: i + 1, address: nodeAccount.address },
              }),
            }),
      });
    });
    cleanup.push({
      name: "nodes",
      run: async () => {
        const results = await Promise.allSettled(nodes.map((node) => node.stop()));
        const failed = results.find((r) => r.status === "rejected");
        if (failed) throw failed.reason;
      },
    });
    await Promise.all(nodes.map((node) => node.start()));
    log(`nodes joined: ${nodes.map((node) => node.address).join(", ")}`);

    const apiKey = options.apiKey ?? `sk-devnet-${randomBytes(16).toString("hex")}`;
    const bridgeModel = options.bridgeModel ?? "crynux-devnet";
    const bridge = await startBridge(
      {
        host: "127.0.0.1",
        port: 0,
        rpcUrl: anvil.rpcUrl,
        webSocketUrl,
        relayUrl: relay.url,
        privateKey: accounts.bridgeWallet.privateKey,
        contracts,
        dataDir: IN_MEMORY,
        pollingIntervalMs: 200,
        models: { [bridgeModel]: { type: "gpt", model: model.ref, defaultMaxTokens: 32, maxTokens: 1024 } },
        apiKeys: [{ name: "devnet", key: apiKey }],
        cors: ["*"],
      },
      { onTaskError: quiet ? () => {} : (error) => console.error("bridge:", error) },
    );
    cleanup.push({ name: "bridge", run: () => bridge.stop() });
    log(`bridge: ${bridge.url}/v1`);

    const app = createCrynuxClient({
      chain: anvil.chain,
      transport: http(anvil.rpcUrl),
      account: anvil.walletClient(ROLES.app).account,
      relayUrl: relay.url,
      contracts,
      pollingInterval: 200,
      relay: { pollIntervalMs: 200 },
      heads,
    });

    // The deployer's nonce is taken from the chain per transaction: one transfer at a time.
    let faucetQueue: Promise<unknown> = Promise.resolve();
    const faucet = (address: Address, amount: bigint): Promise<Hex> => {
      const sent = faucetQueue.then(async () => {
        const hash = await anvil.walletClient(ROLES.deployer).sendTransaction({ to: address, value: amount });
        const receipt = await anvil.publicClient.waitForTransactionReceipt({ hash });
        if (receipt.status !== "success") throw new Error(`The faucet transfer ${hash} reverted.`);
        log(`faucet: ${formatCnx(amount)} CNX → ${address}`);
        return hash;
      });
      faucetQueue = sent.catch(() => {});
      return sent;
    };
    let faucetUrl: string | undefined;
    if (options.faucetPort !== false) {
      const server = await startFaucetServer({ send: faucet, port: options.faucetPort ?? 0 });
      cleanup.push({ name: "faucet", run: () => server.stop() });
      faucetUrl = server.url;
      log(`faucet: ${server.url}/faucet`);
    }

    return {
      urls: {
        rpc: anvil.rpcUrl,
        relay: relay.url,
        bridge: bridge.url,
        openai: `${bridge.url}/v1`,
        faucet: faucetUrl,
      },
      chainId: anvil.chain.id,
      accounts,
      contracts,
      deploymentBlock,
      model: { ...model, bridgeModel },
      apiKey,
      app,
      anvil,
      relay,
      bridge,
      nodes,
      executor,
      cheater:
        options.cheater === true
          ? {
              node: nodes[nodes.length - 1]!,
              setCheating: (on) => {
                cheating = on;
              },
            }
          : undefined,
      faucet,
      childPids: () => childPids(process.pid),
      stop,
    };
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
}

/**
 * Environment variables for an application on this devnet, as the dApp quick start of
 * packages/client/README.md reads them: chain, relay, contracts, a funded key (the first spare user account)
 * and the model the nodes serve. `npm run devnet` prints them as `export` lines.
 */
export function devnetEnv(devnet: Devnet): Record<string, string> {
  return {
    CRYNUX_RPC_URL: devnet.urls.rpc,
    CRYNUX_RELAY_URL: devnet.urls.relay,
    CRYNUX_CONTRACTS: JSON.stringify(devnet.contracts),
    CRYNUX_PRIVATE_KEY: devnet.accounts.users[0]!.privateKey,
    CRYNUX_MODEL: devnet.model.ref,
  };
}

/** Children of a process, from /proc (Linux); empty where /proc is not available. */
export function childPids(parent: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // Fields after the command name, which is in parentheses and may contain spaces: state, ppid, …
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === parent) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}
