/**
 * OpenAI request shapes → Crynux task arguments, and Crynux results → OpenAI response shapes. Only the
 * mapping lives here; validation of the task arguments themselves is `@crynux/tasks`'.
 */
import {
  type GptResponse,
  type GptTaskArgsInput,
  jsonObjectSchema,
  MAX_RETURN_SEQUENCES,
  parseGptTaskArgs,
  parseSdTaskArgs,
  type SdTaskArgsInput,
  TaskArgsError,
} from "@crynux/tasks";
import { z } from "zod";
import type { BridgeModel, GptModelConfig, SdModelConfig } from "./config.js";
import { BridgeError, InvalidRequestError } from "./errors.js";

/** `["messages", 0, "content"]` → `messages[0].content`, as OpenAI names parameters. */
export function formatParam(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}

/** Parses a request body with `schema`, or throws a 400 naming the first bad parameter. */
export function parseRequest<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const param = formatParam(issue.path);
  throw new InvalidRequestError(
    param ? `Invalid '${param}': ${issue.message}.` : issue.message,
    param || undefined,
    {
      details: parsed.error.issues.map((i) => `- ${formatParam(i.path)}: ${i.message}`).join("\n"),
    },
  );
}

const textPartSchema = z.strictObject({ type: z.literal("text"), text: z.string() });
const imagePartSchema = z.strictObject({
  type: z.literal("image_url"),
  image_url: z.looseObject({
    url: z
      .string()
      .regex(
        /^data:image\/[a-z0-9.+-]+;base64,[A-Za-z0-9+/]+={0,2}$/i,
        "only data:image/...;base64 URLs are accepted (nodes fetch nothing)",
      ),
    detail: z.string().optional(),
  }),
});
const contentSchema = z.union([
  z.string(),
  z.array(z.discriminatedUnion("type", [textPartSchema, imagePartSchema])),
]);

const chatMessageSchema = z.looseObject({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: contentSchema.nullish(),
  name: z.string().optional(),
  tool_calls: z.array(jsonObjectSchema).nullish(),
  tool_call_id: z.string().nullish(),
});

const stopSchema = z.union([z.string().min(1), z.array(z.string().min(1)).max(16)]).nullish();
const samplingFields = {
  model: z.string().min(1),
  max_tokens: z.int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  n: z.int().min(1).max(MAX_RETURN_SEQUENCES).nullish(),
  seed: z.int().min(0).max(0xffff_ffff).nullish(),
  stop: stopSchema,
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
};

/** OpenAI's `POST /v1/chat/completions` body (fields the network cannot honour are accepted and ignored). */
export const chatCompletionRequestSchema = z.looseObject({
  ...samplingFields,
  messages: z.array(chatMessageSchema).min(1),
  max_completion_tokens: z.int().min(1).nullish(),
  tools: z.array(jsonObjectSchema).nullish(),
});
export type ChatCompletionRequest = z.output<typeof chatCompletionRequestSchema>;

/** OpenAI's legacy `POST /v1/completions` body: one prompt, sent as one user message. */
export const completionRequestSchema = z.looseObject({
  ...samplingFields,
  prompt: z.union([z.string().min(1), z.array(z.string().min(1)).length(1, "one prompt per request")]),
  echo: z.boolean().nullish(),
});
export type CompletionRequest = z.output<typeof completionRequestSchema>;

/** OpenAI's `POST /v1/images/generations` body, plus `negative_prompt` and `seed`. */
export const imageRequestSchema = z.looseObject({
  prompt: z.string().min(1),
  model: z.string().min(1).nullish(),
  n: z.int().min(1).max(10).nullish(),
  size: z
    .string()
    .regex(/^[0-9]+x[0-9]+$/, "must be WIDTHxHEIGHT")
    .nullish(),
  response_format: z.literal("b64_json", "only b64_json is supported").nullish(),
  output_format: z.literal("png", "only png is supported").nullish(),
  negative_prompt: z.string().nullish(),
  seed: z.int().min(0).max(2_147_483_647).nullish(),
});
export type ImageRequest = z.output<typeof imageRequestSchema>;

/** Looks a model up; 404 in OpenAI's words when the bridge does not offer it, 400 when of the wrong kind. */
export function findModel<T extends BridgeModel["type"]>(
  models: Record<string, BridgeModel>,
  id: string,
  type: T,
): Extract<BridgeModel, { type: T }> {
  const model = Object.hasOwn(models, id) ? models[id] : undefined;
  if (!model)
    throw new BridgeError(`The model '${id}' does not exist or you do not have access to it.`, {
      status: 404,
      type: "invalid_request_error",
      code: "model_not_found",
      param: "model",
    });
  if (model.type !== type)
    throw new InvalidRequestError(
      `The model '${id}' is ${model.type === "gpt" ? "a text" : "an image"} model; use another endpoint.`,
      "model",
      { code: "model_not_supported" },
    );
  return model as Extract<BridgeModel, { type: T }>;
}

