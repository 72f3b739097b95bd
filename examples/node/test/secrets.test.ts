import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { inspect } from "node:util";
import { type CrynuxDeployment, deployCrynux } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { IN_MEMORY, type RunningRelay, startRelay } from "@crynux/example-relay";
import type { Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { loadNodeConfig } from "../src/config.js";
import { EXIT, NodeConfigError } from "../src/errors.js";

// Where the node's private key may come from (the environment, or a key file only its owner can read) and
// where it must never go (error messages, logs of a bad start, a failing RPC and a normal run, the status API).
const anvil = useAnvil({ accounts: 3, balanceEther: 10_000 });
const NODE_ACCOUNT = 1;
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(REPO, "examples/node/src/cli.ts");
const NODE = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const TASK = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";

let dir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-node-secrets-"));
});
afterAll(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {}
    }
  }
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

/** Fails if `text` holds `key` in any spelling: with or without 0x, any case. */
function expectNoKey(text: string, key: Hex, where: string): void {
  const bare = key.slice(2).toLowerCase();
  expect(text.toLowerCase().includes(bare), `${where} contains the private key`).toBe(false);
  // A key cut in two lines or quoted in pieces still leaks most of itself.
  expect(text.toLowerCase().includes(bare.slice(8, 40)), `${where} contains part of the private key`).toBe(
    false,
  );
}

/** Everything an error could show: message, stack, causes, inspect output. */
const everything = (error: unknown) =>
  `${String(error)}\n${(error as Error)?.stack ?? ""}\n${inspect(error, { depth: 20 })}\n${JSON.stringify(error) ?? ""}`;

const baseConfig = (extra: Record<string, unknown> = {}) => ({
  chain: { rpcUrl: "http://127.0.0.1:8545", contracts: { node: NODE, task: TASK } },
  relayUrl: "http://127.0.0.1:8088",
  ...extra,
});

async function writeConfig(name: string, config: Record<string, unknown>): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, JSON.stringify(config));
  return file;
}

async function keyFile(name: string, content: string, mode: number): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, content);
  // chmod after writing: the process umask would otherwise narrow the mode.
  await chmod(file, mode);
  return file;
}

async function rejection(promise: Promise<unknown>): Promise<NodeConfigError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(NodeConfigError);
  return error as NodeConfigError;
}

