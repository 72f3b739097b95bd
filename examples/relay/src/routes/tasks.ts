import {
  canonicalBytes,
  canonicalize,
  gptResultHash,
  PngDecodeError,
  parseGptResponse,
  parseGptTaskArgs,
  parseSdTaskArgs,
  pHashToHex,
  pngPHash,
  TaskArgsError,
  TaskType,
  taskHash,
} from "@crynux/tasks";
import type { Context, Hono } from "hono";
import { type Hex, isAddressEqual } from "viem";
import type { RelayContext, RelayEnv } from "../app.js";
import { RelayError } from "../errors.js";
import type { BlobStore, IndexedTask, StoredResults } from "../store/types.js";

const utf8 = new TextDecoder("utf-8", { fatal: true });
const indexPattern = /^(0|[1-9][0-9]{0,5})$/;

/**
 * The signed task endpoints: arguments (uploaded by the creator, read by the creator and the selected
 * nodes) and results (uploaded by the result node, read by the creator). Every check is against what
 * the indexer confirmed on-chain; nothing a client says about a task is trusted.
 */
export function registerTaskRoutes(app: Hono<RelayEnv>, context: RelayContext): void {
  const { deps, config, signed } = context;
  const { store, blobs } = deps;

  const indexedTask = async (taskId: bigint): Promise<IndexedTask> => {
    const task = await store.getTask(taskId);
    if (!task) {
      throw new RelayError(`Task ${taskId} is not indexed (yet): it may not exist or not be confirmed.`, {
        code: "task_not_found",
        status: 404,
      });
    }
    return task;
  };

  app.put("/v1/tasks/:taskId/args", signed(config.limits.maxArgsBytes), async (c) => {
    const taskId = c.get("taskId");
    const task = await indexedTask(taskId);
    if (!isAddressEqual(c.get("signer"), task.creator)) {
      throw forbidden("Only the task's creator may upload its arguments.");
    }
    const value = parseJsonBody(c.get("body"), "invalid_json", 400);
    try {
      if (task.taskType === TaskType.GPT) parseGptTaskArgs(value);
      else parseSdTaskArgs(value);
    } catch (error) {
      throw fromTaskArgsError(error, "invalid_args", "The task arguments are invalid");
    }
    // Hash exactly what was sent (defaults not filled in): that is what the creator put on-chain.
    const { canonical, hash } = canonicalArgs(value);
    if (hash !== task.taskHash.toLowerCase()) {
      throw new RelayError("The arguments do not hash to the task's on-chain taskHash.", {
        code: "hash_mismatch",
        status: 422,
        details: `taskHash(args) = ${hash}, on-chain ${task.taskHash}`,
      });
    }
    const { stored } = await store.putArgs(taskId, task.taskHash, canonical);
    return c.json({ taskId: taskId.toString(), taskHash: task.taskHash, stored }, stored ? 201 : 200);
  });

  app.get("/v1/tasks/:taskId/args", signed(config.limits.maxArgsBytes), async (c) => {
    const taskId = c.get("taskId");
    const task = await indexedTask(taskId);
    // Whether a task has started is public on-chain, so saying so before the signer check leaks nothing
    // and lets a node that polls early retry instead of giving up on a 403.
    if (task.state === "queued") {
      throw new RelayError(`Task ${taskId} is still queued: no node has been selected yet.`, {
        code: "task_not_started",
        status: 409,
      });
    }
    const signer = c.get("signer");
    if (!isAddressEqual(signer, task.creator) && !task.nodes.some((node) => isAddressEqual(node, signer))) {
      throw forbidden("Only the task's creator and its selected nodes may read its arguments.");
    }
    const args = await store.getArgs(taskId, task.taskHash);
    if (args === null) {
      throw new RelayError(`The creator has not uploaded the arguments of task ${taskId} yet.`, {
        code: "args_not_found",
        status: 404,
      });
    }
    // The stored canonical text goes out as is, so that taskHash(args) on the other side is the same.
    return jsonText(
      c,
      `{"taskId":"${taskId}","taskType":${task.taskType},"taskHash":"${task.taskHash}","args":${args}}`,
    );
  });

  app.put("/v1/tasks/:taskId/results", signed(config.limits.maxResultBytes), async (c) => {
    const taskId = c.get("taskId");
    const task = await indexedTask(taskId);
    if ((task.state !== "success" && task.state !== "uploaded") || !task.result || !task.resultNode) {
      throw new RelayError(`Task ${taskId} has no confirmed TaskSuccess (state: ${task.state}).`, {
        code: "task_not_success",
        status: 409,
      });
    }
    if (!isAddressEqual(c.get("signer"), task.resultNode)) {
      throw forbidden("Only the task's result node may upload its results.");
    }
    const results =
      task.taskType === TaskType.GPT
        ? await acceptGptResponse(blobs, c.get("body"), task.result)
        : await acceptSdImages(blobs, c.get("body"), c.req.header("content-type"), task.result);
    const { stored } = await store.putResults(taskId, task.taskHash, results);
    return c.json({ taskId: taskId.toString(), stored }, stored ? 201 : 200);
  });

  const creatorsResults = async (c: Context<RelayEnv>) => {
    const taskId = c.get("taskId");
    const task = await indexedTask(taskId);
    if (!isAddressEqual(c.get("signer"), task.creator)) {
      throw forbidden("Only the task's creator may download its results.");
    }
    const results = await store.getResults(taskId, task.taskHash);
    if (!results) {
      throw new RelayError(`No results of task ${taskId} have been uploaded yet.`, {
        code: "results_not_found",
        status: 404,
      });
    }
    return { taskId, results };
  };

  app.get("/v1/tasks/:taskId/results", signed(config.limits.maxArgsBytes), async (c) => {
    const { taskId, results } = await creatorsResults(c);
    if (results.taskType === TaskType.SD) {
      return c.json({ taskId: taskId.toString(), taskType: TaskType.SD, images: results.images });
    }
    const response = await storedBlob(blobs, results.response.sha256);
    return jsonText(c, `{"taskId":"${taskId}","taskType":1,"response":${utf8.decode(response)}}`);
  });

  app.get("/v1/tasks/:taskId/results/:index", signed(config.limits.maxArgsBytes), async (c) => {
    const indexText = c.req.param("index") ?? "";
    if (!indexPattern.test(indexText)) {
      throw new RelayError("The image index must be a decimal integer without leading zeros.", {
        code: "invalid_index",
        status: 400,
        field: "index",
      });
    }
    const { taskId, results } = await creatorsResults(c);
    const index = Number(indexText);
    const image = results.taskType === TaskType.SD ? results.images[index] : undefined;
    if (!image) {
      throw new RelayError(`Task ${taskId} has no result image ${index}.`, {
        code: "results_not_found",
        status: 404,
      });
    }
    const bytes = await storedBlob(blobs, image.sha256);
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { "content-type": "image/png" });
  });
}

