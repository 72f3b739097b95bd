export {
  type ApiErrorBody,
  type ApiNode,
  type CreateNodeApiOptions,
  createNodeApi,
  jsonSafe,
  publicTaskRecord,
} from "./api.js";
export {
  type ChainNodeStatus,
  completeContracts,
  connectChain,
  type NodeChainClients,
  readChainNodeStatus,
  sendNodeAction,
} from "./chain.js";
export {
  DEFAULT_CONFIG_FILE,
  type LoadNodeConfigParameters,
  loadNodeConfig,
  NODE_ENV,
  type NodeConfig,
  type NodeConfigInput,
  type NodeContracts,
  nodeConfigSchema,
  nodeDeploymentFileSchema,
  parseJsonWithComments,
  resolveNodeConfig,
  Secret,
} from "./config.js";
export { EXIT, NodeConfigError, NodeProgramError, UsageError } from "./errors.js";
export {
  DEFAULT_KEY_FILE,
  exampleConfig,
  type InitNodeParameters,
  type InitNodeResult,
  initNode,
} from "./init.js";
export { type CreateLoggerParameters, createLogger } from "./logger.js";
export {
  API_FILE,
  findApiUrl,
  type RunningNodeProgram,
  type StartNodeProgramParameters,
  startNodeProgram,
} from "./program.js";
export {
  type CreateProgressReporterParameters,
  createProgressReporter,
  formatBytes,
  type ProgressReporter,
  renderBar,
} from "./progress.js";
