import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import {
  type FileHandle,
  mkdir,
  open,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
} from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { type GgufQuantizationType, type HfModelRef, parseModelRef } from "@crynux/tasks";
import { NodeCoreError } from "../errors.js";
import { metadataNumber, readGguf } from "../gguf/index.js";
import { fileSha256, sha256OfFile } from "./contentHash.js";
import {
  DEFAULT_HUB_URL,
  DEFAULT_RETRY_POLICY,
  discardBody,
  failedResponse,
  fetchFileMetadata,
  type HubContext,
  HubHttpError,
  hubFetch,
  listRepoFiles,
  type RemoteFileInfo,
  type RepoFileEntry,
  type RetryPolicy,
  resolveUrl,
  retryDelay,
  sleep,
} from "./hub.js";

const DOCS_PATH = "node-core.md#model-resolution";

/** A model reference resolved to one local GGUF file, identified by the SHA-256 of its content. */
export type ResolvedModel = {
  /** The reference as given. */
  ref: string;
  /** Absolute path of the file (symlinks resolved for `file:` references). */
  path: string;
  /** SHA-256 of the file's content, lower-case hex. */
  sha256: string;
  /** Size of the file in bytes. */
  bytes: number;
  source: "file" | "hf";
};

/** Progress of a download, reported to {@link ResolveModelOptions.onProgress}. */
export type ModelDownloadProgress = { ref: string; bytesDownloaded: number; totalBytes: number | undefined };

/** Where models live and how to fetch them. */
export type ResolveModelOptions = {
  /**
   * Base of relative `file:` paths. `file:` paths, relative or absolute, must stay inside it (no `../`,
   * no symbolic link pointing out) unless `allowOutsideModelDir` is set.
   */
  modelDir: string;
  /**
   * Where Hugging Face downloads live, as `<cacheDir>/hf/<owner>/<repo>/<revision or main>/<file>`, each
   * with a `.verified.json` sidecar. Also holds hash records of `file:` models (`sha256/`) and the file
   * each quantization reference selected (`hf-selections/`). Nothing is written outside it.
   */
  cacheDir: string;
  /** Default `https://huggingface.co`. */
  hubUrl?: string;
  /** Default: the global `fetch`. */
  fetch?: typeof fetch;
  /** Only use what is cached and verified; a model that is not is a {@link ModelNotFoundError}. */
  offline?: boolean;
  /**
   * Download progress: bytes of the file on disk so far (a resumed download starts at the bytes it
   * already had) and the total when known. Called at the start, at most every 100 ms, and at the end.
   */
  onProgress?: (progress: ModelDownloadProgress) => void;
  /**
   * Aborts this resolution (it rejects with the signal's reason). A download shared with other callers
   * goes on until every one of them has aborted; a partial download is kept and resumed next time.
   */
  signal?: AbortSignal;
  /** Accept `file:` paths outside `modelDir`. */
  allowOutsideModelDir?: boolean;
  /** Refuse models larger than this many bytes ({@link ModelTooLargeError}), before downloading them. */
  maxBytes?: number;
  /** Retries of transient Hub failures. Default: 5 attempts, backoff from 500 ms, delays capped at 30 s. */
  retry?: Partial<RetryPolicy>;
  /** How often to look again at another process's download lock. Default 500 ms. */
  lockPollMs?: number;
};

/** Why a model was not found. */
export type ModelNotFoundReason =
  /** No such file, repository, revision or file in the repository. */
  | "missing"
  /** The path exists but is not a regular file. */
  | "not-a-file"
  /** A `file:` path that leads outside the model directory. */
  | "outside-model-dir"
  /** The Hub refused access (private or gated repository). */
  | "no-access"
  /** No file of the repository has the quantization. */
  | "no-match"
  /** Several files of the repository have the quantization. */
  | "ambiguous"
  /** The model is split in several GGUF files, which is not supported. */
  | "sharded"
  /** Offline, and the model is not in the cache. */
  | "not-cached";

/** The reference does not lead to a model file this node may use. */
export class ModelNotFoundError extends NodeCoreError {
  override name = "ModelNotFoundError";
  readonly ref: string;
  readonly reason: ModelNotFoundReason;
  /** For `no-match` and `ambiguous`: the files that were considered or matched. */
  readonly candidates: string[];
  constructor(
    shortMessage: string,
    parameters: {
      ref: string;
      reason: ModelNotFoundReason;
      candidates?: string[];
      details?: string | undefined;
      cause?: unknown;
    },
  ) {
    super(shortMessage, { docsPath: DOCS_PATH, details: parameters.details, cause: parameters.cause });
    this.ref = parameters.ref;
    this.reason = parameters.reason;
    this.candidates = parameters.candidates ?? [];
  }
}

