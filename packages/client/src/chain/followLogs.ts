import {
  type Abi,
  type AbiEvent,
  type Address,
  BlockNotFoundError,
  type Chain,
  type Client,
  type ContractEventArgsFromTopics,
  type ContractEventName,
  type Hex,
  type Transport,
} from "viem";
import { getBlock, getLogs } from "viem/actions";
import { z } from "zod";
import { ClientError } from "../errors.js";
import type { HeadSource } from "./heads.js";

/** A block the follower has delivered, identified by number and hash. */
export type FollowedBlock = { number: bigint; hash: Hex };

/**
 * What the consumer persists, in the same transaction as the data it derived from the logs: the recent
 * delivered checkpoints, ascending by number; the newest is the last delivered block. An empty list means
 * "nothing delivered yet": the follower starts at `fromBlock`.
 */
export type FollowerCursor = { checkpoints: FollowedBlock[] };

/** A decoded log, narrowed by `eventName` to its event's arguments. */
export type FollowedLog<abi extends Abi = Abi> = {
  [eventName in ContractEventName<abi>]: {
    eventName: eventName;
    args: ContractEventArgsFromTopics<abi, eventName>;
    address: Address;
    blockNumber: bigint;
    blockHash: Hex;
    logIndex: number;
    transactionHash: Hex;
  };
}[ContractEventName<abi>];

/** One delivered range of blocks. `logs` is ordered by block number, then log index. */
export type FollowedBatch<abi extends Abi = Abi> = {
  fromBlock: bigint;
  toBlock: bigint;
  logs: FollowedLog<abi>[];
  /** The cursor to persist together with whatever is derived from `logs`. */
  cursor: FollowerCursor;
};

/** Blocks `>= fromBlock` are no longer canonical. */
export type FollowedReorg = {
  fromBlock: bigint;
  /** The cursor to persist together with the rollback. */
  cursor: FollowerCursor;
};

/**
 * Options of {@link followLogs}: what to follow, from where, with what confirmation depth, and the callbacks
 * that consume batches and reorgs.
 */
export type FollowLogsParameters<abi extends Abi = Abi> = {
  /** Any viem client (a public client is enough); only `eth_blockNumber`, `eth_getBlockByNumber` and `eth_getLogs` are used. */
  client: Client<Transport, Chain | undefined>;
  /** The contract(s) whose logs are followed. */
  address: Address | Address[];
  /**
   * ABI whose events are followed. Logs of events it does not contain are never requested nor delivered;
   * anonymous events are ignored (nothing in a log identifies them).
   */
  abi: abi;
  /** First block to read when the cursor is empty. Keep it the same across restarts. */
  fromBlock: bigint;
  /** Block `b` is delivered only once `head - b >= confirmations` (0 delivers up to the head). */
  confirmations: number;
  /** Most blocks per `eth_getLogs` (default 2000). Halved after a failed request, grown back after successes. */
  batchSize?: bigint;
  /** Milliseconds between polls once up to date (default 1000); errors back off from it up to 30 s. */
  pollingIntervalMs?: number;
  /**
   * New-head notifications (e.g. {@link createHeadWatcher} over a WebSocket): the loop started by `start()`
   * polls at once on each, instead of at its next interval. The interval polls go on, as a fallback.
   */
  heads?: HeadSource | undefined;
  /**
   * How many delivered checkpoints to keep for walking back on a reorg (default 64). A reorg that replaces
   * all of them is handled as if it started at the oldest one (see {@link followLogs}).
   */
  maxCheckpoints?: number;
  /** The cursor persisted by the last `onLogs` / `onReorg`, or `null` when nothing was persisted. */
  loadCursor: () => Promise<FollowerCursor | null>;
  /** Apply a batch and persist `batch.cursor` atomically with it. Called once per batch, also for empty batches. */
  onLogs: (batch: FollowedBatch<abi>) => Promise<void>;
  /** Drop everything derived from blocks `>= event.fromBlock` and persist `event.cursor`, atomically. */
  onReorg: (event: FollowedReorg) => Promise<void>;
  /**
   * Errors of the polling loop started by `start()` (RPC down, a failing `onLogs`): the loop keeps going with
   * backoff. Default: `console.error`. Errors of a direct `poll()` call reject that call instead.
   */
  onError?: (error: unknown) => void;
};

