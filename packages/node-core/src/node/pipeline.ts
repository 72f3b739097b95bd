import { type RelayClient, RelayRequestError } from "@crynux/client";
import { type CrynuxDeployment, RoundFlag, TaskState, taskAbi, taskCommitment } from "@crynux/contracts";
import {
  type GptResponse,
  parseGptResponse,
  type SdTaskArgs,
  sdResultsMatch,
  TaskArgsError,
  workUnits,
} from "@crynux/tasks";
import { type Address, bytesToHex, type Hex, type PublicClient } from "viem";
import { GptTaskExecutionError, MemoryBudgetExceededError } from "../executor/errors.js";
import type { GptExecutor } from "../executor/gptExecutor.js";
import { InvalidModelFileError, ModelNotFoundError, ModelTooLargeError } from "../models/resolve.js";
import { QuantizationError } from "../quantize/quantize.js";
import { NodeRuntimeError, NodeStoppedError, TxRevertedError } from "./errors.js";
import type { NodeLogger } from "./logger.js";
import { type NodeStore, TASK_STEPS, type TaskOutcome, type TaskRecord, type TaskStep } from "./store.js";
import type { TxSender } from "./txSender.js";

/** The SD executor a node may run (built on an SD engine); only its result shape matters here. */
export type SdTaskExecutor = {
  /**
   * Runs the SD task; `result` is the on-chain result (8-byte big-endian pHash per image, concatenated) of
   * the PNG `images`.
   */
  execute(
    args: SdTaskArgs,
    options?: { signal?: AbortSignal },
  ): Promise<{ images: Uint8Array[]; result: Hex | Uint8Array }>;
};

const F_RELEASED = RoundFlag.RELEASED;
const F_SLASHED = RoundFlag.SLASHED;
const F_ABSENT = RoundFlag.ABSENT;

/**
 * Moments inside a step that no persisted step marks, reported as they happen (synchronously, before the
 * pipeline goes on), for logs, metrics and fault injection: a crash at any of them must be recoverable.
 * - `argsReceived`: the arguments came from the relay and match the chain; execution starts next.
 * - `txSent`: a transaction of the task was accepted by the RPC; its receipt has not been seen.
 * - `uploadStarted` / `uploadDone`: result node, the result files are being sent to the relay / the relay
 *   stored them (the `uploaded` step is persisted right after).
 */
export type TaskActivity =
  | { kind: "argsReceived"; taskId: bigint }
  | { kind: "txSent"; taskId: bigint; functionName: string; hash: Hex }
  | { kind: "uploadStarted"; taskId: bigint }
  | { kind: "uploadDone"; taskId: bigint };

/** What the pipeline needs; the node builds one per running node. */
export type TaskPipelineContext = {
  store: NodeStore;
  tx: TxSender;
  publicClient: PublicClient;
  /** Relay client signing as this node. */
  relay: RelayClient;
  contracts: Pick<CrynuxDeployment, "task">;
  address: Address;
  gpt?: Pick<GptExecutor, "execute"> | undefined;
  sd?: SdTaskExecutor | undefined;
  logger: NodeLogger;
  signal: AbortSignal;
  /** How long one `advance` keeps asking the relay for arguments not uploaded yet, in ms. */
  argsWaitMs: number;
  /** How long one `advance` keeps retrying a result upload the relay is not ready for, in ms. */
  uploadWaitMs: number;
  /**
   * Blocks the release of this node's round must be buried under before the task is done for it (the node's
   * confirmation depth; default 0): until then a reorg can still drop the transactions that ended it.
   */
  confirmations?: number | undefined;
  /** Called after each persisted step change (synchronously, before the next step starts). */
  onStep?: ((record: TaskRecord) => void) | undefined;
  /** Called at each {@link TaskActivity} (synchronously). */
  onActivity?: ((activity: TaskActivity) => void) | undefined;
};

/** What one `advance` achieved: the task is over for this node, or it waits for the chain or the relay. */
export type AdvanceResult =
  | { done: true; outcome: TaskOutcome }
  | { done: false; reason: string /** Advance again after at most this many ms. */; retryInMs?: number };

