import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { generateTestModel, resolveModel } from "@crynux/node-core";

/** The model every task of the devnet names, and where the nodes find it. */
export type DevnetModel = {
  /** The `model` field of the tasks (`file:…` in the nodes' model directory, or `hf:…` / `owner/repo:QUANT`). */
  ref: string;
  /** Base of `file:` references for the nodes. */
  modelDir: string;
  /** The nodes' model cache (Hugging Face downloads, content hashes). */
  cacheDir: string;
  /** Local file the reference resolves to. */
  path: string;
  /** What it is, for people. */
  description: string;
  /** True when this run wrote the generated model (false: reused from the cache, or a user model). */
  generated: boolean;
};

export type PrepareModelOptions = {
  /** `hf:owner/repo/file.gguf`, `owner/repo:Q4_K_M`, or a path to a GGUF file. Default: a generated test model. */
  model?: string | undefined;
  /** Seed of the generated test model; each seed is cached once. Default 7. */
  seed?: number | undefined;
  /** Cache directory. Default `$CRYNUX_DEVNET_CACHE`, else `$XDG_CACHE_HOME/crynux-devnet` (`~/.cache/…`). */
  cacheDir?: string | undefined;
  /** Download progress of a user-given remote model. */
  onProgress?: ((message: string) => void) | undefined;
};

export function defaultCacheDir(): string {
  if (process.env.CRYNUX_DEVNET_CACHE) return resolve(process.env.CRYNUX_DEVNET_CACHE);
  return join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "crynux-devnet");
}

// Qwen2.5-Instruct's own chat template, so the generated model renders prompts exactly as the real model
// family does; only the weights are random.
const QWEN25_TEMPLATE = readFileSync(new URL("../assets/qwen2.5-instruct.jinja", import.meta.url), "utf8");

/**
 * Finds or makes the devnet's model. The generated one is a tiny Qwen2-architecture GGUF (BPE tokenizer,
 * Qwen2.5 chat template, random weights: it answers gibberish, deterministically), written once per seed into
 * the cache, so nothing is downloaded. A user model is used as given: a local file, or a reference the nodes'
 * resolver downloads here, once, before the nodes start.
 */
export async function prepareModel(options: PrepareModelOptions = {}): Promise<DevnetModel> {
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const nodeCacheDir = join(cacheDir, "node-cache");
  const user = options.model;
  if (user !== undefined && isLocalFile(user)) {
    const path = resolve(user);
    return {
      ref: `file:${basename(path)}`,
      modelDir: dirname(path),
      cacheDir: nodeCacheDir,
      path,
      description: `${path} (${megabytes(statSync(path).size)})`,
      generated: false,
    };
  }
  const modelDir = join(cacheDir, "models");
  await mkdir(modelDir, { recursive: true });
  if (user !== undefined) {
    let reported = -1;
    const resolved = await resolveModel(user, {
      modelDir,
      cacheDir: nodeCacheDir,
      onProgress: ({ bytesDownloaded: bytes, totalBytes }) => {
        const percent = totalBytes ? Math.floor((bytes / totalBytes) * 4) * 25 : -1;
        if (percent === reported) return;
        reported = percent;
        options.onProgress?.(
          `downloading ${user}: ${megabytes(bytes)}${totalBytes ? ` of ${megabytes(totalBytes)}` : ""}`,
        );
      },
    });
    return {
      ref: user,
      modelDir,
      cacheDir: nodeCacheDir,
      path: resolved.path,
      description: `${user} (${megabytes(statSync(resolved.path).size)})`,
      generated: false,
    };
  }
  const seed = options.seed ?? 7;
  const name = `devnet-qwen2-tiny-seed${seed}.gguf`;
  const path = join(modelDir, name);
  let generated = false;
  if (!existsSync(path)) {
    // Written beside and renamed, so an interrupted run never leaves a truncated model in the cache.
    const partial = `${path}.${process.pid}.partial`;
    try {
      await generateTestModel(partial, {
        seed,
        architecture: "qwen2",
        tokenizer: "bpe",
        type: "F32",
        chatTemplate: QWEN25_TEMPLATE,
        name: `crynux-devnet-tiny-${seed}`,
      });
      await rename(partial, path);
    } finally {
      await rm(partial, { force: true });
    }
    generated = true;
  }
  return {
    ref: `file:${name}`,
    modelDir,
    cacheDir: nodeCacheDir,
    path,
    description: `generated test model ${name} (qwen2, Qwen2.5 chat template, ${megabytes(statSync(path).size)})`,
    generated,
  };
}

function isLocalFile(model: string): boolean {
  if (model.startsWith("hf:") || model.startsWith("file:")) return false;
  try {
    return statSync(model).isFile();
  } catch {
    return false;
  }
}

function megabytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
