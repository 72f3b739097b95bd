import {
  GgufInsights,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  readGgufFileInfo,
} from "node-llama-cpp";
import { metadataString, readGguf } from "../gguf/index.js";
import { MemoryBudgetExceededError, ModelLoadError } from "./errors.js";
import type { ExecutionProfile } from "./profile.js";

/** A model loaded with its one context and sequence, ready to run tasks. */
export type LoadedModel = {
  /** Content hash of the model file: the identity of the weights. */
  key: string;
  path: string;
  model: LlamaModel;
  context: LlamaContext;
  sequence: LlamaContextSequence;
  /** `tokenizer.chat_template` from the GGUF metadata, if any. */
  chatTemplate: string | undefined;
  /** Estimated resident bytes (weights + context). */
  bytes: number;
  /** Tasks using it right now; a model in use is never evicted. */
  users: number;
  lastUsed: number;
};

/**
 * Keeps models loaded between tasks, evicting the least recently used ones when a new model would push the
 * total estimated memory over the budget. Each model gets one context built from the execution profile,
 * so no two tasks ever share a KV cache: the sequence's history is cleared before every generation.
 */
export class ModelPool {
  private readonly models = new Map<string, LoadedModel>();
  private readonly loading = new Map<string, Promise<LoadedModel>>();
  private useCounter = 0;

  constructor(
    private readonly llama: Llama,
    private readonly profile: ExecutionProfile,
    private readonly budgetBytes: number,
  ) {}

  /** Models currently loaded, most recently used last. */
  loaded(): readonly LoadedModel[] {
    return [...this.models.values()].sort((a, b) => a.lastUsed - b.lastUsed);
  }

  /** Total estimated bytes of the loaded models. */
  usedBytes(): number {
    let sum = 0;
    for (const model of this.models.values()) sum += model.bytes;
    return sum;
  }

  /** Returns the loaded model for `key`, loading `path` first if needed. Pair every call with {@link release}. */
  async acquire(key: string, path: string): Promise<LoadedModel> {
    let loaded = this.models.get(key);
    if (!loaded) {
      let pending = this.loading.get(key);
      if (!pending) {
        pending = this.load(key, path).finally(() => this.loading.delete(key));
        this.loading.set(key, pending);
      }
      loaded = await pending;
    }
    loaded.users++;
    loaded.lastUsed = ++this.useCounter;
    return loaded;
  }

  release(loaded: LoadedModel): void {
    loaded.users = Math.max(0, loaded.users - 1);
  }

  /** Estimated resident bytes of a model file with the profile's context, without loading it. */
  async estimate(path: string): Promise<number> {
    const info = await readGgufFileInfo(path, { logWarnings: false });
    const insights = await GgufInsights.from(info, this.llama);
    const model = await insights.estimateModelResourceRequirementsV2({ gpuLayers: 0 });
    const context = await insights.estimateContextResourceRequirementsV2({
      contextSize: this.profile.contextSize,
      modelGpuLayers: 0,
      batchSize: this.profile.batchSize,
      sequences: 1,
      flashAttention: false,
    });
    return model.cpuRam + context.cpuRam;
  }

  private async load(key: string, path: string): Promise<LoadedModel> {
    let bytes: number;
    let chatTemplate: string | undefined;
    try {
      const file = await readGguf(path);
      chatTemplate = metadataString(file, "tokenizer.chat_template");
      bytes = await this.estimate(path);
    } catch (cause) {
      throw new ModelLoadError(path, cause);
    }
    if (bytes > this.budgetBytes) throw new MemoryBudgetExceededError(bytes, this.budgetBytes);
    await this.evictFor(bytes);

    let model: LlamaModel | undefined;
    try {
      model = await this.llama.loadModel({ modelPath: path, gpuLayers: 0 });
      const context = await model.createContext({
        contextSize: this.profile.contextSize,
        batchSize: this.profile.batchSize,
        threads: { ideal: this.profile.threads, min: this.profile.threads },
        flashAttention: false,
        sequences: 1,
        failedCreationRemedy: false,
      });
      const loaded: LoadedModel = {
        key,
        path,
        model,
        context,
        sequence: context.getSequence(),
        chatTemplate,
        bytes,
        users: 0,
        lastUsed: ++this.useCounter,
      };
      this.models.set(key, loaded);
      return loaded;
    } catch (cause) {
      await model?.dispose().catch(() => {});
      throw new ModelLoadError(path, cause);
    }
  }

  private async evictFor(bytes: number): Promise<void> {
    for (const candidate of this.loaded()) {
      if (this.usedBytes() + bytes <= this.budgetBytes) return;
      if (candidate.users > 0) continue;
      await this.unload(candidate);
    }
    if (this.usedBytes() + bytes > this.budgetBytes) {
      throw new MemoryBudgetExceededError(this.usedBytes() + bytes, this.budgetBytes);
    }
  }

  private async unload(loaded: LoadedModel): Promise<void> {
    this.models.delete(loaded.key);
    await loaded.context.dispose();
    await loaded.model.dispose();
  }

  /** Unloads every model. */
  async dispose(): Promise<void> {
    await Promise.allSettled([...this.loading.values()]);
    for (const loaded of [...this.models.values()]) await this.unload(loaded);
  }
}
