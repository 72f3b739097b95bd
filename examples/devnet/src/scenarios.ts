import { getNodeInfo, type TaskProgress } from "@crynux/client";
import { nodeAbi, qosAbi, taskAbi } from "@crynux/contracts";
import {
  estimateMillis,
  type FeeShares,
  feeShares,
  formatCnx,
  parseCnx,
  selectionWeight,
  taskValue,
} from "@crynux/pricing";
import { type GptTaskArgsInput, TaskType } from "@crynux/tasks";
import OpenAI from "openai";
import type { Address } from "viem";
import type { Devnet } from "./network.js";

/** Where a scenario tells what happens, line by line (the demo prints; tests may collect or drop). */
export type Say = (line: string) => void;

const F_RELEASED = 2;
const F_SLASHED = 4;
const ORDINALS = ["–", "1st", "2nd", "3rd"];
const SETTLE_TIMEOUT_MS = 120_000;

const short = (address: Address) => `${address.slice(0, 6)}…${address.slice(-4)}`;
// Fees suggested on an idle devnet are a few wei: show those in wei rather than as "0 CNX".
const cnx = (wei: bigint) =>
  wei !== 0n && wei < 1_000_000_000_000n ? `${wei} wei` : `${formatCnx(wei, { maxDecimals: 6 })} CNX`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The node's name in the devnet ("node 2"), or its short address. */
export function nodeName(devnet: Devnet, address: Address): string {
  const index = devnet.accounts.nodes.findIndex((a) => a.address.toLowerCase() === address.toLowerCase());
  return index < 0 ? short(address) : `node ${index + 1}`;
}

/** GPT task arguments on the devnet's model. */
export function devnetGptArgs(devnet: Devnet, content: string, maxNewTokens = 16): GptTaskArgsInput {
  return {
    model: devnet.model.ref,
    messages: [{ role: "user", content }],
    generation_config: { max_new_tokens: maxNewTokens },
    seed: 42,
  };
}

const progressLine = (devnet: Devnet, { taskId, stage, nodes, reason }: TaskProgress) =>
  `  task ${taskId}: ${stage}${nodes ? ` on ${nodes.map((n) => nodeName(devnet, n)).join(", ")}` : ""}${reason ? ` (${reason})` : ""}`;

// ---------------------------------------------------------------------------------------------------------
// Settlement: the fee split and QoS of a finished task

export type RoundSettlement = {
  round: number;
  node: Address;
  commitPlace: number;
  disclosePlace: number;
  slashed: boolean;
  /** TaskNodeSuccess amounts to this node. */
  paid: bigint;
  /** What `feeShares` of @crynux/pricing says it gets. */
  expected: bigint;
  /** This task's score (commit place score + disclose place score; 0 when slashed). */
  score: number;
  qos: {
    averageScore: bigint;
    weight: bigint;
    /** `selectionWeight` of @crynux/pricing over the node's on-chain score history. */
    expectedWeight: number;
    recentScoreSum: bigint;
    tasks: bigint;
  };
};

export type Settlement = {
  taskId: bigint;
  fee: bigint;
  resultRound: number;
  rounds: RoundSettlement[];
  /** TaskRefunded amounts to the creator. */
  refund: bigint;
  expected: FeeShares;
  /** Every payment and the refund equal `feeShares`, and every node's weight equals `selectionWeight`. */
  matches: boolean;
};

/**
 * Waits until all three nodes of a task are released (paid, slashed or cancelled: the last one may disclose
 * after the task succeeded), then reads what each was paid (TaskNodeSuccess), who was slashed, what went back
 * to the creator (TaskRefunded), and checks it against `feeShares` computed from the rounds' commit and
 * disclose places. Reads each node's QoS from the QOS contract.
 */
