import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { CrynuxError, type CrynuxErrorParameters } from "./errors.js";

/** A text part of a message, as a chat template input. */
export type ChatTemplateTextBlock = { readonly type: "text"; readonly text: string };

/** An image part of a message, as a chat template input. It reaches the template as the text `"<image>"`. */
export type ChatTemplateImageBlock = { readonly type: "image"; readonly base64: string };

/** A part of a message's content, as a chat template input. */
export type ChatTemplateContentBlock = ChatTemplateTextBlock | ChatTemplateImageBlock;

/**
 * One chat message as {@link renderChatTemplate} takes it: the OpenAI-style message of a Crynux GPT task.
 * Any other field a message object carries (a tool message's `name`, for instance) reaches the template as
 * it is.
 */
export type ChatTemplateMessage = {
  readonly role: "system" | "user" | "assistant" | "tool";
  readonly content?: string | readonly ChatTemplateContentBlock[] | null;
  readonly tool_call_id?: string | null;
  readonly tool_calls?: readonly Record<string, unknown>[] | null;
};

/** What {@link renderChatTemplate} takes. */
export type RenderChatTemplateParameters = {
  /** The model's Jinja chat template: `tokenizer.chat_template` of its GGUF metadata or tokenizer config. */
  template: string;
  /** The conversation. Block-list content is flattened to text first (see {@link renderChatTemplate}). */
  messages: readonly ChatTemplateMessage[];
  /** Whether to end with the header of a new assistant turn. Default `true`, as a Crynux node renders. */
  addGenerationPrompt?: boolean;
  /** The model's beginning-of-sequence token text (`bos_token`). Default `""`. */
  bosToken?: string;
  /** The model's end-of-sequence token text (`eos_token`). Default `""`. */
  eosToken?: string;
  /** Tool (function) definitions, passed to the template as `tools`. Absent or null: `tools` is none. */
  tools?: readonly Record<string, unknown>[] | null;
  /**
   * Extra template variables: the task's `template_args`, such as `date_string` for Llama 3.x templates.
   * They win over the variables above except `messages` (see {@link renderChatTemplate}).
   */
  templateArgs?: Record<string, unknown> | null;
};

/** Which step of {@link renderChatTemplate} failed. */
export type ChatTemplateErrorKind =
  /** The template is not valid Jinja (as far as `@huggingface/jinja` reads it). */
  | "syntax"
  /** Rendering failed: an unsupported filter, a type error, a template argument that is not JSON data. */
  | "render"
  /** The template called `raise_exception(message)`, e.g. to reject a conversation that does not alternate. */
  | "raised";

/**
 * Thrown by {@link renderChatTemplate} when a chat template does not parse, fails to render, or calls
 * `raise_exception`. `kind` says which; `cause` holds the underlying error.
 *
 * @example
 * ```ts
 * try {
 *   renderChatTemplate({ template, messages });
 * } catch (error) {
 *   if (error instanceof ChatTemplateError && error.kind === "raised") {
 *     console.log(error.shortMessage); // "The chat template rejected the input: Conversation roles must alternate ..."
 *   }
 * }
 * ```
 */
export class ChatTemplateError extends CrynuxError {
  override name = "ChatTemplateError";
  /** Which step failed. */
  readonly kind: ChatTemplateErrorKind;

  constructor(kind: ChatTemplateErrorKind, shortMessage: string, parameters: CrynuxErrorParameters = {}) {
    super(shortMessage, parameters);
    this.kind = kind;
  }
}

/** The text an image block of a message becomes, as in the original gpt-task's `content_to_text`. */
const IMAGE_PLACEHOLDER = "<image>";

/** How many parsed templates {@link renderChatTemplate} keeps. A node serves a handful of models. */
const TEMPLATE_CACHE_SIZE = 16;

/** Template variables that `templateArgs` cannot set. */
const RESERVED_VARIABLES = new Set(["messages", "raise_exception", "strftime_now"]);

