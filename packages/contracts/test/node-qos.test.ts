import { type Address, createWalletClient, type Hex, http, keccak256, parseEther, toHex } from "viem";
import { describe, expect, test } from "vitest";
import { CNX, type Crynux, GPT, PENALTY, SD, STAKE, Status, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux();
const R: Hex = keccak256(toHex("r"));
const CREATOR = 20;

async function expectStatus(c: Crynux, i: number, status: number) {
  expect(await c.status(i)).toBe(status);
}

/** Starts a task on nodes 1..3 (all of them) and returns it. */
async function busy(c: Crynux) {
  for (let i = 1; i <= 3; i++) if ((await c.status(i)) === Status.QUIT) await c.join(i);
  return c.createTask(CREATOR, { taskType: GPT });
}

/** Completes a task where everyone agrees. */
async function complete(c: Crynux, taskId: bigint, nodes: Address[]) {
  for (let r = 0; r < 3; r++) await c.commit(taskId, r, nodes[r]!, R);
  for (let r = 0; r < 3; r++) await c.disclose(taskId, r, nodes[r]!, R);
  await c.uploaded(taskId, 0, nodes[0]!);
}

async function timeoutCancel(c: Crynux, taskId: bigint) {
  await c.anvil.testClient.increaseTime({ seconds: 15 * 60 + 1 });
  await c.anvil.testClient.mine({ blocks: 1 });
  return c.tx(CREATOR, "task", "cancelTask", [taskId]);
}

async function asContract(c: Crynux, address: Address) {
  await c.anvil.testClient.impersonateAccount({ address });
  await c.anvil.testClient.setBalance({ address, value: parseEther("10") });
  return createWalletClient({ account: address, chain: c.anvil.chain, transport: http(c.anvil.rpcUrl) });
}

describe("join", () => {
  test("exact stake, valid card, once", async () => {
    const c = crynux();
    await expect(c.join(1, "A", 24n, "rt", STAKE - 1n)).rejects.toThrow(/WrongStakeAmount/);
    await expect(c.join(1, "A", 24n, "rt", STAKE + 1n)).rejects.toThrow(/WrongStakeAmount/);
    await expect(c.join(1, "", 24n, "rt")).rejects.toThrow(/InvalidGpu/);
    await expect(c.join(1, "A", 0n, "rt")).rejects.toThrow(/InvalidGpu/);
    await expect(c.join(1, "A", 24n, "")).rejects.toThrow(/InvalidGpu/);
    await c.join(1, "A", 24n, "rt");
    await expect(c.join(1, "A", 24n, "rt")).rejects.toThrow(/NodeAlreadyJoined/);
    expect(await c.stats()).toMatchObject({ totalNodes: 1, availableNodes: 1, busyNodes: 0 });
  });

  test("the stake is owner-settable and only affects later joins", async () => {
    const c = crynux();
    await c.join(1);
    await expect(c.tx(1, "node", "setStakeAmount", [500n * CNX])).rejects.toThrow(/NotOwner/);
    await c.tx(0, "node", "setStakeAmount", [500n * CNX]);
    await expect(c.join(2)).rejects.toThrow(/WrongStakeAmount/);
    await c.join(2, undefined, undefined, undefined, 500n * CNX);
    const q1 = await c.tx(1, "node", "quit", []);
    expect(c.events(q1, "NodeQuit")[0]!.args.stakeReturned).toBe(STAKE);
    const q2 = await c.tx(2, "node", "quit", []);
    expect(c.events(q2, "NodeQuit")[0]!.args.stakeReturned).toBe(500n * CNX);
    const s = await c.checkSolvency();
    expect(s.nodeOk && s.staked === 0n).toBe(true);
  });
});

describe("pause / resume / quit in every status", () => {
  test("QUIT", async () => {
    const c = crynux();
    for (const fn of ["pause", "resume", "quit"]) {
      await expect(c.tx(1, "node", fn, [])).rejects.toThrow(/IllegalNodeStatus/);
    }
  });

  test("AVAILABLE", async () => {
    const c = crynux();
    await c.join(1);
    await expect(c.tx(1, "node", "resume", [])).rejects.toThrow(/IllegalNodeStatus/);
    await c.tx(1, "node", "pause", []);
    await expectStatus(c, 1, Status.PAUSED);
    expect(await c.stats()).toMatchObject({ totalNodes: 1, availableNodes: 0 });
    await c.tx(1, "node", "resume", []);
    await expectStatus(c, 1, Status.AVAILABLE);
    const before = await c.balance(c.account(1));
    const receipt = await c.tx(1, "node", "quit", []);
    await expectStatus(c, 1, Status.QUIT);
    const gasCost = receipt.gasUsed * receipt.effectiveGasPrice;
    expect((await c.balance(c.account(1))) - before + gasCost).toBe(STAKE);
    expect(await c.stats()).toMatchObject({ totalNodes: 0, availableNodes: 0 });
  });

  test("PAUSED: quit returns the stake; a paused node is never selected", async () => {
    const c = crynux();
    for (let i = 1; i <= 3; i++) await c.join(i);
    await c.tx(2, "node", "pause", []);
    await expect(c.tx(2, "node", "pause", [])).rejects.toThrow(/IllegalNodeStatus/);
    const t = await c.createTask(CREATOR);
    expect(t.queued).toBe(true);
    await c.tx(2, "node", "quit", []);
    await expectStatus(c, 2, Status.QUIT);
    await c.join(4);
    const started = await c.getTask(t.taskId);
    expect(new Set(started.nodes)).toEqual(new Set([c.account(1), c.account(3), c.account(4)]));
  });

  test("BUSY -> PENDING_PAUSE -> PAUSED at task end", async () => {
    const c = crynux();
    const { taskId, nodes } = await busy(c);
    const i = c.indexOf(nodes[1]!);
    await expect(c.tx(i, "node", "resume", [])).rejects.toThrow(/IllegalNodeStatus/);
    await c.tx(i, "node", "pause", []);
    await expectStatus(c, i, Status.PENDING_PAUSE);
    for (const fn of ["pause", "resume", "quit"]) {
      await expect(c.tx(i, "node", fn, [])).rejects.toThrow(/IllegalNodeStatus/);
    }
    await complete(c, taskId, nodes);
    await expectStatus(c, i, Status.PAUSED);
    expect(await c.stats()).toMatchObject({ totalNodes: 3, availableNodes: 2, busyNodes: 0 });
  });

  test("BUSY -> PENDING_QUIT -> QUIT at task end, with stake and fee", async () => {
    const c = crynux();
    const { taskId, nodes } = await busy(c);
    const i = c.indexOf(nodes[2]!);
    await c.tx(i, "node", "quit", []);
    await expectStatus(c, i, Status.PENDING_QUIT);
    for (const fn of ["pause", "resume", "quit"]) {
      await expect(c.tx(i, "node", fn, [])).rejects.toThrow(/IllegalNodeStatus/);
    }
    for (let r = 0; r < 3; r++) await c.commit(taskId, r, nodes[r]!, R);
    await c.disclose(taskId, 0, nodes[0]!, R);
    await c.disclose(taskId, 1, nodes[1]!, R);
    const before = await c.balance(nodes[2]!);
    const receipt = await c.disclose(taskId, 2, nodes[2]!, R);
    const gasCost = receipt.gasUsed * receipt.effectiveGasPrice;
    expect((await c.balance(nodes[2]!)) - before + gasCost).toBe(STAKE + (50n * CNX * 12n) / 50n);
    await expectStatus(c, i, Status.QUIT);
    expect(await c.stats()).toMatchObject({ totalNodes: 2 });
  });
});

describe("access control", () => {
  test("callbacks between contracts", async () => {
    const c = crynux();
    await c.join(1);
    const a = c.account(1);
    await expect(c.tx(1, "node", "selectNodes", [1n, 1, 0n, 0n, a])).rejects.toThrow(/Unauthorized/);
    await expect(c.tx(1, "node", "finishTask", [a, 20n, true, false])).rejects.toThrow(/Unauthorized/);
    await expect(c.tx(1, "node", "slash", [a])).rejects.toThrow(/Unauthorized/);
    await expect(c.tx(1, "task", "onNodeAvailable", [a, 24n, 3n, 3])).rejects.toThrow(/Unauthorized/);
    await expect(c.tx(1, "taskQueue", "push", [1n, 1, 0n, 1n])).rejects.toThrow(/Unauthorized/);
    await expect(c.tx(1, "taskQueue", "remove", [1n])).rejects.toThrow(/Unauthorized/);
    await expect(c.tx(1, "qos", "recordTask", [a, 0n])).rejects.toThrow(/Unauthorized/);
    await expect(c.tx(1, "networkStats", "updateNodes", [1n, 1n, 1n])).rejects.toThrow(/Unauthorized/);
    await expect(c.tx(1, "networkStats", "updateTasks", [1n, 1n, 1n])).rejects.toThrow(/Unauthorized/);
  });

  test("wiring setters: owner only, once", async () => {
    const c = crynux();
    const { node, task, taskQueue, qos, networkStats } = c.addr;
    await expect(c.tx(0, "node", "setContracts", [task, qos, networkStats])).rejects.toThrow(/AlreadySet/);
    await expect(c.tx(0, "task", "setContracts", [node, taskQueue, networkStats])).rejects.toThrow(
      /AlreadySet/,
    );
    await expect(c.tx(0, "taskQueue", "setContracts", [task, node])).rejects.toThrow(/AlreadySet/);
    await expect(c.tx(0, "qos", "setNodeContract", [node])).rejects.toThrow(/AlreadySet/);
    await expect(c.tx(0, "networkStats", "setContracts", [node, task])).rejects.toThrow(/AlreadySet/);
    await expect(c.tx(1, "task", "setTimeouts", [30n, 60n])).rejects.toThrow(/NotOwner/);
    await expect(c.tx(1, "taskQueue", "setSizeLimit", [1n])).rejects.toThrow(/NotOwner/);
    await expect(c.tx(1, "node", "setTreasury", [c.account(1)])).rejects.toThrow(/NotOwner/);
  });
});

describe("QoS", () => {
  test("kick-out boundary: a recent sum <= 20 is kicked, 21 stays (missing slots count 20)", async () => {
    const c = crynux();
    const wallet = await asContract(c, c.addr.node);
    const record = async (node: Address, score: bigint) => {
      const { result } = await c.anvil.publicClient.simulateContract({
        address: c.addr.qos,
        abi: (await import("../src/generated/index.js")).qosAbi,
        functionName: "recordTask",
        args: [node, score],
        account: c.addr.node,
      });
      const hash = await wallet.writeContract({
        address: c.addr.qos,
        abi: (await import("../src/generated/index.js")).qosAbi,
        functionName: "recordTask",
        args: [node, score],
      });
      await c.anvil.publicClient.waitForTransactionReceipt({ hash });
      return result[0];
    };
    const n1 = c.account(10);
    expect(await record(n1, 0n)).toBe(false); // 0 + 20 + 20
    expect(await record(n1, 0n)).toBe(true); // 0 + 0 + 20 = 20
    const n2 = c.account(11);
    expect(await record(n2, 9n)).toBe(false);
    expect(await record(n2, 0n)).toBe(false); // 29
    expect(await record(n2, 12n)).toBe(false); // 21 stays
    expect(await record(n2, 0n)).toBe(true); // ring now 0, 0, 12 = 12
    const n3 = c.account(12);
    expect(await record(n3, 10n)).toBe(false);
    expect(await record(n3, 0n)).toBe(false); // 30
    expect(await record(n3, 10n)).toBe(true); // 20 exactly
  });

  test("ring and weights: the last 3 scores, lifetime average, minimum weight 1", async () => {
    const c = crynux();
    const wallet = await asContract(c, c.addr.node);
    const { qosAbi } = await import("../src/generated/index.js");
    const n = c.account(12);
    expect(await c.read("qos", "weightOf", [n])).toBe(20n);
    const record = async (node: Address, score: bigint) => {
      const hash = await wallet.writeContract({
        address: c.addr.qos,
        abi: qosAbi,
        functionName: "recordTask",
        args: [node, score],
      });
      await c.anvil.publicClient.waitForTransactionReceipt({ hash });
    };
    for (const s of [20n, 0n, 19n, 16n]) await record(n, s);
    expect(await c.read("qos", "recentScoreSum", [n])).toBe(35n);
    expect(await c.read("qos", "weightOf", [n])).toBe(13n); // 55 / 4
    const m = c.account(13);
    await record(m, 0n);
    expect(await c.read("qos", "weightOf", [m])).toBe(1n);
  });

  test("a new node is kicked out after two zero-score tasks; its stake less the penalties is returned", async () => {
    const c = crynux();
    for (let i = 1; i <= 3; i++) await c.join(i);
    const victim = c.account(3);
    for (let k = 0; k < 2; k++) {
      const { taskId, nodes } = await c.createTask(CREATOR);
      for (let r = 0; r < 3; r++) if (nodes[r] !== victim) await c.commit(taskId, r, nodes[r]!, R);
      const receipt = await timeoutCancel(c, taskId);
      const kicked = c.events(receipt, "NodeKickedOut");
      expect(c.events(receipt, "NodePenalized").map((e) => [e.args.node, e.args.amount])).toEqual([
        [victim, PENALTY],
      ]);
      if (k === 0) {
        expect(kicked).toHaveLength(0);
        // absent: paused until it resumes
        expect(await c.status(victim)).toBe(Status.PAUSED);
        await c.tx(victim, "node", "resume", []);
      } else {
        expect(kicked.map((e) => e.args.node)).toEqual([victim]);
        expect(c.events(receipt, "NodeQuit").find((e) => e.args.node === victim)?.args.stakeReturned).toBe(
          STAKE - 2n * PENALTY,
        );
      }
    }
    expect(await c.status(victim)).toBe(Status.QUIT);
    expect(await c.status(1)).toBe(Status.AVAILABLE);
    // it may join again and is not kicked at once (its recent scores were reset)
    await c.join(3);
    const { taskId, nodes } = await c.createTask(CREATOR);
    await complete(c, taskId, nodes);
    expect(await c.status(victim)).toBe(Status.AVAILABLE);
    const s = await c.checkSolvency();
    expect(s.nodeOk && s.taskOk).toBe(true);
  });
});

describe("group cap", () => {
  test("a join that would open a group beyond maxGroups is refused; a group that empties frees its place", async () => {
    const c = crynux();
    await c.tx(0, "node", "setMaxGroups", [2n]);
    await c.join(1, "A", 24n, "rt");
    await c.join(2, "B", 24n, "rt");
    await expect(c.join(3, "C", 24n, "rt")).rejects.toThrow(/TooManyGroups/);
    await c.join(3, "A", 24n, "rt"); // an existing group is always open
    expect(await c.read("node", "groupCount")).toBe(2n);
    await c.tx(2, "node", "pause", []);
    // a paused node still holds its group's place
    await expect(c.join(4, "C", 24n, "rt")).rejects.toThrow(/TooManyGroups/);
    await c.tx(2, "node", "quit", []);
    expect(await c.read("node", "groupCount")).toBe(1n);
    await c.join(4, "C", 24n, "rt");
    expect(await c.read("node", "groupCount")).toBe(2n);
    await expect(c.tx(1, "node", "setMaxGroups", [5n])).rejects.toThrow(/NotOwner/);
  });
});

describe("deployCrynux options and deferred payments", () => {
  test("options are applied; the treasury may be any address", async () => {
    const c0 = crynux();
    const { Crynux } = await import("./helpers/crynux.js");
    const treasury = c0.account(29);
    const c = await Crynux.deploy(c0.anvil, {
      stake: 7n * CNX,
      timeoutSeconds: 60,
      queueSizeLimit: 9,
      distanceThreshold: 3,
      absencePenalty: 2n * CNX,
      treasury,
    });
    expect(await c.read("node", "absencePenalty")).toBe(2n * CNX);
    expect(c.addr.treasury).toBe(treasury);
    expect(await c.read("node", "stakeAmount")).toBe(7n * CNX);
    expect(await c.read("node", "treasury")).toBe(treasury);
    expect(await c.read("taskQueue", "sizeLimit")).toBe(9n);
    const [timeout, commitTimeout, threshold] = await c.read<readonly bigint[]>("task", "getConfig");
    expect([timeout, commitTimeout, threshold]).toEqual([60n, 40n, 3n]);
    const c2 = await Crynux.deploy(c0.anvil, { commitTimeoutSeconds: 100 });
    expect((await c2.read<readonly bigint[]>("task", "getConfig")).slice(0, 2)).toEqual([900n, 100n]);
    await expect(c2.tx(0, "task", "setTimeouts", [60n, 60n])).rejects.toThrow(/InvalidConfig/);
    await expect(c2.tx(0, "task", "setTimeouts", [1n, 70_000n])).rejects.toThrow(/InvalidConfig/);
  });

  test("a receiver that reverts does not block the task: its payment waits for withdraw()", async () => {
    const c = crynux();
    const creator = c.account(25);
    await c.anvil.testClient.setCode({ address: creator, bytecode: "0x5f5ffd" }); // always reverts
    await c.anvil.testClient.impersonateAccount({ address: creator });
    const { taskId } = await c.createTask(25, { fee: 3n * CNX });
    const receipt = await c.tx(25, "task", "cancelTask", [taskId]);
    expect(c.events(receipt, "PaymentDeferred")[0]!.args.amount).toBe(3n * CNX);
    expect(await c.read("task", "owed", [creator])).toBe(3n * CNX);
    const s = await c.checkSolvency();
    expect(s.taskOk).toBe(true);
    await c.anvil.testClient.setCode({ address: creator, bytecode: "0x" });
    const before = await c.balance(creator);
    const w = await c.tx(25, "task", "withdraw", []);
    expect((await c.balance(creator)) - before + w.gasUsed * w.effectiveGasPrice).toBe(3n * CNX);
    expect(await c.read("task", "totalOwed")).toBe(0n);
  });
});

describe("task types a node declares", () => {
  const SD_ONLY = 1;
  const GPT_ONLY = 2;

  test("join refuses an empty or unknown set; the set is part of the group and of getNodeInfo", async () => {
    const c = crynux();
    await expect(c.join(1, "A", 24n, "rt", STAKE, 0)).rejects.toThrow(/InvalidTaskTypes/);
    await expect(c.join(1, "A", 24n, "rt", STAKE, 4)).rejects.toThrow(/InvalidTaskTypes/);
    await c.join(1, "A", 24n, "rt", STAKE, GPT_ONLY);
    await c.join(2, "A", 24n, "rt", STAKE, SD_ONLY);
    const [n1, n2] = [await c.nodeInfo(c.account(1)), await c.nodeInfo(c.account(2))];
    expect([n1.taskTypes, n2.taskTypes]).toEqual([GPT_ONLY, SD_ONLY]);
    expect(n1.groupKey).not.toBe(n2.groupKey);
    expect(await c.read("node", "getGroupInfo", [n1.groupKey])).toEqual([24n, 1n, 1n, GPT_ONLY]);
  });

  test("GPT-only nodes are never selected for SD tasks, SD-only nodes never for GPT tasks", async () => {
    const c = crynux();
    for (const i of [1, 2, 3]) await c.join(i, "G", 24n, "rt", STAKE, GPT_ONLY);
    for (const i of [4, 5, 6]) await c.join(i, "S", 24n, "rt", STAKE, SD_ONLY);
    expect(await c.read("node", "availableAtLeast", [SD, 0n])).toBe(3n);
    expect(await c.read("node", "availableAtLeast", [GPT, 0n])).toBe(3n);
    const gptNodes = new Set([1, 2, 3].map((i) => c.account(i)));
    const sdNodes = new Set([4, 5, 6].map((i) => c.account(i)));
    const sd = await c.createTask(CREATOR, { taskType: SD });
    expect(sd.nodes.every((n) => sdNodes.has(n))).toBe(true);
    const gpt = await c.createTask(CREATOR, { taskType: GPT });
    expect(gpt.nodes.every((n) => gptNodes.has(n))).toBe(true);
    // Every node is busy now: a second SD task is queued. Then only the GPT nodes are freed.
    const sd2 = await c.createTask(CREATOR, { taskType: SD });
    expect(sd2.queued).toBe(true);
    await complete(c, gpt.taskId, gpt.nodes);
    // The GPT nodes are free again but must not take the queued SD task.
    expect((await c.getTask(sd2.taskId)).state).toBe(1); // QUEUED
    for (const i of [1, 2, 3]) expect(await c.status(i)).toBe(Status.AVAILABLE);
    await complete(c, sd.taskId, sd.nodes);
    // Freed SD nodes dispatch it.
    const started = await c.getTask(sd2.taskId);
    expect(started.state).toBe(2); // RUNNING
    expect(started.nodes.every((n) => sdNodes.has(n))).toBe(true);
  });

  test("a node running both joins a group that serves both task types", async () => {
    const c = crynux();
    for (const i of [1, 2, 3]) await c.join(i, "B", 24n, "rt", STAKE, SD_ONLY | GPT_ONLY);
    const sd = await c.createTask(CREATOR, { taskType: SD });
    expect(sd.nodes).toHaveLength(3);
    await complete(c, sd.taskId, sd.nodes);
    const gpt = await c.createTask(CREATOR, { taskType: GPT });
    expect(gpt.nodes).toHaveLength(3);
  });
});
