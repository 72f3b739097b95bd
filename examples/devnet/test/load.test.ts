import { RoundFlag, taskAbi } from "@crynux/contracts";
import OpenAI from "openai";
import { zeroAddress } from "viem";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { type Devnet, startDevnet } from "../src/network.js";
import {
  FINAL_STATES,
  gasCost,
  readEscrow,
  readLedger,
  readRounds,
  readTaskState,
  waitFor,
} from "./chain-accounting.js";

// Load (issue 11): 200 GPT tasks through the bridge, with the official openai client, on a devnet of 6 nodes
// (two tasks run at a time, the rest wait in the on-chain queue). Every request must answer or fail with a
// clear error; then the chain's own events must account for every wei of every fee.

const TASKS = 200;
const IN_FLIGHT = 10;
const NODES = 6;
/** Bridge error codes of requests refused before their task was paid. */
const UNPAID_CODES = [
  "task_refused",
  "chain_unavailable",
  "wallet_balance_low",
  "rate_limit_exceeded",
  "insufficient_quota",
];

let devnet: Devnet;

beforeAll(async () => {
  devnet = await startDevnet({ nodeCount: NODES, faucetPort: false });
}, 300_000);

afterAll(async () => {
  await devnet?.stop();
}, 120_000);

type Outcome =
  | { ok: true; taskId: bigint; content: unknown; finishReason: string | undefined }
  | { ok: false; status: number | undefined; code: string | null | undefined; message: string };