describe("where the node's key may come from", () => {
  test("a key written in the config file is refused, naming the variable and the key file to use", async (context) => {
    const key = generatePrivateKey();
    const file = await writeConfig("inline.json", baseConfig({ account: { privateKey: key } }));
    const error = await rejection(loadNodeConfig({ file, env: {} }));
    expect(error.exitCode).toBe(EXIT.usage);
    expect(error.issues.map((issue) => issue.path)).toEqual(["account.privateKey"]);
    expect(error.message).toContain("CRYNUX_NODE_PRIVATE_KEY");
    expect(error.message).toContain("account.privateKeyFile");
    expect(error.message).toContain("600");
    expectNoKey(everything(error), key, "the error");
    // The same key from the environment, or from a key file, is accepted.
    const fromEnv = await loadNodeConfig({
      file: await writeConfig("no-key.json", baseConfig()),
      env: { CRYNUX_NODE_PRIVATE_KEY: key },
    });
    expect(fromEnv.account).toMatchObject({ source: "env", address: privateKeyToAccount(key).address });
    await keyFile("ok.key", key, 0o600);
    const fromFile = await loadNodeConfig({
      file: await writeConfig("key-file.json", baseConfig({ account: { privateKeyFile: "ok.key" } })),
      env: {},
    });
    expect(fromFile.account).toMatchObject({ source: "file", address: privateKeyToAccount(key).address });
    expectNoKey(`${JSON.stringify(fromFile)}${inspect(fromFile, { depth: 10 })}`, key, "the resolved config");
    recordTrial(context, {
      area: "Secrets",
      fault: "node: private key written inline in the config file",
      runs: 1,
      expected:
        "refused (exit 2) naming CRYNUX_NODE_PRIVATE_KEY and account.privateKeyFile with mode 600; env and 0600 key file accepted",
    });
  });

  test("a key file other users can read or write is refused, saying which mode to use", async (context) => {
    const key = generatePrivateKey();
    const refused = [0o644, 0o640, 0o604, 0o660, 0o606, 0o666, 0o620, 0o602, 0o610, 0o601];
    const accepted = [0o600, 0o400, 0o700];
    let runs = 0;
    for (const mode of refused) {
      runs++;
      const name = `k${mode.toString(8)}.key`;
      await keyFile(name, key, mode);
      const file = await writeConfig(
        `mode-${mode.toString(8)}.json`,
        baseConfig({ account: { privateKeyFile: name } }),
      );
      const error = await rejection(loadNodeConfig({ file, env: {} }));
      expect(error.message).toContain(`mode ${mode.toString(8)}`);
      expect(error.message).toContain("chmod 600");
      expectNoKey(everything(error), key, `the error for mode ${mode.toString(8)}`);
    }
    for (const mode of accepted) {
      runs++;
      const name = `ok${mode.toString(8)}.key`;
      await keyFile(name, key, mode);
      const file = await writeConfig(
        `ok-${mode.toString(8)}.json`,
        baseConfig({ account: { privateKeyFile: name } }),
      );
      const config = await loadNodeConfig({ file, env: {} });
      expect(config.account.address).toBe(privateKeyToAccount(key).address);
      expect(config.warnings).toEqual([]);
    }
    recordTrial(context, {
      area: "Secrets",
      fault: "node: key file readable or writable by group/others (10 modes), and owner-only modes",
      runs,
      expected:
        "every mode with group/other bits refused with 'mode NNN … chmod 600'; 600, 400, 700 accepted",
    });
  });

  test("malformed keys, in the environment or a key file, are never echoed in the error", async (context) => {
    const key = generatePrivateKey();
    const variants: Hex[] = [
      key.slice(2) as Hex,
      `${key}0` as Hex,
      `${key.slice(0, -1)}g` as Hex,
      key.slice(0, 60) as Hex,
      ` ${key} extra` as Hex,
      `0X${key.slice(2)}` as Hex,
    ];
    let runs = 0;
    for (const [index, variant] of variants.entries()) {
      runs++;
      const envError = await rejection(
        loadNodeConfig({
          file: await writeConfig(`env-${index}.json`, baseConfig()),
          env: { CRYNUX_NODE_PRIVATE_KEY: variant },
        }),
      );
      expect(envError.message).toContain("CRYNUX_NODE_PRIVATE_KEY");
      expectNoKey(everything(envError), key, `the error for ${index} in the environment`);
      runs++;
      await keyFile(`bad-${index}.key`, variant, 0o600);
      const fileError = await rejection(
        loadNodeConfig({
          file: await writeConfig(
            `bad-${index}.json`,
            baseConfig({ account: { privateKeyFile: `bad-${index}.key` } }),
          ),
          env: {},
        }),
      );
      expectNoKey(everything(fileError), key, `the error for ${index} in a key file`);
    }
    recordTrial(context, {
      area: "Secrets",
      fault:
        "node: near-miss keys (no 0x, one digit more, a non-hex digit, truncated, padded, 0X) in CRYNUX_NODE_PRIVATE_KEY and in a key file",
      runs,
      expected: "refused; neither the message, the stack, the causes nor inspect() holds the key's hex",
    });
  });
});

type Run = { child: ChildProcess; output: () => string; exit: Promise<number | null> };

