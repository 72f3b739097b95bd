import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type CrynuxDeployment, nodeAbi, taskAbi } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { IN_MEMORY as RELAY_IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import { type Address, parseEther } from "viem";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type BridgeConfigInput, IN_MEMORY, loadBridgeConfig, resolveBridgeConfig } from "../src/config.js";
import { BridgeConfigError } from "../src/errors.js";
import { type RunningBridge, startBridge } from "../src/serve.js";
import { Chain, type NodeWatcher, startNodeWatcher } from "./helpers.js";

const NODES = [1, 2, 3];
const WALLET = 4;
const KEY = "sk-test-cors-0123456789abcdef";
const PAGE = "http://127.0.0.1:5173";
const OTHER = "https://evil.example";

const anvil = useAnvil({ accounts: 6, balanceEther: 100_000 });
let chain: Chain;
let contracts: CrynuxDeployment;
let relay: RunningRelay;
let watcher: NodeWatcher;
let blobDir: string;
/** Allows PAGE only. */
let listed: RunningBridge;
/** Allows any origin. */
let open: RunningBridge;
/** The default: no CORS. */
let closed: RunningBridge;

const bridgeConfig = (overrides: Partial<BridgeConfigInput> = {}): BridgeConfigInput => ({
  host: "127.0.0.1",
  port: 0,
  rpcUrl: anvil().rpcUrl,
  relayUrl: relay.url,
  privateKey: anvil().accounts[WALLET]!.privateKey,
  contracts,
  dataDir: IN_MEMORY,
  pollingIntervalMs: 100,
  relayWaitMs: 60_000,
  taskTimeoutMs: 180_000,
  models: { "echo-chat": { type: "gpt", model: "o/r:Q4_0", defaultMaxTokens: 32 } },
  apiKeys: [{ name: "main", key: KEY }],
  fees: { maxFeeWei: parseEther("5") },
  ...overrides,
});

/** What a browser sends before a cross-origin POST with these headers. */
const preflight = (bridge: RunningBridge, origin: string, route = "/v1/chat/completions") =>
  fetch(`${bridge.url}${route}`, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization,content-type,idempotency-key",
    },
  });

const listHeader = (response: Response, name: string) =>
  (response.headers.get(name) ?? "")
    .split(",")
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== "");

beforeAll(async () => {
  chain = await Chain.deploy(anvil());
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
  blobDir = await mkdtemp(path.join(tmpdir(), "bridge-cors-blobs-"));
  relay = await startRelay(
    {
      rpcUrl: anvil().rpcUrl,
      taskContract: chain.task,
      port: 0,
      confirmations: 0,
      pollingIntervalMs: 50,
      dataDir: RELAY_IN_MEMORY,
      blobDir,
    },
    { onIndexerError: () => {} },
  );
  watcher = startNodeWatcher({ anvil: anvil(), chain, relayUrl: relay.url });
  // Only `listed` pays tasks: the others would race it for the wallet's nonce.
  listed = await startBridge(bridgeConfig({ cors: [`${PAGE}/`] }), { onTaskError: () => {} });
  open = await startBridge(bridgeConfig({ cors: ["*"] }), { onTaskError: () => {} });
  closed = await startBridge(bridgeConfig(), { onTaskError: () => {} });
}, 300_000);

afterAll(async () => {
  await watcher?.stop();
  for (const bridge of [listed, open, closed]) await bridge?.stop();
  await relay?.stop();
  if (blobDir) await rm(blobDir, { recursive: true, force: true });
}, 60_000);