type ChainView = {
  state: number;
  taskType: number;
  taskHash: Hex;
  cap: bigint;
  nodes: readonly Address[];
  resultRound: number;
  commitDeadline: bigint;
  deadline: bigint;
  rounds: { node: Address; commitPlace: number; disclosePlace: number; flags: number; commitment: Hex }[];
  /** Timestamp of the latest block: the chain's clock, which deadlines are compared with. */
  now: bigint;
  /** The block every view was read at. */
  blockNumber: bigint;
};

/**
 * Moves a task of this node one or more steps forward, treating the chain (the Task contract's views) as
 * the truth and the stored record as memory. Idempotent: it can be called again at any time, after any
 * crash, and never repeats a transaction whose effect is on-chain (the chain is read before each one, and
 * a transaction sent before a crash is looked up by its stored hash first).
 *
 * Failures of the creator (arguments that do not validate, a cap lower than the arguments' work units, a
 * model that cannot be found or loaded, a prompt too long) become the error result: the node commits to
 * the empty result and reports a task error. Failures of the node (RPC or relay down) are thrown; the
 * caller retries with backoff.
 */
export async function advanceTask(ctx: TaskPipelineContext, taskId: bigint): Promise<AdvanceResult> {
  for (let pass = 0; pass < 16; pass++) {
    const result = await advanceOnce(ctx, taskId);
    if (result !== "again") return result;
  }
  return { done: false, reason: "progressing", retryInMs: 0 };
}

