import { parseArgs } from "node:util";
import { formatCnx } from "@crynux/pricing";
import { type Devnet, startDevnet } from "./network.js";
import { runDemoScenarios, type Say } from "./scenarios.js";
import { onShutdownSignal } from "./signals.js";

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function parseSeed(value: string): number {
  const seed = Number(value);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error("--seed must be a non-negative integer.");
  return seed;
}

async function main() {
  const { values } = parseArgs({
    options: { model: { type: "string" }, seed: { type: "string" }, verbose: { type: "boolean" } },
  });
  const began = performance.now();
  const say: Say = (line) => console.log(line);
  const elapsed = () => seconds(performance.now() - began);
  say("Crynux devnet demo: anvil + contracts + relay + 3 nodes + bridge, all on this machine");
  let devnet: Devnet | undefined;
  let starting: Promise<Devnet> | undefined;
  let exitCode = 0;
  onShutdownSignal(() => {
    say("\ninterrupted: stopping the devnet");
    // Stops what has started, once the start in progress is done (or has failed).
    void (starting ?? Promise.resolve(undefined))
      .then((started) => started?.stop())
      .catch(() => {})
      .finally(() => process.exit(130));
  });
  try {
    starting = startDevnet({
      cheater: true,
      model: values.model,
      seed: values.seed === undefined ? undefined : parseSeed(values.seed),
      log: (line) => say(`  ${line}`),
      nodeLogLevel: values.verbose ? "info" : undefined,
    });
    devnet = await starting;
    say(
      `network up in ${elapsed()}: bridge ${devnet.urls.openai}, relay ${devnet.urls.relay}, chain ${devnet.urls.rpc}`,
    );
    const result = await runDemoScenarios(devnet, say);
    const settlements = [
      result.chat.settlement,
      result.sdk.settlement,
      ...result.queue.settlements,
      result.cheater.settlement,
    ];
    say("");
    say("summary");
    say(
      `  tasks run: ${settlements.length}, fees paid ${formatCnx(settlements.reduce((s, x) => s + x.fee, 0n))} CNX`,
    );
    say(`  every fee split equals feeShares: ${settlements.every((s) => s.matches) ? "yes" : "NO"}`);
    say(
      `  queue served by value: ${result.queue.startOrder.join() === result.queue.valueOrder.join() ? "yes" : "NO"}`,
    );
    say(`  cheater slashed: ${result.cheater.slashedNodes.includes(result.cheater.cheater) ? "yes" : "NO"}`);
  } catch (error) {
    exitCode = 1;
    console.error(error);
  } finally {
    say("");
    say("shutting down");
    try {
      await devnet?.stop();
    } catch (error) {
      exitCode = 1;
      console.error(error);
    }
  }
  say(`total time ${elapsed()}`);
  process.exit(exitCode);
}

await main();
