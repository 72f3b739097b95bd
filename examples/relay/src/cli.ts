#!/usr/bin/env -S npx tsx --conditions=source
/**
 * `crynux-relay [--config relay.json]`: starts the relay on the embedded defaults, a config file and
 * CRYNUX_RELAY_* environment variables; stops cleanly on SIGINT / SIGTERM.
 */
import { parseArgs } from "node:util";
import { CrynuxError } from "@crynux/tasks";
import { loadRelayConfig } from "./config.js";
import { startRelay } from "./serve.js";

const usage = `Usage: crynux-relay [--config <file.json>] [--port <n>]

Configuration, lowest priority first: embedded defaults, the JSON config file (--config or
CRYNUX_RELAY_CONFIG), CRYNUX_RELAY_* environment variables, then --port. See examples/relay/README.md.`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      config: { type: "string", short: "c" },
      port: { type: "string", short: "p" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(usage);
    return;
  }
  const port = values.port === undefined ? undefined : Number(values.port);
  const config = await loadRelayConfig({
    file: values.config,
    overrides: port === undefined ? {} : { port },
  });
  const relay = await startRelay(config);
  console.log(
    `crynux relay listening on ${relay.url} (chain ${config.rpcUrl}, Task ${config.taskContract}, ` +
      `${config.databaseUrl ? "PostgreSQL" : `PGlite ${config.dataDir}`}, blobs ${config.blobDir})`,
  );

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping the relay`);
    relay.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error("relay: error while stopping", error);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
}

main().catch((error: unknown) => {
  console.error(error instanceof CrynuxError ? error.message : error);
  process.exit(1);
});