async function advanceOnce(ctx: TaskPipelineContext, taskId: bigint): Promise<AdvanceResult | "again"> {
  const { store, signal } = ctx;
  if (signal.aborted) throw new NodeStoppedError();
  let record = await store.getTask(taskId);
  if (!record) return { done: true, outcome: "vanished" };
  if (record.step === "done") return { done: true, outcome: record.outcome ?? "aborted" };
  if (record.pendingTx) {
    await settlePendingTx(ctx, record);
    return "again";
  }

  const chain = await readChain(ctx, taskId);
  const me = ctx.address.toLowerCase();
  if (chain.state === TaskState.NONE || chain.nodes[record.round]?.toLowerCase() !== me) {
    // An RPC behind the block the task started in knows nothing yet; only a view at or after that block
    // proves that the start was reorged away.
    if (record.startedIn && chain.blockNumber < BigInt(record.startedIn.blockNumber))
      return { done: false, reason: "the RPC is behind the task's start", retryInMs: 1000 };
    return finish(ctx, record, "vanished", chain.blockNumber);
  }
  const mine = chain.rounds[record.round]!;
  if (mine.flags & F_RELEASED) {
    // A finished task is never looked at again: a release that a reorg could still undo would leave the
    // dropped transactions (disclosure, upload report) unsent.
    if (!(await releaseConfirmed(ctx, taskId, record.round, chain.blockNumber)))
      return { done: false, reason: "waiting for the release to be confirmed", retryInMs: 500 };
    return finish(ctx, record, outcomeOf(chain, mine.flags), chain.blockNumber);
  }

  const commitCount = chain.rounds.filter((r) => r.commitPlace > 0).length;
  const commitOpen = chain.state === TaskState.RUNNING && chain.now <= chain.commitDeadline;

  // 1. Execute (only while a commitment can still be accepted).
  if (!record.output && mine.commitPlace === 0 && commitOpen && !record.note) {
    const executed = await execute(ctx, record, chain);
    if (executed.done === false) return executed;
    return "again";
  }

  // 2. Commit.
  if (record.output && record.nonce && mine.commitPlace === 0 && commitOpen) {
    const commitment = record.commitment ?? taskCommitment(resultOf(record), record.nonce);
    try {
      await send(ctx, taskId, "submitCommitment", [taskId, BigInt(record.round), commitment]);
    } catch (error) {
      if (!(error instanceof TxRevertedError)) throw error;
      // AlreadyCommitted, CommitDeadlinePassed, IllegalTaskState: the chain moved (or a transaction of ours
      // is still pending); look again shortly rather than at once.
      ctx.logger.warn("commitment refused", { taskId, error: error.errorName });
      return { done: false, reason: `commitment refused: ${error.errorName}`, retryInMs: 1000 };
    }
    return "again";
  }
  if (mine.commitPlace > 0) record = await setStep(ctx, record, "committed");

  // 3. Disclose (3 commitments, or 2 once the commit deadline passed), unless disclosing can only hurt.
  if (record.output && record.nonce && mine.commitPlace > 0 && mine.disclosePlace === 0) {
    const decision = await shouldDisclose(ctx, taskId, record, chain, commitCount);
    if (decision === "now") {
      const isError = record.output.kind === "error";
      const fn = isError ? "reportTaskError" : "disclose";
      const args = isError
        ? [taskId, BigInt(record.round), record.nonce]
        : [taskId, BigInt(record.round), resultOf(record), record.nonce];
      try {
        await send(ctx, taskId, fn, args);
      } catch (error) {
        if (!(error instanceof TxRevertedError)) throw error;
        ctx.logger.warn("disclosure refused", { taskId, error: error.errorName });
        return { done: false, reason: `disclosure refused: ${error.errorName}`, retryInMs: 1000 };
      }
      return "again";
    }
    if (decision === "wait") return waitForChain(chain, "waiting for commitments");
    // "never": our result disagrees with the settled one; stay out and cancel after the deadline.
  }
  if (mine.disclosePlace > 0) record = await setStep(ctx, record, "disclosed");

  // 4. Result node: upload the result files, then report them uploaded (and get paid).
  if (chain.state === TaskState.SUCCESS && chain.resultRound === record.round && mine.disclosePlace > 0) {
    if (record.step !== "uploaded") {
      const uploaded = await uploadResults(ctx, taskId, record);
      if (!uploaded)
        return { done: false, reason: "waiting for the relay to see the success", retryInMs: 1000 };
      record = await setStep(ctx, record, "uploaded");
    }
    try {
      await send(ctx, taskId, "reportResultsUploaded", [taskId, BigInt(record.round)]);
    } catch (error) {
      if (!(error instanceof TxRevertedError)) throw error;
      ctx.logger.warn("reportResultsUploaded refused", { taskId, error: error.errorName });
      return { done: false, reason: `upload report refused: ${error.errorName}`, retryInMs: 1000 };
    }
    return "again";
  }

  // 5. Unsettled past the deadline (or unable to reach 2 commitments): cancel to free this node.
  const cancellable =
    chain.now > chain.deadline ||
    (chain.state === TaskState.RUNNING && chain.now > chain.commitDeadline && commitCount < 2);
  if (cancellable && chain.state !== TaskState.ABORTED) {
    try {
      await send(ctx, taskId, "cancelTask", [taskId]);
    } catch (error) {
      if (!(error instanceof TxRevertedError)) throw error;
      ctx.logger.warn("cancelTask refused", { taskId, error: error.errorName });
      return { done: false, reason: "cancel refused", retryInMs: 2000 };
    }
    return "again";
  }
  return waitForChain(chain, "waiting for the other nodes");
}

async function readChain(ctx: TaskPipelineContext, taskId: bigint): Promise<ChainView> {
  // One call: the views agree with each other and with `now` (they are read at one block, which it names).
  const view = await ctx.publicClient.readContract({
    address: ctx.contracts.task,
    abi: taskAbi,
    functionName: "getTaskView",
    args: [taskId],
  });
  return {
    state: view.state,
    taskType: view.taskType,
    taskHash: view.taskHash,
    cap: view.cap,
    nodes: view.rounds.map((round) => round.node),
    resultRound: view.resultRound,
    commitDeadline: view.commitDeadline,
    deadline: view.deadline,
    rounds: view.rounds.map(({ node, commitPlace, disclosePlace, flags, commitment }) => ({
      node,
      commitPlace,
      disclosePlace,
      flags,
      commitment,
    })),
    now: view.timestamp,
    blockNumber: view.blockNumber,
  };
}

async function releaseConfirmed(
  ctx: TaskPipelineContext,
  taskId: bigint,
  round: number,
  latest: bigint,
): Promise<boolean> {
  const depth = BigInt(ctx.confirmations ?? 0);
  if (depth === 0n) return true;
  if (latest < depth) return false;
  const [, , , flags] = await ctx.publicClient.readContract({
    address: ctx.contracts.task,
    abi: taskAbi,
    functionName: "getRound",
    args: [taskId, BigInt(round)],
    blockNumber: latest - depth,
  });
  return (flags & F_RELEASED) !== 0;
}

