import { afterAll, expect, it } from "vitest";
import { readmeSnippets } from "../../../test-support/readme.js";

const readme = readmeSnippets(new URL("../", import.meta.url));
afterAll(readme.cleanup);

// Snippet 1, the dApp quick start, needs a network: examples/devnet/test/demo.test.ts runs it on a devnet.
it("runs the README's signing snippet and prints what its comments say", async () => {
  expect(readme.snippets).toHaveLength(2);
  const logs = await readme.run(0);
  expect(logs).toEqual([["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"]]);
});
