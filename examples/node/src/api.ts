import type { Dirent } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import type { CrynuxNode, NodeLogger, TaskRecord } from "@crynux/node-core";
import { getConnInfo } from "@hono/node-server/conninfo";
import { type Context, Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";

/** What the status API needs of a node (a {@link CrynuxNode} has it all). */
export type ApiNode = Pick<
  CrynuxNode,
  "address" | "status" | "pause" | "resume" | "quit" | "store" | "indexedBlock"
>;

export type CreateNodeApiOptions = {
  /** The GPT executor's models and runtime id, for `/v1/models`. */
  gpt?: { runtimeId: string; loadedModels(): { path: string; sha256: string; bytes: number }[] } | undefined;
  /** Directories listed by `/v1/models`. */
  modelDir?: string | undefined;
  cacheDir?: string | undefined;
  /**
   * Whether a request may control the node (pause, resume, quit). Default: it comes from a loopback
   * address, without an `Origin` header (a web page the operator visits cannot quit the node).
   */
  isLocalRequest?: ((c: Context) => boolean) | undefined;
  /** Unexpected errors (answered with 500). */
  logger?: NodeLogger | undefined;
  /** The node's new-head subscription (`chain.webSocketUrl`), reported by `/v1/health`. */
  heads?: { readonly connected: boolean } | undefined;
};

/** Error body of every endpoint: `{ error: { code, message } }`. */
export type ApiErrorBody = { error: { code: string; message: string } };

/** Steps before which the node's output is still secret: a partner could copy a result or a nonce. */
const SECRET_STEPS: ReadonlySet<TaskRecord["step"]> = new Set(["started", "executed", "committed"]);

/**
 * A task record as the API shows it: the result hash and the nonce only once they are public on-chain, and
 * never the GPT response itself (the relay serves it to the task's creator only).
 */
export function publicTaskRecord(record: TaskRecord): Record<string, unknown> {
  const { nonce, output, ...rest } = record;
  if (SECRET_STEPS.has(record.step)) return { ...rest, output: output ? { kind: output.kind } : undefined };
  if (output?.kind === "result") {
    const { response: _private, ...shown } = output;
    return { ...rest, output: shown, nonce };
  }
  return { ...rest, output, nonce };
}

/** Values with bigints turned into decimal strings (JSON has no bigint). */
export function jsonSafe(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) if (inner !== undefined) out[key] = jsonSafe(inner);
    return out;
  }
  return value;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/;

function defaultIsLocal(c: Context): boolean {
  if (c.req.header("origin") !== undefined) return false;
  try {
    const address = getConnInfo(c).remote.address;
    return address !== undefined && LOOPBACK.test(address);
  } catch {
    // Not served by @hono/node-server (no socket to look at): refuse.
    return false;
  }
}

const tasksQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(50),
});

/**
 * The node's status API (hono): `GET /v1/health`, `/v1/status`, `/v1/tasks`, `/v1/models`, and
 * `POST /v1/pause`, `/v1/resume`, `/v1/quit` for local requests. The control endpoints go through the node's
 * own transaction sender, so its nonces stay in order while it runs.
 */
export function createNodeApi(node: ApiNode, options: CreateNodeApiOptions = {}): Hono {
  const app = new Hono();
  const isLocal = options.isLocalRequest ?? defaultIsLocal;
  const fail = (c: Context, status: ContentfulStatusCode, code: string, message: string) =>
    c.json({ error: { code, message } } satisfies ApiErrorBody, status);

  app.get("/v1/health", (c) => {
    const started = node.store !== undefined;
    return c.json(
      {
        status: started ? "ok" : "starting",
        address: node.address,
        indexedBlock: node.indexedBlock === null ? null : node.indexedBlock.toString(),
        // "off" without chain.webSocketUrl; "reconnecting" while the subscription is down (the node polls)
        newHeads: options.heads ? (options.heads.connected ? "connected" : "reconnecting") : "off",
      },
      started ? 200 : 503,
    );
  });

  app.get("/v1/status", async (c) => c.json(jsonSafe(await node.status()) as object));

  app.get("/v1/tasks", async (c) => {
    const query = tasksQuery.safeParse(c.req.query());
    if (!query.success) return fail(c, 400, "invalid_query", "limit must be an integer from 1 to 1000");
    const records = node.store ? await node.store.listTasks() : [];
    const recent = records.sort((a, b) => b.updatedAt - a.updatedAt).slice(0, query.data.limit);
    return c.json({ tasks: recent.map((record) => jsonSafe(publicTaskRecord(record))) });
  });

  app.get("/v1/models", async (c) => {
    const [modelFiles, cacheFiles] = await Promise.all([
      listFiles(options.modelDir),
      listFiles(options.cacheDir),
    ]);
    return c.json({
      runtimeId: options.gpt?.runtimeId ?? null,
      loaded: options.gpt?.loadedModels() ?? [],
      modelDir: options.modelDir ? { path: options.modelDir, files: modelFiles } : null,
      cacheDir: options.cacheDir ? { path: options.cacheDir, files: cacheFiles } : null,
    });
  });

  for (const action of ["pause", "resume", "quit"] as const) {
    app.post(`/v1/${action}`, async (c) => {
      if (!isLocal(c)) return fail(c, 403, "forbidden", `Only local requests may ${action} the node.`);
      const status = await node[action]();
      return c.json({ status });
    });
  }

  app.notFound((c) => fail(c, 404, "not_found", `No such endpoint: ${c.req.method} ${c.req.path}`));
  app.onError((error, c) => {
    const named = error as { name?: string; shortMessage?: string };
    // The contract refused the transaction (wrong node status for it): the caller's mistake, not ours.
    if (named.name === "TxRevertedError")
      return fail(c, 409, "reverted", named.shortMessage ?? error.message);
    options.logger?.error("status API error", { path: c.req.path, error });
    return fail(c, 500, "internal", named.shortMessage ?? error.message);
  });
  return app;
}

/** Regular files under `dir` (recursively), with their sizes; `[]` when it does not exist. */
async function listFiles(dir: string | undefined): Promise<{ path: string; bytes: number }[]> {
  if (!dir) return [];
  const files: { path: string; bytes: number }[] = [];
  const walk = async (current: string, depth: number) => {
    let entries: Dirent[];
    try {
      entries = await readdir(current, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const full = join(current, entry.name);
      if (entry.isDirectory() && depth < 8) await walk(full, depth + 1);
      else if (entry.isFile()) {
        const info = await stat(full).catch(() => undefined);
        if (info) files.push({ path: relative(dir, full), bytes: info.size });
      }
    }
  };
  await walk(dir, 0);
  return files.sort((a, b) => a.path.localeCompare(b.path));
}
