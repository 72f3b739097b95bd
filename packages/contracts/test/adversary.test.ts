import { type Address, type Hex, keccak256, toHex } from "viem";
import { describe, expect, test } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { taskCommitment } from "../src/deploy.js";
import {
  Actor,
  type Call,
  type ContractName,
  checkInvariants,
  contractAbis,
  expectRejected,
  joinArgs,
  send,
  wealth,
} from "./helpers/adversary.js";
import { CNX, Crynux, GPT, STAKE, Status, TaskState, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux();
const R: Hex = keccak256(toHex("the result"));
const OTHER: Hex = keccak256(toHex("another result"));
const CREATOR = 20;
const OTHER_CREATOR = 21;
const OUTSIDER = 9;
const OWNER = 0;
const AREA = "Contracts";

/** Nodes 1-3 joined (one group), a GPT task of CREATOR running on them. */
async function runningTask(c: Crynux, fee = 50n * CNX) {
  for (const i of [1, 2, 3]) await c.join(i);
  const { taskId, nodes } = await c.createTask(CREATOR, { taskType: GPT, fee });
  expect(nodes).toHaveLength(3);
  const parties = [...nodes, c.account(CREATOR), c.account(OUTSIDER)];
  return { taskId, nodes, parties, round: (r: number) => c.indexOf(nodes[r]!) };
}

async function commitAll(c: Crynux, taskId: bigint, nodes: Address[], result: Hex = R) {
  for (let r = 0; r < 3; r++) await c.commit(taskId, r, nodes[r]!, result);
}

async function passCommitDeadline(c: Crynux) {
  await c.anvil.testClient.increaseTime({ seconds: 10 * 60 + 1 });
  await c.anvil.testClient.mine({ blocks: 1 });
}

async function passDeadline(c: Crynux) {
  await c.anvil.testClient.increaseTime({ seconds: 15 * 60 + 1 });
  await c.anvil.testClient.mine({ blocks: 1 });
}

const commitment = (result: Hex, round: number, taskId: bigint) =>
  taskCommitment(result, Crynux.nonce(round, taskId));

describe("commit and disclose attacks", () => {
  test("committing for another node's round, twice, or after the commit deadline", async (context) => {
    const c = crynux();
    const { taskId, nodes, parties, round } = await runningTask(c);
    let runs = 0;
    const commitAs = (from: number, r: number): Call => ({
      from,
      contract: "task",
      functionName: "submitCommitment",
      args: [taskId, BigInt(r), commitment(R, r, taskId)],
    });
    // a selected node on its partner's round, an outsider, the creator
    for (const [from, r] of [
      [round(1), 0],
      [round(0), 2],
      [OUTSIDER, 1],
      [CREATOR, 0],
    ] as const) {
      await expectRejected(c, commitAs(from, r), "NotSelectedNode", parties);
      runs++;
    }
    await expectRejected(c, { ...commitAs(round(0), 3) }, "InvalidRound", parties);
    await expectRejected(
      c,
      { ...commitAs(round(0), 0), args: [taskId, 0n, `0x${"00".repeat(32)}`] },
      "InvalidCommitment",
      parties,
    );
    await expectRejected(
      c,
      { ...commitAs(round(0), 0), args: [taskId + 7n, 0n, R] },
      "TaskNotFound",
      parties,
    );
    runs += 3;

    await c.commit(taskId, 0, nodes[0]!, R);
    await expectRejected(c, commitAs(round(0), 0), "AlreadyCommitted", parties);
    // the same round again with a different commitment
    await expectRejected(
      c,
      { ...commitAs(round(0), 0), args: [taskId, 0n, commitment(OTHER, 0, taskId)] },
      "AlreadyCommitted",
      parties,
    );
    runs += 2;

    await passCommitDeadline(c);
    await expectRejected(c, commitAs(round(1), 1), "CommitDeadlinePassed", parties);
    runs++;
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault: "commitment for another node's round, twice, after the commit deadline, zero, bad round or task",
      runs,
      expected: "reverts (NotSelectedNode, AlreadyCommitted, CommitDeadlinePassed, …); nothing changes",
    });
  });

  test("disclosing without a commitment, with a wrong nonce or with another node's pair", async (context) => {
    const c = crynux();
    const { taskId, nodes, parties, round } = await runningTask(c);
    let runs = 0;
    const discloseAs = (from: number, r: number, result: Hex, nonce: Hex): Call => ({
      from,
      contract: "task",
      functionName: "disclose",
      args: [taskId, BigInt(r), result, nonce],
    });
    const own = (r: number) => Crynux.nonce(r, taskId);

    // nobody has committed: nothing can be disclosed
    await expectRejected(c, discloseAs(round(0), 0, R, own(0)), "CommitmentsNotReady", parties);
    await c.commit(taskId, 0, nodes[0]!, R);
    await c.commit(taskId, 1, nodes[1]!, R);
    // 2 of 3 before the commit deadline: still not ready
    await expectRejected(c, discloseAs(round(0), 0, R, own(0)), "CommitmentsNotReady", parties);
    runs += 2;
    // past the commit deadline round 2 is absent; its node has no commitment to open
    await passCommitDeadline(c);
    for (const nonce of [own(2), own(0), `0x${"00".repeat(32)}` as Hex]) {
      await expectRejected(c, discloseAs(round(2), 2, R, nonce), "CommitmentMismatch", parties);
      runs++;
    }
    await expectRejected(
      c,
      { from: round(2), contract: "task", functionName: "reportTaskError", args: [taskId, 2n, own(2)] },
      "CommitmentMismatch",
      parties,
    );
    // wrong nonce, wrong result, another round
    await expectRejected(c, discloseAs(round(0), 0, R, own(1)), "CommitmentMismatch", parties);
    await expectRejected(c, discloseAs(round(0), 0, OTHER, own(0)), "CommitmentMismatch", parties);
    await expectRejected(c, discloseAs(round(0), 1, R, own(1)), "NotSelectedNode", parties);
    await expectRejected(c, discloseAs(OUTSIDER, 0, R, own(0)), "NotSelectedNode", parties);
    runs += 5;
    // round 0 opens its commitment: round 1 cannot open it as its own
    await c.disclose(taskId, 0, nodes[0]!, R);
    await expectRejected(c, discloseAs(round(1), 1, R, own(0)), "CommitmentMismatch", parties);
    await expectRejected(c, discloseAs(round(0), 0, R, own(0)), "AlreadyDisclosed", parties);
    runs += 2;
    await c.disclose(taskId, 1, nodes[1]!, R);
    expect((await c.getTask(taskId)).state).toBe(TaskState.SUCCESS);
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault: "disclosure without a commitment, with a wrong nonce or result, of another node's pair",
      runs,
      expected:
        "reverts (CommitmentsNotReady, CommitmentMismatch, NotSelectedNode, AlreadyDisclosed); nothing changes",
    });
  });

  test("a node that copies a partner's commitment cannot disclose the partner's pair", async (context) => {
    const c = crynux();
    const fee = 50n * CNX;
    const { taskId, nodes, parties, round } = await runningTask(c, fee);
    // round 0 computes R and commits; round 1 copies the commitment word from the chain without working
    await c.commit(taskId, 0, nodes[0]!, R);
    const [, , , , word] = await c.read<[Address, number, number, number, Hex]>("task", "getRound", [
      taskId,
      0n,
    ]);
    await send(c, {
      from: round(1),
      contract: "task",
      functionName: "submitCommitment",
      args: [taskId, 1n, word],
    });
    await c.commit(taskId, 2, nodes[2]!, R);
    // round 0 opens (R, nonce): from now on the copier knows the preimage of its commitment
    await c.disclose(taskId, 0, nodes[0]!, R);
    await expectRejected(
      c,
      {
        from: round(1),
        contract: "task",
        functionName: "disclose",
        args: [taskId, 1n, R, Crynux.nonce(0, taskId)],
      },
      "CommitmentReused",
      parties,
    );
    // the honest third node settles the task; the copier is never paid
    const settled = await c.disclose(taskId, 2, nodes[2]!, R);
    expect(c.events(settled, "TaskSuccess")).toHaveLength(1);
    const paid = c.events(settled, "TaskNodeSuccess").map((e) => e.args.node);
    expect(paid).toEqual([nodes[2]]);
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault: "lazy node copies a partner's commitment and discloses the partner's (result, nonce)",
      runs: 1,
      expected: "disclosure reverts CommitmentReused; the copier is not paid, the honest pair settles",
    });
  });

  test("replaying a (result, nonce) pair disclosed in another task", async (context) => {
    const c = crynux();
    const { taskId, nodes, parties } = await runningTask(c);
    await commitAll(c, taskId, nodes);
    for (let r = 0; r < 3; r++) await c.disclose(taskId, r, nodes[r]!, R);
    await c.uploaded(taskId, 0, nodes[0]!);
    // the same task again: every node could replay a pair everybody has seen instead of executing
    const second = await c.createTask(CREATOR, { taskType: GPT });
    expect(second.queued).toBe(false);
    let runs = 0;
    for (let r = 0; r < 3; r++) {
      for (let seen = 0; seen < 3; seen++) {
        await expectRejected(
          c,
          {
            from: c.indexOf(second.nodes[r]!),
            contract: "task",
            functionName: "submitCommitment",
            args: [second.taskId, BigInt(r), commitment(R, seen, taskId)],
          },
          "CommitmentReused",
          parties,
        );
        runs++;
      }
    }
    // a fresh nonce is accepted
    await c.commit(second.taskId, 0, second.nodes[0]!, R);
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault: "commitment of a (result, nonce) pair already disclosed in another task",
      runs,
      expected: "reverts CommitmentReused; nothing changes",
    });
  });
});

