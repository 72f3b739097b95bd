export {
  createRelayApp,
  DEFAULT_RELAY_APP_CONFIG,
  type IndexerStatus,
  type RelayAppConfig,
  type RelayAppDeps,
  type RelayEnv,
} from "./app.js";
export {
  deploymentFileSchema,
  IN_MEMORY,
  type LoadRelayConfigParameters,
  loadRelayConfig,
  RELAY_ENV,
  type RelayConfig,
  RelayConfigError,
  type RelayConfigInput,
  relayConfigSchema,
  resolveRelayConfig,
} from "./config.js";
export * from "./errors.js";
export { createTaskIndexer, type TaskIndexer, type TaskIndexerParameters } from "./indexer.js";
export {
  createRateLimiter,
  type RateLimitConfig,
  type RateLimitDecision,
  type RateLimiter,
} from "./rateLimit.js";
export { type RunningRelay, type StartRelayOptions, startRelay } from "./serve.js";
export * from "./store/index.js";
