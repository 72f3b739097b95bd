import { type ChildProcess, spawn } from "node:child_process";
import { access, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type CreateTaskReturnType,
  createCrynuxClient,
  createRelayClient,
  RelayRequestError,
} from "@crynux/client";
import { type CrynuxDeployment, deployCrynux, TaskState, taskAbi } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import { generateTestModel, openNodeStore, type TaskRecord } from "@crynux/node-core";
import { feeShares } from "@crynux/pricing";
import { type GptTaskArgsInput, TaskType } from "@crynux/tasks";
import { type Address, decodeFunctionData, http, parseEther, parseEventLogs } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { FAULT_DIR_ENV, KILL_AFTER } from "../src/fault.js";

// Issues 8 and 11: three real `crynux-node start` processes (tsx, from the sources) on anvil + an in-process
// relay. One of them is killed with SIGKILL at a chosen point of a GPT task created by an application, then
// started again with the same config and state directory; the task must complete, the killed node be paid
// and not slashed, and no transaction be sent twice. The kill comes from the node itself (the test-only
// CRYNUX_NODE_FAULT_DIR switch: the first process that reaches an armed point kills itself), so it lands
// exactly at the point. One network for the whole file; each test leaves the three nodes AVAILABLE.
const anvil = useAnvil({ accounts: 5, balanceEther: 10_000 });
const NODE_ACCOUNTS = [1, 2, 3] as const;
const CREATOR = 4;
const FEE = parseEther("3");
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(REPO, "examples/node/src/cli.ts");
const WAIT = { timeout: 240_000, interval: 250 };

type NodeProcess = {
  slot: number;
  address: Address;
  child: ChildProcess;
  log: string[];
  /** Resolves once the process exited and its output was read to the end. */
  exit: Promise<void>;
  closed: boolean;
  apiUrl?: string;
};

let dir: string;
let faultDir: string;
let deployment: CrynuxDeployment;
let relay: RunningRelay;
let miner: ReturnType<typeof setInterval> | undefined;
/** The running process of each node. */
const nodes: NodeProcess[] = [];
/** Every process this file started, killed or not. */
const spawned: NodeProcess[] = [];

const configOf = (slot: number) => join(dir, `node-${slot}`, "crynux-node.jsonc");
const stateDirOf = (slot: number) => join(dir, `node-${slot}`, "state");

function spawnNode(slot: number): NodeProcess {
  const child = spawn(
    process.execPath,
    ["--conditions=source", "--import", "tsx", CLI, "start", "--config", configOf(slot)],
    {
      cwd: REPO,
      env: { ...process.env, FORCE_COLOR: "0", [FAULT_DIR_ENV]: faultDir },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const log: string[] = [];
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) log.push(line);
    if (log.length > 400) log.splice(0, log.length - 400);
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const p: NodeProcess = {
    slot,
    address: anvil().accounts[NODE_ACCOUNTS[slot]!]!.address,
    child,
    log,
    exit: new Promise<void>((resolve) =>
      child.once("close", () => {
        p.closed = true;
        resolve();
      }),
    ),
    closed: false,
  };
  nodes[slot] = p;
  spawned.push(p);
  return p;
}

const running = (p: NodeProcess) => !p.closed && p.child.exitCode === null && p.child.signalCode === null;

const entries = (p: NodeProcess) =>
  p.log.flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });

const dumpLogs = () =>
  spawned
    .map(
      (p) => `--- node ${p.slot} (pid ${p.child.pid}, ${p.child.signalCode ?? p.child.exitCode ?? "running"})
${p.log.slice(-40).join("\n")}`,
    )
    .join("\n");

function apiUrlOf(p: NodeProcess): string {
  p.apiUrl ??= entries(p).find((e) => e.msg === "status API listening")?.url as string | undefined;
  if (!p.apiUrl) throw new Error(`node ${p.slot} does not listen yet`);
  return p.apiUrl;
}

