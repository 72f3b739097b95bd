import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createRelayClient, RelayRequestError } from "@crynux/client";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { TaskType, taskHash } from "@crynux/tasks";
import type { Address } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createRelayApp } from "../src/app.js";
import {
  IN_MEMORY,
  loadRelayConfig,
  RelayConfigError,
  type RelayConfigInput,
  resolveRelayConfig,
} from "../src/config.js";
import { type RunningRelay, startRelay } from "../src/serve.js";
import { Chain } from "./http-helpers.js";

const CREATOR = 4;
const PAGE = "http://127.0.0.1:5173";
const OTHER = "https://evil.example";
const TASK_ADDRESS = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512";

const anvil = useAnvil({ accounts: 6, balanceEther: 100_000 });
let chain: Chain;
let blobDir: string;
/** Started from a config allowing PAGE only (the config file / env path, over HTTP). */
let listed: RunningRelay;

beforeAll(async () => {
  chain = await Chain.deploy(anvil());
  for (const i of [1, 2, 3]) await chain.join(i);
  blobDir = await mkdtemp(path.join(tmpdir(), "relay-cors-blobs-"));
  listed = await startRelay(
    {
      rpcUrl: anvil().rpcUrl,
      taskContract: chain.task,
      port: 0,
      confirmations: 0,
      pollingIntervalMs: 50,
      dataDir: IN_MEMORY,
      blobDir,
      // Trailing slash on purpose: the config normalizes it to the origin a browser sends.
      cors: [`${PAGE}/`],
    },
    { onIndexerError: () => {} },
  );
}, 300_000);

afterAll(async () => {
  await listed?.stop();
  if (blobDir) await rm(blobDir, { recursive: true, force: true });
}, 60_000);

/** The same relay's app with another `cors` setting (left out: the default), served in-process. */
const appWith = (cors?: string[]) => {
  const app = createRelayApp({
    store: listed.store,
    blobs: listed.blobs,
    chain: { chainId: anvil().chain.id, taskContract: chain.task },
    indexerStatus: () => ({ indexedBlock: null, headBlock: null }),
    ...(cors ? { config: { cors } } : {}),
  });
  return {
    url: "http://relay.local",
    fetch: (input: string, init?: RequestInit) => app.request(input, init),
  };
};

type Target = { url: string; fetch?: (input: string, init?: RequestInit) => Promise<Response> | Response };

/** What a browser sends before a cross-origin signed PUT. */
const preflight = (relay: Target, origin: string, route = "/v1/tasks/1/args") =>
  (relay.fetch ?? fetch)(`${relay.url}${route}`, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "PUT",
      "access-control-request-headers": "content-type,x-crynux-signature,x-crynux-timestamp",
    },
  });

const listHeader = (response: Response, name: string) =>
  (response.headers.get(name) ?? "")
    .split(",")
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== "");

const corsHeaderNames = (response: Response) => {
  const names: string[] = [];
  response.headers.forEach((_value, name) => {
    if (name.startsWith("access-control-")) names.push(name);
  });
  return names;
};

/** A `fetch` that sends `Origin` as a page of `origin` would, and keeps every answer's headers. */
const browserFetch = (origin: string) => {
  const answers: Headers[] = [];
  const fetchFromPage: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    request.headers.set("origin", origin);
    const response = await fetch(request);
    answers.push(response.headers);
    return response;
  };
  return { fetch: fetchFromPage, answers };
};

