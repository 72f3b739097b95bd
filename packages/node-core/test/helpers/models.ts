import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  CHATML_TEMPLATE,
  type GenerateTestModelOptions,
  generateTestModel,
} from "../../src/testModels/index.js";

const templates = new URL("../../../tasks/test/fixtures/chat-templates/", import.meta.url);
const template = (name: string) => readFileSync(new URL(name, templates), "utf8");

/**
 * The tiny test models the executor tests run: four chat templates of real model families over both
 * architectures, both tokenizer kinds and both float types. Two of them have an `eosBoost`, so greedy decoding
 * ends with EOS on some prompts and both finish reasons occur.
 */
export const TEST_MODELS: Record<string, GenerateTestModelOptions> = {
  "chatml-llama-spm-f32.gguf": {
    seed: 1,
    architecture: "llama",
    tokenizer: "spm",
    type: "F32",
    eosBoost: 0.1,
    chatTemplate: CHATML_TEMPLATE,
  },
  "qwen25-qwen2-bpe-f16.gguf": {
    seed: 2,
    architecture: "qwen2",
    tokenizer: "bpe",
    type: "F16",
    eosBoost: 0.1,
    chatTemplate: template("Qwen-Qwen2.5-7B-Instruct.jinja"),
  },
  "llama31-llama-spm-f16.gguf": {
    seed: 3,
    architecture: "llama",
    tokenizer: "spm",
    type: "F16",
    chatTemplate: template("meta-llama-Llama-3.1-8B-Instruct.jinja"),
  },
  "mistral-llama-bpe-f32.gguf": {
    seed: 4,
    architecture: "llama",
    tokenizer: "bpe",
    type: "F32",
    chatTemplate: template("mistralai-Mistral-7B-Instruct-v0.3.jinja"),
  },
};

/** Writes every test model into `dir`; returns their file names. */
export async function generateTestModels(dir: string): Promise<string[]> {
  const names = Object.keys(TEST_MODELS);
  for (const name of names) await generateTestModel(join(dir, name), TEST_MODELS[name]!);
  return names;
}
