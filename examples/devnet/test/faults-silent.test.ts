import { TaskContractError } from "@crynux/client";
import { NodeStatus, nodeAbi, qosAbi, RoundFlag, TaskState, taskAbi } from "@crynux/contracts";
import { parseCnx } from "@crynux/pricing";
import { TaskType } from "@crynux/tasks";
import type { Address } from "viem";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { type Devnet, startDevnet } from "../src/network.js";
import { devnetGptArgs } from "../src/scenarios.js";
import {
  gasCost,
  passCommitDeadline,
  readLedger,
  readNode,
  readQos,
  readRounds,
  readTaskState,
  waitFor,
} from "./chain-accounting.js";

// Nodes that go silent on a 3-node devnet. A "silent" node is one whose process stopped (`node.stop()`: no
// transaction, so on-chain it is still AVAILABLE and gets selected), the way a crashed machine looks. With
// exactly 3 nodes every task selects all three. Instead of waiting the real 10-minute commit deadline, the
// chain's clock is moved past it (evm_increaseTime) once the live nodes have committed.
//
// The tests follow each other on one devnet: (c) continues the silent node of (a); (b) runs last.

// A fee divisible by 50, so that the shares (score/50 of the fee) are exact and easy to state.
const FEE = parseCnx("0.05");

let devnet: Devnet;
let penalty: bigint;
let stakeAmount: bigint;
let kickoutThreshold: bigint;

beforeAll(async () => {
  devnet = await startDevnet({ faucetPort: false });
  const { publicClient } = devnet.anvil;
  [penalty, stakeAmount, kickoutThreshold] = await Promise.all([
    publicClient.readContract({
      address: devnet.contracts.node,
      abi: nodeAbi,
      functionName: "absencePenalty",
    }),
    publicClient.readContract({ address: devnet.contracts.node, abi: nodeAbi, functionName: "stakeAmount" }),
    publicClient.readContract({
      address: devnet.contracts.qos,
      abi: qosAbi,
      functionName: "kickoutThreshold",
    }),
  ]);
}, 240_000);

afterAll(async () => {
  await devnet?.stop();
}, 60_000);

const same = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

/** Creates a GPT task from the devnet's app with the fixed fee and uploads its arguments. */
async function createTask(content: string) {
  const args = devnetGptArgs(devnet, content, 8);
  const created = await devnet.app.createTask({ taskType: TaskType.GPT, args, fee: FEE });
  expect(created.queued).toBe(false);
  await devnet.app.uploadTaskArgs({ taskId: created.taskId, args });
  return created;
}

function roundOf(nodes: readonly Address[] | undefined, node: Address): number {
  const round = (nodes ?? []).findIndex((n) => same(n, node));
  if (round < 0) throw new Error(`${node} was not selected (selected: ${nodes?.join(", ")}).`);
  return round;
}

async function nodeEvents(fromBlock: bigint, node: Address) {
  const { publicClient } = devnet.anvil;
  const query = { address: devnet.contracts.node, abi: nodeAbi, args: { node }, fromBlock } as const;
  const [penalized, kicked, quit] = await Promise.all([
    publicClient.getContractEvents({ ...query, eventName: "NodePenalized" }),
    publicClient.getContractEvents({ ...query, eventName: "NodeKickedOut" }),
    publicClient.getContractEvents({ ...query, eventName: "NodeQuit" }),
  ]);
  return { penalized, kicked, quit };
}

/**
 * One task where `silent` (already stopped) is selected with the two live nodes: waits for the two
 * commitments, passes the commit deadline, and waits until every round is released and the task is final.
 */