describe("access control", () => {
  test("cancelling another creator's task, uploading for the result node", async (context) => {
    const c = crynux();
    let runs = 0;
    const queued = await c.createTask(CREATOR, { taskType: GPT });
    expect(queued.queued).toBe(true);
    const parties = [c.account(CREATOR), c.account(OTHER_CREATOR), c.account(OUTSIDER)];
    const cancel = (from: number, id: bigint): Call => ({
      from,
      contract: "task",
      functionName: "cancelTask",
      args: [id],
    });
    for (const from of [OTHER_CREATOR, OUTSIDER, OWNER]) {
      await expectRejected(c, cancel(from, queued.taskId), "Unauthorized", parties);
      runs++;
    }
    await expectRejected(c, cancel(OTHER_CREATOR, 99n), "TaskNotFound", parties);
    runs++;
    // the queued task starts once 3 nodes join
    for (const i of [1, 2, 3]) await c.join(i);
    const t = await c.getTask(queued.taskId);
    expect(t.state).toBe(TaskState.RUNNING);
    parties.push(...t.nodes);
    // running: neither another creator nor a selected node may cancel before the deadline
    await expectRejected(c, cancel(c.indexOf(t.nodes[0]!), queued.taskId), "DeadlineNotReached", parties);
    await expectRejected(c, cancel(CREATOR, queued.taskId), "DeadlineNotReached", parties);
    await passDeadline(c);
    await expectRejected(c, cancel(OTHER_CREATOR, queued.taskId), "Unauthorized", parties);
    await expectRejected(c, cancel(OUTSIDER, queued.taskId), "Unauthorized", parties);
    runs += 4;
    await checkInvariants(c, parties);

    // reportResultsUploaded: only the result node, for its round
    const { taskId, nodes } = await c.createTask(OTHER_CREATOR, { taskType: GPT });
    expect(nodes).toHaveLength(0); // nodes 1-3 are still bound to the first task
    await send(c, cancel(CREATOR, queued.taskId));
    const second = await c.getTask(taskId);
    expect(second.state).toBe(TaskState.RUNNING);
    await commitAll(c, taskId, second.nodes);
    for (let r = 0; r < 3; r++) await c.disclose(taskId, r, second.nodes[r]!, R);
    const resultRound = (await c.getTask(taskId)).resultRound;
    const upload = (from: number, r: number): Call => ({
      from,
      contract: "task",
      functionName: "reportResultsUploaded",
      args: [taskId, BigInt(r)],
    });
    for (let r = 0; r < 3; r++) {
      const node = c.indexOf(second.nodes[r]!);
      if (r !== resultRound) {
        await expectRejected(c, upload(node, r), "NotResultNode", parties);
        await expectRejected(c, upload(node, resultRound), "NotSelectedNode", parties);
        runs += 2;
      }
    }
    await expectRejected(c, upload(OTHER_CREATOR, resultRound), "NotSelectedNode", parties);
    await expectRejected(c, upload(OUTSIDER, resultRound), "NotSelectedNode", parties);
    runs += 2;
    await send(c, upload(c.indexOf(second.nodes[resultRound]!), resultRound));
    await expectRejected(
      c,
      upload(c.indexOf(second.nodes[resultRound]!), resultRound),
      "IllegalTaskState",
      parties,
    );
    runs++;
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault:
        "cancel another creator's task (queued, running, after the deadline); upload report by a non-result node",
      runs,
      expected: "reverts (Unauthorized, DeadlineNotReached, NotResultNode, NotSelectedNode); nothing changes",
    });
  });

  test("internal callbacks called directly from an account", async (context) => {
    const c = crynux();
    const { taskId, nodes, parties } = await runningTask(c);
    const node = nodes[0]!;
    const calls: [ContractName, string, unknown[]][] = [
      ["node", "selectNodes", [99n, GPT, 0n, 1n, "0x0000000000000000000000000000000000000000"]],
      ["node", "finishTask", [node, 20n, true, false]],
      ["node", "finishTask", [node, 0n, false, true]],
      ["node", "slash", [node]],
      ["task", "onNodeAvailable", [node, 24n, 3n, 3]],
      ["taskQueue", "push", [99n, GPT, 0n, 10n ** 30n]],
      ["taskQueue", "remove", [taskId]],
      ["qos", "recordTask", [node, 0n]],
      ["qos", "resetRecent", [node]],
      ["networkStats", "updateNodes", [-1n, -1n, 0n]],
      ["networkStats", "updateTasks", [1n, 1n, 1n]],
    ];
    let runs = 0;
    // a stranger, a selected node, the creator and the owner of the contracts: none is the calling contract
    for (const from of [OUTSIDER, c.indexOf(node), CREATOR, OWNER]) {
      for (const [contract, functionName, args] of calls) {
        await expectRejected(c, { from, contract, functionName, args }, "Unauthorized", parties);
        runs++;
      }
    }
    await expectRejected(
      c,
      { from: c.indexOf(node), contract: "treasury", functionName: "withdraw", args: [node, 1n] },
      "NotOwner",
      parties,
    );
    runs++;
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault:
        "internal callbacks called from an account (Node.selectNodes/finishTask/slash, Task.onNodeAvailable, TaskQueue.push/remove, QOS.recordTask/resetRecent, NetworkStats.update*, Treasury.withdraw)",
      runs,
      expected: "reverts Unauthorized (NotOwner for the treasury); nothing changes",
    });
  });

  test("owner-only setters from other accounts; wiring twice", async (context) => {
    const c = crynux();
    const parties = [c.account(OUTSIDER), c.account(1)];
    let runs = 0;
    const argFor = (type: string): unknown =>
      type === "address" ? c.account(OUTSIDER) : type === "bool" ? true : type.startsWith("uint") ? 1n : "0x";
    for (const [contract, abi] of Object.entries(contractAbis) as [
      ContractName,
      (typeof contractAbis)["node"],
    ][]) {
      for (const item of abi) {
        if (item.type !== "function" || item.stateMutability === "view" || item.stateMutability === "pure")
          continue;
        if (!item.name.startsWith("set") && item.name !== "transferOwnership" && !(contract === "treasury"))
          continue;
        const args = item.inputs.map((input) => argFor(input.type));
        for (const from of [OUTSIDER, 1]) {
          await expectRejected(c, { from, contract, functionName: item.name, args }, "NotOwner", parties);
          runs++;
        }
      }
    }
    expect(runs).toBeGreaterThanOrEqual(2 * 16);
    // the owner cannot rewire a deployed system
    const a = c.addr;
    for (const [contract, functionName, args] of [
      ["node", "setContracts", [a.task, a.qos, a.networkStats]],
      ["task", "setContracts", [a.node, a.taskQueue, a.networkStats]],
      ["taskQueue", "setContracts", [a.task, a.node]],
      ["qos", "setNodeContract", [a.node]],
      ["networkStats", "setContracts", [a.node, a.task]],
    ] as [ContractName, string, unknown[]][]) {
      await expectRejected(c, { from: OWNER, contract, functionName, args }, "AlreadySet", parties);
      runs++;
    }
    recordTrial(context, {
      area: AREA,
      fault:
        "every owner-only setter (and Treasury.withdraw, transferOwnership) from non-owners; wiring again",
      runs,
      expected: "reverts NotOwner / AlreadySet; nothing changes",
    });
  });

  test("joining with a wrong stake, twice, or with an invalid card", async (context) => {
    const c = crynux();
    const parties = [c.account(1), c.account(2)];
    let runs = 0;
    const join = (value: bigint, args = joinArgs()): Call => ({
      from: 1,
      contract: "node",
      functionName: "join",
      args,
      value,
    });
    for (const value of [0n, STAKE - 1n, STAKE + 1n, STAKE / 2n, 2n * STAKE]) {
      await expectRejected(c, join(value), "WrongStakeAmount", parties);
      runs++;
    }
    for (const args of [
      joinArgs("", 24n),
      joinArgs("A", 0n),
      joinArgs("A", 24n, ""),
      joinArgs("A", 2n ** 64n),
    ]) {
      await expectRejected(c, join(STAKE, args), "InvalidGpu", parties);
      runs++;
    }
    for (const taskTypes of [0, 4, 255]) {
      await expectRejected(
        c,
        join(STAKE, [...joinArgs().slice(0, 3), taskTypes]),
        "InvalidTaskTypes",
        parties,
      );
      runs++;
    }
    await send(c, join(STAKE));
    await expectRejected(c, join(STAKE), "NodeAlreadyJoined", parties);
    await expectRejected(
      c,
      { from: 2, contract: "node", functionName: "resume" },
      "IllegalNodeStatus",
      parties,
    );
    await expectRejected(
      c,
      { from: 2, contract: "node", functionName: "quit" },
      "IllegalNodeStatus",
      parties,
    );
    await expectRejected(c, { from: 2, contract: "node", functionName: "withdraw" }, "NothingOwed", parties);
    await expectRejected(c, { from: 2, contract: "task", functionName: "withdraw" }, "NothingOwed", parties);
    runs += 5;
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault:
        "join with a wrong stake (0, ±1 wei, half, double), invalid card or task types, twice; status changes from outside",
      runs,
      expected:
        "reverts (WrongStakeAmount, InvalidGpu, InvalidTaskTypes, NodeAlreadyJoined, IllegalNodeStatus, NothingOwed)",
    });
  });
});

