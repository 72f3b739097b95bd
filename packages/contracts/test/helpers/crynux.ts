import {
  type Abi,
  type Address,
  type Hex,
  keccak256,
  type Log,
  parseEventLogs,
  type TransactionReceipt,
  toHex,
} from "viem";
import { beforeAll, beforeEach } from "vitest";
import {
  type CrynuxDeployment,
  type DeployCrynuxOptions,
  deployCrynux,
  taskCommitment,
} from "../../src/deploy.js";
import {
  networkStatsAbi,
  nodeAbi,
  qosAbi,
  taskAbi,
  taskQueueAbi,
  treasuryAbi,
} from "../../src/generated/index.js";
import { NodeTaskTypes } from "../../src/states.js";
import type { AnvilInstance, StartAnvilOptions } from "../../src/testing/index.js";
import { useAnvil } from "../../src/testing/vitest.js";

export const SD = 0;
export const GPT = 1;
export const CNX = 10n ** 18n;
export const STAKE = 400n * CNX;
/** The default absence penalty (a node that misses the commit deadline). */
export const PENALTY = 40n * CNX;

// The on-chain numbers, from the package (one definition, checked in states.test.ts).
export { NodeStatus as Status, TaskState } from "../../src/states.js";

export const abis = {
  node: nodeAbi,
  task: taskAbi,
  taskQueue: taskQueueAbi,
  qos: qosAbi,
  networkStats: networkStatsAbi,
};
const allAbi = [
  ...nodeAbi,
  ...taskAbi,
  ...taskQueueAbi,
  ...qosAbi,
  ...networkStatsAbi,
  ...treasuryAbi,
] as Abi;
/** Every custom error of every contract once, so that errors bubbling up through a call are decoded. */
const allErrors = [
  ...new Map(allAbi.filter((x) => x.type === "error").map((x) => [JSON.stringify(x), x])).values(),
] as Abi;
const withErrors = (abi: Abi): Abi => [...abi.filter((x) => x.type !== "error"), ...allErrors];

export type CreateTaskArgs = {
  taskType?: number;
  fee?: bigint;
  cap?: bigint;
  vramLimit?: bigint;
  taskHash?: Hex;
  dataHash?: Hex;
};

/** A deployed Crynux instance on an anvil, driven by the anvil dev accounts (account 0 deploys). */
export class Crynux {
  /** gasUsed of every transaction sent through this harness, in order. */
  readonly gasLog: { what: string; gas: bigint }[] = [];
  private nonceCounter = 0n;

  constructor(
    readonly anvil: AnvilInstance,
    readonly addr: CrynuxDeployment,
  ) {}

  static async deploy(anvil: AnvilInstance, options?: DeployCrynuxOptions): Promise<Crynux> {
    const addr = await deployCrynux(anvil.walletClient(0), anvil.publicClient, options);
    return new Crynux(anvil, addr);
  }

  account(i: number): Address {
    const a = this.anvil.accounts[i];
    if (!a) throw new Error(`no anvil account ${i}`);
    return a.address;
  }

  indexOf(address: Address): number {
    const i = this.anvil.accounts.findIndex((a) => a.address.toLowerCase() === address.toLowerCase());
    if (i < 0) throw new Error(`not a dev account: ${address}`);
    return i;
  }

