import {
  canonicalize,
  taskHash as computeTaskHash,
  type GptResponse,
  type GptTaskArgs,
  type GptTaskArgsInput,
  type JsonObject,
  parseGptResponse,
  parseGptTaskArgs,
  parseSdTaskArgs,
  type SdTaskArgs,
  type SdTaskArgsInput,
} from "@crynux/tasks";
import ky, { type BeforeRequestHook, HTTPError, type KyInstance, TimeoutError } from "ky";
import { type Address, type Hex, sha256 } from "viem";
import type { z } from "zod";
import { ClientError, RelayConnectionError, RelayRequestError, RelayResponseError } from "../errors.js";
import {
  type RelayHealth,
  type RelayInfo,
  type RelayStats,
  relayArgsResponseSchema,
  relayArgsUploadResponseSchema,
  relayErrorBodySchema,
  relayHealthSchema,
  relayInfoSchema,
  relayResultsResponseSchema,
  relayResultsUploadResponseSchema,
  relayStatsSchema,
} from "./schemas.js";
import {
  type RelayDomain,
  type RelaySigner,
  relayDomain,
  relaySignerAddress,
  signRelayRequest,
} from "./signing.js";

/**
 * How the relay client retries idempotent requests on 408, 429 and 5xx (exponential backoff, `retry-after`
 * honoured).
 */
export type RelayRetryOptions = {
  /** Retries after the first attempt. Default 2. */
  limit?: number | undefined;
  /** Upper bound of one backoff delay in ms. Default 10 000. */
  backoffLimitMs?: number | undefined;
  /** Longest `retry-after` honoured, in ms; a longer one is cut to this. Default 60 000. */
  maxRetryAfterMs?: number | undefined;
};

/**
 * Options of {@link createRelayClient}: the relay URL, the signer, and the retry, timeout and polling
 * settings.
 */
export type CreateRelayClientParameters = {
  /** Base URL of the relay, e.g. `http://127.0.0.1:8080` (a path prefix is kept). */
  url: string | URL;
  /** Signs the task endpoints; `info`, `health` and `getNetworkStats` work without it. */
  account?: RelaySigner | undefined;
  /** EIP-712 domain; when left out it is built once from `GET /v1/info`. */
  domain?: RelayDomain | undefined;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof globalThis.fetch | undefined;
  /** Retries of idempotent requests (all of the relay's: GET and PUT) on 408, 429 and 5xx; `0` turns them off. */
  retry?: number | RelayRetryOptions | undefined;
  /** Time allowed to one attempt, in ms. Default 30 000. */
  timeoutMs?: number | undefined;
  /** Pause between polls while a `wait…` option waits for the relay to catch up, in ms. Default 1000. */
  pollIntervalMs?: number | undefined;
};

/** Options of a request that may wait for the relay's indexer to catch up with the chain. */
export type RelayWaitOptions = {
  /** How long to keep retrying while the relay does not know the state yet, in ms. Default 0 (no waiting). */
  waitMs?: number | undefined;
  signal?: AbortSignal | undefined;
};

/** Options of {@link RelayClient.uploadTaskArgs}. */
export type UploadTaskArgsOptions = {
  /** How long to retry `404 task_not_found` (the relay indexes with a confirmation depth), in ms. Default 0. */
  waitForTaskMs?: number | undefined;
  signal?: AbortSignal | undefined;
};

/**
 * The relay's answer to an arguments upload: the task hash it checked them against, and whether this upload
 * stored them (`false` on an identical re-upload).
 */
export type UploadTaskArgsReturnType = { taskId: bigint; taskHash: Hex; stored: boolean };

/** Task arguments from the relay: `args` parsed (defaults filled in), `rawArgs` exactly as uploaded and hashed. */
export type RelayTaskArgs =
  | { taskId: bigint; taskType: 1; taskHash: Hex; args: GptTaskArgs; rawArgs: JsonObject }
  | { taskId: bigint; taskType: 0; taskHash: Hex; args: SdTaskArgs; rawArgs: JsonObject };

