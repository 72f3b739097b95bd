import { execFile, spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type Abi, formatEther, getAddress, parseEther } from "viem";
import { afterAll, describe, expect, test } from "vitest";
import { compileSources } from "../scripts/compileLib.js";
import { ANVIL_MNEMONIC, type AnvilInstance, startAnvil, withAnvil } from "../src/testing/index.js";
import { useAnvil } from "../src/testing/vitest.js";

const here = path.dirname(fileURLToPath(import.meta.url));

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitUntilGone(pid: number, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return !isAlive(pid);
}

const GREETER = `// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

contract Greeter {
    string public greeting;
    event GreetingChanged(address indexed by, string greeting);

    constructor(string memory initial) payable {
        greeting = initial;
    }

    function setGreeting(string calldata next) external {
        greeting = next;
        emit GreetingChanged(msg.sender, next);
    }
}
`;

describe("startAnvil", () => {
  const started: AnvilInstance[] = [];
  afterAll(async () => {
    await Promise.all(started.map((anvil) => anvil.stop()));
  });

  test("runs two instances side by side, each with its own port, chain id and funded accounts", async () => {
    const [first, second] = await Promise.all([
      startAnvil({ chainId: 31337, accounts: 3 }),
      startAnvil({ chainId: 4242, accounts: 2, balanceEther: 5 }),
    ]);
    started.push(first, second);

    expect(first.port).not.toBe(second.port);
    expect(first.pid).not.toBe(second.pid);
    expect(first.rpcUrl).toBe(`http://127.0.0.1:${first.port}`);
    expect(await first.publicClient.getChainId()).toBe(31337);
    expect(await second.publicClient.getChainId()).toBe(4242);
    expect(first.chain.id).toBe(31337);
    expect(second.chain.nativeCurrency.symbol).toBe("CNX");

    // anvil's well-known first dev account, derived from the "test ... junk" mnemonic.
    expect(first.accounts).toHaveLength(3);
    expect(first.accounts[0]).toEqual({
      address: getAddress("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"),
      privateKey: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    });
    expect(second.accounts.map((account) => account.address)).toEqual(
      first.accounts.slice(0, 2).map((account) => account.address),
    );
    expect(await first.publicClient.getBalance({ address: first.accounts[2]!.address })).toBe(
      parseEther("10000"),
    );
    expect(formatEther(await second.publicClient.getBalance({ address: second.accounts[1]!.address }))).toBe(
      "5",
    );

    // A transfer on one chain does not show on the other.
    const wallet = first.walletClient(1);
    const hash = await wallet.sendTransaction({ to: first.accounts[2]!.address, value: parseEther("1") });
    const receipt = await first.publicClient.waitForTransactionReceipt({ hash });
    expect(receipt.status).toBe("success");
    expect(await first.publicClient.getBalance({ address: first.accounts[2]!.address })).toBe(
      parseEther("10001"),
    );
    expect(await second.publicClient.getBalance({ address: second.accounts[1]!.address })).toBe(
      parseEther("5"),
    );
    expect(() => second.walletClient(2)).toThrow(/accounts 0 to 1/);

    // Mining and time travel through the test client.
    const before = await second.publicClient.getBlockNumber();
    await second.testClient.mine({ blocks: 5 });
    expect(await second.publicClient.getBlockNumber()).toBe(before + 5n);
    const snapshot = await second.testClient.snapshot();
    await second.testClient.mine({ blocks: 2 });
    await second.testClient.revert({ id: snapshot });
    expect(await second.publicClient.getBlockNumber()).toBe(before + 5n);
  });

  test("stop() ends the process and is idempotent", async () => {
    const anvil = await startAnvil({ accounts: 1 });
    expect(isAlive(anvil.pid)).toBe(true);
    await anvil.stop();
    expect(isAlive(anvil.pid)).toBe(false);
    await anvil.stop();
    await expect(anvil.publicClient.getChainId()).rejects.toThrow();
  });

  test("deploys and calls a contract compiled in memory", async () => {
    const { contracts } = compileSources({ "Greeter.sol": GREETER });
    const greeter = contracts.find((contract) => contract.name === "Greeter")!;
    const abi = greeter.abi as unknown as Abi;

    await withAnvil(async (anvil) => {
      const wallet = anvil.walletClient(0);
      const hash = await wallet.deployContract({
        abi,
        bytecode: greeter.bytecode,
        args: ["hello"],
        value: 7n,
      });
      const { contractAddress, status } = await anvil.publicClient.waitForTransactionReceipt({ hash });
      expect(status).toBe("success");
      const address = contractAddress!;
      expect(await anvil.publicClient.getBalance({ address })).toBe(7n);
      expect(await anvil.publicClient.readContract({ address, abi, functionName: "greeting" })).toBe("hello");

      const { request } = await anvil.publicClient.simulateContract({
        account: wallet.account,
        address,
        abi,
        functionName: "setGreeting",
        args: ["gm"],
      });
      const receipt = await anvil.publicClient.waitForTransactionReceipt({
        hash: await wallet.writeContract(request),
      });
      expect(receipt.logs).toHaveLength(1);
      expect(await anvil.publicClient.readContract({ address, abi, functionName: "greeting" })).toBe("gm");
    });
  });

  test("reports why anvil did not start", async () => {
    await expect(startAnvil({ args: ["--no-such-flag"] })).rejects.toThrow(
      /anvil exited \(code \d+\)[\s\S]*no-such-flag/,
    );
  });

  test("uses the standard anvil mnemonic", () => {
    expect(ANVIL_MNEMONIC).toBe("test test test test test test test test test test test junk");
  });
});

describe.concurrent("no anvil outlives its process", () => {
  const tsxLoader = createRequire(import.meta.url).resolve("tsx");
  const fixture = path.join(here, "anvilOrphan.fixture.ts");

  test.each(["exit", "drain"])(
    "when the process ends by %s without stop()",
    async (mode) => {
      const { stdout } = await promisify(execFile)(process.execPath, ["--import", tsxLoader, fixture, mode], {
        timeout: 110_000,
      });
      const { pid } = JSON.parse(stdout.trim()) as { pid: number };
      expect(await waitUntilGone(pid)).toBe(true);
    },
    120_000,
  );

  test("when the process is killed by SIGTERM", async () => {
    const child = spawn(process.execPath, ["--import", tsxLoader, fixture, "signal"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout.once("data", (chunk: Buffer) => resolve(chunk.toString("utf8")));
      child.once("exit", (code) => reject(new Error(`fixture exited early with ${code}`)));
    });
    const { pid } = JSON.parse(line.trim()) as { pid: number };
    expect(isAlive(pid)).toBe(true);
    const exited = new Promise((resolve) => child.once("exit", (_code, signal) => resolve(signal)));
    child.kill("SIGTERM");
    expect(await exited).toBe("SIGTERM");
    expect(await waitUntilGone(pid)).toBe(true);
  }, 120_000);
});

describe("useAnvil", () => {
  const anvil = useAnvil({ accounts: 2, blockTime: 1 });

  test("gives each test the same started instance", async () => {
    expect(await anvil().publicClient.getChainId()).toBe(31337);
    const start = await anvil().publicClient.getBlockNumber();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await anvil().publicClient.getBlockNumber()).toBeGreaterThan(start);
  });
});
