import { randomUUID } from "node:crypto";
import type { CrynuxClient } from "@crynux/client";
import {
  canonicalize,
  type GptResponse,
  type GptTaskArgsInput,
  parseGptTaskArgs,
  parseSdTaskArgs,
  type SdTaskArgsInput,
  TaskArgsError,
  TaskType,
  workUnits,
} from "@crynux/tasks";
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { HTTPException } from "hono/http-exception";
import { streamSSE } from "hono/streaming";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { type Address, keccak256, sha256, stringToHex, toHex } from "viem";
import { z } from "zod";
import type { ApiKeyConfig, BridgeModel } from "./config.js";
import { BridgeError, type BridgeErrorType, InvalidRequestError } from "./errors.js";
import { type ApiKey, checkQuota, createKeyRateLimiter, createKeyring, startOfUtcDay } from "./keys.js";
import {
  chatCompletion,
  chatCompletionChunks,
  chatCompletionRequestSchema,
  chatTaskArgs,
  completionRequestSchema,
  completionTaskArgs,
  findModel,
  formatParam,
  imageRequestSchema,
  imageTaskArgs,
  parseRequest,
  type ResponseMeta,
  textCompletion,
  textCompletionChunks,
} from "./openai.js";
import type { BridgeStore, RequestKind, StoredImages, TaskRecord } from "./store.js";
import type { TaskRunner } from "./tasks.js";

export type BridgeAppConfig = {
  models: Record<string, BridgeModel>;
  apiKeys: ApiKeyConfig[];
  fees: { targetWaitSeconds: number; maxFeeWei: bigint };
  walletReserveWei: bigint;
  keepAliveMs: number;
  maxBodyBytes: number;
  /** Origins allowed to call from a browser (`*`: any); none or empty: no CORS headers. */
  cors?: readonly string[] | undefined;
};

export type BridgeAppDeps = {
  config: BridgeAppConfig;
  /** The Crynux client of the application wallet (createCrynuxClient). */
  client: CrynuxClient;
  store: BridgeStore;
  runner: TaskRunner;
  wallet: Address;
  /** Clock in unix milliseconds. */
  now?: (() => number) | undefined;
  /** Unexpected errors (answered 500 without details); console.error by default. */
  onInternalError?: ((error: unknown) => void) | undefined;
};

export type BridgeEnv = { Variables: { apiKey: ApiKey } };

type Submission = {
  kind: RequestKind;
  model: string | null;
  taskType: TaskType;
  args: GptTaskArgsInput | SdTaskArgsInput;
  vramLimit: bigint;
};

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

const nativeTaskSchema = z.strictObject({
  task_type: z.union([z.literal(TaskType.SD), z.literal(TaskType.GPT)]),
  args: z.record(z.string(), z.unknown()),
  vram_limit: z.int().min(0).max(1024).optional(),
});

/**
 * The bridge's HTTP API as a hono app: OpenAI-compatible chat, completions, images and models, plus a Crynux
 * task API. `serve.ts` adds the socket, the store and the runner; tests may call `app.request()`.
 */