describe("bridge CORS config", () => {
  const minimal = {
    privateKey: `0x${"ab".repeat(32)}`,
    contracts: {
      node: "0x5fbdb2315678afecb367f032d93f642f64180aa3",
      task: "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512",
      taskQueue: "0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0",
      qos: "0xcf7ed3acca5a467e9e704c703e8d87f634fb0fc9",
      networkStats: "0xdc64a140aa3e981100a9beca4e685f962f0cf6c9",
      treasury: "0x5fc8d32690cc91d4c39d9d3abcbd16989f875707",
    },
    models: { chat: { type: "gpt", model: "o/r:Q4_0" } },
    apiKeys: [{ name: "app", key: KEY }],
  } as const satisfies BridgeConfigInput;

  test("default none; origins are normalized as browsers send them; CRYNUX_BRIDGE_CORS is a comma list", async () => {
    expect((await resolveBridgeConfig(minimal)).cors).toEqual([]);
    expect(
      (
        await resolveBridgeConfig({
          ...minimal,
          cors: ["HTTP://Chat.Example.com:80/", "https://a.example:8443"],
        })
      ).cors,
    ).toEqual(["http://chat.example.com", "https://a.example:8443"]);
    const fromEnv = await loadBridgeConfig({
      env: { CRYNUX_BRIDGE_CORS: " http://localhost:5173, *,," },
      overrides: minimal,
    });
    expect(fromEnv.cors).toEqual(["http://localhost:5173", "*"]);
  });

  test.each([
    ["a path", "https://chat.example.com/app"],
    ["a query", "https://chat.example.com/?x=1"],
    ["credentials", "https://user:pw@chat.example.com"],
    ["another scheme", "ftp://chat.example.com"],
    ["no scheme", "chat.example.com"],
  ])("an origin with %s is refused", async (_, origin) => {
    const error = await resolveBridgeConfig({ ...minimal, cors: [origin] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BridgeConfigError);
    expect((error as BridgeConfigError).details).toContain("cors.0");
  });
});

describe("bridge CORS over HTTP (anvil, relay, 3 test-driven nodes)", { timeout: 120_000 }, () => {
  test("a preflight from an allowed origin is answered before authentication", async () => {
    const response = await preflight(listed, PAGE);
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(PAGE);
    expect(listHeader(response, "access-control-allow-methods")).toEqual(
      expect.arrayContaining(["get", "post"]),
    );
    expect(listHeader(response, "access-control-allow-headers")).toEqual(
      expect.arrayContaining(["authorization", "content-type", "idempotency-key"]),
    );
    expect(listHeader(response, "vary")).toContain("origin");
  });

  test("another origin gets no allow-origin header, so its browser refuses the call", async () => {
    for (const response of [
      await preflight(listed, OTHER),
      await fetch(`${listed.url}/v1/models`, { headers: { origin: OTHER, authorization: `Bearer ${KEY}` } }),
    ])
      expect(response.headers.get("access-control-allow-origin")).toBeNull();
  });

  test("answers and error answers carry the headers: a page can read the models and the error messages", async () => {
    const models = await fetch(`${listed.url}/v1/models`, {
      headers: { origin: PAGE, authorization: `Bearer ${KEY}` },
    });
    expect(models.status).toBe(200);
    expect(models.headers.get("access-control-allow-origin")).toBe(PAGE);
    expect(listHeader(models, "vary")).toContain("origin");
    expect(((await models.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toEqual([
      "echo-chat",
    ]);

    const unauthorized = await fetch(`${listed.url}/v1/models`, {
      headers: { origin: PAGE, authorization: "Bearer sk-wrong-key-0000000000" },
    });
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers.get("access-control-allow-origin")).toBe(PAGE);
    expect(await unauthorized.json()).toMatchObject({ error: { code: "invalid_api_key" } });

    const unknownModel = await fetch(`${listed.url}/v1/chat/completions`, {
      method: "POST",
      headers: { origin: PAGE, authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "nope", messages: [{ role: "user", content: "Hi" }], stream: true }),
    });
    expect(unknownModel.status).toBe(404);
    expect(unknownModel.headers.get("access-control-allow-origin")).toBe(PAGE);
    expect(await unknownModel.json()).toMatchObject({ error: { code: "model_not_found", param: "model" } });
  });

  test("a streamed chat completion exposes the Crynux task headers to the page", async () => {
    const response = await fetch(`${listed.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        origin: PAGE,
        authorization: `Bearer ${KEY}`,
        "content-type": "application/json",
        "idempotency-key": "cors-stream-1",
      },
      body: JSON.stringify({
        model: "echo-chat",
        messages: [{ role: "user", content: "across origins" }],
        stream: true,
      }),
      // Fails before the test's own timeout, so that the test nodes' errors, if any, are in the report.
      signal: AbortSignal.timeout(240_000),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toContain("text/event-stream");
    expect(response.headers.get("access-control-allow-origin")).toBe(PAGE);
    expect(listHeader(response, "access-control-expose-headers")).toEqual(
      expect.arrayContaining(["x-request-id", "x-crynux-task-id", "x-crynux-tx-hash", "retry-after"]),
    );
    expect(response.headers.get("x-request-id")).toBe("cors-stream-1");
    expect(response.headers.get("x-crynux-task-id")).toMatch(/^[1-9][0-9]*$/);
    const body = await response.text().catch((cause: unknown) => {
      throw new Error(
        `No answer; the test nodes' errors: ${watcher.errors.map(String).join("; ") || "none"}`,
        {
          cause,
        },
      );
    });
    const text = body
      .split("\n")
      .filter((line) => line.startsWith("data: ") && line !== "data: [DONE]")
      .map((line) => JSON.parse(line.slice(6)) as { choices: { delta: { content?: string } }[] })
      .map((chunk) => chunk.choices.map((choice) => choice.delta.content ?? "").join(""))
      .join("");
    expect(text).toBe("echo: across origins");
    expect(body.trimEnd().endsWith("data: [DONE]")).toBe(true);
    expect(watcher.errors).toEqual([]);
  }, 300_000);

  test('["*"] allows every origin', async () => {
    const response = await preflight(open, OTHER);
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe("*");
    const models = await fetch(`${open.url}/v1/models`, {
      headers: { origin: OTHER, authorization: `Bearer ${KEY}` },
    });
    expect(models.headers.get("access-control-allow-origin")).toBe("*");
  });

  test("by default no origin is allowed: a preflight meets authentication and no CORS header", async () => {
    const response = await preflight(closed, PAGE, "/v1/models");
    expect(response.status).toBe(401);
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    const models = await fetch(`${closed.url}/v1/models`, {
      headers: { origin: PAGE, authorization: `Bearer ${KEY}` },
    });
    expect(models.status).toBe(200);
    expect(models.headers.get("access-control-allow-origin")).toBeNull();
  });
});
