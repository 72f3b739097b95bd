import { nodeAbi, taskAbi } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import type { GptExecutor } from "@crynux/node-core";
import { gptResultHash } from "@crynux/tasks";
import { parseEventLogs } from "viem";
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { CREATOR, gptArgs, Network, TaskState } from "./runtime-helpers.js";

// A node whose executor alters its output (a cheater, or a node with a broken runtime) against two honest
// nodes: the two agree, the odd one out is slashed — its stake goes to the treasury and its fee share back to
// the creator. The honest nodes are held after committing so that the cheater discloses before the outcome
// is known (a node that sees the others settle on another result does not disclose; see docs/node-core.md).
const anvil = useAnvil({ accounts: 6, balanceEther: 100_000 });
let net: Network;

beforeAll(async () => {
  net = await Network.start(anvil());
}, 180_000);
afterAll(async () => {
  await net?.stop();
}, 60_000);

const WAIT = { timeout: 240_000, interval: 250 };

test("a node that alters its output is slashed; the honest two are paid", async () => {
  const { publicClient } = anvil();
  const honest = net.executor;
  const cheating: Pick<GptExecutor, "execute" | "runtimeId" | "loadedModels"> = {
    runtimeId: honest.runtimeId,
    loadedModels: () => honest.loadedModels(),
    async execute(args, options) {
      const result = await honest.execute(args, options);
      const response = structuredClone(result.response);
      const first = response.choices[0]!;
      first.message.content = `${first.message.content} (altered)`;
      return { ...result, response, resultHash: gptResultHash(response) };
    },
  };
  await net.nodes[2]!.stop();
  const cheater = net.makeNode(2, { gpt: cheating });
  net.nodes[2] = cheater;
  await cheater.start();

  const args = gptArgs("What is two plus two?");
  const taskId = await net.createTask(args);
  const held: Promise<void>[] = [];
  for (const node of net.nodes.slice(0, 2)) {
    node.events.on("taskStep", (record) => {
      if (BigInt(record.taskId) === taskId && record.step === "committed") held.push(node.stop());
    });
  }
  await net.uploadArgs(taskId, args);
  // the cheater discloses first, once all three commitments are in
  await vi.waitFor(async () => {
    expect((await cheater.store!.getTask(taskId))?.step).toBe("disclosed");
  }, WAIT);
  await vi.waitFor(() => expect(held).toHaveLength(2), WAIT);
  await Promise.all(held);
  for (const index of [0, 1]) {
    net.nodes[index] = net.makeNode(index);
    await net.nodes[index]!.start();
  }
  await vi.waitFor(async () => {
    expect((await net.getTask(taskId))[2]).toBe(TaskState.UPLOADED);
  }, WAIT);

  const logs = await publicClient.getLogs({
    address: [net.deployment.task, net.deployment.node],
    fromBlock: 0n,
  });
  const events = parseEventLogs({ abi: [...taskAbi, ...nodeAbi], logs }).filter(
    (e) => "taskId" in e.args && e.args.taskId === taskId,
  );
  const slashed = events.filter((e) => e.eventName === "TaskNodeSlashed");
  expect(slashed.map((e) => (e.args as { node: string }).node)).toEqual([cheater.address]);
  const nodeSlashed = parseEventLogs({ abi: nodeAbi, logs, eventName: "NodeSlashed" });
  expect(nodeSlashed.map((e) => e.args.node)).toEqual([cheater.address]);
  expect(nodeSlashed[0]!.args.treasury.toLowerCase()).toBe(net.deployment.treasury.toLowerCase());
  // the cheater's share goes back to the creator
  const refunds = events.filter((e) => e.eventName === "TaskRefunded");
  expect(refunds).toHaveLength(1);
  expect((refunds[0]!.args as { creator: string }).creator).toBe(anvil().accounts[CREATOR]!.address);
  const paid = events
    .filter((e) => e.eventName === "TaskNodeSuccess")
    .map((e) => (e.args as { node: string }).node)
    .sort();
  expect(paid).toEqual([net.nodes[0]!.address, net.nodes[1]!.address].sort());

  await vi.waitFor(async () => {
    expect((await cheater.store!.getTask(taskId))?.outcome).toBe("slashed");
  }, WAIT);
  expect((await cheater.status()).chainStatus).toBe("QUIT");
  for (const node of net.nodes.slice(0, 2)) {
    await vi.waitFor(async () => {
      expect((await node.store!.getTask(taskId))?.outcome).toBe("success");
    }, WAIT);
  }
  // the creator downloads the honest result
  const { response } = (await net.relayClient(CREATOR).getResult(taskId, { waitMs: 30_000 })) as {
    response: Parameters<typeof gptResultHash>[0];
  };
  expect(response.choices[0]!.message.content).not.toContain("(altered)");
}, 400_000);
