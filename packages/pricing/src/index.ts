export { CnxAmountError, PricingError, PricingInputError } from "./errors.js";
export { type FeeShares, type FeeSharesParameters, feeShares } from "./feeShares.js";
export {
  KICK_OUT_THRESHOLD,
  KICK_OUT_WINDOW,
  NEW_NODE_WEIGHT,
  type Place,
  type ScoreHistory,
  selectionWeight,
  shouldKickOut,
  TASK_SCORE_LIMIT,
  TASK_SCORE_REWARDS,
  taskScore,
} from "./qos.js";
export {
  type PoissonWorkloadParameters,
  poissonWorkload,
  type SimulatedOutcome,
  type SimulatedTask,
  type SimulateQueueParameters,
  seededRandom,
  simulateQueue,
} from "./simulate.js";
export {
  estimateWait,
  type FeeSuggestion,
  type NetworkSnapshot,
  type SuggestFeeParameters,
  suggestFee,
} from "./suggestFee.js";
export { CNX_DECIMALS, type FormatCnxOptions, formatCnx, parseCnx } from "./units.js";
export {
  compareTaskValue,
  DEFAULT_TIME_PARAMETERS,
  estimateMillis,
  estimateSeconds,
  feeForValue,
  type QueuedTaskOrder,
  type TimeParameters,
  taskValue,
} from "./value.js";