export async function taskSettlement(devnet: Devnet, taskId: bigint, fromBlock: bigint): Promise<Settlement> {
  const { publicClient } = devnet.anvil;
  const { task, qos } = devnet.contracts;
  const readRounds = () =>
    Promise.all(
      [0n, 1n, 2n].map((round) =>
        publicClient.readContract({
          address: task,
          abi: taskAbi,
          functionName: "getRound",
          args: [taskId, round],
        }),
      ),
    );
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  let rounds = await readRounds();
  while (!rounds.every(([, , , flags]) => (flags & F_RELEASED) !== 0)) {
    if (Date.now() > deadline) {
      const waiting = rounds.flatMap(([node, commitPlace, disclosePlace, flags]) =>
        (flags & F_RELEASED) === 0
          ? [`${nodeName(devnet, node)} (commit place ${commitPlace}, disclose place ${disclosePlace})`]
          : [],
      );
      throw new Error(
        `Task ${taskId}: nodes not released after ${SETTLE_TIMEOUT_MS / 1000} s: ${waiting.join(", ")}.`,
      );
    }
    await sleep(200);
    rounds = await readRounds();
  }
  const info = await publicClient.readContract({
    address: task,
    abi: taskAbi,
    functionName: "getTask",
    args: [taskId],
  });
  const fee = info[6];
  const resultRound = info[10];
  const [successes, refunds] = await Promise.all([
    publicClient.getContractEvents({
      address: task,
      abi: taskAbi,
      eventName: "TaskNodeSuccess",
      args: { taskId },
      fromBlock,
    }),
    publicClient.getContractEvents({
      address: task,
      abi: taskAbi,
      eventName: "TaskRefunded",
      args: { taskId },
      fromBlock,
    }),
  ]);

  const byPlace = (place: 1 | 2) =>
    [0, 1, 2].sort((a, b) => (rounds[a]![place] as number) - (rounds[b]![place] as number));
  const slashedRounds = [0, 1, 2].filter((round) => (rounds[round]![3] & F_SLASHED) !== 0);
  const expected = feeShares({
    fee,
    commitOrder: byPlace(1),
    discloseOrder: byPlace(2),
    resultRound,
    slashedRounds,
  });

  const result: RoundSettlement[] = [];
  for (const [round, [node, commitPlace, disclosePlace, flags]] of rounds.entries()) {
    const paid = successes
      .filter((e) => e.args.node?.toLowerCase() === node.toLowerCase())
      .reduce((sum, e) => sum + (e.args.fee ?? 0n), 0n);
    const [averageScore, weight, recentScoreSum, score] = await Promise.all([
      publicClient.readContract({ address: qos, abi: qosAbi, functionName: "averageScore", args: [node] }),
      publicClient.readContract({ address: qos, abi: qosAbi, functionName: "weightOf", args: [node] }),
      publicClient.readContract({ address: qos, abi: qosAbi, functionName: "recentScoreSum", args: [node] }),
      publicClient.readContract({ address: qos, abi: qosAbi, functionName: "getScore", args: [node] }),
    ]);
    const [, , count, sum] = score;
    result.push({
      round,
      node,
      commitPlace,
      disclosePlace,
      slashed: (flags & F_SLASHED) !== 0,
      paid,
      expected: expected.shares[round]!,
      score: expected.scores[round]!,
      qos: {
        averageScore,
        weight,
        expectedWeight: selectionWeight({ sum, count }),
        recentScoreSum,
        tasks: count,
      },
    });
  }
  const refund = refunds.reduce((sum, e) => sum + (e.args.amount ?? 0n), 0n);
  const matches =
    result.every((r) => r.paid === r.expected && Number(r.qos.weight) === r.qos.expectedWeight) &&
    refund === expected.refund;
  return { taskId, fee, resultRound, rounds: result, refund, expected, matches };
}