type ApiStatus = { chainStatus: string; currentTask: unknown };

async function statusOf(p: NodeProcess): Promise<ApiStatus> {
  return (await (await fetch(`${apiUrlOf(p)}/v1/status`)).json()) as ApiStatus;
}

/** Every node process runs, serves its API and has no task left. */
async function waitAllIdle() {
  await vi.waitFor(async () => {
    for (const p of nodes) {
      if (!running(p)) throw new Error(`node ${p.slot} is not running:\n${dumpLogs()}`);
      const status = await statusOf(p);
      if (status.chainStatus !== "AVAILABLE" || status.currentTask !== null)
        throw new Error(`node ${p.slot}: ${JSON.stringify(status)}`);
    }
  }, WAIT);
}

const client = () =>
  createCrynuxClient({
    chain: anvil().chain,
    transport: http(anvil().rpcUrl),
    account: privateKeyToAccount(anvil().accounts[CREATOR]!.privateKey),
    relayUrl: relay.url,
    contracts: deployment,
    pollingInterval: 200,
    relay: { pollIntervalMs: 200 },
  });

const gptArgs = (content: string): GptTaskArgsInput => ({
  model: "file:tiny.gguf",
  messages: [{ role: "user", content }],
  generation_config: { max_new_tokens: 8 },
  seed: 42,
  quantize_bits: 8,
});

type AppTask = {
  created: CreateTaskReturnType;
  done: Promise<unknown>;
  /** Set once `done` settled. */
  settled: { error?: unknown } | undefined;
  /** Lets an application created with `upload: false` upload its arguments now. */
  uploadArgs: () => void;
};

/** What an application does: create the task, upload its arguments (at once by default), wait, fetch. */
async function appTask(content: string, options: { upload?: boolean } = {}): Promise<AppTask> {
  const app = client();
  const args = gptArgs(content);
  const created = await app.createTask({ taskType: TaskType.GPT, args, fee: FEE });
  let uploadArgs: () => void = () => {};
  const gate =
    options.upload === false
      ? new Promise<void>((resolve) => {
          uploadArgs = resolve;
        })
      : Promise.resolve();
  const task: AppTask = {
    created,
    settled: undefined,
    uploadArgs: () => uploadArgs(),
    done: (async () => {
      await gate;
      await app.uploadTaskArgs({ taskId: created.taskId, args, waitForTaskMs: 300_000 });
      const final = await app.waitForTask({
        taskId: created.taskId,
        fromBlock: created.blockNumber,
        timeoutMs: 400_000,
      });
      if (final.outcome !== "success") throw new Error(`task ${created.taskId} ended ${final.outcome}`);
      return app.getTaskResult({ taskId: created.taskId, waitMs: 300_000 });
    })(),
  };
  task.done.then(
    () => {
      task.settled = {};
    },
    (error: unknown) => {
      task.settled = { error };
    },
  );
  return task;
}

/** The process killed by the armed fault (it must be the only one that exits). */
async function waitForSelfKill(app: AppTask, point: string): Promise<NodeProcess> {
  return vi.waitFor(() => {
    const dead = nodes.filter((p) => !running(p));
    // The application may well get its result after the kill (the relay has it before the upload report).
    if (dead.length === 0 && app.settled)
      throw new Error(`the task ended with no kill: ${app.settled.error ?? "success"}\n${dumpLogs()}`);
    if (dead.length === 0) throw new Error(`no node reached ${point} yet`);
    if (dead.length > 1 || dead[0]!.child.signalCode !== "SIGKILL")
      throw new Error(`unexpected exits:\n${dumpLogs()}`);
    return dead[0]!;
  }, WAIT);
}

const getTask = (taskId: bigint) =>
  anvil().publicClient.readContract({
    address: deployment.task,
    abi: taskAbi,
    functionName: "getTask",
    args: [taskId],
  });
