import { createRelayClient, type RelayTaskArgs } from "@crynux/client";
import { taskAbi, taskCommitment, withSelectionGasMargin } from "@crynux/contracts";
import type { AnvilInstance } from "@crynux/contracts/testing";
import {
  type GptMessage,
  type GptResponse,
  type GptTaskArgs,
  gptResultHash,
  resolveGenerationConfig,
} from "@crynux/tasks";
import { type Address, type Hex, keccak256, toHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { type Chain, sdImages, selectedNodes } from "../../relay/test/http-helpers.js";

export { Chain, sdImages } from "../../relay/test/http-helpers.js";

function messageText(message: GptMessage): string {
  if (typeof message.content === "string") return message.content;
  return (message.content ?? []).map((part) => (part.type === "text" ? part.text : "[image]")).join(" ");
}

/**
 * What the test network answers a GPT task: "echo: <last message>" per returned sequence (numbered when
 * there are several), cut to `max_new_tokens` words (finish reason `length` then). Deterministic, so the 3
 * nodes agree.
 */
export function echoResponse(args: GptTaskArgs): GptResponse {
  const config = resolveGenerationConfig(args.generation_config);
  const words = `echo: ${messageText(args.messages.at(-1)!)}`.split(/\s+/);
  const n = config.num_return_sequences;
  let completion = 0;
  const choices = Array.from({ length: n }, (_, index) => {
    const all = n > 1 ? [...words, `#${index}`] : words;
    const kept = all.slice(0, config.max_new_tokens);
    completion += kept.length;
    return {
      index,
      message: { role: "assistant" as const, content: kept.join(" ") },
      finish_reason: kept.length < all.length ? ("length" as const) : ("stop" as const),
    };
  });
  const prompt = args.messages.map(messageText).join(" ").split(/\s+/).length;
  return {
    model: args.model,
    choices,
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
  };
}

const fakeArgs = (content: string): GptTaskArgs => ({
  model: "o/r:Q4_0",
  messages: [{ role: "user", content }],
  tools: null,
  generation_config: null,
  template_args: null,
  seed: 0,
  dtype: "auto",
  quantize_bits: null,
});

export type NodeWatcher = {
  /** Tasks served to the end, by id. */
  served: bigint[];
  /** Errors met while serving (a test asserts there are none). */
  errors: unknown[];
  stop(): Promise<void>;
};

/**
 * The 3 test-driven nodes: every task that starts, in id order, has its arguments fetched from the relay as a
 * selected node, gets a deterministic result (echo text, or test PNGs for the SD seed and image count),
 * committed and disclosed by the 3 nodes; the result node uploads it to the relay and reports the upload.
 * `gate` may hold a task (after its arguments were fetched) until it resolves. A GPT task whose last message
 * contains "disagree" gets 3 different results, which aborts it (results mismatch).
 */
export function startNodeWatcher(parameters: {
  anvil: AnvilInstance;
  chain: Chain;
  relayUrl: string;
  gate?: (fetched: RelayTaskArgs) => Promise<void>;
}): NodeWatcher {
  const { anvil, chain } = parameters;
  const served: bigint[] = [];
  const errors: unknown[] = [];
  let stopped = false;
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const relayOf = (node: Address) => {
    const entry = anvil.accounts.find((a) => a.address.toLowerCase() === node.toLowerCase())!;
    return createRelayClient({
      url: parameters.relayUrl,
      account: privateKeyToAccount(entry.privateKey),
      pollIntervalMs: 100,
    });
  };

  const startedNodes = async (taskId: bigint): Promise<Address[] | null> => {
    while (!stopped) {
      const nodes = await selectedNodes(chain, taskId);
      if (nodes.length === 3 && nodes.every((n) => !/^0x0{40}$/.test(n))) return nodes;
      await sleep(50);
    }
    return null;
  };

  /** Each node commits and discloses its own result: no two agree. */
  const disagree = async (taskId: bigint, nodes: Address[]) => {
    const results = nodes.map((_, round) => gptResultHash(echoResponse(fakeArgs(`round ${round}`))));
    const nonce = (round: number): Hex => keccak256(toHex(`disagree ${taskId} ${round}`));
    const send = async (node: Address, functionName: string, args: unknown[]) => {
      const index = anvil.accounts.findIndex((a) => a.address.toLowerCase() === node.toLowerCase());
      const wallet = anvil.walletClient(index);
      const request = {
        address: chain.task,
        abi: taskAbi,
        functionName,
        args,
        account: wallet.account,
      } as never;
      const gas = withSelectionGasMargin(await anvil.publicClient.estimateContractGas(request));
      const hash = await wallet.writeContract({ ...(request as object), gas } as never);
      const receipt = await anvil.publicClient.waitForTransactionReceipt({ hash });
      if (receipt.status !== "success") throw new Error(`${functionName} reverted`);
    };
    for (const [round, node] of nodes.entries())
      await send(node, "submitCommitment", [
        taskId,
        BigInt(round),
        taskCommitment(results[round]!, nonce(round)),
      ]);
    for (const [round, node] of nodes.entries())
      await send(node, "disclose", [taskId, BigInt(round), results[round]!, nonce(round)]);
  };

  const serve = async (taskId: bigint) => {
    const nodes = await startedNodes(taskId);
    if (!nodes) return;
    const fetched = await relayOf(nodes[0]!).getTaskArgs(taskId, { waitMs: 60_000 });
    await parameters.gate?.(fetched);
    if (stopped) return;
    if (fetched.taskType === 1 && messageText(fetched.args.messages.at(-1)!).includes("disagree")) {
      await disagree(taskId, nodes);
    } else if (fetched.taskType === 1) {
      const response = echoResponse(fetched.args);
      const { resultNode } = await chain.succeed(taskId, nodes, gptResultHash(response));
      await relayOf(resultNode).uploadResults(taskId, { response }, { waitMs: 60_000 });
      await chain.reportUploaded(taskId, resultNode);
    } else {
      const { num_images, seed } = fetched.args.task_config;
      const { images, result } = sdImages(num_images, seed);
      const { resultNode } = await chain.succeed(taskId, nodes, result);
      await relayOf(resultNode).uploadResults(taskId, { images }, { waitMs: 60_000 });
      await chain.reportUploaded(taskId, resultNode);
    }
    served.push(taskId);
  };

  const loop = (async () => {
    let next = 1n;
    while (!stopped) {
      try {
        const total = await anvil.publicClient.readContract({
          address: chain.task,
          abi: taskAbi,
          functionName: "totalTasks",
        });
        // One at a time: the 3 nodes can hold only one task anyway.
        for (; next <= total && !stopped; next++) await serve(next);
      } catch (error) {
        if (!stopped) errors.push(error);
        next++;
      }
      await sleep(100);
    }
  })();

  return {
    served,
    errors,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}
