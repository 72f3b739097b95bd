/**
 * Chat template rendering against expected prompts taken from public sources, not from this code.
 *
 * Templates (test/fixtures/chat-templates/*.jinja, byte for byte as published):
 * - meta-llama-Llama-3.1-8B-Instruct, mistralai-Mistral-7B-Instruct-v0.3: the `chat_template` strings of
 *   huggingface/huggingface.js packages/jinja/test/e2e.test.js ("meta-llama/Llama-3.1-8B-Instruct",
 *   "mistralai/Mistral-7B-Instruct-v0.3 (JSON Schema)").
 * - meta-llama-Llama-3.2-3B-Instruct, mistralai-Mistral-Nemo-Instruct-2407: ggerganov/llama.cpp
 *   models/templates/*.jinja (the models' tokenizer_config.json templates).
 * - Qwen-Qwen2.5-7B-Instruct, google-gemma-7b-it, teknium-OpenHermes-2.5-Mistral-7B (plain ChatML):
 *   ggerganov/llama.cpp tests/chat/templates/*.jinja. (The Qwen file equals the Qwen2.5 template of the
 *   huggingface.js e2e test character for character.)
 *
 * Expected renderings:
 * - HF_E2E: the `target` strings of huggingface.js packages/jinja/test/e2e.test.js for the same `data`
 *   (targets produced with Python transformers' apply_chat_template).
 * - LLAMA_CPP_GOLDEN: ggerganov/llama.cpp tests/chat/goldens/<model>-<context>.txt, rendered by
 *   scripts/update_jinja_goldens.py with Python jinja2 (trim_blocks, lstrip_blocks, like transformers) from
 *   tests/chat/contexts/{simple,system}.json; its `strftime_now` returned the fixed date 2024-07-26.
 * - GEMMA_CARD: the prompt the Gemma model cards print for `apply_chat_template` of one user message.
 * - META_DOC: Meta's Llama 3.1 prompt-format example (system + user, "Today Date: 23 July 2024"), ending with
 *   the assistant header and "\n\n" as meta-llama/llama-models' ChatFormat.encode_header writes it.
 */
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ChatTemplateError,
  type ChatTemplateMessage,
  renderChatTemplate,
  renderFallbackPrompt,
} from "../src/chatTemplate.js";

function fixture(name: string): string {
  return readFileSync(new URL(`./fixtures/chat-templates/${name}.jinja`, import.meta.url), "utf8");
}

const LLAMA_3_1 = fixture("meta-llama-Llama-3.1-8B-Instruct");
const LLAMA_3_2 = fixture("meta-llama-Llama-3.2-3B-Instruct");
const QWEN_2_5 = fixture("Qwen-Qwen2.5-7B-Instruct");
const MISTRAL_V0_3 = fixture("mistralai-Mistral-7B-Instruct-v0.3");
const MISTRAL_NEMO = fixture("mistralai-Mistral-Nemo-Instruct-2407");
const GEMMA = fixture("google-gemma-7b-it");
const CHATML = fixture("teknium-OpenHermes-2.5-Mistral-7B");

/** tests/chat/contexts/simple.json of llama.cpp. */
const LLAMA_CPP_SIMPLE = {
  messages: [
    { role: "user", content: "What's your favourite LLM framework?" },
    { role: "assistant", content: "llama.cpp!" },
  ],
  addGenerationPrompt: true,
  bosToken: "<|startoftext|>",
  eosToken: "<|endoftext|>",
} as const satisfies Omit<Parameters<typeof renderChatTemplate>[0], "template">;

/** tests/chat/contexts/system.json of llama.cpp. */
const LLAMA_CPP_SYSTEM = {
  ...LLAMA_CPP_SIMPLE,
  messages: [{ role: "system", content: "You only tell the truth." }, ...LLAMA_CPP_SIMPLE.messages],
} as const;

/** EXAMPLE_CHAT of the huggingface.js e2e test. */
const EXAMPLE_CHAT: ChatTemplateMessage[] = [
  { role: "user", content: "Hello, how are you?" },
  { role: "assistant", content: "I'm doing great. How can I help you today?" },
  { role: "user", content: "I'd like to show off how chat templating works!" },
];