/**
 * What one {@link LogFollower.poll} did: the range delivered, the reorg handled, or that it caught up with
 * the chain.
 */
export type FollowLogsPollResult = {
  delivered?: { fromBlock: bigint; toBlock: bigint; logs: number };
  reorg?: { fromBlock: bigint };
  /** Nothing more can be delivered until the chain grows. */
  upToDate: boolean;
};

/** A log follower created by {@link followLogs}: poll it step by step, or let it run until stopped. */
export type LogFollower = {
  /**
   * One step: check that the newest checkpoint is still canonical (when not, walk back to the newest one
   * that is and call `onReorg` from the block after it), then deliver at most one batch up to
   * `head - confirmations`. Must not run alongside another `poll()`: calls are queued.
   */
  poll(): Promise<FollowLogsPollResult>;
  /** Polls until `stop()`: without pause while behind, every `pollingIntervalMs` once up to date. */
  start(): void;
  /** Resolves once the loop has stopped, after the step in flight (and its `onLogs`) finished. */
  stop(): Promise<void>;
  /** Makes the loop poll now (when it waits) or right after the step in flight: the chain has news. */
  wake(): void;
  /** Newest delivered block, `null` until the cursor is loaded or while nothing was delivered. */
  readonly indexedBlock: bigint | null;
};

/** The follower could not read the chain, was misconfigured, or the consumer's callbacks failed. */
export class ChainFollowerError extends ClientError {
  override name = "ChainFollowerError";
}

// RPCs answer lowercase hashes; a stored cursor may not be, and hashes are compared as strings.
const hexHash = z
  .string()
  .regex(/^0x[0-9a-fA-F]{64}$/, "a 32-byte hex block hash")
  .transform((hash) => hash.toLowerCase() as Hex);
const blockNumber = z.union([
  z.bigint().nonnegative(),
  z
    .string()
    .regex(/^\d+$/, "a decimal block number")
    .transform((s) => BigInt(s)),
]);
const cursorSchema = z
  .object({
    checkpoints: z.array(z.object({ number: blockNumber, hash: hexHash })),
  })
  .refine(
    ({ checkpoints }) => checkpoints.every((c, i) => i === 0 || c.number > checkpoints[i - 1]!.number),
    { message: "checkpoints must be strictly ascending by number", path: ["checkpoints"] },
  );

/** A cursor as JSON-safe data (block numbers as decimal strings), e.g. to store it in a JSON column. */
export type FollowerCursorJson = { checkpoints: { number: string; hash: Hex }[] };

/** Converts a cursor to JSON-safe data; {@link parseFollowerCursor} reads it back. */
export function followerCursorToJson(cursor: FollowerCursor): FollowerCursorJson {
  return { checkpoints: cursor.checkpoints.map((c) => ({ number: c.number.toString(), hash: c.hash })) };
}

/**
 * Validates a stored cursor (block numbers as bigints or decimal strings) and returns it with bigint numbers.
 * @throws {ChainFollowerError} when it is not a cursor.
 */
export function parseFollowerCursor(value: unknown): FollowerCursor {
  const parsed = cursorSchema.safeParse(value);
  if (!parsed.success) {
    throw new ChainFollowerError("The stored follower cursor is invalid", {
      details: z.prettifyError(parsed.error),
    });
  }
  return { checkpoints: parsed.data.checkpoints.map((c) => ({ number: c.number, hash: c.hash })) };
}

const parametersSchema = z.object({
  fromBlock: z.bigint().nonnegative(),
  confirmations: z.number().int().nonnegative(),
  batchSize: z.bigint().positive(),
  pollingIntervalMs: z.number().int().nonnegative(),
  maxCheckpoints: z.number().int().positive(),
});

const MAX_BACKOFF_MS = 30_000;

const cloneCursor = (checkpoints: FollowedBlock[]): FollowerCursor => ({
  checkpoints: checkpoints.map((c) => ({ number: c.number, hash: c.hash })),
});

