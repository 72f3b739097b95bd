import { createSseParser } from "./sse.js";

/** A chat message as OpenAI's API and the bridge take it. */
export type ChatMessage = { role: "system" | "user" | "assistant"; content: string };

export type BridgeSettings = {
  /** Base URL of the bridge, without `/v1` (a trailing `/v1` is accepted and dropped). */
  url: string;
  apiKey: string;
};

export type ChatModel = { id: string; description: string | undefined };

/** Where the bridge's record of a request stands (`GET /v1/crynux/tasks/:id`). */
export type BridgeTaskStatus = {
  status: "recorded" | "paid" | "succeeded" | "failed";
  taskId: string | null;
  txHash: string | null;
  /** Wei, decimal. */
  fee: string;
};

/** Why a call to the bridge failed, worded for the person using the page. */
export class BridgeRequestError extends Error {
  override name = "BridgeRequestError";
  /** HTTP status, when the bridge answered. */
  readonly status: number | undefined;
  /** The bridge's error code (`invalid_api_key`, `model_not_found`, …), when it gave one. */
  readonly code: string | undefined;

  constructor(message: string, options: { status?: number; code?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.status = options.status;
    this.code = options.code;
  }
}

/**
 * Code of a stream cut after the task was paid: the same request sent again with the same `Idempotency-Key`
 * gets that task's answer instead of paying a new one.
 */
export const CONNECTION_BROKEN = "connection_broken";

/** `http://host:8090/v1/` → `http://host:8090`: people paste either the bridge's or the OpenAI base URL. */
export function normalizeBridgeUrl(url: string): string {
  return url.trim().replace(/\/+$/, "").replace(/\/v1$/, "").replace(/\/+$/, "");
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

async function call(settings: BridgeSettings, path: string, init: RequestInit = {}): Promise<Response> {
  const base = normalizeBridgeUrl(settings.url);
  if (!/^https?:\/\/[^/]/.test(base))
    throw new BridgeRequestError(
      `"${settings.url}" is not a bridge URL; it starts with http:// or https://.`,
    );
  let response: Response;
  try {
    response = await fetch(`${base}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${settings.apiKey}`, ...init.headers },
    });
  } catch (cause) {
    if (init.signal?.aborted) throw cause;
    // The browser hides why (refused connection, DNS, CORS): all arrive as the same TypeError.
    throw new BridgeRequestError(
      `Cannot reach the bridge at ${base}. Is it running, is the URL right, and does it allow this page's origin (${location.origin}) in its "cors" setting?`,
      { cause },
    );
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** The bridge answers errors as OpenAI does: `{ error: { message, type, code, param } }`. */
async function errorOf(response: Response): Promise<BridgeRequestError> {
  const text = await response.text().catch(() => "");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const error = isRecord(body) && isRecord(body["error"]) ? body["error"] : undefined;
  const message = typeof error?.["message"] === "string" ? error["message"] : undefined;
  const code = typeof error?.["code"] === "string" ? error["code"] : undefined;
  if (message === undefined)
    return new BridgeRequestError(
      `The bridge answered HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}${text ? `: ${text.slice(0, 200)}` : ""}`,
      { status: response.status },
    );
  return new BridgeRequestError(`${message} (HTTP ${response.status}${code ? `, ${code}` : ""})`, {
    status: response.status,
    ...(code ? { code } : {}),
  });
}

async function json(response: Response): Promise<unknown> {
  try {
    return await response.json();
  } catch (cause) {
    throw new BridgeRequestError(`The bridge answered ${response.url} with something that is not JSON.`, {
      cause,
    });
  }
}

/** The chat models of the bridge: `GET /v1/models` without the image models. */
export async function listChatModels(settings: BridgeSettings): Promise<ChatModel[]> {
  const body = await json(await call(settings, "/v1/models"));
  if (!isRecord(body) || !Array.isArray(body["data"]))
    throw new BridgeRequestError("The bridge's model list has no `data` array.");
  const models: ChatModel[] = [];
  for (const entry of body["data"]) {
    if (!isRecord(entry) || typeof entry["id"] !== "string") continue;
    const crynux = entry["crynux"];
    // Image models answer /v1/images/generations only.
    if (isRecord(crynux) && crynux["type"] === "sd") continue;
    models.push({
      id: entry["id"],
      description: typeof entry["description"] === "string" ? entry["description"] : undefined,
    });
  }
  return models;
}

/** The bridge's record of the request sent with `Idempotency-Key: requestId`; null until it exists. */
export async function getTaskStatus(
  settings: BridgeSettings,
  requestId: string,
  signal?: AbortSignal,
): Promise<BridgeTaskStatus | null> {
  let response: Response;
  try {
    response = await call(settings, `/v1/crynux/tasks/${encodeURIComponent(requestId)}`, {
      ...(signal ? { signal } : {}),
    });
  } catch (error) {
    if (error instanceof BridgeRequestError && error.code === "task_not_found") return null;
    throw error;
  }
  const body = await json(response);
  const statuses = ["recorded", "paid", "succeeded", "failed"] as const;
  if (!isRecord(body) || !statuses.includes(body["status"] as (typeof statuses)[number]))
    throw new BridgeRequestError("The bridge's task status has an unknown shape.");
  return {
    status: body["status"] as BridgeTaskStatus["status"],
    taskId: typeof body["task_id"] === "string" ? body["task_id"] : null,
    txHash: typeof body["tx_hash"] === "string" ? body["tx_hash"] : null,
    fee: typeof body["fee"] === "string" ? body["fee"] : "0",
  };
}

export type StreamChatParameters = {
  model: string;
  messages: readonly ChatMessage[];
  /** Sent as `Idempotency-Key`: a retry never pays twice, and the page can ask for the task's status. */
  requestId: string;
  signal?: AbortSignal;
  /** The task is paid: the response headers name it. */
  onPaid?: (task: { taskId: string | null; txHash: string | null }) => void;
  /** A keep-alive comment arrived: the bridge still waits for the network. */
  onKeepAlive?: () => void;
  /** Text as it arrives. */
  onDelta?: (text: string) => void;
};

export type StreamChatResult = { content: string; taskId: string | null; finishReason: string | null };

/**
 * `POST /v1/chat/completions` with `stream: true`. The network does not stream tokens: the bridge sends the
 * headers once the task is paid, keep-alive comments while the nodes work, then the whole answer in chunks.
 */
export async function streamChat(
  settings: BridgeSettings,
  parameters: StreamChatParameters,
): Promise<StreamChatResult> {
  const response = await call(settings, "/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": parameters.requestId },
    body: JSON.stringify({ model: parameters.model, messages: parameters.messages, stream: true }),
    ...(parameters.signal ? { signal: parameters.signal } : {}),
  });
  const taskId = response.headers.get("x-crynux-task-id");
  parameters.onPaid?.({ taskId, txHash: response.headers.get("x-crynux-tx-hash") });
  if (!response.body) throw new BridgeRequestError("The bridge's answer has no body.");