/** EXAMPLE_TOOL_JSON_SCHEMAS of the huggingface.js e2e test. */
const TOOL_GET_CURRENT_TEMPERATURE_V1 = {
  type: "function",
  function: {
    name: "get_current_temperature",
    description: "Get the current temperature at a location.",
    parameters: {
      type: "object",
      properties: {
        location: {
          type: "string",
          description: 'The location to get the temperature for, in the format "City, Country"',
        },
      },
      required: ["location"],
    },
    return: {
      type: "number",
      description: "The current temperature at the specified location in the specified units, as a float.",
    },
  },
};
const TOOL_GET_CURRENT_TEMPERATURE_V2 = {
  type: "function",
  function: {
    name: "get_current_temperature",
    description: "Get the current temperature at a location.",
    parameters: {
      type: "object",
      properties: {
        location: {
          type: "string",
          description: 'The location to get the temperature for, in the format "City, Country"',
        },
        unit: {
          type: "string",
          enum: ["celsius", "fahrenheit"],
          description: "The unit to return the temperature in.",
        },
      },
      required: ["location", "unit"],
    },
    return: {
      type: "number",
      description: "The current temperature at the specified location in the specified units, as a float.",
    },
  },
};
const TOOL_GET_CURRENT_WIND_SPEED = {
  type: "function",
  function: {
    name: "get_current_wind_speed",
    description: "Get the current wind speed in km/h at a given location.",
    parameters: {
      type: "object",
      properties: {
        location: {
          type: "string",
          description: 'The location to get the temperature for, in the format "City, Country"',
        },
      },
      required: ["location"],
    },
    return: {
      type: "number",
      description: "The current wind speed at the given location in km/h, as a float.",
    },
  },
};

function rejection(render: () => unknown): ChatTemplateError {
  try {
    render();
  } catch (error) {
    expect(error).toBeInstanceOf(ChatTemplateError);
    return error as ChatTemplateError;
  }
  throw new Error("expected a ChatTemplateError");
}

afterEach(() => {
  vi.useRealTimers();
});

