import { readFileSync } from "node:fs";
import path from "node:path";
import {
  type Abi,
  type Address,
  BaseError,
  ContractFunctionRevertedError,
  decodeErrorResult,
  encodeFunctionData,
  getAddress,
  type Hex,
  type Log,
  parseEventLogs,
  type TransactionReceipt,
  toFunctionSelector,
  zeroAddress,
} from "viem";
import { expect } from "vitest";
import { compileSources, REPO_ROOT } from "../../scripts/compileLib.js";
import {
  networkStatsAbi,
  nodeAbi,
  qosAbi,
  taskAbi,
  taskQueueAbi,
  treasuryAbi,
} from "../../src/generated/index.js";
import { type Crynux, Status, TaskState } from "./crynux.js";

/** Every contract of a deployment by the key of its address in `CrynuxDeployment`. */
export const contractAbis = {
  node: nodeAbi as Abi,
  task: taskAbi as Abi,
  taskQueue: taskQueueAbi as Abi,
  qos: qosAbi as Abi,
  networkStats: networkStatsAbi as Abi,
  treasury: treasuryAbi as Abi,
};
export type ContractName = keyof typeof contractAbis;

const actorSource = "packages/contracts/test/solidity/Actor.sol";
let actorBuild: { abi: Abi; bytecode: Hex } | undefined;

/** Compiles test/solidity/Actor.sol with the project's pinned solc and settings (once per test file). */
export function actorArtifact(): { abi: Abi; bytecode: Hex } {
  if (!actorBuild) {
    const text = readFileSync(path.join(REPO_ROOT, actorSource), "utf8");
    const result = compileSources({ [actorSource]: text });
    const actor = result.contracts.find((x) => x.name === "Actor");
    if (!actor) throw new Error("Actor.sol did not produce an Actor contract");
    actorBuild = { abi: actor.abi as unknown as Abi, bytecode: actor.bytecode };
  }
  return actorBuild;
}

/** Every custom error of the project's contracts and of the test actor, once. */
function errorAbi(): Abi {
  const all = [...Object.values(contractAbis).flat(), ...actorArtifact().abi] as Abi;
  return [
    ...new Map(all.filter((x) => x.type === "error").map((x) => [JSON.stringify(x), x])).values(),
  ] as Abi;
}

/** The custom error name of a failed call (`Unauthorized`, `NotSelectedNode`, …), or undefined if none. */
export function revertName(error: unknown): string | undefined {
  if (!(error instanceof BaseError)) return undefined;
  const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError);
  if (reverted instanceof ContractFunctionRevertedError) {
    if (reverted.data?.errorName) return reverted.data.errorName;
    if (reverted.raw) return errorNameOf(reverted.raw);
  }
  return undefined;
}

/** Decodes revert data (or a bare 4-byte selector) against every known custom error. */
export function errorNameOf(data: Hex): string | undefined {
  if (data === "0x" || data === "0x00000000") return undefined;
  try {
    return decodeErrorResult({ abi: errorAbi(), data }).errorName;
  } catch {
    // a bare selector (the actor logs 4 bytes) of an error with arguments
    const selector = data.slice(0, 10).toLowerCase();
    const match = errorAbi().find(
      (x) =>
        x.type === "error" &&
        toFunctionSelector(`${x.name}(${x.inputs.map((i) => i.type).join(",")})`) === selector,
    );
    return match?.type === "error" ? match.name : `unknown ${selector}`;
  }
}

/** A transaction: sent by a dev account, or by an {@link Actor} contract through its operator. */
export type Call = {
  from: number | Actor;
  contract: ContractName;
  functionName: string;
  args?: unknown[];
  value?: bigint;
};

/** The node contract's `join` arguments for a card that runs every task type. */
export function joinArgs(gpuName = "NVIDIA GeForce RTX 4090", gpuVram = 24n, runtimeId = "llama@1/cpu/t1") {
  return [gpuName, gpuVram, runtimeId, 3];
}

/** A node operator or task creator implemented as a contract (test/solidity/Actor.sol). */
export class Actor {
  static readonly ACCEPT = 0;
  static readonly REENTER_ONCE = 1;
  static readonly REENTER_ALWAYS = 2;
  static readonly REFUSE = 3;

  private constructor(
    readonly c: Crynux,
    readonly address: Address,
    /** The dev account that deployed it and drives it. */
    readonly operator: number,
  ) {}

