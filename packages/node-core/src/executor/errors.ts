import { NodeCoreError, type NodeCoreErrorParameters } from "../errors.js";

/**
 * A GPT task that cannot be executed as written — the same on every honest node, so the node reports a
 * task error instead of a result (2 such reports abort the task and pay the reporters).
 */
export class GptTaskExecutionError extends NodeCoreError {
  override name = "GptTaskExecutionError";
  /** Machine-readable reason, used in the node's error report. */
  readonly reason:
    | "prompt_too_long"
    | "model_invalid"
    | "model_too_large"
    | "unsupported_option"
    | "template_failed";
  constructor(
    reason: GptTaskExecutionError["reason"],
    shortMessage: string,
    parameters: NodeCoreErrorParameters = {},
  ) {
    super(shortMessage, { docsPath: "node-core.md#task-errors", ...parameters });
    this.reason = reason;
  }
}

/** The prompt plus `max_new_tokens` does not fit in the profile's context. */
export class PromptTooLongError extends GptTaskExecutionError {
  override name = "PromptTooLongError";
  constructor(
    readonly promptTokens: number,
    readonly maxNewTokens: number,
    readonly contextSize: number,
  ) {
    super(
      "prompt_too_long",
      `The prompt (${promptTokens} tokens) plus max_new_tokens (${maxNewTokens}) exceeds the context size (${contextSize}).`,
    );
  }
}

/** The model file cannot be loaded by the engine (not a model llama.cpp understands, corrupt, unsupported). */
export class ModelLoadError extends GptTaskExecutionError {
  override name = "ModelLoadError";
  constructor(path: string, cause: unknown) {
    super("model_invalid", `The model ${path} could not be loaded.`, {
      details: cause instanceof Error ? cause.message : String(cause),
      cause,
    });
  }
}

/** The model (weights plus context) does not fit in the executor's memory budget. */
export class MemoryBudgetExceededError extends GptTaskExecutionError {
  override name = "MemoryBudgetExceededError";
  constructor(
    readonly requiredBytes: number,
    readonly budgetBytes: number,
  ) {
    super(
      "model_too_large",
      `The model needs about ${(requiredBytes / 2 ** 20).toFixed(0)} MiB, over the memory budget of ${(budgetBytes / 2 ** 20).toFixed(0)} MiB.`,
    );
  }
}

/** The executor was disposed, or the task was aborted. */
export class ExecutionAbortedError extends NodeCoreError {
  override name = "ExecutionAbortedError";
}