/** A download failed for good: retries exhausted, or the bytes did not match the Hub's size or SHA-256. */
export class ModelDownloadError extends NodeCoreError {
  override name = "ModelDownloadError";
  readonly ref: string;
  constructor(
    shortMessage: string,
    parameters: { ref: string; details?: string | undefined; cause?: unknown },
  ) {
    super(shortMessage, { docsPath: DOCS_PATH, details: parameters.details, cause: parameters.cause });
    this.ref = parameters.ref;
  }
}

/** The file is not a GGUF model this node can run (the reader's error is the `cause`). */
export class InvalidModelFileError extends NodeCoreError {
  override name = "InvalidModelFileError";
  readonly ref: string;
  readonly path: string;
  constructor(
    shortMessage: string,
    parameters: { ref: string; path: string; details?: string | undefined; cause?: unknown },
  ) {
    super(shortMessage, { docsPath: DOCS_PATH, details: parameters.details, cause: parameters.cause });
    this.ref = parameters.ref;
    this.path = parameters.path;
  }
}

/** The model is larger than {@link ResolveModelOptions.maxBytes}. */
export class ModelTooLargeError extends NodeCoreError {
  override name = "ModelTooLargeError";
  readonly ref: string;
  readonly bytes: number;
  readonly maxBytes: number;
  constructor(ref: string, bytes: number, maxBytes: number) {
    super(`The model ${ref} has ${bytes} bytes, more than the ${maxBytes} this node accepts.`, {
      docsPath: DOCS_PATH,
    });
    this.ref = ref;
    this.bytes = bytes;
    this.maxBytes = maxBytes;
  }
}

/**
 * Resolves a GPT task's model reference to one local GGUF file and its SHA-256.
 *
 * - `file:` references are looked up under `modelDir`, which they may not leave (`../`, absolute paths
 *   elsewhere and symbolic links pointing out are refused) unless `allowOutsideModelDir`; the file must be
 *   a regular, readable GGUF file. Its hash is computed once and remembered under `cacheDir`.
 * - `hf:owner/repo[@revision]/file.gguf` downloads the file into `cacheDir` (resuming a partial download,
 *   retrying transient failures, checking the size and SHA-256 the Hub announces) unless a verified copy
 *   is there already, in which case no request is made.
 * - `owner/repo[@revision]:QUANT` picks the repository's one GGUF file whose name carries the
 *   quantization tag as a whole word (`model-Q4_K_M.gguf`, `model.q4_k_m.gguf`); `mmproj` files are
 *   ignored, and models split in several files are refused.
 *
 * Concurrent resolutions of the same file in one process share one download. Across processes, a lock
 * file created with `O_EXCL` next to the download (`<file>.lock`, holding the pid and host, refreshed
 * while the download runs) makes other processes wait and then use the finished file; a lock whose
 * process is gone, or that has not been refreshed for a minute, is broken.
 *
 * @throws {import("@crynux/tasks").ModelRefError} for a reference that does not name one GGUF file.
 * @throws {ModelNotFoundError} for a missing or inaccessible model (see `reason`).
 * @throws {ModelDownloadError} when a download fails for good or does not match the Hub's checksum.
 * @throws {InvalidModelFileError} for a file that is not a valid single-file GGUF model.
 * @throws {ModelTooLargeError} for a model larger than `maxBytes`.
 */
export async function resolveModel(ref: string, options: ResolveModelOptions): Promise<ResolvedModel> {
  const parsed = parseModelRef(ref);
  options.signal?.throwIfAborted();
  if (parsed.kind === "file") return resolveFileRef(ref, parsed.path, options);
  return resolveHfRef(ref, parsed, options);
}

// ---------------------------------------------------------------------------------------------------------
// Local files