/** The settlement as a few readable lines. */
export function describeSettlement(devnet: Devnet, s: Settlement): string[] {
  const lines = [`  fee split of task ${s.taskId} (fee ${cnx(s.fee)}):`];
  for (const r of s.rounds) {
    const places = `commit ${ORDINALS[r.commitPlace]}, disclose ${ORDINALS[r.disclosePlace]}`;
    const role = r.round === s.resultRound ? ", result node" : "";
    const outcome = r.slashed
      ? `SLASHED: its share (score ${r.score}/20) goes back to the creator, paid ${cnx(r.paid)}`
      : `score ${r.score}/20, paid ${cnx(r.paid)}`;
    const check = r.paid === r.expected ? "= feeShares ✓" : `≠ feeShares ${cnx(r.expected)} ✗`;
    lines.push(
      `    ${nodeName(devnet, r.node)} (${places}${role}): ${outcome} ${check}` +
        ` | QoS: average ${r.qos.averageScore}, weight ${r.qos.weight}${Number(r.qos.weight) === r.qos.expectedWeight ? " ✓" : ` ✗ (expected ${r.qos.expectedWeight})`}, last-3 sum ${r.qos.recentScoreSum}, ${r.qos.tasks} task(s)`,
    );
  }
  if (s.refund > 0n || s.expected.refund > 0n)
    lines.push(
      `    refund to the creator: ${cnx(s.refund)} ${s.refund === s.expected.refund ? "= feeShares ✓" : `≠ ${cnx(s.expected.refund)} ✗`}`,
    );
  lines.push(`    the split ${s.matches ? "equals" : "DIFFERS FROM"} feeShares of @crynux/pricing`);
  return lines;
}

// ---------------------------------------------------------------------------------------------------------
// (1) A chat completion through the bridge, with the official OpenAI client

export type ChatResult = { answer: string; taskId: bigint; model: string; settlement: Settlement };

export async function chatThroughBridge(
  devnet: Devnet,
  say: Say,
  prompt = "Say hello to the Crynux devnet.",
): Promise<ChatResult> {
  const fromBlock = await devnet.anvil.publicClient.getBlockNumber();
  const openai = new OpenAI({
    baseURL: devnet.urls.openai,
    apiKey: devnet.apiKey,
    timeout: 180_000,
    maxRetries: 0,
  });
  say(`  POST ${devnet.urls.openai}/chat/completions  model "${devnet.model.bridgeModel}": "${prompt}"`);
  const completion = await openai.chat.completions.create(
    { model: devnet.model.bridgeModel, messages: [{ role: "user", content: prompt }], max_tokens: 16 },
    { headers: { "Idempotency-Key": `devnet-chat-${Date.now()}` } },
  );
  const answer = completion.choices[0]?.message.content ?? "";
  const taskId = BigInt(completion.id.replace(/^chatcmpl-/, ""));
  say(
    `  answer (${completion.usage?.completion_tokens ?? "?"} tokens, task ${taskId}): ${JSON.stringify(answer)}`,
  );
  const settlement = await taskSettlement(devnet, taskId, fromBlock);
  for (const line of describeSettlement(devnet, settlement)) say(line);
  return { answer, taskId, model: completion.model, settlement };
}

// ---------------------------------------------------------------------------------------------------------
// (2) A GPT task with the SDK

export type SdkTaskResult = {
  taskId: bigint;
  answer: string;
  fee: bigint;
  resultNode: Address | null;
  stages: string[];
  settlement: Settlement;
};

export async function sdkGptTask(
  devnet: Devnet,
  say: Say,
  {
    prompt = "Write one line about decentralized GPUs.",
    fee = parseCnx("0.05"),
  }: { prompt?: string; fee?: bigint } = {},
): Promise<SdkTaskResult> {
  const stages: string[] = [];
  say(`  runGptTask from ${short(devnet.accounts.app.address)}: "${prompt}", fee ${cnx(fee)}`);
  const run = await devnet.app.runGptTask(devnetGptArgs(devnet, prompt), {
    fee,
    onProgress: (progress) => {
      stages.push(progress.stage);
      say(progressLine(devnet, progress));
    },
  });
  const answer = run.response.choices[0]?.message.content ?? "";
  say(
    `  answer (fee ${cnx(run.fee)}, result node ${run.resultNode ? nodeName(devnet, run.resultNode) : "?"}): ${JSON.stringify(answer)}`,
  );
  const settlement = await taskSettlement(devnet, run.taskId, run.blockNumber);
  for (const line of describeSettlement(devnet, settlement)) say(line);
  return { taskId: run.taskId, answer, fee: run.fee, resultNode: run.resultNode, stages, settlement };
}

// ---------------------------------------------------------------------------------------------------------
// (3) The queue: more tasks than free nodes start in order of value

