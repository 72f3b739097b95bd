import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { type CrynuxClient, createCrynuxClient, createRelayClient } from "@crynux/client";
import { TaskState, taskAbi } from "@crynux/contracts";
import { openBridgeStore } from "@crynux/example-bridge";
import { parseCnx } from "@crynux/pricing";
import { type GptResponse, type GptTaskArgsInput, gptResultHash, taskHash } from "@crynux/tasks";
import { type Address, type Hex, http } from "viem";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import {
  ACCOUNTS,
  type FaultNetwork,
  freePort,
  isAlive,
  kill9,
  killAll,
  type ServiceProcess,
  spawnService,
  startFaultNetwork,
  terminate,
  writeBridgeConfig,
  writeRelayConfig,
} from "./fault-helpers.js";

// The relay and the bridge run as their real CLIs, each its own process with PGlite on disk; anvil, the
// contracts and three nodes (in this process, on the devnet's generated model) around them. Each test kills
// one service with SIGKILL at a chosen point of a task, starts it again on the same port and data directory,
// and checks that the task and every client still get where they were going.
const CONFIRMATIONS = 1;
const AREA = "Fault injection: services";
const API_KEY = `sk-faults-${"0".repeat(24)}`;
const MODEL_ID = "crynux-faults";
const WAIT = { timeout: 150_000, interval: 200 };

let network: FaultNetwork;
let relayConfig: string;
let relayPort: number;
let relayUrl: string;
let relay: ServiceProcess;
let bridgeDir: string;
let bridgeConfig: string;
let bridgePort: number;
/** The bridge's first process, started with the relay; the bridge test kills it. */
let bridge: ServiceProcess;
/** Every relay process this file started, in order (restarts included). */
const relayRuns: ServiceProcess[] = [];

/**
 * Requests of the nodes' relay clients go through this hook: a test arms it to send a request itself (and kill
 * the relay behind it); `undefined` lets the request go out as usual.
 */
let nodeFault: ((request: Request) => Promise<Response> | undefined) | undefined;
const nodeFetch: typeof globalThis.fetch = async (input, init) => {
  const request = new Request(input, init);
  return nodeFault?.(request) ?? fetch(request);
};

async function startRelayProcess(): Promise<ServiceProcess> {
  relay = await spawnService("relay", { config: relayConfig, port: relayPort });
  relayRuns.push(relay);
  return relay;
}

/**
 * SIGKILLs the relay while `request` is on its way (sent first, killed right behind it, so the relay dies
 * before or while handling it), then starts it again in the background on the same port and data directory.
 */
function killRelayDuring(request: Request): { sent: Promise<Response>; restarted: Promise<ServiceProcess> } {
  const victim = relay;
  const sent = fetch(request);
  const restarted = kill9(victim).then(startRelayProcess);
  return { sent, restarted };
}

function appClient(account: number, fetchHook?: typeof globalThis.fetch): CrynuxClient {
  return createCrynuxClient({
    chain: network.anvil.chain,
    transport: http(network.anvil.rpcUrl),
    account: network.anvil.walletClient(account).account,
    relayUrl,
    contracts: network.contracts,
    pollingInterval: 200,
    // Default retries: the relay is down for as long as a restart takes (seconds), and the client keeps
    // trying for as long as the action waits for the relay (uploadTaskArgs, getTaskResult).
    relay: {
      pollIntervalMs: 200,
      ...(fetchHook ? { fetch: fetchHook } : {}),
    },
  });
}

const gptArgs = (content: string, seed: number): GptTaskArgsInput => ({
  model: network.model.ref,
  messages: [{ role: "user", content }],
  generation_config: { max_new_tokens: 8 },
  seed,
});

async function readTask(taskId: bigint) {
  const [creator, , state, hash] = await network.anvil.publicClient.readContract({
    address: network.contracts.task,
    abi: taskAbi,
    functionName: "getTask",
    args: [taskId],
  });
  return { creator, state, taskHash: hash };
}

async function onChainResult(taskId: bigint): Promise<Hex> {
  return network.anvil.publicClient.readContract({
    address: network.contracts.task,
    abi: taskAbi,
    functionName: "getTaskResult",
    args: [taskId],
  });
}

beforeAll(async () => {
  network = await startFaultNetwork({ confirmations: CONFIRMATIONS });
  network.startMining();
  relayPort = await freePort();
  relayUrl = `http://127.0.0.1:${relayPort}`;
  relayConfig = await writeRelayConfig(network, network.dir, { confirmations: CONFIRMATIONS });
  bridgeDir = join(network.dir, "bridge");
  await mkdir(bridgeDir, { recursive: true });
  bridgeConfig = await writeBridgeConfig(network, bridgeDir, {
    relayUrl,
    apiKey: API_KEY,
    modelId: MODEL_ID,
  });
  bridgePort = await freePort();
  // Both create their PGlite database now, side by side: on a loaded machine that takes a minute.
  const bridgeStarted = spawnService("bridge", { config: bridgeConfig, port: bridgePort });
  bridgeStarted.catch(() => {});
  await startRelayProcess();
  bridge = await bridgeStarted;
  await network.startNodes(relayUrl, { fetch: nodeFetch });
}, 360_000);