  let content = "";
  let finishReason: string | null = null;
  let done = false;
  let failure: BridgeRequestError | undefined;
  const parser = createSseParser({
    onComment: () => parameters.onKeepAlive?.(),
    onEvent: ({ data }) => {
      if (done || failure) return;
      if (data === "[DONE]") {
        done = true;
        return;
      }
      let chunk: unknown;
      try {
        chunk = JSON.parse(data);
      } catch (cause) {
        failure = new BridgeRequestError(
          `The bridge streamed an event that is not JSON: ${data.slice(0, 200)}`,
          {
            cause,
          },
        );
        return;
      }
      if (isRecord(chunk) && isRecord(chunk["error"])) {
        // A task that failed after the headers went out (nodes disagreed, timeout): OpenAI's error event.
        const error = chunk["error"];
        const code = typeof error["code"] === "string" ? error["code"] : undefined;
        failure = new BridgeRequestError(
          `${typeof error["message"] === "string" ? error["message"] : "The task failed."}${code ? ` (${code})` : ""}`,
          code ? { code } : {},
        );
        return;
      }
      const choices = isRecord(chunk) && Array.isArray(chunk["choices"]) ? chunk["choices"] : [];
      for (const choice of choices) {
        if (!isRecord(choice) || (choice["index"] ?? 0) !== 0) continue;
        const delta = isRecord(choice["delta"]) ? choice["delta"] : {};
        if (typeof delta["content"] === "string" && delta["content"] !== "") {
          content += delta["content"];
          parameters.onDelta?.(delta["content"]);
        }
        if (typeof choice["finish_reason"] === "string") finishReason = choice["finish_reason"];
      }
    },
  });

  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      let read: ReadableStreamReadResult<string>;
      try {
        read = await reader.read();
      } catch (cause) {
        if (parameters.signal?.aborted) throw cause;
        throw new BridgeRequestError(
          "The connection to the bridge broke before the answer arrived. The task goes on: sending the same message again picks up its answer.",
          { cause, code: CONNECTION_BROKEN },
        );
      }
      if (read.done) break;
      parser.push(read.value);
      if (failure || done) break;
    }
  } finally {
    parser.end();
    reader.cancel().catch(() => {});
  }
  if (failure) throw failure;
  if (!done)
    throw new BridgeRequestError(
      "The bridge closed the stream before the answer was complete. The task goes on: sending the same message again picks up its answer.",
      { code: CONNECTION_BROKEN },
    );
  return { content, taskId, finishReason };
}
