import { z } from "zod";
import { jsonObjectSchema as jsonObject } from "./json.js";
import { ModelRefError, parseModelRef } from "./modelRef.js";
import { parseWith } from "./taskArgsError.js";

const nonEmptyString = z.string().min(1);

/** Standard base64 (RFC 4648 §4 alphabet, padded), the form the original gpt-task accepts for images. */
const standardBase64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A text part of a message. */
export const textContentBlockSchema = z.strictObject({
  type: z.literal("text"),
  text: nonEmptyString,
});

/** An image part of a message: raw standard base64, without a `data:` URL prefix. */
export const imageContentBlockSchema = z.strictObject({
  type: z.literal("image"),
  base64: nonEmptyString.regex(standardBase64, "must be valid standard base64 (no data: prefix)"),
});

/** A part of a message's content. */
export const contentBlockSchema = z.discriminatedUnion("type", [
  textContentBlockSchema,
  imageContentBlockSchema,
]);

/** Roles a message may have. */
export const MESSAGE_ROLES = ["system", "user", "assistant", "tool"] as const;

/**
 * One chat message. `role` is required here (the original schema left it optional, but no chat template
 * can place a message without one). `content` may be text, a list of parts, or null (an assistant message
 * that only calls tools).
 */
export const gptMessageSchema = z.strictObject({
  role: z.enum(MESSAGE_ROLES),
  content: z.union([z.string(), z.array(contentBlockSchema), z.null()]).optional(),
  tool_call_id: z.string().nullable().optional(),
  tool_calls: z.array(jsonObject).nullable().optional(),
});

/** Largest `max_new_tokens` a task may ask for. */
export const MAX_NEW_TOKENS_LIMIT = 131_072;
/** Largest `num_return_sequences` a task may ask for. */
export const MAX_RETURN_SEQUENCES = 10;

const probability = z.number().min(0).max(1);

/**
 * Generation settings. Every key is optional; {@link resolveGenerationConfig} fills in the defaults that a
 * node uses. The original format had no numeric ranges; the ranges here are the ones a sampler can honour.
 */
export const gptGenerationConfigSchema = z.strictObject({
  max_new_tokens: z.int().min(1).max(MAX_NEW_TOKENS_LIMIT).optional(),
  stop_strings: z.array(nonEmptyString).max(16).optional(),
  do_sample: z.boolean().optional(),
  num_beams: z.int().min(1).max(16).optional(),
  temperature: z.number().min(0).max(100).optional(),
  typical_p: probability.optional(),
  top_k: z.int().min(0).optional(),
  top_p: probability.optional(),
  min_p: probability.optional(),
  repetition_penalty: z.number().gt(0).max(100).optional(),
  num_return_sequences: z.int().min(1).max(MAX_RETURN_SEQUENCES).optional(),
});

/** Precisions a model may be loaded in (`auto`: as stored in the model file). */
export const DTYPES = ["float16", "bfloat16", "float32", "auto"] as const;

/**
 * Arguments of a GPT task (task type 1), field for field as in the Crynux gpt-task format. Unknown fields
 * are rejected. Parsing fills in the top-level defaults (`seed` 0, `dtype` "auto", `null` for the rest).
 */
export const gptTaskArgsSchema = z.strictObject({
  model: nonEmptyString.superRefine((model, context) => {
    try {
      parseModelRef(model);
    } catch (error) {
      if (!(error instanceof ModelRefError)) throw error;
      context.addIssue({ code: "custom", message: error.shortMessage });
    }
  }),
  messages: z.array(gptMessageSchema).min(1),
  tools: z.array(jsonObject).nullable().default(null),
  generation_config: gptGenerationConfigSchema.nullable().default(null),
  template_args: jsonObject.nullable().default(null),
  seed: z.int().min(0).max(0xffff_ffff).default(0),
  dtype: z.enum(DTYPES).default("auto"),
  quantize_bits: z
    .union([z.literal(4), z.literal(8)])
    .nullable()
    .default(null),
});

