import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import type { CrynuxDeployment } from "@crynux/contracts";
import { nodeAbi, taskAbi } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import fc from "fast-check";
import type { Address } from "viem";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { IN_MEMORY } from "../src/config.js";
import { type RunningBridge, startBridge } from "../src/serve.js";
import type { TaskRecord } from "../src/store.js";
import { Chain } from "./helpers.js";

const RUNS = 60;
const MAX_BODY = 16 * 1024;
const WALLET = 4;
const MAIN_KEY = "sk-fuzz-main-0123456789abcdef";
/** Every request the fuzzer sends that gets past validation is refused by this key's quota, never paid. */
const ZERO_KEY = "sk-fuzz-zero-0123456789abcdef";

const anvil = useAnvil({ accounts: 6 });
let bridge: RunningBridge;
let chain: Chain;
const internalErrors: unknown[] = [];

type Chain0 = { nonce: number; balance: bigint };
let walletBefore: Chain0;
let recordsBefore: TaskRecord[];

const wallet = (): Address => anvil().accounts[WALLET]!.address;
async function walletState(): Promise<Chain0> {
  const client = anvil().publicClient;
  const [nonce, balance] = await Promise.all([
    client.getTransactionCount({ address: wallet() }),
    client.getBalance({ address: wallet() }),
  ]);
  return { nonce, balance };
}

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
  const contracts: CrynuxDeployment = {
    task: chain.task,
    node: chain.node,
    taskQueue,
    networkStats,
    qos,
    treasury,
  };
  bridge = await startBridge(
    {
      host: "127.0.0.1",
      port: 0,
      rpcUrl: anvil().rpcUrl,
      // Never reached: no request of this file gets a task paid.
      relayUrl: "http://127.0.0.1:9",
      privateKey: anvil().accounts[WALLET]!.privateKey,
      contracts,
      dataDir: IN_MEMORY,
      maxBodyBytes: MAX_BODY,
      models: {
        "echo-chat": { type: "gpt", model: "o/r:Q4_0", defaultMaxTokens: 32, maxTokens: 512 },
        "echo-sd": { type: "sd", baseModel: "stabilityai/sdxl-turbo", steps: 1 },
      },
      apiKeys: [
        { name: "main", key: MAIN_KEY },
        { name: "zero", key: ZERO_KEY, quota: { tasksPerDay: 0 } },
      ],
    },
    { onTaskError: () => {}, onInternalError: (error) => internalErrors.push(error) },
  );
  walletBefore = await walletState();
  recordsBefore = await bridge.store.all();
}, 120_000);

afterAll(async () => {
  await bridge?.stop();
}, 60_000);

type OpenAiError = { error: { message: string; type: string; param: string | null; code: string | null } };

/**
 * One request on a fresh connection (node:http, no keep-alive pool): a connection the server closes after an
 * early answer (413, 401 before the body was read) must not fail the next request of the fuzzer. `chunks`
 * are sent without a content-length (chunked); the answer is read even if the server stops reading the body.
 */
async function call(
  method: string,
  urlPath: string,
  options: {
    key?: string | null;
    authorization?: string;
    body?: string | Uint8Array;
    chunks?: Uint8Array[];
    headers?: Record<string, string>;
  } = {},
): Promise<Response> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.authorization !== undefined) headers["authorization"] = options.authorization;
  else if (options.key !== null) headers["authorization"] = `Bearer ${options.key ?? ZERO_KEY}`;
  const hasBody = options.body !== undefined || options.chunks !== undefined;
  if (hasBody && headers["content-type"] === undefined) headers["content-type"] = "application/json";
  if (options.body !== undefined) headers["content-length"] = String(Buffer.byteLength(options.body));
  const url = new URL(bridge.url);
  return new Promise<Response>((resolve, reject) => {
    const request = httpRequest(
      { host: url.hostname, port: url.port, method, path: urlPath, headers, agent: false },
      (response) => {
        const parts: Buffer[] = [];
        response.on("data", (chunk: Buffer) => parts.push(chunk));
        response.on("end", () =>
          resolve(
            new Response(response.statusCode === 204 ? null : Buffer.concat(parts), {
              status: response.statusCode ?? 0,
              headers: response.headers as Record<string, string>,
            }),
          ),
        );
        response.on("error", reject);
      },
    );
    // Writes after an early answer fail with EPIPE/ECONNRESET; the answer is what counts.
    let answered = false;
    request.on("response", () => {
      answered = true;
    });
    request.on("error", (error) => {
      if (!answered) reject(error);
    });
    if (options.chunks) {
      for (const chunk of options.chunks) request.write(chunk);
      request.end();
    } else request.end(options.body);
  });
}

