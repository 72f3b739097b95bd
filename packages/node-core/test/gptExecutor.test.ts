import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  gptResultHash,
  parseGptResponse,
  renderChatTemplate,
  renderFallbackPrompt,
  TaskArgsError,
} from "@crynux/tasks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createGptExecutor,
  createModelResolver,
  DEFAULT_EXECUTION_PROFILE,
  GgmlType,
  type GptExecutor,
  GptTaskExecutionError,
  InvalidModelFileError,
  MemoryBudgetExceededError,
  ModelLoadError,
  metadataString,
  PromptTooLongError,
  readGguf,
  readTensorData,
  writeGguf,
} from "../src/index.js";
import { generateTestModels } from "./helpers/models.js";

let dir: string;
let modelDir: string;
let cacheDir: string;
let names: string[];
let executor: GptExecutor;

const task = (model: string, extra: Record<string, unknown> = {}) => ({
  model: `file:${model}`,
  messages: [
    { role: "system", content: "You are a test model." },
    { role: "user", content: "Tell me a story about the sea." },
  ],
  ...extra,
});

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-executor-"));
  modelDir = join(dir, "models");
  cacheDir = join(dir, "cache");
  await rm(modelDir, { recursive: true, force: true });
  await import("node:fs/promises").then((fs) => fs.mkdir(modelDir, { recursive: true }));
  names = await generateTestModels(modelDir);
  executor = await createGptExecutor({ resolveModel: createModelResolver({ modelDir, cacheDir }) });
}, 60_000);

