import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

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

/** Prints rows as a Markdown table (ready to paste into a README) and writes them as JSON. */
export function report(suite: string, rows: BenchRow[]): void {
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
  const dir = join(import.meta.dirname, "results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${suite.toLowerCase().replace(/[^a-z0-9]+/g, "-")}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        suite,
        node: process.version,
        platform: `${process.platform}-${process.arch}`,
        date: new Date().toISOString(),
        rows,
      },
      null,
      2,
    ),
  );
}

function formatMs(ms: number): string {
  if (ms >= 1) return `${ms.toFixed(2)} ms`;
  if (ms >= 0.001) return `${(ms * 1000).toFixed(2)} µs`;
  return `${(ms * 1e6).toFixed(0)} ns`;
}
