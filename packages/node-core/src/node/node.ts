import { EventEmitter } from "node:events";
import { createRelayClient, type HeadSource, type RelayClient } from "@crynux/client";
import {
  type CrynuxDeployment,
  NodeStatus as NodeStatusCode,
  NodeTaskTypes,
  nodeAbi,
  qosAbi,
  taskAbi,
} from "@crynux/contracts";
import type { Account, Address, Chain, LocalAccount, PublicClient, Transport, WalletClient } from "viem";
import type { GptExecutor } from "../executor/gptExecutor.js";
import { detectCard, type NodeCard } from "./card.js";
import { NodeRuntimeError, NodeStoppedError, TxRevertedError } from "./errors.js";
import { type NodeLogger, silentLogger } from "./logger.js";
import { advanceTask, type SdTaskExecutor, type TaskActivity, type TaskPipelineContext } from "./pipeline.js";
import { type NodeStore, openNodeStore, type TaskOutcome, type TaskRecord, taskEarnings } from "./store.js";
import { createTxSender, type TxSender } from "./txSender.js";
import { type ChainWatcher, createChainWatcher, type NodeChainEvent } from "./watcher.js";

/** A Node contract status by its constant name (`AVAILABLE`, `BUSY`, `PAUSED`, …). */
export type NodeChainStatus = keyof typeof NodeStatusCode;
/** Node statuses of the Node contract, by their number (from `NodeStatus` of @crynux/contracts). */
export const NODE_STATUSES = Object.keys(NodeStatusCode) as readonly NodeChainStatus[];

/**
 * Options of {@link createNode}: the account and viem clients, the deployment, the relay, the GPU and
 * executors it offers, and where it keeps its state.
 */
export type CreateNodeParameters = {
  /** The node's account (defaults to the wallet client's); a local account signs relay requests too. */
  account?: LocalAccount | undefined;
  publicClient: PublicClient;
  walletClient: WalletClient<Transport, Chain | undefined, Account>;
  contracts: CrynuxDeployment;
  relayUrl: string;
  /** A relay client to use instead of one built from `relayUrl` (tests, custom retries). */
  relay?: RelayClient | undefined;
  /** Where the node keeps its state (task records, watcher cursor). One directory per account. */
  stateDir: string;
  /** Runs GPT tasks; its `runtimeId` is the node's runtime id. */
  gpt: Pick<GptExecutor, "execute" | "runtimeId" | "loadedModels">;
  /** Runs SD tasks; the node declares SD when it joins only with it, so without it it is never selected for SD. */
  sd?: SdTaskExecutor | undefined;
  /** The card to join with; detected with node-llama-cpp when left out. */
  card?: NodeCard | undefined;
  /** Blocks an event must be buried under before the node acts on it (default 2). */
  confirmations?: number | undefined;
  /** Chain polling interval in ms (default 1000). */
  pollingIntervalMs?: number | undefined;
  /**
   * New-head notifications (`createHeadWatcher` from @crynux/client over the RPC's WebSocket): the chain
   * watcher reads the chain as soon as a block comes, instead of at its next poll.
   */
  heads?: HeadSource | undefined;
  /** Stake to join with (default: the Node contract's `stakeAmount`). */
  stake?: bigint | undefined;
  /** Join at start when the node has not joined (default true). */
  join?: boolean | undefined;
  /** Resume at start when the node is PAUSED (default false: a pause is the operator's decision). */
  resumeIfPaused?: boolean | undefined;
  /** How long one step waits for the creator's arguments on the relay before looking at the chain again. */
  argsWaitMs?: number | undefined;
  /**
   * Records of finished tasks older than this (ms since their last update) are pruned at start and every
   * hour; their outcomes and earnings stay in the store's archive and in `status()`. Default 30 days;
   * `Infinity` keeps every record.
   */
  pruneTaskRecordsAfterMs?: number | undefined;
  logger?: NodeLogger | undefined;
};

/**
 * A snapshot of a node for operators: its on-chain status, current task, finished tasks by outcome, earnings
 * (wei), QoS and loaded models.
 */
