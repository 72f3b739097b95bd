import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CrynuxDeployment, deployCrynux } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import {
  type CrynuxNode,
  createGptExecutor,
  createModelResolver,
  createNode,
  type GptExecutor,
  generateTestModel,
  type TaskRecord,
} from "@crynux/node-core";
import { serve } from "@hono/node-server";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createNodeApi } from "../src/api.js";
import { runCli } from "../src/cli.js";
import { EXIT } from "../src/errors.js";

// Anvil + the contracts + a relay (in-memory PGlite) + one in-process node (real node-llama-cpp executor on a
// generated tiny model) whose status API is exercised with app.request(); then, with the node stopped, the
// CLI's chain fallbacks for status / pause / resume / quit.
const anvil = useAnvil({ accounts: 4, balanceEther: 10_000 });
const NODE_ACCOUNT = 1;
const CARD = { gpuName: "Test CPU", gpuVram: 8 };

let dir: string;
let deployment: CrynuxDeployment;
let relay: RunningRelay;
let executor: GptExecutor;
let node: CrynuxNode;
let stateDir: string;
let modelDir: string;
let cacheDir: string;
let app: ReturnType<typeof createNodeApi>;

/** Hono's node-server bindings as a request from `address` has them (what getConnInfo reads). */
const from = (address: string) => ({
  incoming: { socket: { remoteAddress: address, remoteFamily: "IPv4" } },
});

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-node-api-"));
  modelDir = join(dir, "models");
  cacheDir = join(dir, "cache");
  stateDir = join(dir, "state");
  await mkdir(modelDir, { recursive: true });
  await generateTestModel(join(modelDir, "tiny.gguf"), { seed: 3 });
  deployment = await deployCrynux(anvil().walletClient(0), anvil().publicClient);
  relay = await startRelay(
    {
      rpcUrl: anvil().rpcUrl,
      taskContract: deployment.task,
      port: 0,
      confirmations: 0,
      pollingIntervalMs: 100,
      dataDir: IN_MEMORY,
      blobDir: join(dir, "blobs"),
    },
    { onIndexerError: () => {} },
  );
  executor = await createGptExecutor({ resolveModel: createModelResolver({ modelDir, cacheDir }) });
  node = createNode({
    publicClient: anvil().publicClient,
    walletClient: anvil().walletClient(NODE_ACCOUNT),
    contracts: deployment,
    relayUrl: relay.url,
    stateDir,
    gpt: executor,
    card: CARD,
    confirmations: 0,
    pollingIntervalMs: 100,
  });
  await node.start();
  app = createNodeApi(node, { gpt: executor, modelDir, cacheDir });
}, 180_000);

