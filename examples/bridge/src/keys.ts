import { createHash } from "node:crypto";
import type { ApiKeyConfig } from "./config.js";
import { BridgeError } from "./errors.js";

/** An API key as the bridge knows it: its name (usage is recorded under it) and limits. */
export type ApiKey = Omit<ApiKeyConfig, "key" | "keySha256">;

const sha256Hex = (text: string) => createHash("sha256").update(text).digest("hex");

/** Finds API keys by their bearer token; only sha256 digests are kept in memory. */
export function createKeyring(keys: readonly ApiKeyConfig[]): (authorization: string | undefined) => ApiKey {
  const byDigest = new Map<string, ApiKey>();
  for (const { key, keySha256, ...rest } of keys) byDigest.set(keySha256 ?? sha256Hex(key!), rest);
  return (authorization) => {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    if (!match)
      throw new BridgeError(
        "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.",
        { status: 401, type: "invalid_request_error", code: "missing_api_key" },
      );
    const token = match[1]!;
    const key = byDigest.get(sha256Hex(token));
    if (!key)
      throw new BridgeError(`Incorrect API key provided: ${token.slice(0, 4)}****${token.slice(-2)}.`, {
        status: 401,
        type: "invalid_request_error",
        code: "invalid_api_key",
      });
    return key;
  };
}

type Bucket = { tokens: number; updatedMs: number };

/**
 * Per-key token buckets: a key may burst `requests` and then keeps `requests / windowMs` on average. Keys
 * without a rate limit pass.
 */
export function createKeyRateLimiter(now: () => number = Date.now): (key: ApiKey) => void {
  const buckets = new Map<string, Bucket>();
  return (key) => {
    const limit = key.rateLimit;
    if (!limit) return;
    const at = now();
    const perMs = limit.requests / limit.windowMs;
    const bucket = buckets.get(key.name) ?? { tokens: limit.requests, updatedMs: at };
    // A clock that steps back must not mint tokens.
    bucket.tokens = Math.min(limit.requests, bucket.tokens + Math.max(0, at - bucket.updatedMs) * perMs);
    bucket.updatedMs = at;
    buckets.set(key.name, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return;
    }
    const retryAfterSeconds = Math.max(1, Math.ceil((1 - bucket.tokens) / perMs / 1000));
    throw new BridgeError(
      `Rate limit reached for key '${key.name}': ${limit.requests} requests per ${limit.windowMs} ms. Retry in ${retryAfterSeconds} s.`,
      { status: 429, type: "rate_limit_error", code: "rate_limit_exceeded", retryAfterSeconds },
    );
  };
}

/** Start of the UTC day of `ms`, where daily quotas reset. */
export function startOfUtcDay(ms: number): number {
  return ms - (((ms % 86_400_000) + 86_400_000) % 86_400_000);
}

/**
 * Throws 429 `insufficient_quota` when one more task of `fee` wei would exceed the key's daily quota. Like
 * OpenAI, without `retry-after`: retrying soon does not help.
 */
export function checkQuota(key: ApiKey, usage: { tasks: number; spentWei: bigint }, fee: bigint): void {
  const quota = key.quota;
  if (!quota) return;
  if (quota.tasksPerDay !== undefined && usage.tasks + 1 > quota.tasksPerDay)
    throw new BridgeError(
      `You exceeded your current quota of ${quota.tasksPerDay} tasks per day for key '${key.name}'.`,
      { status: 429, type: "insufficient_quota", code: "insufficient_quota" },
    );
  if (quota.spendPerDayWei !== undefined && usage.spentWei + fee > quota.spendPerDayWei)
    throw new BridgeError(
      `You exceeded your current quota: key '${key.name}' spent ${usage.spentWei} of ${quota.spendPerDayWei} wei today and this task costs ${fee} wei.`,
      { status: 429, type: "insufficient_quota", code: "insufficient_quota" },
    );
}
