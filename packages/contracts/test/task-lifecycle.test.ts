import { type Address, type Hex, keccak256, toHex } from "viem";
import { describe, expect, test } from "vitest";
import { groupKey, taskCommitment } from "../src/deploy.js";
import { NodeTaskTypes } from "../src/states.js";
import {
  CNX,
  type Crynux,
  GPT,
  PENALTY,
  placeScore,
  SD,
  STAKE,
  Status,
  TaskState,
  useCrynux,
} from "./helpers/crynux.js";

const crynux = useCrynux();
const R1: Hex = keccak256(toHex("gpt result 1"));
const R2: Hex = keccak256(toHex("gpt result 2"));
const R3: Hex = keccak256(toHex("gpt result 3"));
const CREATOR = 20;

async function join3(c: Crynux, first = 1, gpu = "NVIDIA GeForce RTX 4090", vram = 24n, runtime = "rt") {
  for (let i = first; i < first + 3; i++) await c.join(i, gpu, vram, runtime);
}

async function commitAll(c: Crynux, taskId: bigint, nodes: Address[], results: Hex[], order = [0, 1, 2]) {
  for (const r of order) await c.commit(taskId, r, nodes[r]!, results[r]!);
}

describe("encodings", () => {
  test("groupKey and taskCommitment match the contracts", async () => {
    const c = crynux();
    const receipt = await c.join(
      1,
      "NVIDIA GeForce RTX 4090",
      24n,
      "node-llama-cpp@3.22.1/cpu/t1/b512/c4096",
    );
    const joined = c.events(receipt, "NodeJoined")[0]!;
    expect(joined.args.groupKey).toBe(
      groupKey("NVIDIA GeForce RTX 4090", 24n, "node-llama-cpp@3.22.1/cpu/t1/b512/c4096", NodeTaskTypes.ALL),
    );
    expect((await c.nodeInfo(c.account(1))).groupKey).toBe(joined.args.groupKey);
    // commitment: checked by a disclosure that the contract accepts
    await c.join(2, "NVIDIA GeForce RTX 4090", 24n, "node-llama-cpp@3.22.1/cpu/t1/b512/c4096");
    await c.join(3, "NVIDIA GeForce RTX 4090", 24n, "node-llama-cpp@3.22.1/cpu/t1/b512/c4096");
    const { taskId, nodes } = await c.createTask(CREATOR);
    const nonce = keccak256(toHex("n"));
    for (let r = 0; r < 3; r++) {
      await c.tx(nodes[r]!, "task", "submitCommitment", [taskId, BigInt(r), taskCommitment(R1, nonce)]);
    }
    await c.tx(nodes[0]!, "task", "disclose", [taskId, 0n, R1, nonce]);
    await expect(c.tx(nodes[1]!, "task", "disclose", [taskId, 1n, R2, nonce])).rejects.toThrow(
      /CommitmentMismatch/,
    );
  });
});

