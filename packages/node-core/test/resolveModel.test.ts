import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { ModelRefError } from "@crynux/tasks";
import { HttpResponse, http } from "msw";
import { setupServer } from "msw/node";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { GgufFormatError } from "../src/errors.js";
import { GgmlType, writeGguf } from "../src/gguf/index.js";
import { clearFileSha256Memory } from "../src/models/contentHash.js";
import {
  fileSha256,
  hasQuantizationTag,
  InvalidModelFileError,
  ModelDownloadError,
  ModelNotFoundError,
  ModelTooLargeError,
  type ResolveModelOptions,
  resolveModel,
} from "../src/models/index.js";

const HUB = "https://hub.test";
const CDN = "https://cdn.test";
const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const CHUNK = 16 * 1024;

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

// ---------------------------------------------------------------------------------------------------------
// A fake Hugging Face Hub and CDN

type FakeFile = { data: Buffer; lfs: boolean; announcedSha256?: string };
/**
 * What the CDN does with its next GET: serve; cut the body off midway; send half and then nothing; serve
 * slowly; ignore the Range header; or fail with a status.
 */
type CdnAction = "ok" | "cut" | "stall" | "slow" | "ignore-range" | { status: number; retryAfter?: string };
type Logged = { method: string; url: string; range: string | null };

class FakeHub {
  /** `owner/repo/path` → file. Every revision serves the same files. */
  readonly files = new Map<string, FakeFile>();
  readonly log: Logged[] = [];
  cdnPlan: CdnAction[] = [];
  headPlan: { status: number }[] = [];
  /** Page size of the tree API (small, to exercise the `Link` pagination). */
  pageSize = 2;
  down = false;
  /** Renamed repositories: old `owner/repo` → new one, answered with a relative redirect. */
  readonly renames = new Map<string, string>();

  add(repoPath: string, data: Buffer, options: { lfs?: boolean; announcedSha256?: string } = {}): void {
    this.files.set(repoPath, { data, lfs: options.lfs ?? true, announcedSha256: options.announcedSha256 });
  }

  count(method: string, prefix: string): number {
    return this.log.filter((entry) => entry.method === method && entry.url.startsWith(prefix)).length;
  }

  handlers() {
    return [
      http.all(`${HUB}/*`, ({ request }) => this.hub(request)),
      http.all(`${CDN}/*`, ({ request }) => this.cdn(request)),
    ];
  }

  private record(request: Request): void {
    this.log.push({ method: request.method, url: request.url, range: request.headers.get("range") });
  }

  private hub(request: Request): Response {
    this.record(request);
    if (this.down) return new HttpResponse("down", { status: 500 });
    const url = new URL(request.url);
    const parts = url.pathname.split("/").slice(1).map(decodeURIComponent);
    if (parts[0] === "api" && parts[1] === "models" && parts[4] === "tree") {
      const prefix = `${parts[2]}/${parts[3]}/`;
      const entries = [...this.files]
        .filter(([key]) => key.startsWith(prefix))
        .map(([key, file]) => ({
          type: "file",
          path: key.slice(prefix.length),
          oid: createHash("sha1").update(file.data).digest("hex"),
          size: file.lfs ? 134 : file.data.length,
          ...(file.lfs ? { lfs: { oid: sha256(file.data), size: file.data.length, pointerSize: 134 } } : {}),
        }));
      if (entries.length === 0) {
        return new HttpResponse(JSON.stringify({ error: "Repository not found" }), {
          status: 401,
          headers: { "x-error-code": "RepoNotFound" },
        });
      }
      const page = Number(url.searchParams.get("cursor") ?? "0");
      const next = page + this.pageSize < entries.length ? page + this.pageSize : undefined;
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (next !== undefined) {
        const link = new URL(url);
        link.searchParams.set("cursor", String(next));
        headers["link"] = `<${link.href}>; rel="next"`;
      }
      return new HttpResponse(
        JSON.stringify([
          { type: "directory", path: "sub", oid: "x", size: 0 },
          ...entries.slice(page, page + this.pageSize),
        ]),
        { headers },
      );
    }
    if (parts[2] !== "resolve") return new HttpResponse("not found", { status: 404 });
    const renamed = this.renames.get(`${parts[0]}/${parts[1]}`);
    if (renamed !== undefined) {
      const rest = url.pathname.split("/").slice(3).join("/");
      return new HttpResponse(null, { status: 307, headers: { location: `/${renamed}/${rest}` } });
    }
    if (request.method === "HEAD") {
      const planned = this.headPlan.shift();
      if (planned) return new HttpResponse(null, { status: planned.status });
    }
    const key = `${parts[0]}/${parts[1]}/${parts.slice(4).join("/")}`;
    const file = this.files.get(key);
    if (file === undefined) {
      return new HttpResponse(request.method === "HEAD" ? null : "Entry not found", {
        status: 404,
        headers: { "x-error-code": "EntryNotFound", "x-error-message": "Entry not found" },
      });
    }
    if (!file.lfs) {
      return new HttpResponse(request.method === "HEAD" ? null : file.data, {
        status: 200,
        headers: {
          "content-length": String(file.data.length),
          etag: `"${createHash("sha1").update(`blob ${file.data.length}\0`).update(file.data).digest("hex")}"`,
          "x-repo-commit": COMMIT,
        },
      });
    }
    // LFS: a redirect to the CDN, with the file's size and SHA-256 in X-Linked-*. Content-Length and ETag
    // describe the redirect itself, as on the real Hub.
    const sha = sha256(file.data);
    return new HttpResponse(null, {
      status: 302,
      headers: {
        location: `${CDN}/blobs/${sha}?key=${encodeURIComponent(key)}`,
        "x-linked-size": String(file.data.length),
        "x-linked-etag": `"${file.announcedSha256 ?? sha}"`,
        "x-repo-commit": COMMIT,
        "content-length": "1234",
        etag: '"not-the-file"',
      },
    });
  }

