/**
 * Worker thread of network.bench.ts: the applications. Each runs `runGptTask` back to back with its own
 * account until told to stop, and reports every finished or failed task. They run on their own thread so that
 * their JavaScript (signing, polling, hashing) does not share the devnet's event loop, as real users would not.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createCrynuxClient, createHeadWatcher } from "@crynux/client";
import { type CrynuxDeployment, defineCrynuxChain } from "@crynux/contracts";
import type { GptTaskArgsInput } from "@crynux/tasks";
import { type Hex, http, parseEther } from "viem";
import { privateKeyToAccount } from "viem/accounts";

export type LoadSettings = {
  chainId: number;
  rpcUrl: string;
  /** The RPC's WebSocket endpoint: the applications' task waits and receipts follow pushed heads. */
  webSocketUrl?: string | undefined;
  relayUrl: string;
  contracts: CrynuxDeployment;
  privateKeys: Hex[];
  model: string;
  maxNewTokens: number;
};

/** Times are `performance.timeOrigin + performance.now()`: comparable across threads. */
export type LoadMessage =
  | {
      type: "done";
      startedAt: number;
      doneAt: number;
      /** ms from the call to each stage the application saw. */
      stages: Partial<Record<string, number>>;
    }
  | { type: "failed"; at: number; message: string }
  | { type: "stopped" };

const settings = workerData as LoadSettings;
const port = parentPort!;
const now = () => performance.timeOrigin + performance.now();
const chain = defineCrynuxChain({
  id: settings.chainId,
  name: "Crynux devnet",
  rpcUrl: settings.rpcUrl,
  testnet: true,
});
const stop = new AbortController();
port.on("message", (message: unknown) => {
  if (message === "stop") stop.abort(new Error("the measurement is over"));
});

let counter = 0;
const heads = settings.webSocketUrl
  ? createHeadWatcher({ url: settings.webSocketUrl, onError: () => {} })
  : undefined;
const loops = settings.privateKeys.map(async (key) => {
  const client = createCrynuxClient({
    heads,
    chain,
    transport: http(settings.rpcUrl),
    account: privateKeyToAccount(key),
    relayUrl: settings.relayUrl,
    contracts: settings.contracts,
    pollingInterval: 200,
    relay: { pollIntervalMs: 200 },
  });
  while (!stop.signal.aborted) {
    const startedAt = now();
    const stages: Partial<Record<string, number>> = {};
    try {
      const args = {
        model: settings.model,
        messages: [
          { role: "user", content: `Throughput question number ${counter++}: tell me about ships.` },
        ],
        generation_config: { max_new_tokens: settings.maxNewTokens },
        seed: 42,
      } as GptTaskArgsInput;
      const result = await client.runGptTask(args, {
        fee: parseEther("1"),
        signal: stop.signal,
        onProgress: ({ stage }) => {
          stages[stage] ??= now() - startedAt;
        },
      });
      if (result.response.choices.length !== 1) throw new Error("expected one choice in the response");
      port.postMessage({ type: "done", startedAt, doneAt: now(), stages } satisfies LoadMessage);
    } catch (error) {
      if (stop.signal.aborted) break;
      const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      port.postMessage({ type: "failed", at: now(), message } satisfies LoadMessage);
      // A failure that repeats at once (the relay down, say) must not spin the thread.
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
});
await Promise.all(loops);
heads?.close();
port.postMessage({ type: "stopped" } satisfies LoadMessage);
