import { totalmem } from "node:os";
import {
  ChatTemplateError,
  type GptResponse,
  type GptTaskArgs,
  gptResultHash,
  parseGptTaskArgs,
  type ResolvedGenerationConfig,
  renderChatTemplate,
  renderFallbackPrompt,
  resolveGenerationConfig,
} from "@crynux/tasks";
import { getLlama, type Llama, LlamaLogLevel, type Token } from "node-llama-cpp";
import type { Hex } from "viem";
import { ExecutionAbortedError, GptTaskExecutionError, PromptTooLongError } from "./errors.js";
import { type LoadedModel, ModelPool } from "./modelPool.js";
import {
  DEFAULT_EXECUTION_PROFILE,
  type ExecutionProfile,
  executionProfileSchema,
  runtimeId,
} from "./profile.js";
import { createRandom, sampleToken } from "./sampling.js";

/** The local file a task's model (and `quantize_bits`) resolves to, identified by its content hash. */
export type ExecutorModelFile = { path: string; sha256: string };

/** Maps a task's `model` and `quantize_bits` to the one GGUF file to run (download, quantize, cache). */
export type ExecutorModelResolver = (
  args: GptTaskArgs,
  options: { signal?: AbortSignal },
) => Promise<ExecutorModelFile>;

/** What {@link createGptExecutor} takes. */
export type CreateGptExecutorParameters = {
  /** Resolves a task's model to a local file. */
  resolveModel: ExecutorModelResolver;
  /** The deterministic execution profile; default {@link DEFAULT_EXECUTION_PROFILE}. */
  profile?: ExecutionProfile;
  /** Models (weights + context) kept loaded stay under this many bytes; default 60 % of RAM. */
  memoryBudgetBytes?: number;
  /** A node-llama-cpp instance to share; by default one is created (CPU, prebuilt binary, never built). */
  llama?: Llama;
};

/** Progress of one execution, reported after every generated token. */
export type GptExecutionProgress = { choice: number; choices: number; tokens: number; maxTokens: number };

/** What {@link GptExecutor.execute} takes besides the arguments. */
export type ExecuteGptTaskOptions = {
  signal?: AbortSignal;
  /** Called after every generated token, e.g. to show progress; it must not throw. */
  onProgress?: (progress: GptExecutionProgress) => void;
};

/** The outcome of a GPT task on this node. */
export type GptExecutionResult = {
  response: GptResponse;
  /** `gptResultHash(response)`: what the node commits to. */
  resultHash: Hex;
  model: ExecutorModelFile;
  /** The exact prompt fed to the model. */
  prompt: string;
  timings: {
    resolveMs: number;
    loadMs: number;
    /** Whole generation, all choices. */
    generateMs: number;
    /** Time to the first token of each choice (prompt processing), summed. */
    prefillMs: number;
    /** Time after the first token of each choice, summed. */
    decodeMs: number;
    promptTokens: number;
    completionTokens: number;
  };
};

/** Runs GPT tasks deterministically on node-llama-cpp. Create it with {@link createGptExecutor}. */
export type GptExecutor = {
  readonly profile: ExecutionProfile;
  /** The runtime id this executor's results are reproducible under (the node's group key part). */
  readonly runtimeId: string;
  /**
   * Executes a GPT task: resolves and loads the model, renders the prompt with the model's chat template,
   * generates every choice, and returns the ChatGPT-style response with its result hash.
   *
   * @throws {TaskArgsError} for invalid arguments; {@link GptTaskExecutionError} (and subclasses) for a task
   * that cannot run as written — the node reports these as task errors; {@link ExecutionAbortedError}.
   */
  execute(args: unknown, options?: ExecuteGptTaskOptions): Promise<GptExecutionResult>;
  /** The prompt a task renders to on this executor (loads the model to read its template and tokens). */
  renderPrompt(args: unknown): Promise<string>;
  /** Models currently loaded (path, content hash, estimated bytes). */
  loadedModels(): { path: string; sha256: string; bytes: number }[];
  /** Unloads every model and releases the engine (if this executor created it). */
  dispose(): Promise<void>;
};

/**
 * Creates a {@link GptExecutor}. Tasks run one at a time, each from an empty KV cache (no prompt-cache reuse
 * across tasks or choices), with the profile's exact thread count, batch size and context size, so that every
 * node with the same runtime id returns byte-identical responses.
 *
 * Decoding follows the task's resolved generation config: `do_sample: false` (the default) is greedy; with
 * sampling, the native llama.cpp sampler applies `repetition_penalty`, `top_k`, `top_p`, `min_p` and
 * `temperature` seeded with the task's `seed` (choice `i` uses `seed + i`); `typical_p < 1`, which the native
 * sampler lacks, switches to a JavaScript sampler with Hugging Face semantics. Generation of a choice stops
 * at an end-of-generation token or a stop string (`finish_reason: "stop"`, the stop string itself is cut
 * from the content) or at `max_new_tokens` (`"length"`).
 */