function forbidden(message: string): RelayError {
  return new RelayError(message, { code: "forbidden", status: 403 });
}

function jsonText(c: Context<RelayEnv>, text: string): Response {
  return c.body(text, 200, { "content-type": "application/json; charset=utf-8" });
}

function parseJsonBody(body: Uint8Array, code: string, status: 400 | 422): unknown {
  try {
    return JSON.parse(utf8.decode(body));
  } catch (cause) {
    throw new RelayError("The request body is not valid UTF-8 JSON.", { code, status, cause });
  }
}

/** TaskArgsError → 422 naming the first bad field as `a.0.b`; anything else is not an input problem. */
function fromTaskArgsError(error: unknown, code: string, what: string): unknown {
  if (!(error instanceof TaskArgsError)) return error;
  const first = error.issues[0];
  const field = first && first.path.length > 0 ? first.path.join(".") : undefined;
  return new RelayError(`${what}${first ? `: ${field ?? "(root)"}: ${first.message}` : "."}`, {
    code,
    status: 422,
    field,
    details: error.details,
    cause: error,
  });
}

function canonicalArgs(value: unknown): { canonical: string; hash: Hex } {
  try {
    return { canonical: canonicalize(value), hash: taskHash(value) };
  } catch (cause) {
    // Values that pass the schema but have no canonical form (e.g. a nesting too deep to walk).
    throw new RelayError("The task arguments cannot be canonicalized.", {
      code: "invalid_args",
      status: 422,
      cause,
    });
  }
}