describe("renderChatTemplate: Llama 3.1 (meta-llama/Llama-3.1-8B-Instruct)", () => {
  it("renders tools in the first user message (HF_E2E)", () => {
    const prompt = renderChatTemplate({
      template: LLAMA_3_1,
      messages: [
        { role: "system", content: "You are a bot that responds to weather queries." },
        { role: "user", content: "Hey, what's the temperature in Paris right now?" },
      ],
      tools: [TOOL_GET_CURRENT_TEMPERATURE_V1],
      bosToken: "<|begin_of_text|>",
      eosToken: "<|im_end|>",
      addGenerationPrompt: true,
    });
    expect(prompt).toBe(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n" +
        "\n" +
        "Environment: ipython\n" +
        "Cutting Knowledge Date: December 2023\n" +
        "Today Date: 26 Jul 2024\n" +
        "\n" +
        "You are a bot that responds to weather queries.<|eot_id|><|start_header_id|>user<|end_header_id|>\n" +
        "\n" +
        "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n" +
        "\n" +
        'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.\n' +
        "\n" +
        "{\n" +
        '    "type": "function",\n' +
        '    "function": {\n' +
        '        "name": "get_current_temperature",\n' +
        '        "description": "Get the current temperature at a location.",\n' +
        '        "parameters": {\n' +
        '            "type": "object",\n' +
        '            "properties": {\n' +
        '                "location": {\n' +
        '                    "type": "string",\n' +
        '                    "description": "The location to get the temperature for, in the format \\"City, Country\\""\n' +
        "                }\n" +
        "            },\n" +
        '            "required": [\n' +
        '                "location"\n' +
        "            ]\n" +
        "        },\n" +
        '        "return": {\n' +
        '            "type": "number",\n' +
        '            "description": "The current temperature at the specified location in the specified units, as a float."\n' +
        "        }\n" +
        "    }\n" +
        "}\n" +
        "\n" +
        "Hey, what's the temperature in Paris right now?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n",
    );
  });

  it("takes date_string from templateArgs (META_DOC)", () => {
    const prompt = renderChatTemplate({
      template: LLAMA_3_1,
      messages: [
        { role: "system", content: "You are a helpful assistant" },
        { role: "user", content: "What is the capital of France?" },
      ],
      bosToken: "<|begin_of_text|>",
      eosToken: "<|eot_id|>",
      templateArgs: { date_string: "23 July 2024" },
    });
    expect(prompt).toBe(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
        "Cutting Knowledge Date: December 2023\n" +
        "Today Date: 23 July 2024\n\n" +
        "You are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" +
        "What is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
  });
});

describe("renderChatTemplate: Llama 3.2 (meta-llama/Llama-3.2-3B-Instruct)", () => {
  it("renders a user/assistant conversation (LLAMA_CPP_GOLDEN simple)", () => {
    expect(renderChatTemplate({ template: LLAMA_3_2, ...LLAMA_CPP_SIMPLE })).toBe(
      "<|startoftext|><|start_header_id|>system<|end_header_id|>\n" +
        "\n" +
        "Cutting Knowledge Date: December 2023\n" +
        "Today Date: 26 Jul 2024\n" +
        "\n" +
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n" +
        "\n" +
        "What's your favourite LLM framework?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n" +
        "llama.cpp!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n",
    );
  });

  it("renders a system message (LLAMA_CPP_GOLDEN system)", () => {
    expect(renderChatTemplate({ template: LLAMA_3_2, ...LLAMA_CPP_SYSTEM })).toBe(
      "<|startoftext|><|start_header_id|>system<|end_header_id|>\n" +
        "\n" +
        "Cutting Knowledge Date: December 2023\n" +
        "Today Date: 26 Jul 2024\n" +
        "\n" +
        "You only tell the truth.<|eot_id|><|start_header_id|>user<|end_header_id|>\n" +
        "\n" +
        "What's your favourite LLM framework?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n" +
        "llama.cpp!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n",
    );
  });

  it("uses the template's default date, not the clock, when date_string is not given", () => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date("2031-05-17T12:00:00Z"));
    const prompt = renderChatTemplate({ template: LLAMA_3_2, ...LLAMA_CPP_SIMPLE });
    expect(prompt).toBe(
      "<|startoftext|><|start_header_id|>system<|end_header_id|>\n" +
        "\n" +
        "Cutting Knowledge Date: December 2023\n" +
        "Today Date: 26 Jul 2024\n" +
        "\n" +
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n" +
        "\n" +
        "What's your favourite LLM framework?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n" +
        "llama.cpp!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n",
    );
    expect(prompt).toContain("Today Date: 26 Jul 2024\n");
    expect(prompt).not.toContain("2031");
  });

  it("leaves out message fields that are undefined, as the task's JSON would", () => {
    // The template tests `'tool_calls' in message`: a key holding undefined must not count as present.
    const messages: ChatTemplateMessage[] = [
      { role: "user", content: "What's your favourite LLM framework?", tool_calls: undefined },
      { role: "assistant", content: "llama.cpp!", tool_call_id: undefined },
    ];
    expect(renderChatTemplate({ ...LLAMA_CPP_SIMPLE, template: LLAMA_3_2, messages })).toBe(
      "<|startoftext|><|start_header_id|>system<|end_header_id|>\n" +
        "\n" +
        "Cutting Knowledge Date: December 2023\n" +
        "Today Date: 26 Jul 2024\n" +
        "\n" +
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n" +
        "\n" +
        "What's your favourite LLM framework?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n" +
        "llama.cpp!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n" +
        "\n",
    );
  });
});