  /** Deploys an actor driven by dev account `operator`, with `balance` wei of its own. */
  static async deploy(c: Crynux, operator: number, balance = 0n): Promise<Actor> {
    const { abi, bytecode } = actorArtifact();
    const hash = await c.anvil
      .walletClient(operator)
      .deployContract({ abi, bytecode, args: [], value: balance } as never);
    const receipt = await c.anvil.publicClient.waitForTransactionReceipt({ hash });
    if (!receipt.contractAddress) throw new Error("Actor deployment failed");
    return new Actor(c, getAddress(receipt.contractAddress), operator);
  }

  /** The `exec` call that makes this contract call `call.contract` (for simulation or sending). */
  execRequest(contract: ContractName, functionName: string, args: unknown[] = [], value = 0n) {
    const data = encodeFunctionData({ abi: contractAbis[contract], functionName, args } as never);
    return {
      address: this.address,
      abi: [...actorArtifact().abi, ...errorAbi()] as Abi,
      functionName: "exec",
      args: [this.c.addr[contract], value, data],
      value,
    };
  }

  /** Makes the next payment (or every payment) to this contract call `contract.functionName(args)`. */
  async arm(
    mode: number,
    contract?: ContractName,
    functionName?: string,
    args: unknown[] = [],
    value = 0n,
  ): Promise<void> {
    const data =
      contract && functionName
        ? encodeFunctionData({ abi: contractAbis[contract], functionName, args } as never)
        : "0x";
    const target = contract ? this.c.addr[contract] : zeroAddress;
    await sendCall(this.c, this.operator, {
      address: this.address,
      abi: actorArtifact().abi,
      functionName: "arm",
      args: [mode, target, value, data],
    });
  }

  /** The outcome of every re-entrant call the actor made in a transaction: the error name, or "ok". */
  reentries(receipt: TransactionReceipt): string[] {
    const logs = parseEventLogs({
      abi: actorArtifact().abi,
      logs: receipt.logs as Log[],
      eventName: "Reentered",
    }) as unknown as { address: Address; args: { ok: boolean; errorSelector: Hex } }[];
    return logs
      .filter((l) => l.address.toLowerCase() === this.address.toLowerCase())
      .map((l) => (l.args.ok ? "ok" : (errorNameOf(l.args.errorSelector) ?? "failed without revert data")));
  }
}

type Request = { address: Address; abi: Abi; functionName: string; args: unknown[]; value?: bigint };

function request(c: Crynux, call: Call): { sender: number; req: Request } {
  if (typeof call.from === "number") {
    return {
      sender: call.from,
      req: {
        address: c.addr[call.contract],
        abi: [...contractAbis[call.contract], ...errorAbi()] as Abi,
        functionName: call.functionName,
        args: call.args ?? [],
        value: call.value,
      },
    };
  }
  return {
    sender: call.from.operator,
    req: call.from.execRequest(call.contract, call.functionName, call.args, call.value),
  };
}

/** Sends without simulating (a fixed gas limit), so that a reverting call is mined as a reverted transaction. */
async function sendCall(c: Crynux, sender: number, req: Request): Promise<TransactionReceipt> {
  const hash = await c.anvil.walletClient(sender).writeContract({ ...req, gas: 10_000_000n } as never);
  return c.anvil.publicClient.waitForTransactionReceipt({ hash });
}

/** Sends a call that must succeed (through the actor if `from` is one); returns the receipt. */
export async function send(c: Crynux, call: Call): Promise<TransactionReceipt> {
  const { sender, req } = request(c, call);
  try {
    await c.anvil.publicClient.simulateContract({
      ...req,
      account: c.anvil.accounts[sender]!.address,
    } as never);
  } catch (error) {
    throw new Error(`${call.functionName} would revert: ${revertName(error) ?? String(error)}`);
  }
  const receipt = await sendCall(c, sender, req);
  if (receipt.status !== "success") throw new Error(`${call.functionName} reverted when mined`);
  return receipt;
}

/** Sends a call whatever it does; returns the receipt (status "reverted" included) and the gas it cost. */
export async function sendAnyway(c: Crynux, call: Call): Promise<TransactionReceipt> {
  const { sender, req } = request(c, call);
  return sendCall(c, sender, req);
}

