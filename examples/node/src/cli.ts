#!/usr/bin/env -S npx tsx --conditions=source
/**
 * `crynux-node init | start | status | pause | resume | quit`: the Crynux node program. Exit codes: 0 ok,
 * 1 runtime error, 2 bad usage or configuration.
 */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { CrynuxError } from "@crynux/tasks";
import { jsonSafe } from "./api.js";
import { connectChain, readChainNodeStatus, sendNodeAction } from "./chain.js";
import { loadNodeConfig, type NodeConfig } from "./config.js";
import { EXIT, NodeProgramError, UsageError } from "./errors.js";
import { armFaultInjection, FAULT_DIR_ENV } from "./fault.js";
import { initNode } from "./init.js";
import { createLogger } from "./logger.js";
import { findApiUrl, type RunningNodeProgram, startNodeProgram } from "./program.js";
import { createProgressReporter } from "./progress.js";

const usage = `Usage: crynux-node <command> [options]

Commands:
  init [--dir <d>] [--rpc-url <url>] [--relay-url <url>] [--chain-id <n>] [--deployment-file <f>] [--force]
                 write a commented config (crynux-node.jsonc) and a new key file (node.key, 0600)
  start          prepare the models, start the node and its status API; stop with SIGINT / SIGTERM
  status         the running node's status (its API), or the chain's view of the node when it is not running
  pause          stop taking tasks (after the current one)
  resume         take tasks again
  quit           leave the network and get the stake back (after the current task)

Options:
  -c, --config <file>   config file (default: CRYNUX_NODE_CONFIG, else ./crynux-node.jsonc if present)
  -h, --help

Configuration, lowest priority first: defaults, the config file, CRYNUX_NODE_* environment variables.
See examples/node/README.md.`;

type Output = { out: (text: string) => void; err: (text: string) => void };
const stdio: Output = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

/** Runs one command line (without `node cli.ts`); resolves with the exit code (`start` only when stopped). */
export async function runCli(argv: string[], io: Output = stdio): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    io.err(`${(error as Error).message}\n\n${usage}\n`);
    return EXIT.usage;
  }
  const { command, values } = parsed;
  if (values.help || command === undefined || command === "help") {
    (command === undefined && !values.help ? io.err : io.out)(`${usage}\n`);
    return command === undefined && !values.help ? EXIT.usage : EXIT.ok;
  }
  try {
    switch (command) {
      case "init":
        return await init(values, io);
      case "start":
        return await start(await loadNodeConfig({ file: values.config }), io);
      case "status":
        return await status(await loadNodeConfig({ file: values.config }), io);
      case "pause":
      case "resume":
      case "quit":
        return await control(await loadNodeConfig({ file: values.config }), command, io);
      default:
        throw new UsageError(`Unknown command: ${command}`);
    }
  } catch (error) {
    return report(error, io);
  }
}

function parse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      help: { type: "boolean", short: "h" },
      dir: { type: "string" },
      "rpc-url": { type: "string" },
      "relay-url": { type: "string" },
      "chain-id": { type: "string" },
      "deployment-file": { type: "string" },
      force: { type: "boolean" },
    },
  });
  if (positionals.length > 1) throw new UsageError(`Unexpected argument: ${positionals[1]}`);
  return { command: positionals[0], values };
}

function report(error: unknown, io: Output): number {
  if (error instanceof NodeProgramError) {
    io.err(`crynux-node: ${error.message}\n`);
    return error.exitCode;
  }
  io.err(
    `crynux-node: ${error instanceof CrynuxError ? error.message : String((error as Error)?.stack ?? error)}\n`,
  );
  return EXIT.runtime;
}

async function init(values: ReturnType<typeof parse>["values"], io: Output): Promise<number> {
  const chainId = values["chain-id"];
  if (chainId !== undefined && !/^[1-9][0-9]*$/.test(chainId))
    throw new UsageError("--chain-id must be a positive integer");
  const result = await initNode({
    dir: values.dir ?? ".",
    rpcUrl: values["rpc-url"],
    relayUrl: values["relay-url"],
    chainId: chainId === undefined ? undefined : Number(chainId),
    deploymentFile: values["deployment-file"],
    force: values.force,
  });
  io.out(
    `Wrote ${result.configFile}\n` +
      `${result.keyCreated ? "Created" : "Kept"} the key file ${result.keyFile} (keep it secret, back it up)\n` +
      `Node address: ${result.address} (fund it with the stake plus gas, then run: crynux-node start)\n`,
  );
  return EXIT.ok;
}

