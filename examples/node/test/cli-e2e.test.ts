import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createCrynuxClient } from "@crynux/client";
import { type CrynuxDeployment, deployCrynux, taskAbi } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import { generateTestModel } from "@crynux/node-core";
import { http, parseEther, parseEventLogs } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { runCli } from "../src/cli.js";

// One process-level run: anvil, the contracts and a relay in this process; three `crynux-node start`
// processes (tsx, from the sources) with a generated tiny GGUF model; an application runs a GPT task through
// @crynux/client; the nodes are paid; SIGTERM stops each process with exit code 0.
const anvil = useAnvil({ accounts: 5, balanceEther: 10_000 });
const NODE_ACCOUNTS = [1, 2, 3] as const;
const CREATOR = 4;
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(REPO, "examples/node/src/cli.ts");

type NodeProcess = {
  child: ChildProcess;
  log: string[];
  config: string;
  apiUrl?: string;
  exit: Promise<number | null>;
};

let dir: string;
let deployment: CrynuxDeployment;
let relay: RunningRelay;
let miner: ReturnType<typeof setInterval> | undefined;
const processes: NodeProcess[] = [];

function spawnNode(config: string): NodeProcess {
  const child = spawn(
    process.execPath,
    ["--conditions=source", "--import", "tsx", CLI, "start", "--config", config],
    {
      cwd: REPO,
      env: { ...process.env, FORCE_COLOR: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const log: string[] = [];
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) log.push(line);
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, log, config, exit };
}

/** The node process's JSON log lines. */
const entries = (p: NodeProcess) =>
  p.log.flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });

const dumpLogs = () =>
  processes
    .map((p, i) => `--- node ${i + 1} (pid ${p.child.pid})\n${p.log.slice(-60).join("\n")}`)
    .join("\n");

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-node-e2e-"));
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
      // new heads pushed over anvil's WebSocket, as the nodes below get them
      webSocketUrl: anvil().rpcUrl.replace(/^http/, "ws"),
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
  for (const account of NODE_ACCOUNTS) {
    const nodeDir = join(dir, `node-${account}`);
    await mkdir(nodeDir, { recursive: true });
    await writeFile(join(nodeDir, "node.key"), anvil().accounts[account]!.privateKey, { mode: 0o600 });
    const config = join(nodeDir, "crynux-node.jsonc");
    await writeFile(
      config,
      `// node ${account}
{
  "chain": {
    "rpcUrl": ${JSON.stringify(anvil().rpcUrl)},
    "webSocketUrl": ${JSON.stringify(anvil().rpcUrl.replace(/^http/, "ws"))},
    "deploymentFile": "../deployment.json"
  },
  "relayUrl": ${JSON.stringify(relay.url)},
  "account": { "privateKeyFile": "node.key" },
  "stateDir": "./state",
  "models": { "modelDir": "../models", "cacheDir": "./cache", "prepare": [{ "model": "file:tiny.gguf", "quantizeBits": 8 }] },
  "gpt": { "threads": 1 },
  "card": { "gpuName": "Test CPU", "gpuVram": 8 },
  "confirmations": 1,
  "pollingIntervalMs": 200,
  "api": { "port": 0 },
  "log": { "level": "info", "format": "json" }
}`,
    );
    processes.push(spawnNode(config));
  }
  // Each process writes where its API listens, then joins.
  await vi.waitFor(
    () => {
      for (const p of processes) {
        if (p.child.exitCode !== null) throw new Error(`a node exited early:\n${dumpLogs()}`);
        const listening = entries(p).find((e) => e.msg === "status API listening");
        if (!listening) throw new Error("not listening yet");
        p.apiUrl = listening.url as string;
      }
    },
    { timeout: 240_000, interval: 500 },
  );
  await vi.waitFor(
    async () => {
      for (const p of processes) {
        if (p.child.exitCode !== null) throw new Error(`a node exited early:\n${dumpLogs()}`);
        const status = (await (await fetch(`${p.apiUrl}/v1/status`)).json()) as { chainStatus: string };
        if (status.chainStatus !== "AVAILABLE") throw new Error(`a node is ${status.chainStatus}`);
      }
    },
    { timeout: 240_000, interval: 500 },
  );
}, 600_000);