  private cdn(request: Request): Response {
    this.record(request);
    const url = new URL(request.url);
    const file = this.files.get(url.searchParams.get("key") ?? "");
    if (file === undefined) return new HttpResponse("no such blob", { status: 404 });
    const action = this.cdnPlan.shift() ?? "ok";
    if (typeof action === "object") {
      return new HttpResponse("busy", {
        status: action.status,
        headers: action.retryAfter === undefined ? {} : { "retry-after": action.retryAfter },
      });
    }
    const range =
      action === "ignore-range" ? null : /^bytes=(\d+)-$/.exec(request.headers.get("range") ?? "");
    const start = range ? Number(range[1]) : 0;
    if (start >= file.data.length && range) {
      return new HttpResponse(null, {
        status: 416,
        headers: { "content-range": `bytes */${file.data.length}` },
      });
    }
    const body = file.data.subarray(start);
    const cutAt = action === "cut" || action === "stall" ? Math.floor(body.length / 2) : body.length;
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (action === "slow") await new Promise((resolve) => setTimeout(resolve, 5));
        if (sent >= cutAt) {
          if (action === "stall") {
            await new Promise(() => {}); // never answers again
          } else if (action === "cut") {
            await new Promise((resolve) => setTimeout(resolve, 20));
            controller.error(new Error("connection reset by fake CDN"));
          } else controller.close();
          return;
        }
        const end = Math.min(sent + CHUNK, cutAt);
        controller.enqueue(new Uint8Array(body.subarray(sent, end)));
        sent = end;
      },
    });
    const headers: Record<string, string> = { "content-length": String(body.length) };
    if (range) headers["content-range"] = `bytes ${start}-${file.data.length - 1}/${file.data.length}`;
    return new HttpResponse(stream, { status: range ? 206 : 200, headers });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fixtures

let root: string;
let modelDir: string;
let cacheDir: string;
let fake: FakeHub;
let modelBytes: Buffer;
let otherBytes: Buffer;
const server = setupServer();

async function fakeGguf(path: string, elements: number, seed: number): Promise<Buffer> {
  const values = new Float32Array(elements).map((_, i) => Math.sin(i + seed));
  await writeGguf(path, {
    metadata: [["general.architecture", { type: "string", value: "llama" }]],
    tensors: [{ name: "w", dims: [elements], type: GgmlType.F32, data: new Uint8Array(values.buffer) }],
  });
  return readFile(path);
}

