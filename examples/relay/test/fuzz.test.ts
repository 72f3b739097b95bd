import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { relayDomain, signRelayRequest } from "@crynux/client";
import { type GptResponse, type GptTaskArgsInput, gptResultHash, taskHash } from "@crynux/tasks";
import { PGlite } from "@electric-sql/pglite";
import { serve } from "@hono/node-server";
import fc from "fast-check";
import { type Address, type Hex, keccak256, type LocalAccount, toHex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { createRelayApp } from "../src/app.js";
import {
  type BlobStore,
  createSqlStore,
  type FollowerCursor,
  openBlobStore,
  pgliteExecutor,
  type RelayStore,
  type TaskEvent,
} from "../src/store/index.js";
import { sdImages } from "./http-helpers.js";

// Small limits keep the oversized bodies cheap to generate; the checks are the same at any size.
const LIMITS = { maxArgsBytes: 8 * 1024, maxResultBytes: 64 * 1024 };
const RUNS = 60;
const TASK_CONTRACT: Address = "0x00000000000000000000000000000000000000aa";
const CHAIN_ID = 31337;
const DOMAIN = relayDomain({ chainId: CHAIN_ID, taskContract: TASK_CONTRACT });
const MAX_UINT256 = 2n ** 256n - 1n;

const creator = privateKeyToAccount(generatePrivateKey());
const nodes = [0, 1, 2].map(() => privateKeyToAccount(generatePrivateKey()));
const stranger = privateKeyToAccount(generatePrivateKey());

const GPT_ARGS: GptTaskArgsInput = {
  model: "o/r:Q4_0",
  messages: [{ role: "user", content: "fuzz me" }],
  generation_config: { max_new_tokens: 16 },
};
const GPT_RESPONSE: GptResponse = {
  model: "o/r:Q4_0",
  choices: [{ index: 0, message: { role: "assistant", content: "fuzzed" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 2, completion_tokens: 1, total_tokens: 3 },
};
const SD = sdImages(2, 7, 32);

/** The indexed tasks the fuzzed requests aim at, one per situation a route handles differently. */
const T = {
  /** GPT, started, no args yet: PUT args would store. */
  argsOpen: 1n,
  /** GPT, success, args and results stored. */
  gptDone: 2n,
  /** GPT, success, results not uploaded: PUT results would store. */
  gptOpen: 3n,
  /** SD (2 images), success, results not uploaded. */
  sdOpen: 4n,
  /** SD (2 images), success, results stored. */
  sdDone: 5n,
  /** GPT, still queued. */
  queued: 6n,
} as const;

let pg: PGlite;
let store: RelayStore;
let blobs: BlobStore;
let blobDir: string;
/** The relay's clock (unix ms); tests move it to replay requests later. */
let clock = Date.now();
let app: ReturnType<typeof createRelayApp>;
const internalErrors: unknown[] = [];

// ---------------------------------------------------------------------------------------------------
// Seeding the index the way the indexer would

let logIndex = 0;
const blockHash = (n: bigint): Hex => keccak256(toHex(`block ${n}`));
function event(eventName: string, args: Record<string, unknown>): TaskEvent {
  return {
    eventName,
    args,
    blockNumber: 10n,
    logIndex: logIndex++,
    blockHash: blockHash(10n),
    transactionHash: keccak256(toHex(`tx ${logIndex}`)),
  };
}
function startedEvents(taskId: bigint, taskType: 0 | 1, hash: Hex): TaskEvent[] {
  return nodes.map((node, round) =>
    event("TaskStarted", {
      taskId,
      taskType,
      creator: creator.address,
      selectedNode: node.address,
      taskHash: hash,
      dataHash: keccak256(toHex("data")),
      round,
    }),
  );
}
const successEvent = (taskId: bigint, result: Hex) =>
  event("TaskSuccess", { taskId, result, resultNode: nodes[0]!.address });

// ---------------------------------------------------------------------------------------------------
// Requests

type Init = { method: string; path: string; headers?: Record<string, string>; body?: BodyInit | Uint8Array };

async function send(init: Init): Promise<Response> {
  const hasBody = init.body !== undefined;
  return app.request(`http://relay.test${init.path}`, {
    method: init.method,
    headers: init.headers,
    ...(hasBody ? { body: init.body as BodyInit, duplex: "half" } : {}),
  } as RequestInit);
}

type SignOptions = {
  account?: LocalAccount;
  /** What the signature covers, when it should differ from what is sent (forgeries). */
  signedMethod?: string;
  signedPath?: string;
  signedBody?: Uint8Array | string;
  domain?: typeof DOMAIN;
  timestamp?: number;
};

async function signed(
  method: string,
  urlPath: string,
  body: Uint8Array | string | undefined,
  options: SignOptions = {},
): Promise<Record<string, string>> {
  const { headers } = await signRelayRequest({
    account: options.account ?? creator,
    domain: options.domain ?? DOMAIN,
    method: options.signedMethod ?? method,
    path: options.signedPath ?? urlPath,
    body: options.signedBody ?? body,
    timestamp: options.timestamp ?? Math.floor(clock / 1000),
  });
  return headers;
}

type ErrorBody = { error: { code: string; message: string; field?: string } };

/** Every answer to a bad request: a 4xx with `{error: {code, message, field?}}` whose message says something. */
async function expectClientError(response: Response, what: string): Promise<ErrorBody["error"]> {
  const text = await response.text();
  if (response.status < 400 || response.status >= 500) {
    throw new Error(`${what}: expected a 4xx, got ${response.status} ${text.slice(0, 300)}`);
  }
  let body: ErrorBody;
  try {
    body = JSON.parse(text) as ErrorBody;
  } catch {
    throw new Error(`${what}: the ${response.status} body is not JSON: ${text.slice(0, 200)}`);
  }
  expect(typeof body.error?.code, what).toBe("string");
  expect(body.error.message.length, what).toBeGreaterThan(10);
  return body.error;
}

// ---------------------------------------------------------------------------------------------------
// What "nothing stored" means: every row of every table and every file under the blob directory

async function snapshot(): Promise<{ rows: Record<string, string[]>; files: string[] }> {
  const { rows: tables } = await pg.query<{ tablename: string }>(
    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
  );
  const rows: Record<string, string[]> = {};
  for (const { tablename } of tables) {
    const result = await pg.query<{ r: string }>(`SELECT row_to_json(t)::text AS r FROM "${tablename}" t`);
    rows[tablename] = result.rows.map((row) => row.r).sort();
  }
  const files: string[] = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else {
        const digest = createHash("sha256")
          .update(await readFile(full))
          .digest("hex");
        files.push(`${path.relative(blobDir, full)} ${digest}`);
      }
    }
  };
  await walk(blobDir);
  return { rows, files: files.sort() };
}

let baseline: Awaited<ReturnType<typeof snapshot>>;

/** After a batch of bad requests: nothing changed, and valid requests are still served. */
async function expectUnchangedAndAlive(): Promise<void> {
  expect(await snapshot()).toEqual(baseline);
  expect(internalErrors).toEqual([]);
  expect((await send({ method: "GET", path: "/v1/health" })).status).toBe(200);
  const argsPath = `/v1/tasks/${T.gptDone}/args`;
  const response = await send({
    method: "GET",
    path: argsPath,
    headers: await signed("GET", argsPath, undefined, { account: nodes[1] }),
  });
  expect(response.status).toBe(200);
}

function multipart(parts: { name: string; bytes?: Uint8Array; text?: string }[]): {
  body: Uint8Array;
  contentType: string;
} {
  const boundary = `fuzz${Math.random().toString(16).slice(2)}`;
  const chunks: Uint8Array[] = [];
  const enc = new TextEncoder();
  for (const part of parts) {
    const disposition =
      part.bytes !== undefined
        ? `form-data; name="${part.name}"; filename="${part.name}.png"\r\nContent-Type: image/png`
        : `form-data; name="${part.name}"`;
    chunks.push(enc.encode(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n`));
    chunks.push(part.bytes ?? enc.encode(part.text ?? ""));
    chunks.push(enc.encode("\r\n"));
  }
  chunks.push(enc.encode(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

beforeAll(async () => {
  pg = await PGlite.create();
  store = await createSqlStore(pgliteExecutor(pg));
  blobDir = await mkdtemp(path.join(tmpdir(), "relay-fuzz-"));
  blobs = await openBlobStore(blobDir);
  const gptHash = taskHash(GPT_ARGS);
  const sdHash = keccak256(toHex("sd args"));
  const cursor: FollowerCursor = { checkpoints: [{ number: 10n, hash: blockHash(10n) }] };
  await store.applyTaskEvents(
    [
      ...startedEvents(T.argsOpen, 1, gptHash),
      ...startedEvents(T.gptDone, 1, gptHash),
      successEvent(T.gptDone, gptResultHash(GPT_RESPONSE)),
      ...startedEvents(T.gptOpen, 1, gptHash),
      successEvent(T.gptOpen, gptResultHash(GPT_RESPONSE)),
      ...startedEvents(T.sdOpen, 0, sdHash),
      successEvent(T.sdOpen, SD.result),
      ...startedEvents(T.sdDone, 0, sdHash),
      successEvent(T.sdDone, SD.result),
      event("TaskQueued", {
        taskId: T.queued,
        taskType: 1,
        creator: creator.address,
        taskHash: gptHash,
        dataHash: keccak256(toHex("data")),
        vramLimit: 0n,
        cap: 1n,
        fee: 1n,
        value: 1n,
      }),
    ],
    cursor,
  );
  app = createRelayApp({
    store,
    blobs,
    chain: { chainId: CHAIN_ID, taskContract: TASK_CONTRACT },
    indexerStatus: () => ({ indexedBlock: 10n, headBlock: 12n }),
    stats: async () => ({
      nodes: { total: 3, available: 3, busy: 0 },
      tasks: { total: 6, queued: 1, running: 0 },
      indexedBlock: 10,
    }),
    config: { limits: LIMITS, rateLimit: { requests: 1_000_000, windowMs: 60_000 } },
    now: () => clock,
    onInternalError: (error) => internalErrors.push(error),
  });

  // The "done" tasks get their data through the API itself.
  const put = async (
    taskId: bigint,
    what: string,
    body: Uint8Array | string,
    account: LocalAccount,
    type?: string,
  ) => {
    const urlPath = `/v1/tasks/${taskId}/${what}`;
    const headers = await signed("PUT", urlPath, body, { account });
    if (type) headers["content-type"] = type;
    const response = await send({ method: "PUT", path: urlPath, headers, body });
    expect(response.status, await response.clone().text()).toBe(201);
  };
  await put(T.gptDone, "args", JSON.stringify(GPT_ARGS), creator);
  await put(T.gptDone, "results", JSON.stringify(GPT_RESPONSE), nodes[0]!);
  const form = multipart(SD.images.map((bytes, index) => ({ name: String(index), bytes })));
  await put(T.sdDone, "results", form.body, nodes[0]!, form.contentType);
  baseline = await snapshot();
  expect(baseline.files.length).toBeGreaterThan(0);
}, 120_000);

afterAll(async () => {
  await pg?.close();
  if (blobDir) await rm(blobDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------
// Generators shared by the routes

/** Task ids that are not a decimal uint256: traversal, encodings, signs, overflow, junk. */
const badTaskId = fc
  .oneof(
    fc.constantFrom(
      "..%2F..%2Fetc%2Fpasswd",
      "%2e%2e",
      "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
      "..%5c..%5cwindows",
      "%252e%252e",
      "%00",
      "1%00",
      "-1",
      "+1",
      "01",
      "1.0",
      "1e3",
      "0x10",
      " 1",
      "1 ",
      "NaN",
      "Infinity",
      "%F0%9F%92%A5",
      "%",
      "%zz",
      (MAX_UINT256 + 1n).toString(),
      (2n ** 300n).toString(),
      "9".repeat(5000),
    ),
    fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !/^(0|[1-9][0-9]*)$/.test(s)),
    fc.bigInt({ min: MAX_UINT256 + 1n, max: 2n ** 512n }).map(String),
    fc.bigInt({ min: -(2n ** 256n), max: -1n }).map(String),
    fc.nat().map((n) => `0${n}`),
  )
  .map((id) => encodeURI(id).replace(/%25([0-9a-fA-F]{2})/g, "%$1"));

/** Printable ASCII header values; fetch itself refuses control characters. */
const headerText = fc.string({ maxLength: 200 });
const hexText = (bytes: number) => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => toHex(b));

type Route = {
  method: "GET" | "PUT";
  /** Path pattern as registered on the app. */
  pattern: string;
  path: (taskId: string) => string;
  /** The task a valid request of this route is about, its rightful signer and a stranger to it. */
  taskId: bigint;
  signer: LocalAccount;
  outsider: LocalAccount;
  /** A body the route would accept (so a change in it is the only fault). */
  body?: () => { bytes: Uint8Array | string; contentType?: string };
};

const signedRoutes: Route[] = [
  {
    method: "PUT",
    pattern: "/v1/tasks/:taskId/args",
    path: (id) => `/v1/tasks/${id}/args`,
    taskId: T.argsOpen,
    signer: creator,
    outsider: nodes[0]!,
    body: () => ({ bytes: JSON.stringify(GPT_ARGS) }),
  },
  {
    method: "GET",
    pattern: "/v1/tasks/:taskId/args",
    path: (id) => `/v1/tasks/${id}/args`,
    taskId: T.gptDone,
    signer: nodes[2]!,
    outsider: stranger,
  },
  {
    method: "PUT",
    pattern: "/v1/tasks/:taskId/results",
    path: (id) => `/v1/tasks/${id}/results`,
    taskId: T.gptOpen,
    signer: nodes[0]!,
    outsider: nodes[1]!,
    body: () => ({ bytes: JSON.stringify(GPT_RESPONSE) }),
  },
  {
    method: "GET",
    pattern: "/v1/tasks/:taskId/results",
    path: (id) => `/v1/tasks/${id}/results`,
    taskId: T.gptDone,
    signer: creator,
    outsider: nodes[0]!,
  },
  {
    method: "GET",
    pattern: "/v1/tasks/:taskId/results/:index",
    path: (id) => `/v1/tasks/${id}/results/1`,
    taskId: T.sdDone,
    signer: creator,
    outsider: stranger,
  },
];

const publicRoutes = ["/v1/health", "/v1/info", "/v1/stats"];

type Attack =
  | { kind: "badId"; id: string }
  | { kind: "missingHeader"; drop: "x-crynux-timestamp" | "x-crynux-signature" | "both" }
  | { kind: "badTimestamp"; value: string }
  | { kind: "badSignature"; value: string }
  | { kind: "expired"; skew: number }
  | { kind: "outsider" }
  | { kind: "forged"; what: "method" | "path" | "body" | "domain" | "random" };

const attackArbitrary: fc.Arbitrary<Attack> = fc.oneof(
  badTaskId.map((id) => ({ kind: "badId" as const, id })),
  fc
    .constantFrom("x-crynux-timestamp" as const, "x-crynux-signature" as const, "both" as const)
    .map((drop) => ({ kind: "missingHeader" as const, drop })),
  fc
    .oneof(
      headerText.filter((s) => !/^(0|[1-9][0-9]{0,15})$/.test(s.trim())),
      fc.constantFrom("-1", "1.5", "0x10", "1e9", "99999999999999999999", "\u00b9\u00b2\u00b3"),
    )
    .map((value) => ({ kind: "badTimestamp" as const, value })),
  fc
    .oneof(
      headerText,
      hexText(64),
      hexText(66),
      fc.constantFrom(`0x${"zz".repeat(65)}`, `0X${"11".repeat(65)}`, "0x", "null"),
    )
    .map((value) => ({ kind: "badSignature" as const, value })),
  fc
    .oneof(fc.integer({ min: 61, max: 10 ** 9 }), fc.integer({ min: -(10 ** 9), max: -61 }))
    .map((skew) => ({ kind: "expired" as const, skew })),
  fc.constant({ kind: "outsider" as const }),
  fc
    .constantFrom("method" as const, "path" as const, "body" as const, "domain" as const, "random" as const)
    .map((what) => ({ kind: "forged" as const, what })),
);

/** Builds the request of `attack` on `route`; returns it with what the relay must answer. */
async function attackRequest(
  route: Route,
  attack: Attack,
): Promise<{ init: Init; check: (error: ErrorBody["error"], status: number) => void }> {
  const body = route.body?.();
  const bodyBytes = body?.bytes;
  const id = attack.kind === "badId" ? attack.id : route.taskId.toString();
  const urlPath = route.path(id);
  const options: SignOptions = { account: route.signer };
  if (attack.kind === "outsider") options.account = route.outsider;
  if (attack.kind === "expired") options.timestamp = Math.floor(clock / 1000) + attack.skew;
  if (attack.kind === "forged") {
    if (attack.what === "method") options.signedMethod = route.method === "GET" ? "PUT" : "GET";
    if (attack.what === "path") options.signedPath = route.path(String(route.taskId + 100n));
    if (attack.what === "body") options.signedBody = `${String(bodyBytes ?? "")} `;
    if (attack.what === "domain") options.domain = { ...DOMAIN, chainId: CHAIN_ID + 1 };
  }
  const headers = await signed(route.method, urlPath, bodyBytes, options);
  if (body?.contentType) headers["content-type"] = body.contentType;
  if (attack.kind === "missingHeader") {
    if (attack.drop !== "x-crynux-signature") delete headers["x-crynux-timestamp"];
    if (attack.drop !== "x-crynux-timestamp") delete headers["x-crynux-signature"];
  }
  if (attack.kind === "badTimestamp") headers["x-crynux-timestamp"] = attack.value;
  if (attack.kind === "badSignature") headers["x-crynux-signature"] = attack.value;
  if (attack.kind === "forged" && attack.what === "random")
    headers["x-crynux-signature"] = toHex(randomBytes65());
  const init: Init = { method: route.method, path: urlPath, headers, body: bodyBytes };

  const check = (error: ErrorBody["error"], status: number) => {
    switch (attack.kind) {
      case "badId":
        // Either the id segment reaches the route (and is refused as an id) or the path matches no route.
        if (status === 400) {
          expect(error.code).toBe("invalid_task_id");
          expect(error.field).toBe("taskId");
        } else {
          expect([status, error.code]).toEqual([404, "not_found"]);
        }
        return;
      case "missingHeader":
      case "badTimestamp":
      case "badSignature":
        expect([status, error.code]).toEqual([401, "unauthorized"]);
        expect(error.message).toMatch(/x-crynux-(timestamp|signature)|signer can be recovered/);
        return;
      case "expired":
        expect([status, error.code]).toEqual([401, "unauthorized"]);
        expect(error.message).toMatch(/timestamp is too far/);
        return;
      case "outsider":
        expect([status, error.code]).toEqual([403, "forbidden"]);
        return;
      case "forged":
        // A signature over other content recovers another address (403) or none at all (401).
        expect([401, 403]).toContain(status);
        expect(error.code).toBe(status === 401 ? "unauthorized" : "forbidden");
        return;
    }
  };
  return { init, check };
}

function randomBytes65(): Uint8Array {
  const bytes = new Uint8Array(65);
  crypto.getRandomValues(bytes);
  bytes[64] = 27 + (bytes[64]! & 1);
  return bytes;
}

// ---------------------------------------------------------------------------------------------------

describe("relay fuzz", () => {
  test("every route of the app is fuzzed here", () => {
    const registered = new Set(
      app.routes.filter((route) => route.method !== "ALL").map((route) => `${route.method} ${route.path}`),
    );
    const fuzzed = new Set([
      ...signedRoutes.map((route) => `${route.method} ${route.pattern}`),
      ...publicRoutes.map((p) => `GET ${p}`),
    ]);
    // A new route fails this test until it gets its generators above.
    expect([...registered].sort()).toEqual([...fuzzed].sort());
  });

  for (const route of signedRoutes) {
    test(`${route.method} ${route.pattern}: bad ids, headers, signatures, replays → 4xx, nothing stored`, async (context) => {
      let runs = 0;
      await fc.assert(
        fc.asyncProperty(attackArbitrary, async (attack) => {
          runs++;
          const { init, check } = await attackRequest(route, attack);
          const response = await send(init);
          const error = await expectClientError(response, `${JSON.stringify(attack)}`);
          check(error, response.status);
        }),
        { numRuns: RUNS * 2 },
      );
      await expectUnchangedAndAlive();
      recordTrial(context, {
        area: "Relay",
        fault: `${route.method} ${route.pattern}: ids like ../../etc/passwd, %2e%2e, -1, 2^256, 5000 digits; missing/malformed signature headers; timestamps ±61 s to ±30 years; signer not allowed; signatures over another method/path/body/domain; random signatures`,
        runs,
        expected:
          "400 invalid_task_id (field taskId) / 404, 401 naming the header, 403; JSON error; nothing stored; next request served",
      });
    });
  }

  test("a signed request replayed after the ±60 s window → 401", async (context) => {
    let runs = 0;
    const start = clock;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...signedRoutes),
          fc.integer({ min: 61, max: 86_400 * 365 }),
          async (route, later) => {
            runs++;
            clock = start;
            const body = route.body?.().bytes;
            const urlPath = route.path(route.taskId.toString());
            const headers = await signed(route.method, urlPath, body, { account: route.signer });
            if (route.method === "GET") {
              // Fresh, the same request is served: the replay below is refused only for its age.
              const fresh = await send({ method: route.method, path: urlPath, headers: { ...headers } });
              expect(fresh.status).toBe(200);
            }
            clock = start + later * 1000;
            const replayed = await send({ method: route.method, path: urlPath, headers, body });
            const error = await expectClientError(replayed, `replay after ${later} s`);
            expect([replayed.status, error.code]).toEqual([401, "unauthorized"]);
            expect(error.message).toMatch(/too far/);
          },
        ),
        { numRuns: RUNS },
      );
    } finally {
      clock = start;
    }
    await expectUnchangedAndAlive();
    recordTrial(context, {
      area: "Relay",
      fault: "a valid signed request (every signed route) replayed 61 s to 1 year later",
      runs,
      expected: "401 unauthorized 'timestamp is too far'; nothing stored",
    });
  });

  test("PUT args: malformed JSON, wrong types, missing/extra fields → 400/422 naming the problem", async (context) => {
    let runs = 0;
    const urlPath = `/v1/tasks/${T.argsOpen}/args`;
    type Case = { body: Uint8Array | string; expectCode: string[]; field?: string };
    const fields = Object.keys({ ...GPT_ARGS, seed: 0, dtype: "auto" });
    const cases: fc.Arbitrary<Case> = fc.oneof(
      // Not JSON at all, or not UTF-8.
      fc
        .oneof(
          fc.string({ unit: "binary", minLength: 1, maxLength: 300 }).filter((s) => {
            try {
              JSON.parse(s);
              return false;
            } catch {
              return true;
            }
          }),
          fc
            .nat({ max: JSON.stringify(GPT_ARGS).length - 1 })
            .map((n) => JSON.stringify(GPT_ARGS).slice(0, n)),
          fc.constantFrom("", "{", "[1,]", "{'a':1}", "NaN", '{"a":1}}'),
        )
        .map((body) => ({ body, expectCode: ["invalid_json"] })),
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => ({
        body: Uint8Array.from([0xff, 0xfe, ...bytes]),
        expectCode: ["invalid_json"],
      })),
      // JSON, but not task arguments.
      fc
        .jsonValue({ maxDepth: 3 })
        .map((value) => ({ body: JSON.stringify(value), expectCode: ["invalid_args"] })),
      // One field of valid arguments given a wrong type, removed, or an unknown field added.
      fc
        .record({
          field: fc.constantFrom(...fields),
          value: fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(-1, 2 ** 64, "", [], {}, null)),
          kind: fc.constantFrom("replace", "delete", "extra"),
        })
        .map(({ field, value, kind }): Case => {
          const args: Record<string, unknown> = { ...GPT_ARGS, seed: 0, dtype: "auto" };
          if (kind === "replace") args[field] = value;
          if (kind === "delete") delete args[field];
          if (kind === "extra") args[`x_${field}`] = value;
          return {
            body: JSON.stringify(args),
            // Valid but different arguments hash differently from the on-chain taskHash.
            expectCode: ["invalid_args", "hash_mismatch"],
            field: kind === "extra" ? `x_${field}` : field,
          };
        }),
      // Valid-looking but deeply nested free-form JSON.
      fc.integer({ min: 100, max: 2000 }).map((depth) => ({
        body: JSON.stringify({
          ...GPT_ARGS,
          template_args: { a: JSON.parse(`${"[".repeat(depth)}${"]".repeat(depth)}`) },
        }),
        expectCode: ["invalid_args", "hash_mismatch"],
      })),
    );
    await fc.assert(
      fc.asyncProperty(cases, async (c) => {
        runs++;
        const headers = await signed("PUT", urlPath, c.body);
        const response = await send({ method: "PUT", path: urlPath, headers, body: c.body });
        const error = await expectClientError(response, `body ${String(c.body).slice(0, 80)}`);
        expect(c.expectCode).toContain(error.code);
        expect(response.status).toBe(error.code === "invalid_json" ? 400 : 422);
        if (error.code === "invalid_json") expect(error.message).toMatch(/JSON/);
        if (error.code === "invalid_args" && c.field !== undefined) {
          // The first bad field is the one changed, or inside it.
          expect(
            error.field === c.field || error.field?.startsWith(`${c.field}.`),
            JSON.stringify(error),
          ).toBe(true);
          expect(error.message).toContain(c.field);
        }
      }),
      { numRuns: RUNS * 3 },
    );
    await expectUnchangedAndAlive();
    recordTrial(context, {
      area: "Relay",
      fault:
        "PUT args: non-JSON, invalid UTF-8, truncated JSON, random JSON values, one field of valid args with a wrong type / removed / unknown field added, 100–2000-deep nesting",
      runs,
      expected:
        "400 invalid_json or 422 invalid_args with field naming the bad field (or 422 hash_mismatch); nothing stored",
    });
  });

  test("PUT results (GPT): junk bodies and wrong responses → 422, nothing stored", async (context) => {
    let runs = 0;
    const urlPath = `/v1/tasks/${T.gptOpen}/results`;
    const bodies = fc.oneof(
      fc.string({ unit: "binary", maxLength: 300 }),
      fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value)),
      fc
        .record({
          field: fc.constantFrom("model", "choices", "usage", "extra"),
          value: fc.jsonValue({ maxDepth: 2 }),
        })
        .map(({ field, value }) => JSON.stringify({ ...GPT_RESPONSE, [field]: value })),
      // Valid responses that are not the one the nodes agreed on.
      fc.string({ maxLength: 30 }).map((content) =>
        JSON.stringify({
          ...GPT_RESPONSE,
          choices: [
            { index: 0, message: { role: "assistant", content: `${content}!` }, finish_reason: "stop" },
          ],
        }),
      ),
    );
    await fc.assert(
      fc.asyncProperty(bodies, async (body) => {
        runs++;
        const headers = await signed("PUT", urlPath, body, { account: nodes[0] });
        const response = await send({ method: "PUT", path: urlPath, headers, body });
        const error = await expectClientError(response, `body ${body.slice(0, 80)}`);
        expect(response.status).toBe(422);
        expect(["invalid_result", "result_mismatch"]).toContain(error.code);
      }),
      { numRuns: RUNS * 2 },
    );
    await expectUnchangedAndAlive();
    recordTrial(context, {
      area: "Relay",
      fault:
        "PUT results (GPT) by the result node: non-JSON, random JSON, a field of the response replaced, a valid response other than the agreed one",
      runs,
      expected: "422 invalid_result / result_mismatch; nothing stored (no blob, no record)",
    });
  });

  test("PUT results (SD): junk multipart, wrong files, wrong images → 422 naming the image, nothing stored", async (context) => {
    let runs = 0;
    const urlPath = `/v1/tasks/${T.sdOpen}/results`;
    const other = sdImages(2, 99, 32).images;
    type Case = { body: Uint8Array | string; contentType?: string };
    const cases: fc.Arbitrary<Case> = fc.oneof(
      // Not multipart.
      fc.record({
        body: fc.string({ unit: "binary", maxLength: 200 }),
        contentType: fc.constantFrom(
          undefined,
          "application/json",
          "image/png",
          "text/plain",
          "multipart/mixed",
        ),
      }),
      // Claimed multipart, but the bytes are junk or the boundary is wrong.
      fc.record({
        body: fc.uint8Array({ maxLength: 300 }),
        contentType: fc.constantFrom(
          "multipart/form-data",
          "multipart/form-data; boundary=",
          "multipart/form-data; boundary=x",
          `multipart/form-data; boundary=${"b".repeat(200)}`,
        ),
      }),
      // Well-formed multipart with wrong parts: counts, names, strings instead of files, non-PNG or other images.
      fc
        .array(
          fc.record({
            name: fc.oneof(fc.constantFrom("0", "1", "2", "-1", "00", "a", ""), fc.string({ maxLength: 5 })),
            content: fc.oneof(
              fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ bytes })),
              fc
                .constantFrom(...other, SD.images[1]!, SD.images[0]!.slice(0, 40))
                .map((bytes) => ({ bytes })),
              fc.string({ maxLength: 20 }).map((text) => ({ text })),
            ),
          }),
          { maxLength: 4 },
        )
        .filter(
          // The two right images under the right names would be a valid upload, not an attack.
          (parts) =>
            !(
              parts.length === 2 &&
              parts.every(
                (p, i) => p.name === String(i) && "bytes" in p.content && p.content.bytes === SD.images[i],
              )
            ),
        )
        .map((parts) => {
          const form = multipart(parts.map((p) => ({ name: p.name.replace(/["\r\n]/g, "_"), ...p.content })));
          return { body: form.body, contentType: form.contentType };
        }),
    );
    await fc.assert(
      fc.asyncProperty(cases, async (c) => {
        runs++;
        const headers = await signed("PUT", urlPath, c.body, { account: nodes[0] });
        if (c.contentType !== undefined) headers["content-type"] = c.contentType;
        const response = await send({ method: "PUT", path: urlPath, headers, body: c.body });
        const error = await expectClientError(response, `content-type ${c.contentType}`);
        expect(response.status).toBe(422);
        expect(["invalid_result", "result_mismatch"]).toContain(error.code);
        if (error.code === "result_mismatch") expect(error.field).toMatch(/^[01]$/);
      }),
      { numRuns: RUNS * 2 },
    );
    await expectUnchangedAndAlive();
    recordTrial(context, {
      area: "Relay",
      fault:
        "PUT results (SD): non-multipart bodies, junk under a multipart content-type, bad boundaries, wrong part counts/names, text parts, non-PNG bytes, truncated PNGs, other images",
      runs,
      expected: "422 invalid_result / result_mismatch (field = image index); no blob written; nothing stored",
    });
  });

  test("GET results/:index: bad indexes → 400 invalid_index or 404", async (context) => {
    let runs = 0;
    const index = fc
      .oneof(
        fc.constantFrom(
          "-1",
          "01",
          "1.0",
          "2",
          "999999",
          "1e2",
          "%2e%2e",
          "..%2F1",
          "0x1",
          (2n ** 256n).toString(),
        ),
        fc.string({ minLength: 1, maxLength: 20 }),
      )
      .map((s) => encodeURI(s).replace(/%25([0-9a-fA-F]{2})/g, "%$1"));
    await fc.assert(
      fc.asyncProperty(index, async (text) => {
        const urlPath = `/v1/tasks/${T.sdDone}/results/${text}`;
        // Only values that stay one path segment: "." or "..", "/", "?" and "#" make the URL parser send
        // another path (or a query) than the one signed, which is a different request.
        fc.pre(new URL(urlPath, "http://relay.test").pathname === urlPath);
        runs++;
        const response = await send({
          method: "GET",
          path: urlPath,
          headers: await signed("GET", urlPath, undefined),
        });
        if (response.status === 200) {
          // "0" and "1" are the task's two images.
          expect(["0", "1"]).toContain(text);
          return;
        }
        const error = await expectClientError(response, `index ${text}`);
        if (response.status === 400) expect([error.code, error.field]).toEqual(["invalid_index", "index"]);
        else expect(response.status).toBe(404);
      }),
      { numRuns: RUNS * 2 },
    );
    await expectUnchangedAndAlive();
    recordTrial(context, {
      area: "Relay",
      fault:
        "GET results/:index with negative, leading-zero, fractional, out-of-range, 2^256, traversal and random indexes",
      runs,
      expected: "400 invalid_index (field index) or 404; never 5xx",
    });
  });

  test("bodies over the limit, with and without content-length → 413", async (context) => {
    let runs = 0;
    const putRoutes = signedRoutes.filter((route) => route.method === "PUT");
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...putRoutes),
        fc.integer({ min: 1, max: 3 * LIMITS.maxResultBytes }),
        fc.boolean(),
        async (route, extra, chunked) => {
          runs++;
          const limit = route.pattern.endsWith("/args") ? LIMITS.maxArgsBytes : LIMITS.maxResultBytes;
          const size = limit + extra;
          const bytes = new Uint8Array(size).fill(0x20);
          const urlPath = route.path(route.taskId.toString());
          const headers = await signed("PUT", urlPath, bytes, { account: route.signer });
          let body: BodyInit = bytes;
          if (chunked) {
            // A stream has no length: only counting the bytes can stop it.
            let sent = 0;
            body = new ReadableStream<Uint8Array>({
              pull(controller) {
                if (sent >= size) return controller.close();
                const chunk = bytes.subarray(sent, Math.min(size, sent + 4096));
                sent += chunk.byteLength;
                controller.enqueue(chunk);
              },
            });
          } else headers["content-length"] = String(size);
          const response = await send({ method: "PUT", path: urlPath, headers, body });
          const error = await expectClientError(response, `${size} bytes`);
          expect([response.status, error.code]).toEqual([413, "payload_too_large"]);
          expect(error.message).toContain(String(limit));
        },
      ),
      { numRuns: RUNS },
    );
    await expectUnchangedAndAlive();
    recordTrial(context, {
      area: "Relay",
      fault:
        "PUT args/results with a body 1 byte to 3× over the limit, with content-length or streamed without it",
      runs,
      expected: "413 payload_too_large naming the limit; nothing stored",
    });
  });

  test("public routes, unknown routes and wrong methods with junk → never 5xx", async (context) => {
    let runs = 0;
    const method = fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS");
    const pathArbitrary = fc.oneof(
      fc
        .constantFrom(...publicRoutes)
        .chain((p) =>
          fc.string({ maxLength: 40 }).map((q) => `${p}?${encodeURIComponent(q)}=${encodeURIComponent(q)}`),
        ),
      fc.constantFrom(
        "/v1/tasks/1",
        "/v1/tasks",
        "/v1/tasks/1/args/extra",
        "/v1/tasks/1/results/0/x",
        "/v1/../v1/health",
        "/v1/%2e%2e/v1/health",
        "/v1//health",
        "/V1/HEALTH",
        `/v1/${"a".repeat(10_000)}`,
      ),
      fc
        .array(fc.string({ maxLength: 12 }), { maxLength: 5 })
        .map((parts) => `/${parts.map(encodeURIComponent).join("/")}`),
    );
    await fc.assert(
      fc.asyncProperty(method, pathArbitrary, headerText, async (m, p, junk) => {
        runs++;
        const headers = { "x-crynux-timestamp": junk, "x-crynux-signature": junk, "content-type": junk };
        const body = m === "GET" ? undefined : junk;
        const response = await send({ method: m, path: p, headers, body });
        const url = new URL(`http://relay.test${p}`);
        if (m === "GET" && publicRoutes.includes(url.pathname)) {
          expect(response.status).toBe(200);
          return;
        }
        const error = await expectClientError(response, `${m} ${p}`);
        expect(error.code.length).toBeGreaterThan(0);
      }),
      { numRuns: RUNS * 3 },
    );
    await expectUnchangedAndAlive();
    recordTrial(context, {
      area: "Relay",
      fault:
        "every method on public, unknown, nested, traversal and 10 kB paths, with junk signature and content-type headers and bodies",
      runs,
      expected: "200 on the public routes; otherwise a 4xx JSON error; never 5xx",
    });
  });

  test("over a real socket: raw malformed requests, chunked floods, lying content-length → 4xx, server alive", async (context) => {
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
    });
    const { port } = server.address() as { port: number };
    let runs = 0;
    /** Sends raw bytes and returns the status of the first response line (0 if the socket closed without one). */
    const raw = (bytes: string | Uint8Array, endAfterWrite = true) =>
      new Promise<number>((resolve, reject) => {
        const socket = connect(port, "127.0.0.1");
        let received = "";
        socket.setTimeout(30_000, () => {
          socket.destroy();
          reject(new Error(`no answer to ${String(bytes).slice(0, 60)}`));
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
        socket.write(bytes, () => {
          if (endAfterWrite) socket.end();
        });
      });
    try {
      const argsPath = `/v1/tasks/${T.argsOpen}/args`;
      const ts = () => Math.floor(clock / 1000);
      const auth = async (method: string, p: string, body?: Uint8Array | string) => {
        const h = await signed(method, p, body);
        return `x-crynux-timestamp: ${h["x-crynux-timestamp"]}\r\nx-crynux-signature: ${h["x-crynux-signature"]}\r\n`;
      };
      const requests: { name: string; bytes: () => Promise<string | Uint8Array>; end?: boolean }[] = [
        {
          name: "literal ../ traversal",
          bytes: async () => "GET /v1/tasks/../../../etc/passwd/args HTTP/1.1\r\nHost: x\r\n\r\n",
        },
        {
          name: "literal ../ in the id",
          bytes: async () =>
            `GET /v1/tasks/..%2F..%2Fetc%2Fpasswd/args HTTP/1.1\r\nHost: x\r\n${await auth("GET", "/v1/tasks/..%2F..%2Fetc%2Fpasswd/args")}\r\n`,
        },
        {
          name: "absolute-form URL to another host",
          bytes: async () => "GET http://evil.example/v1/tasks/1/args HTTP/1.1\r\nHost: x\r\n\r\n",
        },
        {
          name: "non-numeric content-length",
          bytes: async () => `PUT ${argsPath} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}`,
        },
        {
          name: "negative content-length",
          bytes: async () => `PUT ${argsPath} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}`,
        },
        {
          name: "two content-lengths",
          bytes: async () =>
            `PUT ${argsPath} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`,
        },
        {
          name: "content-length and chunked",
          bytes: async () =>
            `PUT ${argsPath} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        },
        {
          name: "broken chunk size",
          bytes: async () =>
            `PUT ${argsPath} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n${await auth("PUT", argsPath)}\r\nzz\r\n{}\r\n0\r\n\r\n`,
        },
        {
          name: "header without colon",
          bytes: async () => "GET /v1/health HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n",
        },
        {
          name: "control character in a header",
          bytes: async () => `GET ${argsPath} HTTP/1.1\r\nHost: x\r\nx-crynux-timestamp: 1\u0001\r\n\r\n`,
        },
        {
          name: "64 kB header",
          bytes: async () =>
            `GET ${argsPath} HTTP/1.1\r\nHost: x\r\nx-crynux-signature: ${"a".repeat(65_536)}\r\n\r\n`,
        },
        {
          name: "100 kB URL",
          bytes: async () => `GET /v1/tasks/${"1".repeat(100_000)}/args HTTP/1.1\r\nHost: x\r\n\r\n`,
        },
        {
          name: "garbage request line",
          bytes: async () => "\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003\r\n\r\n",
        },
        {
          name: "declared content-length over the limit, tiny body",
          bytes: async () =>
            `PUT ${argsPath} HTTP/1.1\r\nHost: x\r\nContent-Length: ${LIMITS.maxArgsBytes + 1}\r\n${await auth("PUT", argsPath)}\r\n{}`,
          end: false,
        },
        {
          name: "chunked body over the limit without content-length",
          bytes: async () => {
            const chunk = `2000\r\n${" ".repeat(0x2000)}\r\n`;
            return `PUT ${argsPath} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nx-crynux-timestamp: ${ts()}\r\nx-crynux-signature: 0x${"11".repeat(65)}\r\n\r\n${chunk.repeat(4)}`;
          },
          end: false,
        },
      ];
      let answered = 0;
      for (const request of requests) {
        runs++;
        const status = await raw(await request.bytes(), request.end ?? true);
        // 0: the HTTP parser closed the connection without an answer, which is also not a crash.
        if (status !== 0) answered++;
        if (status !== 0) expect(status >= 400 && status < 500, `${request.name}: ${status}`).toBe(true);
        const health = await fetch(`http://127.0.0.1:${port}/v1/health`);
        expect(health.status, `alive after ${request.name}`).toBe(200);
      }
      // Most of them are answered (a few the HTTP parser drops without a word).
      expect(answered).toBeGreaterThan(requests.length / 2);
      // An endless chunked upload is cut at the limit rather than read to the end.
      runs++;
      let sent = 0;
      const endless = new ReadableStream<Uint8Array>({
        pull(controller) {
          sent += 16 * 1024;
          controller.enqueue(new Uint8Array(16 * 1024).fill(0x20));
        },
      });
      const response = await fetch(`http://127.0.0.1:${port}${argsPath}`, {
        method: "PUT",
        headers: await signed("PUT", argsPath, "x"),
        body: endless,
        duplex: "half",
      } as RequestInit).catch((error: unknown) => error);
      if (response instanceof Response) {
        expect(response.status).toBe(413);
      }
      expect(sent).toBeLessThan(64 * 1024 * 1024);
      expect((await fetch(`http://127.0.0.1:${port}/v1/health`)).status).toBe(200);
    } finally {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        if ("closeAllConnections" in server) server.closeAllConnections();
      });
    }
    await expectUnchangedAndAlive();
    recordTrial(context, {
      area: "Relay",
      fault:
        "raw HTTP over a socket: literal ../ paths, absolute-form URLs, bad/duplicate/negative content-length, CL+TE, broken chunks, header without colon, control characters, 64 kB header, 100 kB URL, TLS bytes, lying content-length, endless chunked upload",
      runs,
      expected:
        "4xx (or the connection closed by the HTTP parser); /v1/health still 200 after each; nothing stored",
    });
  });

  test("control: a valid upload does change the snapshot (the comparison can fail)", async () => {
    const urlPath = `/v1/tasks/${T.argsOpen}/args`;
    const body = JSON.stringify(GPT_ARGS);
    const response = await send({
      method: "PUT",
      path: urlPath,
      headers: await signed("PUT", urlPath, body),
      body,
    });
    expect(response.status).toBe(201);
    expect(await snapshot()).not.toEqual(baseline);
  });
});
