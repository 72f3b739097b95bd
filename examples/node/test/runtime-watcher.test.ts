import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type CrynuxDeployment,
  deployCrynux,
  NodeTaskTypes,
  nodeAbi,
  taskAbi,
  withSelectionGasMargin,
} from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { createChainWatcher, openNodeStore, type WatcherChanges } from "@crynux/node-core";
import { keccak256, toHex, zeroHash } from "viem";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

const anvil = useAnvil({ accounts: 6 });
let deployment: CrynuxDeployment;
let dir: string;
const STAKE = 400n * 10n ** 18n;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-node-watcher-"));
  deployment = await deployCrynux(anvil().walletClient(0), anvil().publicClient);
  for (const index of [1, 2, 3]) {
    const hash = await anvil()
      .walletClient(index)
      .writeContract({
        address: deployment.node,
        abi: nodeAbi,
        functionName: "join",
        args: ["gpu", 8n, "rt", NodeTaskTypes.GPT],
        value: STAKE,
      });
    await anvil().publicClient.waitForTransactionReceipt({ hash });
  }
}, 60_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function createTask(seed: string): Promise<bigint> {
  const { publicClient } = anvil();
  const creator = anvil().walletClient(4);
  const call = {
    account: creator.account,
    address: deployment.task,
    abi: taskAbi,
    functionName: "createTask",
    args: [1, keccak256(toHex(seed)), zeroHash, 0n, 8n],
    value: 10n ** 18n,
  } as const;
  const { request, result } = await publicClient.simulateContract(call);
  const gas = withSelectionGasMargin(await publicClient.estimateContractGas(call));
  await publicClient.waitForTransactionReceipt({ hash: await creator.writeContract({ ...request, gas }) });
  return result;
}

async function pollUntilUpToDate(watcher: { poll(): Promise<{ upToDate: boolean }> }) {
  for (let i = 0; i < 50; i++) if ((await watcher.poll()).upToDate) return;
  throw new Error("the watcher does not catch up");
}

async function commit(index: number, taskId: bigint, round: number) {
  const { publicClient } = anvil();
  const wallet = anvil().walletClient(index);
  const { request } = await publicClient.simulateContract({
    account: wallet.account,
    address: deployment.task,
    abi: taskAbi,
    functionName: "submitCommitment",
    args: [taskId, BigInt(round), keccak256(toHex(`commitment ${index}`))],
  });
  await publicClient.waitForTransactionReceipt({ hash: await wallet.writeContract(request) });
}

describe("chain watcher", () => {
  test("records this node's tasks and their events, and rolls back what reorged blocks brought", async () => {
    const { publicClient, testClient } = anvil();
    const me = anvil().accounts[1]!.address;
    const store = await openNodeStore(join(dir, "node-1"));
    const changes: WatcherChanges[] = [];
    // 0 confirmations, so that delivered blocks can be reorged away: what a reorg deeper than the
    // confirmation depth does.
    const watch = () =>
      createChainWatcher({
        client: publicClient,
        contracts: deployment,
        address: me,
        store,
        confirmations: 0,
        fromBlock: 0n,
        onChanges: (c) => changes.push(c),
      });
    const watcher = watch();
    await pollUntilUpToDate(watcher);
    expect(changes.flatMap((c) => c.nodeEvents.map((e) => e.event))).toEqual(["NodeJoined"]);

    // A task started in a block that is then reorged away is forgotten.
    const beforeTask = await testClient.snapshot();
    const phantom = await createTask("phantom");
    await pollUntilUpToDate(watcher);
    const phantomRecord = await store.getTask(phantom);
    expect(phantomRecord?.step).toBe("started");
    await testClient.revert({ id: beforeTask });
    await testClient.mine({ blocks: 3 });
    await pollUntilUpToDate(watcher);
    expect(await store.getTask(phantom)).toBeUndefined();
    expect(changes.flatMap((c) => c.removed)).toEqual([phantom]);

    // The same task id, started again in another block: a new record.
    const taskId = await createTask("real");
    expect(taskId).toBe(phantom);
    await pollUntilUpToDate(watcher);
    const record = await store.getTask(taskId);
    expect(record?.startedIn?.blockHash).not.toBe(phantomRecord?.startedIn?.blockHash);
    const task = await publicClient.readContract({
      address: deployment.task,
      abi: taskAbi,
      functionName: "getTask",
      args: [taskId],
    });
    const roundOf = (index: number) =>
      task[9].findIndex((a) => a.toLowerCase() === anvil().accounts[index]!.address.toLowerCase());
    expect(record?.round).toBe(roundOf(1));

    // An event of a recorded task in a reorged block is dropped; the task stays.
    await commit(1, taskId, roundOf(1));
    await commit(2, taskId, roundOf(2));
    const beforeReady = await testClient.snapshot();
    await commit(3, taskId, roundOf(3));
    await pollUntilUpToDate(watcher);
    expect((await store.getTask(taskId))?.events.map((e) => e.event)).toEqual(["TaskCommitmentsReady"]);
    await testClient.revert({ id: beforeReady });
    await testClient.mine({ blocks: 3 });
    await pollUntilUpToDate(watcher);
    expect((await store.getTask(taskId))?.events).toEqual([]);
    expect(await store.getTask(taskId)).toBeDefined();

    // A task finished on the state of a block that a reorg replaces is reopened at the step it was at (what
    // ended it may be gone); one finished on an older block stays done.
    const beforeFinish = await testClient.snapshot();
    const base = await publicClient.getBlockNumber();
    await testClient.mine({ blocks: 2 });
    await pollUntilUpToDate(watcher);
    await store.updateTask(taskId, (r) =>
      r
        ? {
            ...r,
            step: "done",
            outcome: "success",
            finishedIn: { blockNumber: (base + 2n).toString(), step: "disclosed" },
          }
        : undefined,
    );
    const older = { ...(await store.getTask(taskId))!, taskId: "99", startedIn: null };
    older.finishedIn = { blockNumber: base.toString(), step: "committed" };
    await store.updateTask(99n, () => older);
    await testClient.revert({ id: beforeFinish });
    await testClient.mine({ blocks: 3 });
    await pollUntilUpToDate(watcher);
    expect(changes.flatMap((c) => c.reopened)).toEqual([taskId]);
    const reopened = await store.getTask(taskId);
    expect([reopened?.step, reopened?.outcome, reopened?.finishedIn]).toEqual([
      "disclosed",
      undefined,
      undefined,
    ]);
    expect((await store.getTask(99n))?.step).toBe("done");
    await store.deleteTask(99n);

    // A restart continues from the stored cursor: nothing is delivered twice.
    const before = changes.length;
    await pollUntilUpToDate(watch());
    expect(changes.slice(before)).toEqual([]);
  });
});
