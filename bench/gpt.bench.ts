/**
 * Benchmarks of @crynux/node-core's GPT path on a Qwen2.5-0.5B-shape model with random weights:
 * quantizer throughput, GptExecutor vs bare node-llama-cpp tokens/s (same model, prompt and settings),
 * and peak RSS while serving the Q4_0 model.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createGptExecutor,
  DEFAULT_EXECUTION_PROFILE,
  fileSha256,
  generateTestModel,
  quantizeGguf,
  runtimeId,
} from "@crynux/node-core";
import { renderChatTemplate } from "@crynux/tasks";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { report, writeResults } from "./lib.js";

const cache = join(import.meta.dirname, ".cache");
const source = join(cache, "qwen2.5-0.5b-shape-f16.gguf");
mkdirSync(cache, { recursive: true });
if (!existsSync(source)) {
  console.error("generating the Qwen2.5-0.5B-shape F16 model (~1 GB)…");
  await generateTestModel(source, {
    seed: 1,
    shape: "qwen2.5-0.5b",
    architecture: "qwen2",
    tokenizer: "bpe",
    type: "F16",
  });
}
const sourceBytes = statSync(source).size;

// 1. Quantizer throughput: a fresh cache each time, so every run really quantizes.
const quantRows = [];
const quantized: Record<string, string> = {};
for (const target of ["Q8_0", "Q4_0"] as const) {
  const scratch = mkdtempSync(join(tmpdir(), "crynux-quant-bench-"));
  await fileSha256(source, { cacheDir: scratch }); // hash once outside the timing
  const start = performance.now();
  const result = await quantizeGguf({ source, target, cacheDir: scratch });
  const ms = performance.now() - start;
  quantRows.push({
    name: `quantize F16 → ${target} (${(sourceBytes / 1e6).toFixed(0)} MB)`,
    medianMs: ms,
    opsPerSecond: 1000 / ms,
    mbPerSecond: sourceBytes / 1e6 / (ms / 1000),
    samples: 1,
  });
  const kept = join(cache, `qwen2.5-0.5b-shape-${target.toLowerCase()}.gguf`);
  execFileSync("mv", [result.path, kept]);
  rmSync(scratch, { recursive: true, force: true });
  quantized[target] = kept;
}
report("quantizer", quantRows);

// 2. Tokens/s: the executor and bare node-llama-cpp, interleaved, on the same prompt and settings.
const profile = DEFAULT_EXECUTION_PROFILE;
const llama = await getLlama({ gpu: false, build: "never", maxThreads: 0, logLevel: LlamaLogLevel.error });
const messages = [
  { role: "system" as const, content: "You are a helpful assistant." },
  {
    role: "user" as const,
    content: "Write a detailed story about a lighthouse keeper and a storm at sea, with dialogue. ".repeat(4),
  },
];
const maxNewTokens = 32;
const rounds = 5;
const speedRows = [];
const ratios: string[] = [];
/** GptExecutor tokens/s over bare node-llama-cpp tokens/s, by quantization. */
const executorOverBare: Record<string, { prefill: number; decode: number }> = {};
for (const target of ["Q4_0", "Q8_0"] as const) {
  const path = quantized[target]!;
  const sha256 = await fileSha256(path);
  const executor = await createGptExecutor({ llama, resolveModel: async () => ({ path, sha256 }) });
  const args = { model: `file:${path}`, messages, generation_config: { max_new_tokens: maxNewTokens } };

  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: profile.contextSize,
    batchSize: profile.batchSize,
    threads: { ideal: profile.threads, min: profile.threads },
    flashAttention: false,
  });
  const sequence = context.getSequence();
  const template = model.fileInfo.metadata.tokenizer.chat_template!;
  const prompt = renderChatTemplate({
    template,
    messages,
    bosToken: model.tokens.bosString ?? "",
    eosToken: model.tokens.eosString ?? "",
  });
  const promptTokens = model.tokenize(prompt, true);
  const bare = async () => {
    await sequence.clearHistory();
    const start = performance.now();
    let first = 0;
    let count = 0;
    for await (const _ of sequence.evaluate(promptTokens, { temperature: 0, yieldEogToken: true })) {
      if (count === 0) first = performance.now();
      if (++count >= maxNewTokens) break;
    }
    const end = performance.now();
    return {
      prefill: promptTokens.length / ((first - start) / 1000),
      decode: (count - 1) / ((end - first) / 1000),
    };
  };
  const viaExecutor = async () => {
    const { timings } = await executor.execute(args);
    return {
      prefill: timings.promptTokens / (timings.prefillMs / 1000),
      decode: (timings.completionTokens - 1) / (timings.decodeMs / 1000),
    };
  };
  await bare();
  await viaExecutor();
  const results = {
    bare: [] as { prefill: number; decode: number }[],
    executor: [] as { prefill: number; decode: number }[],
  };
  // Alternate which runs first, so drift on a shared machine does not favour one side.
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0) {
      results.bare.push(await bare());
      results.executor.push(await viaExecutor());
    } else {
      results.executor.push(await viaExecutor());
      results.bare.push(await bare());
    }
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const summary = (list: { prefill: number; decode: number }[]) => ({
    prefill: median(list.map((r) => r.prefill)),
    decode: median(list.map((r) => r.decode)),
  });
  const b = summary(results.bare);
  const e = summary(results.executor);
  for (const [who, s] of [
    ["bare node-llama-cpp", b],
    ["GptExecutor", e],
  ] as const) {
    speedRows.push({
      name: `${target} ${who}: prefill ${promptTokens.length} tokens`,
      medianMs: 1000 / s.prefill,
      opsPerSecond: s.prefill,
      samples: rounds,
    });
    speedRows.push({
      name: `${target} ${who}: decode`,
      medianMs: 1000 / s.decode,
      opsPerSecond: s.decode,
      samples: rounds,
    });
  }
  executorOverBare[target] = { prefill: e.prefill / b.prefill, decode: e.decode / b.decode };
  ratios.push(
    `${target}: prefill ${(e.prefill / b.prefill).toFixed(3)}, decode ${(e.decode / b.decode).toFixed(3)}`,
  );
  await context.dispose();
  await model.dispose();
  await executor.dispose();
}
await llama.dispose();
const speedTitle = `gpt tokens per second (${runtimeId(profile)}; ops/s = tokens/s)`;
report(speedTitle, speedRows, "gpt");
console.log(`GptExecutor / bare ratio — ${ratios.join("; ")}\n`);

// 3. Peak RSS of a process that serves the Q4_0 model.
const out = execFileSync(
  process.execPath,
  ["--conditions=source", "--import", "tsx", join(import.meta.dirname, "gpt-serve.ts"), quantized.Q4_0!, "5"],
  {
    encoding: "utf8",
  },
);
const { maxRssBytes } = JSON.parse(out.trim().split("\n").at(-1)!) as { maxRssBytes: number };
console.log(
  `Peak RSS serving the 0.5B-shape Q4_0 model (${(statSync(quantized.Q4_0!).size / 2 ** 20).toFixed(0)} MiB file): ${(maxRssBytes / 2 ** 20).toFixed(0)} MiB\n`,
);
writeResults("gpt", {
  title: speedTitle,
  runtimeId: runtimeId(profile),
  rows: speedRows,
  executorOverBare,
  peakRssMiB: maxRssBytes / 2 ** 20,
});
