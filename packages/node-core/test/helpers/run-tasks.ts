/**
 * Runs GPT tasks in a fresh process and prints one JSON line per task: `{ id, resultHash, response }` or
 * `{ id, error }`. Used by the determinism tests to compare separate processes.
 *
 *   node --conditions=source --import tsx run-tasks.ts <tasks.json> <modelDir> <cacheDir> <threads> [order]
 *
 * `order` = "reverse" runs the tasks in reverse order (to show no state carries over between tasks).
 */
import { readFileSync } from "node:fs";
import { createGptExecutor, createModelResolver, DEFAULT_EXECUTION_PROFILE } from "../../src/index.js";

const [tasksFile, modelDir, cacheDir, threads, order] = process.argv.slice(2);
if (!tasksFile || !modelDir || !cacheDir || !threads) {
  console.error("usage: run-tasks.ts <tasks.json> <modelDir> <cacheDir> <threads> [reverse]");
  process.exit(2);
}
const tasks = JSON.parse(readFileSync(tasksFile, "utf8")) as { id: string; args: unknown }[];
if (order === "reverse") tasks.reverse();

const executor = await createGptExecutor({
  resolveModel: createModelResolver({ modelDir, cacheDir, offline: true }),
  profile: { ...DEFAULT_EXECUTION_PROFILE, threads: Number(threads) },
});
try {
  for (const task of tasks) {
    try {
      const { response, resultHash } = await executor.execute(task.args);
      process.stdout.write(`${JSON.stringify({ id: task.id, resultHash, response })}\n`);
    } catch (error) {
      process.stdout.write(`${JSON.stringify({ id: task.id, error: (error as Error).name })}\n`);
    }
  }
} finally {
  await executor.dispose();
}
