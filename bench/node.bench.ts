/**
 * Protocol overhead of a GPT task — everything but inference — and the memory of a node.
 *
 * 1. Overhead: anvil with instant mining (every transaction mined at once, confirmations 0), the relay, and
 *    three nodes in this process sharing one GPT executor (a generated tiny model, 1 thread). An application
 *    runs GPT tasks end to end with `runGptTask` (create → upload the arguments → the nodes fetch, execute,
 *    commit, disclose → the result node uploads and reports → the application downloads the result). The time
 *    during which the executor runs (three calls per task, one after the other on the shared executor: the
 *    union of the calls' intervals, not the sum of their durations, which would count their waits behind each
 *    other as inference) is subtracted: what is left is the protocol — transactions, relay round trips, chain
 *    polling, hashing. Each task starts on an idle network (the three nodes AVAILABLE on-chain again: the result
 *    node is released by its upload report, which may come after the application has the result), so that a
 *    task's time holds no wait in the queue behind the previous one. Measured twice: with the chain polled
 *    every 20 ms, and with new heads pushed over anvil's WebSocket (`createHeadWatcher`).
 * 2. Peak RSS of one node: three `crynux-node start` processes (the CLI, from the sources) run tasks; after
 *    them each process's VmHWM (peak resident set) is read from /proc.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCrynuxClient, createHeadWatcher, createRelayClient } from "@crynux/client";
import { deployCrynux, NodeStatus, nodeAbi } from "@crynux/contracts";
import { startAnvil } from "@crynux/contracts/testing";
import { IN_MEMORY, startRelay } from "@crynux/example-relay";
import {
  createGptExecutor,
  createModelResolver,
  createNode,
  type GptExecutor,
  generateTestModel,
} from "@crynux/node-core";
import type { GptTaskArgsInput } from "@crynux/tasks";
import { http, parseEther } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { writeResults } from "./lib.js";

/** Tasks measured per mode (`BENCH_NODE_TASKS` to try fewer). */
const TASKS = Number(process.env.BENCH_NODE_TASKS ?? 10);
const TRACE = Boolean(process.env.BENCH_NODE_TRACE);
/** `BENCH_NODE_MODES=push` measures one mode only. */
const MODES = (process.env.BENCH_NODE_MODES ?? "push,poll").split(",") as ("push" | "poll")[];
const CARD = { gpuName: "Bench CPU", gpuVram: 8 };
const dir = mkdtempSync(join(tmpdir(), "crynux-node-bench-"));
const modelDir = join(dir, "models");
mkdirSync(modelDir, { recursive: true });
await generateTestModel(join(modelDir, "tiny.gguf"), { seed: 7 });

const args = (i: number): GptTaskArgsInput =>
  ({
    model: "file:tiny.gguf",
    messages: [{ role: "user", content: `Benchmark question number ${i}.` }],
    generation_config: { max_new_tokens: 16 },
    seed: 42,
  }) as GptTaskArgsInput;

const percentile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!;
const rows: string[] = [];
/** The headline figures, for bench/results/node.json (the summary reads them). */
const figures: Record<string, unknown> = { tasks: TASKS };

// ---------------------------------------------------------------------------------------------- overhead
/**
 * `poll`: the relay, the nodes and the app poll the chain every 20 ms. `push`: they get new heads over anvil's
 * WebSocket (`createHeadWatcher`, eth_subscribe newHeads) and poll only every second, as a fallback.
 */