describe("renderChatTemplate: Qwen 2.5 (Qwen/Qwen2.5-7B-Instruct)", () => {
  it("renders the default system prompt (LLAMA_CPP_GOLDEN simple)", () => {
    expect(renderChatTemplate({ template: QWEN_2_5, ...LLAMA_CPP_SIMPLE })).toBe(
      "<|im_start|>system\n" +
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
        "<|im_start|>user\n" +
        "What's your favourite LLM framework?<|im_end|>\n" +
        "<|im_start|>assistant\n" +
        "llama.cpp!<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
  });

  it("renders tools, tool calls and tool responses (HF_E2E)", () => {
    const messages = [
      {
        role: "system" as const,
        content:
          "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\nCurrent Date: 2024-09-30",
      },
      { role: "user" as const, content: "What's the temperature in San Francisco now? How about tomorrow?" },
      {
        role: "assistant" as const,
        content: "",
        tool_calls: [
          {
            type: "function",
            function: { name: "get_current_temperature", arguments: { location: "San Francisco, CA, USA" } },
          },
          {
            type: "function",
            function: {
              name: "get_temperature_date",
              arguments: { location: "San Francisco, CA, USA", date: "2024-10-01" },
            },
          },
        ],
      },
      {
        role: "tool" as const,
        name: "get_current_temperature",
        content: '{"temperature": 26.1, "location": "San Francisco, CA, USA", "unit": "celsius"}',
      },
      {
        role: "tool" as const,
        name: "get_temperature_date",
        content:
          '{"temperature": 25.9, "location": "San Francisco, CA, USA", "date": "2024-10-01", "unit": "celsius"}',
      },
    ];
    const tools = [
      {
        type: "function",
        function: {
          name: "get_current_temperature",
          description: "Get current temperature at a location.",
          parameters: {
            type: "object",
            properties: {
              location: {
                type: "string",
                description: 'The location to get the temperature for, in the format "City, State, Country".',
              },
              unit: {
                type: "string",
                enum: ["celsius", "fahrenheit"],
                description: 'The unit to return the temperature in. Defaults to "celsius".',
              },
            },
            required: ["location"],
          },
        },
      },
      {
        type: "function",
        function: {
          name: "get_temperature_date",
          description: "Get temperature at a location and date.",
          parameters: {
            type: "object",
            properties: {
              location: {
                type: "string",
                description: 'The location to get the temperature for, in the format "City, State, Country".',
              },
              date: {
                type: "string",
                description: 'The date to get the temperature for, in the format "Year-Month-Day".',
              },
              unit: {
                type: "string",
                enum: ["celsius", "fahrenheit"],
                description: 'The unit to return the temperature in. Defaults to "celsius".',
              },
            },
            required: ["location", "date"],
          },
        },
      },
    ];
    // The e2e data has no add_generation_prompt, i.e. false.
    const prompt = renderChatTemplate({ template: QWEN_2_5, messages, tools, addGenerationPrompt: false });
    expect(prompt).toBe(
      "<|im_start|>system\n" +
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n" +
        "\n" +
        "Current Date: 2024-09-30\n" +
        "\n" +
        "# Tools\n" +
        "\n" +
        "You may call one or more functions to assist with the user query.\n" +
        "\n" +
        "You are provided with function signatures within <tools></tools> XML tags:\n" +
        "<tools>\n" +
        '{"type": "function", "function": {"name": "get_current_temperature", "description": "Get current temperature at a location.", "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "The location to get the temperature for, in the format \\"City, State, Country\\"."}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit to return the temperature in. Defaults to \\"celsius\\"."}}, "required": ["location"]}}}\n' +
        '{"type": "function", "function": {"name": "get_temperature_date", "description": "Get temperature at a location and date.", "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "The location to get the temperature for, in the format \\"City, State, Country\\"."}, "date": {"type": "string", "description": "The date to get the temperature for, in the format \\"Year-Month-Day\\"."}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit to return the temperature in. Defaults to \\"celsius\\"."}}, "required": ["location", "date"]}}}\n' +
        "</tools>\n" +
        "\n" +
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
        "<tool_call>\n" +
        '{"name": <function-name>, "arguments": <args-json-object>}\n' +
        "</tool_call><|im_end|>\n" +
        "<|im_start|>user\n" +
        "What's the temperature in San Francisco now? How about tomorrow?<|im_end|>\n" +
        "<|im_start|>assistant\n" +
        "<tool_call>\n" +
        '{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}\n' +
        "</tool_call>\n" +
        "<tool_call>\n" +
        '{"name": "get_temperature_date", "arguments": {"location": "San Francisco, CA, USA", "date": "2024-10-01"}}\n' +
        "</tool_call><|im_end|>\n" +
        "<|im_start|>user\n" +
        "<tool_response>\n" +
        '{"temperature": 26.1, "location": "San Francisco, CA, USA", "unit": "celsius"}\n' +
        "</tool_response>\n" +
        "<tool_response>\n" +
        '{"temperature": 25.9, "location": "San Francisco, CA, USA", "date": "2024-10-01", "unit": "celsius"}\n' +
        "</tool_response><|im_end|>\n",
    );
  });
});

describe("renderChatTemplate: Mistral", () => {
  it("renders Mistral-7B-Instruct-v0.3 tools, a tool call and its result (HF_E2E)", () => {
    const messages = [
      {
        role: "system" as const,
        content:
          "You are a bot that responds to weather queries. You should reply with the unit used in the queried location.",
      },
      { role: "user" as const, content: "Hey, what's the temperature in Paris right now?" },
      {
        role: "assistant" as const,
        tool_calls: [
          {
            id: "abcdef123",
            type: "function",
            function: {
              name: "get_current_temperature",
              arguments: { location: "Paris, France", unit: "celsius" },
            },
          },
        ],
      },
      { role: "tool" as const, tool_call_id: "abcdef123", name: "get_current_temperature", content: "22.0" },
    ];
    const prompt = renderChatTemplate({
      template: MISTRAL_V0_3,
      messages,
      tools: [TOOL_GET_CURRENT_TEMPERATURE_V2, TOOL_GET_CURRENT_WIND_SPEED],
      bosToken: "<s>",
      eosToken: "</s>",
    });
    expect(prompt).toBe(
      '<s> [AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_current_temperature", "description": "Get the current temperature at a location.", "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "The location to get the temperature for, in the format \\"City, Country\\""}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit to return the temperature in."}}, "required": ["location", "unit"]}}}, {"type": "function", "function": {"name": "get_current_wind_speed", "description": "Get the current wind speed in km/h at a given location.", "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "The location to get the temperature for, in the format \\"City, Country\\""}}, "required": ["location"]}}}] [/AVAILABLE_TOOLS] [INST] Hey, what\'s the temperature in Paris right now? [/INST] [TOOL_CALLS] [{"name": "get_current_temperature", "arguments": {"location": "Paris, France", "unit": "celsius"}, "id": "abcdef123"}] </s> [TOOL_RESULTS] {"call_id": "abcdef123", "content": 22.0} [/TOOL_RESULTS] ',
    );
  });

  it("renders a Mistral-Nemo-Instruct-2407 conversation (HF_E2E)", () => {
    expect(
      renderChatTemplate({
        template: MISTRAL_NEMO,
        messages: EXAMPLE_CHAT,
        bosToken: "<s>",
        eosToken: "</s>",
      }),
    ).toBe(
      "<s>[INST]Hello, how are you?[/INST]I'm doing great. How can I help you today?</s>[INST]I'd like to show off how chat templating works![/INST]",
    );
  });

  it("renders a Mistral-Nemo-Instruct-2407 conversation (LLAMA_CPP_GOLDEN simple)", () => {
    expect(renderChatTemplate({ template: MISTRAL_NEMO, ...LLAMA_CPP_SIMPLE })).toBe(
      "<|startoftext|>[INST]What's your favourite LLM framework?[/INST]llama.cpp!<|endoftext|>",
    );
  });

  it("turns the template's raise_exception into a ChatTemplateError", () => {
    const error = rejection(() =>
      renderChatTemplate({
        template: MISTRAL_NEMO,
        messages: [
          { role: "user", content: "Hello" },
          { role: "user", content: "Hello again" },
        ],
      }),
    );
    expect(error.kind).toBe("raised");
    expect(error.name).toBe("ChatTemplateError");
    expect(error.shortMessage).toBe(
      "The chat template rejected the input: " +
        "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...",
    );
    expect(error.cause).toBeInstanceOf(Error);
  });
});

describe("renderChatTemplate: Gemma (google/gemma-7b-it)", () => {
  it("renders a user/assistant conversation (LLAMA_CPP_GOLDEN simple, google/gemma-2-2b-it)", () => {
    expect(renderChatTemplate({ template: GEMMA, ...LLAMA_CPP_SIMPLE })).toBe(
      "<|startoftext|><start_of_turn>user\n" +
        "What's your favourite LLM framework?<end_of_turn>\n" +
        "<start_of_turn>model\n" +
        "llama.cpp!<end_of_turn>\n" +
        "<start_of_turn>model\n",
    );
  });

  it("renders one user message (GEMMA_CARD)", () => {
    const prompt = renderChatTemplate({
      template: GEMMA,
      messages: [{ role: "user", content: "Write a hello world program" }],
      bosToken: "<bos>",
      eosToken: "<eos>",
    });
    expect(prompt).toBe(
      "<bos><start_of_turn>user\nWrite a hello world program<end_of_turn>\n<start_of_turn>model\n",
    );
  });

  it("rejects a system message through raise_exception", () => {
    const error = rejection(() => renderChatTemplate({ template: GEMMA, ...LLAMA_CPP_SYSTEM }));
    expect(error.kind).toBe("raised");
    expect(error.shortMessage).toBe("The chat template rejected the input: System role not supported");
  });

  it("rejects a conversation that does not alternate through raise_exception", () => {
    const error = rejection(() =>
      renderChatTemplate({
        template: GEMMA,
        messages: [
          { role: "user", content: "Hi" },
          { role: "assistant", content: "Hello" },
          { role: "assistant", content: "Anyone there?" },
        ],
      }),
    );
    expect(error.kind).toBe("raised");
    expect(error.shortMessage).toBe(
      "The chat template rejected the input: Conversation roles must alternate user/assistant/user/assistant/...",
    );
  });
});

describe("renderChatTemplate: ChatML (teknium/OpenHermes-2.5-Mistral-7B)", () => {
  it("renders a user/assistant conversation (LLAMA_CPP_GOLDEN simple)", () => {
    expect(renderChatTemplate({ template: CHATML, ...LLAMA_CPP_SIMPLE })).toBe(
      "<|im_start|>user\n" +
        "What's your favourite LLM framework?<|im_end|>\n" +
        "<|im_start|>assistant\n" +
        "llama.cpp!<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
  });

  it("renders a system message (LLAMA_CPP_GOLDEN system)", () => {
    expect(renderChatTemplate({ template: CHATML, ...LLAMA_CPP_SYSTEM })).toBe(
      "<|im_start|>system\n" +
        "You only tell the truth.<|im_end|>\n" +
        "<|im_start|>user\n" +
        "What's your favourite LLM framework?<|im_end|>\n" +
        "<|im_start|>assistant\n" +
        "llama.cpp!<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
  });

  it("renders without a generation prompt (HF_E2E _base)", () => {
    expect(renderChatTemplate({ template: CHATML, messages: EXAMPLE_CHAT, addGenerationPrompt: false })).toBe(
      "<|im_start|>user\n" +
        "Hello, how are you?<|im_end|>\n" +
        "<|im_start|>assistant\n" +
        "I'm doing great. How can I help you today?<|im_end|>\n" +
        "<|im_start|>user\n" +
        "I'd like to show off how chat templating works!<|im_end|>\n",
    );
  });
});

describe("renderChatTemplate: inputs", () => {
  it("flattens content blocks: texts joined with nothing between, images as <image>", () => {
    const prompt = renderChatTemplate({
      template: CHATML,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "What is in " },
            { type: "image", base64: "aGVsbG8=" },
            { type: "text", text: " this picture?" },
            { type: "image", base64: "d29ybGQ=" },
          ],
        },
      ],
    });
    expect(prompt).toBe(
      "<|im_start|>user\nWhat is in <image> this picture?<image><|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("keeps tool_calls and tool_call_id as they are and does not change the input", () => {
    const messages: ChatTemplateMessage[] = [
      {
        role: "assistant",
        content: [{ type: "text", text: "Let me check." }],
        tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: { x: 1 } } }],
      },
      { role: "tool", tool_call_id: "call_1", content: "42" },
    ];
    const before = structuredClone(messages);
    const prompt = renderChatTemplate({
      template:
        "{% for m in messages %}{{ m.role }}:{{ m.content }}|{% if m.tool_calls is defined %}{{ m.tool_calls | tojson }}{% endif %}|{{ m.tool_call_id }};{% endfor %}",
      messages,
    });
    expect(prompt).toBe(
      'assistant:Let me check.|[{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]|;' +
        "tool:42||call_1;",
    );
    expect(messages).toEqual(before);
  });

  it("passes tools as none when there are none, like transformers' tools=None", () => {
    const template = "{{ tools is defined }} {{ tools is none }} {% if tools %}yes{% else %}no{% endif %}";
    expect(renderChatTemplate({ template, messages: [] })).toBe("true true no");
    expect(renderChatTemplate({ template, messages: [], tools: null })).toBe("true true no");
    expect(renderChatTemplate({ template, messages: [], tools: [{ type: "function" }] })).toBe(
      "true false yes",
    );
  });

  it("lets templateArgs override the named variables but not messages", () => {
    const template =
      "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ messages | length }}|{{ custom_flag }}";
    const prompt = renderChatTemplate({
      template,
      messages: [{ role: "user", content: "hi" }],
      bosToken: "<s>",
      eosToken: "</s>",
      templateArgs: { bos_token: "<bos>", add_generation_prompt: false, messages: [], custom_flag: "on" },
    });
    expect(prompt).toBe("<bos>|</s>|false|1|on");
  });

  it("has no strftime_now", () => {
    expect(renderChatTemplate({ template: "{{ strftime_now is defined }}", messages: [] })).toBe("false");
    const error = rejection(() =>
      renderChatTemplate({ template: "{{ strftime_now('%d %b %Y') }}", messages: [] }),
    );
    expect(error.kind).toBe("render");
  });

  it("reads line breaks in the template as Python's Jinja2 does", () => {
    // Jinja2 turns "\r\n" and "\r" into "\n" and drops one line break at the end of the source.
    const template = "{% for m in messages %}{{ m.content }}\r\n{% endfor %}x\ry\r\n";
    const messages: ChatTemplateMessage[] = [
      { role: "user", content: "a" },
      { role: "assistant", content: "b" },
    ];
    expect(renderChatTemplate({ template, messages })).toBe("a\nb\nx\ny");
  });

  it("rejects template arguments that are not JSON data", () => {
    const error = rejection(() =>
      renderChatTemplate({ template: "{{ x }}", messages: [], templateArgs: { x: () => "now" } }),
    );
    expect(error.kind).toBe("render");
    expect(error.details).toContain("x is a function");
  });
});

