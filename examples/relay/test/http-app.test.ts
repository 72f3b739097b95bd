import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { relayDomain, signRelayRequest } from "@crynux/client";
import { type Address, getAddress } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createRelayApp, type RelayAppDeps } from "../src/app.js";
import { loadRelayConfig, RelayConfigError } from "../src/config.js";
import { createRateLimiter } from "../src/rateLimit.js";
import { openBlobStore, openPgliteStore } from "../src/store/index.js";
import type { BlobStore, RelayStore } from "../src/store/types.js";

const TASK_CONTRACT: Address = "0x00000000000000000000000000000000000000aa";
const CHAIN_ID = 31337;
const account = privateKeyToAccount(generatePrivateKey());

const tempDirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "relay-http-app-"));
  tempDirs.push(dir);
  return dir;
}

let store: RelayStore;
let blobs: BlobStore;
beforeAll(async () => {
  store = await openPgliteStore({});
  blobs = await openBlobStore(await tempDir());
}, 60_000);
afterAll(async () => {
  await store.close();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

function app(overrides: Partial<RelayAppDeps> = {}) {
  return createRelayApp({
    store,
    blobs,
    chain: { chainId: CHAIN_ID, taskContract: TASK_CONTRACT },
    indexerStatus: () => ({ indexedBlock: 5n, headBlock: 7n }),
    onInternalError: () => {},
    ...overrides,
  });
}

async function signedHeaders(method: string, urlPath: string, timestamp?: number) {
  const { headers } = await signRelayRequest({
    account,
    domain: relayDomain({ chainId: CHAIN_ID, taskContract: TASK_CONTRACT }),
    method,
    path: urlPath,
    timestamp,
  });
  return headers;
}

describe("createRelayApp in-process", () => {
  test("a handler that hangs is answered 503 timeout", async () => {
    const hanging: RelayStore = { ...store, getTask: () => new Promise(() => {}) };
    const relay = app({ store: hanging, config: { requestTimeoutMs: 50 } });
    const response = await relay.request("/v1/tasks/1/args", {
      headers: await signedHeaders("GET", "/v1/tasks/1/args"),
    });
    expect(response.status).toBe(503);
    expect(await response.json()).toEqual({ error: { code: "timeout", message: expect.any(String) } });
  });

  test("an unexpected error is 500 internal and its message stays in the server", async () => {
    const reported: unknown[] = [];
    const broken: RelayStore = {
      ...store,
      getTask: () => Promise.reject(new Error("password=hunter2 at db.internal:5432")),
    };
    const relay = app({ store: broken, onInternalError: (error) => reported.push(error) });
    const response = await relay.request("/v1/tasks/1/args", {
      headers: await signedHeaders("GET", "/v1/tasks/1/args"),
    });
    expect(response.status).toBe(500);
    const text = await response.text();
    expect(JSON.parse(text)).toEqual({ error: { code: "internal", message: "Internal error." } });
    expect(text).not.toContain("hunter2");
    expect(reported).toHaveLength(1);
  });

  test("the clock is injectable: a timestamp is judged against the app's now", async () => {
    const past = 1_000_000;
    const relay = app({ now: () => past * 1000 });
    const fresh = await relay.request("/v1/tasks/1/args", {
      headers: await signedHeaders("GET", "/v1/tasks/1/args", past - 30),
    });
    expect(fresh.status).toBe(404); // signature accepted, task unknown
    const stale = await relay.request("/v1/tasks/1/args", {
      headers: await signedHeaders("GET", "/v1/tasks/1/args", past - 61),
    });
    expect(stale.status).toBe(401);
  });

  test("health reports the indexer's blocks; info the domain and limits", async () => {
    const relay = app({ config: { name: "Test Relay", limits: { maxArgsBytes: 1000 } } });
    expect(await (await relay.request("/v1/health")).json()).toEqual({
      status: "ok",
      chainId: CHAIN_ID,
      indexedBlock: 5,
      headBlock: 7,
    });
    expect(await (await relay.request("/v1/info")).json()).toEqual({
      name: "Test Relay",
      version: "1",
      chainId: CHAIN_ID,
      taskContract: TASK_CONTRACT,
      confirmations: 2,
      limits: { maxArgsBytes: 1000, maxResultBytes: 64 * 1024 * 1024 },
    });
  });
});

describe("token bucket", () => {
  test("bursts up to the capacity, then refills at requests per window", () => {
    let now = 0;
    const limiter = createRateLimiter({ requests: 3, windowMs: 3000 }, () => now);
    expect([1, 2, 3].map(() => limiter.take("a").allowed)).toEqual([true, true, true]);
    expect(limiter.take("a")).toEqual({ allowed: false, retryAfterSeconds: 1 });
    expect(limiter.take("b").allowed).toBe(true);
    now += 999;
    expect(limiter.take("a").allowed).toBe(false);
    now += 1;
    expect(limiter.take("a").allowed).toBe(true);
    // A clock stepping back mints nothing.
    now -= 10_000;
    expect(limiter.take("a").allowed).toBe(false);
  });

  test("idle buckets are forgotten after a window", () => {
    let now = 0;
    const limiter = createRateLimiter({ requests: 2, windowMs: 1000 }, () => now);
    for (let i = 0; i < 100; i++) limiter.take(`k${i}`);
    expect(limiter.size).toBe(100);
    now += 5000;
    limiter.take("fresh");
    expect(limiter.size).toBe(1);
  });
});

describe("configuration", () => {
  test("defaults < file < environment < overrides; file paths relative to the file", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "relay.json");
    await writeFile(
      file,
      JSON.stringify({ port: 9000, blobDir: "blobs", confirmations: 5, rateLimit: { requests: 10 } }),
    );
    const config = await loadRelayConfig({
      file,
      env: {
        CRYNUX_RELAY_TASK_CONTRACT: TASK_CONTRACT,
        CRYNUX_RELAY_CONFIRMATIONS: "3",
        CRYNUX_RELAY_RATE_LIMIT_WINDOW_MS: "5000",
      },
      overrides: { port: 0 },
    });
    expect(config).toMatchObject({
      port: 0,
      confirmations: 3,
      blobDir: path.join(dir, "blobs"),
      rateLimit: { requests: 10, windowMs: 5000 },
      rpcUrl: "http://127.0.0.1:8545",
      dataDir: path.resolve(".relay-data/db"),
      taskContract: getAddress(TASK_CONTRACT),
    });
  });

  test("the Task contract may come from a deployment file; without either it is an error", async () => {
    const dir = await tempDir();
    const deployment = path.join(dir, "deployment.json");
    await writeFile(
      deployment,
      JSON.stringify({ task: TASK_CONTRACT, node: TASK_CONTRACT, chainId: 7, blockNumber: 12 }),
    );
    const config = await loadRelayConfig({ env: { CRYNUX_RELAY_DEPLOYMENT_FILE: deployment } });
    expect(config).toMatchObject({ taskContract: getAddress(TASK_CONTRACT), chainId: 7, fromBlock: 12n });
    await expect(loadRelayConfig({ env: {} })).rejects.toThrow(RelayConfigError);
    await expect(
      loadRelayConfig({ env: { CRYNUX_RELAY_TASK_CONTRACT: TASK_CONTRACT, CRYNUX_RELAY_PORT: "x" } }),
    ).rejects.toThrow(/port/);
  });
});
