import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  canonicalize,
  GENERATION_DEFAULTS,
  gptResultHash,
  parseGptResponse,
  parseGptTaskArgs,
  resolveGenerationConfig,
  TaskArgsError,
  taskHash,
} from "../src/index.js";
import { gptArgsArbitrary } from "./arbitraries.js";

const minimal = {
  model: "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf",
  messages: [{ role: "user", content: "Hi" }],
};

function issuesOf(input: unknown) {
  try {
    parseGptTaskArgs(input);
  } catch (error) {
    expect(error).toBeInstanceOf(TaskArgsError);
    return (error as TaskArgsError).issues.map((issue) => issue.path.join("."));
  }
  throw new Error("expected a TaskArgsError");
}

describe("parseGptTaskArgs", () => {
  it("fills in the defaults of the gpt-task format", () => {
    expect(parseGptTaskArgs(minimal)).toEqual({
      ...minimal,
      tools: null,
      generation_config: null,
      template_args: null,
      seed: 0,
      dtype: "auto",
      quantize_bits: null,
    });
  });

  it("accepts the full format: content blocks, tools, tool calls, template args", () => {
    const args = {
      model: "bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
      messages: [
        { role: "system", content: "You are terse." },
        {
          role: "user",
          content: [
            { type: "text", text: "What is this?" },
            { type: "image", base64: "iVBORw0KGgo=" },
          ],
        },
        {
          role: "assistant",
          content: null,
          tool_calls: [{ type: "function", function: { name: "f", arguments: { x: 1 } } }],
        },
        { role: "tool", content: "42", tool_call_id: "call_1" },
      ],
      tools: [
        { type: "function", function: { name: "f", description: "d", parameters: { type: "object" } } },
      ],
      generation_config: {
        max_new_tokens: 30,
        do_sample: true,
        temperature: 0.7,
        top_p: 0.9,
        top_k: 40,
        stop_strings: ["\n\n"],
      },
      template_args: { enable_thinking: false },
      seed: 42,
      dtype: "bfloat16",
      quantize_bits: 4,
    };
    expect(parseGptTaskArgs(args)).toEqual(args);
  });

  it("accepts JSON text", () => {
    expect(parseGptTaskArgs(JSON.stringify(minimal)).messages).toEqual(minimal.messages);
  });

  it("lists every bad field with its path, and rejects unknown fields", () => {
    const paths = issuesOf({
      model: "",
      messages: [
        { role: "developer", content: "x" },
        { role: "user", content: [{ type: "image", base64: "data:image/png;base64,AAAA" }] },
      ],
      generation_config: { top_p: 1.5, max_new_tokens: 0, surprise: true },
      seed: -1,
      quantize_bits: 2,
      extra: 1,
    });
    expect(paths).toEqual(
      expect.arrayContaining([
        "model",
        "messages.0.role",
        "messages.1.content.0.base64",
        "generation_config.top_p",
        "generation_config.max_new_tokens",
        "generation_config.surprise",
        "seed",
        "quantize_bits",
        "extra",
      ]),
    );
  });

  it("rejects a model that is not one exact GGUF file", () => {
    expect(issuesOf({ ...minimal, model: "Qwen/Qwen2.5-7B-Instruct" })).toEqual(["model"]);
    expect(issuesOf({ ...minimal, model: "https://example.com/model.gguf" })).toEqual(["model"]);
  });

  it("requires at least one message and a role on each", () => {
    expect(issuesOf({ ...minimal, messages: [] })).toEqual(["messages"]);
    expect(issuesOf({ ...minimal, messages: [{ content: "no role" }] })).toEqual(["messages.0.role"]);
  });

  it("formats errors with the fields in the message", () => {
    try {
      parseGptTaskArgs({ ...minimal, seed: 1.5 });
      expect.unreachable();
    } catch (error) {
      const typed = error as TaskArgsError;
      expect(typed.shortMessage).toBe("Invalid GPT task arguments: 1 problem.");
      expect(typed.field).toBe("seed");
      expect(typed.message).toContain("- seed:");
    }
  });

  it("formats odd keys in paths unambiguously", () => {
    try {
      parseGptTaskArgs({ ...minimal, template_args: { "a b": { "": Number.NaN } } });
      expect.unreachable();
    } catch (error) {
      expect((error as TaskArgsError).field).toBe('template_args["a b"][""]');
    }
  });

  it("reports broken JSON text as a TaskArgsError", () => {
    expect(() => parseGptTaskArgs("{nope")).toThrow(TaskArgsError);
  });

  it("parse(serialize(x)) == x for valid arguments", () => {
    fc.assert(
      fc.property(gptArgsArbitrary, (input) => {
        const parsed = parseGptTaskArgs(input);
        expect(parseGptTaskArgs(JSON.parse(JSON.stringify(parsed)))).toEqual(parsed);
        expect(parseGptTaskArgs(canonicalize(parsed))).toEqual(parsed);
      }),
      { numRuns: 300 },
    );
  });

  it("never throws anything but TaskArgsError on junk", () => {
    const junk = fc.oneof(
      fc.anything(),
      fc.string(),
      gptArgsArbitrary.chain((args) =>
        fc
          .record({
            key: fc.constantFrom(...Object.keys(args), "messages", "generation_config"),
            value: fc.anything(),
          })
          .map(({ key, value }) => ({ ...args, [key]: value })),
      ),
    );
    fc.assert(
      fc.property(junk, (value) => {
        try {
          parseGptTaskArgs(value);
        } catch (error) {
          expect(error).toBeInstanceOf(TaskArgsError);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("rejects __proto__ keys instead of silently dropping them", () => {
    const raw = JSON.parse(
      '{"model":"o/r:Q4_0","messages":[{"role":"user","content":"x"}],"template_args":{"a":{"__proto__":{"x":1}}}}',
    );
    expect(issuesOf(raw)).toEqual(["template_args.a.__proto__"]);
    expect(issuesOf(JSON.parse('{"model":"o/r:Q4_0","messages":[{"role":"user"}],"__proto__":{}}'))).toEqual([
      "__proto__",
    ]);
  });

  it("copies free-form JSON so later changes to the input do not leak into the parsed value", () => {
    const input = { ...minimal, template_args: { nested: { flag: true } } };
    const parsed = parseGptTaskArgs(input);
    input.template_args.nested.flag = false;
    expect(parsed.template_args).toEqual({ nested: { flag: true } });
  });

  it("turns a throwing getter into a TaskArgsError", () => {
    const hostile = {
      ...minimal,
      get seed() {
        throw new Error("boom");
      },
    };
    expect(() => parseGptTaskArgs(hostile)).toThrow(TaskArgsError);
  });
});

describe("resolveGenerationConfig", () => {
  it("uses greedy decoding, 256 tokens and one sequence by default", () => {
    expect(resolveGenerationConfig(null)).toEqual(GENERATION_DEFAULTS);
    expect(GENERATION_DEFAULTS).toMatchObject({
      do_sample: false,
      max_new_tokens: 256,
      num_return_sequences: 1,
    });
  });

  it("overlays the task's keys without touching the defaults", () => {
    const resolved = resolveGenerationConfig({ temperature: 0.2, stop_strings: ["x"] });
    expect(resolved).toMatchObject({ temperature: 0.2, stop_strings: ["x"], top_k: 50 });
    resolved.stop_strings.push("y");
    expect(GENERATION_DEFAULTS.stop_strings).toEqual([]);
  });
});

describe("task hash and GPT result hash", () => {
  it("taskHash is keccak256 of the canonical JSON, independent of key order and spacing", () => {
    const a = taskHash({ model: "o/r:Q4_0", messages: [{ role: "user", content: "Hi" }], seed: 1 });
    const b = taskHash(
      JSON.parse('{ "seed": 1, "messages": [ { "content": "Hi", "role": "user" } ], "model": "o/r:Q4_0" }'),
    );
    expect(a).toBe(b);
    // keccak256('{"messages":[{"content":"Hi","role":"user"}],"model":"o/r:Q4_0","seed":1}'), computed independently.
    expect(a).toMatch(/^0x[0-9a-f]{64}$/);
    expect(taskHash({ ...minimal, seed: 2 })).not.toBe(taskHash({ ...minimal, seed: 1 }));
  });

  it("taskHash of an empty object is keccak256('{}')", () => {
    expect(taskHash({})).toBe("0xb48d38f93eaa084033fc5970bf96e559c33c4cdc07d889ab00b4d63f9590739d");
  });

  it("gptResultHash is sha256 of the canonical response bytes", () => {
    const response = parseGptResponse({
      model: "o/r:Q4_0",
      choices: [{ index: 0, message: { role: "assistant", content: "Hello" }, finish_reason: "stop" }],
      usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
    });
    const canonical =
      '{"choices":[{"finish_reason":"stop","index":0,"message":{"content":"Hello","role":"assistant"}}],"model":"o/r:Q4_0","usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}';
    expect(canonicalize(response)).toBe(canonical);
    const expected = `0x${createHash("sha256").update(canonical, "utf8").digest("hex")}`;
    expect(gptResultHash(response)).toBe(expected);
  });
});

describe("parseGptResponse", () => {
  const response = {
    model: "m",
    choices: [
      { index: 0, message: { role: "assistant", content: "a" }, finish_reason: "length" },
      { index: 1, message: { role: "assistant", content: "b" }, finish_reason: "stop" },
    ],
    usage: { prompt_tokens: 4, completion_tokens: 6, total_tokens: 10 },
  };

  it("accepts a well-formed response", () => {
    expect(parseGptResponse(response)).toEqual(response);
  });

  it("checks indexes, token arithmetic, finish reasons and unknown fields", () => {
    try {
      parseGptResponse({
        ...response,
        choices: [{ index: 1, message: { role: "assistant", content: "a" }, finish_reason: "tool_calls" }],
        usage: { prompt_tokens: 4, completion_tokens: 6, total_tokens: 11 },
        id: "x",
      });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(TaskArgsError);
      const paths = (error as TaskArgsError).issues.map((issue) => issue.path.join("."));
      expect(paths).toEqual(expect.arrayContaining(["choices.0.finish_reason", "id"]));
    }
    try {
      parseGptResponse({ ...response, usage: { prompt_tokens: 4, completion_tokens: 6, total_tokens: 11 } });
      expect.unreachable();
    } catch (error) {
      expect((error as TaskArgsError).issues.map((issue) => issue.path.join("."))).toEqual([
        "usage.total_tokens",
      ]);
    }
  });
});
