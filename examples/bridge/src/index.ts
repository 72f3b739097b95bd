export { type BridgeAppConfig, type BridgeAppDeps, type BridgeEnv, createBridgeApp } from "./app.js";
export {
  type ApiKeyConfig,
  apiKeySchema,
  BRIDGE_ENV,
  type BridgeConfig,
  type BridgeConfigInput,
  type BridgeModel,
  bridgeConfigSchema,
  type GptModelConfig,
  gptModelSchema,
  IN_MEMORY,
  type LoadBridgeConfigParameters,
  loadBridgeConfig,
  modelSchema,
  resolveBridgeConfig,
  type SdModelConfig,
  sdModelSchema,
} from "./config.js";
export * from "./errors.js";
export { type ApiKey, createKeyRateLimiter, createKeyring, startOfUtcDay } from "./keys.js";
export * from "./openai.js";
export { type RunningBridge, type StartBridgeOptions, startBridge } from "./serve.js";
export * from "./store.js";
export { createTaskRunner, type TaskRunner, type TaskRunnerParameters } from "./tasks.js";