async function storedBlob(blobs: BlobStore, sha256: string): Promise<Uint8Array> {
  const bytes = await blobs.get(sha256);
  // The record is written after its blob, so a missing blob is lost data, not a client mistake.
  if (!bytes) throw new Error(`blob ${sha256} is referenced by a results record but missing from the store`);
  return bytes;
}

function invalidResult(message: string, field?: string, cause?: unknown): RelayError {
  return new RelayError(message, { code: "invalid_result", status: 422, field, cause });
}

async function acceptGptResponse(blobs: BlobStore, body: Uint8Array, onChain: Hex): Promise<StoredResults> {
  const value = parseJsonBody(body, "invalid_result", 422);
  let response: ReturnType<typeof parseGptResponse>;
  try {
    response = parseGptResponse(value);
  } catch (error) {
    throw fromTaskArgsError(error, "invalid_result", "The GPT response is invalid");
  }
  const hash = gptResultHash(response);
  if (hash !== onChain.toLowerCase()) {
    throw new RelayError("The response does not hash to the task's on-chain result.", {
      code: "result_mismatch",
      status: 422,
      details: `gptResultHash(response) = ${hash}, on-chain ${onChain}`,
    });
  }
  // Blob first: a crash between the two writes leaves an orphan blob, never a record without its blob.
  const blob = await blobs.put(canonicalBytes(response));
  return { taskType: TaskType.GPT, response: blob };
}

async function acceptSdImages(
  blobs: BlobStore,
  body: Uint8Array,
  contentType: string | undefined,
  onChain: Hex,
): Promise<StoredResults> {
  if (!contentType?.toLowerCase().startsWith("multipart/form-data")) {
    throw invalidResult("SD results are uploaded as multipart/form-data, one PNG file per image.");
  }
  let form: FormData;
  try {
    form = await new Response(body as Uint8Array<ArrayBuffer>, {
      headers: { "content-type": contentType },
    }).formData();
  } catch (cause) {
    throw invalidResult("The multipart/form-data body cannot be parsed.", undefined, cause);
  }
  const expected = (onChain.length - 2) / 16;
  const names = new Set<string>();
  form.forEach((_, name) => {
    names.add(name);
  });
  if (names.size !== expected) {
    throw invalidResult(
      `Expected ${expected} image${expected === 1 ? "" : "s"}, got ${names.size} field(s).`,
    );
  }
  const images: Uint8Array[] = [];
  for (let index = 0; index < expected; index++) {
    const entries = form.getAll(String(index));
    const file = entries[0];
    if (entries.length !== 1 || file === undefined || typeof file === "string") {
      throw invalidResult(`Field ${index} must be exactly one file.`, String(index));
    }
    images.push(new Uint8Array(await file.arrayBuffer()));
  }
  for (const [index, bytes] of images.entries()) {
    let pHash: bigint;
    try {
      pHash = pngPHash(bytes);
    } catch (error) {
      if (error instanceof PngDecodeError) {
        throw invalidResult(`Image ${index}: ${error.shortMessage}`, String(index));
      }
      throw error;
    }
    const expectedHash = `0x${onChain.slice(2 + index * 16, 2 + (index + 1) * 16).toLowerCase()}`;
    const actual = pHashToHex(pHash);
    if (actual !== expectedHash) {
      throw new RelayError(`Image ${index} does not match the task's on-chain result.`, {
        code: "result_mismatch",
        status: 422,
        field: String(index),
        details: `pHash ${actual}, on-chain ${expectedHash}`,
      });
    }
  }
  const stored: { index: number; sha256: string; size: number }[] = [];
  for (const [index, bytes] of images.entries()) stored.push({ index, ...(await blobs.put(bytes)) });
  return { taskType: TaskType.SD, images: stored };
}