/** Where a GPT task field came from in the request, to name the right parameter in a 400. */
const GPT_PARAM: Record<string, string> = {
  "generation_config.max_new_tokens": "max_tokens",
  "generation_config.temperature": "temperature",
  "generation_config.top_p": "top_p",
  "generation_config.stop_strings": "stop",
  "generation_config.num_return_sequences": "n",
};

function checkGptArgs(args: GptTaskArgsInput, messagesParam: string): void {
  try {
    parseGptTaskArgs(args);
  } catch (error) {
    if (!(error instanceof TaskArgsError)) throw error;
    const issue = error.issues[0]!;
    const path = issue.path.map(String).join(".");
    const param =
      issue.path[0] === "messages"
        ? formatParam([messagesParam, ...issue.path.slice(1)])
        : (GPT_PARAM[path] ?? (issue.path[0] === "model" ? "model" : formatParam(issue.path)));
    throw new InvalidRequestError(`Invalid '${param}': ${issue.message}.`, param, {
      cause: error,
      details: error.details,
    });
  }
}

function generationConfig(
  request: z.output<z.ZodObject<typeof samplingFields>> & {
    max_completion_tokens?: number | null | undefined;
  },
  model: GptModelConfig,
): NonNullable<GptTaskArgsInput["generation_config"]> {
  // OpenAI's newer name wins over the deprecated one.
  const maxTokens = request.max_completion_tokens ?? request.max_tokens ?? model.defaultMaxTokens;
  if (maxTokens > model.maxTokens)
    throw new InvalidRequestError(
      `Invalid '${request.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens"}': at most ${model.maxTokens} for this model.`,
      request.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens",
    );
  const config: NonNullable<GptTaskArgsInput["generation_config"]> = { max_new_tokens: maxTokens };
  // Temperature 0 (or none) is greedy decoding, the only reproducible choice; the nodes must agree on the text.
  if (request.temperature != null && request.temperature > 0) {
    config.do_sample = true;
    config.temperature = request.temperature;
  } else {
    config.do_sample = false;
  }
  if (request.top_p != null) config.top_p = request.top_p;
  if (request.stop != null)
    config.stop_strings = typeof request.stop === "string" ? [request.stop] : request.stop;
  if (request.n != null && request.n > 1) config.num_return_sequences = request.n;
  return config;
}

function modelFields(model: GptModelConfig): Partial<GptTaskArgsInput> {
  return {
    ...(model.dtype ? { dtype: model.dtype } : {}),
    ...(model.quantizeBits ? { quantize_bits: model.quantizeBits } : {}),
  };
}

type GptMessageInput = GptTaskArgsInput["messages"][number];

function toTaskMessage(message: ChatCompletionRequest["messages"][number], index: number): GptMessageInput {
  // gpt-task knows no developer role; it is the newer name of the system role.
  const role = message.role === "developer" ? "system" : message.role;
  let content: GptMessageInput["content"];
  if (typeof message.content === "string" || message.content == null) content = message.content ?? null;
  else
    content = message.content.map((part, partIndex) => {
      if (part.type === "text") return { type: "text" as const, text: part.text };
      const comma = part.image_url.url.indexOf(",");
      const base64 = part.image_url.url.slice(comma + 1);
      if (base64 === "")
        throw new InvalidRequestError("Empty image.", formatParam(["messages", index, "content", partIndex]));
      return { type: "image" as const, base64 };
    });
  if (content === null && !(role === "assistant" && message.tool_calls?.length))
    throw new InvalidRequestError("content is required.", formatParam(["messages", index, "content"]), {
      code: "missing_required_parameter",
    });
  return {
    role,
    content,
    ...(message.tool_calls ? { tool_calls: message.tool_calls } : {}),
    ...(message.tool_call_id ? { tool_call_id: message.tool_call_id } : {}),
  } as GptMessageInput;
}

/** The GPT task arguments of a chat completion request. */
export function chatTaskArgs(request: ChatCompletionRequest, model: GptModelConfig): GptTaskArgsInput {
  const args: GptTaskArgsInput = {
    model: model.model,
    messages: request.messages.map(toTaskMessage),
    generation_config: generationConfig(request, model),
    seed: request.seed ?? 0,
    ...modelFields(model),
    ...(request.tools?.length ? { tools: request.tools } : {}),
  };
  checkGptArgs(args, "messages");
  return args;
}

/** The GPT task arguments of a completion request: the prompt is one user message. */
export function completionTaskArgs(request: CompletionRequest, model: GptModelConfig): GptTaskArgsInput {
  const prompt = typeof request.prompt === "string" ? request.prompt : request.prompt[0]!;
  const args: GptTaskArgsInput = {
    model: model.model,
    messages: [{ role: "user", content: prompt }],
    generation_config: generationConfig(request, model),
    seed: request.seed ?? 0,
    ...modelFields(model),
  };
  checkGptArgs(args, "prompt");
  return args;
}

const SD_PARAM: Record<string, string> = {
  "task_config.image_width": "size",
  "task_config.image_height": "size",
  "task_config.num_images": "n",
  "task_config.seed": "seed",
  prompt: "prompt",
  negative_prompt: "negative_prompt",
};

