import { afterAll, describe, expect, it } from "vitest";
import { readmeSnippets } from "../../../test-support/readme.js";

const readme = readmeSnippets(new URL("../", import.meta.url));
afterAll(readme.cleanup);

describe("README snippets", () => {
  it("validates GPT args, computes the task hash and work units, previews the prompt", async () => {
    const logs = await readme.run(0);
    const [{ hash, cap, prompt }] = logs[0] as [{ hash: string; cap: bigint; prompt: string }];
    expect(hash).toMatch(/^0x[0-9a-f]{64}$/);
    expect(cap).toBe(48n);
    expect(prompt).toBe("<|im_start|>user\nWrite a haiku about GPUs.<|im_end|>\n<|im_start|>assistant\n");
    expect(logs[1]).toEqual([["generation_config.top_p", "seed"]]);
  });

  it("compares SD results", async () => {
    const logs = await readme.run(1);
    expect(logs[0]![1]).toBe(true);
  });
});