describe("GPT lifecycle", () => {
  test("3 same-group nodes: create, commit, disclose, success, upload, fee split, QoS", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes, receipt, queued } = await c.createTask(CREATOR, { fee });
    expect(queued).toBe(false);
    expect(new Set(nodes).size).toBe(3);
    const started = c.events(receipt, "TaskStarted");
    expect(started.map((e) => Number(e.args.round))).toEqual([0, 1, 2]);
    for (const n of nodes) expect(await c.status(n)).toBe(Status.BUSY);
    expect(await c.stats()).toMatchObject({
      busyNodes: 3,
      availableNodes: 0,
      runningTasks: 1,
      totalTasks: 1,
    });

    await expect(c.disclose(taskId, 0, nodes[0]!, R1)).rejects.toThrow(/CommitmentsNotReady/);
    await c.commit(taskId, 0, nodes[0]!, R1);
    await expect(c.commit(taskId, 0, nodes[0]!, R1)).rejects.toThrow(/AlreadyCommitted/);
    await expect(c.commit(taskId, 1, nodes[0]!, R1)).rejects.toThrow(/NotSelectedNode/);
    await c.commit(taskId, 1, nodes[1]!, R1);
    const ready = await c.commit(taskId, 2, nodes[2]!, R1);
    expect(c.events(ready, "TaskCommitmentsReady")).toHaveLength(1);

    await c.disclose(taskId, 0, nodes[0]!, R1);
    const second = await c.disclose(taskId, 1, nodes[1]!, R1);
    const success = c.events(second, "TaskSuccess")[0]!;
    expect(success.args.result).toBe(R1);
    expect(success.args.resultNode).toBe(nodes[0]);
    expect(c.events(second, "TaskNodeSuccess")[0]!.args.fee).toBe((fee * 18n) / 50n);
    expect(await c.status(nodes[1]!)).toBe(Status.AVAILABLE);
    expect(await c.read("task", "getTaskResult", [taskId])).toBe(R1);

    const third = await c.disclose(taskId, 2, nodes[2]!, R1);
    expect(c.events(third, "TaskNodeSuccess")[0]!.args.fee).toBe((fee * 12n) / 50n);
    await expect(c.uploaded(taskId, 1, nodes[1]!)).rejects.toThrow(/NotResultNode/);
    const up = await c.uploaded(taskId, 0, nodes[0]!);
    expect(c.events(up, "TaskResultUploaded")).toHaveLength(1);
    expect(c.events(up, "TaskNodeSuccess")[0]!.args.fee).toBe(fee - (fee * 18n) / 50n - (fee * 12n) / 50n);
    const t = await c.getTask(taskId);
    expect(t.state).toBe(TaskState.UPLOADED);
    expect(t.balance).toBe(0n);
    for (const n of nodes) expect(await c.status(n)).toBe(Status.AVAILABLE);
    expect(await c.read("qos", "averageScore", [nodes[2]])).toBe(12n);
    expect(await c.stats()).toMatchObject({ busyNodes: 0, availableNodes: 3, runningTasks: 0 });
    const solvency = await c.checkSolvency();
    expect(solvency.nodeOk && solvency.taskOk).toBe(true);
    expect(solvency.staked).toBe(3n * STAKE);
    expect(solvency.escrow).toBe(0n);
  });

  test("getTaskView equals getTask, getTaskDeadlines and getRound, read at the block it names", async () => {
    const c = crynux();
    await join3(c);
    const { taskId, nodes } = await c.createTask(CREATOR, { fee: 50n * CNX });
    const { publicClient } = c.anvil;
    const expectViewsAgree = async () => {
      const block = await publicClient.getBlock({ blockTag: "latest" });
      const view = await c.read<{
        blockNumber: bigint;
        timestamp: bigint;
        taskType: number;
        state: number;
        taskHash: Hex;
        cap: bigint;
        resultRound: number;
        commitDeadline: bigint;
        deadline: bigint;
        rounds: readonly {
          node: Address;
          commitPlace: number;
          disclosePlace: number;
          flags: number;
          commitment: Hex;
        }[];
      }>("task", "getTaskView", [taskId]);
      const task = await c.read<readonly unknown[]>("task", "getTask", [taskId]);
      const deadlines = await c.read<readonly bigint[]>("task", "getTaskDeadlines", [taskId]);
      const rounds = await Promise.all(
        [0n, 1n, 2n].map((round) => c.read<readonly unknown[]>("task", "getRound", [taskId, round])),
      );
      expect(view).toEqual({
        blockNumber: block.number,
        timestamp: block.timestamp,
        taskType: task[1],
        state: task[2],
        taskHash: task[3],
        cap: task[5],
        resultRound: task[10],
        commitDeadline: deadlines[0],
        deadline: deadlines[1],
        rounds: rounds.map(([node, commitPlace, disclosePlace, flags, commitment]) => ({
          node,
          commitPlace,
          disclosePlace,
          flags,
          commitment,
        })),
      });
    };
    await expectViewsAgree();
    for (const round of [0, 1, 2]) await c.commit(taskId, round, nodes[round]!, R1);
    await expectViewsAgree();
    await c.disclose(taskId, 1, nodes[1]!, R1);
    await c.disclose(taskId, 0, nodes[0]!, R1);
    await expectViewsAgree();
    // an unknown task: zeros, at the current block
    const unknown = await c.read<{ state: number; blockNumber: bigint }>("task", "getTaskView", [
      taskId + 100n,
    ]);
    expect(unknown.state).toBe(TaskState.NONE);
    expect(unknown.blockNumber).toBe(await publicClient.getBlockNumber({ cacheTime: 0 }));
  });

  test("GPT never mixes groups, SD may", async () => {
    const c = crynux();
    await c.join(1, "A", 24n, "rt");
    await c.join(2, "A", 24n, "rt");
    await c.join(3, "B", 24n, "rt");
    await c.join(4, "A", 24n, "rt2");
    const gpt = await c.createTask(CREATOR, { taskType: GPT });
    expect(gpt.queued).toBe(true);
    const sd = await c.createTask(CREATOR, { taskType: SD, vramLimit: 16n });
    expect(sd.queued).toBe(false);
    expect(new Set(sd.nodes).size).toBe(3);
    await c.join(5, "A", 24n, "rt");
    // node 5 joined group A, but nodes 1 and 2 may be busy with the SD task: GPT only starts with 3 of group A
    const t = await c.getTask(gpt.taskId);
    if (t.state === TaskState.RUNNING) {
      const keys = await Promise.all(t.nodes.map(async (n) => (await c.nodeInfo(n)).groupKey));
      expect(new Set(keys).size).toBe(1);
      expect(keys[0]).toBe(groupKey("A", 24n, "rt", NodeTaskTypes.ALL));
    }
  });

  test("SD selection honours vramLimit; paused and busy nodes are never selected", async () => {
    const c = crynux();
    await c.join(1, "small", 8n, "rt");
    await c.join(2, "big", 24n, "rt");
    await c.join(3, "big2", 16n, "rt");
    await c.join(4, "big", 24n, "rt");
    await c.join(5, "big", 24n, "rt");
    await c.tx(5, "node", "pause", []);
    const first = await c.createTask(CREATOR, { taskType: SD, vramLimit: 16n });
    expect(first.queued).toBe(false);
    expect(new Set(first.nodes)).toEqual(new Set([c.account(2), c.account(3), c.account(4)]));
    const second = await c.createTask(CREATOR, { taskType: SD, vramLimit: 8n });
    expect(second.queued).toBe(true);
  });
});

