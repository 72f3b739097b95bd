import { join } from "node:path";
import {
  type CreateTaskReturnType,
  type CrynuxClient,
  createCrynuxClient,
  type GetTaskResultReturnType,
  TaskNotFoundError,
} from "@crynux/client";
import { NodeStatus, nodeAbi, TaskState, taskAbi } from "@crynux/contracts";
import { IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import { parseCnx } from "@crynux/pricing";
import { type GptTaskArgsInput, gptResultHash, TaskType, taskHash } from "@crynux/tasks";
import { type Address, decodeFunctionData, type Hex, http, isAddressEqual, type Transaction } from "viem";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { ACCOUNTS, type FaultNetwork, sleep, startFaultNetwork, VERBOSE } from "./fault-helpers.js";

// Chain reorganizations (anvil_reorg: the last `depth` blocks are replaced by empty ones, and their
// transactions are gone, not back in the pool) while tasks are in flight, against the relay's indexer and
// three nodes following the chain `confirmations` blocks behind the head. Afterwards the relay's index and
// the nodes' records must equal the chain, and every task still on the chain must reach a final state. An
// application whose task vanished re-submits it, as @crynux/client leaves that to the application:
// `waitForTask` / `getTask` throw `TaskNotFoundError` for a task id the chain does not know.
const AREA = "Fault injection: chain";
const FINAL = [TaskState.UPLOADED, TaskState.ERROR, TaskState.ABORTED] as number[];
const RELAY_STATES: Record<number, string> = {
  [TaskState.QUEUED]: "queued",
  [TaskState.RUNNING]: "started",
  [TaskState.SUCCESS]: "success",
  [TaskState.UPLOADED]: "uploaded",
  [TaskState.ERROR]: "error",
  [TaskState.ABORTED]: "aborted",
};

/** Where each depth strikes: the transaction that must have landed when the last blocks are replaced. */
const TRIGGERS = {
  1: "createTask",
  2: "submitCommitment",
  3: "reportResultsUploaded",
} as const satisfies Record<number, string>;
type Depth = keyof typeof TRIGGERS;

type AppRun = {
  /** Every createTask the app sent for these arguments (more than one when a task vanished). */
  created: CreateTaskReturnType[];
  result: GetTaskResultReturnType;
};

describe.each([1, 2])("reorgs with tasks in flight, confirmations %i", (confirmations) => {
  let network: FaultNetwork;
  let relay: RunningRelay;
  const apps = new Map<number, CrynuxClient>();

  beforeAll(async () => {
    network = await startFaultNetwork({ confirmations });
    // Blocks come from the miner only, so that a test can stop the chain right after a given transaction.
    await network.anvil.testClient.setAutomine(false);
    network.startMining();
    relay = await startRelay(
      {
        rpcUrl: network.anvil.rpcUrl,
        taskContract: network.contracts.task,
        fromBlock: Number(network.deploymentBlock),
        port: 0,
        confirmations,
        pollingIntervalMs: 100,
        dataDir: IN_MEMORY,
        blobDir: join(network.dir, "relay-blobs"),
      },
      { onIndexerError: VERBOSE ? (error) => console.error("relay indexer:", error) : () => {} },
    );
    await network.startNodes(relay.url);
  }, 300_000);

  afterAll(async () => {
    await relay?.stop();
    await network?.stop();
  }, 120_000);

  function app(account: number): CrynuxClient {
    let client = apps.get(account);
    if (!client) {
      client = createCrynuxClient({
        chain: network.anvil.chain,
        transport: http(network.anvil.rpcUrl),
        account: network.anvil.walletClient(account).account,
        relayUrl: relay.url,
        contracts: network.contracts,
        pollingInterval: 200,
        relay: { pollIntervalMs: 200 },
      });
      apps.set(account, client);
    }
    return client;
  }

  /** The app's task is still the one it paid for: its createTask is on the chain. */
  async function stillThere(created: CreateTaskReturnType): Promise<boolean> {
    try {
      const receipt = await network.anvil.publicClient.getTransactionReceipt({ hash: created.txHash });
      return receipt.status === "success";
    } catch {
      return false;
    }
  }

  /**
   * What an application does about reorgs: runs the task, and while it waits checks that its createTask is
   * still on the chain; if it vanished (with the task id maybe taken by another task since), it pays again.
   */
  async function runResubmitting(account: number, args: GptTaskArgsInput): Promise<AppRun> {
    const client = app(account);
    const created: CreateTaskReturnType[] = [];
    for (let attempt = 1; attempt <= 4; attempt++) {
      const task = await client.createTask({ taskType: TaskType.GPT, args, fee: parseCnx("0.05") });
      created.push(task);
      const controller = new AbortController();
      const watchdog = setInterval(() => {
        stillThere(task).then(
          (there) => {
            if (!there) controller.abort(new Error(`the createTask of task ${task.taskId} vanished`));
          },
          () => {},
        );
      }, 500);
      try {
        const signal = controller.signal;
        await client.uploadTaskArgs({ taskId: task.taskId, args, waitForTaskMs: 120_000, signal });
        const final = await client.waitForTask({
          taskId: task.taskId,
          fromBlock: task.blockNumber,
          timeoutMs: 200_000,
          signal,
        });
        if (!(await stillThere(task))) continue;
        expect(final.outcome).toBe("success");
        const result = await client.getTaskResult({ taskId: task.taskId, waitMs: 120_000, signal });
        if (!(await stillThere(task))) continue;
        return { created, result };
      } catch (error) {
        const there = await stillThere(task);
        // What the client documents: a task id the chain does not know is a TaskNotFoundError.
        if (error instanceof TaskNotFoundError) expect(there).toBe(false);
        if (!there) continue;
        throw error;
      } finally {
        clearInterval(watchdog);
      }
    }
    throw new Error(`the task of account ${account} vanished ${created.length} times`);
  }

  /**
   * Lets the miner run until a block holds a Task transaction calling `functionName`, then replaces the last
   * `depth` blocks with empty ones. Automine is off, so the miner makes every block and stops right after
   * the trigger's: the trigger is always in the head block. Returns the transactions that were dropped.
   */
  async function reorgOn(depth: Depth, fromBlock: bigint): Promise<{ dropped: Transaction[]; trigger: Hex }> {
    const { publicClient, testClient } = network.anvil;
    const task = network.contracts.task;
    const functionName = TRIGGERS[depth];
    let next = fromBlock;
    let trigger: Hex | undefined;
    const landed = async () => {
      const head = await publicClient.getBlockNumber({ cacheTime: 0 });
      for (; next <= head && !trigger; next++) {
        const block = await publicClient.getBlock({ blockNumber: next, includeTransactions: true });
        trigger = block.transactions.find(
          (tx) => tx.to !== null && isAddressEqual(tx.to, task) && calls(tx, functionName),
        )?.hash;
      }
      return trigger !== undefined;
    };
    await network.stopMining();
    network.startMining({ afterMine: landed });
    try {
      const stopped = await Promise.race([
        network.minerStopped().then(() => true),
        sleep(200_000).then(() => false),
      ]);
      if (!stopped || !trigger) throw new Error(`no ${functionName} within 200 s`);
      // The chain stands still (no miner, no automine) while the senders see their receipts: the reorg then
      // drops transactions they believe mined. (anvil does not put them back in the pool, as a real node
      // would; a transaction dropped before its receipt was seen would only make its sender time out.)
      await sleep(1500);
      const head = await publicClient.getBlockNumber({ cacheTime: 0 });
      const dropped: Transaction[] = [];
      for (let n = head - BigInt(depth) + 1n; n <= head; n++)
        dropped.push(
          ...(await publicClient.getBlock({ blockNumber: n, includeTransactions: true })).transactions,
        );
      await testClient.request({ method: "anvil_reorg", params: [depth, []] } as never);
      return { dropped, trigger: trigger! };
    } finally {
      await network.stopMining();
      network.startMining();
    }
  }

  async function chainTask(taskId: bigint) {
    const [creator, taskType, state, hash, , , , , , nodes, resultRound] =
      await network.anvil.publicClient.readContract({
        address: network.contracts.task,
        abi: taskAbi,
        functionName: "getTask",
        args: [taskId],
      });
    return { creator, taskType, state, taskHash: hash, nodes, resultRound };
  }

  async function totalTasks(): Promise<bigint> {
    return network.anvil.publicClient.readContract({
      address: network.contracts.task,
      abi: taskAbi,
      functionName: "totalTasks",
    });
  }

  /** The relay's index and every node's records equal the chain (once they caught up with it). */
  async function expectConverged() {
    const { publicClient } = network.anvil;
    // Every task on the chain is final, and the nodes are free again.
    const total = await totalTasks();
    await vi.waitFor(
      async () => {
        for (let id = 1n; id <= total; id++) {
          const state = (await chainTask(id)).state;
          if (!FINAL.includes(state)) throw new Error(`task ${id} is in state ${state}`);
        }
      },
      { timeout: 200_000, interval: 500 },
    );
    const head = await publicClient.getBlockNumber({ cacheTime: 0 });
    await vi.waitFor(
      () => {
        const behind = [relay.indexer.indexedBlock, ...network.nodes.map((node) => node.indexedBlock)].some(
          (indexed) => (indexed ?? 0n) < head,
        );
        if (behind) throw new Error("the relay or a node is behind the chain");
      },
      { timeout: 60_000, interval: 100 },
    );
    expect(await totalTasks()).toBe(total);

    for (let id = 1n; id <= total; id++) {
      const onChain = await chainTask(id);
      const indexed = await relay.store.getTask(id);
      expect(indexed, `task ${id} in the relay`).not.toBeNull();
      const success = onChain.state === TaskState.UPLOADED || onChain.state === TaskState.SUCCESS;
      const result = success
        ? await publicClient.readContract({
            address: network.contracts.task,
            abi: taskAbi,
            functionName: "getTaskResult",
            args: [id],
          })
        : null;
      expect({
        state: indexed!.state,
        creator: indexed!.creator,
        taskHash: indexed!.taskHash.toLowerCase(),
        nodes: indexed!.nodes,
        resultNode: indexed!.resultNode,
        result: indexed!.result?.toLowerCase() ?? null,
      }).toEqual({
        state: RELAY_STATES[onChain.state],
        creator: onChain.creator,
        taskHash: onChain.taskHash.toLowerCase(),
        nodes: [...onChain.nodes],
        resultNode: success ? onChain.nodes[onChain.resultRound]! : null,
        result: result?.toLowerCase() ?? null,
      });
    }
    // Nothing indexed past the chain's last task (a task whose creation was reorged away is forgotten).
    for (let id = total + 1n; id <= total + 3n; id++) expect(await relay.store.getTask(id)).toBeNull();

    for (const node of network.nodes) {
      for (const record of await node.store!.listTasks()) {
        const id = BigInt(record.taskId);
        expect(id, `node ${node.address} remembers task ${id}`).toBeLessThanOrEqual(total);
        const onChain = await chainTask(id);
        expect(onChain.nodes[record.round], `node ${node.address}, task ${id}`).toBe(node.address);
        expect(record.taskHash.toLowerCase()).toBe(onChain.taskHash.toLowerCase());
        expect(record.step).toBe("done");
        if (onChain.state === TaskState.UPLOADED) expect(record.outcome).toBe("success");
      }
      const [status, current] = await Promise.all([
        publicClient.readContract({
          address: network.contracts.node,
          abi: nodeAbi,
          functionName: "getNodeStatus",
          args: [node.address],
        }),
        publicClient.readContract({
          address: network.contracts.node,
          abi: nodeAbi,
          functionName: "getNodeTask",
          args: [node.address],
        }),
      ]);
      expect({ node: node.address, status, current }).toEqual({
        node: node.address,
        status: NodeStatus.AVAILABLE,
        current: 0n,
      });
    }
  }

  test.for<Depth>([1, 2, 3])(
    "depth %i: the relay and the nodes converge to the chain; every task reaches a final state",
    { timeout: 300_000 },
    async (depth, context) => {
      const { publicClient } = network.anvil;
      const fromBlock = (await publicClient.getBlockNumber({ cacheTime: 0 })) + 1n;
      const reorg = reorgOn(depth, fromBlock);
      reorg.catch(() => {});
      // Two apps at once: one task runs, the other waits in the queue for the nodes.
      const tag = `c${confirmations} d${depth}`;
      const argsA = gptArgs(network, `A story about reorgs (${tag}).`, 10 * confirmations + depth);
      const argsB = gptArgs(
        network,
        `Another story about reorgs (${tag}).`,
        100 + 10 * confirmations + depth,
      );
      const runA = runResubmitting(ACCOUNTS.app, argsA);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const runB = runResubmitting(ACCOUNTS.spare[0], argsB);
      const [{ dropped, trigger }, a, b] = await Promise.all([reorg, runA, runB]);

      expect(dropped.map((tx) => tx.hash)).toContain(trigger);
      const droppedHashes = new Set(dropped.map((tx) => tx.hash));
      const droppedCreates = dropped.filter((tx) => calls(tx, "createTask")).map((tx) => tx.hash);
      // Each createTask that was dropped was paid again, and only those.
      expect(
        new Set(
          [...a.created, ...b.created]
            .slice(0)
            .filter((c) => droppedHashes.has(c.txHash))
            .map((c) => c.txHash),
        ),
      ).toEqual(new Set(droppedCreates));
      for (const [run, args, account] of [
        [a, argsA, ACCOUNTS.app],
        [b, argsB, ACCOUNTS.spare[0]],
      ] as const) {
        const last = run.created.at(-1)!;
        const onChain = await chainTask(last.taskId);
        expect(onChain.creator).toBe(network.anvil.accounts[account]!.address as Address);
        expect(onChain.taskHash).toBe(taskHash(args));
        expect(run.result.taskId).toBe(last.taskId);
        if (run.result.taskType !== TaskType.GPT) throw new Error("not a GPT result");
        expect(gptResultHash(run.result.response)).toBe(run.result.result);
        for (const earlier of run.created.slice(0, -1)) expect(droppedHashes).toContain(earlier.txHash);
        expect(droppedHashes).not.toContain(last.txHash);
        // The relay serves the arguments of the surviving task, hashed as on-chain.
        const served = await app(account).relay.getTaskArgs(last.taskId);
        expect(served.taskHash.toLowerCase()).toBe(onChain.taskHash.toLowerCase());
      }
      if (TRIGGERS[depth] === "createTask") expect(a.created.length + b.created.length).toBeGreaterThan(2);

      await expectConverged();
      recordTrial(context, {
        area: AREA,
        fault: `anvil_reorg of depth ${depth} (right after a ${TRIGGERS[depth]} landed) with 2 tasks in flight; relay and nodes at ${confirmations} confirmation${confirmations > 1 ? "s" : ""}`,
        runs: 1,
        expected:
          "the dropped transactions are re-sent (an app whose task vanished pays again); every task on the chain ends final, the relay's index and the nodes' records equal the chain, no phantom task",
      });
    },
  );
});

function calls(tx: Transaction, functionName: string): boolean {
  try {
    return decodeFunctionData({ abi: taskAbi, data: tx.input }).functionName === functionName;
  } catch {
    return false;
  }
}

function gptArgs(network: FaultNetwork, content: string, seed: number): GptTaskArgsInput {
  return {
    model: network.model.ref,
    messages: [{ role: "user", content }],
    generation_config: { max_new_tokens: 8 },
    seed,
  };
}
