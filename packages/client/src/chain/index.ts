export {
  ChainFollowerError,
  type FollowedBatch,
  type FollowedBlock,
  type FollowedLog,
  type FollowedReorg,
  type FollowerCursor,
  type FollowerCursorJson,
  type FollowLogsParameters,
  type FollowLogsPollResult,
  followerCursorToJson,
  followLogs,
  type LogFollower,
  parseFollowerCursor,
} from "./followLogs.js";
export {
  type CreateHeadWatcherParameters,
  createHeadWatcher,
  type HeadSource,
  type HeadWatcher,
  HeadWatcherError,
  webSocketUrlSchema,
} from "./heads.js";
export { type WaitForReceiptParameters, waitForReceipt } from "./receipt.js";