export function createBridgeApp(deps: BridgeAppDeps): Hono<BridgeEnv> {
  const { config, client, store, runner, wallet } = deps;
  const now = deps.now ?? Date.now;
  const keyring = createKeyring(config.apiKeys);
  const rateLimit = createKeyRateLimiter(now);
  const onInternalError =
    deps.onInternalError ?? ((error: unknown) => console.error("bridge: internal error", error));
  const startedAt = Math.floor(now() / 1000);

  // One payment at a time: the quota check, the record and the transaction happen in order, so concurrent
  // requests can neither overrun a quota nor race for the wallet's nonce.
  let paymentQueue: Promise<unknown> = Promise.resolve();
  const serialized = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = paymentQueue.then(fn, fn);
    paymentQueue = run.catch(() => {});
    return run;
  };

  const app = new Hono<BridgeEnv>();

  const authenticate: MiddlewareHandler<BridgeEnv> = async (c, next) => {
    const key = keyring(c.req.header("authorization"));
    rateLimit(key);
    c.set("apiKey", key);
    await next();
  };

  const readJson = async (c: { req: { raw: Request; header(name: string): string | undefined } }) => {
    const declared = c.req.header("content-length");
    if (declared !== undefined && Number(declared) > config.maxBodyBytes)
      throw new BridgeError(`The request body is larger than ${config.maxBodyBytes} bytes.`, {
        status: 413,
        type: "invalid_request_error",
        code: "request_too_large",
      });
    const text = await c.req.raw.text();
    if (Buffer.byteLength(text) > config.maxBodyBytes)
      throw new BridgeError(`The request body is larger than ${config.maxBodyBytes} bytes.`, {
        status: 413,
        type: "invalid_request_error",
        code: "request_too_large",
      });
    try {
      return JSON.parse(text) as unknown;
    } catch (cause) {
      throw new InvalidRequestError(
        "We could not parse the JSON body of your request. The body must be JSON.",
        undefined,
        { code: "invalid_json", cause },
      );
    }
  };

  const requestIdOf = (header: string | undefined): string => {
    if (header === undefined) return randomUUID();
    if (!IDEMPOTENCY_KEY.test(header))
      throw new InvalidRequestError(
        "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        "Idempotency-Key",
      );
    return header;
  };

  /** The record of this request: the existing one for a repeated Idempotency-Key, else a newly paid task. */
  async function submit(key: ApiKey, requestId: string, submission: Submission): Promise<TaskRecord> {
    const fingerprint = sha256(
      stringToHex(
        canonicalize({
          kind: submission.kind,
          model: submission.model,
          taskType: submission.taskType,
          args: submission.args,
          vramLimit: submission.vramLimit.toString(),
        }),
      ),
    );
    const existing = (record: TaskRecord | null) => {
      if (record && record.fingerprint !== fingerprint)
        throw new BridgeError("This Idempotency-Key was already used for another request.", {
          status: 409,
          type: "conflict_error",
          code: "idempotency_key_reused",
          param: "Idempotency-Key",
        });
      return record;
    };
    const found = existing(await store.get(key.name, requestId));
    if (found) return found;

    const paid = await serialized(async () => {
      // A concurrent request with the same key may have recorded it while this one waited.
      const raced = existing(await store.get(key.name, requestId));
      if (raced) return raced;
      const at = now();
      const usage = await store.usageSince(key.name, startOfUtcDay(at));
      checkQuota(key, { tasks: usage.tasks, spentWei: 0n }, 0n);
      const cap = workUnits(submission.taskType, submission.args);
      let fee: bigint;
      try {
        const suggested = await client.suggestTaskFee({
          taskType: submission.taskType,
          cap,
          vramLimit: submission.vramLimit,
          targetWaitSeconds: config.fees.targetWaitSeconds,
        });
        fee = suggested.fee;
      } catch (cause) {
        throw new BridgeError("The bridge cannot read the network to price the task; try again later.", {
          status: 503,
          type: "service_unavailable",
          code: "chain_unavailable",
          cause,
        });
      }
      // The configured cap bounds the spend; the task then waits longer in the queue instead.
      if (fee > config.fees.maxFeeWei) fee = config.fees.maxFeeWei;
      if (fee < 1n) fee = 1n;
      checkQuota(key, usage, fee);
      const [balance, fromBlock] = await Promise.all([
        client.publicClient.getBalance({ address: wallet }),
        client.publicClient.getBlockNumber({ cacheTime: 0 }),
      ]).catch((cause: unknown) => {
        throw new BridgeError("The bridge cannot reach the chain; try again later.", {
          status: 503,
          type: "service_unavailable",
          code: "chain_unavailable",
          cause,
        });
      });
      const needed = fee + config.walletReserveWei;
      if (balance < needed)
        throw new BridgeError(
          `The bridge wallet ${wallet} is running low: it holds ${balance} wei, this task needs ${needed} wei (fee ${fee} + gas reserve ${config.walletReserveWei}). The operator must top it up.`,
          { status: 402, type: "insufficient_funds", code: "wallet_balance_low" },
        );
      const record = await store.insert({
        apiKey: key.name,
        requestId,
        kind: submission.kind,
        model: submission.model,
        fingerprint,
        taskType: submission.taskType,
        args: submission.args as Record<string, unknown>,
        vramLimit: submission.vramLimit,
        fee,
        dataHash: keccak256(toHex(`crynux-bridge ${key.name} ${requestId} ${at}`)),
        fromBlock,
        createdAt: at,
      });
      return runner.pay(record);
    });
    // Followed from now on whether or not anyone waits: the task is paid.
    runner.finish(paid).catch(() => {});
    return paid;
  }

  /** Waits for the record's task; a failed one becomes its stored error. */
  async function finished(record: TaskRecord): Promise<TaskRecord> {
    const final = await runner.finish(record);
    if (final.state === "failed") {
      const error = final.error!;
      throw new BridgeError(error.message, {
        status: error.status,
        type: error.type as BridgeErrorType,
        code: error.code,
      });
    }
    return final;
  }

  const metaOf = (record: TaskRecord, prefix: string): ResponseMeta => ({
    id: `${prefix}-${record.taskId ?? record.requestId}`,
    created: Math.floor(record.createdAt / 1000),
    model: record.model ?? "",
  });

  const taskHeaders = (c: { header(name: string, value: string): void }, record: TaskRecord) => {
    c.header("x-request-id", record.requestId);
    if (record.taskId !== null) c.header("x-crynux-task-id", record.taskId.toString());
    if (record.txHash !== null) c.header("x-crynux-tx-hash", record.txHash);
  };

  /**
   * Streams the finished response as server-sent events. Headers go out at once; comments keep the connection
   * alive while the task runs, and a task failure arrives as an `error` event, as OpenAI streams errors.
   */
  function streamFinished(
    c: Parameters<typeof streamSSE>[0],
    record: TaskRecord,
    chunksOf: (final: TaskRecord) => unknown[],
  ) {
    taskHeaders(c, record);
    return streamSSE(c, async (stream) => {
      const keepAlive = setInterval(() => {
        stream.write(": keep-alive\n\n").catch(() => {});
      }, config.keepAliveMs);
      let final: TaskRecord;
      try {
        final = await finished(record);
      } catch (error) {
        const body =
          error instanceof BridgeError
            ? error.toJSON()
            : {
                error: { message: "Internal error.", type: "api_error", param: null, code: "internal_error" },
              };
        if (!(error instanceof BridgeError)) onInternalError(error);
        await stream.writeSSE({ data: JSON.stringify(body) });
        return;
      } finally {
        clearInterval(keepAlive);
      }
      for (const chunk of chunksOf(final)) await stream.writeSSE({ data: JSON.stringify(chunk) });
      await stream.writeSSE({ data: "[DONE]" });
    });
  }

  const allowedOrigins = config.cors ?? [];
  if (allowedOrigins.length > 0) {
    // Registered first, so that preflights are answered before authentication (browsers send them without the
    // Authorization header) and error responses carry the headers too: a page must be able to read them.
    app.use(
      "*",
      cors({
        origin: allowedOrigins.includes("*") ? "*" : [...allowedOrigins],
        allowMethods: ["GET", "POST", "OPTIONS"],
        allowHeaders: ["Authorization", "Content-Type", "Idempotency-Key"],
        exposeHeaders: ["x-request-id", "x-crynux-task-id", "x-crynux-tx-hash", "retry-after"],
        maxAge: 600,
      }),
    );
  }

  app.get("/health", (c) => c.json({ status: "ok" }));

  // Bounds what is read even when a client streams a body without a content-length.
  app.use(
    "/v1/*",
    bodyLimit({
      maxSize: config.maxBodyBytes,
      onError: () => {
        throw new BridgeError(`The request body is larger than ${config.maxBodyBytes} bytes.`, {
          status: 413,
          type: "invalid_request_error",
          code: "request_too_large",
        });
      },
    }),
  );
  app.use("/v1/*", authenticate);

  app.get("/v1/models", (c) =>
    c.json({
      object: "list",
      data: Object.entries(config.models).map(([id, model]) => modelObject(id, model, startedAt)),
    }),
  );
  app.get("/v1/models/:id", (c) => {
    const id = c.req.param("id");
    const model = Object.hasOwn(config.models, id) ? config.models[id] : undefined;
    if (!model)
      throw new BridgeError(`The model '${id}' does not exist or you do not have access to it.`, {
        status: 404,
        type: "invalid_request_error",
        code: "model_not_found",
        param: "model",
      });
    return c.json(modelObject(id, model, startedAt));
  });

  app.post("/v1/chat/completions", async (c) => {
    const request = parseRequest(chatCompletionRequestSchema, await readJson(c));
    const requestId = requestIdOf(c.req.header("idempotency-key"));
    const model = findModel(config.models, request.model, "gpt");
    const args = chatTaskArgs(request, model);
    const record = await submit(c.get("apiKey"), requestId, {
      kind: "chat",
      model: request.model,
      taskType: TaskType.GPT,
      args,
      vramLimit: BigInt(model.vramLimit ?? 0),
    });
    if (request.stream)
      return streamFinished(c, record, (final) =>
        chatCompletionChunks(
          final.result as GptResponse,
          metaOf(final, "chatcmpl"),
          request.stream_options?.include_usage === true,
        ),
      );
    const final = await finished(record);
    taskHeaders(c, final);
    return c.json(chatCompletion(final.result as GptResponse, metaOf(final, "chatcmpl")));
  });

  app.post("/v1/completions", async (c) => {
    const request = parseRequest(completionRequestSchema, await readJson(c));
    const requestId = requestIdOf(c.req.header("idempotency-key"));
    const model = findModel(config.models, request.model, "gpt");
    const args = completionTaskArgs(request, model);
    const echo = request.echo
      ? typeof request.prompt === "string"
        ? request.prompt
        : request.prompt[0]
      : undefined;
    const record = await submit(c.get("apiKey"), requestId, {
      kind: "completion",
      model: request.model,
      taskType: TaskType.GPT,
      args,
      vramLimit: BigInt(model.vramLimit ?? 0),
    });
    if (request.stream)
      return streamFinished(c, record, (final) =>
        textCompletionChunks(
          final.result as GptResponse,
          metaOf(final, "cmpl"),
          request.stream_options?.include_usage === true,
          echo,
        ),
      );
    const final = await finished(record);
    taskHeaders(c, final);
    return c.json(textCompletion(final.result as GptResponse, metaOf(final, "cmpl"), echo));
  });

  app.post("/v1/images/generations", async (c) => {
    const request = parseRequest(imageRequestSchema, await readJson(c));
    const requestId = requestIdOf(c.req.header("idempotency-key"));
    const modelId = request.model ?? Object.entries(config.models).find(([, m]) => m.type === "sd")?.[0];
    if (modelId === undefined)
      throw new InvalidRequestError("This bridge offers no image model.", "model", {
        code: "model_not_found",
      });
    const model = findModel(config.models, modelId, "sd");
    const args = imageTaskArgs(request, model);
    const record = await submit(c.get("apiKey"), requestId, {
      kind: "image",
      model: modelId,
      taskType: TaskType.SD,
      args,
      vramLimit: BigInt(model.vramLimit ?? 0),
    });
    const final = await finished(record);
    taskHeaders(c, final);
    const { images } = final.result as StoredImages;
    return c.json({
      created: Math.floor(final.createdAt / 1000),
      data: images.map((b64_json) => ({ b64_json })),
    });
  });

  app.post("/v1/crynux/tasks", async (c) => {
    const request = parseRequest(nativeTaskSchema, await readJson(c));
    const requestId = requestIdOf(c.req.header("idempotency-key"));
    try {
      if (request.task_type === TaskType.GPT) parseGptTaskArgs(request.args);
      else parseSdTaskArgs(request.args);
    } catch (error) {
      if (!(error instanceof TaskArgsError)) throw error;
      const param = formatParam(["args", ...error.issues[0]!.path]);
      throw new InvalidRequestError(`Invalid '${param}': ${error.issues[0]!.message}.`, param, {
        cause: error,
        details: error.details,
      });
    }
    const key = c.get("apiKey");
    const before = await store.get(key.name, requestId);
    const record = await submit(key, requestId, {
      kind: "native",
      model: null,
      taskType: request.task_type,
      args: request.args as GptTaskArgsInput,
      vramLimit: BigInt(request.vram_limit ?? 0),
    });
    taskHeaders(c, record);
    return c.json(taskView(record), before ? 200 : 202);
  });

  const ownRecord = async (key: ApiKey, id: string): Promise<TaskRecord> => {
    // Ids are Idempotency-Keys or UUIDs; anything else exists nowhere, and a NUL would make PostgreSQL fail (500).
    const record = IDEMPOTENCY_KEY.test(id) ? await store.get(key.name, id) : null;
    if (!record)
      throw new BridgeError(`No task '${id}' for this API key.`, {
        status: 404,
        type: "not_found_error",
        code: "task_not_found",
        param: "id",
      });
    return record;
  };

  app.get("/v1/crynux/tasks/:id", async (c) => {
    const record = await ownRecord(c.get("apiKey"), c.req.param("id"));
    // Make sure a paid task is followed (after a restart no request may have asked yet).
    runner.finish(record).catch(() => {});
    taskHeaders(c, record);
    return c.json(taskView(record));
  });

  app.get("/v1/crynux/tasks/:id/result", async (c) => {
    const record = await ownRecord(c.get("apiKey"), c.req.param("id"));
    taskHeaders(c, record);
    if (record.state === "recorded" || record.state === "paid") {
      runner.finish(record).catch(() => {});
      throw new BridgeError(`Task '${record.requestId}' has not finished yet.`, {
        status: 409,
        type: "conflict_error",
        code: "task_not_finished",
        retryAfterSeconds: 2,
      });
    }
    const final = await finished(record);
    if (final.taskType === TaskType.GPT) return c.json({ task_type: TaskType.GPT, response: final.result });
    return c.json({ task_type: TaskType.SD, images: (final.result as StoredImages).images });
  });

  app.get("/v1/crynux/wallet", async (c) => {
    const balance = await client.publicClient.getBalance({ address: wallet });
    return c.json({ address: wallet, balance: balance.toString() });
  });

  app.notFound((c) =>
    c.json(
      {
        error: {
          message: `Invalid URL (${c.req.method} ${c.req.path})`,
          type: "invalid_request_error",
          param: null,
          code: "unknown_url",
        },
      },
      404,
    ),
  );

  app.onError((error, c) => {
    if (error instanceof BridgeError) {
      if (error.retryAfterSeconds !== undefined) c.header("retry-after", String(error.retryAfterSeconds));
      // Failed tasks and unavailability (chain, relay, stopping) are not the bridge's faults; only those are logged.
      if (error.status === 500) onInternalError(error);
      return c.json(error.toJSON(), error.status as ContentfulStatusCode);
    }
    if (error instanceof HTTPException && error.status < 500)
      return c.json(
        { error: { message: error.message, type: "invalid_request_error", param: null, code: null } },
        error.status,
      );
    // The client closed the connection mid-body ("aborted" while reading it): not a fault of the bridge.
    if (isClientAbort(error))
      return c.json(
        {
          error: {
            message: "The request body could not be read: the client closed the connection.",
            type: "invalid_request_error",
            param: null,
            code: "request_aborted",
          },
        },
        400,
      );
    onInternalError(error);
    return c.json(
      { error: { message: "Internal error.", type: "api_error", param: null, code: "internal_error" } },
      500,
    );
  });

  return app;
}