function isInside(base: string, path: string): boolean {
  const rel = relative(base, path);
  return rel !== "" && rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

function errorCode(error: unknown): string | undefined {
  return typeof error === "object" && error !== null && "code" in error ? String(error.code) : undefined;
}

function checkMaxBytes(ref: string, bytes: number, maxBytes: number | undefined): void {
  if (maxBytes !== undefined && bytes > maxBytes) throw new ModelTooLargeError(ref, bytes, maxBytes);
}

const SHARD_NAME = /-\d{5}-of-\d{5}\.gguf$/i;

function shardedDetails(): string {
  return [
    "Models split in several GGUF files (name-00001-of-00003.gguf) are not supported: a task names one file.",
    "Merge the parts into one file (llama-gguf-split --merge) and reference that file.",
  ].join("\n");
}

/** Reads the GGUF header; a file that is not one, or is one part of a split model, is refused. */
async function checkGguf(ref: string, path: string): Promise<void> {
  let splitCount: number | undefined;
  try {
    splitCount = metadataNumber(await readGguf(path), "split.count");
  } catch (error) {
    const reason = error instanceof NodeCoreError ? error.shortMessage : String(error);
    throw new InvalidModelFileError(`The model file of ${ref} is not a valid GGUF file.`, {
      ref,
      path,
      details: reason,
      cause: error,
    });
  }
  if (splitCount !== undefined && splitCount > 1) {
    throw new InvalidModelFileError(`The model file of ${ref} is one part of a split model.`, {
      ref,
      path,
      details: shardedDetails(),
    });
  }
}

async function resolveFileRef(
  ref: string,
  path: string,
  options: ResolveModelOptions,
): Promise<ResolvedModel> {
  const base = resolve(options.modelDir);
  const target = resolve(base, path);
  const confined = !options.allowOutsideModelDir;
  const outside = (details: string) =>
    new ModelNotFoundError(`The model file of ${ref} is outside the model directory.`, {
      ref,
      reason: "outside-model-dir",
      details,
    });
  if (confined && !isInside(base, target)) throw outside(`${target} is not inside ${base}.`);
  let real: string;
  try {
    real = await realpath(target);
  } catch (error) {
    throw new ModelNotFoundError(`The model file of ${ref} does not exist.`, {
      ref,
      reason: "missing",
      details: `No file at ${target}.`,
      cause: error,
    });
  }
  if (confined) {
    const realBase = await realpath(base);
    if (!isInside(realBase, real))
      throw outside(`${target} leads to ${real}, which is not inside ${realBase}.`);
  }
  const info = await stat(real);
  if (!info.isFile()) {
    throw new ModelNotFoundError(`The model file of ${ref} is not a regular file.`, {
      ref,
      reason: "not-a-file",
      details: `${real} is a directory or a special file.`,
    });
  }
  checkMaxBytes(ref, info.size, options.maxBytes);
  await checkGguf(ref, real);
  const sha256 = await fileSha256(real, { cacheDir: resolve(options.cacheDir), signal: options.signal });
  return { ref, path: real, sha256, bytes: info.size, source: "file" };
}

// ---------------------------------------------------------------------------------------------------------
// The download cache

/** A cache entry's sidecar: what was verified, and the file it was verified on. */
type Sidecar = { sha256: string; bytes: number; mtimeMs: number; url?: string };

type Verified = { sha256: string; bytes: number };

const SHA256_HEX = /^[0-9a-f]{64}$/;

function sidecarPath(finalPath: string): string {
  return `${finalPath}.verified.json`;
}

/** Joins path segments under a root, refusing anything that could climb out of it. */
function safeJoin(root: string, segments: string[]): string {
  for (const segment of segments) {
    if (
      segment === "" ||
      segment === "." ||
      segment === ".." ||
      segment.includes("/") ||
      segment.includes("\\") ||
      segment.includes("\0")
    ) {
      throw new NodeCoreError(`Refusing the cache path segment ${JSON.stringify(segment)}.`);
    }
  }
  const path = join(root, ...segments);
  if (!isInside(root, path)) throw new NodeCoreError(`Refusing the cache path ${path}.`);
  return path;
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  await writeFile(temp, JSON.stringify(value));
  await rename(temp, path);
}

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch {
    return undefined;
  }
}

function isSidecar(value: unknown): value is Sidecar {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v["sha256"] === "string" &&
    SHA256_HEX.test(v["sha256"]) &&
    typeof v["bytes"] === "number" &&
    typeof v["mtimeMs"] === "number"
  );
}

/**
 * The verified content of a cached file, without touching the network: its sidecar must describe it
 * (size and mtime). When only the mtime moved (a copy or restore), the file is hashed again and kept if it
 * still has the verified SHA-256. A file that no longer matches is deleted.
 */
async function cachedFile(finalPath: string): Promise<Verified | undefined> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(finalPath);
  } catch {
    return undefined;
  }
  if (!info.isFile()) return undefined;
  const sidecar = await readJson(sidecarPath(finalPath));
  if (!isSidecar(sidecar) || sidecar.bytes !== info.size) return undefined;
  if (sidecar.mtimeMs === info.mtimeMs) return { sha256: sidecar.sha256, bytes: sidecar.bytes };
  const sha256 = await sha256OfFile(finalPath);
  if (sha256 !== sidecar.sha256) {
    await rm(finalPath, { force: true });
    await rm(sidecarPath(finalPath), { force: true });
    return undefined;
  }
  await writeJsonAtomic(sidecarPath(finalPath), { ...sidecar, mtimeMs: info.mtimeMs });
  return { sha256, bytes: info.size };
}

// ---------------------------------------------------------------------------------------------------------
// Hugging Face references

