import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { RelayTaskArgs } from "@crynux/client";
import { type CrynuxDeployment, nodeAbi, taskAbi } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { IN_MEMORY as RELAY_IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import { type GptTaskArgs, pngPHash, sdResultFromPHashes, TaskType, taskHash } from "@crynux/tasks";
import OpenAI, {
  APIConnectionError,
  APIError,
  AuthenticationError,
  BadRequestError,
  ConflictError,
  NotFoundError,
  RateLimitError,
} from "openai";
import { type Address, keccak256, parseEther, toHex } from "viem";
import { generatePrivateKey } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { type BridgeConfigInput, IN_MEMORY } from "../src/config.js";
import { type RunningBridge, startBridge } from "../src/serve.js";
import { Chain, echoResponse, type NodeWatcher, sdImages, startNodeWatcher } from "./helpers.js";

const NODES = [1, 2, 3];
const WALLET = 4;
const MAIN_KEY = "sk-test-main-0123456789abcdef";
const LIMITED_KEY = "sk-test-limited-0123456789abcdef";
const STINGY_KEY = "sk-test-stingy-0123456789abcdef";
const THROTTLED_KEY = "sk-test-throttled-0123456789abcdef";

const anvil = useAnvil({ accounts: 8, balanceEther: 100_000 });
let chain: Chain;
let contracts: CrynuxDeployment;
let relay: RunningRelay;
let watcher: NodeWatcher;
let bridge: RunningBridge;
let blobDir: string;
let dataDir: string;

// The restart test holds its task at the nodes until the bridge has been restarted.
let releaseHeld: () => void = () => {};
const released = new Promise<void>((resolve) => {
  releaseHeld = resolve;
});
let reportHeld: (taskId: bigint) => void = () => {};
const held = new Promise<bigint>((resolve) => {
  reportHeld = resolve;
});
const gate = async (fetched: RelayTaskArgs) => {
  if (fetched.taskType !== TaskType.GPT) return;
  const last = fetched.args.messages.at(-1)?.content;
  if (typeof last === "string" && last.includes("restart")) {
    reportHeld(fetched.taskId);
    await released;
  }
};

const bridgeConfig = (overrides: Partial<BridgeConfigInput> = {}): BridgeConfigInput => ({
  host: "127.0.0.1",
  port: 0,
  rpcUrl: anvil().rpcUrl,
  // task waits and receipts follow new heads pushed over anvil's WebSocket (polls stay as the fallback)
  webSocketUrl: anvil().rpcUrl.replace(/^http/, "ws"),
  relayUrl: relay.url,
  privateKey: anvil().accounts[WALLET]!.privateKey,
  contracts,
  dataDir,
  pollingIntervalMs: 100,
  relayWaitMs: 60_000,
  taskTimeoutMs: 180_000,
  models: {
    "echo-chat": { type: "gpt", model: "o/r:Q4_0", defaultMaxTokens: 32, maxTokens: 512 },
    "echo-sd": { type: "sd", baseModel: "stabilityai/sdxl-turbo", steps: 1 },
  },
  apiKeys: [
    { name: "main", key: MAIN_KEY },
    { name: "limited", key: LIMITED_KEY, quota: { tasksPerDay: 1 } },
    { name: "stingy", key: STINGY_KEY, quota: { spendPerDayWei: 1 } },
    { name: "throttled", key: THROTTLED_KEY, rateLimit: { requests: 2, windowMs: 3_600_000 } },
  ],
  fees: { maxFeeWei: parseEther("5") },
  ...overrides,
});

const openai = (apiKey = MAIN_KEY, url = bridge.url) =>
  new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 180_000 });

const totalTasks = () =>
  anvil().publicClient.readContract({ address: chain.task, abi: taskAbi, functionName: "totalTasks" });