/** Everything an attack could change, read from the chain: balances, books, nodes, tasks, queue, QoS, config. */
export async function chainState(c: Crynux, watch: Address[]): Promise<Record<string, unknown>> {
  const a = c.addr;
  const read = (contract: ContractName, functionName: string, args: unknown[] = []) =>
    c.anvil.publicClient.readContract({
      address: a[contract],
      abi: contractAbis[contract],
      functionName,
      args,
    } as never) as Promise<unknown>;
  const parties = [
    ...new Set(
      [...watch, a.node, a.task, a.taskQueue, a.qos, a.networkStats, a.treasury].map((x) => getAddress(x)),
    ),
  ];
  const state: Record<string, unknown> = {};
  const put = async (key: string, p: Promise<unknown>) => {
    state[key] = await p;
  };
  const jobs: Promise<void>[] = [];
  for (const who of parties) {
    jobs.push(put(`balance ${who}`, c.anvil.publicClient.getBalance({ address: who })));
    jobs.push(put(`node.owed ${who}`, read("node", "owed", [who])));
    jobs.push(put(`task.owed ${who}`, read("task", "owed", [who])));
    jobs.push(put(`node ${who}`, read("node", "getNodeInfo", [who])));
    jobs.push(put(`qos ${who}`, read("qos", "getScore", [who])));
  }
  for (const f of [
    "totalStaked",
    "totalOwed",
    "stakeAmount",
    "absencePenalty",
    "maxGroups",
    "groupCount",
    "treasury",
    "owner",
    "getActiveGroups",
  ])
    jobs.push(put(`node.${f}`, read("node", f)));
  for (const f of ["totalEscrow", "totalOwed", "totalTasks", "queuedTasks", "getConfig", "owner"])
    jobs.push(put(`task.${f}`, read("task", f)));
  for (const f of ["size", "lowest", "sizeLimit", "owner"])
    jobs.push(put(`queue.${f}`, read("taskQueue", f)));
  for (const f of ["kickoutThreshold", "owner"]) jobs.push(put(`qos.${f}`, read("qos", f)));
  for (const f of [
    "totalNodes",
    "availableNodes",
    "busyNodes",
    "totalTasks",
    "queuedTasks",
    "runningTasks",
    "owner",
  ])
    jobs.push(put(`stats.${f}`, read("networkStats", f)));
  jobs.push(put("treasury.owner", read("treasury", "owner")));
  await Promise.all(jobs);
  const total = state["task.totalTasks"] as bigint;
  const taskJobs: Promise<void>[] = [];
  for (let id = 1n; id <= total; id++) {
    taskJobs.push(put(`task ${id}`, read("task", "getTask", [id])));
    taskJobs.push(put(`task ${id} result`, read("task", "getTaskResult", [id])));
    taskJobs.push(put(`task ${id} deadlines`, read("task", "getTaskDeadlines", [id])));
    taskJobs.push(put(`task ${id} queued`, read("taskQueue", "contains", [id])));
    for (let r = 0n; r < 3n; r++)
      taskJobs.push(put(`task ${id} round ${r}`, read("task", "getRound", [id, r])));
  }
  await Promise.all(taskJobs);
  return state;
}

/**
 * Sends `call`, which must revert with the custom error `errorName`: first as `eth_call` (the error name), then
 * mined as a real transaction, which must be reverted and change nothing but the sender's gas money.
 */
export async function expectRejected(
  c: Crynux,
  call: Call,
  errorName: string,
  watch: Address[] = [],
): Promise<void> {
  const { sender, req } = request(c, call);
  const account = getAddress(c.anvil.accounts[sender]!.address);
  let name: string | undefined;
  try {
    await c.anvil.publicClient.simulateContract({ ...req, account } as never);
    name = "(no revert)";
  } catch (error) {
    name = revertName(error) ?? `(no custom error: ${String(error).split("\n")[0]})`;
  }
  expect(name, `${call.functionName} from ${String(sender)}`).toBe(errorName);

  const everyone = [...watch, account, ...(typeof call.from === "number" ? [] : [call.from.address])];
  const before = await chainState(c, everyone);
  const receipt = await sendCall(c, sender, req);
  expect(receipt.status, `${call.functionName} mined`).toBe("reverted");
  const after = await chainState(c, everyone);
  const gas = receipt.gasUsed * receipt.effectiveGasPrice;
  expect(after[`balance ${account}`], "the sender paid gas and nothing else").toBe(
    (before[`balance ${account}`] as bigint) - gas,
  );
  delete before[`balance ${account}`];
  delete after[`balance ${account}`];
  expect(after, `${call.functionName} changed nothing`).toEqual(before);
}