async function start(config: NodeConfig, io: Output): Promise<number> {
  const logger = createLogger({ level: config.log.level, format: config.log.format, write: io.err });
  const progress = createProgressReporter({ tty: process.stderr.isTTY === true, write: io.err, logger });
  const aborter = new AbortController();
  let program: RunningNodeProgram | undefined;
  let signalled: string | undefined;
  let finish: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => {
    finish = resolve;
  });

  const stop = async (code: number) => {
    try {
      await program?.stop();
      logger.info("stopped");
      finish(code);
    } catch (error) {
      logger.error("error while stopping", { error });
      finish(EXIT.runtime);
    }
  };
  let signalledAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      // A Ctrl-C reaches every process of the terminal's group and a wrapper (npx, tsx) relays it again:
      // a repeat within 2 s is the same request, a later one means "now".
      if (Date.now() - signalledAt < 2000) return;
      logger.warn("second signal: exiting now", { signal });
      process.exit(EXIT.runtime);
    }
    signalled = signal;
    signalledAt = Date.now();
    logger.info("stopping", { signal });
    aborter.abort(new Error(`${signal} received`));
    if (program) void stop(EXIT.ok);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    program = await startNodeProgram(config, { logger, progress, signal: aborter.signal });
  } catch (error) {
    if (signalled) {
      logger.info("stopped before the node started", { signal: signalled });
      return EXIT.ok;
    }
    logger.error("cannot start the node", { error: describe(error) });
    return report(error, io);
  } finally {
    if (!program) {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  }
  const faultDir = process.env[FAULT_DIR_ENV];
  if (faultDir) armFaultInjection(program.node, faultDir, logger);
  if (signalled) void stop(EXIT.ok);
  const code = await done;
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  return code;
}

/** Connection errors that prove nothing listens there (so nothing can have been done). */
const UNREACHABLE = new Set(["ECONNREFUSED", "ENOTFOUND", "EADDRNOTAVAIL", "EHOSTUNREACH"]);

/**
 * GET/POST on the running node's API; `undefined` when nothing listens there. A POST that failed after it may
 * have reached the node throws: sending the transaction beside the node could then collide with its nonces.
 */
async function callApi(
  url: string,
  method: "GET" | "POST",
  path: string,
): Promise<{ status: number; body: unknown } | undefined> {
  let response: Response;
  try {
    response = await fetch(`${url}${path}`, {
      method,
      signal: AbortSignal.timeout(method === "GET" ? 5000 : 300_000),
      ...(method === "POST" ? { headers: { "content-type": "application/json" }, body: "{}" } : {}),
    });
  } catch (error) {
    const code = (error as { cause?: { code?: string } }).cause?.code;
    if (method === "GET" || (code !== undefined && UNREACHABLE.has(code))) return undefined;
    throw new NodeProgramError(`The node's API at ${url} did not answer ${method} ${path}.`, {
      details: "The node may have acted on it: look at `crynux-node status` before trying again.",
      cause: error,
    });
  }
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: response.status, body };
}

async function status(config: NodeConfig, io: Output): Promise<number> {
  const url = await findApiUrl(config);
  const answer = await callApi(url, "GET", "/v1/status");
  if (answer && answer.status === 200) {
    io.out(`${JSON.stringify({ source: "api", url, ...(answer.body as object) }, null, 2)}\n`);
    return EXIT.ok;
  }
  const clients = await connectChain(config);
  const onChain = await readChainNodeStatus(clients.publicClient, clients.contracts, config.account.address);
  io.out(
    `${JSON.stringify({ source: "chain", running: false, ...(jsonSafe(onChain) as object) }, null, 2)}\n`,
  );
  return EXIT.ok;
}

async function control(config: NodeConfig, action: "pause" | "resume" | "quit", io: Output): Promise<number> {
  const url = await findApiUrl(config);
  const answer = await callApi(url, "POST", `/v1/${action}`);
  if (answer) {
    if (answer.status === 200) {
      io.out(`${JSON.stringify({ action, via: "api", ...(answer.body as object) })}\n`);
      return EXIT.ok;
    }
    const error = (answer.body as { error?: { code?: string; message?: string } })?.error;
    // The node runs: sending the transaction beside it could collide with its own nonces.
    throw new NodeProgramError(`The running node refused to ${action}: ${error?.message ?? answer.status}`);
  }
  const clients = await connectChain(config);
  const after = await sendNodeAction(clients, action);
  io.out(`${JSON.stringify({ action, via: "chain", status: after })}\n`);
  return EXIT.ok;
}

function describe(error: unknown): string {
  return (error as { shortMessage?: string })?.shortMessage ?? (error as Error)?.message ?? String(error);
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

// Run when executed as a program (through the bin link too), not when imported by tests.
if (isEntryPoint()) {
  runCli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(error);
      process.exit(EXIT.runtime);
    },
  );
}