afterAll(async () => {
  await executor?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe("GptExecutor", () => {
  it("returns a ChatGPT-style response and its result hash", async () => {
    const result = await executor.execute(task(names[0]!, { generation_config: { max_new_tokens: 12 } }));
    expect(parseGptResponse(result.response)).toEqual(result.response);
    expect(result.resultHash).toBe(gptResultHash(result.response));
    expect(result.response.model).toBe(`file:${names[0]}`);
    const [choice] = result.response.choices;
    expect(choice?.finish_reason).toMatch(/^(stop|length)$/);
    expect(result.response.usage.prompt_tokens).toBe(result.timings.promptTokens);
    expect(result.response.usage.completion_tokens).toBeLessThanOrEqual(12);
    expect(executor.runtimeId).toBe("node-llama-cpp@3.22.1/cpu/t1/b512/c4096");
  });

  it("renders the prompt exactly as @crynux/tasks renders it, for every test model's template", async () => {
    const args = task("", {
      messages: [
        { role: "system", content: "Be brief." },
        {
          role: "user",
          content: [
            { type: "text", text: "Hello " },
            { type: "text", text: "there" },
          ],
        },
        { role: "assistant", content: "Hi!" },
        { role: "user", content: "How are you?" },
      ],
      template_args: { date_string: "1 Jan 2026" },
    });
    for (const name of names) {
      const file = await readGguf(join(modelDir, name));
      const template = metadataString(file, "tokenizer.chat_template")!;
      const tokens = metadataValueTokens(file);
      const expected = renderChatTemplate({
        template,
        messages: args.messages as never,
        bosToken: tokens.bos,
        eosToken: tokens.eos,
        templateArgs: { date_string: "1 Jan 2026" },
      });
      expect(await executor.renderPrompt({ ...args, model: `file:${name}` })).toBe(expected);
    }
  });

  it("renders the gpt-task fallback prompt for a model without a chat template", async () => {
    const source = await readGguf(join(modelDir, names[0]!));
    await writeGguf(join(modelDir, "no-template.gguf"), {
      metadata: [...source.metadata].filter(([key]) => key !== "tokenizer.chat_template"),
      tensors: source.tensors.map((tensor) => ({ ...tensor, data: () => readTensorData(source, tensor) })),
    });
    const args = task("no-template.gguf", { generation_config: { max_new_tokens: 4 } });
    const prompt = await executor.renderPrompt(args);
    expect(prompt).toBe(renderFallbackPrompt(args.messages as never));
    expect(prompt).toBe("You are a test model.\nTell me a story about the sea.");
    expect((await executor.execute(args)).response.choices).toHaveLength(1);
  });

  it("stops at EOS with finish_reason stop, and at max_new_tokens with length", async () => {
    const reasons = new Set<string>();
    for (const name of names) {
      for (const content of ["a", "Hello there", "What is the weather like today?", "1 2 3 4"]) {
        const { response } = await executor.execute({
          ...task(name),
          messages: [{ role: "user", content }],
          generation_config: { max_new_tokens: 24 },
        });
        const choice = response.choices[0]!;
        reasons.add(choice.finish_reason);
        if (choice.finish_reason === "length") expect(response.usage.completion_tokens).toBe(24);
        else expect(response.usage.completion_tokens).toBeLessThanOrEqual(24);
      }
    }
    expect([...reasons].sort()).toEqual(["length", "stop"]);
  });

  it("is deterministic: greedy and seeded sampling repeat exactly; another seed differs", async () => {
    const sampled = (seed: number) =>
      task(names[1]!, {
        seed,
        generation_config: { do_sample: true, temperature: 1.2, top_k: 0, max_new_tokens: 24 },
      });
    const a = await executor.execute(sampled(1));
    const b = await executor.execute(sampled(1));
    const c = await executor.execute(sampled(2));
    expect(b.resultHash).toBe(a.resultHash);
    expect(c.resultHash).not.toBe(a.resultHash);
    const greedy = task(names[2]!, { seed: 5, generation_config: { max_new_tokens: 16 } });
    expect((await executor.execute(greedy)).resultHash).toBe(
      (await executor.execute({ ...greedy, seed: 99 })).resultHash,
    );
  });

  it("returns num_return_sequences choices, each seeded seed + i, with summed usage", async () => {
    const { response } = await executor.execute(
      task(names[0]!, {
        seed: 7,
        generation_config: { do_sample: true, temperature: 1.5, num_return_sequences: 3, max_new_tokens: 10 },
      }),
    );
    expect(response.choices.map((choice) => choice.index)).toEqual([0, 1, 2]);
    const completion = response.usage.completion_tokens;
    expect(completion).toBeGreaterThan(0);
    const single = await executor.execute(
      task(names[0]!, {
        seed: 8,
        generation_config: { do_sample: true, temperature: 1.5, max_new_tokens: 10 },
      }),
    );
    expect(single.response.choices[0]).toEqual({ ...response.choices[1], index: 0 });
    expect(new Set(response.choices.map((choice) => choice.message.content)).size).toBeGreaterThan(1);
  });

  it("cuts the output at a stop string and reports stop", async () => {
    const base = task(names[2]!, { generation_config: { max_new_tokens: 30 } });
    const { response } = await executor.execute(base);
    const text = response.choices[0]!.message.content;
    // Pick a stop string from the middle of the unconstrained output.
    let at = Math.floor(text.length / 3);
    while (at < text.length - 2 && /\s/.test(text.slice(at, at + 2))) at++;
    const stop = text.slice(at, at + 2);
    expect(stop).toMatch(/^\S\S$/);
    const stopped = await executor.execute({
      ...base,
      generation_config: { max_new_tokens: 30, stop_strings: [stop] },
    });
    const choice = stopped.response.choices[0]!;
    expect(choice.finish_reason).toBe("stop");
    expect(choice.message.content).toBe(text.slice(0, text.indexOf(stop)).trim());
  });

  it("applies typical_p through the JavaScript sampler, deterministically", async () => {
    const args = task(names[3]!, {
      seed: 3,
      generation_config: {
        do_sample: true,
        temperature: 1,
        typical_p: 0.9,
        repetition_penalty: 1.3,
        max_new_tokens: 16,
      },
    });
    const a = await executor.execute(args);
    expect((await executor.execute(args)).resultHash).toBe(a.resultHash);
    expect(a.response.usage.completion_tokens).toBeGreaterThan(0);
  });

  it("runs quantize_bits 8 and 4 on a quantized copy of the model", async () => {
    const full = await executor.execute(task(names[0]!, { generation_config: { max_new_tokens: 8 } }));
    const q8 = await executor.execute(
      task(names[0]!, { quantize_bits: 8, generation_config: { max_new_tokens: 8 } }),
    );
    const q4 = await executor.execute(
      task(names[0]!, { quantize_bits: 4, generation_config: { max_new_tokens: 8 } }),
    );
    expect(new Set([full.model.sha256, q8.model.sha256, q4.model.sha256]).size).toBe(3);
    expect((await readGguf(q4.model.path)).tensors.some((tensor) => tensor.type === GgmlType.Q4_0)).toBe(
      true,
    );
    expect(
      (
        await executor.execute(
          task(names[0]!, { quantize_bits: 4, generation_config: { max_new_tokens: 8 } }),
        )
      ).resultHash,
    ).toBe(q4.resultHash);
  });

  it("rejects a prompt that does not fit the context with max_new_tokens", async () => {
    const error = await executor
      .execute(task(names[0]!, { generation_config: { max_new_tokens: 4090 } }))
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PromptTooLongError);
    expect((error as PromptTooLongError).reason).toBe("prompt_too_long");
  });

  it("rejects invalid arguments and unsupported options with typed errors", async () => {
    await expect(executor.execute({ model: "file:x.gguf", messages: [] })).rejects.toBeInstanceOf(
      TaskArgsError,
    );
    await expect(
      executor.execute(task(names[0]!, { generation_config: { num_beams: 2 } })),
    ).rejects.toBeInstanceOf(GptTaskExecutionError);
  });

  it("reports a file that is not a model, and a GGUF that llama.cpp cannot load", async () => {
    await writeFile(join(modelDir, "junk.gguf"), "this is not a model");
    await expect(executor.execute(task("junk.gguf"))).rejects.toBeInstanceOf(InvalidModelFileError);
    await writeGguf(join(modelDir, "empty.gguf"), {
      metadata: [["general.architecture", { type: "string", value: "llama" }]],
      tensors: [{ name: "x", dims: [4], type: GgmlType.F32, data: new Uint8Array(16) }],
    });
    const error = await executor.execute(task("empty.gguf")).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as ModelLoadError).reason).toBe("model_invalid");
    // The executor still works afterwards.
    expect(
      (await executor.execute(task(names[0]!, { generation_config: { max_new_tokens: 2 } }))).response
        .choices,
    ).toHaveLength(1);
  });

  it("keeps models loaded within the memory budget, evicting the least recently used", async () => {
    const small = await createGptExecutor({
      resolveModel: createModelResolver({ modelDir, cacheDir }),
      profile: { ...DEFAULT_EXECUTION_PROFILE, contextSize: 512 },
      memoryBudgetBytes: 1,
    });
    try {
      await expect(small.execute(task(names[0]!))).rejects.toBeInstanceOf(MemoryBudgetExceededError);
    } finally {
      await small.dispose();
    }
    const probe = await createGptExecutor({
      resolveModel: createModelResolver({ modelDir, cacheDir }),
      profile: { ...DEFAULT_EXECUTION_PROFILE, contextSize: 512 },
    });
    let perModel: number;
    try {
      await probe.execute(task(names[0]!, { generation_config: { max_new_tokens: 1 } }));
      perModel = Math.max(...probe.loadedModels().map((model) => model.bytes));
    } finally {
      await probe.dispose();
    }
    const two = await createGptExecutor({
      resolveModel: createModelResolver({ modelDir, cacheDir }),
      profile: { ...DEFAULT_EXECUTION_PROFILE, contextSize: 512 },
      memoryBudgetBytes: Math.floor(perModel * 2.5),
    });
    try {
      for (const name of names) await two.execute(task(name, { generation_config: { max_new_tokens: 1 } }));
      const loaded = two.loadedModels().map((model) => model.path);
      expect(loaded).toEqual([join(modelDir, names[2]!), join(modelDir, names[3]!)]);
    } finally {
      await two.dispose();
    }
  });
});

/** The text of the model's BOS and EOS tokens, read from the GGUF vocabulary. */
function metadataValueTokens(file: Awaited<ReturnType<typeof readGguf>>): { bos: string; eos: string } {
  const tokens = file.metadata.get("tokenizer.ggml.tokens");
  const bos = file.metadata.get("tokenizer.ggml.bos_token_id");
  const eos = file.metadata.get("tokenizer.ggml.eos_token_id");
  if (tokens?.type !== "array" || bos?.type !== "u32" || eos?.type !== "u32")
    throw new Error("test model without tokens");
  return { bos: String(tokens.value[bos.value]), eos: String(tokens.value[eos.value]) };
}
