import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type Devnet, startDevnet } from "../src/network.js";
import { chatThroughBridge, queueScenario, sdkGptTask } from "../src/scenarios.js";

// The devnet with new heads pushed over anvil's WebSocket to the relay, the nodes, the bridge and the SDK
// client (polls only once a second, as a fallback): the same scenarios as the demo settle as they do polled.
let devnet: Devnet;

beforeAll(async () => {
  devnet = await startDevnet({ pushHeads: true });
}, 240_000);

afterAll(async () => {
  await devnet?.stop();
});

describe("devnet with pushed heads", () => {
  test("a chat completion through the bridge with the openai client", async () => {
    const chat = await chatThroughBridge(devnet, () => {});
    expect(chat.answer.trim()).not.toBe("");
    expect(chat.settlement.matches).toBe(true);
  }, 120_000);

  test("a GPT task with the SDK: every stage seen, fee split as feeShares", async () => {
    const sdk = await sdkGptTask(devnet, () => {});
    expect(sdk.stages).toEqual(["started", "committed", "success"]);
    expect(sdk.settlement.matches).toBe(true);
  }, 120_000);

  test("more tasks than nodes start in order of value", async () => {
    const queue = await queueScenario(devnet, () => {});
    expect(queue.outcomes).toEqual(["success", "success", "success"]);
    expect(queue.startOrder).toEqual(queue.valueOrder);
    for (const settlement of queue.settlements) expect(settlement.matches).toBe(true);
  }, 180_000);
});
