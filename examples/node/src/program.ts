import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createHeadWatcher } from "@crynux/client";
import {
  type CrynuxNode,
  createAutomatic1111Engine,
  createGptExecutor,
  createModelResolver,
  createNode,
  createSdExecutor,
  type ExecutorModelResolver,
  type GptExecutor,
  type NodeLogger,
} from "@crynux/node-core";
import { parseGptTaskArgs } from "@crynux/tasks";
import { serve } from "@hono/node-server";
import { z } from "zod";
import { createNodeApi } from "./api.js";
import { connectChain } from "./chain.js";
import type { NodeConfig } from "./config.js";
import { NodeProgramError } from "./errors.js";
import type { ProgressReporter } from "./progress.js";

/** File in the state directory where a running node says where its API listens. */
export const API_FILE = "api.json";
const apiFileSchema = z.object({ url: z.url(), pid: z.int() });

export type RunningNodeProgram = {
  node: CrynuxNode;
  executor: GptExecutor;
  /** `http://host:port` of the status API. */
  apiUrl: string;
  /** Stops the API and the node (at a safe point), and releases the models. No transaction. */
  stop(): Promise<void>;
};

export type StartNodeProgramParameters = {
  logger: NodeLogger;
  progress: ProgressReporter;
  /** Aborts the model preparation (a signal during start). */
  signal?: AbortSignal;
};

/**
 * What `crynux-node start` does: connects to the chain, prepares the configured models (download,
 * quantization), serves the status API, then starts the node (which joins, or resumes its tasks).
 */
export async function startNodeProgram(
  config: NodeConfig,
  parameters: StartNodeProgramParameters,
): Promise<RunningNodeProgram> {
  const { logger, progress, signal } = parameters;
  for (const warning of config.warnings) logger.warn(warning);
  const clients = await connectChain(config);
  logger.info("chain", { rpcUrl: config.chain.rpcUrl, chainId: clients.chain.id, ...clients.contracts });

  await mkdir(config.models.modelDir, { recursive: true });
  let quantizing = "quantize";
  const resolveModel: ExecutorModelResolver = createModelResolver({
    modelDir: config.models.modelDir,
    cacheDir: config.models.cacheDir,
    offline: config.models.offline,
    ...(config.models.hubUrl ? { hubUrl: config.models.hubUrl } : {}),
    ...(config.models.maxBytes ? { maxBytes: config.models.maxBytes } : {}),
    onProgress: (p) => progress.download(p),
    onQuantizeProgress: (p) => progress.quantize(quantizing, p),
  });
  const { memoryBudgetBytes, ...profile } = config.gpt;
  const executor = await createGptExecutor({
    resolveModel,
    profile,
    ...(memoryBudgetBytes ? { memoryBudgetBytes } : {}),
  });

  try {
    for (const { model, quantizeBits } of config.models.prepare) {
      signal?.throwIfAborted();
      const label = quantizeBits ? `${model} (Q${quantizeBits}_0)` : model;
      quantizing = label;
      logger.info("preparing model", { model, quantizeBits });
      const args = parseGptTaskArgs({
        model,
        messages: [{ role: "user", content: "prepare" }],
        quantize_bits: quantizeBits,
      });
      try {
        const file = await resolveModel(args, signal ? { signal } : {});
        progress.finish();
        logger.info("model ready", { model, quantizeBits, path: file.path, sha256: file.sha256 });
      } catch (cause) {
        progress.finish();
        if (signal?.aborted) throw cause;
        throw new NodeProgramError(`Cannot prepare the model ${label}.`, {
          details: (cause as { shortMessage?: string }).shortMessage ?? String(cause),
          cause,
        });
      }
    }
    quantizing = "quantize";
  } catch (error) {
    await executor.dispose();
    throw error;
  }

  const sd = config.sd
    ? createSdExecutor({
        engine: createAutomatic1111Engine({
          url: config.sd.url,
          ...(config.sd.timeoutMs ? { timeoutMs: config.sd.timeoutMs } : {}),
          ...(config.sd.modelMap ? { modelMap: config.sd.modelMap } : {}),
        }),
      })
    : undefined;

  const heads = config.chain.webSocketUrl
    ? createHeadWatcher({
        url: config.chain.webSocketUrl,
        onError: (error) => logger.warn("newHeads subscription", { error: String(error) }),
      })
    : undefined;
  const node = createNode({
    heads,
    publicClient: clients.publicClient,
    walletClient: clients.walletClient,
    contracts: clients.contracts,
    relayUrl: config.relayUrl,
    stateDir: config.stateDir,
    gpt: executor,
    sd,
    card: config.card,
    confirmations: config.confirmations,
    pollingIntervalMs: config.pollingIntervalMs,
    pruneTaskRecordsAfterMs:
      config.keepTaskRecordsDays === 0 ? Number.POSITIVE_INFINITY : config.keepTaskRecordsDays * 86_400_000,
    stake: config.stake,
    logger,
  });

  const app = createNodeApi(node, {
    gpt: executor,
    modelDir: config.models.modelDir,
    cacheDir: config.models.cacheDir,
    logger,
    heads,
  });
  let server: ReturnType<typeof serve>;
  try {
    server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, port: config.api.port, hostname: config.api.host }, () =>
        resolve(s),
      );
      s.once("error", reject);
    });
  } catch (cause) {
    heads?.close();
    await executor.dispose();
    throw new NodeProgramError(`Cannot serve the status API on ${config.api.host}:${config.api.port}.`, {
      details: (cause as Error).message,
      cause,
    });
  }
  const { port } = server.address() as AddressInfo;
  const apiUrl = urlOf(config.api.host, port);
  const closeServer = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      if ("closeIdleConnections" in server) server.closeIdleConnections();
    });

  try {
    await mkdir(config.stateDir, { recursive: true });
    await writeFile(join(config.stateDir, API_FILE), JSON.stringify({ url: apiUrl, pid: process.pid }));
    logger.info("status API listening", { url: apiUrl });
    await node.start();
  } catch (error) {
    await node.stop().catch(() => {});
    await closeServer();
    await rm(join(config.stateDir, API_FILE), { force: true });
    heads?.close();
    await executor.dispose();
    throw error;
  }
  logger.info("node started", { address: node.address, runtimeId: executor.runtimeId });

  let stopping: Promise<void> | undefined;
  return {
    node,
    executor,
    apiUrl,
    stop() {
      stopping ??= (async () => {
        await closeServer();
        await node.stop();
        heads?.close();
        await rm(join(config.stateDir, API_FILE), { force: true });
        await executor.dispose();
      })();
      return stopping;
    },
  };
}

/**
 * Where a running node's API answers: the URL it wrote in its state directory (if that process lives), else
 * the configured address (a wildcard host is reached on loopback).
 */
export async function findApiUrl(config: NodeConfig): Promise<string> {
  try {
    const written = apiFileSchema.parse(JSON.parse(await readFile(join(config.stateDir, API_FILE), "utf8")));
    process.kill(written.pid, 0);
    return written.url;
  } catch {
    return urlOf(config.api.host, config.api.port);
  }
}

/** The URL a local client reaches `host:port` at (a wildcard host on loopback). */
function urlOf(host: string, port: number): string {
  const reachable = ["0.0.0.0", "::", "[::]"].includes(host) ? "127.0.0.1" : host;
  return `http://${reachable.includes(":") ? `[${reachable}]` : reachable}:${port}`;
}
