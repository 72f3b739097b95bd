import { execFile } from "node:child_process";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type Address, type Hex, parseEther } from "viem";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { type DeploymentFile, runDeployCommand } from "../src/cli/deployCommand.js";
import {
  networkStatsAbi,
  nodeAbi,
  qosAbi,
  taskAbi,
  taskQueueAbi,
  treasuryAbi,
} from "../src/generated/index.js";
import { useAnvil } from "../src/testing/vitest.js";

const anvil = useAnvil();
const root = resolve(fileURLToPath(import.meta.url), "../../../..");
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-deploy-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };

async function run(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runDeployCommand({
    argv,
    env,
    stdout: (text) => out.push(text),
    stderr: (text) => err.push(text),
  });
  return { code, stdout: out.join("\n"), stderr: err.join("\n") };
}

async function keyFile(name: string, key: Hex, mode: number): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, `${key}\n`);
  await chmod(file, mode); // explicit: the umask would otherwise decide
  return file;
}

/** Neither the key nor its hex digits without the prefix appear anywhere in the output. */
function expectNoKey(output: Run, key: Hex): void {
  for (const text of [output.stdout, output.stderr]) {
    expect(text).not.toContain(key.slice(2));
    expect(text.toLowerCase()).not.toContain(key.slice(2).toLowerCase());
  }
}

function read<const abi extends readonly unknown[]>(address: Address, abi: abi, functionName: string) {
  return anvil().publicClient.readContract({
    address,
    abi: abi as never,
    functionName: functionName as never,
  });
}