describe("relay CORS config", () => {
  const minimal = { taskContract: TASK_ADDRESS } as const satisfies RelayConfigInput;

  test("default none; origins are normalized as browsers send them; CRYNUX_RELAY_CORS is a comma list", async () => {
    expect((await resolveRelayConfig(minimal)).cors).toEqual([]);
    expect(
      (
        await resolveRelayConfig({
          ...minimal,
          cors: ["HTTP://App.Example.com:80/", "https://a.example:8443"],
        })
      ).cors,
    ).toEqual(["http://app.example.com", "https://a.example:8443"]);
    const fromEnv = await loadRelayConfig({
      env: { CRYNUX_RELAY_CORS: " http://localhost:5173, *,," },
      overrides: minimal,
    });
    expect(fromEnv.cors).toEqual(["http://localhost:5173", "*"]);
  });

  test.each([
    ["a path", "https://app.example.com/app"],
    ["a query", "https://app.example.com/?x=1"],
    ["credentials", "https://user:pw@app.example.com"],
    ["another scheme", "ftp://app.example.com"],
    ["no scheme", "app.example.com"],
  ])("an origin with %s is refused", async (_, origin) => {
    const error = await resolveRelayConfig({ ...minimal, cors: [origin] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RelayConfigError);
    expect((error as RelayConfigError).details).toContain("cors.0");
  });
});

describe("relay CORS over HTTP (anvil)", { timeout: 120_000 }, () => {
  test("a preflight from a configured origin allows the signature headers and the methods used", async () => {
    const response = await preflight(listed, PAGE);
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(PAGE);
    expect(listHeader(response, "access-control-allow-methods")).toEqual(
      expect.arrayContaining(["get", "put"]),
    );
    expect(listHeader(response, "access-control-allow-headers")).toEqual(
      expect.arrayContaining(["content-type", "x-crynux-timestamp", "x-crynux-signature"]),
    );
    expect(listHeader(response, "vary")).toContain("origin");

    const any = await preflight(appWith(["*"]), OTHER);
    expect(any.status).toBe(204);
    expect(any.headers.get("access-control-allow-origin")).toBe("*");
  });

  test("another origin, or a relay without `cors`, gets no allow-origin header: the browser refuses", async () => {
    for (const response of [
      await preflight(listed, OTHER),
      await fetch(`${listed.url}/v1/info`, { headers: { origin: OTHER } }),
    ])
      expect(response.headers.get("access-control-allow-origin")).toBeNull();
    // The default sends no CORS header at all.
    for (const response of [
      await preflight(appWith(), PAGE),
      await appWith().fetch("http://relay.local/v1/info", { headers: { origin: PAGE } }),
    ])
      expect(corsHeaderNames(response)).toEqual([]);
  });

  test("a signed upload from the configured origin works, and its answers and errors carry the header", async () => {
    const args = {
      model: "o/r:Q4_0",
      messages: [{ role: "user" as const, content: "Hello from a page" }],
      generation_config: { max_new_tokens: 16 },
    };
    const { taskId, nodes } = await chain.createTask(CREATOR, TaskType.GPT, taskHash(args));
    expect(nodes).toHaveLength(3);
    const account = privateKeyToAccount(anvil().accounts[CREATOR]!.privateKey);
    const page = browserFetch(PAGE);
    const creator = createRelayClient({ url: listed.url, account, fetch: page.fetch, retry: 0 });

    // The relay indexes the task asynchronously; the client retries `task_not_found` until it has.
    const uploaded = await creator.uploadTaskArgs(taskId, args, { waitForTaskMs: 60_000 });
    expect(uploaded).toMatchObject({ taskId, stored: true, taskHash: taskHash(args) });
    expect(page.answers.length).toBeGreaterThan(0);
    for (const headers of page.answers) expect(headers.get("access-control-allow-origin")).toBe(PAGE);

    const nodeOf = (address: Address) =>
      privateKeyToAccount(
        anvil().accounts.find((a) => a.address.toLowerCase() === address.toLowerCase())!.privateKey,
      );
    const nodePage = browserFetch(PAGE);
    const node = createRelayClient({
      url: listed.url,
      account: nodeOf(nodes[0]!),
      fetch: nodePage.fetch,
      retry: 0,
    });
    expect((await node.getTaskArgs(taskId)).rawArgs).toEqual(args);
    expect(nodePage.answers.at(-1)?.get("access-control-allow-origin")).toBe(PAGE);

    // An error answer must be readable by the page too, or it only sees an opaque network failure.
    const unsigned = browserFetch(PAGE);
    const anonymous = createRelayClient({
      url: listed.url,
      domain: await creator.domain(),
      fetch: unsigned.fetch,
      retry: 0,
    });
    const refused = await unsigned.fetch(`${listed.url}/v1/tasks/${taskId}/args`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get("access-control-allow-origin")).toBe(PAGE);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
    expect((await anonymous.info()).chainId).toBe(anvil().chain.id);
    expect(unsigned.answers.at(-1)?.get("access-control-allow-origin")).toBe(PAGE);
  });

  test("a signed request from another origin still gets no allow-origin header", async () => {
    const account = privateKeyToAccount(anvil().accounts[CREATOR]!.privateKey);
    const other = browserFetch(OTHER);
    const client = createRelayClient({ url: listed.url, account, fetch: other.fetch, retry: 0 });
    // CORS is enforced by the browser: the relay answers, without the header the page would need to read it.
    const error = await client.getResult(123_456n).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RelayRequestError);
    expect(other.answers.length).toBeGreaterThan(0);
    for (const headers of other.answers) expect(headers.get("access-control-allow-origin")).toBeNull();
  });
});
