import { mkdirSync, writeFileSync } from "node:fs";
import { arch, availableParallelism, cpus, loadavg, release, totalmem, type } from "node:os";
import { join } from "node:path";

/** The folder every suite writes its `<suite>.json` into, and the summary reads from. */
export const RESULTS_DIR = join(import.meta.dirname, "results");

/** The machine a figure was taken on: figures from different machines are not comparable. */
export type Machine = {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  os: string;
  /** 1-minute load average when the suite finished: above the core count, the machine was shared. */
  loadAverage1m: number;
};

export function describeMachine(): Machine {
  return {
    cpu: cpus()[0]?.model.trim() ?? "unknown",
    cores: availableParallelism(),
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    os: `${type()} ${release()} ${arch()}`,
    loadAverage1m: Math.round(loadavg()[0]! * 100) / 100,
  };
}

/**
 * Writes `bench/results/<file>.json`: the suite's own figures with when, where and on what they were taken.
 * The summary (`bench/summary.ts`) reads these files, so a suite's headline figures must be in them.
 */
export function writeResults(file: string, data: Record<string, unknown>): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    join(RESULTS_DIR, `${file}.json`),
    `${JSON.stringify(
      {
        suite: file,
        node: process.version,
        platform: `${process.platform}-${process.arch}`,
        date: new Date().toISOString(),
        machine: describeMachine(),
        ...data,
      },
      (_, value) => (typeof value === "bigint" ? value.toString() : value),
      2,
    )}\n`,
  );
}

/** One measured operation. */
export type BenchRow = {
  name: string;
  /** Median time of one operation, in milliseconds. */
  medianMs: number;
  /** Operations per second at the median. */
  opsPerSecond: number;
  /** Throughput in MB/s when the operation has a size. */
  mbPerSecond?: number;
  samples: number;
};

/**
 * Times `fn` after a warm-up: `samples` rounds of as many calls as fit in ~`roundMs`, reporting the median
 * per-call time. Medians and ratios from one run are what to compare; the machines are shared and noisy.
 */
export function measure(
  name: string,
  fn: () => unknown,
  options: { bytes?: number; samples?: number; roundMs?: number } = {},
): BenchRow {
  const samples = options.samples ?? 15;
  const roundMs = options.roundMs ?? 40;
  for (let i = 0; i < 3; i++) fn();
  let calls = 1;
  for (;;) {
    const start = performance.now();
    for (let i = 0; i < calls; i++) fn();
    if (performance.now() - start >= roundMs / 4 || calls > 1 << 20) break;
    calls *= 2;
  }
  const times: number[] = [];
  for (let s = 0; s < samples; s++) {
    const start = performance.now();
    for (let i = 0; i < calls; i++) fn();
    times.push((performance.now() - start) / calls);
  }
  times.sort((a, b) => a - b);
  const medianMs = times[Math.floor(times.length / 2)]!;
  const row: BenchRow = { name, medianMs, opsPerSecond: 1000 / medianMs, samples };
  if (options.bytes !== undefined) row.mbPerSecond = options.bytes / 1e6 / (medianMs / 1000);
  return row;
}

/**
 * Prints rows as a Markdown table (ready to paste into a README) and writes them as JSON, to
 * `bench/results/<file>.json` (default: the title in kebab case).
 */
export function report(suite: string, rows: BenchRow[], file?: string): void {
  const lines = [
    `### ${suite}`,
    "",
    "| operation | median | ops/s | MB/s |",
    "|---|---:|---:|---:|",
    ...rows.map(
      (row) =>
        `| ${row.name} | ${formatMs(row.medianMs)} | ${Math.round(row.opsPerSecond).toLocaleString("en-US")} | ${
          row.mbPerSecond === undefined ? "" : row.mbPerSecond.toFixed(1)
        } |`,
    ),
  ];
  console.log(lines.join("\n") + "\n");
  writeResults(file ?? suite.toLowerCase().replace(/[^a-z0-9]+/g, "-"), { title: suite, rows });
}

function formatMs(ms: number): string {
  if (ms >= 1) return `${ms.toFixed(2)} ms`;
  if (ms >= 0.001) return `${(ms * 1000).toFixed(2)} µs`;
  return `${(ms * 1e6).toFixed(0)} ns`;
}
