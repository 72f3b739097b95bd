import { expect, test } from "vitest";
import { recordTrial } from "./reliability.js";

test("recordTrial attaches trials to the running test", (context) => {
  recordTrial(context, { area: "Self-check", fault: "nothing", runs: 2, expected: "two rows" });
  expect(context.task.meta.reliability).toEqual([
    { area: "Self-check", fault: "nothing", runs: 2, expected: "two rows" },
  ]);
  expect(() => recordTrial(context, { area: "x", fault: "y", runs: 0, expected: "z" })).toThrow(/runs/);
  // Not a real trial: keep it out of docs/reliability.md.
  delete context.task.meta.reliability;
});
