export {
  type CancelTaskErrorType,
  type CancelTaskParameters,
  type CancelTaskReturnType,
  cancelTask,
} from "./cancelTask.js";
export {
  type CreateTaskErrorType,
  type CreateTaskParameters,
  type CreateTaskReturnType,
  createTask,
} from "./createTask.js";
export {
  type GetNetworkStatsErrorType,
  type GetNetworkStatsParameters,
  type GetNetworkStatsReturnType,
  getNetworkStats,
} from "./getNetworkStats.js";
export {
  type GetNodeInfoErrorType,
  type GetNodeInfoParameters,
  type GetNodeInfoReturnType,
  getNodeInfo,
} from "./getNodeInfo.js";
export { type GetTaskErrorType, type GetTaskParameters, type GetTaskReturnType, getTask } from "./getTask.js";
export {
  type GetTaskHistoryErrorType,
  type GetTaskHistoryParameters,
  type GetTaskHistoryReturnType,
  getTaskHistory,
  type TaskEvent,
} from "./getTaskHistory.js";
export {
  type GetTaskResultErrorType,
  type GetTaskResultParameters,
  type GetTaskResultReturnType,
  getTaskResult,
} from "./getTaskResult.js";
export {
  type ListQueuedTasksErrorType,
  type ListQueuedTasksParameters,
  type ListQueuedTasksReturnType,
  listQueuedTasks,
  type QueuedTask,
} from "./listQueuedTasks.js";
export {
  type RunGptTaskErrorType,
  type RunGptTaskParameters,
  type RunGptTaskReturnType,
  runGptTask,
} from "./runGptTask.js";
export {
  type RunSdTaskErrorType,
  type RunSdTaskParameters,
  type RunSdTaskReturnType,
  runSdTask,
} from "./runSdTask.js";
export {
  type RunTaskErrorType,
  type RunTaskOptions,
  type RunTaskParameters,
  type RunTaskReturnType,
  runTask,
} from "./runTask.js";
export {
  DEFAULT_TARGET_WAIT_SECONDS,
  type SuggestTaskFeeErrorType,
  type SuggestTaskFeeParameters,
  type SuggestTaskFeeReturnType,
  suggestTaskFee,
} from "./suggestTaskFee.js";
export {
  type CrynuxBaseClient,
  NODE_STATUSES,
  type NodeStatusName,
  TASK_STATES,
  type TaskStateName,
  taskStateName,
} from "./types.js";
export {
  type UploadTaskArgsErrorType,
  type UploadTaskArgsParameters,
  type UploadTaskArgsReturnType,
  uploadTaskArgs,
} from "./uploadTaskArgs.js";
export {
  type TaskProgress,
  type TaskStage,
  type WaitForTaskErrorType,
  type WaitForTaskParameters,
  type WaitForTaskReturnType,
  waitForTask,
} from "./waitForTask.js";