afterAll(async () => {
  await node?.stop();
  await executor?.dispose();
  await relay?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

const post = (path: string, address = "127.0.0.1", headers: Record<string, string> = {}) =>
  app.request(path, { method: "POST", headers }, from(address));

describe("status API of a running node", () => {
  test("GET /v1/health and /v1/status: the node joined, bigints as decimal strings", async () => {
    const health = await app.request("/v1/health");
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "ok", address: node.address });

    const response = await app.request("/v1/status");
    expect(response.status).toBe(200);
    const body = await response.json();
    expect(body).toMatchObject({
      address: node.address,
      chainStatus: "AVAILABLE",
      currentTask: null,
      tasksDone: 0,
      earnings: "0",
      qos: { averageScore: expect.stringMatching(/^\d+$/), weight: expect.stringMatching(/^\d+$/) },
    });
  });

  test("GET /v1/models lists the loaded model and the files of the model and cache directories", async () => {
    await executor.execute({
      model: "file:tiny.gguf",
      messages: [{ role: "user", content: "hi" }],
      generation_config: { max_new_tokens: 2 },
      quantize_bits: 8,
    });
    const body = (await (await app.request("/v1/models")).json()) as {
      runtimeId: string;
      loaded: { path: string; sha256: string }[];
      modelDir: { path: string; files: { path: string; bytes: number }[] };
      cacheDir: { files: { path: string; bytes: number }[] };
    };
    expect(body.runtimeId).toBe(executor.runtimeId);
    expect(body.loaded).toHaveLength(1);
    expect(body.loaded[0]!.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(body.modelDir.path).toBe(modelDir);
    expect(body.modelDir.files).toEqual([{ path: "tiny.gguf", bytes: expect.any(Number) }]);
    expect(body.modelDir.files[0]!.bytes).toBeGreaterThan(0);
    // The Q8_0 copy is in the cache.
    expect(body.cacheDir.files.some((f) => f.bytes > 0 && f.path.endsWith(".gguf"))).toBe(true);
  }, 120_000);

  test("GET /v1/tasks never shows a result or a nonce before disclosure", async () => {
    const nonce = `0x${"ab".repeat(32)}` as const;
    const result = `0x${"cd".repeat(32)}` as const;
    const base: TaskRecord = {
      version: 1,
      taskId: "900",
      round: 0,
      taskType: 1,
      taskHash: `0x${"11".repeat(32)}`,
      creator: anvil().accounts[3]!.address,
      startedIn: null,
      step: "committed",
      output: { kind: "result", result, response: { secret: "the answer" } },
      nonce,
      commitment: `0x${"22".repeat(32)}`,
      txs: {},
      events: [],
      createdAt: 1,
      updatedAt: 1,
    };
    await node.store!.putTask(base);
    await node.store!.putTask({ ...base, taskId: "901", step: "disclosed", updatedAt: 2 });
    const response = await app.request("/v1/tasks");
    expect(response.status).toBe(200);
    const text = await response.text();
    const { tasks } = JSON.parse(text) as { tasks: Record<string, unknown>[] };
    const committed = tasks.find((t) => t.taskId === "900")!;
    expect(committed).toMatchObject({ step: "committed", output: { kind: "result" } });
    expect(committed).not.toHaveProperty("nonce");
    expect(committed.output).toEqual({ kind: "result" });
    const disclosed = tasks.find((t) => t.taskId === "901")!;
    expect(disclosed).toMatchObject({ step: "disclosed", nonce, output: { kind: "result", result } });
    // The response text is the creator's: the relay serves it to them only, the node's API never.
    expect(text).not.toContain("the answer");
    // Newest first; the committed task's secrets appear nowhere in the answer but in the disclosed one.
    expect(tasks.map((t) => t.taskId)).toEqual(["901", "900"]);
    expect(text.split(nonce.slice(2)).length).toBe(2);

    expect((await app.request("/v1/tasks?limit=1")).status).toBe(200);
    const bad = await app.request("/v1/tasks?limit=0");
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: { code: "invalid_query", message: expect.any(String) } });
    // Test records out: the node would try to work on them at its next start.
    await node.store!.deleteTask(900n);
    await node.store!.deleteTask(901n);
  });

  test("POST pause / resume go through the node, from local requests only", async () => {
    const remote = await post("/v1/pause", "10.1.2.3");
    expect(remote.status).toBe(403);
    expect(await remote.json()).toEqual({ error: { code: "forbidden", message: expect.any(String) } });
    // A web page on the operator's machine (cross-origin request) may not control the node either.
    expect((await post("/v1/pause", "127.0.0.1", { origin: "https://evil.example" })).status).toBe(403);
    // Without node-server bindings (no socket to check), the request is refused.
    expect((await app.request("/v1/pause", { method: "POST" })).status).toBe(403);
    expect((await node.status()).chainStatus).toBe("AVAILABLE");

    const paused = await post("/v1/pause");
    expect(paused.status).toBe(200);
    expect(await paused.json()).toEqual({ status: "PAUSED" });
    // The contract refuses a second pause: 409 with its error's name.
    const again = await post("/v1/pause", "::1");
    expect(again.status).toBe(409);
    expect(await again.json()).toEqual({
      error: { code: "reverted", message: expect.stringContaining("pause reverted") },
    });
    const resumed = await post("/v1/resume", "::ffff:127.0.0.1");
    expect(await resumed.json()).toEqual({ status: "AVAILABLE" });
    expect((await app.request("/v1/nothing")).status).toBe(404);
  }, 60_000);

  test("served for real: the socket's address decides", async () => {
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
    });
    try {
      const { port } = server.address() as { port: number };
      const health = await fetch(`http://127.0.0.1:${port}/v1/health`);
      expect(health.status).toBe(200);
      const cross = await fetch(`http://127.0.0.1:${port}/v1/resume`, {
        method: "POST",
        headers: { origin: "http://localhost:3000" },
      });
      expect(cross.status).toBe(403);
      // Loopback without an Origin: allowed (the contract refuses resume of an AVAILABLE node: 409).
      const local = await fetch(`http://127.0.0.1:${port}/v1/resume`, { method: "POST" });
      expect(local.status).toBe(409);
    } finally {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        if ("closeIdleConnections" in server) server.closeIdleConnections();
      });
    }
  }, 60_000);
});

