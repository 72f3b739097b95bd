import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { RelayError } from "../errors.js";
import type { BlobStore } from "./types.js";

const SHA256_HEX = /^[0-9a-f]{64}$/;
const TMP_DIR = "tmp";
/** Temp files older than this at open are leftovers of a crash, not writes in progress. */
const STALE_TMP_MS = 60 * 60 * 1000;

function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function checkId(sha256: string): void {
  if (!SHA256_HEX.test(sha256)) {
    throw new RelayError(`Invalid blob id ${JSON.stringify(sha256)}`, {
      code: "invalid_blob_id",
      status: 400,
      details: "A blob id is the lowercase hex sha256 of its bytes.",
    });
  }
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Opens a content-addressed blob store under `dir`: a blob lives at `dir/ab/cd/<sha256>`. Writes go
 * to `dir/tmp/` first, are fsynced and then renamed into place, so a blob path only ever holds
 * complete bytes; reads check the hash, so a blob damaged on disk is reported, never served.
 */
export async function openBlobStore(dir: string): Promise<BlobStore> {
  const root = path.resolve(dir);
  const tmp = path.join(root, TMP_DIR);
  await mkdir(tmp, { recursive: true });
  const now = Date.now();
  for (const name of await readdir(tmp)) {
    const file = path.join(tmp, name);
    const info = await stat(file).catch(() => undefined);
    if (info && now - info.mtimeMs > STALE_TMP_MS) await rm(file, { force: true });
  }

  const blobPath = (sha256: string) => path.join(root, sha256.slice(0, 2), sha256.slice(2, 4), sha256);

  async function read(sha256: string): Promise<Uint8Array | null> {
    let bytes: Buffer;
    try {
      bytes = await readFile(blobPath(sha256));
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
    if (sha256Hex(bytes) !== sha256) {
      throw new RelayError(`Blob ${sha256} is corrupted on disk`, {
        code: "blob_corrupted",
        status: 500,
        details: `${blobPath(sha256)} no longer hashes to its name; put() the original bytes again to repair it.`,
      });
    }
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  return {
    async put(bytes) {
      const sha256 = sha256Hex(bytes);
      const size = bytes.byteLength;
      const target = blobPath(sha256);
      const existing = await read(sha256).catch(() => null);
      if (existing) return { sha256, size };
      await mkdir(path.dirname(target), { recursive: true });
      const tmpFile = path.join(tmp, `${sha256}.${randomBytes(8).toString("hex")}.tmp`);
      try {
        const handle = await open(tmpFile, "wx");
        try {
          await handle.writeFile(bytes);
          await handle.sync();
        } finally {
          await handle.close();
        }
        // Renaming over an existing (equal or damaged) file is atomic: readers see old or new, never half.
        await rename(tmpFile, target);
      } catch (error) {
        await rm(tmpFile, { force: true });
        throw error;
      }
      await fsyncDir(path.dirname(target));
      return { sha256, size };
    },

    async get(sha256) {
      checkId(sha256);
      return read(sha256);
    },

    async has(sha256) {
      checkId(sha256);
      try {
        return (await stat(blobPath(sha256))).isFile();
      } catch (error) {
        if (isNotFound(error)) return false;
        throw error;
      }
    },
  };
}
