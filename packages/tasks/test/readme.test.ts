import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";

// The README's snippets are the package's documentation: run each one as a module, as a user would.
const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!);
// Written inside the package so that "@crynux/tasks" resolves to this workspace package.
const dir = mkdtempSync(join(new URL("..", import.meta.url).pathname, ".readme-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("README snippets", () => {
  it("has snippets", () => {
    expect(snippets.length).toBeGreaterThanOrEqual(2);
  });

  it.each(snippets.map((code, index) => [index, code] as const))("snippet %i runs", async (index, code) => {
    const file = join(dir, `snippet-${index}.ts`);
    writeFileSync(file, code);
    const logs: unknown[][] = [];
    const spy = vi.spyOn(console, "log").mockImplementation((...args) => {
      logs.push(args);
    });
    try {
      await import(file);
    } finally {
      spy.mockRestore();
    }
    expect(logs.length).toBeGreaterThan(0);
    if (index === 0) {
      const [{ hash, cap, prompt }] = logs[0] as [{ hash: string; cap: bigint; prompt: string }];
      expect(hash).toMatch(/^0x[0-9a-f]{64}$/);
      expect(cap).toBe(48n);
      expect(prompt).toBe("<|im_start|>user\nWrite a haiku about GPUs.<|im_end|>\n<|im_start|>assistant\n");
      expect(logs[1]).toEqual([["generation_config.top_p", "seed"]]);
    } else {
      expect(logs[0]![1]).toBe(true);
    }
  });
});
