import { describe, expect, test } from "vitest";
import { NodeStatus, NodeTaskTypes, RoundFlag, TaskState } from "../src/states.js";
import { CNX, GPT, SD, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux();

describe("TaskState, NodeStatus and RoundFlag mirror the contracts", () => {
  test("the task states are the Task contract's STATE_* constants", async () => {
    const c = crynux();
    for (const [name, value] of Object.entries(TaskState)) {
      expect(await c.read("task", `STATE_${name}`), name).toBe(value);
    }
  });

  test("the node statuses are the Node contract's constants", async () => {
    const c = crynux();
    for (const [name, value] of Object.entries(NodeStatus)) {
      expect(await c.read("node", name), name).toBe(value);
    }
  });

  test("the task-type bits are the Node contract's TASK_TYPES_* constants (1 << task type)", async () => {
    const c = crynux();
    expect(await c.read("node", "TASK_TYPES_SD")).toBe(NodeTaskTypes.SD);
    expect(await c.read("node", "TASK_TYPES_GPT")).toBe(NodeTaskTypes.GPT);
    expect(NodeTaskTypes.SD).toBe(1 << SD);
    expect(NodeTaskTypes.GPT).toBe(1 << GPT);
    expect(NodeTaskTypes.ALL).toBe(NodeTaskTypes.SD | NodeTaskTypes.GPT);
  });

  test("keys are in the order of their numbers (name lists are built from them)", () => {
    expect(Object.values(TaskState)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(Object.values(NodeStatus)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  test("round flags as a slashed task leaves them", async () => {
    const c = crynux();
    for (const i of [1, 2, 3]) await c.join(i);
    const { taskId, nodes } = await c.createTask(20, { taskType: GPT, fee: CNX });
    const good = `0x${"11".repeat(32)}` as const;
    const bad = `0x${"22".repeat(32)}` as const;
    const results = [good, bad, good];
    for (const r of [0, 1, 2]) await c.commit(taskId, r, nodes[r]!, results[r]!);
    for (const r of [1, 0, 2]) await c.disclose(taskId, r, nodes[r]!, results[r]!);
    const [, , , flags] = await c.read<[string, number, number, number]>("task", "getRound", [taskId, 1n]);
    expect(flags).toBe(RoundFlag.RELEASED | RoundFlag.SLASHED);
  });
});
