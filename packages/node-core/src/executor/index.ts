export {
  ExecutionAbortedError,
  GptTaskExecutionError,
  MemoryBudgetExceededError,
  ModelLoadError,
  PromptTooLongError,
} from "./errors.js";
export {
  type CreateGptExecutorParameters,
  createGptExecutor,
  type ExecuteGptTaskOptions,
  type ExecutorModelFile,
  type ExecutorModelResolver,
  type GptExecutionProgress,
  type GptExecutionResult,
  type GptExecutor,
} from "./gptExecutor.js";
export { type CreateModelResolverParameters, createModelResolver } from "./modelResolver.js";
export {
  DEFAULT_EXECUTION_PROFILE,
  type ExecutionProfile,
  executionProfileSchema,
  NODE_LLAMA_CPP_VERSION,
  parseRuntimeId,
  runtimeId,
} from "./profile.js";
export { createRandom, type SamplerSettings, sampleToken } from "./sampling.js";