afterAll(async () => {
  nodeFault = undefined;
  const pids = [...relayRuns.map((run) => run.pid), ...(bridge ? [bridge.pid] : [])];
  await killAll();
  await network?.stop();
  for (const pid of pids) expect(isAlive(pid), `process ${pid} still runs`).toBe(false);
}, 120_000);

describe("relay and bridge killed with SIGKILL mid-task, restarted on the same port and data", () => {
  let firstTask: { taskId: bigint; args: GptTaskArgsInput } | undefined;

  test("the relay dies while the app uploads the task arguments: the upload is retried, the task succeeds", async (context) => {
    const runsBefore = relayRuns.length;
    let argUploads = 0;
    let fault: { sent: Promise<Response>; restarted: Promise<ServiceProcess> } | undefined;
    const app = appClient(ACCOUNTS.app, async (input, init) => {
      const request = new Request(input, init);
      if (request.method === "PUT" && new URL(request.url).pathname.endsWith("/args")) {
        argUploads++;
        if (!fault) {
          fault = killRelayDuring(request);
          return fault.sent;
        }
      }
      return fetch(request);
    });
    const args = gptArgs("The relay falls over while I upload.", 101);
    const result = await app.runGptTask(args, {
      fee: parseCnx("0.05"),
      timeoutMs: 150_000,
      relayWaitMs: 120_000,
    });
    await fault!.restarted;

    expect(relayRuns.length).toBe(runsBefore + 1);
    expect(relayRuns.at(-2)!.pid).not.toBe(relay.pid);
    expect(await relayRuns.at(-2)!.exit).toMatchObject({ signal: "SIGKILL" });
    // The first attempt died with the relay; a retry reached the new process.
    expect(argUploads).toBeGreaterThanOrEqual(2);
    expect(result.response.choices[0]!.message.content.length).toBeGreaterThan(0);
    expect(gptResultHash(result.response)).toBe(await onChainResult(result.taskId));
    await vi.waitFor(
      async () => expect((await readTask(result.taskId)).state).toBe(TaskState.UPLOADED),
      WAIT,
    );
    firstTask = { taskId: result.taskId, args };
    recordTrial(context, {
      area: AREA,
      fault: "kill -9 the relay (CLI, PGlite on disk) while the app uploads the task arguments; restart it",
      runs: 1,
      expected:
        "the app's relay client retries the upload against the restarted relay; the task reaches UPLOADED and the downloaded result hashes to the on-chain result",
    });
  }, 200_000);

  test("the relay dies while the result node uploads the results: the node retries, the app downloads a matching result", async (context) => {
    const runsBefore = relayRuns.length;
    let resultUploads = 0;
    let fault: { sent: Promise<Response>; restarted: Promise<ServiceProcess> } | undefined;
    nodeFault = (request) => {
      if (request.method !== "PUT" || !new URL(request.url).pathname.endsWith("/results")) return undefined;
      resultUploads++;
      if (fault) return undefined;
      fault = killRelayDuring(request);
      return fault.sent;
    };
    const app = appClient(ACCOUNTS.spare[0]);
    const args = gptArgs("The relay falls over while the node uploads.", 202);
    try {
      const result = await app.runGptTask(args, {
        fee: parseCnx("0.05"),
        timeoutMs: 150_000,
        relayWaitMs: 120_000,
      });
      await fault!.restarted;

      expect(fault).toBeDefined();
      expect(relayRuns.length).toBe(runsBefore + 1);
      expect(await relayRuns.at(-2)!.exit).toMatchObject({ signal: "SIGKILL" });
      expect(resultUploads).toBeGreaterThanOrEqual(2);
      expect(gptResultHash(result.response)).toBe(await onChainResult(result.taskId));
      await vi.waitFor(
        async () => expect((await readTask(result.taskId)).state).toBe(TaskState.UPLOADED),
        WAIT,
      );
    } finally {
      nodeFault = undefined;
    }

    // What the relays before the kills stored is still served by the third process: the arguments of the
    // first test's task, hashed as on-chain.
    expect(firstTask).toBeDefined();
    const creatorRelay = createRelayClient({
      url: relayUrl,
      account: network.anvil.walletClient(ACCOUNTS.app).account as never,
      retry: { limit: 20, backoffLimitMs: 1000 },
    });
    const stored = await creatorRelay.getTaskArgs(firstTask!.taskId);
    expect(stored.taskHash).toBe(taskHash(firstTask!.args));
    expect(stored.taskHash).toBe((await readTask(firstTask!.taskId)).taskHash);
    const health = await creatorRelay.health();
    expect(BigInt(health.indexedBlock)).toBeGreaterThan(network.deploymentBlock);
    recordTrial(context, {
      area: AREA,
      fault: "kill -9 the relay while the result node uploads the results; restart it",
      runs: 1,
      expected:
        "the node retries the upload; the task reaches UPLOADED; the app downloads a result matching the on-chain hash; arguments stored before the kills are still served",
    });
  }, 200_000);

  test("the bridge dies after paying for a task, before answering: the retry with the same Idempotency-Key gets the result, paid once", async (context) => {
    const { publicClient } = network.anvil;
    const wallet = network.anvil.accounts[ACCOUNTS.bridge]!.address;
    const first = bridge;
    let second: ServiceProcess | undefined;
    try {
      const fromBlock = (await publicClient.getBlockNumber()) + 1n;
      const walletTasks = async () => {
        const query = {
          address: network.contracts.task,
          abi: taskAbi,
          args: { creator: wallet },
          fromBlock,
          toBlock: "latest",
        } as const;
        const [queued, started] = await Promise.all([
          publicClient.getContractEvents({ ...query, eventName: "TaskQueued" }),
          publicClient.getContractEvents({ ...query, eventName: "TaskStarted" }),
        ]);
        const ids = new Map<bigint, Hex>();
        for (const log of [...queued, ...started]) ids.set(log.args.taskId!, log.transactionHash);
        return ids;
      };

      const idempotencyKey = "faults-bridge-kill-1";
      const request = () =>
        fetch(`${first.url}/v1/chat/completions`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${API_KEY}`,
            "content-type": "application/json",
            "idempotency-key": idempotencyKey,
          },
          body: JSON.stringify({
            model: MODEL_ID,
            messages: [{ role: "user", content: "The bridge falls over after paying." }],
            max_tokens: 8,
          }),
        });
      const answered = request().then(
        (response) => ({ status: response.status }),
        (error: unknown) => ({ error }),
      );
      // The payment is on-chain (the block is mined at once): kill the bridge before it can answer.
      let paid: Map<bigint, Hex> = new Map();
      await vi.waitFor(
        async () => {
          paid = await walletTasks();
          if (paid.size === 0) throw new Error("not paid yet");
        },
        { timeout: 60_000, interval: 25 },
      );
      await kill9(first);
      expect(await first.exit).toMatchObject({ signal: "SIGKILL" });
      expect(await answered).toMatchObject({ error: expect.any(Error) });
      const [taskId, txHash] = [...paid][0]!;

      second = await spawnService("bridge", { config: bridgeConfig, port: bridgePort });
      // The client's retry: same body, same Idempotency-Key, until the bridge answers with the result.
      let response: Response | undefined;
      await vi.waitFor(
        async () => {
          response = await request();
          if (response.status !== 200) throw new Error(`status ${response.status}: ${await response.text()}`);
        },
        { timeout: 150_000, interval: 1000 },
      );
      const completion = (await response!.json()) as { choices: { message: { content: string } }[] };
      expect(response!.headers.get("x-crynux-task-id")).toBe(String(taskId));

      const headers = { authorization: `Bearer ${API_KEY}` };
      const view = (await (
        await fetch(`${second.url}/v1/crynux/tasks/${idempotencyKey}`, { headers })
      ).json()) as { status: string; task_id: string; tx_hash: string };
      expect(view).toMatchObject({ status: "succeeded", task_id: String(taskId), tx_hash: txHash });
      const stored = (await (
        await fetch(`${second.url}/v1/crynux/tasks/${idempotencyKey}/result`, { headers })
      ).json()) as { task_type: number; response: GptResponse };
      expect(stored.task_type).toBe(1);
      expect(gptResultHash(stored.response)).toBe(await onChainResult(taskId));
      expect(completion.choices[0]!.message.content).toBe(stored.response.choices[0]!.message.content);
      await vi.waitFor(async () => expect((await readTask(taskId)).state).toBe(TaskState.UPLOADED), WAIT);

      // Paid exactly once: one task of the bridge's wallet since the request, and it is this one.
      expect([...(await walletTasks()).keys()]).toEqual([taskId]);
      expect((await readTask(taskId)).creator).toBe(wallet as Address);

      // The record survives in the bridge's own database (opened once the bridge has stopped).
      await terminate(second);
      expect(await second.exit).toMatchObject({ code: 0 });
      const store = await openBridgeStore({ dataDir: join(bridgeDir, "bridge-db") });
      try {
        expect(await store.get("faults", idempotencyKey)).toMatchObject({
          state: "succeeded",
          taskId,
          txHash,
        });
        expect(await store.all()).toHaveLength(1);
      } finally {
        await store.close();
      }
    } finally {
      await kill9(first);
      if (second) await kill9(second);
    }
    recordTrial(context, {
      area: AREA,
      fault:
        "kill -9 the bridge (CLI, PGlite on disk) right after its createTask is mined, before it answers; restart it",
      runs: 1,
      expected:
        "the retried request with the same Idempotency-Key gets the task's result; no second task is paid; the record is in the bridge's database",
    });
  }, 300_000);
});