function startCli(args: string[], env: Record<string, string>): Run {
  const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", CLI, ...args], {
    // tsx resolves from the working directory; every path in the configs is absolute or relative to the file.
    cwd: REPO,
    env: { ...process.env, FORCE_COLOR: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  child.stderr!.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, output: () => output, exit };
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("the key never reaches the logs or the status API (crynux-node start processes)", () => {
  let deployment: CrynuxDeployment;
  let relay: RunningRelay;

  beforeAll(async () => {
    deployment = await deployCrynux(anvil().walletClient(0), anvil().publicClient);
    relay = await startRelay(
      {
        rpcUrl: anvil().rpcUrl,
        taskContract: deployment.task,
        port: 0,
        confirmations: 0,
        pollingIntervalMs: 100,
        dataDir: IN_MEMORY,
        blobDir: join(dir, "blobs"),
      },
      { onIndexerError: () => {} },
    );
  }, 120_000);
  afterAll(async () => {
    await relay?.stop();
  }, 60_000);

  test("a start with a bad config and a start against an RPC that is down", async (context) => {
    const key = anvil().accounts[NODE_ACCOUNT]!.privateKey;
    const bad = startCli(
      [
        "start",
        "--config",
        await writeConfig(
          "bad.json",
          baseConfig({ chain: { rpcUrl: "nope" }, api: { port: 0 }, log: { level: "debug" } }),
        ),
      ],
      {
        CRYNUX_NODE_PRIVATE_KEY: key,
      },
    );
    expect(await bad.exit).toBe(EXIT.usage);
    expect(bad.output()).toContain("chain.rpcUrl");
    expectNoKey(bad.output(), key, "the output of a start with a bad config");

    await keyFile("down.key", key, 0o600);
    const down = startCli(
      [
        "start",
        "--config",
        await writeConfig(
          "down.json",
          baseConfig({
            chain: {
              rpcUrl: `http://127.0.0.1:${await closedPort()}`,
              contracts: { node: NODE, task: TASK },
            },
            account: { privateKeyFile: "down.key" },
            stateDir: join(dir, "down-state"),
            api: { port: 0 },
            log: { level: "debug", format: "json" },
          }),
        ),
      ],
      {},
    );
    const code = await down.exit;
    expect(code).not.toBe(EXIT.ok);
    expect(down.output().length).toBeGreaterThan(0);
    expectNoKey(down.output(), key, "the output of a start against an RPC that is down");
    recordTrial(context, {
      area: "Secrets",
      fault:
        "node: `crynux-node start` with an invalid config (key from CRYNUX_NODE_PRIVATE_KEY) and with the RPC down (key file), debug logs",
      runs: 2,
      expected:
        "exit 2 / non-zero with an explanation; neither output holds the key's hex (with or without 0x)",
    });
  }, 120_000);

  test("a normal run: logs and every status API endpoint", async (context) => {
    const key = anvil().accounts[NODE_ACCOUNT]!.privateKey;
    const stateDir = join(dir, "run-state");
    await mkdir(stateDir, { recursive: true });
    const run = startCli(
      [
        "start",
        "--config",
        await writeConfig(
          "run.json",
          baseConfig({
            chain: {
              rpcUrl: anvil().rpcUrl,
              chainId: anvil().chain.id,
              contracts: { node: deployment.node, task: deployment.task },
            },
            relayUrl: relay.url,
            stateDir,
            models: { modelDir: join(dir, "models"), cacheDir: join(dir, "cache") },
            card: { gpuName: "Test CPU", gpuVram: 8 },
            confirmations: 0,
            pollingIntervalMs: 200,
            api: { port: 0 },
            log: { level: "debug", format: "json" },
          }),
        ),
      ],
      { CRYNUX_NODE_PRIVATE_KEY: key },
    );
    let apiUrl = "";
    await vi.waitFor(
      () => {
        if (run.child.exitCode !== null) throw new Error(`the node exited early:\n${run.output()}`);
        const match = /"msg":"status API listening".*?"url":"([^"]+)"/.exec(run.output());
        if (!match) throw new Error("not listening yet");
        apiUrl = match[1]!;
      },
      { timeout: 180_000, interval: 250 },
    );
    const served: string[] = [];
    await vi.waitFor(
      async () => {
        const status = (await (await fetch(`${apiUrl}/v1/status`)).json()) as { chainStatus?: string };
        if (status.chainStatus !== "AVAILABLE") throw new Error(`node is ${status.chainStatus}`);
      },
      { timeout: 120_000, interval: 500 },
    );
    for (const path of ["/v1/health", "/v1/status", "/v1/tasks", "/v1/models", "/v1/nope"]) {
      const response = await fetch(`${apiUrl}${path}`);
      served.push(`${path} ${response.status} ${await response.text()}`);
    }
    // A refused action (from this host it is allowed; a bad method is not) still answers without the key.
    const refused = await fetch(`${apiUrl}/v1/pause`, { method: "GET" });
    served.push(`GET /v1/pause ${refused.status} ${await refused.text()}`);
    run.child.kill("SIGTERM");
    expect(await run.exit).toBe(EXIT.ok);
    expect(run.output()).toContain('"msg":"node started"');
    expectNoKey(served.join("\n"), key, "the status API");
    expectNoKey(run.output(), key, "the logs of a normal run");
    recordTrial(context, {
      area: "Secrets",
      fault:
        "node: a normal run (key from CRYNUX_NODE_PRIVATE_KEY, debug logs): start, join, status API, SIGTERM",
      runs: 1,
      expected: "logs and every status API answer free of the key's hex (with or without 0x)",
    });
  }, 300_000);
});
