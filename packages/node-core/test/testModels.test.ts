import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  getLlama,
  type Llama,
  type LlamaContext,
  LlamaLogLevel,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GgmlType,
  LlamaFileType,
  metadataNumber,
  metadataString,
  metadataValue,
  readGguf,
} from "../src/gguf/index.js";
import {
  buildTestVocabulary,
  CHATML_TEMPLATE,
  type GenerateTestModelOptions,
  generateTestModel,
  SPECIAL_TOKENS,
  TEST_MODEL_SHAPES,
  TestModelError,
  type TestModelProgress,
} from "../src/testModels/generate.js";

let dir: string;
let llama: Llama;
const disposables: { dispose(): Promise<void> }[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-test-models-"));
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
});
afterAll(async () => {
  for (const item of disposables.reverse()) await item.dispose();
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const sha256 = async (path: string) =>
  createHash("sha256")
    .update(await readFile(path))
    .digest("hex");

async function load(path: string): Promise<{ model: LlamaModel; context: LlamaContext }> {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({ contextSize: 512, batchSize: 512, threads: 1 });
  disposables.push(model, context);
  return { model, context };
}

/** Greedy tokens after `prompt` on a fresh sequence history; stops at `count` or after an EOG token. */
async function greedy(context: LlamaContext, prompt: Token[], count: number): Promise<Token[]> {
  const sequence = context.getSequence();
  try {
    const out: Token[] = [];
    for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
      out.push(token);
      if (out.length >= count || context.model.isEogToken(token)) break;
    }
    return out;
  } finally {
    sequence.dispose();
  }
}

const TEXT = "Hello world! The answer is 42. Grüße, naïve café — привет 你好 ✓ zukovi";

const VARIANTS = (["llama", "qwen2"] as const).flatMap((architecture) =>
  (["spm", "bpe"] as const).flatMap((tokenizer) =>
    (["F32", "F16"] as const).map((type) => ({ architecture, tokenizer, type })),
  ),
);

describe.each(VARIANTS)("tiny $architecture model, $tokenizer tokenizer, $type", (variant) => {
  const options: GenerateTestModelOptions = { seed: 7, ...variant };
  const shape = TEST_MODEL_SHAPES.tiny;
  const vocabulary = buildTestVocabulary(variant.tokenizer, shape.vocab);
  let path: string;
  let model: LlamaModel;
  let context: LlamaContext;

  beforeAll(async () => {
    path = join(dir, `${variant.architecture}-${variant.tokenizer}-${variant.type}.gguf`);
    const result = await generateTestModel(path, options);
    expect(result).toEqual({ path, bytes: (await stat(path)).size });
    ({ model, context } = await load(path));
  });

  it("has the metadata and tensors llama.cpp expects", async () => {
    const file = await readGguf(path);
    const arch = variant.architecture;
    expect(file.fileSize).toBeLessThan(2_000_000);
    expect(metadataString(file, "general.architecture")).toBe(arch);
    expect(metadataNumber(file, "general.file_type")).toBe(
      variant.type === "F16" ? LlamaFileType.MOSTLY_F16 : LlamaFileType.ALL_F32,
    );
    expect(file.metadata.get(`${arch}.context_length`)).toEqual({ type: "u32", value: 4096 });
    expect(metadataNumber(file, `${arch}.embedding_length`)).toBe(shape.embedding);
    expect(metadataNumber(file, `${arch}.block_count`)).toBe(shape.layers);
    expect(metadataNumber(file, `${arch}.feed_forward_length`)).toBe(shape.feedForward);
    expect(metadataNumber(file, `${arch}.attention.head_count`)).toBe(shape.heads);
    expect(metadataNumber(file, `${arch}.attention.head_count_kv`)).toBe(shape.kvHeads);
    expect(file.metadata.get(`${arch}.rope.freq_base`)).toEqual({ type: "f32", value: 10_000 });
    expect(file.metadata.get(`${arch}.attention.layer_norm_rms_epsilon`)?.type).toBe("f32");
    expect(metadataString(file, "tokenizer.ggml.model")).toBe(variant.tokenizer === "spm" ? "llama" : "gpt2");
    expect(metadataString(file, "tokenizer.chat_template")).toBe(CHATML_TEMPLATE);
    const tokens = metadataValue(file, "tokenizer.ggml.tokens") as string[];
    expect(tokens).toHaveLength(shape.vocab);
    expect(new Set(tokens).size).toBe(shape.vocab);
    expect(tokens[vocabulary.ids.eos]).toBe(SPECIAL_TOKENS.eos);
    expect(metadataNumber(file, "tokenizer.ggml.eos_token_id")).toBe(vocabulary.ids.eos);
    expect(metadataNumber(file, "tokenizer.ggml.bos_token_id")).toBe(vocabulary.ids.bos);
    if (variant.tokenizer === "bpe") {
      expect(metadataString(file, "tokenizer.ggml.pre")).toBe("qwen2");
      expect((metadataValue(file, "tokenizer.ggml.merges") as string[]).length).toBe(shape.vocab - 256 - 4);
    } else {
      expect(tokens.slice(3, 259)).toEqual(
        Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
      );
      expect((metadataValue(file, "tokenizer.ggml.token_type") as number[])[3]).toBe(6); // BYTE
    }

    const tensors = new Map(file.tensors.map((t) => [t.name, t]));
    const matrix = variant.type === "F16" ? GgmlType.F16 : GgmlType.F32;
    const kv = (shape.embedding / shape.heads) * shape.kvHeads;
    expect(tensors.get("token_embd.weight")).toMatchObject({ dims: [64, shape.vocab], type: matrix });
    expect(tensors.get("output.weight")).toMatchObject({ dims: [64, shape.vocab], type: matrix });
    expect(tensors.get("output_norm.weight")).toMatchObject({ dims: [64], type: GgmlType.F32 });
    expect(tensors.get("blk.1.attn_q.weight")).toMatchObject({ dims: [64, 64], type: matrix });
    expect(tensors.get("blk.1.attn_k.weight")).toMatchObject({ dims: [64, kv], type: matrix });
    expect(tensors.get("blk.1.attn_v.weight")).toMatchObject({ dims: [64, kv], type: matrix });
    expect(tensors.get("blk.1.attn_output.weight")).toMatchObject({ dims: [64, 64], type: matrix });
    expect(tensors.get("blk.1.ffn_gate.weight")).toMatchObject({ dims: [64, 128], type: matrix });
    expect(tensors.get("blk.1.ffn_up.weight")).toMatchObject({ dims: [64, 128], type: matrix });
    expect(tensors.get("blk.1.ffn_down.weight")).toMatchObject({ dims: [128, 64], type: matrix });
    expect(tensors.get("blk.1.ffn_norm.weight")).toMatchObject({ dims: [64], type: GgmlType.F32 });
    const biases = variant.architecture === "qwen2" ? 3 : 0;
    expect(tensors.get("blk.0.attn_k.bias")?.dims).toEqual(biases ? [kv] : undefined);
    expect(file.tensors).toHaveLength(3 + shape.layers * (9 + biases));
  });

  it("is byte-identical when regenerated, and differs for another seed", async () => {
    const again = join(dir, "again.gguf");
    await generateTestModel(again, options);
    expect(await sha256(again)).toBe(await sha256(path));
    await generateTestModel(again, { ...options, seed: 8 });
    expect(await sha256(again)).not.toBe(await sha256(path));
    await rm(again);
  });

  it("tokenizes and detokenizes in llama.cpp", () => {
    expect(model.fileInfo.metadata.tokenizer.chat_template).toBe(CHATML_TEMPLATE);
    expect(model.tokens.bos).toBe(vocabulary.ids.bos);
    expect(model.tokens.eos).toBe(vocabulary.ids.eos);
    const tokens = model.tokenize(TEXT);
    expect(tokens.length).toBeLessThan(TEXT.length);
    expect(model.detokenize(tokens)).toBe(TEXT);
    expect(model.tokenize(SPECIAL_TOKENS.imStart, true)).toEqual([vocabulary.ids.imStart]);
    expect(model.tokenize(SPECIAL_TOKENS.imEnd, true)).toEqual([vocabulary.ids.imEnd]);
    expect(model.tokenize(SPECIAL_TOKENS.eos, true)).toEqual([vocabulary.ids.eos]);
    expect(model.tokenize(SPECIAL_TOKENS.bos, true)).toEqual([vocabulary.ids.bos]);
    if (variant.tokenizer === "spm") expect(model.tokenize(SPECIAL_TOKENS.unk, true)).toEqual([0]);
    // Without specialTokens the control tokens' text is plain text.
    expect(model.tokenize(SPECIAL_TOKENS.imEnd, false).length).toBeGreaterThan(1);
    expect(model.isEogToken(vocabulary.ids.imEnd as Token)).toBe(true);
  });

  it("generates deterministically with greedy sampling", async () => {
    const prompt = model.tokenize(
      `${SPECIAL_TOKENS.imStart}user\nHello there!${SPECIAL_TOKENS.imEnd}\n`,
      true,
    );
    prompt.push(...model.tokenize(`${SPECIAL_TOKENS.imStart}assistant\n`, true));
    const first = await greedy(context, prompt, 20);
    const second = await greedy(context, prompt, 20);
    expect(first.length).toBeGreaterThan(0);
    expect(second).toEqual(first);
    expect(typeof model.detokenize(first)).toBe("string");
  });
});

describe("generateTestModel", () => {
  it("reports monotonic progress that ends at the file size", async () => {
    const path = join(dir, "progress.gguf");
    const progress: TestModelProgress[] = [];
    const { bytes } = await generateTestModel(path, { seed: 1, shape: "tiny" }, (p) => progress.push(p));
    expect(progress.length).toBeGreaterThan(20);
    for (let i = 1; i < progress.length; i++) {
      expect(progress[i]!.bytesWritten).toBeGreaterThanOrEqual(progress[i - 1]!.bytesWritten);
      expect(progress[i]!.totalBytes).toBe(bytes);
    }
    expect(progress.at(-1)!.bytesWritten).toBe(bytes);
    expect((await stat(path)).size).toBe(bytes);
  });

  it("makes greedy decoding reach EOS with eosBoost", async () => {
    const prompt = "Hello world, this is a test";
    const eosAt = async (seed: number, eosBoost: number, tiedEmbeddings: boolean) => {
      const path = join(dir, `eos-${seed}-${eosBoost}-${tiedEmbeddings}.gguf`);
      await generateTestModel(path, { seed, eosBoost, tiedEmbeddings });
      const { model, context } = await load(path);
      return (await greedy(context, model.tokenize(prompt), 50)).indexOf(model.tokens.eos!);
    };
    expect(await eosAt(1, 0, false)).toBe(-1);
    const at = await eosAt(1, 0.1, false);
    expect(at).toBeGreaterThanOrEqual(0);
    expect(at).toBeLessThan(50);
    // With tied embeddings the boost goes to token_embd.weight's EOS row (and a tied model prefers to
    // repeat its input token, so fewer seeds reach EOS).
    expect(await eosAt(8, 0, true)).toBe(-1);
    expect(await eosAt(8, 0.1, true)).toBeGreaterThanOrEqual(0);
  });

  it("writes tied embeddings without output.weight", async () => {
    const path = join(dir, "tied.gguf");
    await generateTestModel(path, { seed: 2, tiedEmbeddings: true, name: "tied test" });
    const file = await readGguf(path);
    expect(file.tensors.map((t) => t.name)).not.toContain("output.weight");
    expect(metadataString(file, "general.name")).toBe("tied test");
  });

  it.each(["spm", "bpe"] as const)(
    "synthesizes a full-size %s vocabulary llama.cpp loads",
    async (tokenizer) => {
      const vocab =
        tokenizer === "spm"
          ? TEST_MODEL_SHAPES["llama-3.2-1b"].vocab
          : TEST_MODEL_SHAPES["qwen2.5-0.5b"].vocab;
      const path = join(dir, `vocab-${tokenizer}.gguf`);
      const shape = {
        embedding: 16,
        layers: 1,
        heads: 2,
        kvHeads: 1,
        feedForward: 16,
        vocab,
        contextLength: 512,
      };
      await generateTestModel(path, { seed: 3, shape, tokenizer, type: "F16", tiedEmbeddings: true });
      const { model, context } = await load(path);
      expect(model.tokens.eos).toBe(tokenizer === "spm" ? 2 : vocab - 3);
      const tokens = model.tokenize(TEXT);
      expect(model.detokenize(tokens)).toBe(TEXT);
      expect(model.tokenize(SPECIAL_TOKENS.imEnd, true)).toEqual([tokenizer === "spm" ? 260 : vocab - 1]);
      expect((await greedy(context, tokens, 5)).length).toBeGreaterThan(0);
    },
  );

  it("rejects invalid options", async () => {
    const path = join(dir, "invalid.gguf");
    const bad: GenerateTestModelOptions[] = [
      { seed: -1 },
      { seed: 1.5 },
      { seed: 1, shape: "huge" as "tiny" },
      { seed: 1, shape: { ...TEST_MODEL_SHAPES.tiny, heads: 5 } },
      { seed: 1, shape: { ...TEST_MODEL_SHAPES.tiny, kvHeads: 3 } },
      { seed: 1, shape: { ...TEST_MODEL_SHAPES.tiny, vocab: 100 } },
      { seed: 1, type: "Q8_0" as "F16" },
      { seed: 1, architecture: "gpt2" as "llama" },
      { seed: 1, tokenizer: "wpm" as "spm" },
      { seed: 1, eosBoost: Number.NaN },
    ];
    for (const options of bad) await expect(generateTestModel(path, options)).rejects.toThrow(TestModelError);
    await expect(stat(path)).rejects.toThrow();
  });
});

describe("buildTestVocabulary", () => {
  it.each([
    ["spm", 151_936],
    ["bpe", 151_936],
    ["spm", 128_256],
    ["bpe", 128_256],
  ] as const)("%s with %i tokens: unique tokens, consistent merges", (tokenizer, size) => {
    const vocabulary = buildTestVocabulary(tokenizer, size);
    expect(vocabulary.tokens).toHaveLength(size);
    expect(new Set(vocabulary.tokens).size).toBe(size);
    expect(vocabulary.tokenTypes).toHaveLength(size);
    if (tokenizer === "spm") {
      expect(vocabulary.scores).toHaveLength(size);
      expect(vocabulary.tokens.slice(0, 3)).toEqual([
        SPECIAL_TOKENS.unk,
        SPECIAL_TOKENS.bos,
        SPECIAL_TOKENS.eos,
      ]);
      expect(vocabulary.tokens.every((t) => !t.includes(" "))).toBe(true);
      return;
    }
    const ids = new Map(vocabulary.tokens.map((token, id) => [token, id]));
    const merges = vocabulary.merges!;
    expect(merges).toHaveLength(size - 260);
    // Each merge joins two earlier tokens into the token right after the 256 byte tokens and earlier merges.
    const bad = merges.filter((merge, rank) => {
      const [left, right, extra] = merge.split(" ");
      const id = ids.get(left! + right!);
      return extra !== undefined || id !== 256 + rank || !(ids.get(left!)! < id) || !(ids.get(right!)! < id);
    });
    expect(bad).toEqual([]);
  });

  it("is the same for the same arguments", () => {
    expect(buildTestVocabulary("bpe", 1000)).toEqual(buildTestVocabulary("bpe", 1000));
  });
});

describe("TEST_MODEL_SHAPES", () => {
  it("match the public Qwen2.5-0.5B and Llama-3.2-1B configs", () => {
    expect(TEST_MODEL_SHAPES["qwen2.5-0.5b"]).toEqual({
      embedding: 896,
      layers: 24,
      heads: 14,
      kvHeads: 2,
      feedForward: 4864,
      vocab: 151_936,
      contextLength: 32_768,
      ropeFreqBase: 1_000_000,
      rmsNormEps: 1e-6,
      tiedEmbeddings: true,
    });
    expect(TEST_MODEL_SHAPES["llama-3.2-1b"]).toEqual({
      embedding: 2048,
      layers: 16,
      heads: 32,
      kvHeads: 8,
      feedForward: 8192,
      vocab: 128_256,
      contextLength: 131_072,
      ropeFreqBase: 500_000,
      rmsNormEps: 1e-5,
      tiedEmbeddings: true,
    });
  });
});