describe("load through the bridge", () => {
  test(`${TASKS} GPT tasks (${IN_FLIGHT} in flight) on ${NODES} nodes: every request answers, every task ends in a final state, payouts + refunds = fees to the wei, the escrow is back`, async (context) => {
    const { publicClient } = devnet.anvil;
    const wallet = devnet.accounts.bridgeWallet.address;
    const escrowBefore = await readEscrow(devnet);
    expect(escrowBefore.queued).toBe(0n);
    // A fresh devnet: every task since the deployment is one of this test's.
    const fromBlock = devnet.deploymentBlock;
    expect((await readLedger(devnet, fromBlock, await publicClient.getBlockNumber())).tasks.size).toBe(0);
    const walletBefore = await publicClient.getBalance({ address: wallet });

    // No retries: each request is sent once, so every count below is of requests really made.
    const openai = new OpenAI({
      baseURL: devnet.urls.openai,
      apiKey: devnet.apiKey,
      timeout: 900_000,
      maxRetries: 0,
    });
    const outcomes: Outcome[] = new Array(TASKS);
    const latencies: number[] = [];
    let next = 0;
    const started = Date.now();
    const worker = async () => {
      for (let i = next++; i < TASKS; i = next++) {
        const sent = Date.now();
        try {
          // Streamed: the bridge sends the headers at once and keep-alive comments while the task waits in the
          // queue. A plain request waiting more than 300 s fails in Node's fetch (undici's headersTimeout) as a
          // "Connection error", whatever the openai client's timeout: under this load some tasks wait longer.
          const stream = await openai.chat.completions.create(
            {
              model: devnet.model.bridgeModel,
              messages: [{ role: "user", content: `Load request ${i}: say something.` }],
              max_tokens: 4,
              stream: true,
            },
            { headers: { "Idempotency-Key": `load-${i}` } },
          );
          let id: string | undefined;
          let content = "";
          let finishReason: string | undefined;
          for await (const chunk of stream) {
            id ??= chunk.id;
            content += chunk.choices[0]?.delta.content ?? "";
            finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
          }
          latencies.push(Date.now() - sent);
          outcomes[i] = {
            ok: true,
            taskId: BigInt((id ?? "").replace(/^chatcmpl-/, "")),
            content,
            finishReason,
          };
        } catch (error) {
          outcomes[i] =
            error instanceof OpenAI.APIError
              ? { ok: false, status: error.status, code: error.code, message: error.message }
              : { ok: false, status: undefined, code: undefined, message: String(error) };
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    const requestsSeconds = (Date.now() - started) / 1000;

    const answered = outcomes.filter((o) => o.ok);
    const failed = outcomes.filter((o) => !o.ok);
    const failures = new Map<string, number>();
    for (const o of failed)
      failures.set(`${o.status} ${o.code}`, (failures.get(`${o.status} ${o.code}`) ?? 0) + 1);
    console.info(
      `load: ${TASKS} requests in ${requestsSeconds.toFixed(0)} s (${(TASKS / requestsSeconds).toFixed(2)}/s): ` +
        `${answered.length} answered, ${failed.length} failed; answer latency ${percentiles(latencies)}` +
        (failed.length ? ` ${JSON.stringify([...failures])}; first: ${failed[0]!.message}` : ""),
    );
    expect(answered.length + failed.length).toBe(TASKS);
    // A failure must be the bridge's error with a machine-readable code (in a stream it arrives as an error
    // event, without an HTTP status), never a dropped connection.
    for (const o of failed) expect(o.code, o.message).toBeTruthy();
    // The generated model may end at once (EOS), so an answer can be empty text, but it is always text.
    for (const o of answered) {
      expect(o.content).toBeTypeOf("string");
      expect(["stop", "length"]).toContain(o.finishReason);
    }
    const taskIds = answered.map((o) => o.taskId);
    expect(new Set(taskIds).size).toBe(answered.length);

    // The bridge answers once 2 results agree; the third node's disclosure and the result node's upload
    // report may still be on their way. Wait until every task of the wallet is final and its nodes released.
    const tasksOfWallet = async () => {
      const head = await publicClient.getBlockNumber();
      const ledger = await readLedger(devnet, fromBlock, head);
      return { head, ledger };
    };
    const { ledger: firstLook } = await tasksOfWallet();
    const unsettled = new Set(firstLook.tasks.keys());
    await waitFor(
      "every task to reach a final state with its nodes released",
      async () => {
        for (const taskId of [...unsettled]) {
          const [state, rounds] = await Promise.all([
            readTaskState(devnet, taskId),
            readRounds(devnet, taskId),
          ]);
          // A task aborted in the queue never had nodes (zero addresses).
          const released = rounds.every(
            (r) => r.node === zeroAddress || (r.flags & RoundFlag.RELEASED) !== 0,
          );
          if (FINAL_STATES.includes(state) && released) unsettled.delete(taskId);
        }
        return unsettled.size === 0;
      },
      { timeoutMs: 900_000, intervalMs: 1000 },
    );
    const { head, ledger } = await tasksOfWallet();

    // Exactly the tasks the bridge paid for, one per answered request, all from its wallet.
    // One paid task per request (each sent once, under its own Idempotency-Key), except requests refused
    // before payment; every answer is one of them.
    const unpaid = failed.filter((o) => UNPAID_CODES.includes(String(o.code))).length;
    expect(ledger.tasks.size).toBe(TASKS - unpaid);
    for (const taskId of taskIds) expect(ledger.tasks.has(taskId)).toBe(true);
    const states = new Map<number, number>();
    for (const money of ledger.tasks.values()) {
      expect(money.creator.toLowerCase()).toBe(wallet.toLowerCase());
      expect(money.fee).toBeGreaterThan(0n);
      const task = await publicClient.readContract({
        address: devnet.contracts.task,
        abi: taskAbi,
        functionName: "getTask",
        args: [money.taskId],
      });
      // The fee read from the events is the one the contract recorded; nothing is left in the task.
      expect(task[6]).toBe(money.fee);
      expect(task[7]).toBe(0n);
      expect(FINAL_STATES).toContain(task[2]);
      states.set(task[2], (states.get(task[2]) ?? 0) + 1);
      expect(money.payouts + money.refunds, `task ${money.taskId}`).toBe(money.fee);
    }
    expect(ledger.payouts + ledger.refunds).toBe(ledger.fees);

    // The Task contract holds what it held before: no fee stuck in escrow, no payment left owed.
    const escrowAfter = await readEscrow(devnet);
    expect(escrowAfter).toEqual(escrowBefore);

    // The wallet's side: it spent the fees, got the refunds back, and paid gas for its createTask calls only.
    let gas = 0n;
    for (const money of ledger.tasks.values()) gas += await gasCost(devnet, money.createTx!);
    const walletAfter = await publicClient.getBalance({ address: wallet });
    expect(walletBefore - walletAfter).toBe(ledger.fees - ledger.refunds + gas);

    // All six nodes took part.
    const startedLogs = await publicClient.getContractEvents({
      address: devnet.contracts.task,
      abi: taskAbi,
      eventName: "TaskStarted",
      fromBlock,
      toBlock: head,
    });
    const perNode = new Map<string, number>();
    for (const log of startedLogs) {
      const node = log.args.selectedNode!.toLowerCase();
      perNode.set(node, (perNode.get(node) ?? 0) + 1);
    }
    for (const node of devnet.nodes) expect(perNode.get(node.address.toLowerCase()) ?? 0).toBeGreaterThan(0);

    const totalSeconds = (Date.now() - started) / 1000;
    console.info(
      `load: settled in ${totalSeconds.toFixed(0)} s; states ${JSON.stringify(Object.fromEntries(states))}; ` +
        `fees ${ledger.fees} wei = payouts ${ledger.payouts} + refunds ${ledger.refunds}; ` +
        `tasks per node ${JSON.stringify([...perNode.values()])}; events ${JSON.stringify(ledger.eventCounts)}`,
    );

    recordTrial(context, {
      area: "Load",
      fault: `${TASKS} chat completions through the bridge (openai client, ${IN_FLIGHT} in flight) on ${NODES} nodes`,
      runs: TASKS,
      expected:
        "every request answered (streamed 2xx) or failed with the bridge's error code; every task final (UPLOADED/ERROR/ABORTED) with its nodes released; per task and in total TaskNodeSuccess + TaskRefunded = fee to the wei; Task escrow and balance back to before; wallet spent fees − refunds + gas exactly",
    });
  }, 3_600_000);
});

/** Median, 90th percentile and maximum of durations in ms, as seconds. */
function percentiles(ms: number[]): string {
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (q: number) =>
    ((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) / 1000).toFixed(0);
  return `p50 ${at(0.5)} s, p90 ${at(0.9)} s, max ${at(1)} s`;
}