const wallet = () => anvil().accounts[WALLET]!.address;

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
  blobDir = await mkdtemp(path.join(tmpdir(), "bridge-test-blobs-"));
  dataDir = await mkdtemp(path.join(tmpdir(), "bridge-test-db-"));
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
  watcher = startNodeWatcher({ anvil: anvil(), chain, relayUrl: relay.url, gate });
  bridge = await startBridge(bridgeConfig(), { onTaskError: () => {} });
}, 180_000);

afterAll(async () => {
  releaseHeld();
  await watcher?.stop();
  await bridge?.stop();
  await relay?.stop();
  for (const dir of [blobDir, dataDir]) if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

describe("bridge: OpenAI API over Crynux tasks (anvil, relay, 3 test-driven nodes)", {
  timeout: 240_000,
}, () => {
  test("models.list: the configured models with their Crynux task", async () => {
    const ids: string[] = [];
    const models = [];
    for await (const model of openai().models.list()) {
      ids.push(model.id);
      models.push(model);
    }
    expect(ids).toEqual(["echo-chat", "echo-sd"]);
    expect(models[0]).toMatchObject({
      object: "model",
      owned_by: "crynux",
      crynux: { type: "gpt", task_type: 1, model: "o/r:Q4_0" },
    });
    expect(models[1]).toMatchObject({ crynux: { type: "sd", base_model: "stabilityai/sdxl-turbo" } });
    expect(await openai().models.retrieve("echo-chat")).toMatchObject({ id: "echo-chat" });
  });

  test("chat.completions.create: one paid task, the nodes' response in OpenAI's shape", async () => {
    const before = await totalTasks();
    const { data: completion, response } = await openai()
      .chat.completions.create({
        model: "echo-chat",
        messages: [
          { role: "system", content: "You repeat." },
          { role: "user", content: "Hello bridge" },
        ],
      })
      .withResponse();
    expect(completion.object).toBe("chat.completion");
    expect(completion.model).toBe("echo-chat");
    expect(completion.choices).toEqual([
      {
        index: 0,
        message: { role: "assistant", content: "echo: Hello bridge", refusal: null },
        logprobs: null,
        finish_reason: "stop",
      },
    ]);
    expect(completion.usage).toEqual({ prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 });

    const taskId = BigInt(response.headers.get("x-crynux-task-id")!);
    expect(taskId).toBe(before + 1n);
    expect(completion.id).toBe(`chatcmpl-${taskId}`);
    const task = await bridge.client.getTask({ taskId });
    expect(task).toMatchObject({ creator: wallet(), taskType: TaskType.GPT, state: "uploaded" });
    const record = (await bridge.store.all()).find((r) => r.taskId === taskId)!;
    expect(record).toMatchObject({ state: "succeeded", kind: "chat", apiKey: "main", fee: task.fee });
    expect(task.taskHash).toBe(taskHash(record.args));
    expect(task.fee).toBeGreaterThan(0n);
    expect(task.fee).toBeLessThanOrEqual(parseEther("5"));
  });

  test("sampling parameters map to the GPT task: n, max_completion_tokens, temperature, top_p, seed, stop", async () => {
    const before = await totalTasks();
    const completion = await openai().chat.completions.create({
      model: "echo-chat",
      messages: [{ role: "user", content: "one two three four five" }],
      n: 2,
      max_completion_tokens: 3,
      max_tokens: 100,
      temperature: 0.7,
      top_p: 0.9,
      seed: 42,
      stop: ["END"],
    });
    expect(completion.choices.map((c) => [c.index, c.message.content, c.finish_reason])).toEqual([
      [0, "echo: one two", "length"],
      [1, "echo: one two", "length"],
    ]);
    const record = (await bridge.store.all()).find((r) => r.taskId === before + 1n)!;
    expect(record.args).toMatchObject({
      model: "o/r:Q4_0",
      seed: 42,
      generation_config: {
        max_new_tokens: 3,
        do_sample: true,
        temperature: 0.7,
        top_p: 0.9,
        stop_strings: ["END"],
        num_return_sequences: 2,
      },
    });
    // Work units cover both sequences.
    expect((await bridge.client.getTask({ taskId: before + 1n })).cap).toBe(6n);
  });

  test("chat.completions.create with stream: true: the finished text as chat.completion.chunk events", async () => {
    const stream = await openai().chat.completions.create({
      model: "echo-chat",
      messages: [
        { role: "user", content: "a streamed answer that is longer than one slice of sixteen characters" },
      ],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    const finishes: (string | null)[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      expect(chunk.object).toBe("chat.completion.chunk");
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? "";
        if (choice.finish_reason) finishes.push(choice.finish_reason);
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe("echo: a streamed answer that is longer than one slice of sixteen characters");
    expect(chunks).toBeGreaterThan(4);
    expect(finishes).toEqual(["stop"]);
    expect(usage).toMatchObject({ completion_tokens: 13 });
  });

  test("completions.create, plain and streamed: the prompt as one user message", async () => {
    const completion = await openai().completions.create({
      model: "echo-chat",
      prompt: "Complete me",
      max_tokens: 8,
    });
    expect(completion.object).toBe("text_completion");
    expect(completion.choices[0]).toMatchObject({
      index: 0,
      text: "echo: Complete me",
      finish_reason: "stop",
    });

    const stream = await openai().completions.create({
      model: "echo-chat",
      prompt: "Stream me please",
      stream: true,
    });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text).toBe("echo: Stream me please");
  });

  test("images.generate: an SD task, the nodes' PNGs as b64_json", async () => {
    const before = await totalTasks();
    const result = await openai().images.generate({
      model: "echo-sd",
      prompt: "a lighthouse at dusk",
      n: 2,
      size: "256x256",
      response_format: "b64_json",
    });
    const images = result.data!.map((image) => new Uint8Array(Buffer.from(image.b64_json!, "base64")));
    const expected = sdImages(2, 0);
    expect(images).toEqual(expected.images);
    expect(sdResultFromPHashes(images.map((image) => pngPHash(image)))).toBe(expected.result);
    const task = await bridge.client.getTask({ taskId: before + 1n });
    expect(task).toMatchObject({ taskType: TaskType.SD, result: expected.result, creator: wallet() });
    const record = (await bridge.store.all()).find((r) => r.taskId === before + 1n)!;
    expect(record.args).toMatchObject({
      base_model: "stabilityai/sdxl-turbo",
      prompt: "a lighthouse at dusk",
      task_config: { num_images: 2, image_width: 256, image_height: 256, steps: 1 },
    });
  });

  test("errors in OpenAI's format: 401 bad key, 404 unknown model, 400 naming the param; nothing is paid", async () => {
    const before = await totalTasks();
    const messages = [{ role: "user" as const, content: "x" }];

    const unauthorized = await openai("sk-wrong-key-000000000000")
      .chat.completions.create({ model: "echo-chat", messages })
      .catch((e: unknown) => e);
    expect(unauthorized).toBeInstanceOf(AuthenticationError);
    expect(unauthorized).toMatchObject({
      status: 401,
      code: "invalid_api_key",
      type: "invalid_request_error",
    });

    const unknown = await openai()
      .chat.completions.create({ model: "gpt-17", messages })
      .catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(NotFoundError);
    expect(unknown).toMatchObject({ status: 404, code: "model_not_found", param: "model" });
    expect((unknown as APIError).message).toContain("gpt-17");

    const cases: [Record<string, unknown>, string][] = [
      [{ temperature: 5 }, "temperature"],
      [{ messages: [] }, "messages"],
      [{ messages: [{ role: "user", content: 7 }] }, "messages[0].content"],
      [{ n: 0 }, "n"],
      [{ max_tokens: 100_000 }, "max_tokens"],
      [{ model: "echo-sd" }, "model"],
    ];
    for (const [change, param] of cases) {
      const bad = await openai()
        .chat.completions.create({ model: "echo-chat", messages, ...change } as never)
        .catch((e: unknown) => e);
      expect(bad, param).toBeInstanceOf(BadRequestError);
      expect((bad as APIError).param, JSON.stringify(change)).toBe(param);
      expect((bad as APIError).type).toBe("invalid_request_error");
    }
    const badImage = await openai()
      .images.generate({ model: "echo-sd", prompt: "x", response_format: "url" })
      .catch((e: unknown) => e);
    expect(badImage).toBeInstanceOf(BadRequestError);
    expect((badImage as APIError).param).toBe("response_format");
    const badSize = await openai()
      .images.generate({ model: "echo-sd", prompt: "x", size: "100x100" as never })
      .catch((e: unknown) => e);
    expect((badSize as APIError).param).toBe("size");

    // The raw body as OpenAI writes errors.
    const raw = await fetch(`${bridge.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${MAIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "echo-chat", messages, top_p: 3 }),
    });
    expect(raw.status).toBe(400);
    expect(await raw.json()).toEqual({
      error: {
        message: expect.stringContaining("top_p"),
        type: "invalid_request_error",
        param: "top_p",
        code: "invalid_value",
      },
    });

    // A body streamed without a content-length, and without end, is cut off at the limit (2 MiB by
    // default): a bridge that read it whole would never answer.
    const chunk = new TextEncoder().encode(" ".repeat(64 * 1024));
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(chunk);
      },
    });
    const streamed = await fetch(`${bridge.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${MAIN_KEY}`, "content-type": "application/json" },
      body: endless,
      duplex: "half",
    } as RequestInit);
    expect(streamed.status).toBe(413);
    expect(((await streamed.json()) as { error: { code: string } }).error.code).toBe("request_too_large");
    expect(await totalTasks()).toBe(before);
  });

  test("quota: a key allowed 1 task per day gets 429 insufficient_quota for the second", async () => {
    const client = openai(LIMITED_KEY);
    const first = await client.chat.completions.create({
      model: "echo-chat",
      messages: [{ role: "user", content: "my only task" }],
    });
    expect(first.choices[0]!.message.content).toBe("echo: my only task");
    const before = await totalTasks();
    const second = await client.chat.completions
      .create({ model: "echo-chat", messages: [{ role: "user", content: "one more" }] })
      .catch((e: unknown) => e);
    expect(second).toBeInstanceOf(RateLimitError);
    expect(second).toMatchObject({ status: 429, code: "insufficient_quota", type: "insufficient_quota" });

    // A spend quota below any fee refuses the first task.
    const stingy = await openai(STINGY_KEY)
      .chat.completions.create({ model: "echo-chat", messages: [{ role: "user", content: "cheap?" }] })
      .catch((e: unknown) => e);
    expect(stingy).toBeInstanceOf(RateLimitError);
    expect(stingy).toMatchObject({ code: "insufficient_quota" });
    expect((stingy as APIError).message).toContain("wei");
    expect(await totalTasks()).toBe(before);
  });

  test("rate limit: requests beyond a key's limit get 429 rate_limit_exceeded with retry-after", async () => {
    const client = openai(THROTTLED_KEY);
    await client.models.list();
    await client.models.list();
    const limited = await client.models.list().catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(RateLimitError);
    expect(limited).toMatchObject({ status: 429, code: "rate_limit_exceeded", type: "rate_limit_error" });
    expect(Number((limited as APIError).headers?.get("retry-after"))).toBeGreaterThan(0);
    // Other keys are not affected.
    await openai().models.list();
  });

  test("a task the nodes do not agree on: 502 with the reason, as an error event when streaming", async () => {
    const before = await totalTasks();
    const failed = await openai()
      .chat.completions.create({
        model: "echo-chat",
        messages: [{ role: "user", content: "please disagree" }],
      })
      .catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(APIError);
    expect(failed).toMatchObject({ status: 502, code: "task_aborted", type: "api_error" });
    expect((failed as APIError).message).toContain("results mismatch");
    expect((await bridge.client.getTask({ taskId: before + 1n })).state).toBe("aborted");

    const stream = await openai().chat.completions.create({
      model: "echo-chat",
      messages: [{ role: "user", content: "stream and disagree" }],
      stream: true,
    });
    const streamed = await (async () => {
      for await (const _ of stream) {
        // no chunk arrives before the error
      }
    })().catch((e: unknown) => e);
    expect(streamed).toBeInstanceOf(APIError);
    expect((streamed as APIError).message).toContain("results mismatch");
    expect(await bridge.store.get("main", (await bridge.store.all()).at(-1)!.requestId)).toMatchObject({
      state: "failed",
      taskId: before + 2n,
      error: { code: "task_aborted" },
    });
  });

  test("a wallet too poor for the fee: 402 with a clear error, nothing sent", async () => {
    const poor = await startBridge(bridgeConfig({ privateKey: generatePrivateKey(), dataDir: IN_MEMORY }), {
      onTaskError: () => {},
    });
    try {
      const before = await totalTasks();
      const refused = await openai(MAIN_KEY, poor.url)
        .chat.completions.create({ model: "echo-chat", messages: [{ role: "user", content: "pay me" }] })
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(APIError);
      expect(refused).toMatchObject({ status: 402, code: "wallet_balance_low", type: "insufficient_funds" });
      expect((refused as APIError).message).toContain(poor.client.account!.address);
      expect(await totalTasks()).toBe(before);
      expect(await poor.store.all()).toEqual([]);
    } finally {
      await poor.stop();
    }
  });

  test("Idempotency-Key: a repeated request gets the same task's answer; reusing it for another request is 409", async () => {
    const before = await totalTasks();
    const body = { model: "echo-chat", messages: [{ role: "user" as const, content: "only once" }] };
    const options = { headers: { "Idempotency-Key": "same-request-1" } };
    const [a, b] = await Promise.all([
      openai().chat.completions.create(body, options),
      openai().chat.completions.create(body, options),
    ]);
    const c = await openai().chat.completions.create(body, options);
    expect(a.id).toBe(`chatcmpl-${before + 1n}`);
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    expect(await totalTasks()).toBe(before + 1n);
    const conflict = await openai()
      .chat.completions.create({ ...body, messages: [{ role: "user", content: "something else" }] }, options)
      .catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(ConflictError);
    expect(conflict).toMatchObject({ code: "idempotency_key_reused" });
  });

  test("Crynux task API: raw args in, status and result out", async () => {
    const headers = {
      authorization: `Bearer ${MAIN_KEY}`,
      "content-type": "application/json",
      "idempotency-key": "native-1",
    };
    const args = {
      model: "o/r:Q4_0",
      messages: [{ role: "user", content: "native call" }],
      generation_config: { max_new_tokens: 10 },
      seed: 3,
    };
    const before = await totalTasks();
    const created = await fetch(`${bridge.url}/v1/crynux/tasks`, {
      method: "POST",
      headers,
      body: JSON.stringify({ task_type: 1, args }),
    });
    expect(created.status).toBe(202);
    const view = (await created.json()) as { id: string; status: string; task_id: string; fee: string };
    expect(view).toMatchObject({ id: "native-1", status: "paid", task_id: String(before + 1n) });

    const again = await fetch(`${bridge.url}/v1/crynux/tasks`, {
      method: "POST",
      headers,
      body: JSON.stringify({ task_type: 1, args }),
    });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { task_id: string }).task_id).toBe(view.task_id);

    await vi.waitFor(
      async () => {
        const status = await fetch(`${bridge.url}/v1/crynux/tasks/native-1`, { headers });
        expect(((await status.json()) as { status: string }).status).toBe("succeeded");
      },
      { timeout: 120_000, interval: 200 },
    );
    const result = await fetch(`${bridge.url}/v1/crynux/tasks/native-1/result`, { headers });
    expect(await result.json()).toEqual({
      task_type: 1,
      response: echoResponse({
        ...args,
        dtype: "auto",
        tools: null,
        template_args: null,
        quantize_bits: null,
      } as GptTaskArgs),
    });
    expect(await totalTasks()).toBe(before + 1n);

    const bad = await fetch(`${bridge.url}/v1/crynux/tasks`, {
      method: "POST",
      headers: { ...headers, "idempotency-key": "native-bad" },
      body: JSON.stringify({ task_type: 1, args: { ...args, messages: [] } }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe("args.messages");
    const missing = await fetch(`${bridge.url}/v1/crynux/tasks/nope`, { headers });
    expect(missing.status).toBe(404);
  });

  test("restart: a task paid before the stop is resumed, and the retried request gets its result", async () => {
    const before = await totalTasks();
    const body = { model: "echo-chat", messages: [{ role: "user" as const, content: "restart survives" }] };
    const options = { headers: { "Idempotency-Key": "restart-1" } };
    const first = openai()
      .chat.completions.create(body, options)
      .catch((e: unknown) => e);

    // The nodes hold the task once its arguments are on the relay: it is paid, not finished.
    const taskId = await held;
    expect(taskId).toBe(before + 1n);
    const record = await bridge.store.get("main", "restart-1");
    expect(record).toMatchObject({ state: "paid", taskId });
    await bridge.stop();
    expect(await first).toBeInstanceOf(APIConnectionError);

    bridge = await startBridge(bridgeConfig(), { onTaskError: () => {} });
    releaseHeld();
    // The new bridge follows the paid task on its own, before anyone asks again.
    await vi.waitFor(
      async () => expect(await bridge.store.get("main", "restart-1")).toMatchObject({ state: "succeeded" }),
      { timeout: 120_000, interval: 100 },
    );
    const completion = await openai().chat.completions.create(body, options);
    expect(completion.choices[0]!.message.content).toBe("echo: restart survives");
    expect(completion.id).toBe(`chatcmpl-${taskId}`);
    expect(await totalTasks()).toBe(before + 1n);
    expect(await bridge.store.get("main", "restart-1")).toMatchObject({ state: "succeeded", taskId });
    expect(watcher.errors).toEqual([]);
  });

  test("restart: a payment whose receipt was never recorded is found on-chain; an unpaid record is dropped", async () => {
    const args = {
      model: "o/r:Q4_0",
      messages: [{ role: "user" as const, content: "lost receipt" }],
      generation_config: { max_new_tokens: 8 },
    };
    const base = {
      apiKey: "main",
      kind: "native" as const,
      model: null,
      fingerprint: "0x00",
      taskType: TaskType.GPT,
      args,
      vramLimit: 0n,
      fee: parseEther("1"),
      fromBlock: await anvil().publicClient.getBlockNumber(),
      createdAt: Date.now(),
    };
    // As if the bridge died after sending createTask and before recording its receipt.
    const lost = keccak256(toHex("lost receipt"));
    await bridge.store.insert({ ...base, requestId: "lost-receipt", dataHash: lost });
    await bridge.store.insert({ ...base, requestId: "never-paid", dataHash: keccak256(toHex("never paid")) });
    const created = await bridge.client.createTask({
      taskType: TaskType.GPT,
      args,
      fee: parseEther("1"),
      dataHash: lost,
    });
    await bridge.stop();

    bridge = await startBridge(bridgeConfig(), { onTaskError: () => {} });
    await vi.waitFor(
      async () =>
        expect(await bridge.store.get("main", "lost-receipt")).toMatchObject({
          state: "succeeded",
          taskId: created.taskId,
          txHash: created.txHash,
        }),
      { timeout: 120_000, interval: 100 },
    );
    expect(await bridge.store.get("main", "never-paid")).toBeNull();
    const result = await fetch(`${bridge.url}/v1/crynux/tasks/lost-receipt/result`, {
      headers: { authorization: `Bearer ${MAIN_KEY}` },
    });
    expect(
      ((await result.json()) as { response: { choices: { message: { content: string } }[] } }).response
        .choices[0]!.message.content,
    ).toBe("echo: lost receipt");
    expect(watcher.errors).toEqual([]);
  });
});