/** Parsed templates by source text, least recently used first. */
const templateCache = new Map<string, Template>();

/**
 * Most interpreter steps (expressions and statements evaluated) one rendering may take. Real chat templates
 * take a few hundred per message; a template from a model file is untrusted input to a node, and without a
 * bound a loop like `{% for i in range(10**12) %}` would hold the node's CPU for good.
 */
const MAX_TEMPLATE_STEPS = 1_000_000;
/** Longest list `range()` may build inside a template. */
const MAX_RANGE_LENGTH = 100_000;

/** Thrown when a rendering goes past {@link MAX_TEMPLATE_STEPS} or builds too long a range. */
class TemplateBudgetExceeded extends Error {
  override name = "TemplateBudgetExceeded";
}

/**
 * The interpreter of @huggingface/jinja, counting every evaluation: it evaluates every node through
 * `this.evaluate`, so an own `evaluate` on the instance sees them all.
 */
function budgetedInterpreter(environment: Environment): Interpreter {
  const interpreter = new Interpreter(environment);
  let steps = 0;
  const step = () => {
    if (++steps > MAX_TEMPLATE_STEPS) {
      throw new TemplateBudgetExceeded(`The template took more than ${MAX_TEMPLATE_STEPS} evaluation steps.`);
    }
  };
  // A loop runs its body through `evaluateBlock` once per item, even an empty body: count both.
  const evaluate = interpreter.evaluate.bind(interpreter);
  interpreter.evaluate = (statement: Parameters<Interpreter["evaluate"]>[0], scope: Environment) => {
    step();
    return evaluate(statement, scope);
  };
  const evaluateBlock = interpreter.evaluateBlock.bind(interpreter);
  interpreter.evaluateBlock = (
    statements: Parameters<Interpreter["evaluateBlock"]>[0],
    scope: Environment,
  ) => {
    step();
    return evaluateBlock(statements, scope);
  };
  return interpreter;
}

/** Thrown by the `raise_exception` the templates see; turned into a {@link ChatTemplateError}. */
class RaisedByTemplate extends Error {
  override name = "RaisedByTemplate";
}

/**
 * Renders a conversation with a model's Jinja chat template, the way a Crynux node does with Hugging Face
 * transformers' `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
 * tools=tools, **template_args)`. The same inputs always give the same string, so a client can preview the
 * exact prompt of a task and every node renders the same bytes.
 *
 * The template sees:
 * - `messages`: copies of the messages. Content given as a list of blocks becomes one string, as the
 *   original gpt-task's `content_to_text` does: the texts of text blocks joined with nothing between them,
 *   each image block as `"<image>"`. Other fields (`tool_calls`, `tool_call_id`, ...) are kept as they are;
 *   fields whose value is `undefined` are left out, as they would be in the task's JSON.
 * - `add_generation_prompt`, `bos_token`, `eos_token`.
 * - `tools`: the tool list, or none (null) when there is none, as transformers passes `tools=None`; so both
 *   `{% if tools %}` and `{% if tools is not none %}` behave as in Python. `documents` is none likewise.
 * - every key of `templateArgs`. As in the original gpt-task (which merges `template_args` over its own
 *   arguments before calling `apply_chat_template`, and transformers lets keyword arguments override the
 *   special tokens), they override `add_generation_prompt`, `tools`, `documents`, `bos_token` and
 *   `eos_token`. They never replace `messages`, `raise_exception` or `strftime_now`: such keys are ignored
 *   (in Python, a `messages` key makes the call fail and gpt-task retries without it).
 * - `raise_exception(message)`, which throws a {@link ChatTemplateError} of kind `"raised"`.
 *
 * There is deliberately no `strftime_now` (transformers provides one that reads the clock), so templates
 * that use it only when it is defined fall back to their built-in date: Llama 3.x templates then say
 * "Today Date: 26 Jul 2024" unless `templateArgs.date_string` is given. A template that calls it anyway
 * fails with a {@link ChatTemplateError}.
 *
 * Message fields, tools and template arguments must be JSON data (what a task carries); anything else
 * (a function, a class instance, a bigint) is rejected with a {@link ChatTemplateError} of kind `"render"`.
 *
 * Line breaks in the template source are read as Python's Jinja2 reads them: `"\r\n"` and `"\r"` count as
 * `"\n"`, and one line break at the very end is dropped.
 *
 * A template is untrusted input (it comes with the model file): one rendering may take at most 1 million
 * evaluation steps and `range()` may build at most 100 000 items; past that it fails with a
 * {@link ChatTemplateError} of kind `"render"` instead of holding the CPU.
 *
 * Parsed templates are cached (the 16 most recently used template strings).
 *
 * @throws {ChatTemplateError} when the template does not parse, fails to render or raises an exception.
 *
 * @example
 * ```ts
 * const prompt = renderChatTemplate({
 *   template: "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
 *   messages: [{ role: "user", content: "Hello!" }],
 * });
 * // "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
 * ```
 */