function outcomeOf(chain: ChainView, flags: number): TaskOutcome {
  if (flags & F_SLASHED) return "slashed";
  if (flags & F_ABSENT) return "absent";
  if (chain.state === TaskState.SUCCESS || chain.state === TaskState.UPLOADED) return "success";
  if (chain.state === TaskState.ERROR) return "error";
  return "aborted";
}

function waitForChain(chain: ChainView, reason: string): AdvanceResult {
  // Deadlines are in chain time; without an event to wake the node, look again when the next one passes.
  const next = [chain.commitDeadline, chain.deadline].find((t) => t >= chain.now);
  const retryInMs = next === undefined ? 5000 : Math.min(5000, Number(next - chain.now + 1n) * 1000);
  return { done: false, reason, retryInMs };
}

async function finish(
  ctx: TaskPipelineContext,
  record: TaskRecord,
  outcome: TaskOutcome,
  blockNumber: bigint,
): Promise<AdvanceResult> {
  const stored = await ctx.store.updateTask(BigInt(record.taskId), (r) =>
    r
      ? {
          ...r,
          step: "done",
          outcome,
          finishedIn: { blockNumber: blockNumber.toString(), step: r.step === "done" ? "started" : r.step },
        }
      : undefined,
  );
  if (stored) ctx.onStep?.(stored);
  ctx.logger.info("task finished", { taskId: record.taskId, outcome });
  return { done: true, outcome };
}

async function setStep(ctx: TaskPipelineContext, record: TaskRecord, step: TaskStep): Promise<TaskRecord> {
  if (TASK_STEPS.indexOf(record.step) >= TASK_STEPS.indexOf(step)) return record;
  const stored = await ctx.store.updateTask(BigInt(record.taskId), (r) => (r ? { ...r, step } : undefined));
  if (!stored) throw new NodeRuntimeError(`The record of task ${record.taskId} disappeared.`);
  ctx.logger.info("task step", { taskId: record.taskId, step });
  ctx.onStep?.(stored);
  if (ctx.signal.aborted) throw new NodeStoppedError();
  return stored;
}

function resultOf(record: TaskRecord): Hex {
  return record.output?.kind === "result" ? record.output.result : "0x";
}

/** A transaction sent before (maybe before a crash) and not known to have landed: wait for it first. */
async function settlePendingTx(ctx: TaskPipelineContext, record: TaskRecord): Promise<void> {
  const pending = record.pendingTx;
  if (!pending) return;
  const receipt = await ctx.tx.waitForKnown(pending.hash, ctx.signal);
  ctx.logger.info("pending transaction checked", {
    taskId: record.taskId,
    functionName: pending.functionName,
    hash: pending.hash,
    status: receipt?.status ?? "unknown to the chain",
  });
  await ctx.store.updateTask(BigInt(record.taskId), (r) => (r ? { ...r, pendingTx: undefined } : undefined));
}

/**
 * Gas floor of the calls that may settle a task: whether this disclosure is the one that settles (pays
 * up to 3 nodes, frees them, and may start a queued task with a random selection) depends on the
 * disclosures landing just before it, after the estimate was taken. Unused gas is not charged.
 */
export const SETTLEMENT_GAS_FLOOR = 1_500_000n;
const SETTLING_CALLS = new Set(["disclose", "reportTaskError", "reportResultsUploaded", "cancelTask"]);

async function send(
  ctx: TaskPipelineContext,
  taskId: bigint,
  functionName: string,
  args: readonly unknown[],
) {
  ctx.logger.info("sending", { taskId, functionName });
  const sent = await ctx.tx.send({
    address: ctx.contracts.task,
    abi: taskAbi,
    functionName,
    args,
    ...(SETTLING_CALLS.has(functionName) ? { minGas: SETTLEMENT_GAS_FLOOR } : {}),
    signal: ctx.signal,
    onSent: (hash) => ctx.onActivity?.({ kind: "txSent", taskId, functionName, hash }),
    onHash: async (hash) => {
      await ctx.store.updateTask(taskId, (r) =>
        r ? { ...r, txs: { ...r.txs, [functionName]: hash }, pendingTx: { functionName, hash } } : undefined,
      );
    },
  });
  ctx.logger.info("sent", { taskId, functionName, hash: sent.hash, gasUsed: sent.receipt.gasUsed });
  await ctx.store.updateTask(taskId, (r) => (r ? { ...r, pendingTx: undefined } : undefined));
  return sent;
}