const OPERATOR = 10;

/** The re-entrant calls a contract can try while it is being paid. */
function reentryTargets(taskId: bigint, round: number, resultRound: number) {
  const taskHash = keccak256(toHex(`re-entrant task ${taskId}`));
  return [
    {
      contract: "task",
      functionName: "disclose",
      args: [taskId, BigInt(round), R, Crynux.nonce(round, taskId)],
    },
    { contract: "task", functionName: "cancelTask", args: [taskId] },
    {
      contract: "task",
      functionName: "createTask",
      args: [GPT, taskHash, `0x${"00".repeat(32)}`, 0n, 1n],
      value: CNX,
    },
    { contract: "task", functionName: "withdraw", args: [] },
    { contract: "task", functionName: "reportResultsUploaded", args: [taskId, BigInt(resultRound)] },
    { contract: "node", functionName: "quit", args: [] },
    { contract: "node", functionName: "pause", args: [] },
    { contract: "node", functionName: "withdraw", args: [] },
    { contract: "node", functionName: "join", args: joinArgs(), value: STAKE },
  ] as { contract: ContractName; functionName: string; args: unknown[]; value?: bigint }[];
}

/** A contract node (the actor) and nodes 1-2 in one group; a GPT task of CREATOR runs on the three. */
async function actorNodeTask(c: Crynux, fee: bigint) {
  // it owns a stake's worth, so that a re-entrant join is refused by the contract, not by its balance
  const actor = await Actor.deploy(c, OPERATOR, STAKE);
  await send(c, { from: actor, contract: "node", functionName: "join", args: joinArgs(), value: STAKE });
  for (const i of [1, 2]) await c.join(i);
  const { taskId, nodes } = await c.createTask(CREATOR, { taskType: GPT, fee });
  const actorRound = nodes.findIndex((n) => n.toLowerCase() === actor.address.toLowerCase());
  expect(actorRound).toBeGreaterThanOrEqual(0);
  const commitAs = (r: number) =>
    r === actorRound
      ? send(c, {
          from: actor,
          contract: "task",
          functionName: "submitCommitment",
          args: [taskId, BigInt(r), commitment(R, r, taskId)],
        })
      : c.commit(taskId, r, nodes[r]!, R);
  const discloseAs = (r: number) =>
    r === actorRound
      ? send(c, {
          from: actor,
          contract: "task",
          functionName: "disclose",
          args: [taskId, BigInt(r), R, Crynux.nonce(r, taskId)],
        })
      : c.disclose(taskId, r, nodes[r]!, R);
  const parties = [actor.address, ...nodes, c.account(CREATOR), c.account(OPERATOR)];
  /** Names the nodes by their round relative to the actor's (the selection order differs between runs). */
  const label = (line: string) =>
    [0, 1, 2].reduce(
      (l, k) => l.replace(nodes[(actorRound + k) % 3]!, k === 0 ? "actor" : `actor+${k}`),
      line,
    );
  return { actor, taskId, nodes, actorRound, commitAs, discloseAs, parties, label };
}