beforeAll(async () => {
  server.listen({ onUnhandledRequest: "error" });
  root = await mkdtemp(join(tmpdir(), "crynux-resolve-"));
  modelBytes = await fakeGguf(join(root, "model.gguf"), 40_000, 1); // ~160 KB: several CDN chunks
  otherBytes = await fakeGguf(join(root, "other.gguf"), 1_000, 2);
});

afterAll(async () => {
  server.close();
  await rm(root, { recursive: true, force: true });
});

let testIndex = 0;
beforeEach(async () => {
  testIndex++;
  modelDir = join(root, `t${testIndex}`, "models");
  cacheDir = join(root, `t${testIndex}`, "cache");
  await mkdir(modelDir, { recursive: true });
  fake = new FakeHub();
  server.resetHandlers(...fake.handlers());
  clearFileSha256Memory();
});

afterEach(() => {
  server.resetHandlers();
});

function options(extra: Partial<ResolveModelOptions> = {}): ResolveModelOptions {
  return {
    modelDir,
    cacheDir,
    hubUrl: HUB,
    retry: { minDelayMs: 1, maxDelayMs: 20 },
    lockPollMs: 20,
    ...extra,
  };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

async function listFiles(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

const cachedPath = (...segments: string[]) => join(cacheDir, "hf", ...segments);

// ---------------------------------------------------------------------------------------------------------
// file: references

describe("file: references", () => {
  it("resolves a GGUF file inside the model directory and hashes it once", async () => {
    await mkdir(join(modelDir, "sub"));
    await writeFile(join(modelDir, "sub", "m.gguf"), modelBytes);
    const resolved = await resolveModel("file:sub/m.gguf", options());
    expect(resolved).toEqual({
      ref: "file:sub/m.gguf",
      path: join(modelDir, "sub", "m.gguf"),
      sha256: sha256(modelBytes),
      bytes: modelBytes.length,
      source: "file",
    });
    // Absolute paths inside the model directory, and file:/// URLs, work too.
    const absolute = await resolveModel(`file://${join(modelDir, "sub", "m.gguf")}`, options());
    expect(absolute.sha256).toBe(sha256(modelBytes));
    // The hash record survives the process (here: the in-memory cache is dropped).
    expect(await listFiles(join(cacheDir, "sha256"))).toHaveLength(1);
    clearFileSha256Memory();
    expect(await fileSha256(join(modelDir, "sub", "m.gguf"), { cacheDir })).toBe(sha256(modelBytes));
  });

  it("notices a file that changed since it was hashed", async () => {
    const path = join(modelDir, "m.gguf");
    await writeFile(path, modelBytes);
    expect((await resolveModel("file:m.gguf", options())).sha256).toBe(sha256(modelBytes));
    await writeFile(path, otherBytes);
    expect((await resolveModel("file:m.gguf", options())).sha256).toBe(sha256(otherBytes));
  });

  it("reports a missing file, a directory and a file that is not GGUF", async () => {
    const missing = await rejection(resolveModel("file:nope.gguf", options()));
    expect(missing).toBeInstanceOf(ModelNotFoundError);
    expect((missing as ModelNotFoundError).reason).toBe("missing");

    await mkdir(join(modelDir, "dir.gguf"));
    const directory = await rejection(resolveModel("file:dir.gguf", options()));
    expect((directory as ModelNotFoundError).reason).toBe("not-a-file");

    await writeFile(join(modelDir, "text.gguf"), "definitely not a model, just some words in a file");
    const invalid = await rejection(resolveModel("file:text.gguf", options()));
    expect(invalid).toBeInstanceOf(InvalidModelFileError);
    expect((invalid as InvalidModelFileError).cause).toBeInstanceOf(GgufFormatError);

    expect(await rejection(resolveModel("file:model.bin", options()))).toBeInstanceOf(ModelRefError);
  });

  it("refuses paths that leave the model directory, by ../, absolute path or symbolic link", async () => {
    await writeFile(join(root, "outside.gguf"), modelBytes);
    for (const ref of ["file:../../outside.gguf", `file:${join(root, "outside.gguf")}`]) {
      const error = await rejection(resolveModel(ref, options()));
      expect(error).toBeInstanceOf(ModelNotFoundError);
      expect((error as ModelNotFoundError).reason).toBe("outside-model-dir");
    }
    await symlink(join(root, "outside.gguf"), join(modelDir, "link.gguf"));
    const viaLink = await rejection(resolveModel("file:link.gguf", options()));
    expect((viaLink as ModelNotFoundError).reason).toBe("outside-model-dir");
    await symlink(root, join(modelDir, "dirlink"));
    const viaDirLink = await rejection(resolveModel("file:dirlink/outside.gguf", options()));
    expect((viaDirLink as ModelNotFoundError).reason).toBe("outside-model-dir");

    // A link that stays inside is fine, and so is anything when allowed.
    await writeFile(join(modelDir, "real.gguf"), otherBytes);
    await symlink(join(modelDir, "real.gguf"), join(modelDir, "alias.gguf"));
    expect((await resolveModel("file:alias.gguf", options())).path).toBe(join(modelDir, "real.gguf"));
    const allowed = await resolveModel("file:link.gguf", options({ allowOutsideModelDir: true }));
    expect(allowed.path).toBe(join(root, "outside.gguf"));
  });

  it("refuses a file larger than maxBytes", async () => {
    await writeFile(join(modelDir, "m.gguf"), modelBytes);
    const error = await rejection(resolveModel("file:m.gguf", options({ maxBytes: 1000 })));
    expect(error).toBeInstanceOf(ModelTooLargeError);
    expect((error as ModelTooLargeError).bytes).toBe(modelBytes.length);
  });
});

// ---------------------------------------------------------------------------------------------------------
// hf: references

describe("hf: downloads", () => {
  it("downloads through the CDN redirect, reports progress, verifies and caches the file", async () => {
    fake.add("org/repo-GGUF/model-Q4_0.gguf", modelBytes);
    const progress: { bytesDownloaded: number; totalBytes: number | undefined }[] = [];
    const ref = "hf:org/repo-GGUF/model-Q4_0.gguf";
    const resolved = await resolveModel(ref, options({ onProgress: (p) => progress.push(p) }));
    const path = cachedPath("org", "repo-GGUF", "main", "model-Q4_0.gguf");
    expect(resolved).toEqual({
      ref,
      path,
      sha256: sha256(modelBytes),
      bytes: modelBytes.length,
      source: "hf",
    });
    expect((await readFile(path)).equals(modelBytes)).toBe(true);
    expect(await listFiles(cachedPath("org", "repo-GGUF", "main"))).toEqual([
      "model-Q4_0.gguf",
      "model-Q4_0.gguf.verified.json",
    ]);
    // The download is pinned to the commit the HEAD named.
    expect(fake.log.map((entry) => `${entry.method} ${entry.url.split("?")[0]}`)).toEqual([
      `HEAD ${HUB}/org/repo-GGUF/resolve/main/model-Q4_0.gguf`,
      `GET ${HUB}/org/repo-GGUF/resolve/${COMMIT}/model-Q4_0.gguf`,
      `GET ${CDN}/blobs/${sha256(modelBytes)}`,
    ]);
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress[0]).toEqual({ ref, bytesDownloaded: 0, totalBytes: modelBytes.length });
    expect(progress.at(-1)).toEqual({
      ref,
      bytesDownloaded: modelBytes.length,
      totalBytes: modelBytes.length,
    });
    for (let i = 1; i < progress.length; i++) {
      expect(progress[i]!.bytesDownloaded).toBeGreaterThanOrEqual(progress[i - 1]!.bytesDownloaded);
    }
  });

  it("follows the Hub's relative redirect for a renamed repository", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    fake.renames.set("old-org/repo", "org/repo");
    const resolved = await resolveModel("hf:old-org/repo/model.gguf", options());
    expect(resolved.path).toBe(cachedPath("old-org", "repo", "main", "model.gguf"));
    expect(resolved.sha256).toBe(sha256(modelBytes));
    expect(fake.count("HEAD", `${HUB}/org/repo/`)).toBe(1);
  });

  it("downloads a file stored in git itself (no LFS), checking its git object id", async () => {
    fake.add("org/small/tiny.gguf", otherBytes, { lfs: false });
    const resolved = await resolveModel("hf:org/small@v1.0/tiny.gguf", options());
    expect(resolved.path).toBe(cachedPath("org", "small", "v1.0", "tiny.gguf"));
    expect(resolved.sha256).toBe(sha256(otherBytes));
  });

  it("resumes a download whose connection broke off", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    fake.cdnPlan = ["cut", "ok"];
    const resolved = await resolveModel("hf:org/repo/model.gguf", options());
    expect(resolved.sha256).toBe(sha256(modelBytes));
    const gets = fake.log.filter((entry) => entry.url.startsWith(CDN));
    expect(gets).toHaveLength(2);
    expect(gets[0]!.range).toBeNull();
    const resumeAt = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? "")?.[1]);
    expect(resumeAt).toBeGreaterThan(0);
    expect(resumeAt).toBeLessThan(modelBytes.length);
    expect((await readFile(resolved.path)).equals(modelBytes)).toBe(true);
  });

  it("resumes a .part left by an earlier process, and starts over when the server ignores the range", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    const path = cachedPath("org", "repo", "main", "model.gguf");
    await mkdir(cachedPath("org", "repo", "main"), { recursive: true });
    await writeFile(`${path}.part`, modelBytes.subarray(0, 50_000));
    const progress: number[] = [];
    await resolveModel(
      "hf:org/repo/model.gguf",
      options({ onProgress: (p) => progress.push(p.bytesDownloaded) }),
    );
    expect(fake.log.find((entry) => entry.url.startsWith(CDN))?.range).toBe("bytes=50000-");
    expect(progress[0]).toBe(50_000);
    expect((await readFile(path)).equals(modelBytes)).toBe(true);

    const other = cachedPath("org", "repo", "main", "other.gguf");
    fake.add("org/repo/other.gguf", otherBytes);
    fake.cdnPlan = ["ignore-range"];
    await writeFile(`${other}.part`, Buffer.alloc(100, 7)); // garbage that a 200 answer replaces
    expect((await resolveModel("hf:org/repo/other.gguf", options())).sha256).toBe(sha256(otherBytes));
    expect(existsSync(`${other}.part`)).toBe(false);
  });

  it("deletes a download whose SHA-256 does not match and leaves nothing behind", async () => {
    fake.add("org/repo/model.gguf", modelBytes, { announcedSha256: "ab".repeat(32) });
    const error = await rejection(resolveModel("hf:org/repo/model.gguf", options()));
    expect(error).toBeInstanceOf(ModelDownloadError);
    expect((error as ModelDownloadError).shortMessage).toMatch(/SHA-256/);
    expect(await listFiles(cachedPath("org", "repo", "main"))).toEqual([]);
  });

  it("refuses a downloaded file that is not GGUF", async () => {
    fake.add("org/repo/fake.gguf", Buffer.from("this is a text file pretending to be a model".repeat(10)));
    const error = await rejection(resolveModel("hf:org/repo/fake.gguf", options()));
    expect(error).toBeInstanceOf(InvalidModelFileError);
    expect(await listFiles(cachedPath("org", "repo", "main"))).toEqual([]);
  });

  it("retries 5xx and 429 answers, then succeeds", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    fake.headPlan = [{ status: 503 }];
    fake.cdnPlan = [{ status: 500 }, { status: 429, retryAfter: "1" }, "cut", { status: 502 }, "ok"];
    const resolved = await resolveModel(
      "hf:org/repo/model.gguf",
      options({ retry: { attempts: 6, minDelayMs: 1, maxDelayMs: 20 } }),
    );
    expect(resolved.sha256).toBe(sha256(modelBytes));
    expect(fake.count("HEAD", HUB)).toBe(2);
    expect(fake.count("GET", CDN)).toBe(5);
  });

  it("gives up after the last attempt with a ModelDownloadError", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    fake.cdnPlan = [{ status: 500 }, { status: 500 }, { status: 500 }];
    const error = await rejection(
      resolveModel("hf:org/repo/model.gguf", options({ retry: { attempts: 3, minDelayMs: 1 } })),
    );
    expect(error).toBeInstanceOf(ModelDownloadError);
    expect(fake.count("GET", CDN)).toBe(3);
  });

  it("reports a missing file or repository as ModelNotFoundError", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    const missingFile = await rejection(resolveModel("hf:org/repo/nope.gguf", options()));
    expect(missingFile).toBeInstanceOf(ModelNotFoundError);
    expect((missingFile as ModelNotFoundError).reason).toBe("missing");
    expect(fake.count("GET", HUB)).toBe(0);
    const missingRepo = await rejection(resolveModel("nobody/nothing:Q4_0", options()));
    expect(missingRepo).toBeInstanceOf(ModelNotFoundError);
    expect((missingRepo as ModelNotFoundError).shortMessage).toMatch(/no such repository/);
    expect(await listFiles(cacheDir)).toEqual([]);
  });

  it("refuses a model larger than maxBytes before downloading it", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    const error = await rejection(resolveModel("hf:org/repo/model.gguf", options({ maxBytes: 100_000 })));
    expect(error).toBeInstanceOf(ModelTooLargeError);
    expect(fake.count("GET", CDN)).toBe(0);
    // and a cached model larger than the limit too
    await resolveModel("hf:org/repo/model.gguf", options());
    await expect(resolveModel("hf:org/repo/model.gguf", options({ maxBytes: 100_000 }))).rejects.toThrow(
      ModelTooLargeError,
    );
  });

  it("refuses one part of a split model", async () => {
    const error = await rejection(resolveModel("hf:org/repo/model-00001-of-00002.gguf", options()));
    expect((error as ModelNotFoundError).reason).toBe("sharded");
    expect(fake.log).toEqual([]);
  });
});

