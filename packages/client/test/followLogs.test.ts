import { once } from "node:events";
import net, { type Socket } from "node:net";
import { type CrynuxDeployment, deployCrynux, NodeTaskTypes, nodeAbi, taskAbi } from "@crynux/contracts";
import { type AnvilInstance, startAnvil } from "@crynux/contracts/testing";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import {
  type Address,
  createPublicClient,
  custom,
  encodeFunctionData,
  type Hex,
  http,
  keccak256,
  type PublicClient,
  toHex,
} from "viem";
import { beforeAll, beforeEach, describe, expect, test, vi } from "vitest";
import {
  ChainFollowerError,
  createHeadWatcher,
  type FollowedBatch,
  type FollowedLog,
  type FollowedReorg,
  type FollowerCursor,
  type FollowLogsParameters,
  followerCursorToJson,
  followLogs,
  HeadWatcherError,
  type LogFollower,
  parseFollowerCursor,
} from "../src/chain/index.js";
import { ClientError } from "../src/errors.js";

const abi = [...nodeAbi, ...taskAbi] as const;
type Abi = typeof abi;
type Log = FollowedLog<Abi>;

const CNX = 10n ** 18n;
const STAKE = 400n * CNX;
const GPT = 1;
const ZERO32: Hex = `0x${"00".repeat(32)}`;

const anvil = useAnvil({ accounts: 20 });
let addr: CrynuxDeployment;
let deployedAt: bigint;
let snapshot: Hex;

beforeAll(async () => {
  addr = await deployCrynux(anvil().walletClient(0), anvil().publicClient);
  deployedAt = await anvil().publicClient.getBlockNumber();
  snapshot = await anvil().testClient.snapshot();
}, 60_000);

beforeEach(async () => {
  await anvil().testClient.revert({ id: snapshot });
  snapshot = await anvil().testClient.snapshot();
});

// ---------------------------------------------------------------- chain activity

async function confirm(hash: Hex): Promise<bigint> {
  const receipt = await anvil().publicClient.waitForTransactionReceipt({ hash });
  if (receipt.status !== "success") throw new Error(`transaction ${hash} reverted`);
  return receipt.blockNumber;
}

const join = (i: number, gpu = "NVIDIA GeForce RTX 4090") =>
  anvil()
    .walletClient(i)
    .writeContract({
      address: addr.node,
      abi: nodeAbi,
      functionName: "join",
      args: [gpu, 24n, "rt", NodeTaskTypes.ALL],
      value: STAKE,
      gas: 10_000_000n,
    })
    .then(confirm);

const nodeAction = (i: number, functionName: "pause" | "resume" | "quit") =>
  anvil()
    .walletClient(i)
    .writeContract({ address: addr.node, abi: nodeAbi, functionName, gas: 10_000_000n })
    .then(confirm);

let taskCounter = 0;
const createTask = (creator: number) =>
  anvil()
    .walletClient(creator)
    .writeContract({
      address: addr.task,
      abi: taskAbi,
      functionName: "createTask",
      args: [GPT, keccak256(toHex(`task ${taskCounter++}`)), ZERO32, 0n, 1n],
      value: 50n * CNX,
      gas: 10_000_000n,
    })
    .then(confirm);

const mine = (blocks: number) => anvil().testClient.mine({ blocks });
const head = () => anvil().publicClient.getBlockNumber({ cacheTime: 0 });

// ---------------------------------------------------------------- an in-memory consumer

type Consumer = ReturnType<typeof memoryConsumer>;

/** Applies logs and persists the cursor "atomically" (one synchronous assignment), as a database would. */
function memoryConsumer(initial: { cursor?: FollowerCursor | null; logs?: Log[] } = {}) {
  const consumer = {
    cursor: initial.cursor ?? null,
    logs: [...(initial.logs ?? [])],
    batches: [] as FollowedBatch<Abi>[],
    reorgs: [] as FollowedReorg[],
    errors: [] as unknown[],
    loadCursor: async () => consumer.cursor,
    onLogs: async (batch: FollowedBatch<Abi>) => {
      consumer.logs = [...consumer.logs, ...batch.logs];
      consumer.cursor = batch.cursor;
      consumer.batches.push(batch);
    },
    onReorg: async (event: FollowedReorg) => {
      consumer.logs = consumer.logs.filter((log) => log.blockNumber < event.fromBlock);
      consumer.cursor = event.cursor;
      consumer.reorgs.push(event);
    },
    onError: (error: unknown) => {
      consumer.errors.push(error);
    },
  };
  return consumer;
}