async function taskWithOneSilentNode(silent: Address, content: string) {
  const created = await createTask(content);
  const silentRound = roundOf(created.nodes, silent);
  await waitFor("the two live nodes' commitments", async () => {
    const rounds = await readRounds(devnet, created.taskId);
    return rounds.filter((r) => r.commitPlace > 0).length === 2;
  });
  expect((await readRounds(devnet, created.taskId))[silentRound]!.commitPlace).toBe(0);
  await passCommitDeadline(devnet, created.taskId);
  await waitFor("the task to settle 2-of-2 and the result to be reported uploaded", async () => {
    const [state, rounds] = await Promise.all([
      readTaskState(devnet, created.taskId),
      readRounds(devnet, created.taskId),
    ]);
    return state === TaskState.UPLOADED && rounds.every((r) => (r.flags & RoundFlag.RELEASED) !== 0);
  });
  const block = await devnet.anvil.publicClient.getBlockNumber();
  const ledger = await readLedger(devnet, created.blockNumber, block);
  return { created, silentRound, money: ledger.tasks.get(created.taskId)! };
}

describe("a node that goes silent", () => {
  test("(a) one of the three selected nodes is silent: the other two settle 2-of-2 after the commit deadline; the silent node is absent, penalized, paused, its QoS drops; the creator gets its reserved share back", async (context) => {
    const [first, second, silentNode] = [devnet.nodes[0]!, devnet.nodes[1]!, devnet.nodes[2]!];
    const silent = silentNode.address;
    const { publicClient } = devnet.anvil;
    await silentNode.stop();
    expect((await readNode(devnet, silent)).status).toBe(NodeStatus.AVAILABLE);
    const qosBefore = await readQos(devnet, silent);
    const treasuryBefore = await publicClient.getBalance({ address: devnet.contracts.treasury });
    expect(qosBefore.count).toBe(0n);
    expect(qosBefore.weight).toBe(20n);

    const { created, silentRound, money } = await taskWithOneSilentNode(silent, "Who is absent?");

    // The absent node: flagged, scored 0, penalized to the treasury, paused.
    const rounds = await readRounds(devnet, created.taskId);
    expect(rounds[silentRound]!.flags & RoundFlag.ABSENT).toBe(RoundFlag.ABSENT);
    expect(money.absent).toEqual([silent]);
    expect(money.slashed).toEqual([]);
    const { penalized, kicked } = await nodeEvents(created.blockNumber, silent);
    expect(penalized.map((e) => [e.args.amount, e.args.treasury?.toLowerCase()])).toEqual([
      [penalty, devnet.contracts.treasury.toLowerCase()],
    ]);
    expect(penalty).toBe(parseCnx("40"));
    expect(kicked).toEqual([]);
    expect(await publicClient.getBalance({ address: devnet.contracts.treasury })).toBe(
      treasuryBefore + penalty,
    );
    expect(await readNode(devnet, silent)).toEqual({
      status: NodeStatus.PAUSED,
      stake: stakeAmount - penalty,
    });

    // Its QoS: one task scored 0. The weight falls from a new node's 20 to the floor of 1; the kick-out sum is
    // 0 + 20 + 20 (two empty slots) = 40, above the threshold: not kicked out for one absence.
    const qos = await readQos(devnet, silent);
    expect(qos.count).toBe(1n);
    expect(qos.sum).toBe(0n);
    expect(qos.ring[0]).toBe(0n);
    expect(qos.averageScore).toBe(0n);
    expect(qos.weight).toBe(1n);
    expect(qos.recentScoreSum).toBe(40n);
    expect(qos.recentScoreSum).toBeGreaterThan(kickoutThreshold);

    // The money: the absent node's reserved share (a 3rd place in both rounds, 6 + 6 of 50) back to the
    // creator; the two live nodes share the rest and nothing is left in the task.
    expect(money.fee).toBe(FEE);
    expect(money.refunds).toBe((FEE * 12n) / 50n);
    expect(money.paidNodes).toBe(2);
    expect(money.payouts + money.refunds).toBe(FEE);
    const task = await publicClient.readContract({
      address: devnet.contracts.task,
      abi: taskAbi,
      functionName: "getTask",
      args: [created.taskId],
    });
    expect(task[7]).toBe(0n);
    const refunds = await publicClient.getContractEvents({
      address: devnet.contracts.task,
      abi: taskAbi,
      eventName: "TaskRefunded",
      args: { taskId: created.taskId },
      fromBlock: created.blockNumber,
    });
    expect(refunds.map((e) => e.args.creator)).toEqual([devnet.accounts.app.address]);

    // The live nodes got scores from their places; the creator gets the answer.
    for (const live of [first, second]) {
      const liveQos = await readQos(devnet, live.address);
      expect(liveQos.count).toBe(1n);
      // 2-of-2: 1st or 2nd place in both rounds, 9 or 10 points each.
      expect(liveQos.sum).toBeGreaterThanOrEqual(18n);
      expect((await readNode(devnet, live.address)).status).toBe(NodeStatus.AVAILABLE);
    }
    const result = await devnet.app.getTaskResult({ taskId: created.taskId });
    expect(result.taskType).toBe(1);
    if (result.taskType === 1) expect(result.response.choices[0]?.message.content).toBeTypeOf("string");

    recordTrial(context, {
      area: "Fault injection: nodes",
      fault:
        "1 of the 3 selected nodes silent (process stopped, still AVAILABLE on-chain) past the commit deadline",
      runs: 1,
      expected:
        "the 2 live nodes settle 2-of-2 and are paid; the silent node gets TaskNodeAbsent, a 40 CNX penalty to the treasury, PAUSED, QoS weight 20 → 1; its 12/50 share refunded to the creator",
    });
  }, 240_000);

  test("(c) a node that stays silent is kicked out at its second absence among its last 3 tasks (QoS: recent score sum ≤ 20); the stake left after the penalties goes back to it", async (context) => {
    // The rule (QOS.recordTask, Node.finishTask): after every recorded task a node is kicked out when the sum
    // of its last 3 scores, empty slots counting 20, is at most kickoutThreshold (20). An absence scores 0,
    // so a second absence among the last 3 tasks gives at most 0 + 0 + 20 = 20: out, whatever the third
    // score. The other way out, penalties using up the stake (400 CNX / 40 CNX = 10 absences), comes later.
    const silentNode = devnet.nodes[2]!;
    const silent = silentNode.address;
    const { publicClient } = devnet.anvil;
    expect(kickoutThreshold).toBe(20n);
    expect(stakeAmount / penalty).toBeGreaterThan(2n);
    const before = await readQos(devnet, silent);
    expect(before.recentScoreSum).toBe(40n); // one absence, from (a): still in
    // The operator brings the node back on-chain (resume, a transaction), but its process is still not running.
    expect(await silentNode.resume()).toBe("AVAILABLE");
    const stakeLeft = (await readNode(devnet, silent)).stake;
    expect(stakeLeft).toBe(stakeAmount - penalty);
    const walletBefore = await publicClient.getBalance({ address: silent });
    const treasuryBefore = await publicClient.getBalance({ address: devnet.contracts.treasury });

    const { created, money } = await taskWithOneSilentNode(silent, "Absent again?");

    expect(money.absent).toEqual([silent]);
    expect(money.refunds).toBe((FEE * 12n) / 50n);
    expect(money.payouts + money.refunds).toBe(FEE);
    const { penalized, kicked, quit } = await nodeEvents(created.blockNumber, silent);
    expect(penalized.map((e) => e.args.amount)).toEqual([penalty]);
    expect(kicked).toHaveLength(1);
    // Kicked out: removed (QUIT), and what is left of the stake after two penalties is returned.
    expect(quit.map((e) => e.args.stakeReturned)).toEqual([stakeAmount - 2n * penalty]);
    expect(await readNode(devnet, silent)).toEqual({ status: NodeStatus.QUIT, stake: 0n });
    expect(await publicClient.getBalance({ address: silent })).toBe(
      walletBefore + stakeAmount - 2n * penalty,
    );
    expect(await publicClient.getBalance({ address: devnet.contracts.treasury })).toBe(
      treasuryBefore + penalty,
    );
    const qos = await readQos(devnet, silent);
    expect(qos.count).toBe(2n);
    expect(qos.sum).toBe(0n);
    // The kick-out clears the recent scores (a node that joins again starts with a clean slate there).
    expect(qos.recentCount).toBe(0n);

    // The node's process starts again: it closes both tasks as "absent" in its own records, and joins anew.
    await silentNode.start();
    const records = await waitFor("the restarted node to close its two missed tasks", async () => {
      const all = (await silentNode.store?.listTasks()) ?? [];
      return all.length >= 2 && all.every((r) => r.step === "done") && all;
    });
    expect(records.map((r) => r.outcome)).toEqual(["absent", "absent"]);
    expect(await readNode(devnet, silent)).toEqual({ status: NodeStatus.AVAILABLE, stake: stakeAmount });

    recordTrial(context, {
      area: "Fault injection: nodes",
      fault: "a node silent for 2 tasks in a row (resumed on-chain in between, process still down)",
      runs: 2,
      expected:
        "1st absence: penalized and paused, QoS recent sum 40 > 20, kept; 2nd: recent sum ≤ 20 → NodeKickedOut, QUIT, 400 − 2 × 40 CNX stake returned",
    });
  }, 300_000);

  test("(b) all three selected nodes silent: nobody commits; after the commit deadline the app cancels at once and gets the whole fee back; nobody is penalized and no QoS changes", async (context) => {
    const { publicClient } = devnet.anvil;
    const app = devnet.accounts.app.address;
    await Promise.all(devnet.nodes.map((node) => node.stop()));
    const qosBefore = await Promise.all(devnet.nodes.map((node) => readQos(devnet, node.address)));
    const nodesBefore = await Promise.all(devnet.nodes.map((node) => readNode(devnet, node.address)));
    for (const node of nodesBefore) expect(node.status).toBe(NodeStatus.AVAILABLE);

    const balanceAtStart = await publicClient.getBalance({ address: app });
    const created = await createTask("Anyone there?");
    // Before the commit deadline a task that might still get its commitments cannot be cancelled.
    const early = await devnet.app.cancelTask({ taskId: created.taskId }).catch((error: unknown) => error);
    expect(early).toBeInstanceOf(TaskContractError);
    expect((early as TaskContractError).errorName).toBe("DeadlineNotReached");
    await passCommitDeadline(devnet, created.taskId);

    const balanceBefore = await publicClient.getBalance({ address: app });
    const cancelled = await devnet.app.cancelTask({ taskId: created.taskId });
    const cancelGas = await gasCost(devnet, cancelled.txHash);
    expect(cancelled.refunded).toBe(FEE);
    expect((await publicClient.getBalance({ address: app })) - balanceBefore).toBe(FEE - cancelGas);
    // Over the task's whole life the app paid gas only.
    expect(balanceAtStart - (await publicClient.getBalance({ address: app }))).toBe(
      (await gasCost(devnet, created.txHash)) + cancelGas,
    );

    const block = await publicClient.getBlockNumber();
    const money = (await readLedger(devnet, created.blockNumber, block)).tasks.get(created.taskId)!;
    expect(money.refunds).toBe(FEE);
    expect(money.payouts).toBe(0n);
    expect(money.aborted).toEqual(["cancelled"]);
    expect(money.absent).toEqual([]);
    expect(money.cancelled).toHaveLength(3);
    expect(await readTaskState(devnet, created.taskId)).toBe(TaskState.ABORTED);
    // Nobody committed, so nobody is blamed (a creator who never uploads the arguments could otherwise get
    // the nodes punished): no penalty, no score, the nodes are available again.
    for (const [i, node] of devnet.nodes.entries()) {
      expect(await readQos(devnet, node.address)).toEqual(qosBefore[i]);
      expect(await readNode(devnet, node.address)).toEqual(nodesBefore[i]);
      expect((await nodeEvents(created.blockNumber, node.address)).penalized).toEqual([]);
    }

    recordTrial(context, {
      area: "Fault injection: nodes",
      fault: "all 3 selected nodes silent; the app cancels (before and after the commit deadline)",
      runs: 1,
      expected:
        "refused (DeadlineNotReached) before; after: TaskAborted cancelled, TaskRefunded = fee, creator's balance + fee − gas; no penalty, QoS unchanged",
    });
  }, 240_000);

  test("(b) two of the three selected nodes silent: one commitment; after the commit deadline the app cancels and gets the whole fee back; the two silent ones are absent, penalized and paused", async (context) => {
    const { publicClient } = devnet.anvil;
    const app = devnet.accounts.app.address;
    const live = devnet.nodes[0]!;
    const silentNodes = devnet.nodes.slice(1);
    const silent = silentNodes.map((node) => node.address);
    const stakesBefore = await Promise.all(silent.map(async (node) => (await readNode(devnet, node)).stake));
    const qosBefore = await Promise.all(silent.map((node) => readQos(devnet, node)));
    const liveQosBefore = await readQos(devnet, live.address);
    await live.start();

    const created = await createTask("Only one of us?");
    const liveRound = roundOf(created.nodes, live.address);
    await waitFor("the live node's commitment", async () => {
      const rounds = await readRounds(devnet, created.taskId);
      return rounds[liveRound]!.commitPlace > 0;
    });
    // A running node cancels such a task itself once the commit deadline passed; stopping it after its
    // commitment leaves the cancellation to the app, which is what this test follows.
    await live.stop();
    await passCommitDeadline(devnet, created.taskId);

    const balanceBefore = await publicClient.getBalance({ address: app });
    const cancelled = await devnet.app.cancelTask({ taskId: created.taskId });
    const cancelGas = await gasCost(devnet, cancelled.txHash);
    expect(cancelled.refunded).toBe(FEE);
    expect((await publicClient.getBalance({ address: app })) - balanceBefore).toBe(FEE - cancelGas);

    const block = await publicClient.getBlockNumber();
    const money = (await readLedger(devnet, created.blockNumber, block)).tasks.get(created.taskId)!;
    expect(money.refunds).toBe(FEE);
    expect(money.payouts).toBe(0n);
    expect(money.aborted).toEqual(["cancelled"]);
    expect(new Set(money.absent)).toEqual(new Set(silent));
    expect(money.cancelled).toEqual([live.address]);
    for (const [i, node] of silent.entries()) {
      const { penalized } = await nodeEvents(created.blockNumber, node);
      expect(penalized.map((e) => e.args.amount)).toEqual([penalty]);
      expect(await readNode(devnet, node)).toEqual({
        status: NodeStatus.PAUSED,
        stake: stakesBefore[i]! - penalty,
      });
      const qos = await readQos(devnet, node);
      expect(qos.count).toBe(qosBefore[i]!.count + 1n);
      expect(qos.sum).toBe(qosBefore[i]!.sum);
    }
    // The committed node keeps what its place earned (a 1st commitment: 10) and is free again.
    const liveQos = await readQos(devnet, live.address);
    expect(liveQos.count).toBe(liveQosBefore.count + 1n);
    expect(liveQos.sum).toBe(liveQosBefore.sum + 10n);
    expect((await readNode(devnet, live.address)).status).toBe(NodeStatus.AVAILABLE);

    // The network comes back: the paused nodes resume, every process runs again.
    for (const node of silentNodes) expect(await node.resume()).toBe("AVAILABLE");
    await Promise.all(devnet.nodes.map((node) => node.start()));

    recordTrial(context, {
      area: "Fault injection: nodes",
      fault: "2 of the 3 selected nodes silent; the app cancels after the commit deadline",
      runs: 1,
      expected:
        "TaskRefunded = fee (creator's balance + fee − gas); the 2 silent nodes TaskNodeAbsent, 40 CNX penalty each, PAUSED, score 0; the committed node released with score 10",
    });
  }, 240_000);
});
