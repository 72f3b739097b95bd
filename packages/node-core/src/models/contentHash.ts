import { createHash } from "node:crypto";
import { createReadStream, type Stats } from "node:fs";
import { mkdir, readFile, realpath, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Options of {@link fileSha256}. */
export type FileSha256Options = {
  /**
   * Directory that keeps a persistent record of the hashes computed (`<cacheDir>/sha256/`), so that a big
   * file is hashed once across restarts. Without it the record lives in memory for this process only.
   */
  cacheDir?: string | undefined;
  signal?: AbortSignal | undefined;
};

/** What a hash record remembers: the file it was computed for and the digest. */
type HashRecord = { path: string; size: number; mtimeMs: number; ino: number; sha256: string };

const HEX64 = /^[0-9a-f]{64}$/;
const READ_CHUNK = 4 << 20;

const memory = new Map<string, HashRecord>();
const inflight = new Map<string, Promise<string>>();

function matches(record: HashRecord | undefined, path: string, info: Stats): record is HashRecord {
  return (
    record !== undefined &&
    record.path === path &&
    record.size === info.size &&
    record.mtimeMs === info.mtimeMs &&
    record.ino === info.ino &&
    HEX64.test(record.sha256)
  );
}

function recordPath(cacheDir: string, path: string): string {
  // One small JSON per hashed file, named by the hash of its path so any path fits in a file name.
  const key = createHash("sha256").update(path).digest("hex");
  return join(cacheDir, "sha256", `${key}.json`);
}

async function readRecord(file: string): Promise<HashRecord | undefined> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as HashRecord;
  } catch {
    return undefined;
  }
}

async function writeRecord(file: string, record: HashRecord): Promise<void> {
  // Best effort: a cache that cannot be written only costs a re-hash later.
  try {
    await mkdir(join(file, ".."), { recursive: true });
    const temp = `${file}.${process.pid}.${Date.now()}.tmp`;
    await writeFile(temp, JSON.stringify(record));
    await rename(temp, file);
  } catch {
    // ignored
  }
}

/**
 * Streams a file through SHA-256 and returns the lower-case hex digest. Reads in 4 MiB chunks, so memory
 * stays flat on multi-gigabyte models.
 */
export async function sha256OfFile(path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  const stream = createReadStream(path, { highWaterMark: READ_CHUNK, signal });
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * The SHA-256 of a file's content (lower-case hex), the identity of a model file. The digest is cached,
 * keyed by the file's real path, size, mtime and inode: in memory for the process and, when
 * `options.cacheDir` is given, in `<cacheDir>/sha256/` across restarts, so a multi-gigabyte model is read
 * once. A file rewritten in place with the same size, mtime and inode would fool the cache; tools that
 * replace models (downloads, `cp`, `mv`) change at least one of them.
 *
 * Concurrent calls for the same file share one read.
 */
export async function fileSha256(path: string, options: FileSha256Options = {}): Promise<string> {
  const real = await realpath(path);
  const key = `${options.cacheDir ?? ""}\0${real}`;
  let promise = inflight.get(key);
  if (promise === undefined) {
    promise = hashWithRecords(real, options.cacheDir).finally(() => inflight.delete(key));
    inflight.set(key, promise);
  }
  return abortable(promise, options.signal);
}

/** Settles like `promise`, or rejects with the signal's reason as soon as it aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

// Shared by concurrent callers, so it runs to the end even when one of them aborts.
async function hashWithRecords(real: string, cacheDir: string | undefined): Promise<string> {
  const before = await stat(real);
  const cached = memory.get(real);
  if (matches(cached, real, before)) return cached.sha256;
  const recordFile = cacheDir === undefined ? undefined : recordPath(cacheDir, real);
  if (recordFile !== undefined) {
    const stored = await readRecord(recordFile);
    if (matches(stored, real, before)) {
      memory.set(real, stored);
      return stored.sha256;
    }
  }
  const sha256 = await sha256OfFile(real);
  const after = await stat(real);
  const record: HashRecord = {
    path: real,
    size: after.size,
    mtimeMs: after.mtimeMs,
    ino: after.ino,
    sha256,
  };
  // Only remember a digest when the file did not change while it was read.
  if (after.size === before.size && after.mtimeMs === before.mtimeMs && after.ino === before.ino) {
    memory.set(real, record);
    if (recordFile !== undefined) await writeRecord(recordFile, record);
  }
  return sha256;
}

/** Forgets the in-memory hash records (for tests, or after replacing files behind the cache's back). */
export function clearFileSha256Memory(): void {
  memory.clear();
}