/** A 4xx in OpenAI's error format: `{error: {message, type, param, code}}` with a message that says something. */
async function expectOpenAiError(response: Response, what: string): Promise<OpenAiError["error"]> {
  const text = await response.text();
  if (response.status < 400 || response.status >= 500)
    throw new Error(`${what}: expected a 4xx, got ${response.status} ${text.slice(0, 300)}`);
  let body: OpenAiError;
  try {
    body = JSON.parse(text) as OpenAiError;
  } catch {
    throw new Error(`${what}: the ${response.status} body is not JSON: ${text.slice(0, 200)}`);
  }
  expect(Object.keys(body.error).sort(), what).toEqual(["code", "message", "param", "type"]);
  expect(body.error.message.length, what).toBeGreaterThan(10);
  expect(typeof body.error.type, what).toBe("string");
  return body.error;
}

/** Nothing recorded, nothing paid (the wallet sent no transaction), and valid requests still answered. */
async function expectNothingPaidAndAlive(): Promise<void> {
  expect(await bridge.store.all()).toEqual(recordsBefore);
  expect(await walletState()).toEqual(walletBefore);
  expect(internalErrors.map((e) => String((e as Error)?.stack ?? e))).toEqual([]);
  expect((await call("GET", "/health")).status).toBe(200);
  const models = await call("GET", "/v1/models", { key: MAIN_KEY });
  expect(models.status).toBe(200);
}

const VALID: Record<string, Record<string, unknown>> = {
  "/v1/chat/completions": {
    model: "echo-chat",
    messages: [{ role: "user", content: "hello" }],
    max_tokens: 8,
    temperature: 0.5,
  },
  "/v1/completions": { model: "echo-chat", prompt: "hello", max_tokens: 8 },
  "/v1/images/generations": { model: "echo-sd", prompt: "a cat", n: 1, size: "512x512" },
  "/v1/crynux/tasks": {
    task_type: 1,
    args: { model: "o/r:Q4_0", messages: [{ role: "user", content: "hello" }] },
    vram_limit: 0,
  },
};
const postRoutes = Object.keys(VALID);
const getRoutes = [
  "/v1/models",
  "/v1/models/:id",
  "/v1/crynux/tasks/:id",
  "/v1/crynux/tasks/:id/result",
  "/v1/crynux/wallet",
];

/** Ids for path parameters: traversal, encodings, huge, junk. */
const idArbitrary = fc
  .oneof(
    fc.constantFrom(
      "..%2F..%2Fetc%2Fpasswd",
      "%2e%2e",
      "..%5c..",
      "%00",
      "-1",
      (2n ** 256n).toString(),
      "9".repeat(3000),
      "__proto__",
      "constructor",
      "hasOwnProperty",
      "echo-chat%00",
      "%",
    ),
    fc.string({ minLength: 1, maxLength: 40 }),
  )
  .map((id) => encodeURI(id).replace(/%25([0-9a-fA-F]{2})/g, "%$1"));

const authArbitrary = fc.oneof(
  fc.constantFrom(
    "",
    "Bearer",
    "Bearer ",
    `Basic ${Buffer.from(`user:${MAIN_KEY}`).toString("base64")}`,
    `bearer  ${MAIN_KEY.slice(0, -1)}`,
    `Bearer ${MAIN_KEY} extra`,
    `Bearer ${MAIN_KEY}x`,
    `Bearer ${MAIN_KEY.toUpperCase()}`,
    `Token ${MAIN_KEY}`,
    MAIN_KEY,
    `Bearer ${"a".repeat(8000)}`,
  ),
  fc.string({ maxLength: 80 }),
  fc.string({ minLength: 1, maxLength: 60 }).map((token) => `Bearer ${token}`),
);