function hubFailure(ref: string, error: unknown): unknown {
  if (!(error instanceof HubHttpError)) return error;
  const code = error.errorCode;
  const what =
    code === "RepoNotFound"
      ? "repository"
      : code === "RevisionNotFound"
        ? "revision"
        : code === "EntryNotFound"
          ? "file"
          : undefined;
  if (error.status === 404 || what !== undefined) {
    return new ModelNotFoundError(`Hugging Face has no such ${what ?? "model"} for ${ref}.`, {
      ref,
      reason: "missing",
      details: error.message,
      cause: error,
    });
  }
  if (error.status === 401 || error.status === 403 || code === "GatedRepo") {
    return new ModelNotFoundError(`Hugging Face refused access to ${ref}.`, {
      ref,
      reason: "no-access",
      details: `${error.message}\nThe repository does not exist, or it is private or gated.`,
      cause: error,
    });
  }
  return new ModelDownloadError(`Could not download ${ref} from Hugging Face.`, {
    ref,
    details: error.message,
    cause: error,
  });
}

/** Whether `path` carries `tag` as a whole word: not preceded by a letter or digit, nor followed by one or `_`. */
export function hasQuantizationTag(path: string, tag: string): boolean {
  const name = path.toLowerCase();
  const needle = tag.toLowerCase();
  for (let at = name.indexOf(needle); at >= 0; at = name.indexOf(needle, at + 1)) {
    const before = at === 0 ? "" : (name[at - 1] ?? "");
    const after = name[at + needle.length] ?? "";
    if (!/[a-z0-9]/.test(before) && !/[a-z0-9_]/.test(after)) return true;
  }
  return false;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** Picks the one GGUF file of a repository that has the quantization. */
export function selectQuantizedFile(
  ref: string,
  files: readonly RepoFileEntry[],
  quantization: GgufQuantizationType,
): RepoFileEntry {
  const ggufs = files.filter((file) => /\.gguf$/i.test(file.path) && !/^mmproj/i.test(baseName(file.path)));
  const matching = ggufs.filter((file) => hasQuantizationTag(file.path, quantization));
  const single = matching.filter((file) => !SHARD_NAME.test(file.path));
  if (single.length === 1) return single[0]!;
  if (single.length > 1) {
    const candidates = single.map((file) => file.path);
    throw new ModelNotFoundError(`Several files of ${ref} have the quantization ${quantization}.`, {
      ref,
      reason: "ambiguous",
      candidates,
      details: `Name one of them (hf:owner/repo/file.gguf):\n${candidates.map((path) => `  ${path}`).join("\n")}`,
    });
  }
  if (matching.length > 0) {
    throw new ModelNotFoundError(`The ${quantization} model of ${ref} is split in several files.`, {
      ref,
      reason: "sharded",
      candidates: matching.map((file) => file.path),
      details: shardedDetails(),
    });
  }
  const candidates = ggufs.map((file) => file.path);
  throw new ModelNotFoundError(`No GGUF file of ${ref} has the quantization ${quantization}.`, {
    ref,
    reason: "no-match",
    candidates,
    details:
      candidates.length === 0
        ? "The repository has no GGUF files."
        : `Its GGUF files:\n${candidates
            .slice(0, 50)
            .map((path) => `  ${path}`)
            .join("\n")}${candidates.length > 50 ? `\n  … and ${candidates.length - 50} more` : ""}`,
  });
}

type Selection = { file: string };

function selectionPath(cacheDir: string, hf: HfModelRef, revision: string, tag: string): string {
  return safeJoin(cacheDir, ["hf-selections", hf.owner, hf.repo, revision, `${tag}.json`]);
}

async function resolveHfRef(
  ref: string,
  hf: HfModelRef,
  options: ResolveModelOptions,
): Promise<ResolvedModel> {
  const cacheDir = resolve(options.cacheDir);
  const revision = hf.revision ?? "main";
  const context: HubContext = {
    hubUrl: options.hubUrl ?? DEFAULT_HUB_URL,
    fetch: options.fetch ?? globalThis.fetch,
    signal: options.signal,
    retry: { ...DEFAULT_RETRY_POLICY, ...options.retry },
  };
  const finalPathOf = (file: string) =>
    safeJoin(cacheDir, ["hf", hf.owner, hf.repo, revision, ...file.split("/")]);
  const found = (path: string, verified: Verified): ResolvedModel => {
    checkMaxBytes(ref, verified.bytes, options.maxBytes);
    return { ref, path, sha256: verified.sha256, bytes: verified.bytes, source: "hf" };
  };
  const notCached = () =>
    new ModelNotFoundError(`The model ${ref} is not in the cache, and resolution is offline.`, {
      ref,
      reason: "not-cached",
      details: `Cache directory: ${cacheDir}`,
    });

  let file = hf.file;
  let expected: RemoteFileInfo | undefined;
  let selectionFile: string | undefined;
  if (file === undefined) {
    const tag = hf.quantization!;
    selectionFile = selectionPath(cacheDir, hf, revision, tag);
    const selection = (await readJson(selectionFile)) as Selection | undefined;
    if (typeof selection?.file === "string") {
      try {
        const finalPath = finalPathOf(selection.file);
        const hit = await cachedFile(finalPath);
        if (hit) return found(finalPath, hit);
      } catch {
        // a damaged record: select again
      }
    }
    if (options.offline) throw notCached();
    let files: RepoFileEntry[];
    try {
      files = await listRepoFiles(context, hf.owner, hf.repo, revision);
    } catch (error) {
      throw hubFailure(ref, error);
    }
    const chosen = selectQuantizedFile(ref, files, tag);
    file = chosen.path;
    expected = { size: chosen.size, sha256: chosen.sha256, gitSha1: undefined, commit: undefined };
  }
  if (SHARD_NAME.test(file)) {
    throw new ModelNotFoundError(`${ref} names one part of a split model.`, {
      ref,
      reason: "sharded",
      details: shardedDetails(),
    });
  }
  const finalPath = finalPathOf(file);
  let verified = await cachedFile(finalPath);
  if (verified === undefined) {
    if (options.offline) throw notCached();
    if (expected?.size !== undefined) checkMaxBytes(ref, expected.size, options.maxBytes);
    const job: DownloadJob = {
      ref,
      context,
      url: resolveUrl(context.hubUrl, hf.owner, hf.repo, revision, file),
      commitUrl: (commit) => resolveUrl(context.hubUrl, hf.owner, hf.repo, commit, file),
      finalPath,
      expected,
      maxBytes: options.maxBytes,
      lockPollMs: options.lockPollMs ?? 500,
    };
    verified = await joinDownload(job, options);
  }
  if (selectionFile !== undefined) await writeJsonAtomic(selectionFile, { file } satisfies Selection);
  return found(finalPath, verified);
}

// ---------------------------------------------------------------------------------------------------------
// Downloads shared within the process

type DownloadJob = {
  ref: string;
  context: HubContext;
  /** The resolve URL at the reference's revision. */
  url: string;
  /** The resolve URL at a commit, to pin the download to what the metadata described. */
  commitUrl: (commit: string) => string;
  finalPath: string;
  /** Size and SHA-256 already known (from the tree listing); else a `HEAD` asks. */
  expected: RemoteFileInfo | undefined;
  maxBytes: number | undefined;
  lockPollMs: number;
};

type Progress = { bytesDownloaded: number; totalBytes: number | undefined };

type SharedDownload = {
  promise: Promise<Verified>;
  listeners: Set<(progress: Progress) => void>;
  waiters: number;
  controller: AbortController;
};

const downloads = new Map<string, SharedDownload>();

/**
 * Joins the download of `job.finalPath` running in this process, or starts it. Each caller gets the
 * progress and may abort its own wait; the download itself stops when the last caller has aborted.
 */
function joinDownload(job: DownloadJob, options: ResolveModelOptions): Promise<Verified> {
  let shared = downloads.get(job.finalPath);
  if (shared === undefined) {
    const controller = new AbortController();
    const listeners = new Set<(progress: Progress) => void>();
    const emit = (progress: Progress) => {
      for (const listener of listeners) {
        try {
          listener(progress);
        } catch {
          // a listener's failure is not the download's
        }
      }
    };
    const created: SharedDownload = {
      promise: download({ ...job, context: { ...job.context, signal: controller.signal } }, emit),
      listeners,
      waiters: 0,
      controller,
    };
    created.promise
      .finally(() => {
        if (downloads.get(job.finalPath) === created) downloads.delete(job.finalPath);
      })
      .catch(() => {});
    downloads.set(job.finalPath, created);
    shared = created;
  }
  const current = shared;
  const onProgress = options.onProgress;
  const listener = onProgress && ((progress: Progress) => onProgress({ ref: job.ref, ...progress }));
  if (listener) current.listeners.add(listener);
  current.waiters++;
  const signal = options.signal;
  return new Promise<Verified>((resolvePromise, reject) => {
    let left = false;
    const leave = () => {
      if (left) return false;
      left = true;
      if (listener) current.listeners.delete(listener);
      current.waiters--;
      signal?.removeEventListener("abort", onAbort);
      return true;
    };
    const onAbort = () => {
      if (!leave()) return;
      if (current.waiters === 0) {
        if (downloads.get(job.finalPath) === current) downloads.delete(job.finalPath);
        current.controller.abort(signal?.reason);
      }
      reject(signal?.reason);
    };
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    current.promise.then(
      (value) => {
        if (leave()) resolvePromise(value);
      },
      (error: unknown) => {
        if (leave()) reject(error);
      },
    );
  });
}

// ---------------------------------------------------------------------------------------------------------
// Cross-process lock

type LockInfo = { pid: number; host: string };

const LOCK_STALE_MS = 60_000;
const LOCK_HEARTBEAT_MS = 10_000;

/** Lock files this process holds right now. */
const heldLocks = new Set<string>();

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errorCode(error) === "EPERM";
  }
}