export type QueuedTask = { taskId: bigint; fee: bigint; cap: bigint; value: bigint; queued: boolean };

export type QueueResult = {
  tasks: QueuedTask[];
  /** Task ids in the order their TaskStarted events happened. */
  startOrder: bigint[];
  /** Task ids by value, highest first: the order the queue must serve them in. */
  valueOrder: bigint[];
  outcomes: string[];
  settlements: Settlement[];
};

export async function queueScenario(
  devnet: Devnet,
  say: Say,
  fees: bigint[] = [parseCnx("0.01"), parseCnx("0.03"), parseCnx("0.02")],
): Promise<QueueResult> {
  const { app } = devnet;
  const { publicClient } = devnet.anvil;
  const paused = devnet.nodes[0]!;
  const fromBlock = await publicClient.getBlockNumber();
  say(`  node 1 pauses: only 2 nodes are available, a task needs 3`);
  await paused.pause();
  for (let i = 0; (await getNodeInfo(app, { address: paused.address })).status !== "paused"; i++) {
    if (i > 600) throw new Error("node 1 did not pause");
    await sleep(100);
  }

  const tasks: QueuedTask[] = [];
  for (const [i, fee] of fees.entries()) {
    const args = devnetGptArgs(devnet, `Queued task number ${i + 1}.`);
    const created = await app.createTask({ taskType: TaskType.GPT, args, fee });
    await app.uploadTaskArgs({ taskId: created.taskId, args });
    const value = taskValue(fee, estimateMillis(TaskType.GPT, created.cap));
    tasks.push({ taskId: created.taskId, fee, cap: created.cap, value, queued: created.queued });
    say(
      `  task ${created.taskId}: fee ${cnx(fee)}, cap ${created.cap} tokens → value ${formatCnx(value, { maxDecimals: 9 })} CNX/s, ${created.queued ? "queued" : "started at once"}`,
    );
  }
  const valueOrder = [...tasks]
    .sort((a, b) => (b.value > a.value ? 1 : b.value < a.value ? -1 : 0))
    .map((t) => t.taskId);

  say(`  node 1 resumes: the queue hands out the most valuable task first`);
  const ids = new Set(tasks.map((t) => t.taskId));
  const finished = Promise.all(
    tasks.map((t) =>
      app.waitForTask({
        taskId: t.taskId,
        fromBlock,
        onProgress: (progress) => {
          if (progress.stage !== "queued") say(progressLine(devnet, progress));
        },
      }),
    ),
  );
  await paused.resume();
  const results = await finished;

  const started = await publicClient.getContractEvents({
    address: devnet.contracts.task,
    abi: taskAbi,
    eventName: "TaskStarted",
    fromBlock,
  });
  const startOrder: bigint[] = [];
  for (const event of started) {
    const taskId = event.args.taskId;
    if (taskId !== undefined && ids.has(taskId) && !startOrder.includes(taskId)) startOrder.push(taskId);
  }
  const inOrder = startOrder.join() === valueOrder.join();
  say(`  start order ${startOrder.join(" → ")}; by value ${valueOrder.join(" → ")} ${inOrder ? "✓" : "✗"}`);
  const settlements: Settlement[] = [];
  for (const t of tasks) {
    const settlement = await taskSettlement(devnet, t.taskId, fromBlock);
    settlements.push(settlement);
    for (const line of describeSettlement(devnet, settlement)) say(line);
  }
  return { tasks, startOrder, valueOrder, outcomes: results.map((r) => r.outcome), settlements };
}

// ---------------------------------------------------------------------------------------------------------
// (4) A cheating node is slashed

export type CheaterResult = {
  taskId: bigint;
  answer: string;
  cheater: Address;
  /** Nodes of TaskNodeSlashed events of the task. */
  slashedNodes: Address[];
  /** NodeSlashed: the stake taken, and where it went. */
  stakeSlashed: bigint;
  treasury: Address | null;
  treasuryGain: bigint;
  cheaterStatus: string;
  settlement: Settlement;
};