async function shouldDisclose(
  ctx: TaskPipelineContext,
  taskId: bigint,
  record: TaskRecord,
  chain: ChainView,
  commitCount: number,
): Promise<"now" | "wait" | "never"> {
  const ours = resultOf(record);
  if (chain.state === TaskState.RUNNING) {
    const ready = commitCount === 3 || (commitCount === 2 && chain.now > chain.commitDeadline);
    return ready ? "now" : "wait";
  }
  if (chain.state === TaskState.ERROR) return record.output?.kind === "error" ? "now" : "never";
  if (chain.state === TaskState.SUCCESS || chain.state === TaskState.UPLOADED) {
    if (record.output?.kind === "error") return "never";
    const settled = await ctx.publicClient.readContract({
      address: ctx.contracts.task,
      abi: taskAbi,
      functionName: "getTaskResult",
      args: [taskId],
    });
    if (chain.taskType === 1) return settled.toLowerCase() === ours.toLowerCase() ? "now" : "never";
    const config = await ctx.publicClient.readContract({
      address: ctx.contracts.task,
      abi: taskAbi,
      functionName: "getConfig",
    });
    return sdResultsMatch(settled, ours, Number(config[2])) ? "now" : "never";
  }
  return "never";
}

const ARGS_WAIT_CODES = ["task_not_found", "task_not_started", "args_not_found"];

async function execute(
  ctx: TaskPipelineContext,
  record: TaskRecord,
  chain: ChainView,
): Promise<AdvanceResult | { done: undefined }> {
  const taskId = BigInt(record.taskId);
  const executor = record.taskType === 1 ? ctx.gpt : ctx.sd;
  if (!executor) {
    // Reporting an error would get this node slashed if the others run the task: it stays out instead.
    await note(ctx, record, `no ${record.taskType === 1 ? "GPT" : "SD"} executor configured`);
    return { done: undefined };
  }
  let answer: Awaited<ReturnType<RelayClient["getTaskArgs"]>>;
  try {
    answer = await ctx.relay.getTaskArgs(taskId, { waitMs: ctx.argsWaitMs, signal: ctx.signal });
  } catch (error) {
    if (error instanceof RelayRequestError && ARGS_WAIT_CODES.includes(error.code))
      return { done: false, reason: "waiting for the task arguments", retryInMs: 500 };
    throw error;
  }
  // The relay client checked the arguments against the hash the relay names; the chain has the last word.
  if (answer.taskHash.toLowerCase() !== chain.taskHash.toLowerCase() || answer.taskType !== chain.taskType)
    throw new NodeRuntimeError(`The relay serves arguments of another task hash for task ${taskId}.`, {
      details: `relay: ${answer.taskHash} (type ${answer.taskType}), chain: ${chain.taskHash} (type ${chain.taskType})`,
    });

  let output: NonNullable<TaskRecord["output"]>;
  let images: Uint8Array[] | undefined;
  ctx.onActivity?.({ kind: "argsReceived", taskId });
  if (ctx.signal.aborted) throw new NodeStoppedError();
  ctx.logger.info("executing", { taskId, taskType: record.taskType });
  try {
    const units = workUnits(answer.taskType, answer.rawArgs);
    if (units > chain.cap) {
      output = {
        kind: "error",
        reason: "cap_too_low",
        message: `The arguments need ${units} work units, the task declares ${chain.cap}.`,
      };
    } else if (answer.taskType === 1) {
      const result = await (executor as Pick<GptExecutor, "execute">).execute(answer.rawArgs, {
        signal: ctx.signal,
      });
      output = {
        kind: "result",
        result: result.resultHash,
        response: result.response as Record<string, unknown>,
      };
    } else {
      const result = await (executor as SdTaskExecutor).execute(answer.args, { signal: ctx.signal });
      images = result.images;
      const bytes = typeof result.result === "string" ? result.result : bytesToHex(result.result);
      output = { kind: "result", result: bytes, imageCount: images.length };
    }
  } catch (error) {
    if (ctx.signal.aborted) throw new NodeStoppedError();
    const fault = classifyFailure(error);
    if (fault.kind === "node") throw error;
    if (fault.kind === "unable") {
      await note(ctx, record, `cannot run this task: ${errorMessage(error)}`);
      return { done: undefined };
    }
    output = { kind: "error", reason: fault.reason, message: errorMessage(error) };
  }
  if (images) await ctx.store.writeImages(taskId, images);
  // The nonce is drawn and stored with the result before any commitment can be sent.
  const nonce = bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
  const commitment = taskCommitment(output.kind === "result" ? output.result : "0x", nonce);
  const stored = await ctx.store.updateTask(taskId, (r) =>
    r ? { ...r, output, nonce, commitment, step: "executed", lastError: undefined } : undefined,
  );
  if (!stored) throw new NodeRuntimeError(`The record of task ${taskId} disappeared.`);
  ctx.logger.info("executed", {
    taskId,
    output: output.kind,
    reason: output.kind === "error" ? output.reason : undefined,
  });
  ctx.onStep?.(stored);
  if (ctx.signal.aborted) throw new NodeStoppedError();
  return { done: undefined };
}