export type NodeStatus = {
  address: Address;
  chainStatus: NodeChainStatus;
  /** The task this node is working on (the oldest unfinished one), if any. */
  currentTask: { taskId: bigint; round: number; step: TaskRecord["step"] } | null;
  /** Tasks this node finished, by outcome. */
  tasksDone: number;
  outcomes: Partial<Record<TaskOutcome, number>>;
  /** Fees received, in wei (confirmed TaskNodeSuccess events). */
  earnings: bigint;
  qos: { averageScore: bigint; weight: bigint; recentScoreSum: bigint };
  modelsLoaded: { path: string; sha256: string; bytes: number }[];
};

/** Events of a running node. */
export type NodeEvents = {
  /** A task of this node was recorded (confirmed TaskStarted). */
  taskStarted: [{ taskId: bigint; round: number }];
  /** A task record changed step (emitted before the node goes on: a listener may stop the node here). */
  taskStep: [TaskRecord];
  /** A moment inside a step (arguments received, transaction sent, upload); emitted before the node goes on. */
  taskActivity: [TaskActivity];
  taskDone: [{ taskId: bigint; outcome: TaskOutcome }];
  /** A step failed and will be retried. */
  taskError: [{ taskId: bigint; error: unknown }];
  /** A confirmed Node contract event about this node (NodeStatusChanged, NodePenalized, …). */
  nodeEvent: [NodeChainEvent];
  /** The chain watcher failed (it retries). */
  watcherError: [unknown];
};

/**
 * A Crynux node created by {@link createNode}: start and stop it, change its on-chain status, and watch it
 * through `events` and `status()`.
 */
export type CrynuxNode = {
  readonly address: Address;
  readonly events: EventEmitter<NodeEvents>;
  /** Opens the state, starts the chain watcher, resumes unfinished tasks, then joins (or resumes). */
  start(): Promise<void>;
  /** Stops watching and working (at a safe point; unfinished work resumes at the next start). No transaction. */
  stop(): Promise<void>;
  /** AVAILABLE → PAUSED; BUSY → PENDING_PAUSE (PAUSED once its task ends). */
  pause(): Promise<NodeChainStatus>;
  /** PAUSED → AVAILABLE. */
  resume(): Promise<NodeChainStatus>;
  /** AVAILABLE / PAUSED → QUIT (stake back); BUSY → PENDING_QUIT (leaves once its task ends). */
  quit(): Promise<NodeChainStatus>;
  /** Reads the node's state (task records from the store, status, QoS and stake from the chain). */
  status(): Promise<NodeStatus>;
  /** The node's store, once started. */
  readonly store: NodeStore | undefined;
  /** Newest block the chain watcher has delivered (null before the first batch). */
  readonly indexedBlock: bigint | null;
};

/**
 * Creates a Crynux node: a chain watcher that records this node's tasks, one task pipeline per task
 * ({@link advanceTask}), a transaction sender, and the node's lifecycle on the Node contract.
 */
