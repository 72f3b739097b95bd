import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, it, vi } from "vitest";

// The README's snippet is the package's documentation: run it as a module, as a user would.
const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!);
const dir = mkdtempSync(join(new URL("..", import.meta.url).pathname, ".readme-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("runs the README snippet", async () => {
  expect(snippets).toHaveLength(1);
  const file = join(dir, "snippet.ts");
  writeFileSync(file, snippets[0]!);
  const logs: unknown[][] = [];
  const spy = vi.spyOn(console, "log").mockImplementation((...args) => {
    logs.push(args);
  });
  try {
    await import(file);
  } finally {
    spy.mockRestore();
  }
  const [runtime, hash, reason] = logs[0]!;
  expect(runtime).toBe("node-llama-cpp@3.22.1/cpu/t1/b512/c4096");
  expect(hash).toMatch(/^0x[0-9a-f]{64}$/);
  expect(reason).toMatch(/^(stop|length)$/);
}, 60_000);
