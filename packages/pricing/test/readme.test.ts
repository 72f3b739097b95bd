import { afterAll, expect, it } from "vitest";
import { readmeSnippets } from "../../../test-support/readme.js";

const readme = readmeSnippets(new URL("../", import.meta.url));
afterAll(readme.cleanup);

it("runs the README snippet and prints what its comments say", async () => {
  expect(readme.snippets).toHaveLength(1);
  const logs = await readme.run(0);
  expect(logs[0]).toEqual(["0.2", "0.214"]);
  expect(logs[1]).toEqual([["12", "10.8", "7.2"]]);
  const [fee, wait] = logs[2] as [string, number];
  expect(Number(fee)).toBeGreaterThan(0);
  expect(wait).toBeLessThanOrEqual(60);
});
