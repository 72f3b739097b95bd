#!/usr/bin/env -S npx tsx --conditions=source
/**
 * `crynux-bridge [--config bridge.json]`: starts the bridge on the embedded defaults, a config file and
 * CRYNUX_BRIDGE_* environment variables; stops cleanly on SIGINT / SIGTERM (paid tasks resume on the next start).
 */
import { parseArgs } from "node:util";
import { CrynuxError } from "@crynux/tasks";
import { loadBridgeConfig } from "./config.js";
import { startBridge } from "./serve.js";

const usage = `Usage: crynux-bridge [--config <file.json>] [--port <n>]

Configuration, lowest priority first: embedded defaults, the JSON config file (--config or
CRYNUX_BRIDGE_CONFIG), CRYNUX_BRIDGE_* environment variables, then --port. See examples/bridge/README.md.`;

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
  const config = await loadBridgeConfig({
    file: values.config,
    overrides: port === undefined ? {} : { port },
  });
  const bridge = await startBridge(config);
  console.log(
    `crynux bridge listening on ${bridge.url} (wallet ${bridge.client.account?.address}, chain ${config.rpcUrl}, ` +
      `relay ${config.relayUrl}, models ${Object.keys(config.models).join(", ")}, PGlite ${config.dataDir})`,
  );

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping the bridge`);
    bridge.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error("bridge: error while stopping", error);
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
