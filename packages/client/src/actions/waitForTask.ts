import type { Address, Hex } from "viem";
import { getBlock } from "viem/actions";
import { TaskNotFoundError, WaitForTaskTimeoutError } from "../errors.js";
import { type GetTaskReturnType, getTask } from "./getTask.js";
import { getTaskHistory, type TaskEvent } from "./getTaskHistory.js";
import type { CrynuxBaseClient } from "./types.js";
import { sleep } from "./utils.js";

/**
 * Where a task is: `queued` (waiting for nodes), `started` (3 nodes selected), `committed` (all 3 committed),
 * then one of the final stages `success` (2 results agree), `error` (2 nodes reported a task error) or
 * `aborted` (results mismatch, cancelled or evicted).
 */
export type TaskStage = "queued" | "started" | "committed" | "success" | "error" | "aborted";

/** One stage a task reached, passed to `waitForTask`'s `onProgress` as it happens. */
export type TaskProgress = {
  taskId: bigint;
  stage: TaskStage;
  /** Block of the event that marks the stage (absent when the stage was read from the task's state). */
  blockNumber?: bigint;
  transactionHash?: Hex;
  /** `started`: the selected nodes by round. */
  nodes?: Address[];
  /** `aborted` / `error`: the contract's reason (`results mismatch`, `cancelled`, `evicted`, `task error`). */
  reason?: string;
};

/**
 * Parameters of {@link waitForTask}: the task id, where to start reading events, a timeout and a progress
 * callback.
 */
export type WaitForTaskParameters = {
  taskId: bigint;
  /** Where to start reading the task's events (e.g. `createTask`'s `blockNumber`). Default `earliest`. */
  fromBlock?: bigint | undefined;
  /** Give up after this many ms with a `WaitForTaskTimeoutError`. Default 20 minutes. */
  timeoutMs?: number | undefined;
  /** Pause between polls. Default: the public client's `pollingInterval`. */
  pollingIntervalMs?: number | undefined;
  /** Stops waiting: the promise rejects with `signal.reason`. The task itself goes on on-chain. */
  signal?: AbortSignal | undefined;
  /** Called once per stage, in order (stages the task skipped, such as `queued`, are not reported). */
  onProgress?: ((progress: TaskProgress) => void) | undefined;
  /**
   * The task hash it was created with (`createTask`'s `taskHash`). When a reorg drops the creating
   * transaction, another task may take the same id: with the hash given, that throws `TaskNotFoundError`
   * instead of following someone else's task.
   */
  taskHash?: Hex | undefined;
};

/**
 * How the task ended (`success`, `error` or `aborted`), with the agreed result and the result node on
 * success.
 */
export type WaitForTaskReturnType = {
  taskId: bigint;
  outcome: "success" | "error" | "aborted";
  /** The agreed on-chain result (GPT: sha256 of the response; SD: 8-byte pHashes), `null` unless success. */
  result: Hex | null;
  resultNode: Address | null;
  /** `TaskAborted`'s reason for `error` / `aborted`. */
  reason: string | null;
  /** The task as read when it finished. */
  task: GetTaskReturnType;
  /** Its events seen while waiting (from `fromBlock`). */
  history: TaskEvent[];
};

/** Errors {@link waitForTask} may throw: a timeout, or an unknown task id. */
export type WaitForTaskErrorType = WaitForTaskTimeoutError | TaskNotFoundError;

const RANK: Record<TaskStage, number> = {
  queued: 0,
  started: 1,
  committed: 2,
  success: 3,
  error: 3,
  aborted: 3,
};

/**
 * Polls the chain until the task succeeds, fails or is aborted: each poll reads the task's new events
 * (`getTaskHistory`) and its state (`getTask`) at the same block, reporting every stage once and in order.
 * Resolves at `success` — the result is agreed on-chain; the result node uploads the files to the relay
 * afterwards (`getTaskResult` waits for them) — and at `error` / `aborted` alike: check `outcome`.
 *
 * @throws {WaitForTaskTimeoutError} when `timeoutMs` runs out first.
 */
