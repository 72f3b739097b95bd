import {
  type CreateTaskParameters,
  type CrynuxClient,
  InvalidTaskArgsError,
  TaskContractError,
  TaskResultMismatchError,
  WaitForTaskTimeoutError,
} from "@crynux/client";
import { taskAbi } from "@crynux/contracts";
import type { GptTaskArgsInput } from "@crynux/tasks";
import type { Address, Hex } from "viem";
import { BridgeError, InvalidRequestError } from "./errors.js";
import type { BridgeStore, StoredError, TaskRecord } from "./store.js";

export type TaskRunnerParameters = {
  client: CrynuxClient;
  store: BridgeStore;
  /** The application wallet: creator of every task. */
  wallet: Address;
  pollingIntervalMs: number;
  taskTimeoutMs: number;
  relayWaitMs: number;
  /** Failures the runner retries on its own (relay or RPC down). */
  onError?: ((error: unknown) => void) | undefined;
};

export type TaskRunner = {
  /**
   * Pays a recorded task (createTask with the recorded fee and data hash) and marks it paid. When the payment
   * fails, the chain is searched for it (a receipt can be lost after the transaction went out); a task that was
   * never paid has its record deleted, and the error is thrown.
   */
  pay(record: TaskRecord): Promise<TaskRecord>;
  /**
   * Resolves with the record once its task finished (`succeeded` or `failed`). One follower per task: callers
   * asking for the same record share it.
   */
  finish(record: TaskRecord): Promise<TaskRecord>;
  /** After a restart: settles records left `recorded` and follows every paid, unfinished task again. */
  resume(): Promise<void>;
  /** Stops following (records stay as they are, for the next start) and waits for the followers to end. */
  stop(): Promise<void>;
};

const MAX_FOLLOW_ATTEMPTS = 5;

/**
 * Drives paid tasks to their result with the client's actions: `uploadTaskArgs` → `waitForTask` →
 * `getTaskResult`, recording each outcome. Every step is safe to repeat, so a restarted bridge picks a task
 * up wherever the last one stopped.
 */
