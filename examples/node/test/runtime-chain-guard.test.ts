import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CrynuxDeployment, deployCrynux } from "@crynux/contracts";
import { type AnvilInstance, startAnvil } from "@crynux/contracts/testing";
import { createNode, NodeRuntimeError } from "@crynux/node-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

// A node's state directory holds a chain cursor and task records: they must never be read against another chain.
// A restarted anvil has the same chain id and (deterministic deployment) the same contract addresses, but not
// the same genesis block.
const chains: { anvil: AnvilInstance; deployment: CrynuxDeployment }[] = [];
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-node-chain-guard-"));
  for (let i = 0; i < 2; i++) {
    // anvil's genesis is its start time: two started within the same second would share it
    const genesisTime = Math.floor(Date.now() / 1000) - 100 + 10 * i;
    const anvil = await startAnvil({ accounts: 3, args: ["--timestamp", String(genesisTime)] });
    chains.push({ anvil, deployment: await deployCrynux(anvil.walletClient(0), anvil.publicClient) });
  }
}, 60_000);

afterAll(async () => {
  for (const { anvil } of chains) await anvil.stop();
  await rm(dir, { recursive: true, force: true });
});

const gpt = { runtimeId: "test", loadedModels: () => [], execute: () => Promise.reject(new Error("unused")) };

function node(chain: number, stateDir: string) {
  const { anvil, deployment } = chains[chain]!;
  return createNode({
    publicClient: anvil.publicClient,
    walletClient: anvil.walletClient(1),
    contracts: deployment,
    relayUrl: "http://127.0.0.1:9",
    stateDir,
    gpt: gpt as never,
    join: false,
  });
}

describe("state directory and chain", () => {
  test("a state directory records its chain; another chain with the same id and addresses is refused", async () => {
    expect(chains[0]!.deployment.task).toBe(chains[1]!.deployment.task);
    expect(chains[0]!.anvil.chain.id).toBe(chains[1]!.anvil.chain.id);
    const stateDir = join(dir, "node");
    const first = node(0, stateDir);
    await first.start();
    await first.stop();
    const meta = JSON.parse(await readFile(join(stateDir, "node.json"), "utf8")) as {
      chain: { id: number; genesis: string; task: string };
    };
    const genesis = await chains[0]!.anvil.publicClient.getBlock({ blockNumber: 0n });
    expect(meta.chain).toEqual({ id: 31337, genesis: genesis.hash, task: chains[0]!.deployment.task });

    // the same chain again: fine
    const again = node(0, stateDir);
    await again.start();
    await again.stop();

    const other = node(1, stateDir);
    const refused = await other.start().then(
      () => undefined,
      (error: unknown) => error,
    );
    await other.stop();
    expect(refused).toBeInstanceOf(NodeRuntimeError);
    expect((refused as NodeRuntimeError).message).toContain("belongs to another chain or deployment");
    expect((refused as NodeRuntimeError).details).toContain(genesis.hash);
  });
});