describe("bridge fuzz", () => {
  test("every route of the app is fuzzed here", async () => {
    const { createBridgeApp } = await import("../src/app.js");
    const app = createBridgeApp({
      config: bridge.config,
      client: bridge.client,
      store: bridge.store,
      runner: bridge.runner,
      wallet: wallet(),
    });
    const registered = new Set(
      app.routes.filter((route) => route.method !== "ALL").map((route) => `${route.method} ${route.path}`),
    );
    const fuzzed = new Set([
      "GET /health",
      ...postRoutes.map((p) => `POST ${p}`),
      ...getRoutes.map((p) => `GET ${p}`),
    ]);
    // A new endpoint fails this test until it gets its generators here.
    expect([...registered].sort()).toEqual([...fuzzed].sort());
  });

  test("wrong, missing and malformed API keys on every endpoint → 401 in OpenAI's format", async (context) => {
    let runs = 0;
    const routes = [
      ...postRoutes.map((p) => ["POST", p] as const),
      ...getRoutes.map((p) => ["GET", p.replace(":id", "x")] as const),
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        authArbitrary,
        async ([method, urlPath], authorization) => {
          runs++;
          const body = method === "POST" ? JSON.stringify(VALID[urlPath]) : undefined;
          const response = await call(method, urlPath, { authorization, body });
          const error = await expectOpenAiError(
            response,
            `${method} ${urlPath} with '${authorization.slice(0, 40)}'`,
          );
          expect(response.status).toBe(401);
          expect(error.type).toBe("invalid_request_error");
          expect(["missing_api_key", "invalid_api_key"]).toContain(error.code);
          // The message may hint at the key's ends, never echo a whole token back.
          const token = /^Bearer\s+(\S+)/i.exec(authorization)?.[1];
          if (token && token.length > 8) expect(error.message).not.toContain(token);
        },
      ),
      { numRuns: RUNS * 3 },
    );
    await expectNothingPaidAndAlive();
    recordTrial(context, {
      area: "Bridge",
      fault:
        "every /v1 endpoint with no Authorization, Basic/Token schemes, empty or extra tokens, near-miss keys, 8 kB and random tokens",
      runs,
      expected:
        "401 missing_api_key / invalid_api_key in OpenAI's error format; key not echoed; nothing stored; nothing paid",
    });
  });

  for (const urlPath of postRoutes) {
    test(`POST ${urlPath}: malformed JSON, wrong types, missing/extra fields → 4xx naming the field, nothing paid`, async (context) => {
      let runs = 0;
      const valid = VALID[urlPath]!;
      type Case = { body: string | Uint8Array; field?: string; idempotencyKey?: string };
      const notJson = fc.string({ unit: "binary", minLength: 1, maxLength: 200 }).filter((s) => {
        try {
          JSON.parse(s);
          return false;
        } catch {
          return true;
        }
      });
      const cases: fc.Arbitrary<Case> = fc.oneof(
        notJson.map((body) => ({ body })),
        fc
          .uint8Array({ minLength: 1, maxLength: 64 })
          .map((bytes) => ({ body: Uint8Array.from([0xff, ...bytes]) })),
        fc
          .nat({ max: JSON.stringify(valid).length - 1 })
          .map((n) => ({ body: JSON.stringify(valid).slice(0, n) })),
        fc.jsonValue({ maxDepth: 3 }).map((value) => ({ body: JSON.stringify(value) })),
        fc
          .record({
            field: fc.constantFrom(...Object.keys(valid), "model", "messages", "prompt", "args", "task_type"),
            value: fc.oneof(
              fc.jsonValue({ maxDepth: 2 }),
              fc.constantFrom(-1, 0, 1e308, 2 ** 64, "", " ", [], {}, null, true, "../../etc/passwd"),
            ),
            kind: fc.constantFrom("replace", "delete"),
          })
          .map(({ field, value, kind }) => {
            const body: Record<string, unknown> = structuredClone(valid);
            if (kind === "replace") body[field] = value;
            else delete body[field];
            return { body: JSON.stringify(body), field };
          }),
        fc
          .oneof(
            fc.string({ maxLength: 300 }).filter((s) => !/^[\x21-\x7e]{1,255}$/.test(s)),
            fc.constantFrom("", " ", "a b", "x".repeat(256)),
          )
          .map((idempotencyKey) => ({
            body: JSON.stringify(valid),
            idempotencyKey,
            field: "Idempotency-Key",
          })),
      );
      await fc.assert(
        fc.asyncProperty(cases, async (c) => {
          runs++;
          const headers: Record<string, string> = {};
          if (c.idempotencyKey !== undefined) headers["idempotency-key"] = c.idempotencyKey;
          const response = await call("POST", urlPath, { body: c.body, headers });
          const error = await expectOpenAiError(response, `${urlPath} ${String(c.body).slice(0, 80)}`);
          // 400 bad field / JSON; 404 unknown model; 429 a valid request refused by the key's zero quota.
          expect([400, 404, 429]).toContain(response.status);
          if (response.status === 429) expect(error.code).toBe("insufficient_quota");
          if (response.status === 404)
            expect([error.code, error.param]).toEqual(["model_not_found", "model"]);
          if (error.code === "invalid_json") expect(error.message).toMatch(/JSON/);
          if (response.status === 400 && c.field !== undefined && error.code !== "invalid_json") {
            // The named parameter is the changed field or inside it (`args.messages[0]…` for `args`).
            if (c.field === "Idempotency-Key") expect(error.param).toBe("Idempotency-Key");
            else if (error.param !== null)
              expect(error.param.startsWith(c.field) || c.field === "task_type", JSON.stringify(error)).toBe(
                true,
              );
          }
        }),
        { numRuns: RUNS * 2 },
      );
      await expectNothingPaidAndAlive();
      recordTrial(context, {
        area: "Bridge",
        fault: `POST ${urlPath}: non-JSON, invalid UTF-8, truncated JSON, random JSON, one field given a wrong type or removed, malformed Idempotency-Key`,
        runs,
        expected:
          "400 naming the parameter (or 404 model_not_found, or 429 quota for a valid request) in OpenAI's format; nothing stored; wallet nonce and balance unchanged",
      });
    });
  }

  test("GET endpoints with traversal, huge and junk ids → 404, nothing stored", async (context) => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("/v1/models/", "/v1/crynux/tasks/", "/v1/crynux/tasks/:id/result"),
        idArbitrary,
        async (route, id) => {
          runs++;
          const urlPath = route.includes(":id") ? route.replace(":id", id) : `${route}${id}`;
          const response = await call("GET", urlPath);
          if (response.status === 200) {
            // Only a configured model id is found.
            expect(["/v1/models/echo-chat", "/v1/models/echo-sd"]).toContain(
              new URL(`http://x${urlPath}`).pathname,
            );
            return;
          }
          const error = await expectOpenAiError(response, urlPath);
          expect(response.status).toBe(404);
          expect(["model_not_found", "task_not_found", "unknown_url"]).toContain(error.code);
        },
      ),
      { numRuns: RUNS * 3 },
    );
    await expectNothingPaidAndAlive();
    recordTrial(context, {
      area: "Bridge",
      fault:
        "GET /v1/models/:id and /v1/crynux/tasks/:id(/result) with ../ traversal, %2e%2e, NUL, __proto__/constructor, 3000-digit and random ids",
      runs,
      expected: "404 model_not_found / task_not_found in OpenAI's format; never 5xx",
    });
  });

  test("bodies over the limit, with and without content-length → 413", async (context) => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...postRoutes),
        fc.integer({ min: 1, max: 4 * MAX_BODY }),
        fc.boolean(),
        async (urlPath, extra, chunked) => {
          runs++;
          const size = MAX_BODY + extra;
          const text = `{"model":"echo-chat","prompt":"${"a".repeat(size - 30)}"}`;
          const bytes = new TextEncoder().encode(text);
          const chunks: Uint8Array[] = [];
          for (let at = 0; at < bytes.length; at += 4096) chunks.push(bytes.subarray(at, at + 4096));
          const response = await call("POST", urlPath, chunked ? { chunks } : { body: bytes });
          const error = await expectOpenAiError(response, `${bytes.length} bytes`);
          expect([response.status, error.code]).toEqual([413, "request_too_large"]);
          expect(error.message).toContain(String(MAX_BODY));
        },
      ),
      { numRuns: RUNS },
    );
    await expectNothingPaidAndAlive();
    recordTrial(context, {
      area: "Bridge",
      fault: "POST bodies 1 byte to 4× over maxBodyBytes, with content-length or streamed without it",
      runs,
      expected: "413 request_too_large naming the limit; nothing stored; nothing paid",
    });
  });

  test("unknown paths and methods, raw malformed HTTP → 4xx, server alive", async (context) => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"),
        fc.oneof(
          fc
            .array(fc.string({ maxLength: 12 }), { maxLength: 5 })
            .map((parts) => `/${parts.map(encodeURIComponent).join("/")}`),
          fc.constantFrom(
            "/v1",
            "/v1/",
            "/v1/chat",
            "/v1/models/a/b",
            "/v1/crynux/tasks",
            "/V1/MODELS",
            `/v1/${"a".repeat(10_000)}`,
          ),
        ),
        async (method, urlPath) => {
          runs++;
          const response = await call(method, urlPath, { body: method === "GET" ? undefined : "{}" });
          if (response.status === 200) {
            expect(method).toBe("GET");
            return;
          }
          await expectOpenAiError(response, `${method} ${urlPath}`);
        },
      ),
      { numRuns: RUNS * 2 },
    );
    const { port } = bridge;
    const raw = (bytes: string) =>
      new Promise<number>((resolve, reject) => {
        const socket = connect(port, "127.0.0.1");
        let received = "";
        socket.setTimeout(30_000, () => {
          socket.destroy();
          reject(new Error(`no answer to ${bytes.slice(0, 60)}`));
        });
        socket.on("data", (chunk) => {
          received += chunk.toString("latin1");
          const match = /^HTTP\/1\.1 (\d{3})/.exec(received);
          if (match) {
            socket.destroy();
            resolve(Number(match[1]));
          }
        });
        socket.on("error", () => resolve(0));
        socket.on("close", () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0)));
        socket.end(bytes);
      });
    const auth = `Authorization: Bearer ${ZERO_KEY}\r\n`;
    const rawRequests = [
      "GET /v1/crynux/tasks/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: abc\r\n\r\n{}`,
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 2\r\nContent-Length: 5\r\n\r\n{}`,
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
      `GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \u0001${ZERO_KEY}\r\n\r\n`,
      `GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${"a".repeat(70_000)}\r\n\r\n`,
      "\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003\r\n\r\n",
    ];
    let answered = 0;
    for (const request of rawRequests) {
      runs++;
      const status = await raw(request);
      // 0: the HTTP parser closed the connection without an answer, which is not a crash either.
      if (status !== 0) answered++;
      if (status !== 0)
        expect(status >= 400 && status < 500, `${request.slice(0, 50)}: ${status}`).toBe(true);
      expect((await call("GET", "/health")).status).toBe(200);
    }
    expect(answered).toBeGreaterThan(rawRequests.length / 2);
    await expectNothingPaidAndAlive();
    recordTrial(context, {
      area: "Bridge",
      fault:
        "unknown paths and methods, 10 kB paths; raw HTTP: literal ../, bad/duplicate content-length, broken chunks, control characters in Authorization, 70 kB header, TLS bytes",
      runs,
      expected:
        "404 unknown_url in OpenAI's format or 4xx from the HTTP parser; /health still 200; nothing paid",
    });
  });

  test("control: the comparison sees a stored record and a sent transaction", async () => {
    const at = Date.now();
    const record = await bridge.store.insert({
      apiKey: "main",
      requestId: "control",
      kind: "native",
      model: null,
      fingerprint: "0",
      taskType: 1,
      args: {},
      vramLimit: 0n,
      fee: 1n,
      dataHash: `0x${"00".repeat(32)}`,
      fromBlock: 0n,
      createdAt: at,
    });
    expect(await bridge.store.all()).not.toEqual(recordsBefore);
    await bridge.store.delete(record.apiKey, record.requestId);
    expect(await bridge.store.all()).toEqual(recordsBefore);
    const hash = await anvil()
      .walletClient(WALLET)
      .sendTransaction({ to: wallet(), value: 0n } as never);
    await anvil().publicClient.waitForTransactionReceipt({ hash });
    expect(await walletState()).not.toEqual(walletBefore);
  });
});
