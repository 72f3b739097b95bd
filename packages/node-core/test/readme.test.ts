import { afterAll, expect, it } from "vitest";
import { readmeSnippets } from "../../../test-support/readme.js";

const readme = readmeSnippets(new URL("../", import.meta.url));
afterAll(readme.cleanup);

it("runs the README snippet", async () => {
  expect(readme.snippets).toHaveLength(1);
  const [runtime, hash, reason] = (await readme.run(0))[0]!;
  expect(runtime).toBe("node-llama-cpp@3.22.1/cpu/t1/b512/c4096");
  expect(hash).toMatch(/^0x[0-9a-f]{64}$/);
  expect(reason).toMatch(/^(stop|length)$/);
}, 60_000);
