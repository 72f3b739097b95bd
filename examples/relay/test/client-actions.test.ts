import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  type CrynuxClient,
  createCrynuxClient,
  createRelayClient,
  getTaskResult,
  InvalidTaskArgsError,
  type RelayClient,
  TaskAbortedError,
  TaskContractError,
  TaskNotFoundError,
  TaskResultMismatchError,
  type TaskStage,
  WaitForTaskTimeoutError,
} from "@crynux/client";
import {
  type CrynuxDeployment,
  nodeAbi,
  taskAbi,
  taskCommitment,
  taskQueueAbi,
  withSelectionGasMargin,
} from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { type GptResponse, gptResultHash, sdResultFromPHashes, TaskType } from "@crynux/tasks";
import { type Address, type Hex, http, keccak256, parseEther, toHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { IN_MEMORY } from "../src/config.js";
import { type RunningRelay, startRelay } from "../src/serve.js";
import { Chain, sdImages, selectedNodes } from "./http-helpers.js";

const NODES = [1, 2, 3];
const CREATOR = 4;
const STRANGER = 5;
/** Used through JSON-RPC only (anvil holds its key), as a browser wallet's account would be. */
const WALLET_USER = 6;

const anvil = useAnvil({ accounts: 8, balanceEther: 100_000 });
let chain: Chain;
let contracts: CrynuxDeployment;
let relay: RunningRelay;
let blobDir: string;
let client: CrynuxClient;

const accountOf = (who: number | Address) => {
  const entry =
    typeof who === "number"
      ? anvil().accounts[who]!
      : anvil().accounts.find((a) => a.address.toLowerCase() === who.toLowerCase())!;
  return privateKeyToAccount(entry.privateKey);
};

function crynuxClientOf(who: number): CrynuxClient {
  return createCrynuxClient({
    chain: anvil().chain,
    transport: http(anvil().rpcUrl),
    account: accountOf(who),
    relayUrl: relay.url,
    contracts,
    pollingInterval: 100,
    relay: { pollIntervalMs: 100 },
  });
}

/** A selected node's own relay client, as a node program would hold it. */
const nodeRelay = (node: Address): RelayClient =>
  createRelayClient({ url: relay.url, account: accountOf(node), pollIntervalMs: 100 });

beforeAll(async () => {
  chain = await Chain.deploy(anvil());
  // Chain keeps the Task and Node addresses; the others are wired into them.
  const read = (address: Address, abi: typeof taskAbi | typeof nodeAbi, functionName: string) =>
    anvil().publicClient.readContract({ address, abi, functionName } as never) as Promise<Address>;
  const [taskQueue, networkStats, qos, treasury] = await Promise.all([
    read(chain.task, taskAbi, "queue"),
    read(chain.task, taskAbi, "stats"),
    read(chain.node, nodeAbi, "qos"),
    read(chain.node, nodeAbi, "treasury"),
  ]);
  contracts = { task: chain.task, node: chain.node, taskQueue, networkStats, qos, treasury };
  for (const i of NODES) await chain.join(i);
  blobDir = await mkdtemp(path.join(tmpdir(), "client-actions-blobs-"));
  relay = await startRelay(
    {
      rpcUrl: anvil().rpcUrl,
      taskContract: chain.task,
      port: 0,
      confirmations: 0,
      pollingIntervalMs: 50,
      dataDir: IN_MEMORY,
      blobDir,
    },
    { onIndexerError: () => {} },
  );
  client = crynuxClientOf(CREATOR);
}, 120_000);

afterAll(async () => {
  await relay?.stop();
  if (blobDir) await rm(blobDir, { recursive: true, force: true });
});

const gptArgs = (content: string) => ({
  model: "o/r:Q4_0",
  messages: [{ role: "user" as const, content }],
  generation_config: { max_new_tokens: 16 },
});
const gptResponse = (content: string): GptResponse => ({
  model: "o/r:Q4_0",
  choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
  usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
});

async function lastTaskId(): Promise<bigint> {
  return anvil().publicClient.readContract({ address: chain.task, abi: taskAbi, functionName: "totalTasks" });
}

/** Waits until task `taskId` exists and has started, and returns its nodes by round. */
async function startedNodes(taskId: bigint): Promise<Address[]> {
  return vi.waitFor(
    async () => {
      const nodes = await selectedNodes(chain, taskId);
      if (nodes.length !== 3 || nodes.some((n) => /^0x0{40}$/.test(n))) throw new Error("not started");
      return nodes;
    },
    { timeout: 60_000, interval: 50 },
  );
}

/**
 * What the 3 nodes do for a GPT task: fetch the arguments from the relay, agree on `response` on-chain, the
 * result node uploads it and reports the upload.
 */
async function serveGptTask(taskId: bigint, response: GptResponse) {
  const nodes = await startedNodes(taskId);
  const fetched = await nodeRelay(nodes[1]!).getTaskArgs(taskId, { waitMs: 60_000 });
  const { resultNode } = await chain.succeed(taskId, nodes, gptResultHash(response));
  await nodeRelay(resultNode).uploadResults(taskId, { response }, { waitMs: 60_000 });
  await chain.reportUploaded(taskId, resultNode);
  return { nodes, fetched, resultNode };
}

/** Each node commits and discloses its own result (round i gets results[i]). */
async function commitAndDisclose(taskId: bigint, nodes: Address[], results: Hex[]) {
  const nonce = (round: number) => keccak256(toHex(`mismatch ${taskId} ${round}`));
  const send = async (node: Address, functionName: string, args: unknown[]) => {
    const index = anvil().accounts.findIndex((a) => a.address.toLowerCase() === node.toLowerCase());
    const wallet = anvil().walletClient(index);
    const request = {
      address: chain.task,
      abi: taskAbi,
      functionName,
      args,
      account: wallet.account,
    } as never;
    const gas = withSelectionGasMargin(await anvil().publicClient.estimateContractGas(request));
    const hash = await wallet.writeContract({ ...(request as object), gas } as never);
    const receipt = await anvil().publicClient.waitForTransactionReceipt({ hash });
    expect(receipt.status).toBe("success");
  };
  for (const [round, node] of nodes.entries())
    await send(node, "submitCommitment", [
      taskId,
      BigInt(round),
      taskCommitment(results[round]!, nonce(round)),
    ]);
  for (const [round, node] of nodes.entries())
    await send(node, "disclose", [taskId, BigInt(round), results[round]!, nonce(round)]);
}

const creatorNonce = () =>
  anvil().publicClient.getTransactionCount({
    address: anvil().accounts[CREATOR]!.address,
    blockTag: "pending",
  });

// The tests run in order on one chain: a task served end to end, a running task A that blocks the 3 nodes
// while B and C queue behind it, then a task whose nodes disagree.
let taskA: { taskId: bigint; nodes: Address[] };

describe("@crynux/client actions against anvil and a real relay", () => {
  test("createTask refuses bad arguments with a typed error before any transaction", async () => {
    const nonce = await creatorNonce();
    const bad = client.createTask({
      taskType: TaskType.GPT,
      args: { model: "o/r:Q4_0", messages: [], generation_config: { top_p: 2 } } as never,
      fee: parseEther("1"),
    });
    await expect(bad).rejects.toBeInstanceOf(InvalidTaskArgsError);
    const error = (await bad.catch((e: unknown) => e)) as InvalidTaskArgsError;
    expect(error.issues.map((issue) => issue.path.join("."))).toEqual(
      expect.arrayContaining(["generation_config.top_p"]),
    );
    await expect(
      client.runGptTask({ model: "o/r:Q4_0", messages: [{ role: "robot", content: "x" }] } as never),
    ).rejects.toBeInstanceOf(InvalidTaskArgsError);
    await expect(
      client.createTask({ taskType: 7 as never, args: gptArgs("x"), fee: 1n }),
    ).rejects.toBeInstanceOf(InvalidTaskArgsError);
    expect(await creatorNonce()).toBe(nonce);
  });

  test("runGptTask: create → upload → wait → result, with the nodes driven on-chain", async () => {
    const args = gptArgs("Hello, network");
    const response = gptResponse("Hello, app");
    const taskId = (await lastTaskId()) + 1n;
    const stages: TaskStage[] = [];
    const [result, served] = await Promise.all([
      client.runGptTask(args, {
        fee: parseEther("2"),
        onProgress: (progress) => {
          expect(progress.taskId).toBe(taskId);
          stages.push(progress.stage);
        },
      }),
      serveGptTask(taskId, response),
    ]);
    expect(result.taskId).toBe(taskId);
    expect(result.response).toEqual(response);
    expect(result.result).toBe(gptResultHash(response));
    expect(result.fee).toBe(parseEther("2"));
    expect(result.resultNode).toBe(served.resultNode);
    expect(stages).toEqual(["started", "committed", "success"]);
    // The node read back exactly what runGptTask uploaded.
    expect(served.fetched.rawArgs).toEqual(args);

    const task = await client.getTask({ taskId });
    expect(task).toMatchObject({
      taskId,
      taskType: TaskType.GPT,
      state: "uploaded",
      stateCode: 4,
      creator: anvil().accounts[CREATOR]!.address,
      cap: 16n,
      fee: parseEther("2"),
      nodes: served.nodes,
      result: gptResultHash(response),
    });
    const history = await client.getTaskHistory({ taskId, fromBlock: result.blockNumber });
    const names = history.map((event) => event.eventName);
    expect(names.filter((name) => name === "TaskStarted")).toHaveLength(3);
    for (const name of ["TaskCommitmentsReady", "TaskSuccess", "TaskResultUploaded"] as const)
      expect(names).toContain(name);
    expect(names.indexOf("TaskCommitmentsReady")).toBeLessThan(names.indexOf("TaskSuccess"));

    // The relay is not trusted: a response that is not the agreed one is refused.
    const lyingRelay: RelayClient = {
      ...client.relay,
      getResult: async (id, options) => {
        const real = await client.relay.getResult(id, options);
        return real.taskType === 1 ? { ...real, response: gptResponse("Hello, forger") } : real;
      },
    };
    await expect(getTaskResult({ ...client, relay: lyingRelay }, { taskId })).rejects.toBeInstanceOf(
      TaskResultMismatchError,
    );
    expect(await client.getTaskResult({ taskId })).toMatchObject({ taskType: 1, response });

    const node = await client.getNodeInfo({ address: served.nodes[0]! });
    expect(node).toMatchObject({ status: "available", stake: parseEther("400"), taskId: null });
    expect(node.groupKey).toMatch(/^0x[0-9a-f]{64}$/);
    const stats = await client.getNetworkStats();
    expect(stats.nodes).toEqual({ total: 3, available: 3, busy: 0 });
    expect(stats.tasks).toMatchObject({ total: taskId, queued: 0, running: 0 });
  });

  test("default fee: suggestFee on the queue read from the chain; queued tasks listed by value", async () => {
    // A takes the 3 nodes; B waits in the queue with a fee of our choosing.
    const a = await client.createTask({ taskType: TaskType.GPT, args: gptArgs("A"), fee: parseEther("1") });
    expect(a.queued).toBe(false);
    expect(a.nodes).toHaveLength(3);
    taskA = { taskId: a.taskId, nodes: a.nodes! };
    const b = await client.createTask({ taskType: TaskType.GPT, args: gptArgs("B"), fee: parseEther("1") });
    expect(b).toMatchObject({ queued: true, fee: parseEther("1") });
    expect(b.nodes).toBeUndefined();
    expect(b.feeSuggestion).toBeUndefined();

    // One node triple, busy: to start within 30 s, C must be ahead of B; within 60 s it may wait behind B.
    const urgent = await client.suggestTaskFee({ taskType: TaskType.GPT, cap: 16n, targetWaitSeconds: 30 });
    const relaxed = await client.suggestTaskFee({ taskType: TaskType.GPT, cap: 16n });
    expect(urgent.network).toMatchObject({ nodes: 3, freeSlots: 0 });
    expect(urgent.network.queuedValues).toHaveLength(1);
    expect(urgent.suggestion?.queuedAhead).toBe(0);
    expect(relaxed.fee).toBeLessThan(urgent.fee);

    const c = await client.createTask({ taskType: TaskType.GPT, args: gptArgs("C"), targetWaitSeconds: 30 });
    expect(c.queued).toBe(true);
    expect(c.feeSuggestion).not.toBeNull();
    expect(c.fee).toBe(urgent.fee);
    expect((await client.getTask({ taskId: c.taskId })).fee).toBe(c.fee);

    const queued = await client.listQueuedTasks();
    expect(queued.map((task) => task.taskId)).toEqual([c.taskId, b.taskId]);
    const queueValue = (taskId: bigint) =>
      anvil().publicClient.readContract({
        address: contracts.taskQueue,
        abi: taskQueueAbi,
        functionName: "valueOf",
        args: [taskId],
      });
    expect(queued[0]!.value).toBe(await queueValue(c.taskId));
    expect(queued[1]!.value).toBe(await queueValue(b.taskId));
    expect(queued[0]!.value).toBeGreaterThan(queued[1]!.value);
    expect((await client.getNetworkStats()).tasks.queued).toBe(2);
  });

  test("cancelTask: a queued task by its creator (refunded), not by anyone else", async () => {
    const [c, b] = await client.listQueuedTasks();
    const stranger = crynuxClientOf(STRANGER);
    const refused = await stranger.cancelTask({ taskId: b!.taskId }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TaskContractError);
    expect((refused as TaskContractError).errorName).toBe("Unauthorized");

    for (const queued of [b!, c!]) {
      const cancelled = await client.cancelTask({ taskId: queued.taskId });
      expect(cancelled.refunded).toBe(queued.fee);
      const final = await client.waitForTask({ taskId: queued.taskId, timeoutMs: 60_000 });
      expect(final).toMatchObject({ outcome: "aborted", reason: "cancelled", result: null });
      expect(final.task.state).toBe("aborted");
    }
    expect(await client.listQueuedTasks()).toEqual([]);
    // A running task cannot be cancelled before its deadline.
    const early = await client.cancelTask({ taskId: taskA.taskId }).catch((e: unknown) => e);
    expect((early as TaskContractError).errorName).toBe("DeadlineNotReached");
  });

  test("waitForTask gives up at its timeout and stops on abort; then follows the task to success", async () => {
    const { taskId, nodes } = taskA;
    const timedOut = await client
      .waitForTask({ taskId, timeoutMs: 500, pollingIntervalMs: 50 })
      .catch((e: unknown) => e);
    expect(timedOut).toBeInstanceOf(WaitForTaskTimeoutError);
    expect((timedOut as WaitForTaskTimeoutError).stage).toBe("started");

    // Another task under this id (what a reorg that dropped the creating transaction leaves): not followed.
    const replaced = await client
      .waitForTask({ taskId, taskHash: `0x${"ee".repeat(32)}`, pollingIntervalMs: 50 })
      .catch((e: unknown) => e);
    expect(replaced).toBeInstanceOf(TaskNotFoundError);
    expect((replaced as TaskNotFoundError).details).toMatch(/another task hash/);

    const controller = new AbortController();
    const seen: TaskStage[] = [];
    const aborted = await client
      .waitForTask({
        taskId,
        signal: controller.signal,
        pollingIntervalMs: 50,
        onProgress: ({ stage }) => {
          seen.push(stage);
          controller.abort();
        },
      })
      .catch((e: unknown) => e);
    expect(aborted).toBe(controller.signal.reason);
    expect((aborted as Error).name).toBe("AbortError");
    expect(seen).toEqual(["started"]);

    const stages: TaskStage[] = [];
    const [final] = await Promise.all([
      client.waitForTask({ taskId, onProgress: ({ stage }) => stages.push(stage), timeoutMs: 120_000 }),
      (async () => {
        const { resultNode } = await chain.succeed(taskId, nodes, gptResultHash(gptResponse("A")));
        await chain.reportUploaded(taskId, resultNode);
      })(),
    ]);
    expect(final.outcome).toBe("success");
    expect(final.result).toBe(gptResultHash(gptResponse("A")));
    // Stages come from the task's events, so none is skipped however the polls fall.
    expect(stages).toEqual(["started", "committed", "success"]);
  });

  test("a queued task reports queued → started → committed → success once nodes free up", async () => {
    const running = await client.createTask({
      taskType: TaskType.GPT,
      args: gptArgs("E"),
      fee: parseEther("1"),
    });
    const waiting = await client.createTask({
      taskType: TaskType.GPT,
      args: gptArgs("D"),
      fee: parseEther("1"),
    });
    expect(waiting.queued).toBe(true);
    const progress: { stage: TaskStage; nodes?: Address[] }[] = [];
    const [final] = await Promise.all([
      client.waitForTask({
        taskId: waiting.taskId,
        fromBlock: waiting.blockNumber,
        timeoutMs: 120_000,
        onProgress: ({ stage, nodes }) => progress.push({ stage, ...(nodes ? { nodes } : {}) }),
      }),
      (async () => {
        // E's end frees its nodes, which start D from the queue in the same transaction.
        const first = await chain.succeed(running.taskId, running.nodes!, gptResultHash(gptResponse("E")));
        await chain.reportUploaded(running.taskId, first.resultNode);
        const nodes = await startedNodes(waiting.taskId);
        const second = await chain.succeed(waiting.taskId, nodes, gptResultHash(gptResponse("D")));
        await chain.reportUploaded(waiting.taskId, second.resultNode);
      })(),
    ]);
    expect(progress.map((p) => p.stage)).toEqual(["queued", "started", "committed", "success"]);
    expect(progress[1]!.nodes).toEqual(await selectedNodes(chain, waiting.taskId));
    expect(final).toMatchObject({
      outcome: "success",
      result: gptResultHash(gptResponse("D")),
      reason: null,
    });
  });

  test("3 different results abort the task: runGptTask throws TaskAbortedError", async () => {
    const taskId = (await lastTaskId()) + 1n;
    const stages: TaskStage[] = [];
    const [outcome] = await Promise.all([
      client
        .runGptTask(gptArgs("Disagree"), {
          fee: parseEther("1"),
          onProgress: ({ stage }) => stages.push(stage),
        })
        .catch((e: unknown) => e),
      (async () => {
        const nodes = await startedNodes(taskId);
        await nodeRelay(nodes[0]!).getTaskArgs(taskId, { waitMs: 60_000 });
        await commitAndDisclose(
          taskId,
          nodes,
          ["one", "two", "three"].map((text) => gptResultHash(gptResponse(text))),
        );
      })(),
    ]);
    expect(outcome).toBeInstanceOf(TaskAbortedError);
    expect(outcome).toMatchObject({ taskId, outcome: "aborted", reason: "results mismatch" });
    expect(stages).toEqual(["started", "committed", "aborted"]);
    expect((await client.getTask({ taskId })).state).toBe("aborted");
  });

  test("runSdTask with a JSON-RPC account (the wallet signs): images checked by their pHashes", async () => {
    // anvil signs for its dev accounts (eth_sendTransaction, eth_signTypedData_v4) the way an injected wallet
    // does after the user confirms: the client never sees a key.
    const address = anvil().accounts[WALLET_USER]!.address;
    const walletUser = createCrynuxClient({
      chain: anvil().chain,
      transport: http(anvil().rpcUrl),
      account: address,
      relayUrl: relay.url,
      contracts,
      pollingInterval: 100,
      relay: { pollIntervalMs: 100 },
    });
    expect(walletUser.account).toMatchObject({ address, type: "json-rpc" });
    const args = {
      base_model: "stabilityai/sdxl-turbo",
      prompt: "a lighthouse",
      task_config: { num_images: 2 },
    };
    const { images, result } = sdImages(2, 3);
    const taskId = (await lastTaskId()) + 1n;
    const [outcome] = await Promise.all([
      walletUser.runSdTask(args, { fee: parseEther("1") }),
      (async () => {
        const nodes = await startedNodes(taskId);
        const fetched = await nodeRelay(nodes[2]!).getTaskArgs(taskId, { waitMs: 60_000 });
        expect(fetched.rawArgs).toEqual(args);
        const { resultNode } = await chain.succeed(taskId, nodes, result);
        await nodeRelay(resultNode).uploadResults(taskId, { images }, { waitMs: 60_000 });
        await chain.reportUploaded(taskId, resultNode);
      })(),
    ]);
    expect(outcome.taskId).toBe(taskId);
    expect(outcome.images).toEqual(images);
    expect(outcome.result).toBe(result);
    expect(sdResultFromPHashes(outcome.pHashes)).toBe(result);
    expect((await walletUser.getTask({ taskId })).creator).toBe(address);
    // An image swapped by the relay has another pHash than the one the nodes agreed on.
    const swapped = sdImages(1, 40).images[0]!;
    const lyingRelay: RelayClient = {
      ...walletUser.relay,
      getResult: async (id, options) => {
        const real = await walletUser.relay.getResult(id, options);
        return real.taskType === 0 ? { ...real, images: [real.images[0]!, swapped] } : real;
      },
    };
    await expect(getTaskResult({ ...walletUser, relay: lyingRelay }, { taskId })).rejects.toBeInstanceOf(
      TaskResultMismatchError,
    );
  });
});