/** Runs a GPT task with the given commit and disclose orders (round indices), everyone agreeing. */
async function runOrders(c: Crynux, fee: bigint, commitOrder: number[], discloseOrder: number[]) {
  const { taskId, nodes } = await c.createTask(CREATOR, { fee });
  await commitAll(c, taskId, nodes, [R1, R1, R1], commitOrder);
  const paid = new Map<Address, bigint>();
  for (const r of discloseOrder) {
    const receipt = await c.disclose(taskId, r, nodes[r]!, R1);
    for (const e of c.events(receipt, "TaskNodeSuccess"))
      paid.set(e.args.node as Address, e.args.fee as bigint);
  }
  const resultRound = discloseOrder[0]!;
  const receipt = await c.uploaded(taskId, resultRound, nodes[resultRound]!);
  for (const e of c.events(receipt, "TaskNodeSuccess"))
    paid.set(e.args.node as Address, e.args.fee as bigint);
  return { taskId, nodes, paid };
}

const PERMS = [
  [0, 1, 2],
  [0, 2, 1],
  [1, 0, 2],
  [1, 2, 0],
  [2, 0, 1],
  [2, 1, 0],
];

describe("fee split", () => {
  test("every commit x disclose order (36 combinations)", { timeout: 120_000 }, async () => {
    const c = crynux();
    await join3(c);
    const fee = 1_000_000_000_000_000_003n; // not a multiple of 50: there is dust
    for (const co of PERMS) {
      for (const dO of PERMS) {
        const { nodes, paid } = await runOrders(c, fee, co, dO);
        const expected = new Map<Address, bigint>();
        const resultRound = dO[0]!;
        let others = 0n;
        for (let r = 0; r < 3; r++) {
          if (r === resultRound) continue;
          const score = placeScore(co.indexOf(r) + 1) + placeScore(dO.indexOf(r) + 1);
          const share = (fee * score) / 50n;
          expected.set(nodes[r]!, share);
          others += share;
        }
        expected.set(nodes[resultRound]!, fee - others);
        expect(paid).toEqual(expected);
        let total = 0n;
        for (const v of paid.values()) total += v;
        expect(total).toBe(fee);
      }
    }
    const s = await c.checkSolvency();
    expect(s.taskOk && s.escrow === 0n).toBe(true);
  });
});