/** GPT task arguments after parsing (defaults filled in). */
export type GptTaskArgs = z.output<typeof gptTaskArgsSchema>;
/** GPT task arguments as an application writes them (defaults optional). */
export type GptTaskArgsInput = z.input<typeof gptTaskArgsSchema>;
/** One chat message. */
export type GptMessage = z.output<typeof gptMessageSchema>;
/** A part of a message's content. */
export type ContentBlock = z.output<typeof contentBlockSchema>;
/** Generation settings as written in the task. */
export type GptGenerationConfig = z.output<typeof gptGenerationConfigSchema>;

/**
 * Validates GPT task arguments (an object, or JSON text) and returns them typed, with defaults filled in.
 * @throws {TaskArgsError} listing every bad field with its path.
 */
export function parseGptTaskArgs(input: unknown): GptTaskArgs {
  return parseWith(gptTaskArgsSchema, "GPT task arguments", input);
}

/** Generation settings with every default applied: what a node actually runs. */
export type ResolvedGenerationConfig = {
  max_new_tokens: number;
  stop_strings: string[];
  do_sample: boolean;
  num_beams: number;
  temperature: number;
  typical_p: number;
  top_k: number;
  top_p: number;
  min_p: number;
  repetition_penalty: number;
  num_return_sequences: number;
};

/**
 * The defaults a node applies to keys the task leaves out. They are those of Hugging Face
 * `GenerationConfig`, except `do_sample`: the original took it from the model's own generation config,
 * which GGUF files do not carry, so an unset `do_sample` means greedy decoding — the deterministic choice.
 */
export const GENERATION_DEFAULTS: Readonly<ResolvedGenerationConfig> = Object.freeze({
  max_new_tokens: 256,
  stop_strings: [],
  do_sample: false,
  num_beams: 1,
  temperature: 1,
  typical_p: 1,
  top_k: 50,
  top_p: 1,
  min_p: 0,
  repetition_penalty: 1,
  num_return_sequences: 1,
});

/** Applies {@link GENERATION_DEFAULTS} to a task's `generation_config`. */
export function resolveGenerationConfig(
  config: GptGenerationConfig | null | undefined,
): ResolvedGenerationConfig {
  const resolved: ResolvedGenerationConfig = { ...GENERATION_DEFAULTS, stop_strings: [] };
  if (!config) return resolved;
  for (const key of Object.keys(config) as (keyof GptGenerationConfig)[]) {
    const value = config[key];
    if (value !== undefined)
      (resolved as Record<string, unknown>)[key] = Array.isArray(value) ? [...value] : value;
  }
  return resolved;
}

/** Why generation stopped: the model's end-of-sequence token (`stop`) or the token limit (`length`). */
export const FINISH_REASONS = ["stop", "length"] as const;

/** A GPT task's result, ChatGPT-style. This JSON, canonicalized, is what nodes hash and compare. */
export const gptResponseSchema = z.strictObject({
  model: nonEmptyString,
  choices: z
    .array(
      z.strictObject({
        index: z.int().min(0),
        message: z.strictObject({ role: z.literal("assistant"), content: z.string() }),
        finish_reason: z.enum(FINISH_REASONS),
      }),
    )
    .min(1),
  usage: z.strictObject({
    prompt_tokens: z.int().min(0),
    completion_tokens: z.int().min(0),
    total_tokens: z.int().min(0),
  }),
});

/** A GPT task's result. */
export type GptResponse = z.output<typeof gptResponseSchema>;

/**
 * Validates a GPT response (an object, or JSON text). Beyond the shape, it checks that choices are
 * numbered 0..n-1 in order and that `total_tokens = prompt_tokens + completion_tokens`.
 * @throws {TaskArgsError}
 */
export function parseGptResponse(input: unknown): GptResponse {
  return parseWith(gptResponseCheckedSchema, "GPT response", input);
}

const gptResponseCheckedSchema = gptResponseSchema.superRefine((response, context) => {
  response.choices.forEach((choice, index) => {
    if (choice.index !== index) {
      context.addIssue({ code: "custom", path: ["choices", index, "index"], message: `must be ${index}` });
    }
  });
  const { prompt_tokens, completion_tokens, total_tokens } = response.usage;
  if (prompt_tokens + completion_tokens !== total_tokens) {
    context.addIssue({
      code: "custom",
      path: ["usage", "total_tokens"],
      message: "must equal prompt_tokens + completion_tokens",
    });
  }
});