/** Results to upload: a GPT response, or the PNG bytes of each SD image in order. */
export type RelayResultsUpload = { response: GptResponse } | { images: Uint8Array[] };

/**
 * The relay's answer to a results upload: whether this upload stored them (`false` on an identical
 * re-upload).
 */
export type UploadResultsReturnType = { taskId: bigint; stored: boolean };

/**
 * A task's results from the relay, by task type: the GPT response, or every SD image as PNG bytes. Not
 * checked against the chain here (`getTaskResult` does that).
 */
export type RelayTaskResult =
  | { taskId: bigint; taskType: 1; response: GptResponse }
  | { taskId: bigint; taskType: 0; images: Uint8Array[] };

/** A client of one relay (see {@link createRelayClient}); task requests are signed with EIP-712. */
export type RelayClient = {
  readonly url: string;
  /** The signing address, if the client has an account. */
  readonly address: Address | undefined;
  /** The EIP-712 domain used to sign (fetched from `/v1/info` on first use when not given). */
  domain(): Promise<RelayDomain>;
  /** `GET /v1/info`: the relay's name, chain, Task contract and upload limits (unsigned). */
  info(options?: { signal?: AbortSignal | undefined }): Promise<RelayInfo>;
  /** `GET /v1/health`: the chain id and how far the relay's indexer got (unsigned). */
  health(options?: { signal?: AbortSignal | undefined }): Promise<RelayHealth>;
  /** `GET /v1/stats`: node and task counts from the relay's index (unsigned; may lag the chain). */
  getNetworkStats(options?: { signal?: AbortSignal | undefined }): Promise<RelayStats>;
  /** Uploads the task arguments as canonical JSON; signed by the task's creator. */
  uploadTaskArgs(
    taskId: bigint,
    args: GptTaskArgsInput | SdTaskArgsInput,
    options?: UploadTaskArgsOptions,
  ): Promise<UploadTaskArgsReturnType>;
  /**
   * Downloads and parses a started task's arguments; signed by the creator or a selected node. `waitMs`
   * retries `task_not_found`, `task_not_started` and `args_not_found`.
   */
  getTaskArgs(taskId: bigint, options?: RelayWaitOptions): Promise<RelayTaskArgs>;
  /** Uploads the results; signed by the result node. `waitMs` retries `task_not_found` and `task_not_success`. */
  uploadResults(
    taskId: bigint,
    results: RelayResultsUpload,
    options?: RelayWaitOptions,
  ): Promise<UploadResultsReturnType>;
  /** Downloads the results (every SD image); signed by the creator. `waitMs` retries `results_not_found`. */
  getResult(taskId: bigint, options?: RelayWaitOptions): Promise<RelayTaskResult>;
};

const RETRY_STATUS_CODES = [408, 429, 500, 502, 503, 504];

/**
 * Creates a client of one relay. Every task request is signed afresh on each attempt (EIP-712, see
 * `signRelayRequest`), over the exact bytes sent.
 *
 * @example
 * const relay = createRelayClient({ url: "http://127.0.0.1:8080", account: privateKeyToAccount(key) });
 * await relay.uploadTaskArgs(taskId, args, { waitForTaskMs: 60_000 });
 */