export async function cheaterScenario(
  devnet: Devnet,
  say: Say,
  { prompt = "Tell me something true.", fee = parseCnx("0.05") }: { prompt?: string; fee?: bigint } = {},
): Promise<CheaterResult> {
  const { cheater } = devnet;
  if (!cheater) throw new Error("This devnet was started without the `cheater` option.");
  const { publicClient } = devnet.anvil;
  const { treasury } = devnet.contracts;
  const address = cheater.node.address;
  const before = await publicClient.getBalance({ address: treasury });
  const stakeBefore = (await getNodeInfo(devnet.app, { address })).stake;
  say(
    `  ${nodeName(devnet, address)} (${short(address)}, stake ${cnx(stakeBefore)}) now makes its answers up`,
  );
  cheater.setCheating(true);
  let run: Awaited<ReturnType<typeof devnet.app.runGptTask>>;
  try {
    run = await devnet.app.runGptTask(devnetGptArgs(devnet, prompt), {
      fee,
      onProgress: (progress) => say(progressLine(devnet, progress)),
    });
  } finally {
    // Every node committed before the task could succeed: the cheater's answer is already fixed.
    cheater.setCheating(false);
  }
  const answer = run.response.choices[0]?.message.content ?? "";
  say(`  the two honest nodes agree; answer: ${JSON.stringify(answer)}`);
  const settlement = await taskSettlement(devnet, run.taskId, run.blockNumber);
  const slashedEvents = await publicClient.getContractEvents({
    address: devnet.contracts.task,
    abi: taskAbi,
    eventName: "TaskNodeSlashed",
    args: { taskId: run.taskId },
    fromBlock: run.blockNumber,
  });
  const slashedNodes = slashedEvents.flatMap((e) => (e.args.node ? [e.args.node] : []));
  const nodeSlashed = await publicClient.getContractEvents({
    address: devnet.contracts.node,
    abi: nodeAbi,
    eventName: "NodeSlashed",
    args: { node: address },
    fromBlock: run.blockNumber,
  });
  const stakeSlashed = nodeSlashed.reduce((sum, e) => sum + (e.args.stake ?? 0n), 0n);
  const treasuryGain = (await publicClient.getBalance({ address: treasury })) - before;
  const cheaterStatus = (await getNodeInfo(devnet.app, { address })).status;
  for (const node of slashedNodes) say(`  TaskNodeSlashed(task ${run.taskId}, ${nodeName(devnet, node)})`);
  say(
    `  NodeSlashed: stake ${cnx(stakeSlashed)} → treasury ${short(nodeSlashed[0]?.args.treasury ?? treasury)} (its balance +${cnx(treasuryGain)}); ${nodeName(devnet, address)} is now ${cheaterStatus}`,
  );
  for (const line of describeSettlement(devnet, settlement)) say(line);
  return {
    taskId: run.taskId,
    answer,
    cheater: address,
    slashedNodes,
    stakeSlashed,
    treasury: nodeSlashed[0]?.args.treasury ?? null,
    treasuryGain,
    cheaterStatus,
    settlement,
  };
}

// ---------------------------------------------------------------------------------------------------------
// The whole demo

export type DemoResult = {
  chat: ChatResult;
  sdk: SdkTaskResult;
  queue: QueueResult;
  cheater: CheaterResult;
};

/** The demo's four steps on a running devnet (started with `cheater: true`), in order. */
export async function runDemoScenarios(devnet: Devnet, say: Say): Promise<DemoResult> {
  const step = async <T>(title: string, run: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    say("");
    say(title);
    const result = await run();
    say(`  (${seconds(performance.now() - started)})`);
    return result;
  };
  const chat = await step("(1) chat completion through the bridge, with the official openai client", () =>
    chatThroughBridge(devnet, say),
  );
  const sdk = await step("(2) a GPT task with the SDK: createCrynuxClient + runGptTask", () =>
    sdkGptTask(devnet, say),
  );
  const queue = await step("(3) the queue: 3 tasks, 2 free nodes — they start in order of value", () =>
    queueScenario(devnet, say),
  );
  const cheater = await step("(4) a cheating node is slashed", () => cheaterScenario(devnet, say));
  return { chat, sdk, queue, cheater };
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