describe("renderChatTemplate: errors and determinism", () => {
  it("throws a ChatTemplateError of kind syntax for a template that does not parse", () => {
    const error = rejection(() => renderChatTemplate({ template: "{% if %}oops", messages: [] }));
    expect(error.kind).toBe("syntax");
    expect(error.shortMessage).toBe("The chat template is not valid Jinja");
    expect(error.cause).toBeInstanceOf(Error);
    expect(error.message).toContain((error.cause as Error).message);
  });

  it("throws a ChatTemplateError of kind render for a template that fails while rendering", () => {
    const error = rejection(() =>
      renderChatTemplate({ template: "{{ messages | no_such_filter }}", messages: [] }),
    );
    expect(error.kind).toBe("render");
    expect(error.shortMessage).toBe("The chat template failed to render");
    expect(error.cause).toBeInstanceOf(Error);
  });

  it("renders the same input to the same string, also after the cache has turned over", () => {
    const parameters = { template: QWEN_2_5, ...LLAMA_CPP_SYSTEM };
    const first = renderChatTemplate(parameters);
    for (let i = 0; i < 40; i++) {
      renderChatTemplate({ template: `{{ ${i} }}`, messages: [] });
    }
    expect(renderChatTemplate(parameters)).toBe(first);
    expect(renderChatTemplate(parameters)).toBe(first);
  });
});

