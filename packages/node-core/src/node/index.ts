export { cpuCard, detectCard, type NodeCard } from "./card.js";
export {
  NodeRuntimeError,
  NodeStoppedError,
  NodeStoreError,
  TxRevertedError,
  TxSendError,
} from "./errors.js";
export { jsonLinesLogger, type LogFields, type LogLevel, type NodeLogger, silentLogger } from "./logger.js";
export {
  type CreateNodeParameters,
  type CrynuxNode,
  createNode,
  NODE_STATUSES,
  type NodeChainStatus,
  type NodeEvents,
  type NodeStatus,
} from "./node.js";
export {
  type AdvanceResult,
  advanceTask,
  classifyFailure,
  type SdTaskExecutor,
  type TaskActivity,
  type TaskPipelineContext,
} from "./pipeline.js";
export {
  type NodeMeta,
  type NodeStore,
  openNodeStore,
  type StoredChainEvent,
  TASK_OUTCOMES,
  TASK_STEPS,
  type TaskArchive,
  type TaskOutcome,
  type TaskRecord,
  type TaskStep,
  taskEarnings,
  taskRecordSchema,
  writeFileAtomic,
} from "./store.js";
export {
  type CreateTxSenderParameters,
  createTxSender,
  type SendTransactionParameters,
  type SentTransaction,
  type TxSender,
} from "./txSender.js";
export {
  type ChainWatcher,
  type CreateChainWatcherParameters,
  createChainWatcher,
  type NodeChainEvent,
  type WatcherChanges,
} from "./watcher.js";