async function measureOverhead(mode: "poll" | "push") {
  const push = mode === "push";
  const pollMs = push ? 1000 : 20;
  const anvil = await startAnvil({ accounts: 6, balanceEther: 100_000 });
  const stops: (() => Promise<void>)[] = [() => anvil.stop()];
  try {
    const deployment = await deployCrynux(anvil.walletClient(0), anvil.publicClient);
    const relay = await startRelay(
      {
        rpcUrl: anvil.rpcUrl,
        taskContract: deployment.task,
        port: 0,
        confirmations: 0,
        pollingIntervalMs: pollMs,
        ...(push ? { webSocketUrl: anvil.rpcUrl.replace(/^http/, "ws") } : {}),
        dataDir: IN_MEMORY,
        // each mode on its own chain has its own relay blobs and node state (a node keeps its cursor and its
        // task records in its state directory: the other chain's would be taken for this one's)
        blobDir: join(dir, mode, "blobs"),
      },
      { onIndexerError: () => {} },
    );
    stops.unshift(() => relay.stop());
    const executor = await createGptExecutor({
      resolveModel: createModelResolver({ modelDir, cacheDir: join(dir, "cache") }),
    });
    // The intervals during which an execution ran. Their union is subtracted, not the sum of the calls'
    // durations: the shared executor runs one call at a time, and a call's duration includes its wait
    // behind the others.
    let intervals: [number, number][] = [];
    const inferenceMs = () => {
      let total = 0;
      let end = Number.NEGATIVE_INFINITY;
      for (const [a, b] of [...intervals].sort((x, y) => x[0] - y[0])) {
        if (b <= end) continue;
        total += b - Math.max(a, end);
        end = b;
      }
      return total;
    };
    const timed: Pick<GptExecutor, "execute" | "runtimeId" | "loadedModels"> = {
      runtimeId: executor.runtimeId,
      loadedModels: () => executor.loadedModels(),
      async execute(a, options) {
        const start = performance.now();
        try {
          return await executor.execute(a, options);
        } finally {
          intervals.push([start, performance.now()]);
        }
      },
    };
    const heads = push ? createHeadWatcher({ url: anvil.rpcUrl.replace(/^http/, "ws") }) : undefined;
    // closed before the chain stops (stops run first to last; anvil's stop is last)
    if (heads) stops.unshift(async () => heads.close());
    const nodes = [1, 2, 3].map((account) => {
      const walletClient = anvil.walletClient(account);
      return createNode({
        publicClient: anvil.publicClient,
        walletClient,
        contracts: deployment,
        relayUrl: relay.url,
        relay: createRelayClient({
          url: relay.url,
          account: walletClient.account as never,
          pollIntervalMs: 20,
        }),
        stateDir: join(dir, mode, `node-${account}`),
        gpt: timed,
        card: CARD,
        confirmations: 0,
        pollingIntervalMs: pollMs,
        heads,
        argsWaitMs: 2000,
      });
    });
    stops.unshift(async () => {
      await Promise.all(nodes.map((node) => node.stop()));
      await executor.dispose();
    });
    await Promise.all(nodes.map((node) => node.start()));
    // BENCH_NODE_TRACE=1: each task's timeline (ms since its start) on stderr, to see where the time goes
    let traceStart = 0;
    const trace = (what: string) => {
      if (TRACE) console.error(`  ${(performance.now() - traceStart).toFixed(0).padStart(5)} ms  ${what}`);
    };
    if (TRACE)
      nodes.forEach((node, n) => {
        node.events.on("taskStarted", () => trace(`node ${n + 1}: task started`));
        node.events.on("taskStep", (record) => trace(`node ${n + 1}: step ${record.step}`));
        node.events.on("taskActivity", (activity) =>
          trace(
            `node ${n + 1}: ${activity.kind}${"functionName" in activity ? ` ${activity.functionName}` : ""}`,
          ),
        );
      });
    const app = createCrynuxClient({
      chain: anvil.chain,
      transport: http(anvil.rpcUrl),
      account: privateKeyToAccount(anvil.accounts[4]!.privateKey),
      relayUrl: relay.url,
      contracts: deployment,
      // viem's receipt polls (createTask) stay at 20 ms; waitForTask follows `heads` when pushed
      pollingInterval: 20,
      relay: { pollIntervalMs: 20 },
      heads,
    });
    const run = (i: number) => {
      traceStart = performance.now();
      return app.runGptTask(args(i), {
        fee: parseEther("1"),
        pollingIntervalMs: pollMs,
        onProgress: (progress) => trace(`app: ${progress.stage}`),
      });
    };
    // warm-up: the model loads, every code path is compiled
    await run(-1);
    console.error(`node bench (${mode}): warmed up`);
    const overheads: number[] = [];
    const totals: number[] = [];
    const inference: number[] = [];
    const untilIdle = async () => {
      for (;;) {
        const statuses = await Promise.all(
          nodes.map((node) =>
            anvil.publicClient.readContract({
              address: deployment.node,
              abi: nodeAbi,
              functionName: "getNodeStatus",
              args: [node.address],
            }),
          ),
        );
        if (statuses.every((status) => status === NodeStatus.AVAILABLE)) return;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };
    for (let i = 0; i < TASKS; i++) {
      await untilIdle();
      intervals = [];
      const start = performance.now();
      await run(i);
      const total = performance.now() - start;
      console.error(`node bench (${mode}): task ${i + 1}/${TASKS} in ${total.toFixed(0)} ms`);
      totals.push(total);
      inference.push(inferenceMs());
      overheads.push(total - inferenceMs());
    }
    for (const xs of [overheads, totals, inference]) xs.sort((a, b) => a - b);
    return { overheads, totals, inference };
  } finally {
    for (const [n, stop] of stops.entries()) {
      if (process.env.BENCH_NODE_DEBUG) console.error(`stop ${n}`);
      await stop().catch(() => {});
    }
  }
}

const fmt = (ms: number) => `${ms.toFixed(0)} ms`;
const summary = (xs: number[]) => ({ p50: percentile(xs, 0.5), p90: percentile(xs, 0.9) });
for (const mode of MODES) {
  const { overheads, totals, inference } = await measureOverhead(mode);
  const how = mode === "push" ? "heads pushed (WebSocket)" : "chain polled every 20 ms";
  figures[mode] = {
    endToEndMs: summary(totals),
    inferenceMs: summary(inference),
    overheadMs: summary(overheads),
  };
  rows.push(
    `| ${how}: GPT task end to end (create → result downloaded), ${TASKS} tasks | ${fmt(percentile(totals, 0.5))} | ${fmt(percentile(totals, 0.9))} |`,
    `| ${how}: of which inference (3 executions, one after the other; the time any of them ran) | ${fmt(percentile(inference, 0.5))} | ${fmt(percentile(inference, 0.9))} |`,
    `| ${how}: **protocol overhead** (everything but inference; target ≤ 250 ms) | **${fmt(percentile(overheads, 0.5))}** | ${fmt(percentile(overheads, 0.9))} |`,
  );
}
figures["overheadMs"] = ((figures["push"] ?? figures["poll"]) as { overheadMs: unknown }).overheadMs;
figures["overheadTargetMs"] = 250;

// ---------------------------------------------------------------------------------------------- peak RSS
{
  const anvil = await startAnvil({ accounts: 6, balanceEther: 100_000 });
  const children: ChildProcess[] = [];
  let relayStop: (() => Promise<void>) | undefined;
  try {
    const deployment = await deployCrynux(anvil.walletClient(0), anvil.publicClient);
    const relay = await startRelay(
      {
        rpcUrl: anvil.rpcUrl,
        taskContract: deployment.task,
        port: 0,
        confirmations: 0,
        pollingIntervalMs: 50,
        dataDir: IN_MEMORY,
        blobDir: join(dir, "blobs-rss"),
      },
      { onIndexerError: () => {} },
    );
    relayStop = () => relay.stop();
    writeFileSync(join(dir, "deployment.json"), JSON.stringify({ ...deployment, chainId: anvil.chain.id }));
    const cli = join(import.meta.dirname, "..", "examples", "node", "src", "cli.ts");
    const listening: Promise<void>[] = [];
    const outputs: string[] = [];
    for (const account of [1, 2, 3]) {
      const nodeDir = join(dir, `rss-node-${account}`);
      mkdirSync(nodeDir, { recursive: true });
      writeFileSync(join(nodeDir, "node.key"), anvil.accounts[account]!.privateKey, { mode: 0o600 });
      const config = join(nodeDir, "crynux-node.json");
      writeFileSync(
        config,
        JSON.stringify({
          chain: { rpcUrl: anvil.rpcUrl, deploymentFile: "../deployment.json" },
          relayUrl: relay.url,
          account: { privateKeyFile: "node.key" },
          stateDir: "./state",
          models: { modelDir, cacheDir: join(dir, "cache") },
          gpt: { threads: 1 },
          card: CARD,
          confirmations: 0,
          pollingIntervalMs: 50,
          api: { port: 0 },
          log: { level: "info", format: "json" },
        }),
      );
      const child = spawn(
        process.execPath,
        ["--conditions=source", "--import", "tsx", cli, "start", "--config", config],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      children.push(child);
      listening.push(
        new Promise((resolve, reject) => {
          let out = "";
          const index = outputs.push("") - 1;
          const collect = (chunk: Buffer) => {
            out += chunk.toString();
            outputs[index] = out.slice(-4000);
            if (out.includes('"msg":"node started"')) resolve();
          };
          child.stdout!.on("data", collect);
          child.stderr!.on("data", collect);
          child.once("exit", (code) => reject(new Error(`node exited with ${code}: ${out.slice(-2000)}`)));
        }),
      );
    }
    await Promise.all(listening);
    const app = createCrynuxClient({
      chain: anvil.chain,
      transport: http(anvil.rpcUrl),
      account: privateKeyToAccount(anvil.accounts[4]!.privateKey),
      relayUrl: relay.url,
      contracts: deployment,
      pollingInterval: 50,
    });
    for (let i = 0; i < 5; i++) {
      await app
        .runGptTask(args(100 + i), { fee: parseEther("1"), signal: AbortSignal.timeout(120_000) })
        .catch((error: unknown) => {
          throw new Error(`task ${i} failed; node logs:\n${outputs.join("\n---\n")}`, { cause: error });
        });
    }
    const peaks = children.map((child) => {
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN);
      return kb / 1024;
    });
    figures["peakRssMiB"] = { max: Math.max(...peaks), min: Math.min(...peaks) };
    rows.push(
      `| peak RSS of one node process (VmHWM after 5 tasks; a generated tiny F32 model) | ${Math.max(...peaks).toFixed(0)} MiB | min ${Math.min(...peaks).toFixed(0)} MiB |`,
    );
  } finally {
    for (const child of children) child.kill("SIGTERM");
    await Promise.all(
      children.map((child) =>
        child.exitCode !== null ? undefined : new Promise((resolve) => child.once("exit", resolve)),
      ),
    );
    await relayStop?.().catch(() => {});
    await anvil.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(
  [
    "### node (anvil with instant mining, confirmations 0)",
    "",
    "| measure | median | p90 |",
    "|---|---:|---:|",
    ...rows,
  ].join("\n"),
);
writeResults("node", figures);