async function lockIsStale(lockPath: string): Promise<boolean> {
  let mtimeMs: number;
  try {
    mtimeMs = (await stat(lockPath)).mtimeMs;
  } catch {
    return false; // gone: try again at once
  }
  const info = (await readJson(lockPath)) as Partial<LockInfo> | undefined;
  if (typeof info?.pid === "number" && info.host === hostname()) {
    // Our own pid on a lock we do not hold: left by an earlier process that had the same pid (containers
    // restart with the same pids).
    if (info.pid === process.pid) return !heldLocks.has(lockPath);
    if (!processIsAlive(info.pid)) return true;
  }
  return Date.now() - mtimeMs > LOCK_STALE_MS;
}

/**
 * Takes `<file>.lock` with `O_EXCL`, waiting while another live process holds it. The holder refreshes
 * the lock's mtime, so a lock left by a crashed process on another host is broken after a minute.
 */
async function acquireLock(lockPath: string, signal: AbortSignal | undefined, pollMs: number) {
  for (;;) {
    signal?.throwIfAborted();
    let handle: FileHandle | undefined;
    try {
      handle = await open(lockPath, "wx");
    } catch (error) {
      if (errorCode(error) !== "EEXIST") throw error;
    }
    if (handle !== undefined) {
      try {
        await handle.writeFile(JSON.stringify({ pid: process.pid, host: hostname() } satisfies LockInfo));
      } finally {
        await handle.close();
      }
      heldLocks.add(lockPath);
      const heartbeat = setInterval(() => {
        const now = new Date();
        utimes(lockPath, now, now).catch(() => {});
      }, LOCK_HEARTBEAT_MS);
      heartbeat.unref();
      return async () => {
        clearInterval(heartbeat);
        heldLocks.delete(lockPath);
        await rm(lockPath, { force: true });
      };
    }
    if (await lockIsStale(lockPath)) {
      await rm(lockPath, { force: true });
      continue;
    }
    await sleep(pollMs, signal);
  }
}

