import type { RelayHealth, RelayInfo, RelayStats } from "@crynux/client";
import type { Hono } from "hono";
import type { RelayContext, RelayEnv } from "../app.js";

/** The unsigned endpoints: health, info (to build the EIP-712 domain) and network stats. */
export function registerPublicRoutes(
  app: Hono<RelayEnv>,
  context: RelayContext & { stats: () => Promise<RelayStats> },
): void {
  const { deps, config, domain } = context;

  app.get("/v1/health", async (c) => {
    const status = await deps.indexerStatus();
    const indexedBlock = Number(status.indexedBlock ?? 0n);
    const body: RelayHealth = {
      status: "ok",
      chainId: deps.chain.chainId,
      indexedBlock,
      // Before the first poll the head is unknown; it is at least what has been indexed.
      headBlock: Math.max(indexedBlock, Number(status.headBlock ?? 0n)),
    };
    return c.json(body);
  });

  app.get("/v1/info", (c) => {
    const body: RelayInfo = {
      name: domain.name,
      version: "1",
      chainId: deps.chain.chainId,
      taskContract: deps.chain.taskContract,
      confirmations: config.confirmations,
      limits: { maxArgsBytes: config.limits.maxArgsBytes, maxResultBytes: config.limits.maxResultBytes },
    };
    return c.json(body);
  });

  app.get("/v1/stats", async (c) => c.json(await context.stats()));
}
