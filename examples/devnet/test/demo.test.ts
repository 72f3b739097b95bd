import { nodeAbi } from "@crynux/contracts";
import { parseCnx } from "@crynux/pricing";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { readmeSnippets } from "../../../test-support/readme.js";
import { type Devnet, devnetEnv, startDevnet } from "../src/network.js";
import {
  type ChatResult,
  type CheaterResult,
  chatThroughBridge,
  cheaterScenario,
  type QueueResult,
  queueScenario,
  type SdkTaskResult,
  type Settlement,
  sdkGptTask,
} from "../src/scenarios.js";

// The demo's scenario, step by step, on one devnet; each test depends on the previous ones (the cheater is
// last: once slashed, only two nodes are left).
let devnet: Devnet;
const lines: string[] = [];
const say = (line: string) => lines.push(line);

beforeAll(async () => {
  devnet = await startDevnet({ cheater: true, log: say });
}, 240_000);

afterAll(async () => {
  await devnet?.stop();
});

function expectSplitEqualsFeeShares(settlement: Settlement) {
  for (const round of settlement.rounds) {
    expect(round.paid).toBe(round.expected);
    expect(Number(round.qos.weight)).toBe(round.qos.expectedWeight);
  }
  expect(settlement.refund).toBe(settlement.expected.refund);
  const paid = settlement.rounds.reduce((sum, r) => sum + r.paid, 0n);
  expect(paid + settlement.refund).toBe(settlement.fee);
  expect(settlement.matches).toBe(true);
}

describe("the devnet demo", () => {
  let chat: ChatResult;
  let sdk: SdkTaskResult;
  let queue: QueueResult;
  let cheater: CheaterResult;

  test("(1) a chat completion through the bridge with the openai client answers, and pays the nodes by feeShares", async () => {
    chat = await chatThroughBridge(devnet, say);
    expect(chat.answer.trim()).not.toBe("");
    expect(chat.model).toBe(devnet.model.bridgeModel);
    expect(chat.settlement.fee).toBeGreaterThan(0n);
    expectSplitEqualsFeeShares(chat.settlement);
    for (const round of chat.settlement.rounds) expect(round.slashed).toBe(false);
  }, 180_000);

  test("(2) a GPT task with the SDK succeeds; the fee split equals feeShares", async () => {
    sdk = await sdkGptTask(devnet, say);
    expect(sdk.stages).toEqual(["started", "committed", "success"]);
    expect(sdk.answer.trim()).not.toBe("");
    expect(sdk.taskId).toBeGreaterThan(chat.taskId);
    expect(sdk.resultNode).not.toBeNull();
    expect(sdk.settlement.fee).toBe(sdk.fee);
    expectSplitEqualsFeeShares(sdk.settlement);
    // Nodes with tasks have a score history: their weight comes from it (a new node's weight is 20).
    for (const round of sdk.settlement.rounds) expect(round.qos.tasks).toBeGreaterThanOrEqual(2n);
  }, 180_000);

  test("(3) three tasks queued while a node is paused start in order of value", async () => {
    const fees = [parseCnx("0.01"), parseCnx("0.03"), parseCnx("0.02")];
    queue = await queueScenario(devnet, say, fees);
    expect(queue.tasks.map((t) => t.queued)).toEqual([true, true, true]);
    expect(queue.outcomes).toEqual(["success", "success", "success"]);
    // Same arguments' size, so the same cap: value follows the fee.
    expect(new Set(queue.tasks.map((t) => t.cap)).size).toBe(1);
    const [low, high, middle] = queue.tasks.map((t) => t.taskId);
    expect(queue.valueOrder).toEqual([high, middle, low]);
    expect(queue.startOrder).toEqual(queue.valueOrder);
    for (const settlement of queue.settlements) expectSplitEqualsFeeShares(settlement);
  }, 240_000);

  test("the client README's dApp quick start runs as written against this devnet", async () => {
    const readme = readmeSnippets(new URL("../../../packages/client/", import.meta.url));
    const env = devnetEnv(devnet);
    const saved = Object.fromEntries(Object.keys(env).map((name) => [name, process.env[name]]));
    Object.assign(process.env, env);
    try {
      const logs = await readme.run(1);
      const lines = logs.map((args) => args.join(" "));
      expect(lines.slice(0, 3)).toEqual(["started", "committed", "success"]);
      expect(lines[3]).toMatch(/^task \d+ paid 0\.\d+ CNX: \S/);
      say(`client README snippet: ${lines[3]}`);
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      readme.cleanup();
    }
  }, 180_000);

  test("(4) a node that alters its output is slashed: stake to the treasury, its share back to the creator", async () => {
    const stakeAmount = await devnet.anvil.publicClient.readContract({
      address: devnet.contracts.node,
      abi: nodeAbi,
      functionName: "stakeAmount",
    });
    cheater = await cheaterScenario(devnet, say);
    expect(cheater.cheater).toBe(devnet.accounts.nodes[2]!.address);
    expect(cheater.slashedNodes).toEqual([cheater.cheater]);
    expect(cheater.answer.trim()).not.toBe("");
    expect(cheater.answer).not.toContain("made up");
    expect(cheater.stakeSlashed).toBe(stakeAmount);
    expect(cheater.treasury?.toLowerCase()).toBe(devnet.contracts.treasury.toLowerCase());
    expect(cheater.treasuryGain).toBe(stakeAmount);
    expect(cheater.cheaterStatus).toBe("quit");
    const { settlement } = cheater;
    const slashed = settlement.rounds.find((r) => r.node.toLowerCase() === cheater.cheater.toLowerCase())!;
    expect(slashed.slashed).toBe(true);
    expect(slashed.paid).toBe(0n);
    expect(settlement.refund).toBeGreaterThan(0n);
    for (const round of settlement.rounds.filter((r) => r !== slashed))
      expect(round.paid).toBeGreaterThan(0n);
    expectSplitEqualsFeeShares(settlement);
  }, 180_000);

  test("the faucet sends CNX, from code and over HTTP", async () => {
    const { publicClient } = devnet.anvil;
    const to = devnet.accounts.users[3]!.address;
    const before = await publicClient.getBalance({ address: to });
    await devnet.faucet(to, parseCnx("1.5"));
    const response = await fetch(`${devnet.urls.faucet}/faucet`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ address: to, amount: "2" }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ address: to, amount: "2" });
    expect((await publicClient.getBalance({ address: to })) - before).toBe(parseCnx("3.5"));
    const refused = await fetch(`${devnet.urls.faucet}/faucet`, {
      method: "POST",
      body: JSON.stringify({ address: "0x1234", amount: "2" }),
    });
    expect(refused.status).toBe(400);
  });

  test("stop() leaves no process behind", async () => {
    const children = devnet.childPids();
    expect(children).toContain(devnet.anvil.pid);
    await devnet.stop();
    for (const pid of children) expect(isAlive(pid), `process ${pid} still runs`).toBe(false);
    expect(devnet.childPids()).toEqual([]);
    // stop() twice is harmless (afterAll calls it again).
    await devnet.stop();
  }, 60_000);
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw error;
  }
}