describe("the download cache", () => {
  it("uses a verified file without the network, online or offline", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    const first = await resolveModel("hf:org/repo/model.gguf", options());
    fake.down = true;
    server.use(http.all(`${CDN}/*`, () => HttpResponse.error()));
    const requests = fake.log.length;
    expect(await resolveModel("hf:org/repo/model.gguf", options())).toEqual(first);
    expect(await resolveModel("hf:org/repo/model.gguf", options({ offline: true }))).toEqual(first);
    expect(fake.log.length).toBe(requests);

    const offlineMiss = await rejection(resolveModel("hf:org/repo/other.gguf", options({ offline: true })));
    expect((offlineMiss as ModelNotFoundError).reason).toBe("not-cached");
    expect(fake.log.length).toBe(requests);
    const online = await rejection(
      resolveModel("hf:org/repo/other.gguf", options({ retry: { attempts: 2, minDelayMs: 1 } })),
    );
    expect(online).toBeInstanceOf(ModelDownloadError);
  });

  it("adopts a complete file found without a sidecar once its SHA-256 checks out", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    const path = cachedPath("org", "repo", "main", "model.gguf");
    await mkdir(cachedPath("org", "repo", "main"), { recursive: true });
    await writeFile(path, modelBytes);
    const offline = await rejection(resolveModel("hf:org/repo/model.gguf", options({ offline: true })));
    expect((offline as ModelNotFoundError).reason).toBe("not-cached");
    expect((await resolveModel("hf:org/repo/model.gguf", options())).sha256).toBe(sha256(modelBytes));
    expect(fake.count("HEAD", HUB)).toBe(1);
    expect(fake.count("GET", CDN)).toBe(0);
    expect(existsSync(`${path}.verified.json`)).toBe(true);
  });

  it("re-hashes a cached file whose mtime moved, and replaces one whose content changed", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    const { path } = await resolveModel("hf:org/repo/model.gguf", options());
    await utimes(path, new Date(2020, 1, 1), new Date(2020, 1, 1));
    expect((await resolveModel("hf:org/repo/model.gguf", options({ offline: true }))).sha256).toBe(
      sha256(modelBytes),
    );
    const corrupted = Buffer.from(modelBytes);
    corrupted.writeUInt8(corrupted.readUInt8(corrupted.length - 1) ^ 0xff, corrupted.length - 1);
    await writeFile(path, corrupted);
    await expect(resolveModel("hf:org/repo/model.gguf", options({ offline: true }))).rejects.toThrow(
      ModelNotFoundError,
    );
    expect((await resolveModel("hf:org/repo/model.gguf", options())).sha256).toBe(sha256(modelBytes));
    expect((await readFile(path)).equals(modelBytes)).toBe(true);
  });

  it("shares one download between concurrent resolutions", async () => {
    fake.add("org/repo/model-Q8_0.gguf", modelBytes);
    const seen = new Set<string>();
    const results = await Promise.all([
      resolveModel("hf:org/repo/model-Q8_0.gguf", options({ onProgress: () => seen.add("a") })),
      resolveModel("hf:org/repo/model-Q8_0.gguf", options({ onProgress: () => seen.add("b") })),
      resolveModel("hf:org/repo@main/model-Q8_0.gguf", options()),
    ]);
    expect(new Set(results.map((result) => result.path)).size).toBe(1);
    expect(results.every((result) => result.sha256 === sha256(modelBytes))).toBe(true);
    expect(fake.count("HEAD", HUB)).toBe(1);
    expect(fake.count("GET", CDN)).toBe(1);
    expect(seen).toEqual(new Set(["a", "b"]));
  });

  it("lets one caller abort without stopping a shared download", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    fake.cdnPlan = ["slow"];
    let started!: () => void;
    const downloading = new Promise<void>((resolve) => {
      started = resolve;
    });
    const kept = resolveModel("hf:org/repo/model.gguf", options({ onProgress: () => started() }));
    await downloading;
    const controller = new AbortController();
    const aborted = resolveModel("hf:org/repo/model.gguf", options({ signal: controller.signal }));
    await new Promise((resolve) => setTimeout(resolve, 10));
    controller.abort(new Error("not needed any more"));
    await expect(aborted).rejects.toThrow("not needed any more");
    expect((await kept).sha256).toBe(sha256(modelBytes));
    expect(fake.count("HEAD", HUB)).toBe(1);
    expect(fake.count("GET", CDN)).toBe(1);
  });

  it("stops a download when its only caller aborts, and resumes it later", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    fake.cdnPlan = ["stall"];
    const controller = new AbortController();
    const aborted = resolveModel(
      "hf:org/repo/model.gguf",
      options({
        signal: controller.signal,
        onProgress: () => setTimeout(() => controller.abort(new Error("shutting down")), 30),
      }),
    );
    await expect(aborted).rejects.toThrow("shutting down");
    // The next resolution waits for the stopped download to let go of its lock, then resumes it.
    expect((await resolveModel("hf:org/repo/model.gguf", options())).sha256).toBe(sha256(modelBytes));
    const gets = fake.log.filter((entry) => entry.url.startsWith(CDN));
    expect(gets).toHaveLength(2);
    expect(gets[1]!.range).toBe(`bytes=${Math.floor(modelBytes.length / 2)}-`);
    expect(existsSync(`${cachedPath("org", "repo", "main", "model.gguf")}.lock`)).toBe(false);
  });

  it("waits for another process's lock, and breaks a lock whose process is gone", async () => {
    fake.add("org/repo/model.gguf", modelBytes);
    const path = cachedPath("org", "repo", "main", "model.gguf");
    await mkdir(cachedPath("org", "repo", "main"), { recursive: true });
    await writeFile(`${path}.lock`, JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname() }));
    expect((await resolveModel("hf:org/repo/model.gguf", options())).sha256).toBe(sha256(modelBytes));
    expect(existsSync(`${path}.lock`)).toBe(false);

    fake.add("org/repo/other.gguf", otherBytes);
    const other = cachedPath("org", "repo", "main", "other.gguf");
    // A live holder (the parent process, as far as the lock says): the resolution waits for its release.
    await writeFile(`${other}.lock`, JSON.stringify({ pid: process.ppid, host: hostname() }));
    let settled = false;
    const waiting = resolveModel("hf:org/repo/other.gguf", options()).finally(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(settled).toBe(false);
    expect(fake.count("GET", CDN)).toBe(1);
    await rm(`${other}.lock`);
    expect((await waiting).sha256).toBe(sha256(otherBytes));

    // This process's pid on a lock it does not hold: left by an earlier process with the same pid.
    fake.add("org/repo/third.gguf", otherBytes);
    const third = cachedPath("org", "repo", "main", "third.gguf");
    await writeFile(`${third}.lock`, JSON.stringify({ pid: process.pid, host: hostname() }));
    expect((await resolveModel("hf:org/repo/third.gguf", options())).bytes).toBe(otherBytes.length);
  });
});

