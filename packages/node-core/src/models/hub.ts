import { NodeCoreError } from "../errors.js";

/**
 * The Hugging Face Hub protocol as far as model resolution needs it:
 *
 * - `HEAD {hub}/{owner}/{repo}/resolve/{revision}/{file}` without following redirects. For an LFS file
 *   the Hub answers `302` to its CDN and puts the file's size in `X-Linked-Size` and its SHA-256 (quoted)
 *   in `X-Linked-Etag`; `Content-Length` and `ETag` of that response describe the redirect, not the file.
 *   For a file stored in git itself the answer is `200` with `Content-Length` and `ETag` (the git blob
 *   SHA-1). `X-Repo-Commit` names the commit the revision points at. Relative redirects (a renamed
 *   repository) are followed. This is what `huggingface_hub`'s `get_hf_file_metadata` does.
 * - `GET` of the same URL, following redirects, with `Range: bytes=N-` to resume.
 * - `GET {hub}/api/models/{owner}/{repo}/tree/{revision}?recursive=true`: a JSON array of
 *   `{ type, path, size, oid, lfs?: { oid, size, pointerSize } }` (`lfs.oid` is the SHA-256), paginated
 *   with a `Link: <…>; rel="next"` header, as `@huggingface/hub`'s `listFiles` reads it.
 * - Failures carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`);
 *   an unknown or private repository answers `401` to an anonymous client.
 */

/** The Hub that `hf:` references point at unless told otherwise. */
export const DEFAULT_HUB_URL = "https://huggingface.co";

/** How often and how patiently transient failures (network errors, 408, 429, 5xx) are retried. */
export type RetryPolicy = {
  /** Attempts in all, the first included. */
  attempts: number;
  /** Delay before the first retry; it doubles (with jitter) on each further one. */
  minDelayMs: number;
  /** Upper bound of one delay, a server's `Retry-After` included. */
  maxDelayMs: number;
};

/** Retries used when none is given: 5 attempts in all, from 0.5 s doubling up to 30 s between them. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 5, minDelayMs: 500, maxDelayMs: 30_000 };

/** What every request to the Hub needs. */
export type HubContext = {
  hubUrl: string;
  fetch: typeof fetch;
  signal: AbortSignal | undefined;
  retry: RetryPolicy;
};

/** A request to the Hub or its CDN that failed: an HTTP error status, or no answer at all. */
export class HubHttpError extends NodeCoreError {
  override name = "HubHttpError";
  /** The HTTP status; `undefined` when the request got no answer (network error, cut-off body). */
  readonly status: number | undefined;
  /** The Hub's `X-Error-Code` header, such as `EntryNotFound` or `RepoNotFound`. */
  readonly errorCode: string | undefined;
  readonly url: string;
  /** The server's `Retry-After`, in milliseconds. */
  readonly retryAfterMs: number | undefined;
  /** Whether trying again later may succeed. */
  readonly transient: boolean;

  constructor(
    shortMessage: string,
    parameters: {
      url: string;
      status?: number | undefined;
      errorCode?: string | undefined;
      retryAfterMs?: number | undefined;
      transient: boolean;
      details?: string | undefined;
      cause?: unknown;
    },
  ) {
    super(shortMessage, { details: parameters.details, cause: parameters.cause });
    this.url = parameters.url;
    this.status = parameters.status;
    this.errorCode = parameters.errorCode;
    this.retryAfterMs = parameters.retryAfterMs;
    this.transient = parameters.transient;
  }
}

/** Whether an HTTP status is worth retrying. */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** `Retry-After` as milliseconds: delay-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** Drops a response body that will not be read, so its connection is freed at once. */
export function discardBody(response: Response): void {
  response.body?.cancel().catch(() => {});
}

/** Throws a {@link HubHttpError} describing a failed response (and frees it). */
export async function failedResponse(response: Response, url: string): Promise<never> {
  let message = response.headers.get("x-error-message") ?? "";
  if (!message) {
    try {
      const text = (await response.text()).slice(0, 500);
      try {
        const json = JSON.parse(text) as { error?: unknown };
        message = typeof json.error === "string" ? json.error : text;
      } catch {
        message = text;
      }
    } catch {
      // the body is not needed
    }
  }
  const errorCode = response.headers.get("x-error-code") ?? undefined;
  throw new HubHttpError(
    `${url} answered ${response.status}${response.statusText ? ` ${response.statusText}` : ""}${errorCode ? ` (${errorCode})` : ""}.`,
    {
      url,
      status: response.status,
      errorCode,
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after")),
      transient: isTransientStatus(response.status),
      details: message.trim() || undefined,
    },
  );
}