export function renderChatTemplate(parameters: RenderChatTemplateParameters): string {
  const parsed = parseTemplate(parameters.template);

  const variables = new Map<string, unknown>([
    ["add_generation_prompt", parameters.addGenerationPrompt ?? true],
    ["bos_token", parameters.bosToken ?? ""],
    ["eos_token", parameters.eosToken ?? ""],
    ["tools", parameters.tools ?? null],
    ["documents", null],
  ]);
  try {
    for (const [key, value] of Object.entries(parameters.templateArgs ?? {})) {
      if (RESERVED_VARIABLES.has(key) || value === undefined) continue;
      variables.set(key, value);
    }
    for (const [key, value] of variables) variables.set(key, toJsonData(value, key));
    variables.set("messages", parameters.messages.map(toTemplateMessage));
  } catch (error) {
    throw new ChatTemplateError("render", "The chat template input is not JSON data", {
      details: error instanceof Error ? error.message : String(error),
      cause: error,
    });
  }

  const environment = new Environment();
  // The globals of @huggingface/jinja's `setupGlobals`, except `strftime_now` (it reads the clock) and with
  // a `raise_exception` whose errors can be told apart from the interpreter's own.
  environment.set("false", false);
  environment.set("true", true);
  environment.set("none", null);
  environment.set("False", false);
  environment.set("True", true);
  environment.set("None", null);
  environment.set("range", range);
  environment.set("raise_exception", (message: unknown) => {
    throw new RaisedByTemplate(String(message));
  });
  for (const [key, value] of variables) environment.set(key, value);

  let result: ReturnType<Interpreter["run"]>;
  try {
    result = budgetedInterpreter(environment).run(parsed.parsed);
  } catch (error) {
    if (error instanceof RaisedByTemplate) {
      throw new ChatTemplateError("raised", `The chat template rejected the input: ${error.message}`, {
        cause: error,
      });
    }
    if (error instanceof TemplateBudgetExceeded) {
      throw new ChatTemplateError("render", "The chat template is too expensive to render", {
        details: error.message,
        cause: error,
      });
    }
    throw new ChatTemplateError("render", "The chat template failed to render", {
      details: error instanceof Error ? error.message : String(error),
      cause: error,
    });
  }
  if (typeof result.value !== "string") {
    throw new ChatTemplateError("render", "The chat template did not render to a string", {
      details: `It rendered a ${result.type}.`,
    });
  }
  return result.value;
}

