import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRelayClient, type RelayClient } from "@crynux/client";
import { type CrynuxDeployment, deployCrynux, taskAbi, withSelectionGasMargin } from "@crynux/contracts";
import type { AnvilInstance } from "@crynux/contracts/testing";
import { IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import {
  type CrynuxNode,
  createGptExecutor,
  createModelResolver,
  createNode,
  type GptExecutor,
  generateTestModel,
  jsonLinesLogger,
} from "@crynux/node-core";
import { type GptTaskArgsInput, taskHash, workUnits } from "@crynux/tasks";
import { parseEventLogs, zeroHash } from "viem";

export const NODE_ACCOUNTS = [1, 2, 3] as const;
export const CREATOR = 4;
export const CNX = 10n ** 18n;
export const FEE = 3n * CNX;
/** All three nodes register the same card, so they form one GPT group. */
export const CARD = { gpuName: "Test CPU", gpuVram: 8 };
export { TaskState } from "@crynux/contracts";

/** Anvil + contracts + relay + a shared GPT executor on a tiny generated model, and helpers to drive tasks. */
export class Network {
  nodes: CrynuxNode[] = [];
  readonly stateDirs: string[] = [];
  private miner: ReturnType<typeof setInterval> | undefined;
  private constructor(
    readonly anvil: AnvilInstance,
    readonly deployment: CrynuxDeployment,
    readonly relay: RunningRelay,
    readonly executor: GptExecutor,
    readonly dir: string,
  ) {}

  static async start(anvil: AnvilInstance): Promise<Network> {
    const dir = await mkdtemp(join(tmpdir(), "crynux-node-runtime-"));
    const modelDir = join(dir, "models");
    await import("node:fs/promises").then((fs) => fs.mkdir(modelDir, { recursive: true }));
    await generateTestModel(join(modelDir, "tiny.gguf"), { seed: 7 });
    const deployment = await deployCrynux(anvil.walletClient(0), anvil.publicClient);
    const relay = await startRelay(
      {
        rpcUrl: anvil.rpcUrl,
        taskContract: deployment.task,
        port: 0,
        confirmations: 1,
        pollingIntervalMs: 100,
        dataDir: IN_MEMORY,
        blobDir: join(dir, "blobs"),
      },
      {
        onIndexerError: process.env.NODE_RUNTIME_LOG
          ? (error) => console.error("relay indexer", error)
          : () => {},
      },
    );
    // One executor (one thread, the reference profile) shared by the three nodes keeps memory low.
    const executor = await createGptExecutor({
      resolveModel: createModelResolver({ modelDir, cacheDir: join(dir, "cache") }),
    });
    const network = new Network(anvil, deployment, relay, executor, dir);
    for (const [i, account] of NODE_ACCOUNTS.entries()) {
      network.stateDirs[i] = join(dir, `node-${account}`);
      network.nodes[i] = network.makeNode(i);
    }
    network.startMining();
    await Promise.all(network.nodes.map((node) => node.start()));
    return network;
  }

  /** Mines a block every 250 ms: transactions are auto-mined, this buries them under confirmations. */
  startMining() {
    this.miner ??= setInterval(() => {
      this.anvil.testClient.mine({ blocks: 1 }).catch(() => {});
    }, 250);
  }

  stopMining() {
    clearInterval(this.miner);
    this.miner = undefined;
  }

  makeNode(index: number, overrides: Partial<Parameters<typeof createNode>[0]> = {}): CrynuxNode {
    const account = NODE_ACCOUNTS[index]!;
    const walletClient = this.anvil.walletClient(account);
    return createNode({
      publicClient: this.anvil.publicClient,
      walletClient,
      contracts: this.deployment,
      relayUrl: this.relay.url,
      relay: createRelayClient({
        url: this.relay.url,
        account: walletClient.account as never,
        pollIntervalMs: 200,
      }),
      stateDir: this.stateDirs[index]!,
      gpt: this.executor,
      card: CARD,
      confirmations: 1,
      pollingIntervalMs: 100,
      argsWaitMs: 2000,
      ...(process.env.NODE_RUNTIME_LOG
        ? { logger: jsonLinesLogger({ level: "debug", base: { node: account } }) }
        : {}),
      ...overrides,
    });
  }

  relayClient(accountIndex: number): RelayClient {
    return createRelayClient({
      url: this.relay.url,
      account: this.anvil.walletClient(accountIndex).account as never,
      pollIntervalMs: 200,
    });
  }

  /** The creator pays for a GPT task on-chain (without uploading its arguments). */
  async createTask(args: GptTaskArgsInput, options: { cap?: bigint; fee?: bigint } = {}): Promise<bigint> {
    const { publicClient } = this.anvil;
    const creator = this.anvil.walletClient(CREATOR);
    const call = {
      account: creator.account,
      address: this.deployment.task,
      abi: taskAbi,
      functionName: "createTask",
      args: [1, taskHash(args), zeroHash, 0n, options.cap ?? workUnits(1, args)],
      value: options.fee ?? FEE,
    } as const;
    const { request } = await publicClient.simulateContract(call);
    const gas = withSelectionGasMargin(await publicClient.estimateContractGas(call));
    const hash = await creator.writeContract({ ...request, gas });
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    const [started] = parseEventLogs({ abi: taskAbi, logs: receipt.logs, eventName: "TaskStarted" });
    if (!started) throw new Error("the task did not start (no 3 available nodes?)");
    return started.args.taskId;
  }

  uploadArgs(taskId: bigint, args: GptTaskArgsInput) {
    return this.relayClient(CREATOR).uploadTaskArgs(taskId, args, { waitForTaskMs: 60_000 });
  }

  getTask(taskId: bigint) {
    return this.anvil.publicClient.readContract({
      address: this.deployment.task,
      abi: taskAbi,
      functionName: "getTask",
      args: [taskId],
    });
  }

  getRound(taskId: bigint, round: number) {
    return this.anvil.publicClient.readContract({
      address: this.deployment.task,
      abi: taskAbi,
      functionName: "getRound",
      args: [taskId, BigInt(round)],
    });
  }

  async stop() {
    this.stopMining();
    await Promise.allSettled(this.nodes.map((node) => node.stop()));
    await this.relay.stop();
    await this.executor.dispose();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** A place's score: [10, 9, 6] for places 1..3. */
export const placeScore = (place: number) => [0, 10, 9, 6][place] ?? 0;

/** Wei received by a node of a task, from its confirmed TaskNodeSuccess events in its record. */
export async function earnedOn(node: CrynuxNode, taskId: bigint): Promise<bigint> {
  const record = await node.store?.getTask(taskId);
  return (record?.events ?? [])
    .filter((e) => e.event === "TaskNodeSuccess")
    .reduce((sum, e) => sum + BigInt(e.data.fee ?? "0"), 0n);
}

export function gptArgs(content: string, extra: Partial<GptTaskArgsInput> = {}): GptTaskArgsInput {
  return {
    model: "file:tiny.gguf",
    messages: [{ role: "user", content }],
    generation_config: { max_new_tokens: 8 },
    seed: 42,
    ...extra,
  } as GptTaskArgsInput;
}
