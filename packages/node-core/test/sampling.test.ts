import { describe, expect, it } from "vitest";
import { DEFAULT_EXECUTION_PROFILE, parseRuntimeId, runtimeId } from "../src/executor/profile.js";
import { createRandom, sampleToken } from "../src/executor/sampling.js";

const neutral = { temperature: 1, top_k: 0, top_p: 1, typical_p: 1, min_p: 0, repetition_penalty: 1 };

describe("createRandom", () => {
  it("is a pure function of the seed, uniform in [0, 1)", () => {
    const a = createRandom(42);
    const b = createRandom(42);
    const c = createRandom(43);
    const xs = Array.from({ length: 10_000 }, () => a());
    expect(Array.from({ length: 10_000 }, () => b())).toEqual(xs);
    expect(c()).not.toBe(xs[0]);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((sum, x) => sum + x, 0) / xs.length;
    expect(mean).toBeGreaterThan(0.48);
    expect(mean).toBeLessThan(0.52);
  });

  it("gives these values (pinned: a change here changes every sampled result on the network)", () => {
    const random = createRandom(0);
    expect([random(), random(), random()]).toEqual([
      0.8868539502021594, 0.012474988946590604, 0.032522145755498943,
    ]);
    expect(createRandom(4294967295)()).toBe(0.19461841469507213);
  });
});

describe("sampleToken (Hugging Face logits-processor semantics)", () => {
  const logits = () => Float64Array.from([1, 3, 2, 0.5, 2.9]);

  it("top_k 1 is greedy", () => {
    expect(sampleToken(logits(), [], { ...neutral, top_k: 1 }, createRandom(1))).toBe(1);
  });

  it("draws in proportion to softmax probabilities", () => {
    const counts = new Map<number, number>();
    const random = createRandom(7);
    for (let i = 0; i < 20_000; i++) {
      const token = sampleToken(logits(), [], neutral, random);
      counts.set(token, (counts.get(token) ?? 0) + 1);
    }
    const weights = [1, 3, 2, 0.5, 2.9].map(Math.exp);
    const total = weights.reduce((a, b) => a + b);
    for (const [token, count] of counts) expect(count / 20_000).toBeCloseTo(weights[token]! / total, 1);
  });

  it("top_p keeps the smallest set reaching the mass", () => {
    // softmax([3, 2.9]) dominates; with top_p 0.4 only the best token survives.
    const seen = new Set<number>();
    const random = createRandom(3);
    for (let i = 0; i < 500; i++) seen.add(sampleToken(logits(), [], { ...neutral, top_p: 0.4 }, random));
    expect([...seen]).toEqual([1]);
  });

  it("min_p drops tokens far below the best one", () => {
    const seen = new Set<number>();
    const random = createRandom(3);
    for (let i = 0; i < 2000; i++) seen.add(sampleToken(logits(), [], { ...neutral, min_p: 0.5 }, random));
    // p(token)/p(best) = exp(l - 3) >= 0.5  ⇔  l >= 3 - ln 2 ≈ 2.31: tokens 1 and 4.
    expect([...seen].sort()).toEqual([1, 4]);
  });

  it("typical_p keeps the tokens whose surprise is closest to the entropy", () => {
    const seen = new Set<number>();
    const random = createRandom(5);
    for (let i = 0; i < 2000; i++)
      seen.add(sampleToken(logits(), [], { ...neutral, typical_p: 0.3 }, random));
    // Compute the expected set independently.
    const l = [1, 3, 2, 0.5, 2.9];
    const z = l.map(Math.exp).reduce((a, b) => a + b);
    const p = l.map((x) => Math.exp(x) / z);
    const entropy = -p.reduce((sum, pi) => sum + pi * Math.log(pi), 0);
    const order = p
      .map((pi, token) => ({ token, d: Math.abs(-Math.log(pi) - entropy), pi }))
      .sort((a, b) => a.d - b.d);
    const expected: number[] = [];
    let mass = 0;
    for (const entry of order) {
      expected.push(entry.token);
      mass += entry.pi;
      if (mass >= 0.3) break;
    }
    expect([...seen].sort()).toEqual(expected.sort());
  });

  it("repetition penalty divides positive and multiplies negative logits of seen tokens", () => {
    const values = Float64Array.from([2, -1, 1.9]);
    sampleToken(values, [0, 1, 1], { ...neutral, repetition_penalty: 2, top_k: 1 }, createRandom(1));
    expect([...values]).toEqual([1, -2, 1.9]);
    expect(
      sampleToken(
        Float64Array.from([2, -1, 1.9]),
        [0],
        { ...neutral, repetition_penalty: 2, top_k: 1 },
        createRandom(1),
      ),
    ).toBe(2);
  });

  it("temperature sharpens the distribution", () => {
    const random = createRandom(11);
    let best = 0;
    for (let i = 0; i < 2000; i++)
      if (sampleToken(logits(), [], { ...neutral, temperature: 0.05 }, random) === 1) best++;
    expect(best / 2000).toBeGreaterThan(0.85);
  });

  it("breaks ties by token id, so equal logits sample the same everywhere", () => {
    const tie = () => Float64Array.from([5, 5, 5]);
    expect(sampleToken(tie(), [], { ...neutral, top_k: 1 }, createRandom(1))).toBe(0);
  });
});

describe("runtime ids", () => {
  it("name the engine, version, backend and profile", () => {
    expect(runtimeId()).toBe("node-llama-cpp@3.22.1/cpu/t1/b512/c4096");
    expect(parseRuntimeId(runtimeId({ ...DEFAULT_EXECUTION_PROFILE, threads: 2 }))).toEqual({
      ...DEFAULT_EXECUTION_PROFILE,
      threads: 2,
    });
    expect(parseRuntimeId("torch@2.5/cuda")).toBeUndefined();
    expect(parseRuntimeId("node-llama-cpp@3.22.1/cpu/t0/b512/c4096")).toBeUndefined();
  });
});