/** Parses a template, or takes it from the cache (and marks it as the most recently used). */
function parseTemplate(source: string): Template {
  const cached = templateCache.get(source);
  if (cached !== undefined) {
    templateCache.delete(source);
    templateCache.set(source, cached);
    return cached;
  }
  let template: Template;
  try {
    // Python's Jinja2 turns every line break of the source into "\n" (its lexer's `newline_sequence`);
    // @huggingface/jinja keeps "\r\n" and "\r" as they are.
    template = new Template(source.replace(/\r\n?/g, "\n"));
  } catch (error) {
    throw new ChatTemplateError("syntax", "The chat template is not valid Jinja", {
      details: error instanceof Error ? error.message : String(error),
      cause: error,
    });
  }
  if (templateCache.size >= TEMPLATE_CACHE_SIZE) {
    const oldest = templateCache.keys().next().value;
    if (oldest !== undefined) templateCache.delete(oldest);
  }
  templateCache.set(source, template);
  return template;
}

/** The message a template sees: content blocks flattened to text, JSON data only. */
function toTemplateMessage(message: ChatTemplateMessage, index: number): unknown {
  const copy = toJsonData(message, `messages[${index}]`) as Record<string, unknown>;
  if (Array.isArray(copy["content"])) copy["content"] = contentToText(copy["content"]);
  return copy;
}

/**
 * Flattens block-list content as the original gpt-task's `content_to_text` does: text blocks contribute
 * their text, image blocks `"<image>"`, other blocks nothing; the pieces are joined with nothing between.
 */
export function contentToText(blocks: readonly unknown[]): string {
  let text = "";
  for (const block of blocks) {
    if (block === null || typeof block !== "object") continue;
    const { type, text: blockText } = block as { type?: unknown; text?: unknown };
    if (type === "text") text += blockText === undefined ? "" : String(blockText);
    else if (type === "image") text += IMAGE_PLACEHOLDER;
  }
  return text;
}

/**
 * A copy of `value` as JSON data: object properties whose value is `undefined` are left out and `undefined`
 * array items become null, as `JSON.stringify` would write them. Throws on anything JSON cannot carry.
 */
function toJsonData(value: unknown, path: string): unknown {
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`${path} is ${value}, which JSON cannot carry.`);
    return value;
  }
  if (Array.isArray(value)) {
    return value.map((item, index) => (item === undefined ? null : toJsonData(item, `${path}[${index}]`)));
  }
  if (typeof value === "object") {
    const prototype = Object.getPrototypeOf(value);
    if (prototype !== Object.prototype && prototype !== null) {
      throw new Error(`${path} is a ${prototype?.constructor?.name ?? "non-plain"} object, not JSON data.`);
    }
    const copy: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      // Assigning "__proto__" would replace the copy's prototype instead of adding the field.
      if (key === "__proto__") throw new Error(`${path} has a "__proto__" key, which is not allowed.`);
      if (item !== undefined) copy[key] = toJsonData(item, `${path}.${key}`);
    }
    return copy;
  }
  throw new Error(`${path} is a ${typeof value}, not JSON data.`);
}

/** Python's `range`, as @huggingface/jinja defines it for templates. */
function range(start: number, stop?: number, step = 1): number[] {
  let first = start;
  let end = stop;
  if (end === undefined) {
    end = first;
    first = 0;
  }
  if (step === 0) throw new Error("range() step must not be zero");
  const length = Math.max(0, Math.ceil((end - first) / step));
  if (!(length <= MAX_RANGE_LENGTH)) {
    throw new TemplateBudgetExceeded(`range() of ${length} items: at most ${MAX_RANGE_LENGTH} are allowed.`);
  }
  const result: number[] = [];
  if (step > 0) for (let i = first; i < end; i += step) result.push(i);
  else for (let i = first; i > end; i += step) result.push(i);
  return result;
}

/**
 * The prompt of a model that has no chat template, as the original gpt-task's fallback renders it: each
 * message's content as text (block lists flattened by {@link contentToText}), joined by newlines. Roles,
 * tools and template arguments are not used.
 */
export function renderFallbackPrompt(messages: readonly ChatTemplateMessage[]): string {
  return messages
    .map((message) => {
      const content = message.content;
      if (typeof content === "string") return content;
      return Array.isArray(content) ? contentToText(content) : "";
    })
    .join("\n");
}