/**
 * Follows the logs of `address` that match `abi`'s events: delivers them in order, exactly once, once they are
 * `confirmations` blocks deep, and tells the consumer to roll back when delivered blocks are reorged away.
 *
 * It polls the head block and `eth_getLogs` (no filters or subscriptions, which do not survive restarts); while
 * the head block stays the same, a poll is that one call.
 * The consumer persists the cursor with its data, atomically; after a restart `loadCursor` returns it and the
 * follower continues after the last delivered block.
 *
 * Reorgs are detected by block hash: the follower keeps the last `maxCheckpoints` delivered block hashes, and
 * when the newest is no longer canonical it looks for the newest one that still is and calls `onReorg` from
 * the block after it. When none of them is canonical any more (a reorg deeper than the window), the
 * follower cannot know where the chains forked: it calls `onReorg` from the oldest checkpoint's number and
 * re-delivers everything from there, trusting the blocks before it. Choose `confirmations` and
 * `maxCheckpoints` so that this cannot happen on the chain followed.
 *
 * @example
 * const follower = followLogs({
 *   client: publicClient,
 *   address: deployment.node,
 *   abi: nodeAbi,
 *   fromBlock: deploymentBlock,
 *   confirmations: 2,
 *   loadCursor: () => db.loadCursor(),
 *   onLogs: ({ logs, cursor }) => db.transaction(async (tx) => { await apply(tx, logs); await tx.saveCursor(cursor); }),
 *   onReorg: ({ fromBlock, cursor }) => db.transaction(async (tx) => { await rollback(tx, fromBlock); await tx.saveCursor(cursor); }),
 *   onError: (error) => logger.warn(error),
 * });
 * follower.start();
 * // ...
 * await follower.stop();
 */