describe("crynux-deploy", () => {
  test("deploys with the options, wires the contracts, prints and writes the deployment file", async () => {
    const { privateKey, address: deployer } = anvil().accounts[1]!;
    const file = await keyFile("deployer-1.key", privateKey, 0o600);
    const out = join(dir, "deployment.json");
    const result = await run([
      "--rpc-url",
      anvil().rpcUrl,
      "--chain-id",
      String(anvil().chain.id),
      "--key-file",
      file,
      "--out",
      out,
      "--stake",
      "500",
      "--absence-penalty",
      "12.5",
      "--timeout",
      "1200",
      "--commit-timeout",
      "800",
      "--queue-size",
      "20",
      "--max-groups",
      "8",
    ]);
    expect(result.stderr).not.toContain("crynux-deploy:");
    expect(result.code).toBe(0);
    expectNoKey(result, privateKey);

    const deployment = JSON.parse(result.stdout) as DeploymentFile;
    expect(JSON.parse(await readFile(out, "utf8"))).toEqual(deployment);
    expect(deployment.chainId).toBe(anvil().chain.id);
    expect(deployment.owner).toBe(deployer);
    const { node, task, taskQueue, qos, networkStats, treasury } = deployment;

    // Every contract belongs to the deployer…
    for (const [address, abi] of [
      [node, nodeAbi],
      [task, taskAbi],
      [taskQueue, taskQueueAbi],
      [qos, qosAbi],
      [networkStats, networkStatsAbi],
      [treasury, treasuryAbi],
    ] as const) {
      expect(await read(address, abi, "owner")).toBe(deployer);
    }
    // …is wired to the others…
    expect(await read(node, nodeAbi, "taskContract")).toBe(task);
    expect(await read(node, nodeAbi, "qos")).toBe(qos);
    expect(await read(node, nodeAbi, "stats")).toBe(networkStats);
    expect(await read(node, nodeAbi, "treasury")).toBe(treasury);
    expect(await read(task, taskAbi, "node")).toBe(node);
    expect(await read(task, taskAbi, "queue")).toBe(taskQueue);
    expect(await read(task, taskAbi, "stats")).toBe(networkStats);
    expect(await read(taskQueue, taskQueueAbi, "taskContract")).toBe(task);
    expect(await read(taskQueue, taskQueueAbi, "nodeContract")).toBe(node);
    expect(await read(qos, qosAbi, "nodeContract")).toBe(node);
    expect(await read(networkStats, networkStatsAbi, "nodeContract")).toBe(node);
    expect(await read(networkStats, networkStatsAbi, "taskContract")).toBe(task);
    // …and carries the settings.
    expect(await read(node, nodeAbi, "stakeAmount")).toBe(parseEther("500"));
    expect(await read(node, nodeAbi, "absencePenalty")).toBe(parseEther("12.5"));
    expect(await read(node, nodeAbi, "maxGroups")).toBe(8n);
    expect(await read(taskQueue, taskQueueAbi, "sizeLimit")).toBe(20n);

    // blockNumber is where indexers start: no contract existed yet, so no event can be missed.
    const before = BigInt(deployment.blockNumber);
    expect(await anvil().publicClient.getCode({ address: qos, blockNumber: before })).toBeUndefined();
    expect(await anvil().publicClient.getCode({ address: qos })).toMatch(/^0x[0-9a-f]{2,}$/);
  });

  test("the timeouts reach the Task contract: a task's deadlines are start + commit timeout / + timeout", async () => {
    const { privateKey } = anvil().accounts[2]!;
    const result = await run(
      [
        "--rpc-url",
        anvil().rpcUrl,
        "--chain-id",
        String(anvil().chain.id),
        "--timeout",
        "1200",
        "--commit-timeout",
        "800",
        "--stake",
        "1",
      ],
      { CRYNUX_DEPLOYER_PRIVATE_KEY: privateKey },
    );
    expect(result.code).toBe(0);
    expectNoKey(result, privateKey);
    const { node, task } = JSON.parse(result.stdout) as DeploymentFile;
    const { publicClient } = anvil();
    for (const i of [3, 4, 5]) {
      const hash = await anvil()
        .walletClient(i)
        .writeContract({
          address: node,
          abi: nodeAbi,
          functionName: "join",
          // The lead is adding a 4th argument (task types); spread keeps this test valid across the change.
          args: joinArgs() as never,
          value: parseEther("1"),
        });
      await publicClient.waitForTransactionReceipt({ hash });
    }
    const hash = await anvil()
      .walletClient(6)
      .writeContract({
        address: task,
        abi: taskAbi,
        functionName: "createTask",
        args: [1, `0x${"11".repeat(32)}`, `0x${"00".repeat(32)}`, 0n, 1n],
        value: parseEther("1"),
        gas: 2_000_000n,
      });
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    expect(receipt.status).toBe("success");
    const block = await publicClient.getBlock({ blockNumber: receipt.blockNumber });
    const [commitDeadline, deadline] = await publicClient.readContract({
      address: task,
      abi: taskAbi,
      functionName: "getTaskDeadlines",
      args: [1n],
    });
    expect(commitDeadline).toBe(block.timestamp + 800n);
    expect(deadline).toBe(block.timestamp + 1200n);
  });

  test("--treasury: slashed stakes go to the given address, no Treasury is deployed", async (context) => {
    const { privateKey } = anvil().accounts[7]!;
    const treasury = anvil().accounts[8]!.address;
    const result = await run(
      [
        "--rpc-url",
        anvil().rpcUrl,
        "--chain-id",
        String(anvil().chain.id),
        "--treasury",
        treasury.toLowerCase(),
      ],
      { CRYNUX_DEPLOYER_PRIVATE_KEY: privateKey },
    );
    expect(result.code).toBe(0);
    const deployment = JSON.parse(result.stdout) as DeploymentFile;
    expect(deployment.treasury).toBe(treasury);
    expect(await read(deployment.node, nodeAbi, "treasury")).toBe(treasury);
    recordTrial(context, {
      area: "Contracts",
      fault: "crynux-deploy: key in the environment; stdout and stderr searched for it",
      runs: 1,
      expected: "deployed; the key appears in no output",
    });
    expectNoKey(result, privateKey);
  });

  test("refuses a key file that group or others can read, before sending anything", async (context) => {
    const { privateKey, address } = anvil().accounts[9]!;
    const modes = [0o644, 0o640, 0o604, 0o660, 0o606];
    for (const mode of modes) {
      const file = await keyFile(`open-${mode.toString(8)}.key`, privateKey, mode);
      const result = await run([
        "--rpc-url",
        anvil().rpcUrl,
        "--chain-id",
        String(anvil().chain.id),
        "--key-file",
        file,
      ]);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain("--key-file");
      expect(result.stderr).toContain("chmod 600");
      expect(result.stdout).toBe("");
      expectNoKey(result, privateKey);
    }
    expect(await anvil().publicClient.getTransactionCount({ address })).toBe(0);
    recordTrial(context, {
      area: "Contracts",
      fault: "crynux-deploy given a deployer key file readable by group or others",
      runs: modes.length,
      expected: "refused before any transaction, naming --key-file and chmod 600; key never printed",
    });
  });

  test("refuses a wrong chain id, before sending anything", async (context) => {
    const { privateKey, address } = anvil().accounts[9]!;
    const file = await keyFile("deployer-9.key", privateKey, 0o600);
    const result = await run([
      "--rpc-url",
      anvil().rpcUrl,
      "--chain-id",
      String(anvil().chain.id + 1),
      "--key-file",
      file,
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`--chain-id: the RPC at`);
    expect(result.stderr).toContain(`serves chain ${anvil().chain.id}, not ${anvil().chain.id + 1}`);
    expectNoKey(result, privateKey);
    expect(await anvil().publicClient.getTransactionCount({ address })).toBe(0);
    recordTrial(context, {
      area: "Contracts",
      fault: "crynux-deploy pointed at an RPC of another chain than --chain-id",
      runs: 1,
      expected: "refused before any transaction, naming --chain-id",
    });
  });

  test("never overwrites an existing --out file, and deploys nothing then", async () => {
    const { privateKey, address } = anvil().accounts[9]!;
    const out = join(dir, "existing.json");
    await writeFile(out, "{}\n");
    const result = await run(
      ["--rpc-url", anvil().rpcUrl, "--chain-id", String(anvil().chain.id), "--out", out],
      { CRYNUX_DEPLOYER_PRIVATE_KEY: privateKey },
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("--out:");
    expect(result.stderr).toContain("already exists");
    expect(await readFile(out, "utf8")).toBe("{}\n");
    expect(await anvil().publicClient.getTransactionCount({ address })).toBe(0);
  });

  test.each([
    { argv: ["--chain-id", "31337"], error: "--rpc-url is required" },
    { argv: ["--rpc-url", "http://127.0.0.1:1"], error: "--chain-id is required" },
    {
      argv: ["--rpc-url", "ftp://example.org", "--chain-id", "1"],
      error: "--rpc-url must be an http(s) URL",
    },
    {
      argv: ["--rpc-url", "http://127.0.0.1:1", "--chain-id", "0x7a69"],
      error: "--chain-id must be a whole",
    },
    {
      argv: ["--rpc-url", "http://127.0.0.1:1", "--chain-id", "1", "--stake", "4e2"],
      error: "--stake must be",
    },
    {
      argv: ["--rpc-url", "http://127.0.0.1:1", "--chain-id", "1", "--stake", "0"],
      error: "--stake must be more than 0",
    },
    {
      argv: [
        "--rpc-url",
        "http://127.0.0.1:1",
        "--chain-id",
        "1",
        "--timeout",
        "70000",
        "--commit-timeout",
        "1",
      ],
      error: "--timeout the timeout may exceed the commit timeout by at most 65,535 seconds",
    },
    {
      argv: ["--rpc-url", "http://127.0.0.1:1", "--chain-id", "1", "--commit-timeout", "900"],
      error: "--commit-timeout the commit timeout (900 s) must be below the timeout (900 s)",
    },
    {
      argv: ["--rpc-url", "http://127.0.0.1:1", "--chain-id", "1", "--treasury", "0x1234"],
      error: "--treasury must be a 20-byte hex address",
    },
    { argv: ["--rpc-url", "http://127.0.0.1:1", "--chain-id", "1", "--stak", "1"], error: "'--stak'" },
    { argv: ["--rpc-url", "http://127.0.0.1:1", "--chain-id", "1", "extra"], error: "'extra'" },
  ])("bad command line $argv: exit 2, names the flag", async ({ argv, error }) => {
    const result = await run(argv);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(error);
    expect(result.stdout).toBe("");
  });

  test("a key that is not a key is named by its source, not echoed", async () => {
    const notAKey = `0x${"ab".repeat(31)}`;
    const result = await run(["--rpc-url", anvil().rpcUrl, "--chain-id", String(anvil().chain.id)], {
      CRYNUX_DEPLOYER_PRIVATE_KEY: notAKey,
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      "CRYNUX_DEPLOYER_PRIVATE_KEY must hold one 0x-prefixed 32-byte hex private key",
    );
    expect(result.stderr).not.toContain("ab".repeat(31));
    const none = await run(["--rpc-url", anvil().rpcUrl, "--chain-id", String(anvil().chain.id)]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("--key-file is required (or set CRYNUX_DEPLOYER_PRIVATE_KEY)");
  });

  test("the bin runs as a process (--help, then a deployment)", async () => {
    const { privateKey } = anvil().accounts[0]!;
    const exec = promisify(execFile);
    const bin = [
      join(root, "node_modules/.bin/tsx"),
      "--conditions=source",
      "packages/contracts/src/cli/deploy.ts",
    ];
    const help = await exec(bin[0]!, [...bin.slice(1), "--help"], { cwd: root, timeout: 60_000 });
    expect(help.stdout).toContain("Usage: crynux-deploy --rpc-url <url> --chain-id <id>");
    const deployed = await exec(
      bin[0]!,
      [...bin.slice(1), "--rpc-url", anvil().rpcUrl, "--chain-id", String(anvil().chain.id)],
      { cwd: root, timeout: 90_000, env: { ...process.env, CRYNUX_DEPLOYER_PRIVATE_KEY: privateKey } },
    );
    expectNoKey({ code: 0, stdout: deployed.stdout, stderr: deployed.stderr }, privateKey);
    const deployment = JSON.parse(deployed.stdout) as DeploymentFile;
    expect(await read(deployment.task, taskAbi, "node")).toBe(deployment.node);
    // A failure exits non-zero with one line, not a stack trace.
    const failed = await exec(bin[0]!, [...bin.slice(1), "--chain-id", "1"], {
      cwd: root,
      timeout: 60_000,
    }).then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    );
    expect(failed?.code).toBe(2);
    expect(failed?.stderr).toContain("crynux-deploy: --rpc-url is required");
    expect(failed?.stderr).not.toContain("    at ");
  }, 240_000);
});

function joinArgs(): unknown[] {
  const base = ["NVIDIA GeForce RTX 4090", 24n, "rt"];
  const join = nodeAbi.find((item) => item.type === "function" && item.name === "join");
  return join && "inputs" in join && join.inputs.length === 4 ? [...base, 3] : base;
}
