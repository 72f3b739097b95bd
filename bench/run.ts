/** `npm run bench`: runs every benchmark suite in this folder, one after another. */
import { readdirSync } from "node:fs";

for (const file of readdirSync(import.meta.dirname)
  .filter((name) => name.endsWith(".bench.ts"))
  .sort()) {
  await import(`./${file}`);
}
