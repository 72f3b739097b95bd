import { afterAll, expect, it } from "vitest";
import { readmeSnippets } from "../../../test-support/readme.js";

const readme = readmeSnippets(new URL("../", import.meta.url));
afterAll(readme.cleanup);

it("runs the README snippet: deploy, three nodes join, a GPT task starts on them", async () => {
  expect(readme.snippets).toHaveLength(1);
  const logs = await readme.run(0);
  const selected = logs[0]![0] as [number, string][];
  expect(selected.map(([round]) => round)).toEqual([0, 1, 2]);
  expect(new Set(selected.map(([, node]) => node)).size).toBe(3);
}, 60_000);
