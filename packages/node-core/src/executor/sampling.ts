import type { ResolvedGenerationConfig } from "@crynux/tasks";

/**
 * A seeded pseudo-random generator (SplitMix64 on BigInt-free 32-bit halves → xoshiro128**), so that a
 * sampled GPT task gives the same tokens on every node. Returns floats in [0, 1).
 */
export function createRandom(seed: number): () => number {
  // SplitMix32 to spread the seed over the four state words.
  let s = seed >>> 0;
  const next32 = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = next32();
  let b = next32();
  let c = next32();
  let d = next32();
  const xoshiro = () => {
    const result = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result;
  };
  // 53 random bits per float.
  return () => ((xoshiro() >>> 5) * 67108864 + (xoshiro() >>> 6)) / 9007199254740992;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The sampling settings the JavaScript sampler applies (a subset of the resolved generation config). */
export type SamplerSettings = Pick<
  ResolvedGenerationConfig,
  "temperature" | "top_k" | "top_p" | "typical_p" | "min_p" | "repetition_penalty"
>;

/**
 * Chooses the next token from raw logits with Hugging Face's logits-processor semantics and order:
 * repetition penalty, temperature, top-k, top-p, min-p, typical-p, then a draw from the remaining
 * distribution with `random()`. Used for settings the native sampler lacks (typical_p).
 *
 * Candidates are ordered by logit (descending) and then by token id, so ties break the same way everywhere.
 *
 * @param logits raw logits indexed by token id (modified in place by the repetition penalty)
 * @param history tokens seen so far (prompt and generated), for the repetition penalty
 */
export function sampleToken(
  logits: Float64Array,
  history: Iterable<number>,
  settings: SamplerSettings,
  random: () => number,
): number {
  if (settings.repetition_penalty !== 1) {
    const seen = new Set(history);
    for (const token of seen) {
      if (token < 0 || token >= logits.length) continue;
      const logit = logits[token]!;
      logits[token] = logit > 0 ? logit / settings.repetition_penalty : logit * settings.repetition_penalty;
    }
  }
  const temperature = settings.temperature > 0 ? settings.temperature : 1;
  let candidates = Array.from(logits.keys());
  candidates.sort((x, y) => logits[y]! - logits[x]! || x - y);
  const scaled = (token: number) => logits[token]! / temperature;

  if (settings.top_k > 0 && settings.top_k < candidates.length)
    candidates = candidates.slice(0, settings.top_k);

  const softmax = (tokens: number[]): Float64Array => {
    const max = scaled(tokens[0]!);
    const probabilities = new Float64Array(tokens.length);
    let sum = 0;
    for (let i = 0; i < tokens.length; i++) {
      const p = Math.exp(scaled(tokens[i]!) - max);
      probabilities[i] = p;
      sum += p;
    }
    for (let i = 0; i < tokens.length; i++) probabilities[i]! /= sum;
    return probabilities;
  };

  if (settings.top_p < 1) {
    // Keep the smallest prefix (by probability) whose mass reaches top_p; at least one token.
    const probabilities = softmax(candidates);
    let cumulative = 0;
    let keep = 0;
    while (keep < candidates.length) {
      cumulative += probabilities[keep]!;
      keep++;
      if (cumulative >= settings.top_p) break;
    }
    candidates = candidates.slice(0, Math.max(1, keep));
  }

  if (settings.min_p > 0) {
    const probabilities = softmax(candidates);
    const threshold = settings.min_p * probabilities[0]!;
    const kept = candidates.filter((_, i) => probabilities[i]! >= threshold);
    candidates = kept.length > 0 ? kept : candidates.slice(0, 1);
  }

  if (settings.typical_p < 1) {
    // Locally typical sampling: prefer tokens whose surprise is close to the distribution's entropy.
    const probabilities = softmax(candidates);
    let entropy = 0;
    for (const p of probabilities) if (p > 0) entropy -= p * Math.log(p);
    const order = candidates.map((token, i) => ({
      token,
      p: probabilities[i]!,
      distance: Math.abs(-Math.log(probabilities[i]!) - entropy),
    }));
    order.sort((x, y) => x.distance - y.distance || x.token - y.token);
    let cumulative = 0;
    const kept: number[] = [];
    for (const entry of order) {
      kept.push(entry.token);
      cumulative += entry.p;
      if (cumulative >= settings.typical_p) break;
    }
    candidates = kept;
    candidates.sort((x, y) => logits[y]! - logits[x]! || x - y);
  }

  if (candidates.length === 1) return candidates[0]!;
  const probabilities = softmax(candidates);
  const u = random();
  let cumulative = 0;
  for (let i = 0; i < candidates.length; i++) {
    cumulative += probabilities[i]!;
    if (u < cumulative) return candidates[i]!;
  }
  return candidates[candidates.length - 1]!;
}