/** The SD task arguments of an image generation request. */
export function imageTaskArgs(request: ImageRequest, model: SdModelConfig): SdTaskArgsInput {
  const [width, height] = (request.size ?? model.defaultSize).split("x").map(Number) as [number, number];
  const args: SdTaskArgsInput = {
    ...(model.version ? { version: model.version } : {}),
    base_model: model.variant != null ? { name: model.baseModel, variant: model.variant } : model.baseModel,
    prompt: request.prompt,
    ...(request.negative_prompt ? { negative_prompt: request.negative_prompt } : {}),
    task_config: {
      num_images: request.n ?? 1,
      image_width: width,
      image_height: height,
      seed: request.seed ?? 0,
      ...(model.steps !== undefined ? { steps: model.steps } : {}),
      ...(model.cfg !== undefined ? { cfg: model.cfg } : {}),
    },
  };
  try {
    parseSdTaskArgs(args);
  } catch (error) {
    if (!(error instanceof TaskArgsError)) throw error;
    const issue = error.issues[0]!;
    const param = SD_PARAM[issue.path.map(String).join(".")] ?? "model";
    throw new InvalidRequestError(`Invalid '${param}': ${issue.message}.`, param, { cause: error });
  }
  return args;
}

/** The `usage` object of OpenAI responses. */
function usageOf(response: GptResponse) {
  return {
    prompt_tokens: response.usage.prompt_tokens,
    completion_tokens: response.usage.completion_tokens,
    total_tokens: response.usage.total_tokens,
  };
}

export type ResponseMeta = {
  /** Response id (`chatcmpl-…`). */
  id: string;
  /** Unix seconds. */
  created: number;
  /** The model id the request named. */
  model: string;
};

/** A `chat.completion` object for a task's response. */
export function chatCompletion(response: GptResponse, meta: ResponseMeta) {
  return {
    id: meta.id,
    object: "chat.completion" as const,
    created: meta.created,
    model: meta.model,
    system_fingerprint: null,
    choices: response.choices.map((choice) => ({
      index: choice.index,
      message: { role: "assistant" as const, content: choice.message.content, refusal: null },
      logprobs: null,
      finish_reason: choice.finish_reason,
    })),
    usage: usageOf(response),
  };
}

/** A `text_completion` object for a task's response. */
export function textCompletion(response: GptResponse, meta: ResponseMeta, echoPrompt?: string) {
  return {
    id: meta.id,
    object: "text_completion" as const,
    created: meta.created,
    model: meta.model,
    system_fingerprint: null,
    choices: response.choices.map((choice) => ({
      index: choice.index,
      text: (echoPrompt ?? "") + choice.message.content,
      logprobs: null,
      finish_reason: choice.finish_reason,
    })),
    usage: usageOf(response),
  };
}

/** Characters per streamed delta. The network does not stream: the finished text is cut in slices. */
export const STREAM_SLICE = 16;

function slices(text: string): string[] {
  const characters = Array.from(text);
  const out: string[] = [];
  for (let i = 0; i < characters.length; i += STREAM_SLICE)
    out.push(characters.slice(i, i + STREAM_SLICE).join(""));
  return out;
}

/** The `chat.completion.chunk` objects of a finished response, in the order OpenAI streams them. */
export function chatCompletionChunks(response: GptResponse, meta: ResponseMeta, includeUsage: boolean) {
  const base = {
    id: meta.id,
    object: "chat.completion.chunk" as const,
    created: meta.created,
    model: meta.model,
  };
  const chunk = (index: number, delta: Record<string, unknown>, finish: string | null) => ({
    ...base,
    system_fingerprint: null,
    choices: [{ index, delta, logprobs: null, finish_reason: finish }],
    ...(includeUsage ? { usage: null } : {}),
  });
  const chunks: unknown[] = [];
  for (const choice of response.choices) {
    chunks.push(chunk(choice.index, { role: "assistant", content: "", refusal: null }, null));
    for (const piece of slices(choice.message.content))
      chunks.push(chunk(choice.index, { content: piece }, null));
    chunks.push(chunk(choice.index, {}, choice.finish_reason));
  }
  if (includeUsage) chunks.push({ ...base, system_fingerprint: null, choices: [], usage: usageOf(response) });
  return chunks;
}

/** The `text_completion` chunks of a finished response. */
export function textCompletionChunks(
  response: GptResponse,
  meta: ResponseMeta,
  includeUsage: boolean,
  echoPrompt?: string,
) {
  const base = { id: meta.id, object: "text_completion" as const, created: meta.created, model: meta.model };
  const chunk = (index: number, text: string, finish: string | null) => ({
    ...base,
    system_fingerprint: null,
    choices: [{ index, text, logprobs: null, finish_reason: finish }],
  });
  const chunks: unknown[] = [];
  for (const choice of response.choices) {
    for (const piece of slices((echoPrompt ?? "") + choice.message.content))
      chunks.push(chunk(choice.index, piece, null));
    chunks.push(chunk(choice.index, "", choice.finish_reason));
  }
  if (includeUsage) chunks.push({ ...base, system_fingerprint: null, choices: [], usage: usageOf(response) });
  return chunks;
}
