import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { getAddress } from "viem";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { IN_MEMORY, loadBridgeConfig, resolveBridgeConfig } from "../src/config.js";
import { BridgeConfigError } from "../src/errors.js";

const KEY = `0x${"ab".repeat(32)}`;
const ADDRESSES = {
  node: "0x5fbdb2315678afecb367f032d93f642f64180aa3",
  task: "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512",
  taskQueue: "0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0",
  qos: "0xcf7ed3acca5a467e9e704c703e8d87f634fb0fc9",
  networkStats: "0xdc64a140aa3e981100a9beca4e685f962f0cf6c9",
  treasury: "0x5fc8d32690cc91d4c39d9d3abcbd16989f875707",
};
const MODELS = { chat: { type: "gpt", model: "o/r:Q4_0" } } as const;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "bridge-config-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("bridge config", () => {
  test("file, then CRYNUX_BRIDGE_* env, then overrides; relative paths from the file; key and deployment files", async () => {
    await writeFile(path.join(dir, "key.txt"), `${KEY.slice(2)}\n`, { mode: 0o600 });
    await writeFile(
      path.join(dir, "deployment.json"),
      JSON.stringify({ ...ADDRESSES, chainId: 31337, blockNumber: 5 }),
    );
    const file = path.join(dir, "bridge.json");
    await writeFile(
      file,
      JSON.stringify({
        port: 9000,
        privateKeyFile: "key.txt",
        deploymentFile: "deployment.json",
        dataDir: "data/db",
        models: MODELS,
        apiKeys: [{ name: "app", keySha256: "AA".repeat(32), quota: { spendPerDayWei: "1000" } }],
      }),
    );
    const config = await loadBridgeConfig({
      file,
      env: {
        CRYNUX_BRIDGE_PORT: "9100",
        CRYNUX_BRIDGE_MAX_FEE_WEI: "12345",
        CRYNUX_BRIDGE_RELAY_URL: "http://relay.example:8088",
      },
      overrides: { host: "0.0.0.0" },
    });
    expect(config).toMatchObject({
      host: "0.0.0.0",
      port: 9100,
      relayUrl: "http://relay.example:8088",
      privateKey: KEY,
      dataDir: path.join(dir, "data/db"),
      chainId: 31337,
      deploymentBlock: 5n,
      fees: { maxFeeWei: 12345n, targetWaitSeconds: 60 },
      walletReserveWei: 10n ** 16n,
    });
    expect(config.contracts.task).toBe(getAddress(ADDRESSES.task));
    expect(config.apiKeys[0]).toMatchObject({ keySha256: "aa".repeat(32), quota: { spendPerDayWei: 1000n } });
    expect(config.models["chat"]).toMatchObject({ defaultMaxTokens: 256, maxTokens: 4096 });
    // What the CLI does: startBridge resolves the loaded configuration again.
    expect(await resolveBridgeConfig(config)).toEqual(config);
  });

  test("refuses a config without wallet, models or keys, naming the fields", async () => {
    const error = await resolveBridgeConfig({ contracts: ADDRESSES, models: {}, apiKeys: [] } as never).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(BridgeConfigError);
    const details = (error as BridgeConfigError).details ?? "";
    for (const field of ["models", "apiKeys", "privateKey"]) expect(details).toContain(field);
    const both = await resolveBridgeConfig({
      privateKey: KEY,
      contracts: ADDRESSES,
      dataDir: IN_MEMORY,
      models: MODELS,
      apiKeys: [{ name: "x", key: "a-long-enough-key-123", keySha256: "aa".repeat(32) }],
    } as never).catch((e: unknown) => e);
    expect((both as BridgeConfigError).details).toContain("exactly one of key and keySha256");
  });
});