// ---------------------------------------------------------------------------------------------------------
// One download: metadata, resumable transfer, verification, atomic rename

const FLUSH_BYTES = 1 << 20;
const PROGRESS_INTERVAL_MS = 100;
const SHA1_HEX = /^[0-9a-f]{40}$/;

/** SHA-256 (and, for files stored in git, the git blob SHA-1) of the bytes in the `.part` file so far. */
class PartHasher {
  private sha256: Hash = createHash("sha256");
  private gitSha1: Hash | undefined;
  bytes = 0;

  constructor(private readonly gitBlobSize: number | undefined) {
    this.reset();
  }

  reset(): void {
    this.sha256 = createHash("sha256");
    this.gitSha1 =
      this.gitBlobSize === undefined ? undefined : createHash("sha1").update(`blob ${this.gitBlobSize}\0`);
    this.bytes = 0;
  }

  update(chunk: Uint8Array): void {
    this.sha256.update(chunk);
    this.gitSha1?.update(chunk);
    this.bytes += chunk.length;
  }

  /** Brings the hash up to the first `length` bytes of `path` (after a restart or a foreign `.part`). */
  async catchUp(path: string, length: number): Promise<void> {
    if (this.bytes === length) return;
    this.reset();
    if (length === 0) return;
    const stream = createReadStream(path, { start: 0, end: length - 1, highWaterMark: 4 << 20 });
    for await (const chunk of stream) this.update(chunk as Buffer);
  }