/** `fetch`, with a failure to get any answer turned into a transient {@link HubHttpError}. */
export async function hubFetch(context: HubContext, url: string, init: RequestInit): Promise<Response> {
  try {
    return await context.fetch(url, { ...init, signal: context.signal ?? null });
  } catch (error) {
    if (context.signal?.aborted) throw context.signal.reason;
    throw new HubHttpError(`Could not reach ${url}.`, {
      url,
      transient: true,
      details: error instanceof Error ? error.message : String(error),
      cause: error,
    });
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The delay before retry number `retry` (1-based): the server's `Retry-After`, else jittered backoff. */
export function retryDelay(policy: RetryPolicy, retry: number, retryAfterMs: number | undefined): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxDelayMs);
  const base = policy.minDelayMs * 2 ** (retry - 1);
  return Math.min(policy.maxDelayMs, base / 2 + Math.random() * (base / 2));
}

/**
 * Runs `operation` until it succeeds, retrying transient {@link HubHttpError}s (network errors, 408, 429,
 * 5xx) with exponential backoff, honouring `Retry-After`. Anything else is thrown at once.
 */
export async function withRetry<T>(
  context: Pick<HubContext, "retry" | "signal">,
  operation: (attempt: number) => Promise<T>,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt);
    } catch (error) {
      if (!(error instanceof HubHttpError) || !error.transient || attempt >= context.retry.attempts)
        throw error;
      await sleep(retryDelay(context.retry, attempt, error.retryAfterMs), context.signal);
    }
  }
}

function encodePath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** `{hub}/{owner}/{repo}/resolve/{revision}/{file}`. */
export function resolveUrl(
  hubUrl: string,
  owner: string,
  repo: string,
  revision: string,
  file: string,
): string {
  return `${hubUrl.replace(/\/+$/, "")}/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/resolve/${encodeURIComponent(revision)}/${encodePath(file)}`;
}