describe("validation failures", () => {
  test.each([0, 1, 2])(
    "2 of 3 agree, cheater round %i: slashed, stake to the treasury, share back to the creator",
    async (cheater) => {
      {
        const c = crynux();
        await join3(c);
        const fee = 50n * CNX;
        const { taskId, nodes } = await c.createTask(CREATOR, { fee });
        const results = [R1, R1, R1];
        results[cheater] = R2;
        await commitAll(c, taskId, nodes, results);
        const treasuryBefore = await c.balance(c.addr.treasury);
        const creatorBefore = await c.balance(c.account(CREATOR));
        const refunds: bigint[] = [];
        let slashed: Address | undefined;
        let success: { result: unknown; resultNode: unknown } | undefined;
        for (const r of [0, 1, 2]) {
          const receipt = await c.disclose(taskId, r, nodes[r]!, results[r]!);
          for (const e of c.events(receipt, "TaskRefunded")) refunds.push(e.args.amount as bigint);
          for (const e of c.events(receipt, "TaskNodeSlashed")) slashed = e.args.node as Address;
          const s = c.events(receipt, "TaskSuccess")[0];
          if (s) success = s.args as never;
        }
        expect(slashed).toBe(nodes[cheater]);
        expect(await c.status(nodes[cheater]!)).toBe(Status.QUIT);
        expect((await c.balance(c.addr.treasury)) - treasuryBefore).toBe(STAKE);
        const cheaterScore = placeScore(cheater + 1) * 2n;
        expect(refunds).toEqual([(fee * cheaterScore) / 50n]);
        expect((await c.balance(c.account(CREATOR))) - creatorBefore).toBe((fee * cheaterScore) / 50n);
        expect(success!.result).toBe(R1);
        const honest = [0, 1, 2].filter((r) => r !== cheater);
        expect(success!.resultNode).toBe(nodes[honest[0]!]);
        await c.uploaded(taskId, honest[0]!, nodes[honest[0]!]!);
        expect((await c.getTask(taskId)).balance).toBe(0n);
        expect(await c.read("qos", "recentScoreSum", [nodes[cheater]])).toBe(60n);
        const s = await c.checkSolvency();
        expect(s.nodeOk && s.taskOk && s.escrow === 0n && s.staked === 2n * STAKE).toBe(true);
      }
    },
  );

  test("3 different results: aborted, full refund, nobody slashed", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    const results = [R1, R2, R3];
    await commitAll(c, taskId, nodes, results);
    await c.disclose(taskId, 0, nodes[0]!, R1);
    await c.disclose(taskId, 1, nodes[1]!, R2);
    const receipt = await c.disclose(taskId, 2, nodes[2]!, R3);
    expect(c.events(receipt, "TaskAborted")[0]!.args.reason).toBe("results mismatch");
    expect(c.events(receipt, "TaskRefunded")[0]!.args.amount).toBe(fee);
    expect(c.events(receipt, "TaskNodeSlashed")).toHaveLength(0);
    for (const n of nodes) expect(await c.status(n)).toBe(Status.AVAILABLE);
    expect((await c.getTask(taskId)).state).toBe(TaskState.ABORTED);
  });

  test("2 error reports: aborted, reporters paid by their order scores; a real third result is slashed", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    const results: Hex[] = ["0x", R1, "0x"];
    await commitAll(c, taskId, nodes, results);
    const paid = new Map<Address, bigint>();
    const collect = (receipt: Awaited<ReturnType<Crynux["tx"]>>) => {
      for (const e of c.events(receipt, "TaskNodeSuccess"))
        paid.set(e.args.node as Address, e.args.fee as bigint);
    };
    collect(await c.disclose(taskId, 0, nodes[0]!, "0x"));
    collect(await c.disclose(taskId, 1, nodes[1]!, R1));
    const third = await c.disclose(taskId, 2, nodes[2]!, "0x");
    collect(third);
    expect(c.events(third, "TaskAborted")[0]!.args.reason).toBe("task error");
    expect(c.events(third, "TaskNodeSlashed")[0]!.args.node).toBe(nodes[1]);
    // commit places 1,2,3 and disclose places 1,2,3 by round: round 2 scores 6+6, round 1 (slashed) 9+9
    const share2 = (fee * 12n) / 50n;
    const share1 = (fee * 18n) / 50n;
    expect(paid.get(nodes[2]!)).toBe(share2);
    expect(paid.get(nodes[0]!)).toBe(fee - share2 - share1);
    expect((await c.getTask(taskId)).state).toBe(TaskState.ERROR);
    expect((await c.getTask(taskId)).balance).toBe(0n);
  });

  test("3 error reports: all paid", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    await commitAll(c, taskId, nodes, ["0x", "0x", "0x"]);
    let total = 0n;
    for (const r of [2, 0, 1]) {
      const receipt = await c.disclose(taskId, r, nodes[r]!, "0x");
      for (const e of c.events(receipt, "TaskNodeSuccess")) total += e.args.fee as bigint;
    }
    expect(total).toBe(fee);
    for (const n of nodes) expect(await c.status(n)).toBe(Status.AVAILABLE);
  });

  test("invalid result sizes are rejected", async () => {
    const c = crynux();
    await join3(c);
    const { taskId, nodes } = await c.createTask(CREATOR);
    const bad: Hex = "0x1234";
    await commitAll(c, taskId, nodes, [bad, R1, R1]);
    await expect(c.disclose(taskId, 0, nodes[0]!, bad)).rejects.toThrow(/InvalidResult/);
  });
});