export async function createGptExecutor(parameters: CreateGptExecutorParameters): Promise<GptExecutor> {
  const profile = executionProfileSchema.parse(parameters.profile ?? DEFAULT_EXECUTION_PROFILE);
  const ownsLlama = parameters.llama === undefined;
  const llama =
    parameters.llama ??
    (await getLlama({ gpu: false, build: "never", maxThreads: 0, logLevel: LlamaLogLevel.error }));
  const pool = new ModelPool(llama, profile, parameters.memoryBudgetBytes ?? Math.floor(totalmem() * 0.6));
  let queue: Promise<unknown> = Promise.resolve();
  let disposed = false;

  const serialize = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work);
    queue = run.catch(() => {});
    return run;
  };

  const prepare = async (input: unknown, signal: AbortSignal | undefined) => {
    if (disposed) throw new ExecutionAbortedError("The GPT executor has been disposed.");
    const args = parseGptTaskArgs(input);
    const config = resolveGenerationConfig(args.generation_config);
    if (config.num_beams > 1) {
      throw new GptTaskExecutionError(
        "unsupported_option",
        "Beam search (num_beams > 1) is not supported by this runtime.",
      );
    }
    const startResolve = performance.now();
    const file = await parameters.resolveModel(args, signal ? { signal } : {});
    const startLoad = performance.now();
    const loaded = await pool.acquire(file.sha256, file.path);
    const loadMs = performance.now() - startLoad;
    return { args, config, file, loaded, resolveMs: startLoad - startResolve, loadMs };
  };

  return {
    profile,
    runtimeId: runtimeId(profile),

    execute(input, options = {}) {
      return serialize(async () => {
        const { args, config, file, loaded, resolveMs, loadMs } = await prepare(input, options.signal);
        try {
          const prompt = renderPrompt(loaded, args);
          const promptTokens = tokenizePrompt(loaded, prompt);
          if (promptTokens.length + config.max_new_tokens > profile.contextSize) {
            throw new PromptTooLongError(promptTokens.length, config.max_new_tokens, profile.contextSize);
          }
          const startGenerate = performance.now();
          const choices: GptResponse["choices"] = [];
          let completionTokens = 0;
          let prefillMs = 0;
          let decodeMs = 0;
          for (let index = 0; index < config.num_return_sequences; index++) {
            const choice = await generateChoice(loaded, promptTokens, config, (args.seed + index) >>> 0, {
              ...options,
              choice: index,
              choices: config.num_return_sequences,
            });
            completionTokens += choice.tokens;
            prefillMs += choice.prefillMs;
            decodeMs += choice.decodeMs;
            choices.push({
              index,
              message: { role: "assistant", content: choice.content },
              finish_reason: choice.finishReason,
            });
          }
          const response: GptResponse = {
            model: args.model,
            choices,
            usage: {
              prompt_tokens: promptTokens.length,
              completion_tokens: completionTokens,
              total_tokens: promptTokens.length + completionTokens,
            },
          };
          return {
            response,
            resultHash: gptResultHash(response),
            model: file,
            prompt,
            timings: {
              resolveMs,
              loadMs,
              generateMs: performance.now() - startGenerate,
              prefillMs,
              decodeMs,
              promptTokens: promptTokens.length,
              completionTokens,
            },
          };
        } finally {
          pool.release(loaded);
        }
      });
    },

    renderPrompt(input) {
      return serialize(async () => {
        const { args, loaded } = await prepare(input, undefined);
        try {
          return renderPrompt(loaded, args);
        } finally {
          pool.release(loaded);
        }
      });
    },

    loadedModels() {
      return pool.loaded().map((model) => ({ path: model.path, sha256: model.key, bytes: model.bytes }));
    },

    async dispose() {
      if (disposed) return;
      disposed = true;
      await queue;
      await pool.dispose();
      if (ownsLlama) await llama.dispose();
    },
  };
}

/**
 * Renders the task's messages with the model's own chat template (exactly as `renderChatTemplate` of
 * `@crynux/tasks` does for a client's preview). A model without a template gets the original gpt-task's
 * fallback: the messages' contents joined by newlines.
 */
function renderPrompt(loaded: LoadedModel, args: GptTaskArgs): string {
  const tokens = loaded.model.tokens;
  if (!loaded.chatTemplate) return renderFallbackPrompt(args.messages);
  try {
    return renderChatTemplate({
      template: loaded.chatTemplate,
      messages: args.messages,
      addGenerationPrompt: true,
      bosToken: tokens.bosString ?? "",
      eosToken: tokens.eosString ?? "",
      tools: args.tools,
      templateArgs: args.template_args,
    });
  } catch (error) {
    if (error instanceof ChatTemplateError) {
      throw new GptTaskExecutionError(
        "template_failed",
        `The model's chat template failed: ${error.shortMessage}`,
        {
          cause: error,
        },
      );
    }
    throw error;
  }
}

/**
 * Tokenizes the rendered prompt with special tokens recognised. As llama.cpp does, a BOS token is added
 * when the model asks for one (`add_bos_token`) and the template did not already write it.
 */