export function followLogs<const abi extends Abi>(parameters: FollowLogsParameters<abi>): LogFollower {
  const { client, address, abi, loadCursor, onLogs, onReorg } = parameters;
  const parsed = parametersSchema.safeParse({
    fromBlock: parameters.fromBlock,
    confirmations: parameters.confirmations,
    batchSize: parameters.batchSize ?? 2000n,
    pollingIntervalMs: parameters.pollingIntervalMs ?? 1000,
    maxCheckpoints: parameters.maxCheckpoints ?? 64,
  });
  if (!parsed.success) {
    throw new ChainFollowerError("Invalid followLogs parameters", { details: z.prettifyError(parsed.error) });
  }
  const { fromBlock: startBlock, confirmations, batchSize, pollingIntervalMs, maxCheckpoints } = parsed.data;
  const events = (abi as Abi).filter(
    (item): item is AbiEvent => item.type === "event" && item.anonymous !== true,
  );
  if (events.length === 0) {
    throw new ChainFollowerError("The ABI given to followLogs has no (non-anonymous) event to follow");
  }
  const report =
    parameters.onError ??
    ((error: unknown) => {
      console.error(error);
    });

  let checkpoints: FollowedBlock[] | null = null;
  // Some RPC providers refuse large ranges or results: shrink after a failure, grow back after successes.
  let currentBatch = batchSize;

  /** The canonical hash at `number`, or null when the chain is shorter. */
  async function canonicalHash(number: bigint): Promise<Hex | null> {
    try {
      const block = await getBlock(client, { blockNumber: number });
      return block.hash;
    } catch (error) {
      if (error instanceof BlockNotFoundError) return null;
      throw error;
    }
  }

  async function rpc<T>(what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof ChainFollowerError) throw error;
      throw new ChainFollowerError(`Could not ${what}`, { cause: error, details: messageOf(error) });
    }
  }

  async function consumer(what: string, call: () => Promise<void>): Promise<void> {
    try {
      await call();
    } catch (error) {
      throw new ChainFollowerError(`${what} failed`, { cause: error, details: messageOf(error) });
    }
  }

  async function loaded(): Promise<FollowedBlock[]> {
    if (checkpoints) return checkpoints;
    let stored: FollowerCursor | null;
    try {
      stored = await loadCursor();
    } catch (error) {
      throw new ChainFollowerError("loadCursor failed", { cause: error, details: messageOf(error) });
    }
    checkpoints = stored === null ? [] : parseFollowerCursor(stored).checkpoints;
    return checkpoints;
  }

  /**
   * Checkpoints are an ancestry chain (each delivery checks that the previous checkpoint is still canonical),
   * so "still canonical" is monotonic along them: binary search for the newest canonical one.
   */
  async function newestCanonical(kept: FollowedBlock[]): Promise<number> {
    let low = 0;
    let high = kept.length - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      const checkpoint = kept[middle]!;
      const hash = await rpc(`read block ${checkpoint.number}`, () => canonicalHash(checkpoint.number));
      if (hash === checkpoint.hash) {
        found = middle;
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
    return found;
  }

  async function handleReorg(kept: FollowedBlock[]): Promise<bigint> {
    const index = await newestCanonical(kept.slice(0, -1));
    let fromBlock: bigint;
    let remaining: FollowedBlock[];
    if (index >= 0) {
      fromBlock = kept[index]!.number + 1n;
      remaining = kept.slice(0, index + 1);
    } else {
      // Deeper than the window: restart at the oldest checkpoint on top of whatever is canonical before it.
      fromBlock = kept[0]!.number;
      const base = fromBlock - 1n;
      if (base < startBlock) {
        remaining = [];
      } else {
        const hash = await rpc(`read block ${base}`, () => canonicalHash(base));
        if (hash === null) {
          throw new ChainFollowerError(
            `Reorg deeper than the ${kept.length} checkpoints kept, and the chain is now shorter than block ${base}`,
            { details: "The follower waits for the chain to grow back past that block before rolling back." },
          );
        }
        remaining = [{ number: base, hash }];
      }
    }
    const cursor = cloneCursor(remaining);
    await consumer(`onReorg from block ${fromBlock}`, () =>
      onReorg({ fromBlock, cursor: cloneCursor(remaining) }),
    );
    checkpoints = cursor.checkpoints;
    return fromBlock;
  }

  /** The head block's hash at the last step that ended up to date (nothing to deliver, nothing reorged). */
  let quietHead: Hex | null = null;

  async function step(): Promise<FollowLogsPollResult> {
    const kept = await loaded();
    const result: FollowLogsPollResult = { upToDate: false };
    // The head block, not just its number: while its hash stays the one of the last up-to-date step, no
    // block came and none was replaced (a reorg changes the head's hash even at the same height), so an idle
    // poll is one call.
    const headBlock = await rpc("read the head block", () => getBlock(client, { blockTag: "latest" }));
    const head = headBlock.number;
    const headHash = headBlock.hash.toLowerCase() as Hex;
    if (quietHead !== null && quietHead === headHash) return { upToDate: true };
    quietHead = null;

    const newest = kept.at(-1);
    if (newest) {
      const hash = await rpc(`read block ${newest.number}`, () => canonicalHash(newest.number));
      if (hash !== newest.hash) result.reorg = { fromBlock: await handleReorg(kept) };
    }

    const current = checkpoints!;
    const last = current.at(-1);
    const next = last ? last.number + 1n : startBlock;
    const target = head - BigInt(confirmations);
    if (target < next) {
      if (!result.reorg) quietHead = headHash;
      return { ...result, upToDate: true };
    }
    const toBlock = next + currentBatch - 1n < target ? next + currentBatch - 1n : target;

    // Reading the hash of `toBlock` before and after the logs (and the previous checkpoint after them) makes
    // sure the logs come from one chain that extends what was delivered: a reorg in between is not
    // half-applied. If anything moved, nothing is delivered; the next poll sorts it out.
    const before =
      toBlock === head ? headHash : await rpc(`read block ${toBlock}`, () => canonicalHash(toBlock));
    if (before === null) return result;
    let raw: Awaited<ReturnType<typeof getLogs>>;
    try {
      raw = await getLogs(client, {
        address,
        events,
        fromBlock: next,
        toBlock,
        strict: true,
      } as Parameters<typeof getLogs>[1]);
    } catch (error) {
      const range = toBlock - next + 1n;
      if (range > 1n) currentBatch = range / 2n;
      throw new ChainFollowerError(`Could not read the logs of blocks ${next} to ${toBlock}`, {
        cause: error,
        details: messageOf(error),
      });
    }
    const [after, previous] = await Promise.all([
      rpc(`read block ${toBlock}`, () => canonicalHash(toBlock)),
      last ? rpc(`read block ${last.number}`, () => canonicalHash(last.number)) : Promise.resolve(null),
    ]);
    if (after !== before || (last && previous !== last.hash)) return result;

    const logs: FollowedLog<abi>[] = [];
    for (const log of raw as unknown as RawDecodedLog[]) {
      if (
        log.blockNumber === null ||
        log.blockHash === null ||
        log.logIndex === null ||
        log.transactionHash === null ||
        log.blockNumber < next ||
        log.blockNumber > toBlock
      ) {
        throw new ChainFollowerError(
          `eth_getLogs for blocks ${next} to ${toBlock} returned a log outside them`,
          {
            details: `block ${log.blockNumber ?? "pending"}, log index ${log.logIndex ?? "pending"}`,
          },
        );
      }
      if (log.removed || (log.blockNumber === toBlock && log.blockHash !== before)) return result;
      logs.push({
        eventName: log.eventName,
        args: log.args,
        address: log.address,
        blockNumber: log.blockNumber,
        blockHash: log.blockHash,
        logIndex: log.logIndex,
        transactionHash: log.transactionHash,
      } as FollowedLog<abi>);
    }
    logs.sort((a, b) =>
      a.blockNumber === b.blockNumber ? a.logIndex - b.logIndex : a.blockNumber < b.blockNumber ? -1 : 1,
    );

    const advanced = [...current, { number: toBlock, hash: before }].slice(-maxCheckpoints);
    await consumer(`onLogs for blocks ${next} to ${toBlock}`, () =>
      onLogs({ fromBlock: next, toBlock, logs, cursor: cloneCursor(advanced) }),
    );
    checkpoints = advanced;
    if (currentBatch < batchSize)
      currentBatch = currentBatch * 2n < batchSize ? currentBatch * 2n : batchSize;
    // Delivered up to the target of a head that has not moved since: the next poll can stop at the head.
    if (toBlock >= target && !result.reorg) quietHead = headHash;
    return {
      ...result,
      delivered: { fromBlock: next, toBlock, logs: logs.length },
      upToDate: toBlock >= target,
    };
  }

  let queue: Promise<unknown> = Promise.resolve();
  function poll(): Promise<FollowLogsPollResult> {
    const run = queue.then(step);
    // The queue only orders the steps; each caller gets its own step's outcome through `run`.
    queue = run.catch(() => undefined);
    return run;
  }

  type Loop = { stopping: boolean; wake: (() => void) | null; done: Promise<void> };
  let loop: Loop | null = null;

  function sleep(state: Loop, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        state.wake = null;
        resolve();
      }
      state.wake = done;
    });
  }

  /** A wake-up came while a step was in flight: the next one starts without waiting. */
  let woken = false;
  function wake() {
    woken = true;
    loop?.wake?.();
  }

  async function run(state: Loop): Promise<void> {
    let failures = 0;
    while (!state.stopping) {
      let wait = pollingIntervalMs;
      woken = false;
      try {
        const result = await poll();
        failures = 0;
        if ((result.delivered && !result.upToDate) || woken) wait = 0;
      } catch (error) {
        failures++;
        wait = Math.min(
          Math.max(pollingIntervalMs, 1) * 2 ** failures,
          Math.max(MAX_BACKOFF_MS, pollingIntervalMs),
        );
        try {
          report(error);
        } catch (reportError) {
          // onError itself failed: do not let it end the loop, but do not lose either error.
          console.error(reportError, error);
        }
      }
      if (!state.stopping && wait > 0) await sleep(state, wait);
    }
  }

  let unsubscribe: (() => void) | undefined;

  return {
    poll,
    wake,
    start() {
      if (loop && !loop.stopping) return;
      unsubscribe ??= parameters.heads?.subscribe(wake);
      // A loop still stopping finishes its step first; the new one starts after it.
      const previous = loop?.done ?? Promise.resolve();
      const state: Loop = { stopping: false, wake: null, done: Promise.resolve() };
      state.done = previous.then(() => run(state));
      loop = state;
    },
    async stop() {
      unsubscribe?.();
      unsubscribe = undefined;
      const state = loop;
      if (!state) return;
      state.stopping = true;
      state.wake?.();
      await state.done;
      if (loop === state) loop = null;
    },
    get indexedBlock() {
      return checkpoints?.at(-1)?.number ?? null;
    },
  };
}

type RawDecodedLog = {
  eventName: string;
  args: unknown;
  address: Address;
  blockNumber: bigint | null;
  blockHash: Hex | null;
  logIndex: number | null;
  transactionHash: Hex | null;
  removed: boolean;
};

function messageOf(error: unknown): string | undefined {
  if (error instanceof Error) return (error as { shortMessage?: string }).shortMessage ?? error.message;
  return error === undefined ? undefined : String(error);
}
