import { NodeTaskTypes, nodeAbi, taskAbi } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import type { CrynuxNode } from "@crynux/node-core";
import { canonicalize, gptResultHash } from "@crynux/tasks";
import {
  createPublicClient,
  custom,
  decodeFunctionData,
  type Hex,
  http,
  type PublicClient,
  parseTransaction,
} from "viem";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { CREATOR, earnedOn, FEE, gptArgs, Network, placeScore, TaskState } from "./runtime-helpers.js";

// Anvil, the contracts, the relay (in-memory PGlite, 1 confirmation) and three in-process nodes with real
// node-llama-cpp on a generated tiny model. One network for the whole file: the tests run in order and
// each leaves the three nodes AVAILABLE for the next.
const anvil = useAnvil({ accounts: 6, balanceEther: 100_000 });
let net: Network;

beforeAll(async () => {
  net = await Network.start(anvil());
}, 180_000);

afterAll(async () => {
  await net?.stop();
}, 60_000);

const WAIT = { timeout: 240_000, interval: 250 };

async function waitForState(taskId: bigint, state: number) {
  await vi.waitFor(async () => {
    const task = await net.getTask(taskId);
    if (task[2] !== state) throw new Error(`task ${taskId} is in state ${task[2]}, waiting for ${state}`);
  }, WAIT);
}

async function waitForOutcomes(taskId: bigint) {
  await vi.waitFor(async () => {
    for (const node of net.nodes) {
      const record = await node.store?.getTask(taskId);
      if (record?.step !== "done") throw new Error(`node ${node.address} is at ${record?.step}`);
    }
  }, WAIT);
}

/** Each node's expected fee share of a settled successful task, from the places the chain recorded. */
async function expectedShares(taskId: bigint): Promise<bigint[]> {
  const task = await net.getTask(taskId);
  const fee = task[6];
  const resultRound = task[10];
  const rounds = await Promise.all([0, 1, 2].map((round) => net.getRound(taskId, round)));
  const shares = rounds.map(([, commitPlace, disclosePlace]) => {
    return (fee * BigInt(placeScore(commitPlace) + placeScore(disclosePlace))) / 50n;
  });
  shares[resultRound] =
    fee - shares.reduce((sum, share, round) => (round === resultRound ? sum : sum + share), 0n);
  // by node (the order of net.nodes), not by round
  return net.nodes.map(
    (node) => shares[task[9].findIndex((a) => a.toLowerCase() === node.address.toLowerCase())]!,
  );
}

