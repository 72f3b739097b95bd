/**
 * Network throughput: completed GPT tasks per minute on the devnet with 3, 6 and 9 nodes, in one run.
 *
 * Each network is `startDevnet({ nodeCount })`: anvil, the relay, and the nodes in this process sharing one GPT
 * executor on the generated tiny model, confirmations 1 with a block every 250 ms. Applications with their
 * own funded accounts (one account each, so no sender waits on another's nonce) run `runGptTask` back to
 * back on a worker thread (network-load.ts), keeping more tasks in flight than the nodes can take, so that
 * the queue is never empty. After a
 * warm-up, the tasks whose result was downloaded (and checked against the on-chain hash by `runGptTask`)
 * inside a fixed window are counted.
 *
 * Where the time goes is measured beside it: how much of the window the shared executor was busy, how busy
 * this process's event loop was (relay, nodes and applications all run on it), and the CPU of this process
 * and of anvil, against the cores of the machine.
 *
 * Every figure of the window is also taken per completed task, which the load of a shared machine
 * changes far less than rates: CPU seconds of the event loop's thread, of the whole process and of anvil.
 * A short idle phase before the load shows what the nodes cost while no task runs (polling).
 *
 *   npm run bench -- network                      all three sizes
 *   BENCH_NETWORK_NODES=3,9 BENCH_NETWORK_WINDOW_S=20 npm run bench -- network
 *   BENCH_NETWORK_PROFILE=1 …                     also samples the event loop's thread in the window (V8
 *                                                 profiler) and lists where its time went, by package;
 *                                                 written to network-profile.json, apart from the figures
 */
import { readFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { availableParallelism, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import { startDevnet } from "@crynux/example-devnet";
import type { GptExecutor } from "@crynux/node-core";
import { parseEther } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { writeResults } from "./lib.js";
import type { LoadMessage, LoadSettings } from "./network-load.js";
import { networkMarkdown } from "./summary.js";

/** `BENCH_NETWORK_<name>` from the environment: settings for trying the suite on other sizes and windows.
 * (Not turbo inputs: the bench task is never cached.) */
const setting = (name: string): string | undefined => process.env[`BENCH_NETWORK_${name}`];

const SIZES = (setting("NODES") ?? "3,6,9").split(",").map(Number);
const WARMUP_S = Number(setting("WARMUP_S") ?? 15);
const WINDOW_S = Number(setting("WINDOW_S") ?? 45);
const IDLE_S = Number(setting("IDLE_S") ?? 5);
const PROFILE = Boolean(setting("PROFILE"));
/**
 * BENCH_NETWORK_PUSH=1: new heads pushed over anvil's WebSocket to every party (`pushHeads`). Default: polling,
 * as the devnet runs. (Measured 2026-12-07: pushed, 3 nodes ran 141 tasks/min against 97 polled, but 9 nodes
 * only 171 against 216: each head wakes every node at once, and the 2 cores were already saturated.)
 */
const PUSH = setting("PUSH") === "1";
/** Tasks in flight per 3 nodes (one application each): a task spends part of its life where no node works on
 * it (creation, upload, confirmations, download), so more tasks than nodes/3 keep the queue from running dry. */
const IN_FLIGHT_PER_3_NODES = Number(setting("IN_FLIGHT") ?? 3);
const MAX_NEW_TOKENS = 16;
const TARGET_SCALING = 0.8;

type Stage = "queued" | "started" | "committed" | "success";

type TaskSample = {
  startedAt: number;
  doneAt: number;
  /** ms from the call to each stage the application saw, and to the downloaded result. */
  stages: Partial<Record<Stage, number>>;
  totalMs: number;
};

export type NetworkSize = {
  nodes: number;
  applications: number;
  warmupSeconds: number;
  windowSeconds: number;
  /** Tasks whose result was downloaded inside the window. */
  completed: number;
  tasksPerMinute: number;
  /** Tasks that failed inside the window (should be 0). */
  failures: number;
  latencyMs: { p50: number; p90: number };
  /** Median ms from the call to each stage the application saw (stage detection lags by its polling). */
  stageMedianMs: Partial<Record<Stage | "downloaded", number>>;
  /** Share of the window in which the shared GPT executor had a task (running or queued behind another). */
  executorBusy: number;
  /** Median time of one execution inside the executor (resolve + load + generate). */
  executionMedianMs: number;
  /** Upper bound from the executor alone: 3 executions per task, one at a time. */
  executorBoundTasksPerMinute: number;
  /** Event-loop utilisation of this process over the window (0–1; 1 = never idle). */
  eventLoopUtilization: number;
  /** CPU seconds per wall second over the window (1 = one core). */
  cpu: { mainThread: number; benchProcess: number; anvil: number; cores: number };
  /** CPU seconds per wall second before any task (nodes, relay and bridge polling an idle chain). */
  idleCpu: CpuShares;
  /** Event-loop utilisation before any task: near 1, the loop cannot even keep up with its polling. */
  idleEventLoopUtilization: number;
  /** CPU seconds per completed task over the window. The event loop's thread is the one that cannot grow
   * past one core: 60 / mainThread is the most tasks per minute it allows. */
  cpuSecondsPerTask: CpuShares;
  loadAverage1m: number;
  /** With BENCH_NETWORK_PROFILE: where the event loop's thread spent the window. */
  profile?: ProfileSummary | undefined;
};

/** CPU of this process's main (event-loop) thread, of the whole process, and of anvil. */
type CpuShares = { mainThread: number; process: number; anvil: number };
type ProfileSummary = {
  sampledMs: number;
  /** Share of the non-idle samples by package (node_modules package, workspace, or V8 category). */
  byGroup: { group: string; share: number }[];
  byFunction: { fn: string; share: number }[];
};

/** A worker does not inherit tsx's module hooks: it registers them itself, then loads the TypeScript. */
const workerBootstrap = `import(${JSON.stringify(import.meta.resolve("tsx/esm/api"))}).then(({ register }) => {
  register();
  return import(${JSON.stringify(new URL("./network-load.ts", import.meta.url).href)});
});`;

/** Wall-clock ms comparable across threads (the worker's performance.now() has another origin). */
const now = () => performance.timeOrigin + performance.now();

const percentile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? Number.NaN;
};

/** user + system CPU seconds of a process (all its threads), or of one thread, from /proc (Linux). */
function cpuSeconds(path: string): number {
  try {
    const stat = readFileSync(path, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name; in clock ticks (100/s).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

function cpuMeter(anvilPid: number) {
  const read = () => ({
    at: performance.now(),
    mainThread: cpuSeconds(`/proc/self/task/${process.pid}/stat`),
    process: cpuSeconds("/proc/self/stat"),
    anvil: cpuSeconds(`/proc/${anvilPid}/stat`),
  });
  const start = read();
  /** CPU seconds per wall second since the start (1 = one core). */
  return (): CpuShares => {
    const end = read();
    const divisor = (end.at - start.at) / 1000;
    return {
      mainThread: (end.mainThread - start.mainThread) / divisor,
      process: (end.process - start.process) / divisor,
      anvil: (end.anvil - start.anvil) / divisor,
    };
  };
}

/** Groups V8 profile samples by where the code lives. */
function profileGroup(url: string, functionName: string): string {
  if (url === "") return functionName.startsWith("(") ? functionName : "(native or unknown)";
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (modules) return modules[1]!;
  const workspace = /\/(packages|examples)\/([^/]+)\//.exec(url);
  if (workspace) return workspace[1] === "packages" ? `@crynux/${workspace[2]}` : `examples/${workspace[2]}`;
  if (url.startsWith("node:")) return "node: built-ins";
  if (url.includes("/bench/")) return "bench (load generator)";
  return url;
}

async function summarizeProfile(session: Session): Promise<ProfileSummary> {
  const { profile } = await session.post("Profiler.stop");
  const interval = (profile.endTime - profile.startTime) / 1000 / Math.max(1, profile.samples?.length ?? 1);
  const groups = new Map<string, number>();
  const functions = new Map<string, number>();
  let busy = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0 || node.callFrame.functionName === "(idle)") continue;
    const { url, functionName, lineNumber } = node.callFrame;
    const group = profileGroup(url, functionName);
    groups.set(group, (groups.get(group) ?? 0) + hits);
    const fn = url
      ? `${functionName || "(anonymous)"} ${group}:${url.split("/").at(-1)}:${lineNumber + 1}`
      : functionName;
    functions.set(fn, (functions.get(fn) ?? 0) + hits);
    busy += hits;
  }
  const top = (map: Map<string, number>, n: number) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([key, hits]) => ({ key, share: hits / busy }));
  return {
    sampledMs: busy * interval,
    byGroup: top(groups, 12).map(({ key, share }) => ({ group: key, share })),
    byFunction: top(functions, 15).map(({ key, share }) => ({ fn: key, share })),
  };
}

/** Progress on stderr, with seconds since the suite started: the table on stdout stays clean. */
const suiteStart = performance.now();
const progress = (line: string) =>
  console.error(`[network ${((performance.now() - suiteStart) / 1000).toFixed(1)} s] ${line}`);

async function measureSize(nodeCount: number): Promise<NetworkSize> {
  progress(`starting a devnet with ${nodeCount} nodes`);
  const devnet = await startDevnet({
    nodeCount,
    pushHeads: PUSH,
    faucetPort: false,
    ...(setting("VERBOSE") ? { log: (line: string) => progress(`  ${line}`) } : {}),
  });
  progress("devnet started");
  let stopLoad: (() => Promise<void>) | undefined;
  try {
    // The nodes hold this very object: wrapping its method times every execution of every node.
    const executor = devnet.executor as GptExecutor;
    const execute = executor.execute.bind(executor);
    let pending = 0;
    let busySince = 0;
    let busyMs = 0;
    const executions: { at: number; ms: number }[] = [];
    executor.execute = async (input, options) => {
      if (pending++ === 0) busySince = now();
      try {
        const result = await execute(input, options);
        const t = result.timings;
        executions.push({ at: now(), ms: t.resolveMs + t.loadMs + t.generateMs });
        return result;
      } finally {
        if (--pending === 0) busyMs += now() - busySince;
      }
    };
    const busyTotal = (): number => busyMs + (pending > 0 ? now() - busySince : 0);

    const applications = Math.ceil((nodeCount / 3) * IN_FLIGHT_PER_3_NODES);
    const privateKeys = Array.from({ length: applications }, () => generatePrivateKey());
    for (const key of privateKeys) await devnet.faucet(privateKeyToAccount(key).address, parseEther("500"));

    progress(`${applications} applications funded; ${IDLE_S} s idle`);
    const idleMeter = cpuMeter(devnet.anvil.pid);
    const idleElu0 = performance.eventLoopUtilization();
    await new Promise((resolve) => setTimeout(resolve, IDLE_S * 1000));
    const idleCpu = idleMeter();
    const idleEventLoopUtilization = performance.eventLoopUtilization(idleElu0).utilization;

    progress(`warming up for ${WARMUP_S} s`);
    const samples: TaskSample[] = [];
    const failures: { at: number; message: string }[] = [];
    const load = new Worker(workerBootstrap, {
      eval: true,
      workerData: {
        chainId: devnet.chainId,
        rpcUrl: devnet.urls.rpc,
        ...(PUSH ? { webSocketUrl: devnet.urls.rpc.replace(/^http/, "ws") } : {}),
        relayUrl: devnet.urls.relay,
        contracts: devnet.contracts,
        privateKeys,
        model: devnet.model.ref,
        maxNewTokens: MAX_NEW_TOKENS,
      } satisfies LoadSettings,
    });
    stopLoad = async () => {
      const stopped = new Promise<void>((resolve) =>
        load.on("message", (m: LoadMessage) => m.type === "stopped" && resolve()),
      );
      load.postMessage("stop");
      // The applications' last waits end with the abort; a worker that does not stop in time is ended.
      await Promise.race([stopped, new Promise((resolve) => setTimeout(resolve, 30_000))]);
      await load.terminate();
    };
    const loadError = new Promise<never>((_, reject) => load.once("error", reject));
    loadError.catch(() => {});
    load.on("message", (m: LoadMessage) => {
      if (m.type === "done")
        samples.push({
          startedAt: m.startedAt,
          doneAt: m.doneAt,
          stages: m.stages,
          totalMs: m.doneAt - m.startedAt,
        });
      else if (m.type === "failed") failures.push({ at: m.at, message: m.message });
    });
    const sleep = (ms: number) =>
      Promise.race([new Promise((resolve) => setTimeout(resolve, ms)), loadError]);

    await sleep(WARMUP_S * 1000);
    const windowStart = now();
    const busyAtStart = busyTotal();
    const elu0 = performance.eventLoopUtilization();
    const windowMeter = cpuMeter(devnet.anvil.pid);
    const session = PROFILE ? new Session() : undefined;
    if (session) {
      session.connect();
      await session.post("Profiler.enable");
      await session.post("Profiler.start");
    }
    await sleep(WINDOW_S * 1000);
    const windowEnd = now();
    const seconds = (windowEnd - windowStart) / 1000;
    const busy = (busyTotal() - busyAtStart) / (windowEnd - windowStart);
    const elu = performance.eventLoopUtilization(elu0).utilization;
    const cpu = windowMeter();
    const loadAverage = loadavg()[0]!;
    const profile = session ? await summarizeProfile(session) : undefined;
    session?.disconnect();
    await stopLoad();
    stopLoad = undefined;
    progress(`window of ${seconds.toFixed(0)} s over; stopping the devnet`);

    const inWindow = samples.filter((s) => s.doneAt >= windowStart && s.doneAt < windowEnd);
    const failed = failures.filter((f) => f.at >= windowStart && f.at < windowEnd);
    for (const { message } of failed.slice(0, 3)) progress(`${nodeCount} nodes: a task failed: ${message}`);
    const executionMs = percentile(
      executions.filter((e) => e.at >= windowStart && e.at < windowEnd).map((e) => e.ms),
      0.5,
    );
    const stageMedianMs: NetworkSize["stageMedianMs"] = {};
    for (const stage of ["queued", "started", "committed", "success"] as const) {
      const values = inWindow.flatMap((s) => (s.stages[stage] === undefined ? [] : [s.stages[stage]]));
      if (values.length > 0) stageMedianMs[stage] = percentile(values, 0.5);
    }
    stageMedianMs.downloaded = percentile(
      inWindow.map((s) => s.totalMs),
      0.5,
    );
    return {
      nodes: nodeCount,
      applications,
      warmupSeconds: WARMUP_S,
      windowSeconds: seconds,
      completed: inWindow.length,
      tasksPerMinute: inWindow.length / (seconds / 60),
      failures: failed.length,
      latencyMs: {
        p50: percentile(
          inWindow.map((s) => s.totalMs),
          0.5,
        ),
        p90: percentile(
          inWindow.map((s) => s.totalMs),
          0.9,
        ),
      },
      stageMedianMs,
      executorBusy: busy,
      executionMedianMs: executionMs,
      executorBoundTasksPerMinute: 60_000 / (3 * executionMs),
      eventLoopUtilization: elu,
      cpu: {
        mainThread: cpu.mainThread,
        benchProcess: cpu.process,
        anvil: cpu.anvil,
        cores: availableParallelism(),
      },
      idleCpu,
      idleEventLoopUtilization,
      cpuSecondsPerTask: {
        mainThread: (cpu.mainThread * seconds) / inWindow.length,
        process: (cpu.process * seconds) / inWindow.length,
        anvil: (cpu.anvil * seconds) / inWindow.length,
      },
      loadAverage1m: loadAverage,
      profile,
    };
  } finally {
    await stopLoad?.();
    await devnet.stop();
    progress("devnet stopped");
  }
}

const sizes: NetworkSize[] = [];
for (const nodes of SIZES) {
  const size = await measureSize(nodes);
  sizes.push(size);
  progress(
    `${nodes} nodes → ${size.tasksPerMinute.toFixed(1)} tasks/min (${size.completed} in ${size.windowSeconds.toFixed(0)} s)`,
  );
}

const base = sizes.find((s) => s.nodes === 3);
const scaling = sizes
  .filter((s) => base !== undefined && s.nodes > 3)
  .map((s) => ({
    from: 3,
    to: s.nodes,
    /** Measured throughput over linear scaling from 3 nodes: tpmN / ((N / 3) × tpm3). */
    ratio: s.tasksPerMinute / ((s.nodes / 3) * base!.tasksPerMinute),
    target: TARGET_SCALING,
  }));

console.log(`${networkMarkdown({ sizes, scaling }).join("\n")}\n`);
// A profiled run is a diagnosis, not a measurement (the profiler costs time): it keeps its own file.
writeResults(PROFILE ? "network-profile" : "network", {
  settings: {
    maxNewTokens: MAX_NEW_TOKENS,
    confirmations: 1,
    blockIntervalMs: 250,
    inFlightPer3Nodes: IN_FLIGHT_PER_3_NODES,
    idleSeconds: IDLE_S,
  },
  targetScaling: TARGET_SCALING,
  sizes,
  scaling,
});