/** Node's error for an incoming request whose connection closed before its body was read. */
function isClientAbort(error: unknown): boolean {
  return (
    error instanceof Error &&
    error.message === "aborted" &&
    (error as NodeJS.ErrnoException).code === "ECONNRESET"
  );
}

function modelObject(id: string, model: BridgeModel, created: number) {
  return {
    id,
    object: "model" as const,
    created,
    owned_by: "crynux",
    crynux:
      model.type === "gpt"
        ? {
            type: "gpt",
            task_type: TaskType.GPT,
            model: model.model,
            dtype: model.dtype ?? null,
            quantize_bits: model.quantizeBits ?? null,
            vram_limit: model.vramLimit ?? 0,
            max_tokens: model.maxTokens,
          }
        : {
            type: "sd",
            task_type: TaskType.SD,
            base_model: model.baseModel,
            variant: model.variant ?? null,
            vram_limit: model.vramLimit ?? 0,
          },
    ...(model.description ? { description: model.description } : {}),
  };
}

/** The Crynux task API's view of a record. */
function taskView(record: TaskRecord) {
  return {
    id: record.requestId,
    object: "crynux.task" as const,
    status: record.state,
    task_type: record.taskType,
    task_id: record.taskId?.toString() ?? null,
    tx_hash: record.txHash,
    fee: record.fee.toString(),
    created: Math.floor(record.createdAt / 1000),
    error: record.error,
  };
}
