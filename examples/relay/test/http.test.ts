import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  createRelayClient,
  type RelayClient,
  RelayRequestError,
  relayDomain,
  signRelayRequest,
} from "@crynux/client";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { canonicalize, type GptResponse, gptResultHash, TaskType, taskHash } from "@crynux/tasks";
import type { Address } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { IN_MEMORY, type RelayConfigInput } from "../src/config.js";
import { type RunningRelay, startRelay } from "../src/serve.js";
import { Chain, encodePng, picture, sdImages, selectedNodes } from "./http-helpers.js";

const CREATOR = 4;
const STRANGER = 5;
const FLOODER = 6;
const RATE_LIMIT = 50;

const anvil = useAnvil({ accounts: 10, balanceEther: 100_000 });
let chain: Chain;
let relay: RunningRelay;
const relays: RunningRelay[] = [];
const tempDirs: string[] = [];

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), `relay-http-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

async function start(config: Partial<RelayConfigInput>): Promise<RunningRelay> {
  const started = await startRelay({
    rpcUrl: anvil().rpcUrl,
    taskContract: chain.task,
    port: 0,
    confirmations: 1,
    pollingIntervalMs: 50,
    rateLimit: { requests: RATE_LIMIT, windowMs: 60_000 },
    ...config,
  });
  relays.push(started);
  return started;
}

beforeAll(async () => {
  chain = await Chain.deploy(anvil());
  for (const i of [1, 2, 3]) await chain.join(i);
  relay = await start({ dataDir: IN_MEMORY, blobDir: await tempDir("blobs") });
}, 120_000);

afterAll(async () => {
  for (const running of relays) await running.stop();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

const accountOf = (who: number | Address) => {
  const entry =
    typeof who === "number"
      ? anvil().accounts[who]!
      : anvil().accounts.find((a) => a.address.toLowerCase() === who.toLowerCase())!;
  return privateKeyToAccount(entry.privateKey);
};
const clientOf = (who: number | Address, on: RunningRelay = relay): RelayClient =>
  createRelayClient({ url: on.url, account: accountOf(who), retry: 0 });

/** Mines the confirmation block and waits until `on` has indexed everything before it. */
async function confirmed(on: RunningRelay = relay): Promise<void> {
  await anvil().testClient.mine({ blocks: 1 });
  const target = Number((await anvil().publicClient.getBlockNumber()) - 1n);
  const client = createRelayClient({ url: on.url, retry: 0 });
  await vi.waitFor(
    async () => {
      const health = await client.health();
      if (health.indexedBlock < target) throw new Error(`indexed ${health.indexedBlock} < ${target}`);
    },
    { timeout: 30_000, interval: 50 },
  );
}

/** A request signed by hand, to send what the client never would. */
async function signedFetch(
  who: number | Address,
  method: string,
  urlPath: string,
  options: {
    body?: string | Uint8Array;
    signedBody?: string | Uint8Array;
    signedPath?: string;
    timestamp?: number;
    chainId?: number;
    contentType?: string;
    on?: RunningRelay;
  } = {},
): Promise<Response> {
  const domain = relayDomain({ chainId: options.chainId ?? anvil().chain.id, taskContract: chain.task });
  const { headers } = await signRelayRequest({
    account: accountOf(who),
    domain,
    method,
    path: options.signedPath ?? urlPath,
    body: options.signedBody ?? options.body,
    timestamp: options.timestamp,
  });
  return fetch((options.on ?? relay).url + urlPath, {
    method,
    headers: { ...headers, "content-type": options.contentType ?? "application/json" },
    body: options.body as BodyInit | undefined,
  });
}

async function errorOf(response: Response): Promise<{ status: number; code: string; field?: string }> {
  const body = (await response.json()) as { error: { code: string; message: string; field?: string } };
  expect(typeof body.error.message).toBe("string");
  return {
    status: response.status,
    code: body.error.code,
    ...(body.error.field ? { field: body.error.field } : {}),
  };
}

async function relayError(
  promise: Promise<unknown>,
): Promise<{ status: number; code: string; field?: string }> {
  const error = await promise.then(
    () => {
      throw new Error("expected the relay to refuse");
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RelayRequestError);
  const { status, code, field } = error as RelayRequestError;
  return { status, code, ...(field ? { field } : {}) };
}

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

// The tests below run in order on one chain: task A (GPT) is created, gets its arguments, is refused
// in every way, then succeeds; task B waits in the queue behind it; task C is an SD task.
const argsA = gptArgs("Hello, relay");
const responseA = gptResponse("Hello, human");
let taskA: { taskId: bigint; nodes: Address[] };
let resultNodeA: Address;
let taskB: bigint;
const argsB = gptArgs("Queued task");

describe("relay HTTP API on a real chain", () => {
  test("health, info and stats describe the relay and the network", async () => {
    const client = createRelayClient({ url: relay.url, retry: 0 });
    await confirmed();
    const info = await client.info();
    expect(info).toMatchObject({
      name: "Crynux Relay",
      version: "1",
      chainId: anvil().chain.id,
      confirmations: 1,
      limits: { maxArgsBytes: 1024 * 1024, maxResultBytes: 64 * 1024 * 1024 },
    });
    expect(info.taskContract.toLowerCase()).toBe(chain.task.toLowerCase());
    const health = await client.health();
    expect(health.status).toBe("ok");
    expect(health.headBlock).toBeGreaterThanOrEqual(health.indexedBlock);
    const stats = await client.getNetworkStats();
    expect(stats.nodes).toEqual({ total: 3, available: 3, busy: 0 });
    expect(stats.tasks).toEqual({ total: 0, queued: 0, running: 0 });
  });

  test("arguments: checks in order, stored once, read by the creator and the selected nodes", async () => {
    const created = await chain.createTask(CREATOR, TaskType.GPT, taskHash(argsA));
    taskA = { taskId: created.taskId, nodes: created.nodes };
    expect(taskA.nodes).toHaveLength(3);
    await confirmed();
    const creator = clientOf(CREATOR);

    expect(await relayError(clientOf(taskA.nodes[0]!).getTaskArgs(taskA.taskId))).toEqual({
      status: 404,
      code: "args_not_found",
    });
    expect(await relayError(clientOf(STRANGER).uploadTaskArgs(taskA.taskId, argsA))).toEqual({
      status: 403,
      code: "forbidden",
    });
    const invalid = { ...argsA, messages: [{ role: "robot", content: "beep" }] };
    expect(await relayError(creator.uploadTaskArgs(taskA.taskId, invalid as never))).toEqual({
      status: 422,
      code: "invalid_args",
      field: "messages.0.role",
    });
    expect(await relayError(creator.uploadTaskArgs(taskA.taskId, gptArgs("Other args")))).toEqual({
      status: 422,
      code: "hash_mismatch",
    });
    expect(await relayError(creator.uploadTaskArgs(999n, argsA))).toEqual({
      status: 404,
      code: "task_not_found",
    });

    const first = await signedFetch(CREATOR, "PUT", `/v1/tasks/${taskA.taskId}/args`, {
      body: canonicalize(argsA),
    });
    expect(first.status).toBe(201);
    expect(await first.json()).toEqual({
      taskId: String(taskA.taskId),
      taskHash: taskHash(argsA),
      stored: true,
    });
    // Same arguments again, even with another key order: same canonical JSON, nothing overwritten.
    const again = await signedFetch(CREATOR, "PUT", `/v1/tasks/${taskA.taskId}/args`, {
      body: JSON.stringify({
        generation_config: argsA.generation_config,
        messages: argsA.messages,
        model: argsA.model,
      }),
    });
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ stored: false });
    expect(await creator.uploadTaskArgs(taskA.taskId, argsA)).toEqual({
      taskId: taskA.taskId,
      taskHash: taskHash(argsA),
      stored: false,
    });

    for (const who of [...taskA.nodes, chain.address(CREATOR)]) {
      const got = await clientOf(who).getTaskArgs(taskA.taskId);
      expect(got.taskType).toBe(TaskType.GPT);
      expect(got.taskHash).toBe(taskHash(argsA));
      expect(got.rawArgs).toEqual(argsA);
    }
    expect(await relayError(clientOf(STRANGER).getTaskArgs(taskA.taskId))).toEqual({
      status: 403,
      code: "forbidden",
    });
  });

  test("bad task ids and unknown routes", async () => {
    for (const id of ["abc", "01", "-1", `1${"0".repeat(78)}`]) {
      expect(await errorOf(await signedFetch(CREATOR, "GET", `/v1/tasks/${id}/args`))).toEqual({
        status: 400,
        code: "invalid_task_id",
        field: "taskId",
      });
    }
    expect(await errorOf(await fetch(`${relay.url}/v1/nothing`))).toEqual({ status: 404, code: "not_found" });
  });

  test("signatures: missing, tampered, expired, from someone else, for another domain or path", async () => {
    const argsPath = `/v1/tasks/${taskA.taskId}/args`;
    const node = taskA.nodes[0]!;
    expect((await signedFetch(node, "GET", argsPath)).status).toBe(200);

    expect(await errorOf(await fetch(relay.url + argsPath))).toEqual({ status: 401, code: "unauthorized" });

    const { headers } = await signRelayRequest({
      account: accountOf(node),
      domain: relayDomain({ chainId: anvil().chain.id, taskContract: chain.task }),
      method: "GET",
      path: argsPath,
    });
    const signature = headers["x-crynux-signature"]!;
    const flipped = `${signature.slice(0, 10)}${signature[10] === "0" ? "1" : "0"}${signature.slice(11)}`;
    const tampered = await fetch(relay.url + argsPath, {
      headers: { ...headers, "x-crynux-signature": flipped },
    });
    // Another r recovers another address (403) or none at all (401); never the node.
    expect([401, 403]).toContain(tampered.status);
    const malformed = await fetch(relay.url + argsPath, {
      headers: { ...headers, "x-crynux-signature": "0x1234" },
    });
    expect(await errorOf(malformed)).toEqual({ status: 401, code: "unauthorized" });

    const now = Math.floor(Date.now() / 1000);
    for (const timestamp of [now - 120, now + 120]) {
      expect(await errorOf(await signedFetch(node, "GET", argsPath, { timestamp }))).toEqual({
        status: 401,
        code: "unauthorized",
      });
    }
    expect(await errorOf(await signedFetch(STRANGER, "GET", argsPath))).toEqual({
      status: 403,
      code: "forbidden",
    });
    expect(await errorOf(await signedFetch(node, "GET", argsPath, { chainId: 1 }))).toEqual({
      status: 403,
      code: "forbidden",
    });
    expect(
      await errorOf(await signedFetch(node, "GET", argsPath, { signedPath: "/v1/tasks/999/args" })),
    ).toEqual({
      status: 403,
      code: "forbidden",
    });
    // The creator signs one body and another is sent: the signature recovers a stranger.
    const swapped = await signedFetch(CREATOR, "PUT", argsPath, {
      body: canonicalize(argsA),
      signedBody: canonicalize(gptArgs("what the creator signed")),
    });
    expect(await errorOf(swapped)).toEqual({ status: 403, code: "forbidden" });
  });

  test("malformed JSON is 400, an oversized body 413 (with or without content-length)", async () => {
    const argsPath = `/v1/tasks/${taskA.taskId}/args`;
    expect(
      await errorOf(await signedFetch(CREATOR, "PUT", argsPath, { body: '{"model": "o/r:Q4_0",' })),
    ).toEqual({
      status: 400,
      code: "invalid_json",
    });
    const big = new Uint8Array(1024 * 1024 + 1).fill(0x20);
    expect(await errorOf(await fetch(relay.url + argsPath, { method: "PUT", body: big }))).toEqual({
      status: 413,
      code: "payload_too_large",
    });
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 5; i++) controller.enqueue(new Uint8Array(256 * 1024).fill(0x20));
        controller.close();
      },
    });
    const streamed = await fetch(relay.url + argsPath, {
      method: "PUT",
      body: chunked,
      duplex: "half",
    } as RequestInit);
    expect(await errorOf(streamed)).toEqual({ status: 413, code: "payload_too_large" });
  });

  test("rate limit: 429 with retry-after once an address has spent its tokens", async () => {
    const argsPath = `/v1/tasks/${taskA.taskId}/args`;
    let limited: Response | undefined;
    for (let i = 0; i < RATE_LIMIT * 4 && !limited; i++) {
      const response = await signedFetch(FLOODER, "GET", argsPath);
      if (response.status === 429) limited = response;
      else expect(response.status).toBe(403);
    }
    expect(limited).toBeDefined();
    expect(Number(limited!.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await errorOf(limited!)).toEqual({ status: 429, code: "rate_limited" });
    // Other addresses have their own buckets.
    expect((await signedFetch(taskA.nodes[1]!, "GET", argsPath)).status).toBe(200);
  });

  test("a queued task: arguments can be uploaded, not read (409 task_not_started)", async () => {
    const created = await chain.createTask(CREATOR, TaskType.GPT, taskHash(argsB));
    taskB = created.taskId;
    expect(created.nodes).toEqual([]);
    await confirmed();
    const creator = clientOf(CREATOR);
    expect(await creator.uploadTaskArgs(taskB, argsB)).toMatchObject({ stored: true });
    expect(await relayError(creator.getTaskArgs(taskB))).toEqual({ status: 409, code: "task_not_started" });
  });

  test("GPT results: only after success, only from the result node, only the disclosed response", async () => {
    const { taskId, nodes } = taskA;
    const resultNode = clientOf(nodes[0]!);
    expect(await relayError(resultNode.uploadResults(taskId, { response: responseA }))).toEqual({
      status: 409,
      code: "task_not_success",
    });
    ({ resultNode: resultNodeA } = await chain.succeed(taskId, nodes, gptResultHash(responseA)));
    expect(resultNodeA).toBe(nodes[0]);
    await confirmed();

    expect(await relayError(clientOf(nodes[1]!).uploadResults(taskId, { response: responseA }))).toEqual({
      status: 403,
      code: "forbidden",
    });
    expect(
      await relayError(resultNode.uploadResults(taskId, { response: gptResponse("Hello, robot") })),
    ).toEqual({
      status: 422,
      code: "result_mismatch",
    });
    const inconsistent = { ...responseA, usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 9 } };
    expect(
      await errorOf(
        await signedFetch(nodes[0]!, "PUT", `/v1/tasks/${taskId}/results`, {
          body: JSON.stringify(inconsistent),
        }),
      ),
    ).toMatchObject({ status: 422, code: "invalid_result" });
    expect(
      await errorOf(await signedFetch(nodes[0]!, "PUT", `/v1/tasks/${taskId}/results`, { body: "not json" })),
    ).toEqual({ status: 422, code: "invalid_result" });
    const creator = clientOf(CREATOR);
    expect(await relayError(creator.getResult(taskId))).toEqual({ status: 404, code: "results_not_found" });

    expect(await resultNode.uploadResults(taskId, { response: responseA })).toEqual({ taskId, stored: true });
    expect(await resultNode.uploadResults(taskId, { response: responseA })).toEqual({
      taskId,
      stored: false,
    });
    expect(await creator.getResult(taskId)).toEqual({ taskId, taskType: TaskType.GPT, response: responseA });
    expect(await relayError(clientOf(nodes[0]!).getResult(taskId))).toEqual({
      status: 403,
      code: "forbidden",
    });

    // Reporting the upload frees the nodes, and the queued task B starts on them.
    await chain.reportUploaded(taskId, resultNodeA);
    await confirmed();
    const nodesB = await selectedNodes(chain, taskB);
    const got = await clientOf(nodesB[0]!).getTaskArgs(taskB);
    expect(got.rawArgs).toEqual(argsB);
    const succeededB = await chain.succeed(taskB, nodesB, gptResultHash(gptResponse("B")));
    await chain.reportUploaded(taskB, succeededB.resultNode);
  });

  test("SD results: PNGs whose pHashes are the on-chain result; an altered image is refused", async () => {
    const sdArgs = {
      base_model: "stabilityai/sdxl-turbo",
      prompt: "a lighthouse",
      task_config: { num_images: 2 },
    };
    const { images, result } = sdImages(2, 1);
    const { taskId, nodes } = await chain.createTask(CREATOR, TaskType.SD, taskHash(sdArgs));
    await confirmed();
    await clientOf(CREATOR).uploadTaskArgs(taskId, sdArgs);
    const { resultNode } = await chain.succeed(taskId, nodes, result);
    await confirmed();
    const uploader = clientOf(resultNode);

    const altered = encodePng(picture(96, 96, 40), 96, 96);
    expect(await relayError(uploader.uploadResults(taskId, { images: [images[0]!, altered] }))).toEqual({
      status: 422,
      code: "result_mismatch",
      field: "1",
    });
    const notPng = new TextEncoder().encode("GIF89a, not a PNG");
    expect(await relayError(uploader.uploadResults(taskId, { images: [images[0]!, notPng] }))).toEqual({
      status: 422,
      code: "invalid_result",
      field: "1",
    });
    expect(await relayError(uploader.uploadResults(taskId, { images: [images[0]!] }))).toEqual({
      status: 422,
      code: "invalid_result",
    });
    expect(
      await errorOf(await signedFetch(resultNode, "PUT", `/v1/tasks/${taskId}/results`, { body: "{}" })),
    ).toEqual({ status: 422, code: "invalid_result" });
    expect(await relayError(clientOf(CREATOR).getResult(taskId))).toEqual({
      status: 404,
      code: "results_not_found",
    });

    expect(await uploader.uploadResults(taskId, { images })).toEqual({ taskId, stored: true });
    expect(await uploader.uploadResults(taskId, { images })).toEqual({ taskId, stored: false });
    const downloaded = await clientOf(CREATOR).getResult(taskId);
    expect(downloaded.taskType).toBe(TaskType.SD);
    if (downloaded.taskType === TaskType.SD) {
      expect(downloaded.images.map((bytes) => Buffer.from(bytes).toString("hex"))).toEqual(
        images.map((bytes) => Buffer.from(bytes).toString("hex")),
      );
    }
    const image = await signedFetch(CREATOR, "GET", `/v1/tasks/${taskId}/results/1`);
    expect(image.headers.get("content-type")).toBe("image/png");
    expect(new Uint8Array(await image.arrayBuffer())).toEqual(images[1]);
    expect(await errorOf(await signedFetch(CREATOR, "GET", `/v1/tasks/${taskId}/results/2`))).toEqual({
      status: 404,
      code: "results_not_found",
    });
    expect(await errorOf(await signedFetch(CREATOR, "GET", `/v1/tasks/${taskId}/results/x`))).toEqual({
      status: 400,
      code: "invalid_index",
      field: "index",
    });
    await chain.reportUploaded(taskId, resultNode);
  });

  test("a relay restarted on the same PGlite directory and blob directory keeps everything", async () => {
    const dataDir = await tempDir("db");
    const blobDir = await tempDir("blobs");
    const sdArgs = {
      base_model: "stabilityai/sdxl-turbo",
      prompt: "restart",
      task_config: { num_images: 1 },
    };
    const { images, result } = sdImages(1, 7);
    const { taskId, nodes } = await chain.createTask(CREATOR, TaskType.SD, taskHash(sdArgs));
    const { resultNode } = await chain.succeed(taskId, nodes, result);

    const first = await start({ dataDir, blobDir });
    await confirmed(first);
    expect(await clientOf(CREATOR, first).uploadTaskArgs(taskId, sdArgs)).toMatchObject({ stored: true });
    expect(await clientOf(resultNode, first).uploadResults(taskId, { images })).toMatchObject({
      stored: true,
    });
    // Arguments of an older task, indexed from the start of the chain by this fresh relay.
    expect(await clientOf(CREATOR, first).uploadTaskArgs(taskA.taskId, argsA)).toMatchObject({
      stored: true,
    });
    const indexedBefore = (await createRelayClient({ url: first.url }).health()).indexedBlock;
    await first.stop();

    const second = await start({ dataDir, blobDir });
    await confirmed(second);
    expect((await createRelayClient({ url: second.url }).health()).indexedBlock).toBeGreaterThan(
      indexedBefore,
    );
    expect((await clientOf(taskA.nodes[2]!, second).getTaskArgs(taskA.taskId)).rawArgs).toEqual(argsA);
    expect((await clientOf(nodes[1]!, second).getTaskArgs(taskId)).rawArgs).toEqual(sdArgs);
    const downloaded = await clientOf(CREATOR, second).getResult(taskId);
    expect(downloaded.taskType === TaskType.SD && downloaded.images).toEqual(images);
    expect(await clientOf(CREATOR, second).uploadTaskArgs(taskId, sdArgs)).toMatchObject({ stored: false });
  });
});