export function createNode(parameters: CreateNodeParameters): CrynuxNode {
  const { publicClient, walletClient, contracts } = parameters;
  const account = parameters.account ?? walletClient.account;
  const address = account.address;
  if (account.address.toLowerCase() !== walletClient.account.address.toLowerCase())
    throw new NodeRuntimeError("The node's account and its wallet client's account differ.", {
      details: `account ${account.address}, wallet client ${walletClient.account.address}`,
    });
  const logger = parameters.logger ?? silentLogger;
  const pollingIntervalMs = parameters.pollingIntervalMs ?? 1000;
  const confirmations = parameters.confirmations ?? 2;
  const events = new EventEmitter<NodeEvents>();
  const relay =
    parameters.relay ?? createRelayClient({ url: parameters.relayUrl, account: account as LocalAccount });
  const tx: TxSender = createTxSender({
    walletClient,
    publicClient,
    heads: parameters.heads,
    onRetry: ({ functionName, attempt, error }) =>
      logger.warn("transaction retry", { functionName, attempt, error: describe(error) }),
  });

  let store: NodeStore | undefined;
  let watcher: ChainWatcher | undefined;
  let controller: AbortController | undefined;
  const loops = new Map<string, Promise<void>>();
  const wakers = new Map<string, () => void>();
  /** Task loops waiting for the chain, woken by every new head (`parameters.heads`). */
  const headWaiters = new Set<() => void>();
  let unsubscribeHeads: (() => void) | undefined;
  let running = false;

  const readStatus = async (): Promise<NodeChainStatus> => {
    const status = await publicClient.readContract({
      address: contracts.node,
      abi: nodeAbi,
      functionName: "getNodeStatus",
      args: [address],
    });
    return NODE_STATUSES[status] ?? "QUIT";
  };

  const sendNode = async (functionName: string, args: readonly unknown[] = [], value?: bigint) => {
    logger.info("sending", { functionName });
    const sent = await tx.send({
      address: contracts.node,
      abi: nodeAbi,
      functionName,
      args,
      ...(value !== undefined ? { value } : {}),
    });
    logger.info("sent", { functionName, hash: sent.hash });
    return sent;
  };

  function wake(taskId: bigint) {
    wakers.get(taskId.toString())?.();
  }

  /**
   * Waits `ms`, or less: until the watcher reports a change of the task, or (`onHead`, for a task that waits
   * for the chain) until a new head comes, which lets the task look at the chain before the watcher has
   * read the block's logs.
   */
  function waitWake(taskId: bigint, ms: number, signal: AbortSignal, onHead = false): Promise<void> {
    const key = taskId.toString();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        if (wakers.get(key) === done) wakers.delete(key);
        headWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      // An abort listener added to an aborted signal never runs: a stopping node would wait out `ms`.
      if (signal.aborted) return done();
      signal.addEventListener("abort", done, { once: true });
      wakers.set(key, done);
      if (onHead) headWaiters.add(done);
    });
  }

  function runTask(ctx: TaskPipelineContext, taskId: bigint) {
    const key = taskId.toString();
    if (loops.has(key)) return wake(taskId);
    const loop = (async () => {
      let backoff = 1000;
      while (!ctx.signal.aborted) {
        try {
          const result = await advanceTask(ctx, taskId);
          if (result.done) {
            events.emit("taskDone", { taskId, outcome: result.outcome });
            return;
          }
          backoff = 1000;
          logger.debug("task waiting", { taskId, reason: result.reason });
          await waitWake(taskId, Math.min(result.retryInMs ?? pollingIntervalMs * 5, 5000), ctx.signal, true);
        } catch (error) {
          if (error instanceof NodeStoppedError || ctx.signal.aborted) return;
          logger.warn("task step failed", { taskId, error: describe(error) });
          events.emit("taskError", { taskId, error });
          await ctx.store
            .updateTask(taskId, (r) => (r ? { ...r, lastError: describe(error) } : undefined))
            .catch(() => {});
          await waitWake(taskId, backoff, ctx.signal);
          backoff = Math.min(backoff * 2, 30_000);
        }
      }
    })().finally(() => loops.delete(key));
    loops.set(key, loop);
  }

  /** A task the chain says this node is on but the store does not know (a new state directory). */
  async function adoptChainTask(ctx: TaskPipelineContext) {
    const taskId = await publicClient.readContract({
      address: contracts.node,
      abi: nodeAbi,
      functionName: "getNodeTask",
      args: [address],
    });
    if (taskId === 0n || (await ctx.store.getTask(taskId))) return;
    const task = await publicClient.readContract({
      address: contracts.task,
      abi: taskAbi,
      functionName: "getTask",
      args: [taskId],
    });
    const round = task[9].findIndex((n) => n.toLowerCase() === address.toLowerCase());
    if (round < 0) return;
    const now = Date.now();
    logger.warn("adopting a task found on the chain only", { taskId });
    await ctx.store.updateTask(taskId, (current) =>
      current
        ? undefined
        : {
            version: 1,
            taskId: taskId.toString(),
            round,
            taskType: task[1] === 0 ? 0 : 1,
            taskHash: task[3],
            creator: task[0],
            startedIn: null,
            step: "started",
            txs: {},
            events: [],
            createdAt: now,
            updatedAt: now,
          },
    );
  }

  const pruneAfterMs = parameters.pruneTaskRecordsAfterMs ?? 30 * 24 * 3_600_000;
  let pruneTimer: ReturnType<typeof setInterval> | undefined;
  async function prune() {
    if (!store || !Number.isFinite(pruneAfterMs)) return;
    try {
      const pruned = await store.pruneTasks(Date.now() - pruneAfterMs);
      if (pruned > 0) logger.info("pruned finished task records", { pruned });
    } catch (error) {
      logger.warn("pruning task records failed", { error: describe(error) });
    }
  }

  async function stopNode() {
    if (!running) return;
    running = false;
    clearInterval(pruneTimer);
    pruneTimer = undefined;
    controller?.abort();
    unsubscribeHeads?.();
    unsubscribeHeads = undefined;
    await watcher?.stop();
    await Promise.allSettled([...loops.values()]);
    watcher = undefined;
  }

  async function startNode() {
    controller = new AbortController();
    const signal = controller.signal;
    store = await openNodeStore(parameters.stateDir);
    await prune();
    pruneTimer = setInterval(() => void prune(), 3_600_000);
    pruneTimer.unref?.();
    const meta = await store.readMeta();
    if (meta.address && meta.address.toLowerCase() !== address.toLowerCase())
      throw new NodeRuntimeError(`The state directory ${parameters.stateDir} belongs to ${meta.address}.`);
    const [chainId, genesis] = await Promise.all([
      publicClient.getChainId(),
      publicClient.getBlock({ blockNumber: 0n }).then((block) => block.hash),
    ]);
    const chain = { id: chainId, genesis, task: contracts.task };
    if (
      meta.chain &&
      (meta.chain.id !== chain.id ||
        meta.chain.genesis.toLowerCase() !== chain.genesis.toLowerCase() ||
        meta.chain.task.toLowerCase() !== chain.task.toLowerCase())
    )
      throw new NodeRuntimeError(
        `The state directory ${parameters.stateDir} belongs to another chain or deployment: its task records and chain cursor would be taken for this one's. Use a new state directory.`,
        {
          details: `stored: chain ${meta.chain.id}, genesis ${meta.chain.genesis}, Task ${meta.chain.task}; now: chain ${chain.id}, genesis ${chain.genesis}, Task ${chain.task}`,
        },
      );
    let fromBlock = meta.fromBlock !== undefined ? BigInt(meta.fromBlock) : undefined;
    if (fromBlock === undefined || !meta.chain) {
      // The head before joining: a join can start a queued task in its own block.
      fromBlock ??= await publicClient.getBlockNumber();
      await store.writeMeta({ ...meta, address, chain, fromBlock: fromBlock.toString() });
    }

    const ctx: TaskPipelineContext = {
      store,
      tx,
      publicClient,
      relay,
      contracts,
      address,
      gpt: parameters.gpt,
      sd: parameters.sd,
      logger,
      signal,
      argsWaitMs: parameters.argsWaitMs ?? 30_000,
      uploadWaitMs: 30_000,
      confirmations,
      onStep: (record) => events.emit("taskStep", record),
      onActivity: (activity) => events.emit("taskActivity", activity),
    };

    watcher = createChainWatcher({
      client: publicClient,
      contracts,
      address,
      store,
      confirmations,
      pollingIntervalMs,
      heads: parameters.heads,
      fromBlock,
      onChanges: (changes) => {
        for (const taskId of changes.started) {
          store
            ?.getTask(taskId)
            .then((record) => {
              if (record) events.emit("taskStarted", { taskId, round: record.round });
            })
            .catch(() => {});
          logger.info("task started", { taskId });
          if (!signal.aborted) runTask(ctx, taskId);
        }
        for (const taskId of changes.reopened) {
          logger.warn("task reopened after a reorg", { taskId });
          if (!signal.aborted) runTask(ctx, taskId);
        }
        for (const taskId of [...changes.updated, ...changes.removed]) wake(taskId);
        for (const event of changes.nodeEvents) {
          logger.info("node event", { event: event.event, ...event.data });
          events.emit("nodeEvent", event);
        }
      },
      onError: (error) => {
        logger.warn("chain watcher error", { error: describe(error) });
        events.emit("watcherError", error);
      },
    });

    for (const record of await store.listTasks())
      if (record.step !== "done") runTask(ctx, BigInt(record.taskId));
    await adoptChainTask(ctx);
    for (const record of await store.listTasks())
      if (record.step !== "done" && !loops.has(record.taskId)) runTask(ctx, BigInt(record.taskId));
    watcher.start();
    unsubscribeHeads = parameters.heads?.subscribe(() => {
      for (const done of [...headWaiters]) done();
    });

    const status = await readStatus();
    if (status === "QUIT" && parameters.join !== false) {
      const card = parameters.card ?? (await detectCard());
      const stake =
        parameters.stake ??
        (await publicClient.readContract({
          address: contracts.node,
          abi: nodeAbi,
          functionName: "stakeAmount",
        }));
      // SD only with an image engine: a node is selected only for the task types it declares.
      const taskTypes = NodeTaskTypes.GPT | (parameters.sd ? NodeTaskTypes.SD : 0);
      logger.info("joining", { ...card, runtimeId: parameters.gpt.runtimeId, taskTypes, stake });
      await sendNode(
        "join",
        [card.gpuName, BigInt(card.gpuVram), parameters.gpt.runtimeId, taskTypes],
        stake,
      );
    } else if (status === "PAUSED" && parameters.resumeIfPaused) {
      await sendNode("resume");
    } else {
      logger.info("node status at start", { status });
    }
  }

  return {
    address,
    events,
    get store() {
      return store;
    },
    get indexedBlock() {
      return watcher?.indexedBlock ?? null;
    },

    async start() {
      if (running) throw new NodeRuntimeError("The node is already running.");
      running = true;
      try {
        await startNode();
      } catch (error) {
        // Nothing half-started stays behind: the watcher and the task loops stop with it.
        await stopNode();
        throw error;
      }
    },

    stop: stopNode,

    async pause() {
      await sendNode("pause");
      return readStatus();
    },
    async resume() {
      await sendNode("resume");
      return readStatus();
    },
    async quit() {
      await sendNode("quit");
      return readStatus();
    },

    async status() {
      const records = store ? await store.listTasks() : [];
      // Pruned records count through the archive.
      const archive = store ? await store.readArchive() : undefined;
      const current = records.find((r) => r.step !== "done");
      const outcomes: Partial<Record<TaskOutcome, number>> = { ...archive?.outcomes };
      let earnings = BigInt(archive?.earnings ?? "0");
      for (const record of records) {
        if (record.outcome) outcomes[record.outcome] = (outcomes[record.outcome] ?? 0) + 1;
        earnings += taskEarnings(record);
      }
      const [chainStatus, averageScore, weight, recentScoreSum] = await Promise.all([
        readStatus(),
        publicClient.readContract({
          address: contracts.qos,
          abi: qosAbi,
          functionName: "averageScore",
          args: [address],
        }),
        publicClient.readContract({
          address: contracts.qos,
          abi: qosAbi,
          functionName: "weightOf",
          args: [address],
        }),
        publicClient.readContract({
          address: contracts.qos,
          abi: qosAbi,
          functionName: "recentScoreSum",
          args: [address],
        }),
      ]);
      return {
        address,
        chainStatus,
        currentTask: current
          ? { taskId: BigInt(current.taskId), round: current.round, step: current.step }
          : null,
        tasksDone: (archive?.tasks ?? 0) + records.filter((r) => r.step === "done").length,
        outcomes,
        earnings,
        qos: { averageScore, weight, recentScoreSum },
        modelsLoaded: parameters.gpt.loadedModels(),
      };
    },
  };
}

function describe(error: unknown): string {
  if (error instanceof TxRevertedError) return error.shortMessage;
  if (error instanceof Error)
    return `${error.name}: ${(error as { shortMessage?: string }).shortMessage ?? error.message}`;
  return String(error);
}
