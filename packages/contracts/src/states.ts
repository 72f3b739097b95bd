/**
 * The numbers the contracts use for task states, node statuses and round flags, by name — the one place the
 * TypeScript side learns them. They mirror the constants of `contracts/src/Task.sol` and `Node.sol`
 * (`test/states.test.ts` reads them back from the deployed contracts). Keys are in the order of their numbers.
 */

/** `Task.getTask(...).state`. */
export const TaskState = {
  NONE: 0,
  /** Waiting in the queue for 3 nodes. */
  QUEUED: 1,
  /** Selected nodes are committing and disclosing; no outcome yet. */
  RUNNING: 2,
  /** 2 results agree; waiting for the result node's upload report. */
  SUCCESS: 3,
  /** The result node reported the upload and was paid. */
  UPLOADED: 4,
  /** 2 error reports agree: aborted, reporters paid. */
  ERROR: 5,
  /** Evicted, cancelled, or 3 different results: refunded. */
  ABORTED: 6,
} as const;

/** `Node.getNodeInfo(...).status`. */
export const NodeStatus = {
  QUIT: 0,
  AVAILABLE: 1,
  BUSY: 2,
  PENDING_PAUSE: 3,
  PENDING_QUIT: 4,
  PAUSED: 5,
} as const;

/** Bits of `Task.getRound(...).flags`. */
export const RoundFlag = {
  /** Disclosed the empty (error) result. */
  ERROR: 1,
  /** The node is freed from the task (paid, slashed, cancelled or absent). */
  RELEASED: 2,
  SLASHED: 4,
  /** Missed the commit deadline while both partners committed. */
  ABSENT: 8,
} as const;

/**
 * The `taskTypes` bits a node declares when it joins (`Node.join(gpuName, gpuVram, runtimeId, taskTypes)`), one
 * bit per task type (`1 << taskType`): a node is only selected for the task types it declares.
 */
export const NodeTaskTypes = {
  /** Stable Diffusion (task type 0): the node has an image engine. */
  SD: 1,
  /** GPT (task type 1). */
  GPT: 2,
  /** Both. */
  ALL: 3,
} as const;
