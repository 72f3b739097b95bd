import { type CrynuxDeployment, deployCrynux, NodeTaskTypes, nodeAbi } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { createTxSender, TxRevertedError } from "@crynux/node-core";
import { createPublicClient, custom, http, type PublicClient } from "viem";
import { beforeAll, describe, expect, test } from "vitest";

const anvil = useAnvil({ accounts: 6 });
let deployment: CrynuxDeployment;
const STAKE = 400n * 10n ** 18n;

beforeAll(async () => {
  deployment = await deployCrynux(anvil().walletClient(0), anvil().publicClient);
}, 60_000);

const nonceOf = (index: number) =>
  anvil().publicClient.getTransactionCount({ address: anvil().accounts[index]!.address });

describe("transaction sender", () => {
  test("a revert is found by the simulation, named after the contract's custom error, and nothing is sent", async () => {
    const sender = createTxSender({
      walletClient: anvil().walletClient(1),
      publicClient: anvil().publicClient as PublicClient,
    });
    const before = await nonceOf(1);
    const error = await sender
      .send({ address: deployment.node, abi: nodeAbi, functionName: "pause" })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TxRevertedError);
    expect((error as TxRevertedError).errorName).toBe("IllegalNodeStatus");
    expect((error as TxRevertedError).errorArgs).toEqual([0]);
    const wrongStake = await sender
      .send({
        address: deployment.node,
        abi: nodeAbi,
        functionName: "join",
        args: ["gpu", 8n, "rt", NodeTaskTypes.GPT],
        value: 1n,
      })
      .catch((e: unknown) => e);
    expect((wrongStake as TxRevertedError).errorName).toBe("WrongStakeAmount");
    expect(await nonceOf(1)).toBe(before);
  });

  test("concurrent sends of one account go out one at a time with consecutive nonces", async () => {
    const sender = createTxSender({
      walletClient: anvil().walletClient(2),
      publicClient: anvil().publicClient as PublicClient,
    });
    const before = await nonceOf(2);
    const join = sender.send({
      address: deployment.node,
      abi: nodeAbi,
      functionName: "join",
      args: ["gpu", 8n, "rt", NodeTaskTypes.GPT],
      value: STAKE,
    });
    const pause = sender.send({ address: deployment.node, abi: nodeAbi, functionName: "pause" });
    const resume = sender.send({ address: deployment.node, abi: nodeAbi, functionName: "resume" });
    const results = await Promise.all([join, pause, resume]);
    expect(results.every((r) => r.receipt.status === "success")).toBe(true);
    expect(await nonceOf(2)).toBe(before + 3);
  });

  test("a nonce used behind the sender's back is resynchronized", async () => {
    const walletClient = anvil().walletClient(3);
    const retries: unknown[] = [];
    const sender = createTxSender({
      walletClient,
      publicClient: anvil().publicClient as PublicClient,
      onRetry: ({ error }) => retries.push(error),
    });
    await sender.send({
      address: deployment.node,
      abi: nodeAbi,
      functionName: "join",
      args: ["gpu", 8n, "rt", NodeTaskTypes.GPT],
      value: STAKE,
    });
    // Another program spends the next nonce with the same key; the sender still believes it is free.
    const hash = await walletClient.sendTransaction({ to: anvil().accounts[5]!.address, value: 1n });
    await anvil().publicClient.waitForTransactionReceipt({ hash });
    const sent = await sender.send({ address: deployment.node, abi: nodeAbi, functionName: "pause" });
    expect(sent.receipt.status).toBe("success");
    expect(retries).toHaveLength(1);
    expect(String(retries[0])).toMatch(/nonce/i);
    const status = await anvil().publicClient.readContract({
      address: deployment.node,
      abi: nodeAbi,
      functionName: "getNodeStatus",
      args: [walletClient.account.address],
    });
    expect(status).toBe(5); // PAUSED
  });

  test("RPC failures while broadcasting are retried with backoff; the transaction lands once", async () => {
    const upstream = http(anvil().rpcUrl)({ chain: anvil().chain });
    let failures = 2;
    const flaky = createPublicClient({
      chain: anvil().chain,
      pollingInterval: 50,
      transport: custom({
        async request({ method, params }) {
          if (method === "eth_sendRawTransaction" && failures > 0) {
            failures -= 1;
            throw new Error("connection reset by peer");
          }
          return upstream.request({ method, params } as never);
        },
      }),
    }) as PublicClient;
    const retries: number[] = [];
    const sender = createTxSender({
      walletClient: anvil().walletClient(4),
      publicClient: flaky,
      backoffMs: 20,
      onRetry: ({ attempt }) => retries.push(attempt),
    });
    const before = await nonceOf(4);
    const sent = await sender.send({
      address: deployment.node,
      abi: nodeAbi,
      functionName: "join",
      args: ["gpu", 8n, "rt", NodeTaskTypes.GPT],
      value: STAKE,
    });
    expect(sent.receipt.status).toBe("success");
    expect(retries).toEqual([1, 2]);
    expect(await nonceOf(4)).toBe(before + 1);
  });

  test("fee estimates are reused for feeCacheMs, with room for twice the base fee they were taken at", async () => {
    const upstream = http(anvil().rpcUrl)({ chain: anvil().chain });
    const counting = (calls: string[]) =>
      createPublicClient({
        chain: anvil().chain,
        transport: custom({
          async request({ method, params }) {
            calls.push(method);
            return upstream.request({ method, params } as never);
          },
        }),
      }) as PublicClient;
    const send = (sender: ReturnType<typeof createTxSender>, functionName: "pause" | "resume") =>
      sender.send({ address: deployment.node, abi: nodeAbi, functionName });

    const cached: string[] = [];
    const sender = createTxSender({ walletClient: anvil().walletClient(5), publicClient: counting(cached) });
    const joined = await sender.send({
      address: deployment.node,
      abi: nodeAbi,
      functionName: "join",
      args: ["gpu", 8n, "rt", NodeTaskTypes.GPT],
      value: STAKE,
    });
    await send(sender, "pause");
    await send(sender, "resume");
    expect(cached.filter((m) => m === "eth_maxPriorityFeePerGas")).toHaveLength(1);
    const tx = await anvil().publicClient.getTransaction({ hash: joined.hash });
    const block = await anvil().publicClient.getBlock({ blockNumber: joined.receipt.blockNumber - 1n });
    // 2 × the base fee of the block the estimate was taken at, plus the tip (viem alone allows 1.2 ×).
    const room = tx.maxFeePerGas! - tx.maxPriorityFeePerGas!;
    expect(room <= 2n * block.baseFeePerGas! && room >= 2n * block.baseFeePerGas! - 2n).toBe(true);

    const fresh: string[] = [];
    const uncached = createTxSender({
      walletClient: anvil().walletClient(5),
      publicClient: counting(fresh),
      feeCacheMs: 0,
    });
    await send(uncached, "pause");
    await send(uncached, "resume");
    expect(fresh.filter((m) => m === "eth_maxPriorityFeePerGas")).toHaveLength(2);
  });
});