async function note(ctx: TaskPipelineContext, record: TaskRecord, text: string) {
  ctx.logger.warn("task skipped", { taskId: record.taskId, note: text });
  await ctx.store.updateTask(BigInt(record.taskId), (r) => (r ? { ...r, note: text } : undefined));
}

async function uploadResults(ctx: TaskPipelineContext, taskId: bigint, record: TaskRecord): Promise<boolean> {
  const output = record.output;
  if (output?.kind !== "result") throw new NodeRuntimeError(`Task ${taskId} has no result to upload.`);
  const results =
    output.response !== undefined
      ? { response: parseGptResponse(output.response) as GptResponse }
      : { images: await ctx.store.readImages(taskId, output.imageCount ?? 0) };
  ctx.onActivity?.({ kind: "uploadStarted", taskId });
  try {
    await ctx.relay.uploadResults(taskId, results, { waitMs: ctx.uploadWaitMs, signal: ctx.signal });
  } catch (error) {
    if (error instanceof RelayRequestError && ["task_not_found", "task_not_success"].includes(error.code))
      return false;
    throw error;
  }
  ctx.logger.info("results uploaded", { taskId });
  ctx.onActivity?.({ kind: "uploadDone", taskId });
  return true;
}

/**
 * Whose fault a failed execution is. `creator`: the task cannot run as written on any honest node, so the
 * node commits to the error result. `unable`: this node cannot run it (not enough memory for the model);
 * an error report could disagree with nodes that can, so it stays out. `node`: a passing problem (network,
 * disk), retried.
 */
export function classifyFailure(
  error: unknown,
): { kind: "creator"; reason: string } | { kind: "unable" } | { kind: "node" } {
  if (error instanceof MemoryBudgetExceededError || error instanceof ModelTooLargeError)
    return { kind: "unable" };
  if (error instanceof TaskArgsError) return { kind: "creator", reason: "bad_args" };
  if (error instanceof GptTaskExecutionError) return { kind: "creator", reason: error.reason };
  if (error instanceof ModelNotFoundError)
    return error.reason === "not-cached" ? { kind: "node" } : { kind: "creator", reason: "model_not_found" };
  if (error instanceof InvalidModelFileError) return { kind: "creator", reason: "model_invalid" };
  if (error instanceof QuantizationError) return { kind: "creator", reason: "model_not_quantizable" };
  // An SD engine's task error: named like ours, carrying a machine-readable reason.
  if (error instanceof Error && /TaskExecutionError$/.test(error.name)) {
    const reason = (error as { reason?: unknown }).reason;
    return { kind: "creator", reason: typeof reason === "string" ? reason : "task_invalid" };
  }
  return { kind: "node" };
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) return (error as { shortMessage?: string }).shortMessage ?? error.message;
  return String(error);
}