/** What a party owns in the system and in its wallet: balance + payments owed to it + its stake. */
export async function wealth(c: Crynux, who: Address): Promise<bigint> {
  const [balance, nodeOwed, taskOwed, info] = await Promise.all([
    c.balance(who),
    c.read<bigint>("node", "owed", [who]),
    c.read<bigint>("task", "owed", [who]),
    c.nodeInfo(who),
  ]);
  return balance + nodeOwed + taskOwed + info.stake;
}

const BUSY_STATES: number[] = [Status.BUSY, Status.PENDING_PAUSE, Status.PENDING_QUIT];
const RUNNING_STATES: number[] = [TaskState.RUNNING, TaskState.SUCCESS];
const TERMINAL: number[] = [TaskState.UPLOADED, TaskState.ERROR, TaskState.ABORTED];
const F_RELEASED = 2;

/** The task state changes the Task contract allows (others would be a bug). */
export const allowedTransitions: Record<number, number[]> = {
  [TaskState.NONE]: [TaskState.QUEUED, TaskState.RUNNING],
  [TaskState.QUEUED]: [TaskState.RUNNING, TaskState.ABORTED],
  [TaskState.RUNNING]: [TaskState.SUCCESS, TaskState.ERROR, TaskState.ABORTED],
  [TaskState.SUCCESS]: [TaskState.UPLOADED, TaskState.ABORTED],
  [TaskState.UPLOADED]: [],
  [TaskState.ERROR]: [],
  [TaskState.ABORTED]: [],
};

/**
 * The system's invariants over every party a test knows (`parties`: every address that may have joined, created a
 * task or been paid). Returns the task states, for transition checks between calls.
 *
 * - ETH: Node holds exactly its stakes + deferred payments, Task its escrow + deferred payments; the books
 *   equal the sums over nodes, tasks and parties.
 * - Nodes: a BUSY / PENDING node is held by an unreleased round of its task and vice versa; NetworkStats' node
 *   counters and the available index (groups, active groups) match the node statuses; groupCount = groups
 *   with joined nodes.
 * - Tasks: queued ⇔ in the TaskQueue; counters match; a finished task holds no balance and no node.
 */
