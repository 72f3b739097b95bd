/** How many requests one address may make: `requests` per `windowMs`, refilled continuously. */
export type RateLimitConfig = {
  requests: number;
  windowMs: number;
};

export type RateLimitDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export type RateLimiter = {
  /** Takes one token from `key`'s bucket if there is one. */
  take(key: string): RateLimitDecision;
  /** Number of buckets held in memory (for tests). */
  readonly size: number;
};

type Bucket = { tokens: number; updatedMs: number };

/**
 * An in-memory token bucket per key: a bucket holds up to `requests` tokens and refills at
 * `requests / windowMs` per millisecond, so a client may burst a whole window's worth and then keeps
 * the average rate. Full buckets are dropped from time to time: a key that has been idle for a whole
 * window is indistinguishable from a new one, so memory stays bounded by the keys active in one window.
 */
export function createRateLimiter(config: RateLimitConfig, now: () => number = Date.now): RateLimiter {
  const capacity = config.requests;
  const perMs = config.requests / config.windowMs;
  const buckets = new Map<string, Bucket>();
  let lastSweepMs = now();

  const sweep = (at: number) => {
    if (at - lastSweepMs < config.windowMs) return;
    lastSweepMs = at;
    for (const [key, bucket] of buckets) {
      if (bucket.tokens + (at - bucket.updatedMs) * perMs >= capacity) buckets.delete(key);
    }
  };

  return {
    take(key) {
      const at = now();
      sweep(at);
      const bucket = buckets.get(key) ?? { tokens: capacity, updatedMs: at };
      // A clock that steps back must not mint tokens: elapsed time never counts below zero.
      bucket.tokens = Math.min(capacity, bucket.tokens + Math.max(0, at - bucket.updatedMs) * perMs);
      bucket.updatedMs = at;
      buckets.set(key, bucket);
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        return { allowed: true };
      }
      return {
        allowed: false,
        retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / perMs / 1000)),
      };
    },
    get size() {
      return buckets.size;
    },
  };
}