const getRound = (taskId: bigint, round: number) =>
  anvil().publicClient.readContract({
    address: deployment.task,
    abi: taskAbi,
    functionName: "getRound",
    args: [taskId, BigInt(round)],
  });
const roundOf = async (taskId: bigint, address: Address) =>
  (await getTask(taskId))[9].findIndex((node) => node.toLowerCase() === address.toLowerCase());

/** The killed node's own record of the task, as it left it on disk. */
async function storedRecord(p: NodeProcess, taskId: bigint): Promise<TaskRecord> {
  const record = await (await openNodeStore(stateDirOf(p.slot))).getTask(taskId);
  if (!record) throw new Error(`node ${p.slot} has no record of task ${taskId}`);
  return record;
}

/** Whether the relay holds the task's result (asked once, as the creator). */
async function relayHasResult(taskId: bigint): Promise<boolean> {
  const creator = createRelayClient({
    url: relay.url,
    account: privateKeyToAccount(anvil().accounts[CREATOR]!.privateKey),
  });
  try {
    await creator.getResult(taskId);
    return true;
  } catch (error) {
    if (error instanceof RelayRequestError && error.code === "results_not_found") return false;
    throw error;
  }
}

/** The nodes' transactions since `fromBlock`, as `function(taskId)` per node (in order). */
async function nodeTransactions(fromBlock: bigint): Promise<Map<string, string[]>> {
  const { publicClient } = anvil();
  const latest = await publicClient.getBlockNumber();
  const byNode = new Map<string, string[]>(nodes.map((p) => [p.address.toLowerCase(), []]));
  for (let number = fromBlock; number <= latest; number++) {
    const block = await publicClient.getBlock({ blockNumber: number, includeTransactions: true });
    for (const tx of block.transactions) {
      const sent = byNode.get(tx.from.toLowerCase());
      if (!sent) continue;
      if (tx.to?.toLowerCase() !== deployment.task.toLowerCase()) {
        sent.push(`to ${tx.to}`);
        continue;
      }
      const { functionName, args } = decodeFunctionData({ abi: taskAbi, data: tx.input });
      sent.push(`${functionName}(${args?.[0]})`);
    }
  }
  return byNode;
}

/**
 * The tasks (run one after the other) succeeded as if nothing had happened: results uploaded, every node
 * paid exactly its share by the places the chain recorded (the creator gets nothing back), nobody slashed,
 * absent or cancelled, and each node sent its commitment and disclosure once (the result node its upload
 * report once), and nothing else since `noncesBefore` was read.
 */
async function expectCleanSuccess(apps: AppTask[], noncesBefore: number[]) {
  const { publicClient } = anvil();
  for (const app of apps) await app.done;
  for (const app of apps)
    await vi.waitFor(async () => {
      const task = await getTask(app.created.taskId);
      if (task[2] !== TaskState.UPLOADED)
        throw new Error(`task ${app.created.taskId} is in state ${task[2]}`);
    }, WAIT);
  await waitAllIdle();

  const expectedCalls = new Map<string, string[]>(nodes.map((p) => [p.address.toLowerCase(), []]));
  for (const app of apps) {
    const calls = await expectPaidByPlace(app);
    for (const [node, list] of calls) expectedCalls.get(node)!.push(...list);
  }
  const sent = await nodeTransactions(apps[0]!.created.blockNumber);
  for (const p of nodes) {
    const calls = expectedCalls.get(p.address.toLowerCase())!;
    expect(sent.get(p.address.toLowerCase()), `node ${p.slot}`).toEqual(calls);
    // Nothing else either (a transaction sent before the first task's block would show in the nonce).
    const nonce = await publicClient.getTransactionCount({ address: p.address });
    expect(nonce - noncesBefore[p.slot]!, `node ${p.slot}`).toBe(calls.length);
    expect(await publicClient.getTransactionCount({ address: p.address, blockTag: "pending" })).toBe(nonce);
  }
}