export function createTaskRunner(parameters: TaskRunnerParameters): TaskRunner {
  const { client, store, wallet } = parameters;
  const controller = new AbortController();
  const signal = controller.signal;
  const followers = new Map<string, Promise<TaskRecord>>();
  const payments = new Map<string, Promise<TaskRecord>>();
  const onError = parameters.onError ?? ((error: unknown) => console.error("bridge: task error", error));

  const keyOf = (record: TaskRecord) => `${record.apiKey}\u0000${record.requestId}`;

  async function findPayment(
    record: TaskRecord,
  ): Promise<{ taskId: bigint; txHash: Hex; blockNumber: bigint } | null> {
    const { publicClient } = client;
    // A transaction still pending may yet pay the task: wait until the wallet has none in flight.
    const deadline = Date.now() + parameters.relayWaitMs;
    for (;;) {
      const [pending, latest] = await Promise.all([
        publicClient.getTransactionCount({ address: wallet, blockTag: "pending" }),
        publicClient.getTransactionCount({ address: wallet, blockTag: "latest" }),
      ]);
      if (pending <= latest || Date.now() > deadline) break;
      await sleep(parameters.pollingIntervalMs, signal);
    }
    const query = {
      address: client.contracts.task,
      abi: taskAbi,
      args: { creator: wallet },
      fromBlock: record.fromBlock,
      toBlock: "latest",
    } as const;
    const [queued, started] = await Promise.all([
      publicClient.getContractEvents({ ...query, eventName: "TaskQueued" }),
      publicClient.getContractEvents({ ...query, eventName: "TaskStarted" }),
    ]);
    for (const log of [...queued, ...started]) {
      if (log.args.dataHash?.toLowerCase() === record.dataHash.toLowerCase() && log.args.taskId !== undefined)
        return { taskId: log.args.taskId, txHash: log.transactionHash, blockNumber: log.blockNumber };
    }
    return null;
  }

  function pay(record: TaskRecord): Promise<TaskRecord> {
    const key = keyOf(record);
    const payment = sendPayment(record).finally(() => payments.delete(key));
    payments.set(key, payment);
    return payment;
  }

  async function sendPayment(record: TaskRecord): Promise<TaskRecord> {
    try {
      // The record holds arguments that were validated for its task type before it was made.
      const created = await client.createTask({
        taskType: record.taskType,
        args: record.args,
        fee: record.fee,
        vramLimit: record.vramLimit,
        dataHash: record.dataHash,
      } as CreateTaskParameters);
      return await store.markPaid(record.apiKey, record.requestId, created);
    } catch (error) {
      const found = await findPayment(record).catch(() => undefined);
      if (found) return store.markPaid(record.apiKey, record.requestId, found);
      // Unknown whether it was paid (the chain cannot be read): keep the record for resume to settle.
      if (found === undefined) throw paymentError(error);
      await store.delete(record.apiKey, record.requestId);
      throw paymentError(error);
    }
  }

  async function follow(start: TaskRecord): Promise<TaskRecord> {
    const payment = payments.get(keyOf(start));
    // Paid by a request in flight: wait for it rather than mistake the record for an abandoned one.
    let record = payment ? await payment : await store.get(start.apiKey, start.requestId);
    if (!record)
      throw new BridgeError("The task of this request was never paid; send the request again.", {
        status: 409,
        type: "conflict_error",
        code: "task_not_paid",
      });
    if (record.state === "recorded") {
      const found = await findPayment(record);
      if (!found) {
        await store.delete(record.apiKey, record.requestId);
        throw new BridgeError("The task of this request was never paid; send the request again.", {
          status: 409,
          type: "conflict_error",
          code: "task_not_paid",
        });
      }
      record = await store.markPaid(record.apiKey, record.requestId, found);
    }
    if (record.state !== "paid") return record;
    const taskId = record.taskId!;
    const deadline = Date.now() + parameters.taskTimeoutMs;
    const fail = (error: StoredError) => store.markFailed(record.apiKey, record.requestId, error);
    for (let attempt = 1; ; attempt++) {
      try {
        await client.uploadTaskArgs({
          taskId,
          args: record.args as GptTaskArgsInput,
          waitForTaskMs: parameters.relayWaitMs,
          signal,
        });
        const final = await client.waitForTask({
          taskId,
          fromBlock: record.blockNumber ?? undefined,
          timeoutMs: Math.max(1, deadline - Date.now()),
          pollingIntervalMs: parameters.pollingIntervalMs,
          signal,
        });
        if (final.outcome !== "success")
          return await fail({
            status: 502,
            type: "api_error",
            code: `task_${final.outcome}`,
            message: `Crynux task ${taskId} ended without a result (${final.reason ?? final.outcome}).`,
          });
        const result = await client.getTaskResult({ taskId, waitMs: parameters.relayWaitMs, signal });
        const stored =
          result.taskType === 1
            ? result.response
            : { images: result.images.map((image) => Buffer.from(image).toString("base64")) };
        return await store.markSucceeded(record.apiKey, record.requestId, stored);
      } catch (error) {
        if (signal.aborted) throw error;
        if (error instanceof WaitForTaskTimeoutError)
          return await fail({
            status: 504,
            type: "api_error",
            code: "task_timeout",
            message: `Crynux task ${taskId} did not finish within ${parameters.taskTimeoutMs} ms.`,
          });
        if (error instanceof TaskResultMismatchError)
          return await fail({
            status: 502,
            type: "api_error",
            code: "result_mismatch",
            message: `The relay's result of task ${taskId} does not match the one agreed on-chain.`,
          });
        onError(error);
        if (attempt >= MAX_FOLLOW_ATTEMPTS || Date.now() > deadline)
          throw new BridgeError(
            `Task ${taskId} is paid but its result cannot be fetched now; retry with the same Idempotency-Key.`,
            { status: 503, type: "service_unavailable", code: "task_unavailable", cause: error },
          );
        await sleep(Math.min(30_000, 500 * 2 ** attempt), signal);
      }
    }
  }

  function finish(record: TaskRecord): Promise<TaskRecord> {
    if (record.state === "succeeded" || record.state === "failed") return Promise.resolve(record);
    if (signal.aborted) return Promise.reject(stoppingError());
    const key = keyOf(record);
    let running = followers.get(key);
    if (!running) {
      running = follow(record).finally(() => followers.delete(key));
      followers.set(key, running);
    }
    return running;
  }

  return {
    pay,
    finish,
    async resume() {
      for (const record of await store.unfinished()) {
        // Nobody waits for these yet; a retried request joins the follower.
        finish(record).catch((error: unknown) => {
          if (!signal.aborted) onError(error);
        });
      }
    },
    async stop() {
      controller.abort(stoppingError());
      await Promise.allSettled([...followers.values()]);
    },
  };
}

function stoppingError(): BridgeError {
  return new BridgeError("The bridge is stopping; retry with the same Idempotency-Key.", {
    status: 503,
    type: "service_unavailable",
    code: "stopping",
  });
}

/** The HTTP error of a payment that did not happen. */
function paymentError(error: unknown): BridgeError {
  if (error instanceof BridgeError) return error;
  if (error instanceof InvalidTaskArgsError) {
    const param = error.issues[0]?.path.join(".");
    return new InvalidRequestError(error.shortMessage, param, { cause: error });
  }
  if (error instanceof TaskContractError)
    return new BridgeError(
      `The network refused the task${error.errorName ? ` (${error.errorName})` : ""}; try again later.`,
      {
        status: 503,
        type: "service_unavailable",
        code: "task_refused",
        cause: error,
        details: error.details,
      },
    );
  return new BridgeError("The bridge cannot reach the chain to pay the task; try again later.", {
    status: 503,
    type: "service_unavailable",
    code: "chain_unavailable",
    cause: error,
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