/** What an indexer derives from the logs: node statuses and the tasks seen. */
function derive(logs: Log[]) {
  const nodes = new Map<Address, number>();
  const tasks = new Map<bigint, string>();
  for (const log of logs) {
    switch (log.eventName) {
      case "NodeJoined":
        nodes.set(log.args.node, 1);
        break;
      case "NodeStatusChanged":
        nodes.set(log.args.node, log.args.status);
        break;
      case "NodeQuit":
        nodes.delete(log.args.node);
        break;
      case "TaskQueued":
        tasks.set(log.args.taskId, "queued");
        break;
      case "TaskStarted":
        tasks.set(log.args.taskId, "started");
        break;
    }
  }
  return { nodes, tasks };
}

const ids = (logs: Log[]) => logs.map((l) => `${l.blockNumber}/${l.logIndex}/${l.eventName}/${l.blockHash}`);

function follower(consumer: Consumer, overrides: Partial<FollowLogsParameters<Abi>> = {}): LogFollower {
  return followLogs({
    client: anvil().publicClient,
    address: [addr.node, addr.task],
    abi,
    fromBlock: deployedAt + 1n,
    confirmations: 0,
    batchSize: 3n,
    pollingIntervalMs: 10,
    loadCursor: consumer.loadCursor,
    onLogs: consumer.onLogs,
    onReorg: consumer.onReorg,
    onError: consumer.onError,
    ...overrides,
  });
}

/** Polls until up to date; returns how many polls it took. */
async function drain(f: LogFollower): Promise<number> {
  for (let polls = 1; polls <= 500; polls++) {
    if ((await f.poll()).upToDate) return polls;
  }
  throw new Error("the follower did not catch up in 500 polls");
}

/** The logs of the Crynux contracts in [fromBlock, toBlock] on the current chain, read in one request. */
async function chainLogs(fromBlock = deployedAt + 1n, toBlock?: bigint): Promise<Log[]> {
  const logs = await anvil().publicClient.getLogs({
    address: [addr.node, addr.task],
    events: abi.filter((x) => x.type === "event"),
    fromBlock,
    toBlock: toBlock ?? (await head()),
    strict: true,
  });
  return logs.map(
    (l) =>
      ({
        eventName: l.eventName,
        args: l.args,
        address: l.address,
        blockNumber: l.blockNumber,
        blockHash: l.blockHash,
        logIndex: l.logIndex,
        transactionHash: l.transactionHash,
      }) as Log,
  );
}

/** Follows the current chain from scratch with a fresh consumer. */
async function freshFollow(): Promise<Consumer> {
  const fresh = memoryConsumer();
  await drain(follower(fresh, { batchSize: 1000n }));
  return fresh;
}

// ---------------------------------------------------------------- tests