/** Checks one task's payments and events; returns the transactions each node should have sent for it. */
async function expectPaidByPlace(app: AppTask): Promise<Map<string, string[]>> {
  const { taskId, blockNumber } = app.created;
  const { publicClient } = anvil();
  const task = await getTask(taskId);
  const resultRound = task[10];
  const rounds = await Promise.all([0, 1, 2].map((round) => getRound(taskId, round)));
  const byPlace = (place: 1 | 2) =>
    [0, 1, 2].sort((a, b) => rounds[a]![place] - rounds[b]![place]).filter((r) => rounds[r]![place] > 0);
  const expected = feeShares({
    fee: FEE,
    commitOrder: byPlace(1),
    discloseOrder: byPlace(2),
    resultRound,
  });
  expect(expected.refund).toBe(0n);

  const logs = parseEventLogs({
    abi: taskAbi,
    logs: await publicClient.getLogs({ address: deployment.task, fromBlock: blockNumber }),
  }).filter((log) => (log.args as { taskId?: bigint }).taskId === taskId);
  const named = (name: string) => logs.filter((log) => log.eventName === name);
  const paid = new Map(
    logs.flatMap((log) =>
      log.eventName === "TaskNodeSuccess" ? [[log.args.node.toLowerCase(), log.args.fee] as const] : [],
    ),
  );
  expect(named("TaskNodeSuccess")).toHaveLength(3);
  for (const [round, node] of task[9].entries())
    expect(paid.get(node.toLowerCase()), `round ${round}`).toBe(expected.shares[round]);
  for (const bad of [
    "TaskNodeSlashed",
    "TaskNodeAbsent",
    "TaskNodeCancelled",
    "TaskRefunded",
    "TaskAborted",
    "TaskErrorReported",
  ])
    expect(named(bad), bad).toEqual([]);
  expect(named("TaskResultUploaded")).toHaveLength(1);

  return new Map(
    task[9].map((node, round) => {
      const calls = [`submitCommitment(${taskId})`, `disclose(${taskId})`];
      if (round === resultRound) calls.push(`reportResultsUploaded(${taskId})`);
      return [node.toLowerCase(), calls];
    }),
  );
}

const nonces = () =>
  Promise.all(nodes.map((p) => anvil().publicClient.getTransactionCount({ address: p.address })));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-node-crash-"));
  faultDir = join(dir, "faults");
  await mkdir(faultDir, { recursive: true });
  const modelDir = join(dir, "models");
  await mkdir(modelDir, { recursive: true });
  await generateTestModel(join(modelDir, "tiny.gguf"), { seed: 11 });
  deployment = await deployCrynux(anvil().walletClient(0), anvil().publicClient);
  relay = await startRelay(
    {
      rpcUrl: anvil().rpcUrl,
      taskContract: deployment.task,
      port: 0,
      confirmations: 1,
      pollingIntervalMs: 200,
      dataDir: IN_MEMORY,
      blobDir: join(dir, "blobs"),
    },
    { onIndexerError: () => {} },
  );
  // Transactions are auto-mined; these blocks bury them under the nodes' and the relay's confirmation.
  miner = setInterval(
    () =>
      anvil()
        .testClient.mine({ blocks: 1 })
        .catch(() => {}),
    300,
  );
  await writeFile(join(dir, "deployment.json"), JSON.stringify({ ...deployment, chainId: anvil().chain.id }));
  for (const [slot, account] of NODE_ACCOUNTS.entries()) {
    const nodeDir = join(dir, `node-${slot}`);
    await mkdir(nodeDir, { recursive: true });
    await writeFile(join(nodeDir, "node.key"), anvil().accounts[account]!.privateKey, { mode: 0o600 });
    await writeFile(
      configOf(slot),
      JSON.stringify({
        chain: { rpcUrl: anvil().rpcUrl, deploymentFile: "../deployment.json" },
        relayUrl: relay.url,
        account: { privateKeyFile: "node.key" },
        stateDir: "./state",
        models: {
          modelDir: "../models",
          cacheDir: "./cache",
          prepare: [{ model: "file:tiny.gguf", quantizeBits: 8 }],
        },
        gpt: { threads: 1 },
        card: { gpuName: "Test CPU", gpuVram: 8 },
        confirmations: 1,
        pollingIntervalMs: 200,
        api: { port: 0 },
        log: { level: "info", format: "json" },
      }),
    );
    spawnNode(slot);
  }
  await waitAllIdle();
}, 600_000);