afterAll(async () => {
  clearInterval(miner);
  for (const p of processes) {
    // Whatever happened in the tests: no process outlives the file.
    if (p.child.exitCode === null && p.child.signalCode === null && p.child.pid) {
      try {
        process.kill(p.child.pid, "SIGKILL");
      } catch {}
      await p.exit;
    }
  }
  await relay?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

describe("three crynux-node processes", () => {
  test("prepared their model, with progress in the logs", () => {
    for (const p of processes) {
      const logged = entries(p);
      expect(logged.find((e) => e.msg === "model ready")).toMatchObject({
        model: "file:tiny.gguf",
        quantizeBits: 8,
        sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      });
      // Not a terminal: plain quantization progress lines, ending at 100 %.
      expect(logged.filter((e) => e.msg === "quantize").map((e) => e.percent)).toContain(100);
      for (const e of logged) expect(Object.keys(e).slice(0, 3)).toEqual(["time", "level", "msg"]);
    }
  });

  test("follow new heads over the RPC's WebSocket (chain.webSocketUrl)", async () => {
    await vi.waitFor(
      async () => {
        for (const p of processes) {
          const health = (await (await fetch(`${p.apiUrl}/v1/health`)).json()) as { newHeads: string };
          expect(health.newHeads).toBe("connected");
        }
      },
      { timeout: 30_000, interval: 200 },
    );
    for (const p of processes)
      expect(entries(p).filter((e) => e.msg === "newHeads subscription")).toEqual([]);
  });

  test("run a GPT task from an application, get the result, and the 3 nodes are paid", async () => {
    const client = createCrynuxClient({
      chain: anvil().chain,
      transport: http(anvil().rpcUrl),
      account: privateKeyToAccount(anvil().accounts[CREATOR]!.privateKey),
      relayUrl: relay.url,
      contracts: deployment,
      pollingInterval: 200,
      relay: { pollIntervalMs: 200 },
    });
    const fee = parseEther("3");
    const result = await client.runGptTask(
      {
        model: "file:tiny.gguf",
        messages: [{ role: "user", content: "Tell me about the sea." }],
        generation_config: { max_new_tokens: 8 },
        seed: 42,
        quantize_bits: 8,
      },
      { fee, timeoutMs: 400_000, relayWaitMs: 300_000 },
    );
    expect(result.response.choices).toHaveLength(1);
    expect(result.response.usage.completion_tokens).toBeGreaterThan(0);
    expect(result.fee).toBe(fee);

    const addresses = NODE_ACCOUNTS.map((i) => anvil().accounts[i]!.address.toLowerCase());
    // Paid on-chain: one TaskNodeSuccess per node, together the whole fee.
    await vi.waitFor(
      async () => {
        const logs = await anvil().publicClient.getContractEvents({
          address: deployment.task,
          abi: taskAbi,
          eventName: "TaskNodeSuccess",
          args: { taskId: result.taskId },
          fromBlock: result.blockNumber,
        });
        const paid = parseEventLogs({ abi: taskAbi, logs, eventName: "TaskNodeSuccess" });
        expect(paid.map((log) => log.args.node.toLowerCase()).sort()).toEqual([...addresses].sort());
        expect(paid.reduce((sum, log) => sum + log.args.fee, 0n)).toBe(fee);
        for (const log of paid) expect(log.args.fee).toBeGreaterThan(0n);
      },
      { timeout: 120_000, interval: 500 },
    );
    // And each node's status API counts its earnings once the payment is confirmed.
    await vi.waitFor(
      async () => {
        for (const p of processes) {
          const status = (await (await fetch(`${p.apiUrl}/v1/status`)).json()) as {
            earnings: string;
            outcomes: Record<string, number>;
            currentTask: unknown;
          };
          expect(BigInt(status.earnings)).toBeGreaterThan(0n);
          expect(status.outcomes.success).toBe(1);
          expect(status.currentTask).toBeNull();
        }
      },
      { timeout: 120_000, interval: 500 },
    );
  }, 600_000);

  test("the CLI talks to a running node through its API", async () => {
    let out = "";
    const io = { out: (t: string) => (out += t), err: () => {} };
    expect(await runCli(["status", "--config", processes[0]!.config], io)).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ source: "api", chainStatus: "AVAILABLE" });
    out = "";
    expect(await runCli(["pause", "--config", processes[0]!.config], io)).toBe(0);
    expect(JSON.parse(out)).toEqual({ action: "pause", via: "api", status: "PAUSED" });
  }, 120_000);

  test("SIGTERM stops each process with exit code 0", async () => {
    for (const p of processes) p.child.kill("SIGTERM");
    const codes = await Promise.all(processes.map((p) => p.exit));
    expect(codes, dumpLogs()).toEqual([0, 0, 0]);
    for (const p of processes) expect(entries(p).some((e) => e.msg === "stopped")).toBe(true);
  }, 120_000);
});