describe("delivery", () => {
  test("delivers every log in order exactly once across many small batches", async () => {
    await createTask(10);
    for (const i of [1, 2, 3]) await join(i);
    await mine(4);
    await nodeAction(1, "pause");
    const consumer = memoryConsumer();
    const f = follower(consumer, { maxCheckpoints: 5 });
    expect(f.indexedBlock).toBeNull();
    const polls = await drain(f);
    expect(polls).toBeGreaterThanOrEqual(3);

    // more activity after catching up, with empty blocks in between
    await join(4, "NVIDIA GeForce RTX 3090");
    await mine(5);
    await createTask(11);
    await nodeAction(4, "quit");
    await drain(f);

    const expected = await chainLogs();
    expect(expected.length).toBeGreaterThan(8);
    expect(ids(consumer.logs)).toEqual(ids(expected));
    expect(consumer.logs).toEqual(expected);

    // contiguous batches of at most batchSize blocks, each holding exactly its logs
    let next = deployedAt + 1n;
    for (const batch of consumer.batches) {
      expect(batch.fromBlock).toBe(next);
      expect(batch.toBlock - batch.fromBlock + 1n).toBeLessThanOrEqual(3n);
      expect(batch.logs).toEqual(
        expected.filter((l) => l.blockNumber >= batch.fromBlock && l.blockNumber <= batch.toBlock),
      );
      expect(batch.cursor.checkpoints.at(-1)!.number).toBe(batch.toBlock);
      expect(batch.cursor.checkpoints.length).toBeLessThanOrEqual(5);
      next = batch.toBlock + 1n;
    }
    const tip = await head();
    expect(next).toBe(tip + 1n);
    expect(f.indexedBlock).toBe(tip);
    const [last] = consumer.cursor!.checkpoints.slice(-1);
    expect(last!.hash).toBe((await anvil().publicClient.getBlock({ blockNumber: tip })).hash);

    // typed, decoded arguments narrowed by event name
    const joined = consumer.logs.find((l) => l.eventName === "NodeJoined");
    expect(joined?.eventName === "NodeJoined" && joined.args.gpuName).toBe("NVIDIA GeForce RTX 4090");
    const state = derive(consumer.logs);
    expect(state.nodes.get(anvil().accounts[1]!.address)).toBe(3); // busy with the task, then PENDING_PAUSE
    expect(state.nodes.has(anvil().accounts[4]!.address)).toBe(false);
    expect([...state.tasks.values()]).toEqual(["started", "queued"]);
  });

  test("start() catches up without waiting and follows new blocks until stop()", async () => {
    for (const i of [1, 2, 3, 4]) await join(i);
    await mine(20);
    const consumer = memoryConsumer();
    // a long interval: catching up must not wait for it, only the polls once up to date do
    const f = follower(consumer, { batchSize: 2n, pollingIntervalMs: 50 });
    f.start();
    f.start(); // idempotent
    const tip = await head();
    await vi.waitFor(() => expect(f.indexedBlock).toBe(tip), { timeout: 20_000, interval: 20 });
    await nodeAction(2, "pause");
    await createTask(10);
    const tip2 = await head();
    await vi.waitFor(() => expect(f.indexedBlock).toBe(tip2), { timeout: 20_000, interval: 20 });
    await f.stop();
    await f.stop(); // stopping twice is harmless
    expect(consumer.errors).toEqual([]);
    expect(consumer.logs).toEqual(await chainLogs());
  });

  test("with a head watcher, a new block is delivered at once, not at the next poll", async () => {
    await join(1);
    const consumer = memoryConsumer();
    const heads = createHeadWatcher({
      url: anvil().rpcUrl.replace(/^http/, "ws"),
      onError: consumer.onError,
    });
    const f = follower(consumer, { heads, pollingIntervalMs: 600_000 });
    const seen: number[] = [];
    const unsubscribe = heads.subscribe(() => seen.push(Date.now()));
    try {
      f.start();
      const tip = await head();
      await vi.waitFor(() => expect(f.indexedBlock).toBe(tip), { timeout: 10_000, interval: 20 });
      // the subscription is live once a head came through it (it is set up in the background)
      await vi.waitFor(
        async () => {
          await mine(1);
          expect(seen.length).toBeGreaterThan(0);
        },
        { timeout: 10_000, interval: 50 },
      );
      await nodeAction(1, "pause");
      const tip2 = await head();
      await vi.waitFor(() => expect(f.indexedBlock).toBe(tip2), { timeout: 10_000, interval: 20 });
      expect(consumer.logs).toEqual(await chainLogs());
    } finally {
      unsubscribe();
      await f.stop();
      heads.close();
    }
    expect(consumer.errors).toEqual([]);
    expect(() => createHeadWatcher({ url: anvil().rpcUrl })).toThrow(HeadWatcherError);
  });

  test("stop() waits for the onLogs in flight", async () => {
    await join(1);
    const consumer = memoryConsumer();
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered = 0;
    const f = follower(consumer, {
      batchSize: 1000n,
      onLogs: async (batch) => {
        entered++;
        await released;
        await consumer.onLogs(batch);
      },
    });
    f.start();
    await vi.waitFor(() => expect(entered).toBe(1), { timeout: 10_000, interval: 10 });
    let stopped = false;
    const stopping = f.stop().then(() => {
      stopped = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(stopped).toBe(false);
    release();
    await stopping;
    expect(consumer.batches).toHaveLength(1);
    expect(f.indexedBlock).toBe(await head());
    await mine(3);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(entered).toBe(1); // the loop is gone
  });

  test("a failing onLogs is retried with the same batch; nothing is skipped or doubled", async () => {
    for (const i of [1, 2, 3]) await join(i);
    await nodeAction(2, "pause");
    const consumer = memoryConsumer();
    let calls = 0;
    const f = follower(consumer, {
      batchSize: 2n,
      onLogs: async (batch) => {
        calls++;
        if (calls === 2) throw new Error("database is busy");
        await consumer.onLogs(batch);
      },
    });
    await f.poll();
    const indexed = f.indexedBlock;
    const failed = await f.poll().catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(ChainFollowerError);
    expect(failed).toBeInstanceOf(ClientError);
    expect((failed as ChainFollowerError).cause).toEqual(new Error("database is busy"));
    expect(f.indexedBlock).toBe(indexed);
    await drain(f);
    expect(consumer.logs).toEqual(await chainLogs());
    expect(consumer.batches[1]!.fromBlock).toBe(indexed! + 1n);
  });

  test("only logs of the ABI's events and of the followed addresses are delivered", async () => {
    await createTask(10);
    await join(1);
    const consumer = memoryConsumer();
    const f = followLogs({
      client: anvil().publicClient,
      address: addr.node,
      // an ABI that knows one event only: the others are skipped, not thrown
      abi: nodeAbi.filter((x) => x.type === "event" && x.name === "NodeJoined"),
      fromBlock: deployedAt + 1n,
      confirmations: 0,
      loadCursor: async () => null,
      onLogs: async (batch) => {
        consumer.logs.push(...(batch.logs as Log[]));
      },
      onReorg: async () => {},
    });
    await drain(f);
    expect(consumer.logs.map((l) => l.eventName)).toEqual(["NodeJoined"]);
    expect(consumer.logs[0]!.address.toLowerCase()).toBe(addr.node.toLowerCase());
  });
});

describe("confirmations", () => {
  test("block b is delivered only once head - b >= confirmations", async () => {
    await join(1);
    await mine(5);
    const consumer = memoryConsumer();
    const heads: bigint[] = [];
    const f = follower(consumer, {
      confirmations: 3,
      onLogs: async (batch) => {
        // the chain only grows in this test, so the head now is at least the head the follower saw
        const now = await head();
        heads.push(now);
        expect(now - batch.toBlock).toBeGreaterThanOrEqual(3n);
        await consumer.onLogs(batch);
      },
    });
    await drain(f);
    const joinedAt = await join(2);
    for (let k = 0; k < 3; k++) {
      await drain(f);
      expect(f.indexedBlock).toBe((await head()) - 3n);
      expect(consumer.logs.filter((l) => l.blockNumber === joinedAt)).toEqual([]);
      await mine(1);
    }
    // now head - joinedAt = 3
    const result = await f.poll();
    expect(result.delivered?.toBlock).toBe(joinedAt);
    expect(result.upToDate).toBe(true);
    expect(consumer.logs.filter((l) => l.blockNumber === joinedAt).map((l) => l.eventName)).toContain(
      "NodeJoined",
    );
    expect((await f.poll()).delivered).toBeUndefined();
    expect(consumer.logs).toEqual(await chainLogs(deployedAt + 1n, (await head()) - 3n));
    expect(heads.length).toBeGreaterThan(0);
  });
});

describe("restart", () => {
  test("a new follower with the persisted cursor continues without re-delivering or skipping", async () => {
    for (const i of [1, 2, 3, 4, 5]) await join(i);
    await nodeAction(3, "pause");
    await createTask(10);
    // the "database": logs and the cursor, stored as JSON
    const first = memoryConsumer();
    const a = follower(first, { batchSize: 2n });
    for (let k = 0; k < 3; k++) await a.poll();
    const stored = JSON.stringify(followerCursorToJson(first.cursor!));
    const storedLogs = [...first.logs];
    const stoppedAt = a.indexedBlock!;
    expect(stoppedAt).toBeLessThan(await head());

    await nodeAction(3, "resume");
    const second = memoryConsumer({ logs: storedLogs });
    const b = follower(second, {
      batchSize: 2n,
      loadCursor: async () => parseFollowerCursor(JSON.parse(stored)),
    });
    expect(b.indexedBlock).toBeNull();
    await drain(b);
    expect(second.batches[0]!.fromBlock).toBe(stoppedAt + 1n);
    expect(ids(second.logs)).toEqual(ids(await chainLogs()));
    expect(derive(second.logs)).toEqual(derive((await freshFollow()).logs));
  });

  test("an invalid stored cursor is refused", async () => {
    const consumer = memoryConsumer({
      cursor: {
        checkpoints: [
          { number: 5n, hash: keccak256("0x05") },
          { number: 4n, hash: keccak256("0x04") },
        ],
      },
    });
    const error = await follower(consumer)
      .poll()
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChainFollowerError);
    expect((error as ChainFollowerError).details).toMatch(/ascending/);
    expect(() => parseFollowerCursor({ checkpoints: [{ number: "x", hash: "0x00" }] })).toThrow(
      ChainFollowerError,
    );
    const cursor = { checkpoints: [{ number: 7n, hash: keccak256("0x07") }] };
    expect(parseFollowerCursor(JSON.parse(JSON.stringify(followerCursorToJson(cursor))))).toEqual(cursor);
    const shouted = {
      checkpoints: [{ number: "7", hash: `0x${cursor.checkpoints[0]!.hash.slice(2).toUpperCase()}` }],
    };
    expect(parseFollowerCursor(shouted)).toEqual(cursor);
  });

  test("invalid parameters are refused", () => {
    const consumer = memoryConsumer();
    expect(() => follower(consumer, { batchSize: 0n })).toThrow(ChainFollowerError);
    expect(() => follower(consumer, { confirmations: -1 })).toThrow(ChainFollowerError);
    expect(() => follower(consumer, { maxCheckpoints: 0 })).toThrow(ChainFollowerError);
    expect(() =>
      followLogs({
        client: anvil().publicClient,
        address: addr.node,
        abi: nodeAbi.filter((x) => x.type === "function"),
        fromBlock: 0n,
        confirmations: 0,
        loadCursor: async () => null,
        onLogs: async () => {},
        onReorg: async () => {},
      }),
    ).toThrow(/no \(non-anonymous\) event/);
  });
});

describe("reorgs", () => {
  test("snapshot/revert to a different chain of greater height: rollback, re-delivery, same state as a fresh follower", async () => {
    await join(1);
    await join(2);
    const consumer = memoryConsumer();
    const f = follower(consumer, { batchSize: 1n });
    await drain(f);
    const forkPoint = await head();
    const fork = await anvil().testClient.snapshot();

    // the branch that will be abandoned
    await join(3);
    await nodeAction(1, "pause");
    await createTask(10);
    await drain(f);
    const abandoned = derive(consumer.logs);
    const oldHead = await head();

    await anvil().testClient.revert({ id: fork });
    await join(4, "NVIDIA GeForce RTX 3090");
    await nodeAction(2, "quit");
    await mine(2);
    expect(await head()).toBeGreaterThan(oldHead);

    const result = await f.poll();
    expect(result.reorg).toEqual({ fromBlock: forkPoint + 1n });
    expect(consumer.reorgs).toHaveLength(1);
    expect(consumer.reorgs[0]!.fromBlock).toBe(forkPoint + 1n);
    expect(consumer.reorgs[0]!.cursor.checkpoints.at(-1)!.number).toBe(forkPoint);
    await drain(f);

    const fresh = await freshFollow();
    expect(ids(consumer.logs)).toEqual(ids(fresh.logs));
    expect(derive(consumer.logs)).toEqual(derive(fresh.logs));
    expect(derive(consumer.logs)).not.toEqual(abandoned);
    expect(derive(consumer.logs).nodes.has(anvil().accounts[4]!.address)).toBe(true);
    expect(derive(consumer.logs).nodes.has(anvil().accounts[3]!.address)).toBe(false);
  });

  test("a chain that became shorter than the last delivered block is rolled back too", async () => {
    await join(1);
    const consumer = memoryConsumer();
    const f = follower(consumer, { batchSize: 1n });
    await drain(f);
    const forkPoint = await head();
    const fork = await anvil().testClient.snapshot();
    await join(2);
    await join(3);
    await drain(f);

    await anvil().testClient.revert({ id: fork });
    const result = await f.poll();
    expect(result).toEqual({ reorg: { fromBlock: forkPoint + 1n }, upToDate: true });
    expect(f.indexedBlock).toBe(forkPoint);

    await nodeAction(1, "pause");
    await drain(f);
    const fresh = await freshFollow();
    expect(consumer.logs).toEqual(fresh.logs);
    expect(consumer.reorgs).toHaveLength(1);
  });

  test("anvil_reorg of the last blocks at the same height", async () => {
    for (const i of [1, 2, 3]) await join(i);
    await nodeAction(1, "pause");
    await nodeAction(2, "pause");
    const consumer = memoryConsumer();
    const f = follower(consumer, { batchSize: 1n, confirmations: 1 });
    await drain(f);
    const tip = await head();
    expect(f.indexedBlock).toBe(tip - 1n);

    // replace the last 3 blocks (two pauses and a join) with 3 blocks holding another join
    const wallet = anvil().walletClient(7);
    const request = await wallet.prepareTransactionRequest({
      to: addr.node,
      data: encodeFunctionData({
        abi: nodeAbi,
        functionName: "join",
        args: ["other GPU", 16n, "rt", NodeTaskTypes.ALL],
      }),
      value: STAKE,
      gas: 10_000_000n,
    });
    const raw = await wallet.signTransaction(request);
    await anvil().testClient.request({
      method: "anvil_reorg",
      params: [3, [[raw, 1]]],
    } as never);
    expect(await head()).toBe(tip);

    const result = await f.poll();
    expect(result.reorg).toEqual({ fromBlock: tip - 2n });
    await drain(f);
    const fresh = memoryConsumer();
    await drain(follower(fresh, { confirmations: 1 }));
    expect(consumer.logs).toEqual(fresh.logs);
    const state = derive(consumer.logs).nodes;
    expect(state.has(anvil().accounts[7]!.address)).toBe(true);
    expect(state.get(anvil().accounts[1]!.address)).toBe(1); // its pause was reorged away
  });

  test("an idle poll is one call; a reorg at the same height after idle polls is still seen", async () => {
    await join(1);
    await join(2);
    const calls: string[] = [];
    const client = createPublicClient({
      transport: custom({
        async request({ method, params }) {
          calls.push(method);
          return anvil().publicClient.request({ method, params } as never);
        },
      }),
    });
    const consumer = memoryConsumer();
    const f = follower(consumer, { client: client as PublicClient });
    await drain(f);
    calls.length = 0;
    for (let i = 0; i < 5; i++) expect(await f.poll()).toEqual({ upToDate: true });
    expect(calls).toEqual(Array(5).fill("eth_getBlockByNumber"));

    const tip = await head();
    await anvil().testClient.request({ method: "anvil_reorg", params: [1, []] } as never);
    expect(await head()).toBe(tip);
    expect((await f.poll()).reorg).toEqual({ fromBlock: tip });
    await drain(f);
    expect(consumer.logs).toEqual((await freshFollow()).logs);
    expect(derive(consumer.logs).nodes.has(anvil().accounts[2]!.address)).toBe(false);
  });

  test("a reorg while a batch is being read is not half-applied", async () => {
    await join(1);
    const consumer = memoryConsumer();
    let revertAfterGetLogs: Hex | undefined;
    // A real reorg (revert + a longer, different branch) right after the node answered eth_getLogs.
    const client = createPublicClient({
      transport: custom({
        async request({ method, params }) {
          const answer = await anvil().publicClient.request({ method, params } as never);
          if (method === "eth_getLogs" && revertAfterGetLogs) {
            const id = revertAfterGetLogs;
            revertAfterGetLogs = undefined;
            await anvil().testClient.revert({ id });
            await join(5, "NVIDIA GeForce RTX 3090");
            await mine(4);
          }
          return answer;
        },
      }),
    });
    const f = follower(consumer, { client: client as PublicClient, batchSize: 1000n });
    await drain(f);
    const forkPoint = await head();
    const fork = await anvil().testClient.snapshot();
    await join(2);
    await join(3);
    await nodeAction(1, "pause");
    const abandoned = await chainLogs(forkPoint + 1n);
    expect(abandoned.length).toBeGreaterThanOrEqual(3);

    revertAfterGetLogs = fork;
    const result = await f.poll();
    expect(revertAfterGetLogs).toBeUndefined(); // the reorg happened inside this poll
    expect(result.delivered).toBeUndefined();
    expect(f.indexedBlock).toBe(forkPoint);
    await drain(f);

    expect(consumer.reorgs).toEqual([]);
    const delivered = consumer.batches.flatMap((b) => b.logs.map((l) => l.transactionHash));
    for (const log of abandoned) expect(delivered).not.toContain(log.transactionHash);
    expect(consumer.logs).toEqual((await freshFollow()).logs);
    expect(derive(consumer.logs).nodes.has(anvil().accounts[5]!.address)).toBe(true);
  });

  test("a reorg deeper than the checkpoint window restarts from the oldest checkpoint", async () => {
    await join(1);
    const consumer = memoryConsumer();
    const f = follower(consumer, { batchSize: 1n, maxCheckpoints: 3 });
    await drain(f);
    const forkPoint = await head();
    const fork = await anvil().testClient.snapshot();

    for (const i of [2, 3, 4]) await join(i);
    for (const i of [2, 3, 4]) await nodeAction(i, "pause");
    await drain(f);
    const oldest = consumer.cursor!.checkpoints[0]!.number;
    expect(oldest).toBe(forkPoint + 4n);
    const kept = consumer.logs.filter((l) => l.blockNumber < oldest);

    await anvil().testClient.revert({ id: fork });
    for (const i of [5, 6, 7, 8]) await join(i);
    await createTask(10);
    await mine(3);

    const result = await f.poll();
    expect(result.reorg).toEqual({ fromBlock: oldest });
    const base = await anvil().publicClient.getBlock({ blockNumber: oldest - 1n });
    expect(consumer.reorgs[0]!.cursor).toEqual({ checkpoints: [{ number: oldest - 1n, hash: base.hash }] });
    await drain(f);

    // below the oldest checkpoint nothing is touched (documented limit); from it on, the new chain
    expect(consumer.logs.filter((l) => l.blockNumber < oldest)).toEqual(kept);
    expect(consumer.logs.filter((l) => l.blockNumber >= oldest)).toEqual(await chainLogs(oldest));
    expect(consumer.batches.filter((b) => b.fromBlock >= oldest)[0]!.fromBlock).toBe(oldest);
  });
});

describe("RPC errors", () => {
  async function closedPort(): Promise<number> {
    const server = net.createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as net.AddressInfo;
    server.close();
    await once(server, "close");
    return port;
  }

  test("nothing listening: poll() rejects, the loop reports via onError and keeps going, stop() resolves", async () => {
    const client = createPublicClient({
      transport: http(`http://127.0.0.1:${await closedPort()}`, { retryCount: 0, timeout: 5_000 }),
    });
    const consumer = memoryConsumer();
    const f = follower(consumer, { client: client as PublicClient, pollingIntervalMs: 1 });
    const error = await f.poll().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChainFollowerError);
    expect((error as ChainFollowerError).cause).toBeInstanceOf(Error);

    f.start();
    await vi.waitFor(() => expect(consumer.errors.length).toBeGreaterThanOrEqual(3), {
      timeout: 20_000,
      interval: 10,
    });
    await f.stop();
    for (const e of consumer.errors) expect(e).toBeInstanceOf(ChainFollowerError);
    const reported = consumer.errors.length;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(consumer.errors.length).toBe(reported);
    expect(consumer.batches).toEqual([]);
    expect(f.indexedBlock).toBeNull();
  });

  test("an anvil that goes away mid-way: errors are reported, what was delivered stays", async () => {
    let other: AnvilInstance | undefined;
    let f: LogFollower | undefined;
    try {
      other = await startAnvil();
      const deployment = await deployCrynux(other.walletClient(0), other.publicClient);
      await other.publicClient.waitForTransactionReceipt({
        hash: await other.walletClient(1).writeContract({
          address: deployment.node,
          abi: nodeAbi,
          functionName: "join",
          args: ["GPU", 24n, "rt", NodeTaskTypes.ALL],
          value: STAKE,
        }),
      });
      const consumer = memoryConsumer();
      f = follower(consumer, {
        client: other.publicClient,
        address: deployment.node,
        fromBlock: 0n,
        batchSize: 5n,
        pollingIntervalMs: 5,
      });
      f.start();
      const tip = await other.publicClient.getBlockNumber();
      await vi.waitFor(() => expect(f!.indexedBlock).toBe(tip), { timeout: 20_000, interval: 10 });
      expect(consumer.logs.map((l) => l.eventName)).toContain("NodeJoined");
      await other.stop();
      await vi.waitFor(() => expect(consumer.errors.length).toBeGreaterThanOrEqual(2), {
        timeout: 20_000,
        interval: 10,
      });
      await f.stop();
      expect(f.indexedBlock).toBe(tip);
      expect(consumer.reorgs).toEqual([]);
    } finally {
      await f?.stop();
      await other?.stop();
    }
  });

  test("the loop survives an outage and resumes delivering when the RPC is back", async () => {
    const proxy = await tcpProxy(anvil().port);
    const f = (() => {
      const client = createPublicClient({
        transport: http(`http://127.0.0.1:${proxy.port}`, { retryCount: 0, timeout: 5_000 }),
      });
      return (consumer: Consumer) =>
        follower(consumer, { client: client as PublicClient, pollingIntervalMs: 5, batchSize: 2n });
    })();
    const consumer = memoryConsumer();
    const follow = f(consumer);
    try {
      await join(1);
      follow.start();
      const tip = await head();
      await vi.waitFor(() => expect(follow.indexedBlock).toBe(tip), { timeout: 20_000, interval: 10 });

      await proxy.down();
      await join(2);
      await nodeAction(1, "pause");
      await vi.waitFor(() => expect(consumer.errors.length).toBeGreaterThanOrEqual(2), {
        timeout: 20_000,
        interval: 10,
      });
      expect(follow.indexedBlock).toBe(tip);

      await proxy.up();
      const tip2 = await head();
      await vi.waitFor(() => expect(follow.indexedBlock).toBe(tip2), { timeout: 40_000, interval: 20 });
      await follow.stop();
      expect(consumer.logs).toEqual(await chainLogs());
    } finally {
      await follow.stop();
      await proxy.close();
    }
  });
});

/** A TCP proxy to `targetPort` that can refuse connections (down) and accept them again on the same port (up). */
async function tcpProxy(targetPort: number) {
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    track(client);
    track(upstream);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as net.AddressInfo;
  const down = async () => {
    if (!server.listening) return;
    const closed = once(server, "close");
    server.close();
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  return {
    port,
    down,
    async up() {
      server.listen(port, "127.0.0.1");
      await once(server, "listening");
    },
    close: down,
  };
}