describe("SD validation (pHash distance)", () => {
  const img = (hex: string) => hex.padStart(16, "0");
  test("distance 4 matches, 5 does not", async () => {
    const c = crynux();
    await c.join(1, "A", 24n, "rt");
    await c.join(2, "B", 16n, "rt");
    await c.join(3, "C", 12n, "other");
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { taskType: SD, fee, cap: 2n, vramLimit: 10n });
    const base = `0x${img("ff00ff00ff00ff00")}${img("0123456789abcdef")}` as Hex;
    // 4 differing bits in each image (8 in total): a match, the threshold is per image
    const d4 = `0x${img("ff00ff00ff00ff0f")}${img("0123456789abcde0")}` as Hex;
    // 5 differing bits in image 1: a mismatch
    const d5 = `0x${img("ff00ff00ff00ff00")}${img("0123456789abcdf0")}` as Hex;
    const bits = (a: Hex, b: Hex, image: number) => {
      const x =
        BigInt(`0x${a.slice(2 + image * 16, 18 + image * 16)}`) ^
        BigInt(`0x${b.slice(2 + image * 16, 18 + image * 16)}`);
      return x
        .toString(2)
        .split("")
        .filter((ch) => ch === "1").length;
    };
    expect([bits(base, d4, 0), bits(base, d4, 1), bits(base, d5, 0), bits(base, d5, 1)]).toEqual([
      4, 4, 0, 5,
    ]);
    await commitAll(c, taskId, nodes, [base, d4, d5]);
    await c.disclose(taskId, 0, nodes[0]!, base);
    const second = await c.disclose(taskId, 1, nodes[1]!, d4);
    expect(c.events(second, "TaskSuccess")[0]!.args.result).toBe(base);
    const third = await c.disclose(taskId, 2, nodes[2]!, d5);
    expect(c.events(third, "TaskNodeSlashed")[0]!.args.node).toBe(nodes[2]);
    expect(await c.read("task", "getTaskResult", [taskId])).toBe(base);
  });

  test("different lengths never match", async () => {
    const c = crynux();
    await join3(c);
    const { taskId, nodes } = await c.createTask(CREATOR, { taskType: SD });
    const a = `0x${img("01")}` as Hex;
    const b = `0x${img("01")}${img("01")}` as Hex;
    await commitAll(c, taskId, nodes, [a, b, a]);
    await c.disclose(taskId, 0, nodes[0]!, a);
    const second = await c.disclose(taskId, 1, nodes[1]!, b);
    expect(c.events(second, "TaskSuccess")).toHaveLength(0);
    const third = await c.disclose(taskId, 2, nodes[2]!, a);
    expect(c.events(third, "TaskNodeSlashed")[0]!.args.node).toBe(nodes[1]);
    expect(c.events(third, "TaskSuccess")[0]!.args.resultNode).toBe(nodes[0]);
  });
});

