/**
 * `npm run bench [-- suite ...]`: runs the benchmark suites of this folder (all of them, or the ones named:
 * `npm run bench -- network gas`), one after another, then prints the summary table of every suite's latest
 * results and writes it into docs/performance.md.
 */
import { readdirSync } from "node:fs";
import { writeSummary } from "./summary.js";

const available = readdirSync(import.meta.dirname)
  .filter((name) => name.endsWith(".bench.ts"))
  .map((name) => name.slice(0, -".bench.ts".length))
  .sort();
const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !available.includes(name));
if (unknown.length > 0) {
  console.error(`unknown suite(s): ${unknown.join(", ")}; available: ${available.join(", ")}`);
  process.exit(2);
}

// A failing suite does not stop the others: the summary shows its older results (with their date) or none.
const failed: string[] = [];
for (const suite of wanted.length > 0 ? available.filter((name) => wanted.includes(name)) : available) {
  try {
    await import(`./${suite}.bench.ts`);
  } catch (error) {
    failed.push(suite);
    console.error(`suite ${suite} failed:`, error);
  }
}
writeSummary();
if (failed.length > 0) {
  console.error(`failed: ${failed.join(", ")}`);
  process.exitCode = 1;
}
