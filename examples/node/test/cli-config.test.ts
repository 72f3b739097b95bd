import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { DEFAULT_EXECUTION_PROFILE } from "@crynux/node-core";
import { parseEther } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runCli } from "../src/cli.js";
import { loadNodeConfig, parseJsonWithComments, resolveNodeConfig } from "../src/config.js";
import { EXIT, NodeConfigError } from "../src/errors.js";
import { exampleConfig, initNode } from "../src/init.js";
import { createLogger } from "../src/logger.js";
import { createProgressReporter, formatBytes, renderBar } from "../src/progress.js";

const KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const NODE = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const TASK = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-node-config-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const minimal = () => ({
  chain: { rpcUrl: "http://127.0.0.1:8545", contracts: { node: NODE, task: TASK } },
  relayUrl: "http://127.0.0.1:8088",
  account: { privateKey: KEY },
});

/** The issues of the NodeConfigError `input` is rejected with, as "path: message" lines. */
async function issuesOf(input: unknown, env?: Map<string, string>): Promise<string[]> {
  const error = await resolveNodeConfig(input, { base: dir, ...(env ? { env } : {}) }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(NodeConfigError);
  expect((error as NodeConfigError).exitCode).toBe(EXIT.usage);
  return (error as NodeConfigError).issues.map((issue) => `${issue.path}: ${issue.message}`);
}

describe("node config", () => {
  test("a minimal config gets every default, with paths resolved against the file's directory", async () => {
    const config = await resolveNodeConfig(minimal(), { base: dir });
    expect(config.chain).toEqual({
      rpcUrl: "http://127.0.0.1:8545",
      chainId: undefined,
      contracts: { node: NODE, task: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512" },
    });
    expect(config.account.address).toBe(privateKeyToAccount(KEY).address);
    expect(config.account.source).toBe("config");
    expect(config.stateDir).toBe(join(dir, ".crynux-node/state"));
    expect(config.models).toEqual({
      modelDir: join(dir, "models"),
      cacheDir: join(dir, ".crynux-node/cache"),
      offline: false,
      prepare: [],
    });
    expect(config.gpt).toEqual({ ...DEFAULT_EXECUTION_PROFILE, memoryBudgetBytes: undefined });
    expect(config.api).toEqual({ host: "127.0.0.1", port: 8089 });
    expect(config.log).toEqual({ level: "info", format: "json" });
    expect(config.confirmations).toBe(2);
    expect(config.pollingIntervalMs).toBe(1000);
    expect(config.stake).toBeUndefined();
    expect(config.sd).toBeUndefined();
  });

  test("the private key never shows in JSON, strings or inspect", async () => {
    const config = await resolveNodeConfig(minimal(), { base: dir });
    const bare = KEY.slice(2);
    expect(JSON.stringify(config)).not.toContain(bare);
    expect(inspect(config, { depth: 10 })).not.toContain(bare);
    expect(String(config.account.privateKey)).toBe("[redacted]");
    expect(config.account.privateKey.reveal()).toBe(KEY);
  });

  test("a full config file with comments, a key file, a deployment file and every option", async () => {
    const sub = join(dir, "full");
    await import("node:fs/promises").then((fs) => fs.mkdir(sub, { recursive: true }));
    await writeFile(join(sub, "key"), `${KEY}\n`, { mode: 0o600 });
    await writeFile(
      join(sub, "deployment.json"),
      JSON.stringify({ node: NODE, task: TASK, qos: NODE, chainId: 31337, blockNumber: 5, other: "x" }),
    );
    const file = join(sub, "node.jsonc");
    await writeFile(
      file,
      `// header comment
{
  /* block
     comment */
  "chain": { "rpcUrl": "https://rpc.example.org/v1", "deploymentFile": "deployment.json" },
  "relayUrl": "https://relay.example.org", // the relay "// not a comment inside a string"
  "account": { "privateKeyFile": "key" },
  "stateDir": "/var/lib/crynux",
  "models": { "offline": true, "prepare": [{ "model": "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_0" },
    { "model": "file:tiny.gguf", "quantizeBits": 8 }] },
  "gpt": { "threads": 2, "batchSize": 64 },
  "sd": { "kind": "automatic1111", "url": "http://127.0.0.1:7860" },
  "card": { "gpuName": "Test GPU", "gpuVram": 8 },
  "stake": "400.5",
  "confirmations": 0,
  "api": { "port": 0 },
  "log": { "level": "debug", "format": "pretty" }
}`,
    );
    const config = await loadNodeConfig({ file, env: {} });
    expect(config.file).toBe(file);
    expect(config.chain.chainId).toBe(31337);
    expect(config.chain.contracts).toEqual({
      node: NODE,
      task: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
      qos: NODE,
    });
    expect(config.account).toMatchObject({ source: "file", address: privateKeyToAccount(KEY).address });
    expect(config.warnings).toEqual([]);
    expect(config.stateDir).toBe("/var/lib/crynux");
    expect(config.models.modelDir).toBe(join(sub, "models"));
    expect(config.models.prepare).toEqual([
      { model: "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_0", quantizeBits: null },
      { model: "file:tiny.gguf", quantizeBits: 8 },
    ]);
    expect(config.gpt).toMatchObject({ threads: 2, batchSize: 64, contextSize: 4096 });
    expect(config.sd).toEqual({ kind: "automatic1111", url: "http://127.0.0.1:7860" });
    expect(config.stake).toBe(parseEther("400.5"));
    expect(config.api).toEqual({ host: "127.0.0.1", port: 0 });
    expect(config.log).toEqual({ level: "debug", format: "pretty" });
  });

  test("CRYNUX_NODE_* variables override the file; a key file others may read is refused", async () => {
    const sub = join(dir, "env");
    await import("node:fs/promises").then((fs) => fs.mkdir(sub, { recursive: true }));
    await writeFile(join(sub, "open.key"), KEY, { mode: 0o644 });
    await writeFile(join(sub, "own.key"), KEY, { mode: 0o600 });
    const file = join(sub, "node.json");
    await writeFile(file, JSON.stringify({ ...minimal(), account: { privateKeyFile: "own.key" } }));
    const openFile = join(sub, "open.json");
    await writeFile(openFile, JSON.stringify({ ...minimal(), account: { privateKeyFile: "open.key" } }));
    const refused = await loadNodeConfig({ file: openFile, env: {} }).catch((e: unknown) => e);
    expect((refused as NodeConfigError).issues).toEqual([
      { path: "account.privateKeyFile", message: expect.stringMatching(/mode 644 is refused: chmod 600/) },
    ]);
    const config = await loadNodeConfig({
      file,
      cwd: "/somewhere",
      env: {
        CRYNUX_NODE_RELAY_URL: "http://relay.test:1",
        CRYNUX_NODE_API_PORT: "9999",
        CRYNUX_NODE_OFFLINE: "true",
        CRYNUX_NODE_GPT_THREADS: "4",
        CRYNUX_NODE_STATE_DIR: "state",
        CRYNUX_NODE_SD_URL: "http://sd.test:7860",
        CRYNUX_NODE_LOG_FORMAT: "pretty",
      },
    });
    expect(config.relayUrl).toBe("http://relay.test:1");
    expect(config.api.port).toBe(9999);
    expect(config.models.offline).toBe(true);
    expect(config.gpt.threads).toBe(4);
    // Relative paths from the environment are relative to the working directory, not the file.
    expect(config.stateDir).toBe("/somewhere/state");
    expect(config.sd).toEqual({ kind: "automatic1111", url: "http://sd.test:7860" });
    expect(config.log.format).toBe("pretty");
    expect(config.warnings).toEqual([]);

    const fromEnvKey = await loadNodeConfig({
      file,
      env: { CRYNUX_NODE_PRIVATE_KEY: "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba" },
    });
    expect(fromEnvKey.account.source).toBe("env");

    const bad = await loadNodeConfig({ file, env: { CRYNUX_NODE_API_PORT: "http" } }).catch(
      (e: unknown) => e,
    );
    expect((bad as NodeConfigError).issues).toEqual([
      { path: "api.port", message: expect.stringContaining("(from CRYNUX_NODE_API_PORT)") },
    ]);
  });

  test("every bad field is reported once, by its path", async () => {
    const issues = await issuesOf({
      chain: {
        rpcUrl: "ftp://x",
        webSocketUrl: "http://127.0.0.1:8545",
        chainId: -1,
        contracts: { node: "0x1234", task: TASK, bogus: 1 },
      },
      relayUrl: "not a url",
      account: { privateKey: "0xabc" },
      stateDir: "",
      models: {
        offline: "yes",
        prepare: [{ model: "not a ref" }, { model: "file:a.gguf", quantizeBits: 5 }],
      },
      gpt: { threads: 0, batchSize: 1.5, contextSize: 64 },
      sd: { kind: "comfyui", url: "http://x" },
      card: { gpuName: "", gpuVram: 0 },
      confirmations: -1,
      pollingIntervalMs: "fast",
      stake: 400,
      api: { host: "", port: 70_000 },
      log: { level: "verbose", format: "xml" },
      extra: true,
    });
    const paths = issues.map((line) => line.split(": ")[0]);
    expect(paths.sort()).toEqual(
      [
        "chain.rpcUrl",
        "chain.webSocketUrl",
        "chain.chainId",
        "chain.contracts.node",
        "chain.contracts.bogus",
        "relayUrl",
        "account.privateKey",
        "stateDir",
        "models.offline",
        "models.prepare.0.model",
        "models.prepare.1.quantizeBits",
        "gpt.threads",
        "gpt.batchSize",
        "gpt.contextSize",
        "sd.kind",
        "card.gpuName",
        "card.gpuVram",
        "confirmations",
        "pollingIntervalMs",
        "stake",
        "api.host",
        "api.port",
        "log.level",
        "log.format",
        "extra",
      ].sort(),
    );
    expect(issues).toContain("chain.rpcUrl: must be an http(s) URL");
    expect(issues).toContain("chain.webSocketUrl: must be a ws(s) URL");
    expect(issues).toContain("chain.contracts.bogus: unknown field");
    expect(issues).toContain("extra: unknown field");
    expect(issues.find((line) => line.startsWith("models.prepare.0.model"))).toMatch(
      /Invalid model reference/,
    );
    // A bad key is named, never echoed.
    expect(issues.join("\n")).not.toContain("0xabc");
  });

  test("missing sections, contracts, key, and unreadable or invalid files", async () => {
    expect(await issuesOf({})).toEqual(
      expect.arrayContaining([expect.stringMatching(/^chain: /), expect.stringMatching(/^relayUrl: /)]),
    );
    expect(
      await issuesOf({ chain: { rpcUrl: "http://127.0.0.1:8545" }, relayUrl: "http://r", account: {} }),
    ).toEqual(["chain.contracts: required unless chain.deploymentFile is given"]);
    expect(await issuesOf({ ...minimal(), account: {} })).toEqual([
      "account: set CRYNUX_NODE_PRIVATE_KEY or account.privateKeyFile (a key file with mode 600)",
    ]);
    expect(await issuesOf({ ...minimal(), account: { privateKeyFile: "missing.key" } })).toEqual([
      `account.privateKeyFile: cannot read ${join(dir, "missing.key")}`,
    ]);
    await writeFile(join(dir, "garbage.key"), "not a key", { mode: 0o600 });
    expect(await issuesOf({ ...minimal(), account: { privateKeyFile: "garbage.key" } })).toEqual([
      "account.privateKeyFile: must hold one 0x-prefixed 32-byte hex key",
    ]);
    const chain = { rpcUrl: "http://127.0.0.1:8545", deploymentFile: "nope.json" };
    expect(await issuesOf({ ...minimal(), chain })).toEqual([
      `chain.deploymentFile: cannot read ${join(dir, "nope.json")}`,
    ]);
    await writeFile(join(dir, "bad-deployment.json"), JSON.stringify({ task: "0x12" }));
    expect(
      await issuesOf({ ...minimal(), chain: { ...chain, deploymentFile: "bad-deployment.json" } }),
    ).toEqual([
      "chain.deploymentFile: node: Invalid input: expected string, received undefined",
      "chain.deploymentFile: task: must be a 20-byte hex address",
    ]);

    await writeFile(join(dir, "broken.json"), '{ "chain": ');
    const broken = await loadNodeConfig({ file: join(dir, "broken.json"), env: {} }).catch((e: unknown) => e);
    expect(broken).toBeInstanceOf(NodeConfigError);
    expect((broken as NodeConfigError).shortMessage).toMatch(/is not valid JSON/);
    await writeFile(join(dir, "array.json"), "[]");
    const array = await loadNodeConfig({ file: join(dir, "array.json"), env: {} }).catch((e: unknown) => e);
    expect((array as NodeConfigError).shortMessage).toMatch(/must hold a JSON object/);
  });

  test("comments are stripped outside strings only", () => {
    expect(parseJsonWithComments('// a\n{ "url": "http://x/*y*/", /* b */ "s": "a\\"//b" // c\n}')).toEqual({
      url: "http://x/*y*/",
      s: 'a"//b',
    });
  });
});

describe("crynux-node init", () => {
  test("writes a valid commented config and a 0600 key, and never replaces the key", async () => {
    const target = join(dir, "init");
    const lines: string[] = [];
    const io = { out: (t: string) => lines.push(t), err: (t: string) => lines.push(t) };
    const code = await runCli(
      ["init", "--dir", target, "--rpc-url", "http://127.0.0.1:9545", "--chain-id", "31337"],
      io,
    );
    expect(code).toBe(EXIT.ok);
    const keyFile = join(target, "node.key");
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    const key = (await readFile(keyFile, "utf8")).trim();
    expect(key).toMatch(/^0x[0-9a-f]{64}$/);
    const address = privateKeyToAccount(key as `0x${string}`).address;
    expect(lines.join("")).toContain(address);
    expect(lines.join("")).not.toContain(key.slice(2));

    const text = await readFile(join(target, "crynux-node.jsonc"), "utf8");
    expect(text).toMatch(/^\/\/ Crynux node configuration/);
    await writeFile(join(target, "deployment.json"), JSON.stringify({ node: NODE, task: TASK }));
    const config = await loadNodeConfig({ file: join(target, "crynux-node.jsonc"), env: {} });
    expect(config.account).toMatchObject({ address, source: "file" });
    expect(config.chain).toMatchObject({ rpcUrl: "http://127.0.0.1:9545", chainId: 31337 });
    expect(config.warnings).toEqual([]);
    expect(config.stateDir).toBe(join(target, "state"));

    // A second init refuses to overwrite the config; with --force it rewrites it and keeps the key.
    expect(await runCli(["init", "--dir", target], io)).toBe(EXIT.usage);
    const again = await initNode({ dir: target, force: true });
    expect(again).toMatchObject({ keyCreated: false, address });
    expect((await readFile(keyFile, "utf8")).trim()).toBe(key);
  });

  test("the example config without a chain id is valid too", async () => {
    const text = exampleConfig({
      rpcUrl: "http://127.0.0.1:8545",
      relayUrl: "http://127.0.0.1:8088",
      deploymentFile: "d.json",
      keyFile: "k",
    });
    const parsed = parseJsonWithComments(text) as { chain: Record<string, unknown> };
    expect(parsed.chain).not.toHaveProperty("chainId");
    await expect(
      resolveNodeConfig({
        ...parsed,
        chain: { ...parsed.chain, deploymentFile: undefined, contracts: { node: NODE, task: TASK } },
        account: { privateKey: KEY },
      }),
    ).resolves.toBeDefined();
  });

  test("bad usage exits with 2", async () => {
    const io = { out: () => {}, err: () => {} };
    expect(await runCli([], io)).toBe(EXIT.usage);
    expect(await runCli(["fly"], io)).toBe(EXIT.usage);
    expect(await runCli(["start", "--nope"], io)).toBe(EXIT.usage);
    expect(await runCli(["init", "--chain-id", "x", "--dir", join(dir, "x")], io)).toBe(EXIT.usage);
    expect(await runCli(["--help"], io)).toBe(EXIT.ok);
    // A config that does not validate is a usage error too, not a crash.
    await writeFile(join(dir, "invalid.json"), JSON.stringify({ relayUrl: 1 }));
    const errors: string[] = [];
    const code = await runCli(["status", "--config", join(dir, "invalid.json")], {
      out: () => {},
      err: (t) => errors.push(t),
    });
    expect(code).toBe(EXIT.usage);
    expect(errors.join("")).toMatch(/- relayUrl: /);
  });
});

describe("logs and progress", () => {
  test("JSON lines carry time, level, msg and the fields; pretty lines are readable", () => {
    const lines: string[] = [];
    const json = createLogger({ level: "info", format: "json", write: (l) => lines.push(l) });
    json.debug("hidden");
    json.info("joined", { stake: 400n, node: "0xabc" });
    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]!);
    expect(entry).toMatchObject({ level: "info", msg: "joined", stake: "400", node: "0xabc" });
    expect(new Date(entry.time).getTime()).not.toBeNaN();

    const pretty: string[] = [];
    const logger = createLogger({ level: "debug", format: "pretty", write: (l) => pretty.push(l) });
    logger.warn("task step failed", { taskId: 7n, error: "boom here" });
    expect(pretty[0]).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} WARN {2}task step failed taskId=7 error="boom here"\n$/,
    );
  });

  test("bars on a terminal, a few log lines otherwise", () => {
    expect(renderBar(0.5, 10)).toBe("[#####-----]");
    expect(renderBar(2, 4)).toBe("[####]");
    expect(renderBar(Number.NaN, 2)).toBe("[--]");
    expect(formatBytes(999)).toBe("999 B");
    expect(formatBytes(12_345_678)).toBe("12.3 MB");

    const written: string[] = [];
    const tty = createProgressReporter({
      tty: true,
      write: (t) => written.push(t),
      logger: createLogger(),
      width: 4,
    });
    tty.download({ ref: "hf:o/r/f.gguf", bytesDownloaded: 0, totalBytes: 2000 });
    // Same percentage and bar: not redrawn.
    tty.download({ ref: "hf:o/r/f.gguf", bytesDownloaded: 1, totalBytes: 2000 });
    tty.download({ ref: "hf:o/r/f.gguf", bytesDownloaded: 2000, totalBytes: 2000 });
    expect(written.join("")).toBe(
      "\rdownload hf:o/r/f.gguf [----]   0% 0 B / 2.0 kB\x1b[K\rdownload hf:o/r/f.gguf [####] 100% 2.0 kB / 2.0 kB\x1b[K\n",
    );

    const logged: string[] = [];
    const plain = createProgressReporter({
      tty: false,
      logger: createLogger({ write: (l) => logged.push(l) }),
    });
    for (let bytes = 0; bytes <= 100; bytes += 5)
      plain.quantize("m (Q4_0)", {
        tensor: "t",
        tensorIndex: 0,
        tensorCount: 1,
        bytesRead: bytes,
        totalBytes: 100,
      });
    expect(logged.map((l) => JSON.parse(l).percent)).toEqual([0, 25, 50, 75, 100]);
    expect(JSON.parse(logged[0]!)).toMatchObject({ msg: "quantize", model: "m (Q4_0)" });
  });
});
