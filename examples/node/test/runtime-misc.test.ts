import { cpus, totalmem } from "node:os";
import {
  classifyFailure,
  cpuCard,
  detectCard,
  ExecutionAbortedError,
  HubHttpError,
  InvalidModelFileError,
  jsonLinesLogger,
  MemoryBudgetExceededError,
  ModelNotFoundError,
  PromptTooLongError,
  TxRevertedError,
} from "@crynux/node-core";
import { TaskArgsError } from "@crynux/tasks";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { describe, expect, test } from "vitest";

describe("card detection", () => {
  test("a CPU-only engine reports the CPU model and the memory in whole GB", async () => {
    const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
    try {
      const card = await detectCard({ llama });
      expect(card).toEqual(cpuCard());
      expect(card.gpuName).toBe(cpus()[0]!.model.trim().replace(/\s+/g, " "));
      expect(card.gpuVram).toBe(Math.max(1, Math.round(totalmem() / 2 ** 30)));
    } finally {
      await llama.dispose();
    }
  }, 60_000);
});

describe("failure classification", () => {
  test("the creator's faults become error reports, the node's are retried, what it cannot hold is skipped", () => {
    expect(classifyFailure(new PromptTooLongError(5000, 100, 4096))).toEqual({
      kind: "creator",
      reason: "prompt_too_long",
    });
    expect(classifyFailure(new TaskArgsError("bad", []))).toEqual({ kind: "creator", reason: "bad_args" });
    expect(
      classifyFailure(new ModelNotFoundError("gone", { ref: "file:x.gguf", reason: "missing" })),
    ).toEqual({ kind: "creator", reason: "model_not_found" });
    expect(
      classifyFailure(new InvalidModelFileError("bad file", { ref: "file:x.gguf", path: "/x.gguf" })),
    ).toEqual({ kind: "creator", reason: "model_invalid" });
    // Offline without the model cached: another node may have it.
    expect(
      classifyFailure(new ModelNotFoundError("offline", { ref: "hf:a/b", reason: "not-cached" })),
    ).toEqual({ kind: "node" });
    expect(classifyFailure(new MemoryBudgetExceededError(2 ** 33, 2 ** 30))).toEqual({ kind: "unable" });
    expect(classifyFailure(new ExecutionAbortedError("stopped"))).toEqual({ kind: "node" });
    expect(classifyFailure(new HubHttpError("down", { url: "https://hf.co", transient: true }))).toEqual({
      kind: "node",
    });
    expect(classifyFailure(new TypeError("fetch failed"))).toEqual({ kind: "node" });
    expect(
      classifyFailure(new TxRevertedError({ functionName: "disclose", errorName: "AlreadyDisclosed" })),
    ).toEqual({ kind: "node" });
  });
});

describe("JSON lines logger", () => {
  test("one JSON object per line from the chosen level up, bigints as strings, errors by name", () => {
    const lines: string[] = [];
    const logger = jsonLinesLogger({ level: "info", write: (line) => lines.push(line), base: { node: 1 } });
    logger.debug("hidden");
    logger.info("sent", { hash: "0x01", gas: 21000n });
    logger.warn("failed", {
      error: new TxRevertedError({ functionName: "pause", errorName: "IllegalNodeStatus" }),
    });
    expect(lines).toHaveLength(2);
    expect(lines.every((line) => line.endsWith("\n"))).toBe(true);
    const [sent, failed] = lines.map((line) => JSON.parse(line));
    expect(sent).toMatchObject({ level: "info", msg: "sent", node: 1, hash: "0x01", gas: "21000" });
    expect(failed.error).toEqual({ name: "TxRevertedError", message: "pause reverted: IllegalNodeStatus" });
  });
});