afterAll(async () => {
  clearInterval(miner);
  // Whatever happened in the tests: no process outlives the file.
  for (const p of spawned) {
    if (running(p) && p.child.pid) {
      try {
        process.kill(p.child.pid, "SIGKILL");
      } catch {}
    }
    await p.exit;
  }
  await relay?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

type KillPoint = {
  point: string;
  fault: string;
  /** What the killed node left behind: its record, the chain, the relay. */
  check: (record: TaskRecord, taskId: bigint, p: NodeProcess) => Promise<void>;
};

const KILL_POINTS: KillPoint[] = [
  {
    point: "args-received",
    fault: "after the task's arguments were downloaded, before execution",
    async check(record, taskId, p) {
      expect(record.step).toBe("started");
      expect(record.output).toBeUndefined();
      expect((await getRound(taskId, await roundOf(taskId, p.address)))[1]).toBe(0);
    },
  },
  {
    point: "executed",
    fault: "after execution (result and nonce stored), before the commitment was sent",
    async check(record, taskId, p) {
      expect(record.step).toBe("executed");
      expect(record.output?.kind).toBe("result");
      expect(record.nonce).toMatch(/^0x[0-9a-f]{64}$/);
      expect(record.pendingTx).toBeUndefined();
      expect((await getRound(taskId, await roundOf(taskId, p.address)))[1]).toBe(0);
    },
  },
  {
    point: "sent-submitCommitment",
    fault: "after the commitment transaction was broadcast, before its receipt was seen",
    async check(record) {
      expect(record.step).toBe("executed");
      expect(record.pendingTx?.functionName).toBe("submitCommitment");
      expect(record.txs.submitCommitment).toBe(record.pendingTx?.hash);
      // Broadcast: the chain knows it.
      await anvil().publicClient.getTransaction({ hash: record.pendingTx!.hash });
    },
  },
  {
    point: "disclosed",
    fault: "after its disclosure was confirmed",
    async check(record, taskId, p) {
      expect(record.step).toBe("disclosed");
      expect((await getRound(taskId, await roundOf(taskId, p.address)))[2]).toBeGreaterThan(0);
    },
  },
  {
    point: "upload-started",
    fault: "as the result node, while sending the result to the relay (nothing stored yet)",
    async check(record, taskId, p) {
      expect(record.step).toBe("disclosed");
      const task = await getTask(taskId);
      expect(task[2]).toBe(TaskState.SUCCESS);
      expect(task[10]).toBe(await roundOf(taskId, p.address));
      expect(await relayHasResult(taskId)).toBe(false);
    },
  },
  {
    point: "upload-done",
    fault: "as the result node, once the relay stored the result, before recording it",
    async check(record, taskId) {
      expect(record.step).toBe("disclosed");
      expect((await getTask(taskId))[2]).toBe(TaskState.SUCCESS);
      expect(await relayHasResult(taskId)).toBe(true);
    },
  },
  {
    point: "uploaded",
    fault: "as the result node, after the upload, before reportResultsUploaded was sent",
    async check(record, taskId) {
      expect(record.step).toBe("uploaded");
      expect(record.pendingTx).toBeUndefined();
      expect((await getTask(taskId))[2]).toBe(TaskState.SUCCESS);
    },
  },
  {
    point: "sent-reportResultsUploaded",
    fault: "as the result node, after reportResultsUploaded was broadcast, before its receipt was seen",
    async check(record) {
      expect(record.step).toBe("uploaded");
      expect(record.pendingTx?.functionName).toBe("reportResultsUploaded");
      await anvil().publicClient.getTransaction({ hash: record.pendingTx!.hash });
    },
  },
];

describe("crynux-node processes killed with SIGKILL", () => {
  for (const { point, fault, check } of KILL_POINTS) {
    test(`kill -9 ${fault} (${point}): after a restart the task succeeds, nobody slashed, nothing sent twice`, async (context) => {
      const before = await nonces();
      await writeFile(join(faultDir, `${KILL_AFTER}${point}`), "");
      const app = await appTask(`Crash point ${point}.`);
      const dead = await waitForSelfKill(app, point);
      // The process killed itself at the armed point (and only that one fired).
      await access(join(faultDir, `${KILL_AFTER}${point}.fired.${dead.child.pid}`));
      expect(entries(dead).filter((e) => e.msg === "fault injection: kill -9")).toEqual([
        expect.objectContaining({ point, taskId: String(app.created.taskId) }),
      ]);
      await check(await storedRecord(dead, app.created.taskId), app.created.taskId, dead);

      spawnNode(dead.slot);
      await expectCleanSuccess([app], before);
      recordTrial(context, {
        area: "Fault injection: node",
        fault: `kill -9 the node process ${fault}`,
        runs: 1,
        expected:
          "restarted: task succeeded, killed node paid its share, not slashed, no transaction repeated",
      });
    }, 400_000);
  }

  test("kill -9 while idle, a task starts while it is down: after a restart the task succeeds", async (context) => {
    const before = await nonces();
    const victim = nodes[0]!;
    victim.child.kill("SIGKILL");
    await victim.exit;
    const app = await appTask("Crash while idle.");
    // The chain still lists the dead node as available: it is selected, and the two others wait for it.
    const selected = (await getTask(app.created.taskId))[9].map((node) => node.toLowerCase());
    expect(selected).toContain(victim.address.toLowerCase());
    await vi.waitFor(async () => {
      const rounds = await Promise.all([0, 1, 2].map((round) => getRound(app.created.taskId, round)));
      if (rounds.filter((r) => r[1] > 0).length < 2) throw new Error("the two others have not committed yet");
    }, WAIT);
    spawnNode(victim.slot);
    await expectCleanSuccess([app], before);
    recordTrial(context, {
      area: "Fault injection: node",
      fault: "kill -9 the node process while idle; a task starts while it is down",
      runs: 1,
      expected: "restarted: it finds the task, which succeeds; paid, not slashed, no transaction repeated",
    });
  }, 400_000);

  test("kill -9 while a task waits for its arguments and another is queued: both succeed after a restart", async (context) => {
    const before = await nonces();
    const first = await appTask("Crash with a queued task: first.", { upload: false });
    // The three nodes are busy with the first task: the second one waits in the queue.
    const second = await appTask("Crash with a queued task: second.");
    expect(first.created.queued).toBe(false);
    expect(second.created.queued).toBe(true);
    expect((await getTask(second.created.taskId))[2]).toBe(TaskState.QUEUED);
    await vi.waitFor(async () => {
      for (const p of nodes) if ((await statusOf(p)).currentTask === null) throw new Error("not started yet");
    }, WAIT);
    const victim = nodes[1]!;
    victim.child.kill("SIGKILL");
    await victim.exit;
    first.uploadArgs();
    spawnNode(victim.slot);
    await expectCleanSuccess([first, second], before);
    recordTrial(context, {
      area: "Fault injection: node",
      fault: "kill -9 the node process while its task waits for arguments and another task is queued",
      runs: 1,
      expected: "restarted: both tasks succeed in turn; paid, not slashed, no transaction repeated",
    });
  }, 400_000);
});