describe("timeout", () => {
  test("cancel after the deadline: unpaid balance back, the absent node scores 0, pays and is paused", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    await c.commit(taskId, 0, nodes[0]!, R1);
    await c.commit(taskId, 1, nodes[1]!, R1);
    await expect(c.tx(CREATOR, "task", "cancelTask", [taskId])).rejects.toThrow(/DeadlineNotReached/);
    await c.anvil.testClient.increaseTime({ seconds: 15 * 60 + 1 });
    await c.anvil.testClient.mine({ blocks: 1 });
    await expect(c.tx(CREATOR + 1, "task", "cancelTask", [taskId])).rejects.toThrow(/Unauthorized/);
    const receipt = await c.tx(nodes[2]!, "task", "cancelTask", [taskId]);
    expect(c.events(receipt, "TaskAborted")[0]!.args.reason).toBe("cancelled");
    expect(c.events(receipt, "TaskRefunded")[0]!.args.amount).toBe(fee);
    expect(c.events(receipt, "TaskNodeCancelled").map((e) => e.args.node)).toEqual([nodes[0], nodes[1]]);
    expect(c.events(receipt, "TaskNodeAbsent").map((e) => e.args.node)).toEqual([nodes[2]]);
    expect(c.events(receipt, "NodePenalized")[0]!.args.amount).toBe(PENALTY);
    expect(await c.status(nodes[0]!)).toBe(Status.AVAILABLE);
    expect(await c.status(nodes[1]!)).toBe(Status.AVAILABLE);
    expect(await c.status(nodes[2]!)).toBe(Status.PAUSED);
    expect((await c.nodeInfo(nodes[2]!)).stake).toBe(STAKE - PENALTY);
    expect(await c.balance(c.addr.treasury)).toBe(PENALTY);
    const [ring0] = await c.read<[readonly bigint[]]>("qos", "getScore", [nodes[0]]);
    const [ring2] = await c.read<[readonly bigint[]]>("qos", "getScore", [nodes[2]]);
    expect(ring0[0]).toBe(10n);
    expect(ring2[0]).toBe(0n);
    expect((await c.stats()).runningTasks).toBe(0);
    const s = await c.checkSolvency();
    expect(s.nodeOk && s.taskOk).toBe(true);
  });

  test("cancel after success without upload: the third's reserved share and the result node's share go back", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    await commitAll(c, taskId, nodes, [R1, R1, R1]);
    await c.disclose(taskId, 0, nodes[0]!, R1);
    await c.disclose(taskId, 1, nodes[1]!, R1);
    await c.anvil.testClient.increaseTime({ seconds: 15 * 60 + 1 });
    await c.anvil.testClient.mine({ blocks: 1 });
    const receipt = await c.tx(CREATOR, "task", "cancelTask", [taskId]);
    expect(c.events(receipt, "TaskRefunded")[0]!.args.amount).toBe(fee - (fee * 18n) / 50n);
    expect(c.events(receipt, "TaskNodeCancelled")).toHaveLength(2);
    await expect(c.tx(CREATOR, "task", "cancelTask", [taskId])).rejects.toThrow(/IllegalTaskState/);
  });

  test("nobody committed: QoS unchanged", async () => {
    const c = crynux();
    await join3(c);
    const { taskId, nodes } = await c.createTask(CREATOR);
    await c.anvil.testClient.increaseTime({ seconds: 15 * 60 + 1 });
    await c.anvil.testClient.mine({ blocks: 1 });
    await c.tx(CREATOR, "task", "cancelTask", [taskId]);
    const [, recentCount, count] = await c.read<[readonly bigint[], bigint, bigint]>("qos", "getScore", [
      nodes[0],
    ]);
    expect(recentCount).toBe(0n);
    expect(count).toBe(0n);
  });
});