export async function waitForTask(
  client: CrynuxBaseClient,
  parameters: WaitForTaskParameters,
): Promise<WaitForTaskReturnType> {
  const { taskId, signal, onProgress } = parameters;
  const timeoutMs = parameters.timeoutMs ?? 20 * 60_000;
  const intervalMs = parameters.pollingIntervalMs ?? client.publicClient.pollingInterval;
  const deadline = Date.now() + timeoutMs;
  const history: TaskEvent[] = [];
  let nextBlock = parameters.fromBlock;
  let reached = -1;
  let lastStage: TaskStage | undefined;

  const report = (progress: TaskProgress) => {
    if (RANK[progress.stage] <= reached) return;
    reached = RANK[progress.stage];
    lastStage = progress.stage;
    onProgress?.(progress);
  };

  // Set by a new head: the next pause is cut short, or skipped when the head came during a look.
  let headCame = false;
  let wakeUp: (() => void) | undefined;
  const unsubscribe = client.heads?.subscribe(() => {
    headCame = true;
    wakeUp?.();
  });
  /** Sleeps `ms`, or less when a new head comes. */
  const pause = async (ms: number) => {
    if (!client.heads) return sleep(ms, signal);
    if (headCame) return;
    const cut = new AbortController();
    wakeUp = () => cut.abort();
    try {
      await sleep(ms, signal ? AbortSignal.any([signal, cut.signal]) : cut.signal);
    } catch (error) {
      if (signal?.aborted) throw error;
    } finally {
      wakeUp = undefined;
    }
  };
  try {
    return await poll();
  } finally {
    unsubscribe?.();
  }

  async function poll(): Promise<WaitForTaskReturnType> {
    // The head block seen by the last look: while it is the same, the chain has not changed.
    let seen: Hex | undefined;
    for (;;) {
      if (signal?.aborted) throw signal.reason;
      headCame = false;
      const block = await getBlock(client.publicClient, { blockTag: "latest" });
      const head = block.number;
      if (block.hash === seen) {
        const left = deadline - Date.now();
        if (left <= 0) throw new WaitForTaskTimeoutError(taskId, timeoutMs, lastStage);
        await pause(Math.min(intervalMs, left));
        continue;
      }
      seen = block.hash;
      if (nextBlock === undefined || head >= nextBlock) {
        history.push(...(await getTaskHistory(client, { taskId, fromBlock: nextBlock, toBlock: head })));
        nextBlock = head + 1n;
      }
      const task = await getTask(client, { taskId, blockNumber: head });
      if (signal?.aborted) throw signal.reason;
      if (
        parameters.taskHash !== undefined &&
        task.taskHash.toLowerCase() !== parameters.taskHash.toLowerCase()
      ) {
        throw new TaskNotFoundError(taskId, {
          details: `Task ${taskId} now has another task hash (${task.taskHash}): a reorg dropped the transaction that created yours.`,
        });
      }

      for (const progress of stagesOf(taskId, history)) report(progress);
      const fromState = stageOfState(task);
      if (fromState) report({ taskId, stage: fromState });

      if (
        task.state === "success" ||
        task.state === "uploaded" ||
        task.state === "error" ||
        task.state === "aborted"
      ) {
        const newestFirst = [...history].reverse();
        const success = newestFirst.find((event) => event.eventName === "TaskSuccess");
        const aborted = newestFirst.find((event) => event.eventName === "TaskAborted");
        return {
          taskId,
          outcome: task.state === "uploaded" ? "success" : task.state,
          result: task.result,
          resultNode:
            success?.eventName === "TaskSuccess"
              ? success.args.resultNode
              : task.result !== null && task.resultRound !== null
                ? (task.nodes[task.resultRound] ?? null)
                : null,
          reason: aborted?.eventName === "TaskAborted" ? aborted.args.reason : null,
          task,
          history,
        };
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new WaitForTaskTimeoutError(taskId, timeoutMs, lastStage);
      await pause(Math.min(intervalMs, left));
    }
  }
}

type StartedEvent = Extract<TaskEvent, { eventName: "TaskStarted" }>;

function stagesOf(taskId: bigint, events: TaskEvent[]): TaskProgress[] {
  const stages: TaskProgress[] = [];
  const at = (event: TaskEvent) => ({
    blockNumber: event.blockNumber,
    transactionHash: event.transactionHash,
  });
  const started = events.filter((event): event is StartedEvent => event.eventName === "TaskStarted");
  for (const event of events) {
    switch (event.eventName) {
      case "TaskQueued":
        stages.push({ taskId, stage: "queued", ...at(event) });
        break;
      case "TaskStarted":
        if (event === started[0])
          stages.push({
            taskId,
            stage: "started",
            ...at(event),
            nodes: started
              .filter((other) => other.transactionHash === event.transactionHash)
              .sort((a, b) => a.args.round - b.args.round)
              .map((other) => other.args.selectedNode),
          });
        break;
      case "TaskCommitmentsReady":
        stages.push({ taskId, stage: "committed", ...at(event) });
        break;
      case "TaskSuccess":
        stages.push({ taskId, stage: "success", ...at(event) });
        break;
      case "TaskAborted":
        stages.push({
          taskId,
          stage: event.args.reason === "task error" ? "error" : "aborted",
          reason: event.args.reason,
          ...at(event),
        });
        break;
    }
  }
  return stages;
}

function stageOfState(task: GetTaskReturnType): TaskStage | null {
  switch (task.state) {
    case "queued":
      return "queued";
    case "running":
      return "started";
    case "success":
    case "uploaded":
      return "success";
    case "error":
      return "error";
    case "aborted":
      return "aborted";
    default:
      return null;
  }
}