describe("the CLI without a running node reads and writes the chain", () => {
  async function freePort(): Promise<number> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return port;
  }

  async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = "";
    let err = "";
    const code = await runCli(args, { out: (t) => (out += t), err: (t) => (err += t) });
    return { code, out, err };
  }

  test("status, pause, resume, quit, and a refused pause", async () => {
    await node.stop();
    const configFile = join(dir, "cli.json");
    // Keys only from a key file that nobody else may read (or the environment), never inline.
    await writeFile(join(dir, "node.key"), anvil().accounts[NODE_ACCOUNT]!.privateKey, { mode: 0o600 });
    await writeFile(
      configFile,
      JSON.stringify({
        chain: {
          rpcUrl: anvil().rpcUrl,
          chainId: anvil().chain.id,
          contracts: { node: deployment.node, task: deployment.task },
        },
        relayUrl: relay.url,
        account: { privateKeyFile: join(dir, "node.key") },
        stateDir,
        pollingIntervalMs: 100,
        api: { port: await freePort() },
      }),
    );
    const status = await cli(["status", "--config", configFile]);
    expect(status.code).toBe(EXIT.ok);
    const shown = JSON.parse(status.out);
    expect(shown).toMatchObject({
      source: "chain",
      running: false,
      address: node.address,
      chainStatus: "AVAILABLE",
      stake: (400n * 10n ** 18n).toString(),
      qos: { averageScore: expect.stringMatching(/^\d+$/) },
    });

    for (const [action, expected] of [
      ["pause", "PAUSED"],
      ["resume", "AVAILABLE"],
      ["quit", "QUIT"],
    ] as const) {
      const result = await cli([action, "--config", configFile]);
      expect(result.code).toBe(EXIT.ok);
      expect(JSON.parse(result.out)).toEqual({ action, via: "chain", status: expected });
    }
    const refused = await cli(["pause", "--config", configFile]);
    expect(refused.code).toBe(EXIT.runtime);
    expect(refused.err).toMatch(/pause reverted: IllegalNodeStatus/);
    expect(refused.err).toMatch(/QUIT on-chain/);

    // A config naming another chain id is a configuration error.
    const wrong = join(dir, "wrong-chain.json");
    await writeFile(
      wrong,
      JSON.stringify({
        chain: {
          rpcUrl: anvil().rpcUrl,
          chainId: 1,
          contracts: { node: deployment.node, task: deployment.task },
        },
        relayUrl: relay.url,
        account: { privateKeyFile: join(dir, "node.key") },
        stateDir,
        api: { port: await freePort() },
      }),
    );
    const mismatch = await cli(["status", "--config", wrong]);
    expect(mismatch.code).toBe(EXIT.usage);
    expect(mismatch.err).toMatch(/chain\.chainId: the RPC serves chain 31337/);
  }, 120_000);
});
