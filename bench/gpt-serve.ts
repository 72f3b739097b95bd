/**
 * Child process of gpt.bench.ts: serves GPT tasks on one model with the GptExecutor and prints the peak
 * resident memory, so the figure is the executor's alone.
 *
 *   tsx --conditions=source bench/gpt-serve.ts <model.gguf> <tasks>
 */
import { resolve } from "node:path";
import { createGptExecutor, fileSha256 } from "@crynux/node-core";

const [model, count] = process.argv.slice(2);
if (!model || !count) {
  console.error("usage: gpt-serve.ts <model.gguf> <tasks>");
  process.exit(2);
}
const path = resolve(model);
const sha256 = await fileSha256(path);
const executor = await createGptExecutor({ resolveModel: async () => ({ path, sha256 }) });
let tokens = 0;
for (let i = 0; i < Number(count); i++) {
  const { response } = await executor.execute({
    model: `file:${path}`,
    messages: [{ role: "user", content: `Task ${i}: write a long story about ships.` }],
    generation_config: { max_new_tokens: 16 },
  });
  tokens += response.usage.completion_tokens;
}
await executor.dispose();
console.log(JSON.stringify({ maxRssBytes: process.resourceUsage().maxRSS * 1024, tokens }));