  async send(
    from: number | Address,
    contract: keyof typeof abis,
    functionName: string,
    args: unknown[],
    value?: bigint,
  ): Promise<TransactionReceipt> {
    const i = typeof from === "number" ? from : this.indexOf(from);
    const wallet = this.anvil.walletClient(i);
    const hash = await wallet.writeContract({
      address: this.addr[contract],
      abi: abis[contract] as Abi,
      functionName,
      args,
      value,
      gas: 10_000_000n,
    } as never);
    const receipt = await this.anvil.publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`${functionName} reverted without a reason`);
    this.gasLog.push({ what: functionName, gas: receipt.gasUsed });
    return receipt;
  }

  /** Simulates first so that a revert surfaces with its custom error name, then sends. */
  async tx(
    from: number | Address,
    contract: keyof typeof abis,
    functionName: string,
    args: unknown[],
    value?: bigint,
  ): Promise<TransactionReceipt> {
    const i = typeof from === "number" ? from : this.indexOf(from);
    await this.anvil.publicClient.simulateContract({
      address: this.addr[contract],
      abi: withErrors(abis[contract] as Abi),
      functionName,
      args,
      value,
      account: this.anvil.accounts[i]!.address,
    } as never);
    return this.send(i, contract, functionName, args, value);
  }

  read<T = unknown>(contract: keyof typeof abis, functionName: string, args: unknown[] = []): Promise<T> {
    return this.anvil.publicClient.readContract({
      address: this.addr[contract],
      abi: abis[contract] as Abi,
      functionName,
      args,
    } as never) as Promise<T>;
  }

  events(receipt: TransactionReceipt, eventName?: string) {
    const logs = parseEventLogs({ abi: allAbi, logs: receipt.logs as Log[] }) as unknown as {
      eventName: string;
      args: Record<string, unknown>;
      address: Address;
    }[];
    return eventName ? logs.filter((l) => l.eventName === eventName) : logs;
  }

  // ---------------------------------------------------------------- nodes

  join(
    i: number,
    gpuName = "NVIDIA GeForce RTX 4090",
    gpuVram = 24n,
    runtimeId = "llama@1/cpu/t1",
    stake = STAKE,
    taskTypes: number = NodeTaskTypes.ALL,
  ) {
    return this.tx(i, "node", "join", [gpuName, gpuVram, runtimeId, taskTypes], stake);
  }

  async nodeInfo(address: Address) {
    const [status, groupKey, gpuVram, stake, weight, taskId, taskTypes] = await this.read<
      [number, Hex, bigint, bigint, bigint, bigint, number]
    >("node", "getNodeInfo", [address]);
    return { status, groupKey, gpuVram, stake, weight, taskId, taskTypes };
  }

  async status(i: number | Address): Promise<number> {
    const address = typeof i === "number" ? this.account(i) : i;
    return (await this.nodeInfo(address)).status;
  }

  // ---------------------------------------------------------------- tasks

  async createTask(creator: number, args: CreateTaskArgs = {}) {
    const taskHash = args.taskHash ?? keccak256(toHex(`task ${this.nonceCounter++}`));
    const receipt = await this.tx(
      creator,
      "task",
      "createTask",
      [
        args.taskType ?? GPT,
        taskHash,
        args.dataHash ?? `0x${"00".repeat(32)}`,
        args.vramLimit ?? 0n,
        args.cap ?? 1n,
      ],
      args.fee ?? 50n * CNX,
    );
    const started = this.events(receipt, "TaskStarted");
    const queued = this.events(receipt, "TaskQueued");
    const taskId = (started[0]?.args.taskId ?? queued[0]?.args.taskId) as bigint;
    return {
      taskId,
      receipt,
      queued: queued.length > 0,
      nodes: started.map((e) => e.args.selectedNode as Address),
    };
  }

  async getTask(taskId: bigint) {
    const r = await this.read<
      [Address, number, number, Hex, bigint, bigint, bigint, bigint, bigint, readonly Address[], number]
    >("task", "getTask", [taskId]);
    return {
      creator: r[0],
      taskType: r[1],
      state: r[2],
      taskHash: r[3],
      vramLimit: r[4],
      cap: r[5],
      fee: r[6],
      balance: r[7],
      deadline: r[8],
      nodes: [...r[9]],
      resultRound: r[10],
    };
  }

  static nonce(round: number, taskId: bigint): Hex {
    return keccak256(toHex(`nonce ${taskId} ${round}`));
  }

  commit(taskId: bigint, round: number, node: Address, result: Hex) {
    return this.tx(node, "task", "submitCommitment", [
      taskId,
      BigInt(round),
      taskCommitment(result, Crynux.nonce(round, taskId)),
    ]);
  }

  disclose(taskId: bigint, round: number, node: Address, result: Hex) {
    if (result === "0x")
      return this.tx(node, "task", "reportTaskError", [taskId, BigInt(round), Crynux.nonce(round, taskId)]);
    return this.tx(node, "task", "disclose", [taskId, BigInt(round), result, Crynux.nonce(round, taskId)]);
  }

  uploaded(taskId: bigint, round: number, node: Address) {
    return this.tx(node, "task", "reportResultsUploaded", [taskId, BigInt(round)]);
  }

  balance(address: Address) {
    return this.anvil.publicClient.getBalance({ address });
  }

  async stats() {
    const names = [
      "totalNodes",
      "availableNodes",
      "busyNodes",
      "totalTasks",
      "queuedTasks",
      "runningTasks",
    ] as const;
    const values = await Promise.all(names.map((n) => this.read<bigint>("networkStats", n)));
    return Object.fromEntries(names.map((n, i) => [n, Number(values[i])])) as Record<
      (typeof names)[number],
      number
    >;
  }

  /** Contract ETH balances against their books: Node holds stakes + owed, Task holds escrow + owed. */
  async checkSolvency() {
    const [nodeBal, taskBal, staked, nodeOwed, escrow, taskOwed] = await Promise.all([
      this.balance(this.addr.node),
      this.balance(this.addr.task),
      this.read<bigint>("node", "totalStaked"),
      this.read<bigint>("node", "totalOwed"),
      this.read<bigint>("task", "totalEscrow"),
      this.read<bigint>("task", "totalOwed"),
    ]);
    return {
      nodeOk: nodeBal === staked + nodeOwed,
      taskOk: taskBal === escrow + taskOwed,
      nodeBal,
      taskBal,
      staked,
      escrow,
    };
  }
}

/** Place scores [10, 9, 6] by place 1..3 (0 = no place). */
export function placeScore(place: number): bigint {
  return [0n, 10n, 9n, 6n][place] ?? 0n;
}

/**
 * One anvil per test file, contracts deployed once; every test starts from that deployment (anvil
 * snapshot / revert).
 */
export function useCrynux(options?: DeployCrynuxOptions, anvilOptions?: StartAnvilOptions): () => Crynux {
  const anvil = useAnvil({ accounts: 30, balanceEther: 100_000, ...anvilOptions });
  let crynux: Crynux | undefined;
  let snapshot: Hex | undefined;
  beforeAll(async () => {
    crynux = await Crynux.deploy(anvil(), options);
    snapshot = await anvil().testClient.snapshot();
  }, 60_000);
  beforeEach(async () => {
    if (!crynux || !snapshot) return;
    await anvil().testClient.revert({ id: snapshot });
    snapshot = await anvil().testClient.snapshot();
    crynux = new Crynux(anvil(), crynux.addr);
  });
  return () => {
    if (!crynux) throw new Error("useCrynux(): only inside tests");
    return crynux;
  };
}
