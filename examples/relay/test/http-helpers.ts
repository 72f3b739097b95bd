import { deployCrynux, nodeAbi, taskAbi, taskCommitment, withSelectionGasMargin } from "@crynux/contracts";
import type { AnvilInstance } from "@crynux/contracts/testing";
import { encodePng, imagePHash, sdResultFromPHashes } from "@crynux/tasks";
import {
  type Abi,
  type Address,
  type Hex,
  keccak256,
  type Log,
  parseEther,
  parseEventLogs,
  type TransactionReceipt,
  toHex,
} from "viem";

/** An RGBA test picture: a smooth gradient whose direction and phase depend on `seed`, so pHashes differ. */
export function picture(width: number, height: number, seed: number): Uint8Array {
  const pixels = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 4;
      pixels[p] = Math.round(127.5 + 127.5 * Math.sin((x * (seed + 1)) / 7 + seed));
      pixels[p + 1] = Math.round(127.5 + 127.5 * Math.cos((y * (seed + 2)) / 9 - seed));
      pixels[p + 2] = ((x + y) * (seed + 3)) & 0xff;
      pixels[p + 3] = 255;
    }
  }
  return pixels;
}

export { encodePng };

/** PNG images and the SD result (concatenated pHashes) a node would disclose for them. */
export function sdImages(count: number, seed: number, side = 96): { images: Uint8Array[]; result: Hex } {
  const images: Uint8Array[] = [];
  const hashes: bigint[] = [];
  for (let i = 0; i < count; i++) {
    const pixels = picture(side, side, seed + i);
    images.push(encodePng(pixels, side, side));
    hashes.push(imagePHash(pixels, side, side));
  }
  return { images, result: sdResultFromPHashes(hashes) };
}

const allAbi = [...taskAbi, ...nodeAbi] as Abi;

/** Drives the deployed contracts with anvil dev accounts, the way nodes and apps would. */
export class Chain {
  private constructor(
    readonly anvil: AnvilInstance,
    readonly task: Address,
    readonly node: Address,
  ) {}

  static async deploy(anvil: AnvilInstance): Promise<Chain> {
    const addresses = await deployCrynux(anvil.walletClient(0), anvil.publicClient);
    return new Chain(anvil, addresses.task, addresses.node);
  }

  address(i: number): Address {
    return this.anvil.accounts[i]!.address;
  }

  private async send(
    from: number | Address,
    contract: "task" | "node",
    functionName: string,
    args: unknown[],
    value?: bigint,
  ): Promise<TransactionReceipt> {
    const index =
      typeof from === "number"
        ? from
        : this.anvil.accounts.findIndex((a) => a.address.toLowerCase() === from.toLowerCase());
    const request = {
      address: contract === "task" ? this.task : this.node,
      abi: contract === "task" ? taskAbi : nodeAbi,
      functionName,
      args,
      value,
      account: this.anvil.walletClient(index).account,
    } as never;
    const gas = withSelectionGasMargin(await this.anvil.publicClient.estimateContractGas(request));
    const hash = await this.anvil.walletClient(index).writeContract({ ...(request as object), gas } as never);
    const receipt = await this.anvil.publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`${functionName} reverted`);
    return receipt;
  }

  join(i: number): Promise<TransactionReceipt> {
    return this.send(i, "node", "join", ["NVIDIA GeForce RTX 4090", 24n, "relay-test", 3], parseEther("400"));
  }

  async createTask(creator: number, taskType: 0 | 1, hash: Hex) {
    const receipt = await this.send(
      creator,
      "task",
      "createTask",
      [taskType, hash, keccak256(toHex("data")), 0n, 1n],
      parseEther("50"),
    );
    const logs = parseEventLogs({ abi: allAbi, logs: receipt.logs as Log[] }) as unknown as {
      eventName: string;
      args: Record<string, unknown>;
    }[];
    const started = logs.filter((l) => l.eventName === "TaskStarted");
    const queued = logs.find((l) => l.eventName === "TaskQueued");
    const taskId = (started[0]?.args["taskId"] ?? queued?.args["taskId"]) as bigint;
    return { taskId, receipt, nodes: started.map((l) => l.args["selectedNode"] as Address) };
  }

  private static nonce(taskId: bigint, round: number): Hex {
    return keccak256(toHex(`nonce ${taskId} ${round}`));
  }

  /**
   * Every node commits and discloses `result`: TaskSuccess names the first discloser (round 0) as result
   * node. Returns the receipt of the last transaction.
   */
  async succeed(
    taskId: bigint,
    nodes: Address[],
    result: Hex,
  ): Promise<{ resultNode: Address; block: bigint }> {
    for (const [round, node] of nodes.entries()) {
      await this.send(node, "task", "submitCommitment", [
        taskId,
        BigInt(round),
        taskCommitment(result, Chain.nonce(taskId, round)),
      ]);
    }
    let block = 0n;
    for (const [round, node] of nodes.entries()) {
      const receipt = await this.send(node, "task", "disclose", [
        taskId,
        BigInt(round),
        result,
        Chain.nonce(taskId, round),
      ]);
      block = receipt.blockNumber;
    }
    return { resultNode: nodes[0]!, block };
  }

  /** The result node reports the upload, which frees it for the next task. */
  reportUploaded(taskId: bigint, resultNode: Address): Promise<TransactionReceipt> {
    return this.send(resultNode, "task", "reportResultsUploaded", [taskId, 0n]);
  }
}

/** Reads the selected nodes of a task from the chain (a queued task gets them when it starts). */
export async function selectedNodes(chain: Chain, taskId: bigint): Promise<Address[]> {
  const task = (await chain.anvil.publicClient.readContract({
    address: chain.task,
    abi: taskAbi,
    functionName: "getTask",
    args: [taskId],
  })) as unknown as readonly unknown[];
  return [...(task[9] as readonly Address[])];
}