export function createRelayClient(parameters: CreateRelayClientParameters): RelayClient {
  const baseUrl = String(parameters.url).replace(/\/*$/, "/");
  const { account } = parameters;
  const pollIntervalMs = parameters.pollIntervalMs ?? 1000;
  const retry = typeof parameters.retry === "number" ? { limit: parameters.retry } : (parameters.retry ?? {});

  const http = ky.create({
    prefixUrl: baseUrl,
    timeout: parameters.timeoutMs ?? 30_000,
    ...(parameters.fetch ? { fetch: parameters.fetch } : {}),
    retry: {
      limit: retry.limit ?? 2,
      methods: ["get", "put"],
      statusCodes: RETRY_STATUS_CODES,
      afterStatusCodes: [429, 503],
      backoffLimit: retry.backoffLimitMs ?? 10_000,
      maxRetryAfter: retry.maxRetryAfterMs ?? 60_000,
      retryOnTimeout: true,
      // `undefined` keeps ky's own checks (status list, retry-after); only network failures, timeouts and
      // the listed statuses are worth another attempt: a signing or domain error would fail the same way.
      shouldRetry: ({ error }) => {
        if (error instanceof HTTPError)
          return RETRY_STATUS_CODES.includes(error.response.status) ? undefined : false;
        if (error instanceof TimeoutError || error instanceof TypeError) return undefined;
        return false;
      },
    },
  });

  let domainPromise: Promise<RelayDomain> | undefined = parameters.domain
    ? Promise.resolve(parameters.domain)
    : undefined;
  function domain(): Promise<RelayDomain> {
    if (!domainPromise) {
      domainPromise = info().then((relay) =>
        relayDomain({ name: relay.name, chainId: relay.chainId, taskContract: relay.taskContract }),
      );
      // A failed look-up is not remembered, so the next request asks again.
      domainPromise.catch(() => {
        domainPromise = undefined;
      });
    }
    return domainPromise;
  }

  const signHook: BeforeRequestHook = async (request) => {
    if (!account)
      throw new ClientError("This relay request must be signed, but the relay client has no account.", {
        details: "Pass `account` to createRelayClient.",
      });
    const url = new URL(request.url);
    // Read from a clone: the signature must cover the very bytes that go out, and the original stays sendable.
    const body = request.body ? new Uint8Array(await request.clone().arrayBuffer()) : undefined;
    const relay = await domain();
    let headers: Record<string, string>;
    try {
      ({ headers } = await signRelayRequest({
        account,
        domain: relay,
        method: request.method,
        path: url.pathname + url.search,
        body,
      }));
    } catch (cause) {
      // E.g. the user rejected the request in a browser wallet; not a connection problem, never retried.
      throw new ClientError("Could not sign the relay request.", { cause });
    }
    for (const [name, value] of Object.entries(headers)) request.headers.set(name, value);
  };
  const signed = http.extend({ hooks: { beforeRequest: [signHook] } });

  async function send(
    client: KyInstance,
    method: "get" | "put",
    path: string,
    options: { body?: Uint8Array; contentType?: string; signal?: AbortSignal | undefined } = {},
  ): Promise<Response> {
    try {
      return await client(path, {
        method,
        ...(options.body ? { body: options.body as Uint8Array<ArrayBuffer> } : {}),
        ...(options.contentType ? { headers: { "content-type": options.contentType } } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (error) {
      throw await toClientError(error, method.toUpperCase(), baseUrl + path, options.signal);
    }
  }

  async function getJson<S extends z.ZodType>(
    client: KyInstance,
    path: string,
    schema: S,
    signal: AbortSignal | undefined,
  ): Promise<z.output<S>> {
    return parseBody(await send(client, "get", path, { signal }), schema, baseUrl + path);
  }

  /**
   * Runs `attempt` until it succeeds, or fails with an error other than the awaited codes, or time is up. A
   * relay that cannot be reached counts as not ready yet: within the wait, a relay restart (seconds) must not
   * lose a task its creator already paid for.
   */
  async function waitFor<T>(
    attempt: () => Promise<T>,
    codes: readonly string[],
    waitMs: number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    const deadline = Date.now() + (waitMs ?? 0);
    for (;;) {
      try {
        return await attempt();
      } catch (error) {
        const retryable =
          (error instanceof RelayRequestError && codes.includes(error.code)) ||
          error instanceof RelayConnectionError;
        if (!retryable || Date.now() + pollIntervalMs > deadline) throw error;
        await sleep(pollIntervalMs, signal);
      }
    }
  }

  function info(options: { signal?: AbortSignal | undefined } = {}) {
    return getJson(http, "v1/info", relayInfoSchema, options.signal);
  }

  return {
    url: baseUrl,
    address: account ? relaySignerAddress(account) : undefined,
    domain,
    info,
    health: (options = {}) => getJson(http, "v1/health", relayHealthSchema, options.signal),
    getNetworkStats: (options = {}) => getJson(http, "v1/stats", relayStatsSchema, options.signal),

    async uploadTaskArgs(taskId, args, options = {}) {
      const path = `v1/tasks/${formatTaskId(taskId)}/args`;
      const text = canonicalize(args);
      const answer = await waitFor(
        async () => {
          const response = await send(signed, "put", path, {
            body: utf8.encode(text),
            contentType: "application/json",
            signal: options.signal,
          });
          return parseBody(response, relayArgsUploadResponseSchema, baseUrl + path);
        },
        ["task_not_found"],
        options.waitForTaskMs,
        options.signal,
      );
      const expected = computeTaskHash(args);
      if (answer.taskHash.toLowerCase() !== expected.toLowerCase())
        throw new RelayResponseError("The relay acknowledged the arguments under another task hash.", {
          details: `relay: ${answer.taskHash}, these arguments: ${expected}`,
          url: baseUrl + path,
        });
      return { taskId: BigInt(answer.taskId), taskHash: answer.taskHash, stored: answer.stored };
    },

    async getTaskArgs(taskId, options = {}) {
      const path = `v1/tasks/${formatTaskId(taskId)}/args`;
      const answer = await waitFor(
        () => getJson(signed, path, relayArgsResponseSchema, options.signal),
        ["task_not_found", "task_not_started", "args_not_found"],
        options.waitMs,
        options.signal,
      );
      const url = baseUrl + path;
      // The relay is not trusted: the arguments must hash to the task hash it names (which a node compares
      // with the chain).
      const actual = computeTaskHash(answer.args);
      if (actual.toLowerCase() !== answer.taskHash.toLowerCase())
        throw new RelayResponseError("The task arguments from the relay do not match their task hash.", {
          details: `task hash ${answer.taskHash}, hash of the arguments ${actual}`,
          url,
        });
      const base = { taskId: BigInt(answer.taskId), taskHash: answer.taskHash, rawArgs: answer.args };
      try {
        return answer.taskType === 1
          ? { ...base, taskType: 1, args: parseGptTaskArgs(answer.args) }
          : { ...base, taskType: 0, args: parseSdTaskArgs(answer.args) };
      } catch (cause) {
        throw new RelayResponseError("The task arguments from the relay are not valid.", { cause, url });
      }
    },

    async uploadResults(taskId, results, options = {}) {
      const path = `v1/tasks/${formatTaskId(taskId)}/results`;
      let body: Uint8Array;
      let contentType: string;
      if ("response" in results) {
        body = utf8.encode(canonicalize(parseGptResponse(results.response)));
        contentType = "application/json";
      } else {
        if (results.images.length === 0) throw new ClientError("An SD result needs at least one image.");
        ({ body, contentType } = await encodeImages(results.images));
      }
      const answer = await waitFor(
        async () => {
          const response = await send(signed, "put", path, { body, contentType, signal: options.signal });
          return parseBody(response, relayResultsUploadResponseSchema, baseUrl + path);
        },
        ["task_not_found", "task_not_success"],
        options.waitMs,
        options.signal,
      );
      return { taskId: BigInt(answer.taskId), stored: answer.stored };
    },

    async getResult(taskId, options = {}) {
      const path = `v1/tasks/${formatTaskId(taskId)}/results`;
      const answer = await waitFor(
        () => getJson(signed, path, relayResultsResponseSchema, options.signal),
        ["task_not_found", "results_not_found"],
        options.waitMs,
        options.signal,
      );
      if (answer.taskType === 1) {
        let response: GptResponse;
        try {
          response = parseGptResponse(answer.response);
        } catch (cause) {
          throw new RelayResponseError("The GPT response from the relay is not valid.", {
            cause,
            url: baseUrl + path,
          });
        }
        return { taskId: BigInt(answer.taskId), taskType: 1, response };
      }
      const images: Uint8Array[] = [];
      // One at a time: images can be large, and parallel requests would hit the relay's rate limit sooner.
      for (const image of answer.images) {
        const imagePath = `${path}/${image.index}`;
        const response = await send(signed, "get", imagePath, { signal: options.signal });
        const bytes = new Uint8Array(await response.arrayBuffer());
        const digest = sha256(bytes).slice(2);
        if (bytes.length !== image.size || digest !== image.sha256)
          throw new RelayResponseError(`SD image ${image.index} from the relay does not match its listing.`, {
            details: `listed sha256 ${image.sha256} (${image.size} bytes), received ${digest} (${bytes.length} bytes)`,
            url: baseUrl + imagePath,
          });
        images.push(bytes);
      }
      return { taskId: BigInt(answer.taskId), taskType: 0, images };
    },
  };
}

const utf8 = new TextEncoder();

function formatTaskId(taskId: bigint): string {
  if (typeof taskId !== "bigint" || taskId < 0n)
    throw new ClientError(`A task id must be a non-negative bigint, got ${String(taskId)}.`);
  return taskId.toString();
}

/** Multipart body with one PNG per image under the fields `0`, `1`, …, encoded once so it can be signed. */
async function encodeImages(images: Uint8Array[]): Promise<{ body: Uint8Array; contentType: string }> {
  const form = new FormData();
  images.forEach((image, index) => {
    form.append(
      String(index),
      new Blob([image as Uint8Array<ArrayBuffer>], { type: "image/png" }),
      `${index}.png`,
    );
  });
  const encoded = new Response(form);
  return {
    body: new Uint8Array(await encoded.arrayBuffer()),
    contentType: encoded.headers.get("content-type")!,
  };
}

async function parseBody<S extends z.ZodType>(
  response: Response,
  schema: S,
  url: string,
): Promise<z.output<S>> {
  const text = await response.text();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new RelayResponseError("The relay's answer is not JSON.", {
      details: `status ${response.status}, body starts with ${JSON.stringify(text.slice(0, 200))}`,
      cause,
      url,
    });
  }
  const result = schema.safeParse(value);
  if (!result.success)
    throw new RelayResponseError("The relay's answer does not match the relay protocol.", {
      details: result.error.issues.map((issue) => `- ${issue.path.join(".")}: ${issue.message}`).join("\n"),
      cause: result.error,
      url,
    });
  return result.data;
}

