import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { inspect } from "node:util";
import { type CrynuxDeployment, deployCrynux } from "@crynux/contracts";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import type { Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { loadBridgeConfig } from "../src/config.js";
import { BridgeConfigError } from "../src/errors.js";

// Where the bridge wallet's key may come from (CRYNUX_BRIDGE_PRIVATE_KEY, or a key file only its owner can read)
// and where it must never go (errors, the logs of a bad start, a failing RPC and a normal run, HTTP answers).
const anvil = useAnvil({ accounts: 3 });
const WALLET = 2;
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(REPO, "examples/bridge/src/cli.ts");
const API_KEY = "sk-secrets-0123456789abcdef";
const ADDRESS = "0x00000000000000000000000000000000000000aa";
const CONTRACTS = {
  node: ADDRESS,
  task: ADDRESS,
  taskQueue: ADDRESS,
  qos: ADDRESS,
  networkStats: ADDRESS,
  treasury: ADDRESS,
};

let dir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bridge-secrets-"));
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

/** Fails if `text` holds `key` in any spelling: with or without 0x, any case, or a long piece of it. */
function expectNoKey(text: string, key: Hex, where: string): void {
  const bare = key.slice(2).toLowerCase();
  expect(text.toLowerCase().includes(bare), `${where} contains the private key`).toBe(false);
  expect(text.toLowerCase().includes(bare.slice(8, 40)), `${where} contains part of the private key`).toBe(
    false,
  );
}

const everything = (error: unknown) =>
  `${String(error)}\n${(error as Error)?.stack ?? ""}\n${inspect(error, { depth: 20 })}\n${JSON.stringify(error) ?? ""}`;

const baseConfig = (extra: Record<string, unknown> = {}) => ({
  host: "127.0.0.1",
  port: 0,
  dataDir: "memory://",
  contracts: CONTRACTS,
  models: { chat: { type: "gpt", model: "o/r:Q4_0" } },
  apiKeys: [{ name: "main", key: API_KEY }],
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

async function rejection(promise: Promise<unknown>): Promise<BridgeConfigError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BridgeConfigError);
  return error as BridgeConfigError;
}

describe("where the bridge wallet's key may come from", () => {
  test("a key written in the config file is refused, naming the variable and the key file to use", async (context) => {
    const key = generatePrivateKey();
    const error = await rejection(
      loadBridgeConfig({ file: await writeConfig("inline.json", baseConfig({ privateKey: key })), env: {} }),
    );
    expect(error.message).toContain("CRYNUX_BRIDGE_PRIVATE_KEY");
    expect(error.message).toContain("privateKeyFile");
    expect(error.message).toContain("600");
    expectNoKey(everything(error), key, "the error");
    // The same key from the environment or from a key file is accepted.
    const file = await writeConfig("no-key.json", baseConfig());
    const fromEnv = await loadBridgeConfig({ file, env: { CRYNUX_BRIDGE_PRIVATE_KEY: key } });
    expect(privateKeyToAccount(fromEnv.privateKey).address).toBe(privateKeyToAccount(key).address);
    await keyFile("ok.key", key, 0o600);
    const fromFile = await loadBridgeConfig({
      file: await writeConfig("key-file.json", baseConfig({ privateKeyFile: "ok.key" })),
      env: {},
    });
    expect(fromFile.privateKey).toBe(key);
    recordTrial(context, {
      area: "Secrets",
      fault: "bridge: wallet private key written inline in the config file",
      runs: 1,
      expected:
        "refused naming CRYNUX_BRIDGE_PRIVATE_KEY and privateKeyFile with mode 600; env and 0600 key file accepted",
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
      const file = await writeConfig(`mode-${mode.toString(8)}.json`, baseConfig({ privateKeyFile: name }));
      const error = await rejection(loadBridgeConfig({ file, env: {} }));
      expect(error.message).toContain(`mode ${mode.toString(8)}`);
      expect(error.message).toContain("chmod 600");
      expectNoKey(everything(error), key, `the error for mode ${mode.toString(8)}`);
    }
    for (const mode of accepted) {
      runs++;
      const name = `ok${mode.toString(8)}.key`;
      await keyFile(name, key, mode);
      const config = await loadBridgeConfig({
        file: await writeConfig(`ok-${mode.toString(8)}.json`, baseConfig({ privateKeyFile: name })),
        env: {},
      });
      expect(config.privateKey).toBe(key);
    }
    // The variable naming the key file is held to the same rule.
    runs++;
    await keyFile("open.key", key, 0o644);
    const viaEnv = await rejection(
      loadBridgeConfig({
        file: await writeConfig("env-file.json", baseConfig()),
        env: { CRYNUX_BRIDGE_PRIVATE_KEY_FILE: join(dir, "open.key") },
      }),
    );
    expect(viaEnv.message).toContain("chmod 600");
    recordTrial(context, {
      area: "Secrets",
      fault:
        "bridge: key file (privateKeyFile or CRYNUX_BRIDGE_PRIVATE_KEY_FILE) readable or writable by group/others, 10 modes; owner-only modes",
      runs,
      expected:
        "every mode with group/other bits refused with 'mode NNN … chmod 600'; 600, 400, 700 accepted",
    });
  });

  test("malformed keys, in the environment or a key file, are never echoed in the error", async (context) => {
    const key = generatePrivateKey();
    const variants = [
      `${key}0`,
      `${key.slice(0, -1)}g`,
      key.slice(0, 60),
      `0X${key.slice(2)}`,
      `${key.slice(2)}00`,
    ];
    let runs = 0;
    for (const [index, variant] of variants.entries()) {
      runs++;
      const envError = await rejection(
        loadBridgeConfig({
          file: await writeConfig(`env-${index}.json`, baseConfig()),
          env: { CRYNUX_BRIDGE_PRIVATE_KEY: variant },
        }),
      );
      expectNoKey(everything(envError), key, `the error for ${index} in the environment`);
      runs++;
      await keyFile(`bad-${index}.key`, variant, 0o600);
      const fileError = await rejection(
        loadBridgeConfig({
          file: await writeConfig(`bad-${index}.json`, baseConfig({ privateKeyFile: `bad-${index}.key` })),
          env: {},
        }),
      );
      expectNoKey(everything(fileError), key, `the error for ${index} in a key file`);
    }
    recordTrial(context, {
      area: "Secrets",
      fault:
        "bridge: near-miss keys (one digit more, a non-hex digit, truncated, 0X, no 0x and padded) in CRYNUX_BRIDGE_PRIVATE_KEY and in a key file",
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
  const collect = (chunk: Buffer) => {
    output += chunk.toString("utf8");
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
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

describe("the key never reaches the logs or the HTTP answers (crynux-bridge processes)", () => {
  let deployment: CrynuxDeployment;
  beforeAll(async () => {
    deployment = await deployCrynux(anvil().walletClient(0), anvil().publicClient);
  }, 120_000);

  test("a start with a bad config and a start against an RPC that is down", async (context) => {
    const key = anvil().accounts[WALLET]!.privateKey;
    const bad = startCli(["--config", await writeConfig("bad.json", baseConfig({ models: {} }))], {
      CRYNUX_BRIDGE_PRIVATE_KEY: key,
    });
    expect(await bad.exit).toBe(1);
    expect(bad.output()).toContain("models");
    expectNoKey(bad.output(), key, "the output of a start with a bad config");

    await keyFile("down.key", key, 0o600);
    const down = startCli(
      [
        "--config",
        await writeConfig(
          "down.json",
          baseConfig({ rpcUrl: `http://127.0.0.1:${await closedPort()}`, privateKeyFile: "down.key" }),
        ),
      ],
      {},
    );
    expect(await down.exit).toBe(1);
    expect(down.output()).toContain("Cannot reach the chain RPC");
    expectNoKey(down.output(), key, "the output of a start against an RPC that is down");
    recordTrial(context, {
      area: "Secrets",
      fault:
        "bridge: `crynux-bridge` with an invalid config (key from CRYNUX_BRIDGE_PRIVATE_KEY) and with the RPC down (key file)",
      runs: 2,
      expected: "exit 1 with an explanation; neither output holds the key's hex (with or without 0x)",
    });
  }, 120_000);

  test("a normal run: start-up line, API answers, errors, SIGTERM", async (context) => {
    const key = anvil().accounts[WALLET]!.privateKey;
    const run = startCli(
      [
        "--config",
        await writeConfig(
          "run.json",
          baseConfig({
            rpcUrl: anvil().rpcUrl,
            relayUrl: "http://127.0.0.1:9",
            contracts: deployment,
          }),
        ),
      ],
      { CRYNUX_BRIDGE_PRIVATE_KEY: key },
    );
    let url = "";
    await vi.waitFor(
      () => {
        if (run.child.exitCode !== null) throw new Error(`the bridge exited early:\n${run.output()}`);
        const match = /listening on (http:\/\/\S+)/.exec(run.output());
        if (!match) throw new Error("not listening yet");
        url = match[1]!;
      },
      { timeout: 120_000, interval: 250 },
    );
    const answers: string[] = [];
    const auth = { authorization: `Bearer ${API_KEY}` };
    const requests: [string, RequestInit][] = [
      ["/health", {}],
      ["/v1/models", { headers: auth }],
      ["/v1/crynux/wallet", { headers: auth }],
      ["/v1/crynux/tasks/nope", { headers: auth }],
      ["/v1/models", { headers: { authorization: `Bearer ${key}` } }],
      ["/v1/chat/completions", { method: "POST", headers: auth, body: "{" }],
      [
        "/v1/chat/completions",
        { method: "POST", headers: auth, body: JSON.stringify({ model: "nope", messages: [] }) },
      ],
    ];
    for (const [path, init] of requests) {
      const response = await fetch(`${url}${path}`, init);
      const headers: string[] = [];
      response.headers.forEach((value, name) => {
        headers.push(`${name}: ${value}`);
      });
      answers.push(`${path} ${response.status} ${headers.join("; ")} ${await response.text()}`);
    }
    expect(answers[2]).toContain(privateKeyToAccount(key).address);
    // The key sent as a bearer token is answered 401 with at most its first 4 and last 2 characters.
    expect(answers[4]).toContain(" 401 ");
    run.child.kill("SIGTERM");
    expect(await run.exit).toBe(0);
    expectNoKey(answers.join("\n"), key, "the HTTP answers");
    expectNoKey(run.output(), key, "the output of a normal run");
    recordTrial(context, {
      area: "Secrets",
      fault:
        "bridge: a normal run (key from CRYNUX_BRIDGE_PRIVATE_KEY): start-up line, /health, models, wallet, 4xx answers, the key itself sent as an API key, SIGTERM",
      runs: 1,
      expected:
        "output and every HTTP answer (body and headers) free of the key's hex; the wallet endpoint shows only the address",
    });
  }, 180_000);
});