describe("renderChatTemplate on hostile templates", () => {
  const messages = [{ role: "user" as const, content: "Hi" }];
  const expectTooExpensive = (template: string) => {
    const started = Date.now();
    let error: unknown;
    try {
      renderChatTemplate({ template, messages });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ChatTemplateError);
    expect((error as ChatTemplateError).kind).toBe("render");
    return Date.now() - started;
  };

  it("refuses a range too long to build instead of allocating it", () => {
    expectTooExpensive("{% for i in range(1000000000000) %}x{% endfor %}");
    expectTooExpensive("{% for i in range(0, 10**9, 2) %}{% endfor %}");
    // A range the budget allows renders as before.
    expect(renderChatTemplate({ template: "{{ range(3) | length }}", messages })).toBe("3");
  });

  it("stops nested loops at the evaluation budget", () => {
    expectTooExpensive("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
  });

  it("renders a long conversation with a real template well within the budget", () => {
    const long = Array.from({ length: 2000 }, (_, i) => ({
      role: i % 2 === 0 ? ("user" as const) : ("assistant" as const),
      content: `message ${i}`,
    }));
    const prompt = renderChatTemplate({ template: QWEN_2_5, messages: long });
    expect(prompt).toContain("message 1999");
  });
});

describe("renderFallbackPrompt", () => {
  it("joins the contents by newlines, flattening parts like the template path", () => {
    expect(
      renderFallbackPrompt([
        { role: "system", content: "Be brief." },
        {
          role: "user",
          content: [
            { type: "text", text: "Look: " },
            { type: "image", base64: "AAAA" },
          ],
        },
        { role: "assistant", content: null },
      ]),
    ).toBe("Be brief.\nLook: <image>\n");
  });
});