describe("quantization references", () => {
  beforeEach(() => {
    fake.add("org/multi/README.md", Buffer.from("# readme"), { lfs: false });
    fake.add("org/multi/model-Q4_K_M.gguf", modelBytes);
    fake.add("org/multi/model.Q8_0.gguf", otherBytes);
    fake.add("org/multi/mmproj-model-f16.gguf", otherBytes);
    fake.add("org/multi/model-f16.gguf", otherBytes);
    fake.add("org/multi/IQ4_XS/model-IQ4_XS.gguf", otherBytes);
    fake.add("org/multi/extra/model-IQ4_XS.gguf", otherBytes);
    fake.add("org/multi/big-Q6_K-00001-of-00002.gguf", otherBytes);
    fake.add("org/multi/big-Q6_K-00002-of-00002.gguf", otherBytes);
  });

  it("picks the one file with the tag as a whole word, case-insensitively, and caches the choice", async () => {
    const resolved = await resolveModel("org/multi:q4_k_m", options());
    expect(resolved.path).toBe(cachedPath("org", "multi", "main", "model-Q4_K_M.gguf"));
    expect(resolved.sha256).toBe(sha256(modelBytes));
    expect(fake.count("GET", `${HUB}/api/models/org/multi/tree/main`)).toBeGreaterThan(1); // paginated
    expect(fake.count("HEAD", HUB)).toBe(0); // the tree listing gave size and SHA-256
    expect((await resolveModel("hf:org/multi:Q8_0", options())).path).toBe(
      cachedPath("org", "multi", "main", "model.Q8_0.gguf"),
    );
    // mmproj files do not count, so F16 is not ambiguous.
    expect((await resolveModel("hf:org/multi:F16", options())).path).toMatch(/model-f16\.gguf$/);

    fake.down = true;
    const requests = fake.log.length;
    expect(await resolveModel("org/multi:Q4_K_M", options({ offline: true }))).toEqual({
      ...resolved,
      ref: "org/multi:Q4_K_M",
    });
    expect(await resolveModel("org/multi:Q4_K_M", options())).toEqual({
      ...resolved,
      ref: "org/multi:Q4_K_M",
    });
    expect(fake.log.length).toBe(requests);
    const notSelectedYet = await rejection(resolveModel("org/multi:Q4_0", options({ offline: true })));
    expect((notSelectedYet as ModelNotFoundError).reason).toBe("not-cached");
  });

  it("lists the candidates when no file or several files match", async () => {
    const none = (await rejection(resolveModel("org/multi:Q2_K", options()))) as ModelNotFoundError;
    expect(none).toBeInstanceOf(ModelNotFoundError);
    expect(none.reason).toBe("no-match");
    expect(none.candidates).toContain("model-Q4_K_M.gguf");
    expect(none.candidates).not.toContain("README.md");
    expect(none.message).toMatch(/model\.Q8_0\.gguf/);

    const several = (await rejection(resolveModel("org/multi:IQ4_XS", options()))) as ModelNotFoundError;
    expect(several.reason).toBe("ambiguous");
    expect(several.candidates.sort()).toEqual(["IQ4_XS/model-IQ4_XS.gguf", "extra/model-IQ4_XS.gguf"]);

    const split = (await rejection(resolveModel("org/multi:Q6_K", options()))) as ModelNotFoundError;
    expect(split.reason).toBe("sharded");
    expect(split.details).toMatch(/not supported/);
    expect(fake.count("GET", CDN)).toBe(0);
  });

  it("matches tags as whole words only", () => {
    expect(hasQuantizationTag("llama-3.2-1b-instruct-q4_k_m.gguf", "Q4_K_M")).toBe(true);
    expect(hasQuantizationTag("Llama.Q4_K_M.gguf", "Q4_K_M")).toBe(true);
    expect(hasQuantizationTag("Q4_K_M/model.gguf", "Q4_K_M")).toBe(true);
    expect(hasQuantizationTag("model_q8_0.gguf", "Q8_0")).toBe(true);
    expect(hasQuantizationTag("model-IQ4_XS.gguf", "Q4_XS")).toBe(false);
    expect(hasQuantizationTag("model-bf16.gguf", "F16")).toBe(false);
    expect(hasQuantizationTag("model-Q8_0_L.gguf", "Q8_0")).toBe(false);
    expect(hasQuantizationTag("model-Q4_K_S.gguf", "Q4_K_M")).toBe(false);
  });
});

describe("fileSha256", () => {
  it("streams the file and agrees with a one-shot hash", async () => {
    const path = join(modelDir, "m.gguf");
    await writeFile(path, modelBytes);
    expect(await fileSha256(path)).toBe(sha256(modelBytes));
    const info = await stat(path);
    expect(info.size).toBe(modelBytes.length);
  });
});