export async function checkInvariants(c: Crynux, parties: Address[]): Promise<Map<bigint, number>> {
  const everyone = [...new Set(parties.map((p) => getAddress(p)))];
  const [
    nodeBal,
    taskBal,
    staked,
    nodeOwed,
    escrow,
    taskOwed,
    totalTasks,
    queuedTasks,
    queueSize,
    stats,
    activeGroups,
    groupCount,
  ] = await Promise.all([
    c.balance(c.addr.node),
    c.balance(c.addr.task),
    c.read<bigint>("node", "totalStaked"),
    c.read<bigint>("node", "totalOwed"),
    c.read<bigint>("task", "totalEscrow"),
    c.read<bigint>("task", "totalOwed"),
    c.read<bigint>("task", "totalTasks"),
    c.read<bigint>("task", "queuedTasks"),
    c.read<bigint>("taskQueue", "size"),
    c.stats(),
    c.read<readonly Hex[]>("node", "getActiveGroups"),
    c.read<bigint>("node", "groupCount"),
  ]);
  expect(nodeBal, "Node balance = staked + owed").toBe(staked + nodeOwed);
  expect(taskBal, "Task balance = escrow + owed").toBe(escrow + taskOwed);

  const perParty = await Promise.all(
    everyone.map(async (who) => {
      const [info, nOwed, tOwed] = await Promise.all([
        c.nodeInfo(who),
        c.read<bigint>("node", "owed", [who]),
        c.read<bigint>("task", "owed", [who]),
      ]);
      return { who, info, nOwed, tOwed };
    }),
  );
  expect(
    perParty.reduce((s, p) => s + p.nOwed, 0n),
    "Node.totalOwed = sum of owed",
  ).toBe(nodeOwed);
  expect(
    perParty.reduce((s, p) => s + p.tOwed, 0n),
    "Task.totalOwed = sum of owed",
  ).toBe(taskOwed);
  expect(
    perParty.reduce((s, p) => s + p.info.stake, 0n),
    "totalStaked = sum of stakes",
  ).toBe(staked);

  const states = new Map<bigint, number>();
  const held = new Map<string, bigint>();
  let escrowSum = 0n;
  let queued = 0;
  let running = 0;
  const tasks = await Promise.all(
    Array.from({ length: Number(totalTasks) }, async (_, k) => {
      const id = BigInt(k + 1);
      const [t, rounds, inQueue] = await Promise.all([
        c.getTask(id),
        Promise.all(
          [0n, 1n, 2n].map((r) =>
            c.read<[Address, number, number, number, Hex]>("task", "getRound", [id, r]),
          ),
        ),
        c.read<boolean>("taskQueue", "contains", [id]),
      ]);
      return { id, t, rounds, inQueue };
    }),
  );
  for (const { id, t, rounds, inQueue } of tasks) {
    states.set(id, t.state);
    escrowSum += t.balance;
    expect(inQueue, `task ${id} queued ⇔ in the queue`).toBe(t.state === TaskState.QUEUED);
    if (t.state === TaskState.QUEUED) queued++;
    const started = rounds[0]![0] !== zeroAddress;
    const unreleased = rounds.filter((r) => (r[3] & F_RELEASED) === 0);
    if (started && unreleased.length > 0) running++;
    if (started) for (const r of unreleased) held.set(r[0].toLowerCase(), id);
    if (t.state === TaskState.ABORTED || t.state === TaskState.QUEUED)
      expect(unreleased.length === 0 || !started, `task ${id} (state ${t.state}) holds no node`).toBe(true);
    if (TERMINAL.includes(t.state) && unreleased.length === 0)
      expect(t.balance, `finished task ${id} holds no balance`).toBe(0n);
    if (!started) expect(RUNNING_STATES.includes(t.state), `task ${id} running without nodes`).toBe(false);
  }
  expect(escrowSum, "totalEscrow = sum of task balances").toBe(escrow);
  expect(queuedTasks, "Task.queuedTasks = queued tasks").toBe(BigInt(queued));
  expect(queueSize, "TaskQueue.size = queued tasks").toBe(BigInt(queued));

  let available = 0;
  let busy = 0;
  let joined = 0;
  const availableByGroup = new Map<string, number>();
  const joinedGroups = new Set<string>();
  for (const { who, info } of perParty) {
    const heldBy = held.get(who.toLowerCase());
    if (BUSY_STATES.includes(info.status)) {
      busy++;
      expect(info.taskId, `busy node ${who} is bound to a task`).not.toBe(0n);
      expect(heldBy, `busy node ${who} is held by its task`).toBe(info.taskId);
    } else {
      expect(heldBy, `node ${who} held by task ${heldBy} is busy`).toBeUndefined();
      expect(info.taskId, `idle node ${who} has no task`).toBe(0n);
    }
    if (info.status === Status.AVAILABLE) {
      available++;
      availableByGroup.set(info.groupKey, (availableByGroup.get(info.groupKey) ?? 0) + 1);
    }
    if (info.status !== Status.QUIT) {
      joined++;
      joinedGroups.add(info.groupKey);
      expect(info.weight >= 1n && info.weight <= 20n, `weight of ${who} in 1..20`).toBe(true);
    } else {
      expect(info.stake, `a node that left holds no stake (${who})`).toBe(0n);
    }
  }
  expect(stats, "NetworkStats counters").toEqual({
    totalNodes: joined,
    availableNodes: available,
    busyNodes: busy,
    totalTasks: Number(totalTasks),
    queuedTasks: queued,
    runningTasks: running,
  });
  expect(groupCount, "groupCount = groups with joined nodes").toBe(BigInt(joinedGroups.size));
  expect(new Set(activeGroups).size, "active groups are distinct").toBe(activeGroups.length);
  expect(new Set(activeGroups), "active groups = groups with an available node").toEqual(
    new Set(availableByGroup.keys()),
  );
  const members = await Promise.all(
    activeGroups.map((key) => c.read<readonly Address[]>("node", "getGroupAvailableNodes", [key])),
  );
  activeGroups.forEach((key, k) => {
    expect(members[k]!.length, `available members of group ${key}`).toBe(availableByGroup.get(key));
  });
  return states;
}