describe("commit deadline (a node that never commits)", () => {
  const COMMIT_WINDOW = 10 * 60;

  async function pastCommitDeadline(c: Crynux) {
    await c.anvil.testClient.increaseTime({ seconds: COMMIT_WINDOW + 1 });
    await c.anvil.testClient.mine({ blocks: 1 });
  }

  test("deadlines are readable; a late commitment is refused", async () => {
    const c = crynux();
    await join3(c);
    const { taskId, nodes, receipt } = await c.createTask(CREATOR);
    const block = await c.anvil.publicClient.getBlock({ blockNumber: receipt.blockNumber });
    const [commitDeadline, deadline] = await c.read<[bigint, bigint]>("task", "getTaskDeadlines", [taskId]);
    expect(commitDeadline).toBe(block.timestamp + 600n);
    expect(deadline).toBe(block.timestamp + 900n);
    expect((await c.read<readonly unknown[]>("task", "getTask", [taskId]))[8]).toBe(deadline);
    await pastCommitDeadline(c);
    await expect(c.commit(taskId, 0, nodes[0]!, R1)).rejects.toThrow(/CommitDeadlinePassed/);
  });

  test("2 committed: after the commit deadline they disclose and settle 2-of-2; the absent node pays", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    await c.commit(taskId, 2, nodes[2]!, R1);
    await c.commit(taskId, 0, nodes[0]!, R1);
    await expect(c.disclose(taskId, 2, nodes[2]!, R1)).rejects.toThrow(/CommitmentsNotReady/);
    await pastCommitDeadline(c);
    const creatorBefore = await c.balance(c.account(CREATOR));
    const first = await c.disclose(taskId, 0, nodes[0]!, R1);
    expect(c.events(first, "TaskNodeAbsent").map((e) => [e.args.node, e.args.round])).toEqual([
      [nodes[1], 1],
    ]);
    expect(c.events(first, "NodePenalized")[0]!.args.amount).toBe(PENALTY);
    const reserved = (fee * 12n) / 50n;
    expect(c.events(first, "TaskRefunded")[0]!.args.amount).toBe(reserved);
    expect(await c.status(nodes[1]!)).toBe(Status.PAUSED);
    await expect(c.disclose(taskId, 1, nodes[1]!, R1)).rejects.toThrow(/CommitmentMismatch/);
    const second = await c.disclose(taskId, 2, nodes[2]!, R1);
    const success = c.events(second, "TaskSuccess")[0]!;
    expect(success.args.resultNode).toBe(nodes[0]);
    // round 2: commit 1st (10) + disclose 2nd (9)
    expect(c.events(second, "TaskNodeSuccess")[0]!.args.fee).toBe((fee * 19n) / 50n);
    const upload = await c.uploaded(taskId, 0, nodes[0]!);
    // round 0: commit 2nd, disclose 1st; gets the rest
    expect(c.events(upload, "TaskNodeSuccess")[0]!.args.fee).toBe(fee - (fee * 19n) / 50n - reserved);
    expect(await c.balance(c.account(CREATOR))).toBe(creatorBefore + reserved);
    const task = await c.read<readonly unknown[]>("task", "getTask", [taskId]);
    expect(task[2]).toBe(TaskState.UPLOADED);
    expect(task[7]).toBe(0n);
    const [ring1] = await c.read<[readonly bigint[]]>("qos", "getScore", [nodes[1]]);
    expect(ring1[0]).toBe(0n);
    for (const r of [0, 2]) expect(await c.status(nodes[r]!)).toBe(Status.AVAILABLE);
    const s = await c.checkSolvency();
    expect(s.nodeOk && s.taskOk).toBe(true);
  });

  test("the fee split of a 2-of-2 task equals feeShares with the absent round", async () => {
    const { feeShares } = await import("@crynux/pricing");
    const c = crynux();
    await join3(c);
    const fee = 7n * CNX + 13n;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    await c.commit(taskId, 1, nodes[1]!, R1);
    await c.commit(taskId, 2, nodes[2]!, R1);
    await pastCommitDeadline(c);
    const paid: bigint[] = [0n, 0n, 0n];
    let refunded = 0n;
    const receipts = [await c.disclose(taskId, 2, nodes[2]!, R1), await c.disclose(taskId, 1, nodes[1]!, R1)];
    receipts.push(await c.uploaded(taskId, 2, nodes[2]!));
    for (const receipt of receipts) {
      for (const e of c.events(receipt, "TaskNodeSuccess"))
        paid[nodes.indexOf(e.args.node as Address)]! += e.args.fee as bigint;
      for (const e of c.events(receipt, "TaskRefunded")) refunded += e.args.amount as bigint;
    }
    const expected = feeShares({ fee, commitOrder: [1, 2], discloseOrder: [2, 1], absentRound: 0 });
    expect(paid).toEqual(expected.shares);
    expect(refunded).toBe(expected.refund);
    expect(expected.scores).toEqual([0, 19, 19]);
  });

  test("2 committed and they disagree: aborted and refunded, nobody slashed, the absent node pays", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    await c.commit(taskId, 0, nodes[0]!, R1);
    await c.commit(taskId, 1, nodes[1]!, R2);
    await pastCommitDeadline(c);
    await c.disclose(taskId, 0, nodes[0]!, R1);
    const second = await c.disclose(taskId, 1, nodes[1]!, R2);
    expect(c.events(second, "TaskAborted")[0]!.args.reason).toBe("results mismatch");
    expect(c.events(second, "TaskNodeSlashed")).toHaveLength(0);
    expect(c.events(second, "TaskRefunded")[0]!.args.amount).toBe(fee - (fee * 12n) / 50n);
    for (const r of [0, 1]) expect(await c.status(nodes[r]!)).toBe(Status.AVAILABLE);
    expect(await c.status(nodes[2]!)).toBe(Status.PAUSED);
    const s = await c.checkSolvency();
    expect(s.nodeOk && s.taskOk).toBe(true);
  });

  test("2 committed, both report an error: error outcome, reporters paid", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    const nonce0 = keccak256(toHex("e0"));
    const nonce2 = keccak256(toHex("e2"));
    await c.tx(nodes[0]!, "task", "submitCommitment", [taskId, 0n, taskCommitment("0x", nonce0)]);
    await c.tx(nodes[2]!, "task", "submitCommitment", [taskId, 2n, taskCommitment("0x", nonce2)]);
    await pastCommitDeadline(c);
    await c.tx(nodes[0]!, "task", "reportTaskError", [taskId, 0n, nonce0]);
    const second = await c.tx(nodes[2]!, "task", "reportTaskError", [taskId, 2n, nonce2]);
    expect(c.events(second, "TaskAborted")[0]!.args.reason).toBe("task error");
    const task = await c.read<readonly unknown[]>("task", "getTask", [taskId]);
    expect(task[2]).toBe(TaskState.ERROR);
    expect(task[7]).toBe(0n);
    const s = await c.checkSolvency();
    expect(s.nodeOk && s.taskOk).toBe(true);
  });

  test("fewer than 2 commitments: cancellable right after the commit deadline; absent nodes pay", async () => {
    const c = crynux();
    await join3(c);
    const fee = 50n * CNX;
    const { taskId, nodes } = await c.createTask(CREATOR, { fee });
    await c.commit(taskId, 1, nodes[1]!, R1);
    await expect(c.tx(CREATOR, "task", "cancelTask", [taskId])).rejects.toThrow(/DeadlineNotReached/);
    await pastCommitDeadline(c);
    const receipt = await c.tx(CREATOR, "task", "cancelTask", [taskId]);
    expect(c.events(receipt, "TaskRefunded")[0]!.args.amount).toBe(fee);
    expect(c.events(receipt, "TaskNodeAbsent").map((e) => e.args.node)).toEqual([nodes[0], nodes[2]]);
    expect(await c.status(nodes[1]!)).toBe(Status.AVAILABLE);
    const s = await c.checkSolvency();
    expect(s.nodeOk && s.taskOk).toBe(true);
  });

  test("nobody committed: cancellable after the commit deadline, nobody penalized", async () => {
    const c = crynux();
    await join3(c);
    const { taskId, nodes } = await c.createTask(CREATOR);
    await pastCommitDeadline(c);
    const receipt = await c.tx(CREATOR, "task", "cancelTask", [taskId]);
    expect(c.events(receipt, "TaskNodeAbsent")).toHaveLength(0);
    expect(c.events(receipt, "NodePenalized")).toHaveLength(0);
    for (const n of nodes) expect(await c.status(n)).toBe(Status.AVAILABLE);
  });

  test("a node whose stake is used up by penalties is removed", async () => {
    const c = crynux();
    await c.tx(0, "node", "setAbsencePenalty", [STAKE]);
    await join3(c);
    const { taskId, nodes } = await c.createTask(CREATOR);
    await c.commit(taskId, 0, nodes[0]!, R1);
    await c.commit(taskId, 1, nodes[1]!, R1);
    await pastCommitDeadline(c);
    const receipt = await c.disclose(taskId, 0, nodes[0]!, R1);
    expect(c.events(receipt, "NodePenalized")[0]!.args.amount).toBe(STAKE);
    expect(c.events(receipt, "NodeKickedOut").map((e) => e.args.node)).toEqual([nodes[2]]);
    expect(await c.status(nodes[2]!)).toBe(Status.QUIT);
    const s = await c.checkSolvency();
    expect(s.nodeOk && s.taskOk).toBe(true);
  });
});