function tokenizePrompt(loaded: LoadedModel, prompt: string): Token[] {
  const { model } = loaded;
  const tokens = model.tokenize(prompt, true);
  const bos = model.tokens.bos;
  if (model.tokens.shouldPrependBosToken && bos !== null && tokens[0] !== bos) tokens.unshift(bos);
  if (tokens.length === 0)
    throw new GptTaskExecutionError("template_failed", "The rendered prompt is empty.");
  return tokens;
}

type ChoiceResult = {
  content: string;
  finishReason: "stop" | "length";
  tokens: number;
  prefillMs: number;
  decodeMs: number;
};

async function generateChoice(
  loaded: LoadedModel,
  promptTokens: Token[],
  config: ResolvedGenerationConfig,
  seed: number,
  options: ExecuteGptTaskOptions & { choice: number; choices: number },
): Promise<ChoiceResult> {
  const { model, sequence } = loaded;
  await sequence.clearHistory();
  const generated: Token[] = [];
  const history = (): Token[] => [...promptTokens, ...generated];
  let finishReason = "length" as "stop" | "length";
  let stopAt: number | undefined;
  const start = performance.now();
  let firstTokenAt: number | undefined;

  // Tokens whose text may hold a stop string that ends with the newest token.
  const stopWindow = 4 * Math.max(0, ...config.stop_strings.map((stop) => stop.length)) + 4;
  // Returns true when generation must stop after `token`.
  const accept = (token: Token): boolean => {
    if (options.signal?.aborted)
      throw new ExecutionAbortedError("The GPT task was aborted.", { cause: options.signal.reason });
    firstTokenAt ??= performance.now();
    generated.push(token);
    options.onProgress?.({
      choice: options.choice,
      choices: options.choices,
      tokens: generated.length,
      maxTokens: config.max_new_tokens,
    });
    if (model.isEogToken(token)) {
      finishReason = "stop";
      return true;
    }
    if (config.stop_strings.length > 0) {
      // No stop string was in the text before this token, so a new one ends in the text of the last few
      // tokens: look there (a token is at least one byte, a character at most 4), and only when one shows
      // up detokenize everything to find its position. Detokenizing the whole output per token made long
      // generations with stop strings quadratic.
      const tail = generated.slice(-stopWindow);
      const before = generated.slice(
        Math.max(0, generated.length - stopWindow - 8),
        -stopWindow || undefined,
      );
      const recent = model.detokenize(tail, false, before);
      if (config.stop_strings.some((stop) => recent.includes(stop))) {
        const text = model.detokenize(generated, false);
        for (const stop of config.stop_strings) {
          const at = text.indexOf(stop);
          if (at >= 0 && (stopAt === undefined || at < stopAt)) stopAt = at;
        }
      }
      if (stopAt !== undefined) {
        finishReason = "stop";
        return true;
      }
    }
    return generated.length >= config.max_new_tokens;
  };

  const sampling = config.do_sample && config.temperature > 0;
  if (sampling && config.typical_p < 1) {
    const random = createRandom(seed);
    let input: Token[] = promptTokens;
    for (;;) {
      const items = input.map((token, i) =>
        i === input.length - 1 ? ([token, { generateNext: { logits: true } }] as const) : token,
      );
      const results = await sequence.controlledEvaluate(
        items as Parameters<typeof sequence.controlledEvaluate>[0],
      );
      const logitsMap = results[input.length - 1]?.next?.logits;
      if (!logitsMap) throw new GptTaskExecutionError("unsupported_option", "The engine returned no logits.");
      let size = 0;
      for (const token of logitsMap.keys()) size = Math.max(size, token + 1);
      const logits = new Float64Array(size).fill(Number.NEGATIVE_INFINITY);
      for (const [token, logit] of logitsMap) logits[token] = logit;
      const token = sampleToken(logits, history(), config, random) as Token;
      if (accept(token)) break;
      input = [token];
    }
  } else {
    const iterator = sequence.evaluate(promptTokens, {
      temperature: sampling ? config.temperature : 0,
      topK: sampling ? config.top_k : undefined,
      topP: sampling && config.top_p < 1 ? config.top_p : undefined,
      minP: sampling && config.min_p > 0 ? config.min_p : undefined,
      seed,
      repeatPenalty:
        config.repetition_penalty === 1
          ? undefined
          : {
              punishTokens: history,
              maxPunishTokens: loaded.context.contextSize,
              penalty: config.repetition_penalty,
              frequencyPenalty: 0,
              presencePenalty: 0,
            },
      yieldEogToken: true,
    });
    for await (const token of iterator) {
      if (accept(token)) break;
    }
  }

  const contentTokens = finishReason === "stop" && stopAt === undefined ? generated.slice(0, -1) : generated;
  let content = model.detokenize(contentTokens, false);
  if (stopAt !== undefined) content = content.slice(0, stopAt);
  const end = performance.now();
  return {
    content: content.trim(),
    finishReason,
    tokens: generated.length,
    prefillMs: (firstTokenAt ?? end) - start,
    decodeMs: end - (firstTokenAt ?? end),
  };
}