async function toClientError(
  error: unknown,
  method: string,
  url: string,
  signal: AbortSignal | undefined,
): Promise<unknown> {
  // Our own errors (signing, domain look-up) and a caller's abort are passed on as they are.
  if (error instanceof ClientError || signal?.aborted) return error;
  if (error instanceof HTTPError) {
    const { status, statusText } = error.response;
    let text = "";
    try {
      text = await error.response.text();
    } catch {
      // The body is only a better message; the status alone still says what happened.
    }
    const parsed = relayErrorBodySchema.safeParse(safeJsonParse(text));
    if (parsed.success) {
      const { code, message, field } = parsed.data.error;
      return new RelayRequestError(message, { status, code, field, method, url, cause: error });
    }
    return new RelayRequestError(`The relay answered ${status} ${statusText}`.trim(), {
      status,
      code: `http_${status}`,
      method,
      url,
      details: text ? `body: ${text.slice(0, 200)}` : undefined,
      cause: error,
    });
  }
  const details = `${method} ${url}: ${error instanceof Error ? describeCause(error) : String(error)}`;
  if (error instanceof TimeoutError)
    return new RelayConnectionError("The relay did not answer in time.", {
      method,
      url,
      details,
      cause: error,
    });
  return new RelayConnectionError("The relay could not be reached.", { method, url, details, cause: error });
}

/** `fetch failed` alone says little; undici puts the reason (ECONNREFUSED, …) in `cause`. */
function describeCause(error: Error): string {
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
  return `${error.message}${cause}`;
}

function safeJsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