  digests(): { sha256: string; gitSha1: string | undefined } {
    return { sha256: this.sha256.copy().digest("hex"), gitSha1: this.gitSha1?.copy().digest("hex") };
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

function parseContentRange(value: string | null): { start: number; total: number | undefined } | undefined {
  const match = value === null ? null : /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(value.trim());
  if (!match) return undefined;
  return { start: Number(match[1]), total: match[3] === "*" ? undefined : Number(match[3]) };
}

function unsatisfiedRangeTotal(value: string | null): number | undefined {
  const match = value === null ? null : /^bytes\s+\*\/(\d+)$/i.exec(value.trim());
  return match ? Number(match[1]) : undefined;
}

async function download(job: DownloadJob, emit: (progress: Progress) => void): Promise<Verified> {
  const { ref, context, finalPath } = job;
  // Metadata first, so that a missing or oversized file leaves nothing in the cache.
  let info: RemoteFileInfo;
  try {
    info = job.expected ?? (await fetchFileMetadata(context, job.url));
  } catch (error) {
    throw hubFailure(ref, error);
  }
  if (info.size !== undefined && job.maxBytes !== undefined && info.size > job.maxBytes) {
    throw new ModelTooLargeError(ref, info.size, job.maxBytes);
  }
  await mkdir(dirname(finalPath), { recursive: true });
  const release = await acquireLock(`${finalPath}.lock`, context.signal, job.lockPollMs);
  try {
    // Another process may have finished it while this one waited for the lock.
    const cached = await cachedFile(finalPath);
    if (cached) return cached;

    // A complete file without a sidecar (placed by hand, or an older cache): keep it if it checks out.
    const present = await sizeOf(finalPath);
    if (info.sha256 !== undefined && present !== undefined && present === info.size) {
      const sha256 = await sha256OfFile(finalPath, context.signal);
      if (sha256 === info.sha256) {
        const { mtimeMs } = await stat(finalPath);
        await writeJsonAtomic(sidecarPath(finalPath), { sha256, bytes: present, mtimeMs } satisfies Sidecar);
        return { sha256, bytes: present };
      }
    }

    const url =
      info.commit !== undefined && SHA1_HEX.test(info.commit) ? job.commitUrl(info.commit) : job.url;
    const partPath = `${finalPath}.part`;
    const hasher = new PartHasher(info.gitSha1 === undefined ? undefined : info.size);
    for (let attempt = 1; ; attempt++) {
      try {
        await transfer({
          ref,
          context,
          url,
          partPath,
          size: info.size,
          maxBytes: job.maxBytes,
          hasher,
          emit,
        });
        break;
      } catch (error) {
        if (context.signal?.aborted) throw context.signal.reason;
        if (!(error instanceof HubHttpError)) throw error;
        if (!error.transient || attempt >= context.retry.attempts) throw hubFailure(ref, error);
        await sleep(retryDelay(context.retry, attempt, error.retryAfterMs), context.signal);
      }
    }

    const fail = async (shortMessage: string, details: string) => {
      await rm(partPath, { force: true });
      return new ModelDownloadError(shortMessage, { ref, details });
    };
    await hasher.catchUp(partPath, (await sizeOf(partPath)) ?? 0);
    const bytes = hasher.bytes;
    const { sha256, gitSha1 } = hasher.digests();
    if (info.size !== undefined && bytes !== info.size) {
      throw await fail(
        `The download of ${ref} has the wrong size.`,
        `Expected ${info.size} bytes, got ${bytes}.`,
      );
    }
    if (info.sha256 !== undefined && sha256 !== info.sha256) {
      throw await fail(
        `The download of ${ref} does not match its SHA-256.`,
        `Hugging Face announced ${info.sha256}, the bytes received hash to ${sha256}. The file was deleted.`,
      );
    }
    if (info.gitSha1 !== undefined && gitSha1 !== info.gitSha1) {
      throw await fail(
        `The download of ${ref} does not match its git object id.`,
        `Hugging Face announced ${info.gitSha1}, the bytes received hash to ${gitSha1}. The file was deleted.`,
      );
    }
    try {
      await checkGguf(ref, partPath);
    } catch (error) {
      await rm(partPath, { force: true });
      throw error;
    }
    // The sidecar first, then the atomic rename: a file at the final path always has its sidecar
    // (rename keeps the size and mtime the sidecar records).
    const { mtimeMs } = await stat(partPath);
    await writeJsonAtomic(sidecarPath(finalPath), { sha256, bytes, mtimeMs, url } satisfies Sidecar);
    await rename(partPath, finalPath);
    return { sha256, bytes };
  } finally {
    await release();
  }
}

type Transfer = {
  ref: string;
  context: HubContext;
  url: string;
  partPath: string;
  /** The expected size, when known. */
  size: number | undefined;
  maxBytes: number | undefined;
  hasher: PartHasher;
  emit: (progress: Progress) => void;
};

/**
 * One attempt to bring `partPath` to the whole file: resumes from its current length with a `Range`
 * request, appends what arrives, and keeps every byte received even when the connection breaks, so the
 * next attempt resumes from there. Transient failures are thrown as transient {@link HubHttpError}s.
 */
async function transfer(t: Transfer): Promise<void> {
  const { context, partPath, hasher } = t;
  let offset = (await sizeOf(partPath)) ?? 0;
  if (t.size !== undefined && offset > t.size) {
    await rm(partPath, { force: true });
    offset = 0;
  }
  await hasher.catchUp(partPath, offset);
  if (t.size !== undefined && offset === t.size && offset > 0) {
    t.emit({ bytesDownloaded: offset, totalBytes: t.size });
    return;
  }
  const headers: Record<string, string> = { "accept-encoding": "identity" };
  if (offset > 0) headers["range"] = `bytes=${offset}-`;
  const response = await hubFetch(context, t.url, { headers, redirect: "follow" });

  let start: number;
  let total: number | undefined;
  if (response.status === 416 && offset > 0) {
    // The range starts at or past the end: the .part is complete, or longer than the file.
    discardBody(response);
    const length = unsatisfiedRangeTotal(response.headers.get("content-range"));
    if (length === offset) return;
    await rm(partPath, { force: true });
    hasher.reset();
    throw new HubHttpError(`${t.url} refused to resume at byte ${offset}; starting over.`, {
      url: t.url,
      status: 416,
      transient: true,
    });
  }
  if (!response.ok) await failedResponse(response, t.url);
  if (response.status === 206) {
    const range = parseContentRange(response.headers.get("content-range"));
    if (range === undefined || range.start !== offset) {
      discardBody(response);
      await rm(partPath, { force: true });
      hasher.reset();
      throw new HubHttpError(`${t.url} answered an unexpected range; starting over.`, {
        url: t.url,
        status: 206,
        transient: true,
        details: `Asked for bytes ${offset}-, got ${response.headers.get("content-range")}.`,
      });
    }
    start = offset;
    total = range.total;
  } else {
    // 200: the server sent the whole file (it ignored the range, or none was asked).
    start = 0;
    const length = response.headers.get("content-length");
    total = length !== null && /^\d+$/.test(length) ? Number(length) : undefined;
  }
  if (t.size !== undefined && total !== undefined && total !== t.size) {
    discardBody(response);
    await rm(partPath, { force: true });
    hasher.reset();
    throw new ModelDownloadError(`The download of ${t.ref} has the wrong size.`, {
      ref: t.ref,
      details: `Hugging Face announced ${t.size} bytes; ${t.url} serves ${total}.`,
    });
  }
  total ??= t.size;
  if (total !== undefined && t.maxBytes !== undefined && total > t.maxBytes) {
    discardBody(response);
    throw new ModelTooLargeError(t.ref, total, t.maxBytes);
  }
  if (start === 0) hasher.reset();

  const body = response.body;
  const handle = await open(partPath, start === 0 ? "w" : "a");
  let written = start;
  let lastEmit = Date.now();
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  const flush = async () => {
    if (pendingBytes === 0) return;
    const chunk = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await handle.write(chunk, done, chunk.length - done);
      done += bytesWritten;
    }
    hasher.update(chunk);
    written += chunk.length;
  };
  t.emit({ bytesDownloaded: written, totalBytes: total });
  try {
    if (body !== null) {
      const reader = body.getReader();
      // Not every fetch ties the body to the request's signal; stop reading on abort regardless.
      const onAbort = () => {
        reader.cancel(context.signal?.reason).catch(() => {});
      };
      context.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        for (;;) {
          let result: ReadableStreamReadResult<Uint8Array>;
          try {
            result = await reader.read();
          } catch (error) {
            await flush();
            if (context.signal?.aborted) throw context.signal.reason;
            throw new HubHttpError(`The download from ${t.url} broke off at byte ${written}.`, {
              url: t.url,
              transient: true,
              details: error instanceof Error ? error.message : String(error),
              cause: error,
            });
          }
          if (result.done) {
            if (context.signal?.aborted) {
              await flush();
              throw context.signal.reason;
            }
            break;
          }
          pending.push(result.value);
          pendingBytes += result.value.length;
          const received = written + pendingBytes;
          if (t.maxBytes !== undefined && received > t.maxBytes) {
            await reader.cancel().catch(() => {});
            await handle.close();
            await rm(partPath, { force: true });
            hasher.reset();
            throw new ModelTooLargeError(t.ref, total ?? received, t.maxBytes);
          }
          if (total !== undefined && received > total) {
            await reader.cancel().catch(() => {});
            throw new HubHttpError(`${t.url} sent more than the ${total} bytes it announced.`, {
              url: t.url,
              transient: false,
            });
          }
          if (pendingBytes >= FLUSH_BYTES) await flush();
          if (Date.now() - lastEmit >= PROGRESS_INTERVAL_MS) {
            lastEmit = Date.now();
            t.emit({ bytesDownloaded: received, totalBytes: total });
          }
        }
      } finally {
        context.signal?.removeEventListener("abort", onAbort);
        reader.releaseLock();
      }
    }
    await flush();
  } finally {
    await handle.close().catch(() => {});
  }
  t.emit({ bytesDownloaded: written, totalBytes: total });
  if (total !== undefined && written < total) {
    throw new HubHttpError(`The download from ${t.url} ended at byte ${written} of ${total}.`, {
      url: t.url,
      transient: true,
    });
  }
}
