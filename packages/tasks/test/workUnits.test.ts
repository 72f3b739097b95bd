import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TaskArgsError, TaskType, UnknownTaskTypeError, workUnits } from "../src/index.js";
import { gptArgsArbitrary, sdArgsArbitrary } from "./arbitraries.js";

const gpt = { model: "o/r:Q4_0", messages: [{ role: "user", content: "Hi" }] };
const sd = { base_model: "m", prompt: "p", task_config: {} };

describe("workUnits (cap)", () => {
  it("GPT: max_new_tokens × num_return_sequences, defaults 256 × 1", () => {
    expect(workUnits(TaskType.GPT, gpt)).toBe(256n);
    expect(workUnits(TaskType.GPT, { ...gpt, generation_config: { max_new_tokens: 100 } })).toBe(100n);
    expect(workUnits(TaskType.GPT, { ...gpt, generation_config: { num_return_sequences: 3 } })).toBe(768n);
    expect(
      workUnits(TaskType.GPT, { ...gpt, generation_config: { max_new_tokens: 40, num_return_sequences: 2 } }),
    ).toBe(80n);
  });

  it("SD: num_images, default 6", () => {
    expect(workUnits(TaskType.SD, sd)).toBe(6n);
    expect(workUnits(TaskType.SD, { ...sd, task_config: { num_images: 2 } })).toBe(2n);
  });

  it("validates the arguments for the task type", () => {
    expect(() => workUnits(TaskType.SD, gpt)).toThrow(TaskArgsError);
    expect(() => workUnits(TaskType.GPT, sd)).toThrow(TaskArgsError);
    expect(() => workUnits(2 as TaskType, sd)).toThrow(UnknownTaskTypeError);
  });

  it("is positive and bounded for every valid task", () => {
    fc.assert(
      fc.property(gptArgsArbitrary, (args) => {
        const cap = workUnits(TaskType.GPT, args);
        expect(cap >= 1n && cap <= 131072n * 10n).toBe(true);
      }),
    );
    fc.assert(
      fc.property(sdArgsArbitrary, (args) => {
        const cap = workUnits(TaskType.SD, args);
        expect(cap >= 1n && cap <= 10n).toBe(true);
      }),
    );
  });
});