describe("node runtime on anvil + relay", () => {
  test("nodes without an SD engine join for GPT tasks only: none is available for SD tasks", async () => {
    for (const node of net.nodes) {
      const info = await net.anvil.publicClient.readContract({
        address: net.deployment.node,
        abi: nodeAbi,
        functionName: "getNodeInfo",
        args: [node.address],
      });
      expect(info[6]).toBe(NodeTaskTypes.GPT);
    }
    expect(
      await net.anvil.publicClient.readContract({
        address: net.deployment.node,
        abi: nodeAbi,
        functionName: "availableAtLeast",
        args: [0, 0n],
      }),
    ).toBe(0n);
  });

  test("a GPT task succeeds: paid by place, result on the relay equals the executor's output", async () => {
    const args = gptArgs("Tell me about the sea.");
    const taskId = await net.createTask(args);
    await net.uploadArgs(taskId, args);
    await waitForState(taskId, TaskState.UPLOADED);
    await waitForOutcomes(taskId);

    const shares = await expectedShares(taskId);
    expect(shares.reduce((a, b) => a + b, 0n)).toBe(FEE);
    await vi.waitFor(async () => {
      for (const [i, node] of net.nodes.entries()) expect(await earnedOn(node, taskId)).toBe(shares[i]);
    }, WAIT);
    for (const node of net.nodes) {
      const record = await node.store?.getTask(taskId);
      expect(record?.outcome).toBe("success");
      expect(record?.nonce).toMatch(/^0x[0-9a-f]{64}$/);
    }

    const { response } = (await net.relayClient(CREATOR).getResult(taskId, { waitMs: 30_000 })) as {
      response: Parameters<typeof gptResultHash>[0];
    };
    const expected = await net.executor.execute(args);
    expect(canonicalize(response)).toBe(canonicalize(expected.response));
    const onChain = await anvil().publicClient.readContract({
      address: net.deployment.task,
      abi: taskAbi,
      functionName: "getTaskResult",
      args: [taskId],
    });
    expect(onChain).toBe(gptResultHash(response));

    const status = await net.nodes[0]!.status();
    expect(status.chainStatus).toBe("AVAILABLE");
    expect(status.currentTask).toBeNull();
    expect(status.tasksDone).toBe(1);
    expect(status.earnings).toBe(shares[0]);
    expect(status.qos.averageScore).toBeGreaterThan(0n);
  }, 300_000);

  test("a node stopped between commit and disclose resumes from its store without repeating a transaction", async () => {
    const crashed = net.nodes[0]!;
    const address = crashed.address;
    const nonceBefore = await anvil().publicClient.getTransactionCount({ address });
    // A second node stops after executing, with its result and nonce stored but no commitment sent.
    const early = net.nodes[2]!;
    const earlyNonceBefore = await anvil().publicClient.getTransactionCount({ address: early.address });
    const args = gptArgs("Count to three.");
    const taskId = await net.createTask(args);
    let stopping: Promise<void> | undefined;
    let stoppingEarly: Promise<void> | undefined;
    crashed.events.on("taskStep", (record) => {
      if (BigInt(record.taskId) === taskId && record.step === "committed") stopping ??= crashed.stop();
    });
    early.events.on("taskStep", (record) => {
      if (BigInt(record.taskId) === taskId && record.step === "executed") stoppingEarly ??= early.stop();
    });
    await net.uploadArgs(taskId, args);
    await vi.waitFor(() => {
      if (!stopping || !stoppingEarly) throw new Error("not there yet");
    }, WAIT);
    await stopping;
    await stoppingEarly;
    const earlyBefore = await early.store!.getTask(taskId);
    expect(earlyBefore?.step).toBe("executed");
    expect(earlyBefore?.nonce).toMatch(/^0x[0-9a-f]{64}$/);
    expect((await net.getRound(taskId, earlyBefore!.round))[1]).toBe(0);
    expect(await anvil().publicClient.getTransactionCount({ address: early.address })).toBe(earlyNonceBefore);
    const before = await crashed.store!.getTask(taskId);
    expect(before?.step).toBe("committed");
    const [, commitPlace, disclosePlace] = await net.getRound(taskId, before!.round);
    expect(commitPlace).toBeGreaterThan(0);
    expect(disclosePlace).toBe(0);

    // New processes: the same state directories, fresh node objects.
    const restarted = net.makeNode(0);
    net.nodes[0] = restarted;
    const restartedEarly = net.makeNode(2);
    net.nodes[2] = restartedEarly;
    await Promise.all([restarted.start(), restartedEarly.start()]);
    await waitForState(taskId, TaskState.UPLOADED);
    await waitForOutcomes(taskId);

    const after = await restarted.store!.getTask(taskId);
    expect(after?.outcome).toBe("success");
    expect(after?.nonce).toBe(before?.nonce);
    expect(after?.txs.submitCommitment).toBe(before?.txs.submitCommitment);
    const [, , disclosedAt] = await net.getRound(taskId, after!.round);
    expect(disclosedAt).toBeGreaterThan(0);
    // join happened before; this task: one commitment, one disclosure, and the upload report if it was
    // the result node. Nothing twice.
    const task = await net.getTask(taskId);
    const isResultNode = task[10] === after!.round;
    const nonceAfter = await anvil().publicClient.getTransactionCount({ address });
    expect(nonceAfter - nonceBefore).toBe(2 + (isResultNode ? 1 : 0));
    expect(await restarted.status().then((s) => s.chainStatus)).toBe("AVAILABLE");

    // The early one committed to the result it had stored, with the stored nonce.
    const earlyAfter = await restartedEarly.store!.getTask(taskId);
    expect(earlyAfter?.outcome).toBe("success");
    expect(earlyAfter?.nonce).toBe(earlyBefore?.nonce);
    const commitTx = await anvil().publicClient.getTransaction({ hash: earlyAfter!.txs.submitCommitment! });
    const { args: commitArgs } = decodeFunctionData({ abi: taskAbi, data: commitTx.input });
    expect(commitArgs?.[2]).toBe(earlyAfter?.commitment);
    const earlyIsResultNode = task[10] === earlyAfter!.round;
    const earlyNonceAfter = await anvil().publicClient.getTransactionCount({ address: early.address });
    expect(earlyNonceAfter - earlyNonceBefore).toBe(2 + (earlyIsResultNode ? 1 : 0));
  }, 300_000);

  test("a crash right after the commitment was broadcast: the restarted node finds the transaction by its stored hash", async () => {
    const index = 1;
    const victim = net.nodes[index]!;
    const address = victim.address;
    const { publicClient } = anvil();
    // This node's RPC connection breaks right after its commitment went out, and the node dies with it.
    const upstream = http(anvil().rpcUrl)({ chain: anvil().chain });
    let crash: Promise<void> | undefined;
    let dying: CrynuxNode | undefined;
    const flaky = createPublicClient({
      chain: anvil().chain,
      pollingInterval: 50,
      transport: custom({
        async request({ method, params }) {
          if (method === "eth_sendRawTransaction" && !crash) {
            const { data } = parseTransaction((params as [Hex])[0]);
            if (data && decodeFunctionData({ abi: taskAbi, data }).functionName === "submitCommitment") {
              // The commitment stays in the mempool for now: the restarted node must wait for it rather
              // than send another one.
              net.stopMining();
              await anvil().testClient.setAutomine(false);
              await upstream.request({ method, params } as never);
              crash = dying!.stop();
              throw new Error("connection lost");
            }
          }
          return upstream.request({ method, params } as never);
        },
      }),
    });
    await victim.stop();
    dying = net.makeNode(index, { publicClient: flaky as PublicClient });
    net.nodes[index] = dying;
    await dying.start();
    const nonceBefore = await publicClient.getTransactionCount({ address });

    const args = gptArgs("Crash after sending.");
    const taskId = await net.createTask(args);
    await net.uploadArgs(taskId, args);
    await vi.waitFor(() => {
      if (!crash) throw new Error("not committed yet");
    }, WAIT);
    await crash;
    const stored = await dying.store!.getTask(taskId);
    expect(stored?.step).toBe("executed");
    expect(stored?.pendingTx?.functionName).toBe("submitCommitment");
    const pendingNonce = () => publicClient.getTransactionCount({ address, blockTag: "pending" });
    expect(await pendingNonce()).toBe(nonceBefore + 1);

    const restarted = net.makeNode(index);
    net.nodes[index] = restarted;
    await restarted.start();
    // Give it time to do the wrong thing: send a second commitment while the first one is pending.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await pendingNonce()).toBe(nonceBefore + 1);
    await anvil().testClient.setAutomine(true);
    await anvil().testClient.mine({ blocks: 1 });
    net.startMining();
    const receipt = await publicClient.waitForTransactionReceipt({ hash: stored!.pendingTx!.hash });
    expect(receipt.status).toBe("success");
    await waitForState(taskId, TaskState.UPLOADED);
    await waitForOutcomes(taskId);
    const after = await restarted.store!.getTask(taskId);
    expect(after?.outcome).toBe("success");
    expect(after?.pendingTx).toBeUndefined();
    expect(after?.txs.submitCommitment).toBe(stored!.pendingTx!.hash);
    const task = await net.getTask(taskId);
    const isResultNode = task[10] === after!.round;
    expect((await publicClient.getTransactionCount({ address })) - nonceBefore).toBe(
      2 + (isResultNode ? 1 : 0),
    );
  }, 300_000);

  test("arguments that cannot run (missing model) → every node reports a task error → task error, reporters paid", async () => {
    const args = gptArgs("Hello?", { model: "file:no-such-model.gguf" });
    const taskId = await net.createTask(args);
    await net.uploadArgs(taskId, args);
    await waitForState(taskId, TaskState.ERROR);
    await waitForOutcomes(taskId);
    for (const node of net.nodes) {
      const record = await node.store!.getTask(taskId);
      expect(record?.output).toMatchObject({ kind: "error", reason: "model_not_found" });
      expect(record?.outcome).toBe("error");
      await vi.waitFor(async () => expect(await earnedOn(node, taskId)).toBeGreaterThan(0n), WAIT);
    }
    for (const node of net.nodes) expect((await node.status()).chainStatus).toBe("AVAILABLE");
  }, 300_000);

  test("a cap lower than the arguments' work units → every node reports a task error", async () => {
    const args = gptArgs("Write a long poem.", { generation_config: { max_new_tokens: 16 } });
    const taskId = await net.createTask(args, { cap: 8n });
    await net.uploadArgs(taskId, args);
    await waitForState(taskId, TaskState.ERROR);
    await waitForOutcomes(taskId);
    for (const node of net.nodes) {
      const record = await node.store!.getTask(taskId);
      expect(record?.output).toMatchObject({ kind: "error", reason: "cap_too_low" });
      expect(record?.outcome).toBe("error");
    }
  }, 300_000);

  test("a TaskStarted in a block that is reorged away before its confirmation is never run", async () => {
    const { testClient, publicClient } = anvil();
    net.stopMining();
    const seen: bigint[] = [];
    const listeners = net.nodes.map((node) => {
      const listener = ({ taskId }: { taskId: bigint }) => seen.push(taskId);
      node.events.on("taskStarted", listener);
      return listener;
    });
    const head = await publicClient.getBlockNumber();
    await vi.waitFor(() => {
      for (const node of net.nodes) if ((node.indexedBlock ?? 0n) < head - 1n) throw new Error("catching up");
    }, WAIT);

    const snapshot = await testClient.snapshot();
    const nonces = await Promise.all(
      net.nodes.map((n) => publicClient.getTransactionCount({ address: n.address })),
    );
    const phantom = await net.createTask(gptArgs("I never happened."));
    // The nodes poll many times while the block is at the head (0 confirmations).
    await new Promise((resolve) => setTimeout(resolve, 2000));
    for (const node of net.nodes) expect(node.indexedBlock).toBeLessThan(head + 1n);
    await testClient.revert({ id: snapshot });
    await testClient.mine({ blocks: 3 });
    const newHead = await publicClient.getBlockNumber();
    await vi.waitFor(() => {
      for (const node of net.nodes)
        if ((node.indexedBlock ?? 0n) < newHead - 1n) throw new Error("catching up");
    }, WAIT);

    expect(seen).toEqual([]);
    for (const node of net.nodes) expect(await node.store!.getTask(phantom)).toBeUndefined();
    expect((await net.getTask(phantom))[2]).toBe(TaskState.NONE);
    const noncesAfter = await Promise.all(
      net.nodes.map((n) => publicClient.getTransactionCount({ address: n.address })),
    );
    expect(noncesAfter).toEqual(nonces);
    for (const [i, node] of net.nodes.entries()) node.events.off("taskStarted", listeners[i]!);
    net.startMining();
  }, 300_000);

  test("pause while busy: PENDING_PAUSE during the task, PAUSED after it", async () => {
    const args = gptArgs("One more story.");
    const taskId = await net.createTask(args);
    const paused = net.nodes[1]!;
    // The node is BUSY from the task's creation on.
    expect(await paused.pause()).toBe("PENDING_PAUSE");
    await net.uploadArgs(taskId, args);
    await waitForState(taskId, TaskState.UPLOADED);
    await waitForOutcomes(taskId);
    expect((await paused.status()).chainStatus).toBe("PAUSED");
    expect((await paused.store!.getTask(taskId))?.outcome).toBe("success");
    await vi.waitFor(async () => {
      const events = await paused.store!.getTask(taskId);
      expect(events?.events.some((e) => e.event === "TaskNodeSuccess")).toBe(true);
    }, WAIT);
    expect(await paused.resume()).toBe("AVAILABLE");
  }, 300_000);

  test("arguments never uploaded: after the commit deadline with no commitment a node cancels; nobody is penalized", async () => {
    const taskId = await net.createTask(gptArgs("Nobody will see me."));
    const { testClient } = anvil();
    await vi.waitFor(async () => {
      for (const node of net.nodes) if (!(await node.store!.getTask(taskId))) throw new Error("not seen yet");
    }, WAIT);
    await testClient.increaseTime({ seconds: 601 });
    await testClient.mine({ blocks: 1 });
    await waitForState(taskId, TaskState.ABORTED);
    await waitForOutcomes(taskId);
    for (const node of net.nodes) {
      const record = await node.store!.getTask(taskId);
      expect(record?.outcome).toBe("aborted");
      expect(record?.output).toBeUndefined();
      expect((await node.status()).chainStatus).toBe("AVAILABLE");
    }
    const rounds = await Promise.all([0, 1, 2].map((round) => net.getRound(taskId, round)));
    for (const [, commitPlace, , flags] of rounds) {
      expect(commitPlace).toBe(0);
      expect(flags & 8).toBe(0); // not absent
    }
  }, 300_000);

  test("a node that misses the commit deadline is absent: the other two settle 2-of-2; it is paused", async () => {
    const { testClient, publicClient } = anvil();
    const absent = net.nodes[2]!;
    await absent.stop();
    const args = gptArgs("Two of us will do.");
    const taskId = await net.createTask(args);
    await net.uploadArgs(taskId, args);
    const task = await net.getTask(taskId);
    const absentRound = task[9].findIndex((a) => a.toLowerCase() === absent.address.toLowerCase());
    await vi.waitFor(async () => {
      const rounds = await Promise.all([0, 1, 2].map((round) => net.getRound(taskId, round)));
      if (rounds.filter(([, commitPlace]) => commitPlace > 0).length < 2) throw new Error("committing");
    }, WAIT);
    await testClient.increaseTime({ seconds: 601 });
    await testClient.mine({ blocks: 1 });
    await waitForState(taskId, TaskState.UPLOADED);
    const [, , , flags] = await net.getRound(taskId, absentRound);
    expect(flags & 8).toBe(8);

    const nonceBefore = await publicClient.getTransactionCount({ address: absent.address });
    const back = net.makeNode(2, { resumeIfPaused: true });
    net.nodes[2] = back;
    await back.start();
    await vi.waitFor(async () => {
      expect((await back.store!.getTask(taskId))?.outcome).toBe("absent");
    }, WAIT);
    expect((await back.store!.getTask(taskId))?.output).toBeUndefined();
    // Its only transaction: resume() at start, since it was paused for its absence.
    expect(await publicClient.getTransactionCount({ address: absent.address })).toBe(nonceBefore + 1);
    expect((await back.status()).chainStatus).toBe("AVAILABLE");
    for (const node of net.nodes.slice(0, 2))
      expect((await node.store!.getTask(taskId))?.outcome).toBe("success");
  }, 300_000);

  test("quit while busy: PENDING_QUIT during the task, QUIT with the stake back after it", async () => {
    const { publicClient } = anvil();
    const leaving = net.nodes[0]!;
    const args = gptArgs("Last task before leaving.");
    const taskId = await net.createTask(args);
    expect(await leaving.quit()).toBe("PENDING_QUIT");
    await net.uploadArgs(taskId, args);
    await waitForState(taskId, TaskState.UPLOADED);
    await waitForOutcomes(taskId);
    expect((await leaving.status()).chainStatus).toBe("QUIT");
    expect((await leaving.store!.getTask(taskId))?.outcome).toBe("success");
    const info = await publicClient.readContract({
      address: net.deployment.node,
      abi: nodeAbi,
      functionName: "getNodeInfo",
      args: [leaving.address],
    });
    expect(info[3]).toBe(0n); // no stake left in the contract: it was sent back
    await vi.waitFor(async () => {
      const events = await leaving.store!.getTask(taskId);
      expect(events?.events.some((e) => e.event === "TaskNodeSuccess")).toBe(true);
    }, WAIT);
  }, 300_000);
});