/** `{hub}/api/models/{owner}/{repo}/tree/{revision}?recursive=true`. */
export function treeUrl(hubUrl: string, owner: string, repo: string, revision: string): string {
  return `${hubUrl.replace(/\/+$/, "")}/api/models/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}/tree/${encodeURIComponent(revision)}?recursive=true`;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;
const SHA1_HEX = /^[0-9a-f]{40}$/;

/** What the Hub says about one file before it is downloaded. */
export type RemoteFileInfo = {
  /** Size in bytes, when the Hub says. */
  size: number | undefined;
  /** SHA-256 of the content: the LFS object id. Absent for a file stored in git itself. */
  sha256: string | undefined;
  /** Git blob SHA-1 of a file stored in git itself (its `ETag`); absent for LFS files. */
  gitSha1: string | undefined;
  /** The commit the revision resolved to (`X-Repo-Commit`). */
  commit: string | undefined;
};

/** `"abc"`, `W/"abc"` → `abc`, as `huggingface_hub`'s `_normalize_etag`. */
function normalizeEtag(etag: string | null): string | undefined {
  if (etag === null) return undefined;
  return etag.trim().replace(/^W\//, "").replace(/^"|"$/g, "").toLowerCase();
}

function parseSize(value: string | null): number | undefined {
  if (value === null || !/^\d+$/.test(value.trim())) return undefined;
  const size = Number(value.trim());
  return Number.isSafeInteger(size) ? size : undefined;
}

/**
 * Asks the Hub for a file's size and SHA-256 with a `HEAD` on its resolve URL (not following the
 * redirect to the CDN, whose headers describe the CDN object). Retries transient failures.
 *
 * @throws {HubHttpError} for a missing repository, revision or file (404/401) and other failures.
 */
export async function fetchFileMetadata(context: HubContext, url: string): Promise<RemoteFileInfo> {
  return withRetry(context, async () => {
    let current = url;
    for (let hop = 0; hop < 5; hop++) {
      const response = await hubFetch(context, current, {
        method: "HEAD",
        redirect: "manual",
        headers: { "accept-encoding": "identity" },
      });
      discardBody(response);
      const linkedSize = parseSize(response.headers.get("x-linked-size"));
      const linkedEtag = normalizeEtag(response.headers.get("x-linked-etag"));
      const commit = response.headers.get("x-repo-commit") ?? undefined;
      const isRedirect = response.status >= 300 && response.status < 400;
      if (isRedirect && linkedSize === undefined && linkedEtag === undefined) {
        const location = response.headers.get("location");
        if (location === null) await failedResponse(response, current);
        const next = new URL(location as string, current);
        // A relative redirect stays on the Hub (a renamed repository): follow it. Any other one has no
        // file information to offer.
        if (next.origin === new URL(current).origin) {
          current = next.href;
          continue;
        }
        return { size: undefined, sha256: undefined, gitSha1: undefined, commit };
      }
      if (!isRedirect && !response.ok) await failedResponse(response, current);
      if (linkedSize !== undefined || linkedEtag !== undefined) {
        return {
          size: linkedSize,
          sha256: linkedEtag !== undefined && SHA256_HEX.test(linkedEtag) ? linkedEtag : undefined,
          gitSha1: undefined,
          commit,
        };
      }
      // A file stored in git itself: the response describes the file directly.
      const etag = normalizeEtag(response.headers.get("etag"));
      return {
        size: parseSize(response.headers.get("content-length")),
        sha256: undefined,
        gitSha1: etag !== undefined && SHA1_HEX.test(etag) ? etag : undefined,
        commit,
      };
    }
    throw new HubHttpError(`${url} redirects too many times.`, { url, transient: false });
  });
}

/** One file of a repository, from the tree API. */
export type RepoFileEntry = {
  path: string;
  size: number;
  /** The LFS SHA-256; absent for files stored in git itself. */
  sha256: string | undefined;
};

type TreeEntry = {
  type?: unknown;
  path?: unknown;
  size?: unknown;
  lfs?: { oid?: unknown; size?: unknown } | null;
};

function nextLink(header: string | null, base: string): string | undefined {
  if (header === null) return undefined;
  for (const part of header.split(",")) {
    const match = /<([^>]*)>\s*;(.*)$/.exec(part.trim());
    if (match && /rel\s*=\s*"?next"?/i.test(match[2] ?? "")) return new URL(match[1] ?? "", base).href;
  }
  return undefined;
}

/**
 * Lists every file of a repository at a revision (recursively, following pagination).
 *
 * @throws {HubHttpError} for a missing repository or revision and other failures.
 */
export async function listRepoFiles(
  context: HubContext,
  owner: string,
  repo: string,
  revision: string,
): Promise<RepoFileEntry[]> {
  const files: RepoFileEntry[] = [];
  let url: string | undefined = treeUrl(context.hubUrl, owner, repo, revision);
  for (let page = 0; url !== undefined; page++) {
    if (page >= 1000) throw new HubHttpError(`${url} has too many pages.`, { url, transient: false });
    const pageUrl: string = url;
    const { entries, next } = await withRetry(context, async () => {
      const response = await hubFetch(context, pageUrl, { headers: { accept: "application/json" } });
      if (!response.ok) await failedResponse(response, pageUrl);
      let body: unknown;
      try {
        body = await response.json();
      } catch (error) {
        throw new HubHttpError(`${pageUrl} did not answer JSON.`, {
          url: pageUrl,
          transient: true,
          cause: error,
        });
      }
      if (!Array.isArray(body)) {
        throw new HubHttpError(`${pageUrl} did not answer a list of files.`, {
          url: pageUrl,
          transient: false,
        });
      }
      return { entries: body as TreeEntry[], next: nextLink(response.headers.get("link"), pageUrl) };
    });
    for (const entry of entries) {
      if (entry === null || typeof entry !== "object" || entry.type !== "file") continue;
      if (typeof entry.path !== "string") continue;
      const lfsOid = typeof entry.lfs?.oid === "string" ? entry.lfs.oid.toLowerCase() : undefined;
      const lfsSize = typeof entry.lfs?.size === "number" ? entry.lfs.size : undefined;
      const size = lfsSize ?? (typeof entry.size === "number" ? entry.size : undefined);
      if (size === undefined) continue;
      files.push({
        path: entry.path,
        size,
        sha256: lfsOid !== undefined && SHA256_HEX.test(lfsOid) ? lfsOid : undefined,
      });
    }
    url = next;
  }
  return files;
}
