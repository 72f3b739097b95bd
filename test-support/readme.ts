import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { vi } from "vitest";

/**
 * The ```ts snippets of a package's README, runnable as modules: a README is documentation a user copies,
 * so the tests run each snippet as written and look at what it prints.
 */
export function readmeSnippets(packageDir: URL): {
  snippets: string[];
  run: (index: number) => Promise<unknown[][]>;
  cleanup: () => void;
} {
  const readme = readFileSync(new URL("README.md", packageDir), "utf8");
  const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!);
  // Written inside the package, so that workspace packages resolve as they would for a user.
  const dir = mkdtempSync(join(packageDir.pathname, ".readme-"));
  return {
    snippets,
    async run(index) {
      const file = join(dir, `snippet-${index}.ts`);
      writeFileSync(file, snippets[index]!);
      const logs: unknown[][] = [];
      const spy = vi.spyOn(console, "log").mockImplementation((...args) => {
        logs.push(args);
      });
      try {
        await import(file);
      } finally {
        spy.mockRestore();
      }
      return logs;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