/** Every node payment (TaskNodeSuccess) and refund (TaskRefunded) in the receipts, as "to amount" lines. */
function payouts(c: Crynux, receipts: { logs: unknown[] }[]): string[] {
  return receipts.flatMap((receipt) =>
    c
      .events(receipt as never)
      .filter((e) => e.eventName === "TaskNodeSuccess" || e.eventName === "TaskRefunded")
      .map(
        (e) =>
          `${e.eventName} ${String(e.args.node ?? e.args.creator)} ${String(e.args.fee ?? e.args.amount)}`,
      ),
  );
}

describe("re-entrancy through payments", () => {
  test("a contract node re-enters Task and Node when its share is pushed to it", {
    timeout: 600_000,
  }, async (context) => {
    const c = crynux();
    const fee = 50n * CNX;
    let base = await c.anvil.testClient.snapshot();
    /** Runs a task in which the actor discloses 2nd (it is paid then) and returns what everyone got. */
    const run = async (
      arm: (actor: Actor, taskId: bigint, round: number, resultRound: number) => Promise<void>,
    ) => {
      await c.anvil.testClient.revert({ id: base });
      base = await c.anvil.testClient.snapshot();
      const { actor, taskId, actorRound, commitAs, discloseAs, parties, label } = await actorNodeTask(c, fee);
      for (const r of [actorRound, (actorRound + 1) % 3, (actorRound + 2) % 3]) await commitAs(r);
      const order = [(actorRound + 1) % 3, actorRound, (actorRound + 2) % 3];
      const resultRound = order[0]!;
      await arm(actor, taskId, actorRound, resultRound);
      const receipts = [];
      for (const r of order) receipts.push(await discloseAs(r));
      const t = await c.getTask(taskId);
      receipts.push(await c.uploaded(taskId, t.resultRound, t.nodes[t.resultRound]!));
      await checkInvariants(c, parties);
      return {
        reentries: actor.reentries(receipts[1]!),
        paid: payouts(c, receipts).map(label),
        wealth: await wealth(c, actor.address),
        state: (await c.getTask(taskId)).state,
      };
    };
    const honest = await run(async () => {});
    expect(honest.state).toBe(TaskState.UPLOADED);
    expect(honest.paid).toContain(`TaskNodeSuccess actor ${(fee * 19n) / 50n}`);
    let runs = 0;
    const outcomes: string[] = [];
    for (const [k, target] of reentryTargets(1n, 0, 0).entries()) {
      const attacked = await run(async (actor, taskId, round, resultRound) => {
        const t = reentryTargets(taskId, round, resultRound)[k]!;
        await actor.arm(Actor.REENTER_ALWAYS, t.contract, t.functionName, t.args, t.value ?? 0n);
      });
      runs++;
      // a re-entrant quit is paid its stake, which re-enters once more
      expect(attacked.reentries.length, `${target.functionName} was attempted`).toBeGreaterThanOrEqual(1);
      const [outcome] = attacked.reentries;
      outcomes.push(`${target.contract}.${target.functionName}: ${attacked.reentries.join(" then ")}`);
      if (target.contract === "task") expect(outcome, `Task.${target.functionName}`).toBe("Reentrancy");
      // whatever the re-entrant call did, the actor ends up with exactly what an honest node gets
      expect(attacked.wealth, `${target.functionName}: actor's balance + owed + stake`).toBe(honest.wealth);
      expect(attacked.paid, `${target.functionName}: payments`).toEqual(honest.paid);
      expect(attacked.state).toBe(TaskState.UPLOADED);
    }
    console.log(`re-entry while paid a settled share: ${outcomes.join("; ")}`);
    recordTrial(context, {
      area: AREA,
      fault:
        "contract node re-enters Task (disclose, cancel, createTask, withdraw, upload) and Node (quit, pause, withdraw, join) from receive() when its share is pushed",
      runs,
      expected: "Task re-entry reverts Reentrancy; every payment equals the honest run's; invariants hold",
    });
  });

  test("a contract result node re-enters when paid at upload", { timeout: 600_000 }, async (context) => {
    const c = crynux();
    const fee = 50n * CNX;
    let base = await c.anvil.testClient.snapshot();
    const run = async (armed?: number) => {
      await c.anvil.testClient.revert({ id: base });
      base = await c.anvil.testClient.snapshot();
      const { actor, taskId, actorRound, commitAs, discloseAs, parties, label } = await actorNodeTask(c, fee);
      for (const r of [actorRound, (actorRound + 1) % 3, (actorRound + 2) % 3]) await commitAs(r);
      const receipts = [];
      for (const r of [actorRound, (actorRound + 1) % 3, (actorRound + 2) % 3])
        receipts.push(await discloseAs(r));
      expect((await c.getTask(taskId)).resultRound).toBe(actorRound);
      if (armed !== undefined) {
        const t = reentryTargets(taskId, actorRound, actorRound)[armed]!;
        await actor.arm(Actor.REENTER_ALWAYS, t.contract, t.functionName, t.args, t.value ?? 0n);
      }
      const upload = await send(c, {
        from: actor,
        contract: "task",
        functionName: "reportResultsUploaded",
        args: [taskId, BigInt(actorRound)],
      });
      receipts.push(upload);
      await checkInvariants(c, parties);
      return {
        reentries: actor.reentries(upload),
        paid: payouts(c, receipts).map(label),
        wealth: await wealth(c, actor.address),
      };
    };
    const honest = await run();
    let runs = 0;
    const outcomes: string[] = [];
    for (const [k, target] of reentryTargets(1n, 0, 0).entries()) {
      const attacked = await run(k);
      runs++;
      expect(attacked.reentries.length).toBeGreaterThanOrEqual(1);
      if (target.contract === "task") expect(attacked.reentries[0], target.functionName).toBe("Reentrancy");
      outcomes.push(`${target.contract}.${target.functionName}: ${attacked.reentries.join(" then ")}`);
      expect(attacked.wealth, target.functionName).toBe(honest.wealth);
      expect(attacked.paid, target.functionName).toEqual(honest.paid);
    }
    console.log(`re-entry while paid as the result node: ${outcomes.join("; ")}`);
    recordTrial(context, {
      area: AREA,
      fault: "contract result node re-enters Task and Node from receive() when paid at reportResultsUploaded",
      runs,
      expected: "Task re-entry reverts Reentrancy; the result node is paid once, the fee split is unchanged",
    });
  });

  test("refused payments are owed; withdraw re-entered pays once", { timeout: 300_000 }, async (context) => {
    const c = crynux();
    const fee = 50n * CNX;
    const { actor, actorRound, commitAs, discloseAs, parties } = await actorNodeTask(c, fee);
    for (const r of [actorRound, (actorRound + 1) % 3, (actorRound + 2) % 3]) await commitAs(r);
    await actor.arm(Actor.REFUSE);
    const receipts = [];
    for (const r of [(actorRound + 1) % 3, actorRound, (actorRound + 2) % 3])
      receipts.push(await discloseAs(r));
    const share = (fee * 19n) / 50n; // committed 1st, disclosed 2nd
    expect(await c.read("task", "owed", [actor.address])).toBe(share);
    expect(await c.balance(actor.address)).toBe(STAKE);
    await checkInvariants(c, parties);
    let runs = 0;
    // Task.withdraw sends with all the gas left: the re-entrant withdraw reaches the guard
    await actor.arm(Actor.REENTER_ALWAYS, "task", "withdraw", []);
    const w1 = await send(c, { from: actor, contract: "task", functionName: "withdraw" });
    expect(actor.reentries(w1)).toEqual(["Reentrancy"]);
    expect(await c.balance(actor.address)).toBe(STAKE + share);
    expect(await c.read("task", "owed", [actor.address])).toBe(0n);
    runs++;
    // Node: the stake of a quitting contract node is owed when refused; withdraw re-enters withdraw
    await actor.arm(Actor.REFUSE);
    await send(c, { from: actor, contract: "node", functionName: "quit" });
    expect(await c.read("node", "owed", [actor.address])).toBe(STAKE);
    await checkInvariants(c, parties);
    await actor.arm(Actor.REENTER_ALWAYS, "node", "withdraw", []);
    const w2 = await send(c, { from: actor, contract: "node", functionName: "withdraw" });
    expect(actor.reentries(w2)).toEqual(["NothingOwed"]);
    expect(await c.balance(actor.address)).toBe(share + 2n * STAKE);
    runs++;
    // re-entering join with the withdrawn stake (all the gas of withdraw): it rejoins once, nothing is minted
    await actor.arm(Actor.REFUSE);
    await send(c, { from: actor, contract: "node", functionName: "join", args: joinArgs(), value: STAKE });
    await send(c, { from: actor, contract: "node", functionName: "quit" });
    await actor.arm(Actor.REENTER_ALWAYS, "node", "join", joinArgs(), STAKE);
    const w3 = await send(c, { from: actor, contract: "node", functionName: "withdraw" });
    expect(actor.reentries(w3)).toEqual(["ok"]);
    expect((await c.nodeInfo(actor.address)).status).toBe(Status.AVAILABLE);
    expect(await wealth(c, actor.address)).toBe(share + 3n * STAKE);
    expect(await c.read("node", "owed", [actor.address])).toBe(0n);
    runs++;
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault:
        "contract refuses pushed payments, then re-enters withdraw (Task, Node) and join from receive() while withdrawing",
      runs,
      expected:
        "payments deferred to owed; each withdraw pays once (Reentrancy / NothingOwed inside); books balance",
    });
  });

  test("a contract creator re-enters when refunded (cancel, eviction, timeout)", {
    timeout: 300_000,
  }, async (context) => {
    const c = crynux();
    const fee = 7n * CNX;
    const creator = await Actor.deploy(c, OPERATOR);
    const parties = [
      creator.address,
      c.account(CREATOR),
      c.account(OPERATOR),
      c.account(1),
      c.account(2),
      c.account(3),
    ];
    const create = async (value: bigint) => {
      const receipt = await send(c, {
        from: creator,
        contract: "task",
        functionName: "createTask",
        args: [
          GPT,
          keccak256(toHex(`creator contract ${value} ${Math.random()}`)),
          `0x${"00".repeat(32)}`,
          0n,
          1n,
        ],
        value,
      });
      return (c.events(receipt, "TaskQueued")[0] ?? c.events(receipt, "TaskStarted")[0]!).args
        .taskId as bigint;
    };
    let runs = 0;
    const armAll = async (taskId: bigint, functionName: "cancelTask" | "createTask" | "withdraw") => {
      const t = reentryTargets(taskId, 0, 0).find((x) => x.functionName === functionName)!;
      await creator.arm(Actor.REENTER_ALWAYS, t.contract, t.functionName, t.args, t.value ?? 0n);
    };
    // a queued task cancelled by its creator contract: the refund re-enters cancel / createTask
    for (const reenter of ["cancelTask", "createTask", "withdraw"] as const) {
      const id = await create(fee);
      expect((await c.getTask(id)).state).toBe(TaskState.QUEUED);
      await armAll(id, reenter);
      const before = await c.balance(creator.address);
      const receipt = await send(c, {
        from: creator,
        contract: "task",
        functionName: "cancelTask",
        args: [id],
      });
      expect(creator.reentries(receipt), reenter).toEqual(["Reentrancy"]);
      expect(await c.balance(creator.address), `refunded once (${reenter})`).toBe(before + fee);
      expect((await c.getTask(id)).state).toBe(TaskState.ABORTED);
      runs++;
      await checkInvariants(c, parties);
    }
    // evicted from a full queue by a better task of someone else
    await send(c, { from: OWNER, contract: "taskQueue", functionName: "setSizeLimit", args: [1n] });
    const evictedId = await create(fee);
    await armAll(evictedId, "createTask");
    const before = await c.balance(creator.address);
    const better = await c.createTask(CREATOR, { taskType: GPT, fee: 2n * fee });
    expect(c.events(better.receipt, "TaskAborted")[0]?.args.reason).toBe("evicted");
    expect(creator.reentries(better.receipt)).toEqual(["Reentrancy"]);
    expect(await c.balance(creator.address)).toBe(before + fee);
    runs++;
    await checkInvariants(c, parties);
    // a started task nobody worked on, cancelled after its deadline
    await send(c, { from: OWNER, contract: "taskQueue", functionName: "setSizeLimit", args: [50n] });
    await send(c, { from: CREATOR, contract: "task", functionName: "cancelTask", args: [better.taskId] });
    for (const i of [1, 2, 3]) await c.join(i);
    const runningId = await create(fee);
    expect((await c.getTask(runningId)).state).toBe(TaskState.RUNNING);
    await passDeadline(c);
    await armAll(runningId, "cancelTask");
    const before2 = await c.balance(creator.address);
    const cancelled = await send(c, {
      from: creator,
      contract: "task",
      functionName: "cancelTask",
      args: [runningId],
    });
    expect(creator.reentries(cancelled)).toEqual(["Reentrancy"]);
    expect(await c.balance(creator.address)).toBe(before2 + fee);
    for (const i of [1, 2, 3]) expect(await c.status(i)).toBe(Status.AVAILABLE);
    runs++;
    await checkInvariants(c, parties);
    recordTrial(context, {
      area: AREA,
      fault:
        "contract creator re-enters cancelTask / createTask / withdraw from receive() when refunded (cancel, eviction, deadline)",
      runs,
      expected: "re-entry reverts Reentrancy; refunded exactly the fee once; books balance",
    });
  });
});
