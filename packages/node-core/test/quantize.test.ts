import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  GgmlType,
  type GgufTensorSource,
  type GgufValue,
  LlamaFileType,
  readGguf,
  readTensorBytes,
  writeGguf,
} from "../src/gguf/index.js";
import {
  dequantizeRowQ4_0,
  dequantizeRowQ8_0,
  fileTypeOf,
  QuantizationError,
  type QuantizeProgress,
  quantizeGguf,
  quantizeRow,
  quantizeRowQ4_0,
  quantizeRowQ8_0,
  toFloat32,
} from "../src/quantize/index.js";
import { generateTestModel } from "../src/testModels/generate.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-quantize-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const q8 = (values: number[]) => {
  const out = new Uint8Array(34 * (values.length / 32));
  quantizeRowQ8_0(Float32Array.from(values), out);
  return out;
};
const q4 = (values: number[]) => {
  const out = new Uint8Array(18 * (values.length / 32));
  quantizeRowQ4_0(Float32Array.from(values), out);
  return out;
};
const dq8 = (bytes: Uint8Array) => {
  const out = new Float32Array((bytes.length / 34) * 32);
  dequantizeRowQ8_0(bytes, out);
  return Array.from(out);
};
const dq4 = (bytes: Uint8Array) => {
  const out = new Float32Array((bytes.length / 18) * 32);
  dequantizeRowQ4_0(bytes, out);
  return Array.from(out);
};
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

// Expected values below were worked out by hand from ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref
// (ggml/src/ggml-quants.c), not produced by the code under test.
describe("Q8_0 blocks", () => {
  it("0..31: d = 31/127 → fp16 0x33d0 (0.244140625), q = round(127·j/31)", () => {
    const bytes = q8(range(32));
    // 127j/31 = 4j + 3j/31: +0 for j ≤ 5, +1 for 6..15, +2 for 16..25, +3 for 26..31; no value is near a tie.
    const qs = [
      0, 4, 8, 12, 16, 20, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61, 66, 70, 74, 78, 82, 86, 90, 94, 98, 102,
      107, 111, 115, 119, 123, 127,
    ];
    expect(hex(bytes)).toBe(`d033${Buffer.from(qs).toString("hex")}`);
    expect(dq8(bytes)).toEqual([
      0, 0.9765625, 1.953125, 2.9296875, 3.90625, 4.8828125, 6.103515625, 7.080078125, 8.056640625,
      9.033203125, 10.009765625, 10.986328125, 11.962890625, 12.939453125, 13.916015625, 14.892578125,
      16.11328125, 17.08984375, 18.06640625, 19.04296875, 20.01953125, 20.99609375, 21.97265625, 22.94921875,
      23.92578125, 24.90234375, 26.123046875, 27.099609375, 28.076171875, 29.052734375, 30.029296875,
      31.005859375,
    ]);
  });

  it("rounds halves away from zero (roundf), not up (Math.round)", () => {
    // amax 127 ⇒ d = 1, id = 1: the products are exactly the inputs.
    const values = [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -126.5, 0.49999997019767761, -0.49999997019767761];
    const bytes = q8([...values, ...new Array(22).fill(0)]);
    expect(hex(bytes.subarray(0, 12))).toBe(
      "003c" + "7f" + "01" + "02" + "03" + "ff" + "fe" + "fd" + "81" + "00" + "00",
    );
    expect(dq8(bytes).slice(0, 10)).toEqual([127, 1, 2, 3, -1, -2, -3, -127, 0, 0]);
  });

  it("takes the scale from the largest magnitude, negative or not", () => {
    const bytes = q8([-127, 63.5, -63.5, ...new Array(29).fill(1)]);
    expect(hex(bytes.subarray(0, 5))).toBe("003c81" + "40" + "c0");
    expect(dq8(bytes).slice(0, 4)).toEqual([-127, 64, -64, 1]);
  });

  it("all zeros: d = 0, every quant 0", () => {
    const bytes = q8(new Array(32).fill(0));
    expect(hex(bytes)).toBe("00".repeat(34));
    expect(dq8(bytes)).toEqual(new Array(32).fill(0));
  });

  it("stores d in fp16, so the error can exceed d/2", () => {
    // amax 127.0625 ⇒ d = 1.000492 = 1 + 0.5039/1024 → fp16 rounds up to 1 + 1/1024 (0x3c01).
    // 99.56·id = 99.511 → 100, read back as 100·1.0009765625: error 0.5377 > d/2 = 0.5002.
    const bytes = q8([127.0625, 99.56, ...new Array(30).fill(0)]);
    expect(hex(bytes.subarray(0, 4))).toBe("013c7f64");
    expect(dq8(bytes).slice(0, 2)).toEqual([127.1240234375, 100.09765625]);
  });
});

describe("Q4_0 blocks", () => {
  it("0..31: max 31 ⇒ d = -3.875 (fp16 0xc3c0), q = ⌊8.5 - 8j/31⌋, j | j+16 << 4", () => {
    const bytes = q4(range(32));
    expect(hex(bytes)).toBe("c0c3" + "4848" + "37373737" + "26262626" + "15151515" + "0404");
    expect(dq4(bytes)).toEqual([
      -0, -0, 3.875, 3.875, 3.875, 3.875, 7.75, 7.75, 7.75, 7.75, 11.625, 11.625, 11.625, 11.625, 15.5, 15.5,
      15.5, 15.5, 19.375, 19.375, 19.375, 19.375, 23.25, 23.25, 23.25, 23.25, 27.125, 27.125, 27.125, 27.125,
      31, 31,
    ]);
  });

  it("keeps the sign of the first largest magnitude, truncates x·id + 8.5 in float, clamps at 15", () => {
    const values = new Array(32).fill(0);
    values[0] = 1; // 2 + 8.5 → 10
    values[1] = -4; // the max: d = -4 / -8 = 0.5, id = 2 → 0
    values[2] = 4; // same magnitude, later: not the max; 16.5 → 16 → MIN(15) (clipped to 3.5)
    values[3] = 0.25; // 9 → 9: halves round up
    values[4] = -0.25; // 8 → 8
    values[5] = 0.75; // 10
    values[6] = -0.75; // 7
    values[7] = 0.25 - 2 ** -26; // 0.49999997 + 8.5 rounds to 9.0f (8.99999997 in double would give 8)
    values[16] = -1; // 6.5 → 6
    values[17] = 3.9; // 16.3 → 16 → 15
    const bytes = q4(values);
    expect(hex(bytes)).toBe("0038" + "6a" + "f0" + "8f" + "89" + "88" + "8a" + "87" + "89" + "88".repeat(8));
    const out = dq4(bytes);
    expect(out.slice(0, 8)).toEqual([1, -4, 3.5, 0.5, 0, 1, -0.5, 0.5]);
    expect(out.slice(16, 18)).toEqual([-1, 3.5]);
  });

  it("all zeros: d = 0 / -8 = -0 (fp16 0x8000), every nibble 8", () => {
    const bytes = q4(new Array(32).fill(0));
    expect(hex(bytes)).toBe("0080" + "88".repeat(16));
    const out = dq4(bytes);
    expect(out.every((value) => value === 0 && Object.is(value, -0))).toBe(true);
  });
});

/** Deterministic input with many exact ties; the expected hashes are the outputs of ggml's C reference. */
function goldenInput(): Float32Array {
  const blocks = 1024;
  const x = new Float32Array(blocks * 32);
  let state = 0x2545f491;
  const next = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state;
  };
  for (let b = 0; b < blocks; b++) {
    const kind = b % 6;
    const exp = (next() % 41) - 20;
    for (let j = 0; j < 32; j++) {
      const r = next();
      let v: number;
      switch (kind) {
        case 0:
          v = ((r / 2 ** 32) * 2 - 1) * 2 ** exp;
          break;
        case 1:
          v = ((r % 81) - 40) / 2; // Q8_0 roundf ties
          break;
        case 2:
          v = j === 0 ? -1 : ((r % 16) - 8 + 0.5) * 0.125; // Q4_0: x·id + 8.5 exactly an integer
          break;
        case 3:
          v = j === 0 ? 127 : (r % 255) - 127 + 0.5; // Q8_0 with d = 1: exact .5 products
          break;
        case 4:
          v = r % 3 === 0 ? 0 : r % 3 === 1 ? -0 : (r / 2 ** 32 - 0.5) * 2 ** -130; // zeros, float subnormals
          break;
        default:
          v = ((r / 2 ** 32) * 2 - 1) * 2 ** exp + (r & 1 ? 2 ** (exp - 24) : 0);
          break;
      }
      x[b * 32 + j] = v;
    }
  }
  return x;
}

describe("agreement with ggml's C reference", () => {
  it("gives the bytes of quantize_row_q8_0_ref / quantize_row_q4_0_ref (gcc -O2, x86-64) on 32768 values", () => {
    const x = goldenInput();
    expect(sha256(new Uint8Array(x.buffer))).toBe(
      "139500a2768a20a2021095230f51c8e1a570e8b18a4190b10d789c1b03d160f3",
    );
    const a = new Uint8Array(1024 * 34);
    const b = new Uint8Array(1024 * 18);
    quantizeRowQ8_0(x, a);
    quantizeRowQ4_0(x, b);
    expect(sha256(a)).toBe("cace80daff896c3e4b6ee9b25a89f819a1365cba630aae7b8612b94fea959adb");
    expect(sha256(b)).toBe("bf76c1636f75932ebcfe95e4faadcc9826b0fc912c1a84292a010b450ba8c5dd");
  });
});

/** The error bound of one element: the scale `d` as C computes it, and as stored (fp16). */
function bounds(kind: "Q8_0" | "Q4_0", block: Float32Array, bytes: Uint8Array, at: number) {
  let amax = 0;
  let max = 0;
  for (const v of block) {
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = Math.abs(kind === "Q8_0" ? Math.fround(amax / 127) : Math.fround(max / -8));
  const d16 = Math.abs(f16BitsToF32(bytes[at]! | (bytes[at + 1]! << 8)));
  const steps = kind === "Q8_0" ? 127 : 8;
  const storage = steps * Math.abs(d - d16) + 1e-6 * d + 1e-37;
  return { max, d, d16, tight: 0.5 * d + storage, clipped: d + storage };
}

function checkRoundTrip(kind: "Q8_0" | "Q4_0", x: Float32Array): Uint8Array {
  const blockBytes = kind === "Q8_0" ? 34 : 18;
  const bytes = new Uint8Array((x.length / 32) * blockBytes);
  quantizeRow(kind === "Q8_0" ? GgmlType.Q8_0 : GgmlType.Q4_0, x, bytes);
  const y = new Float32Array(x.length);
  (kind === "Q8_0" ? dequantizeRowQ8_0 : dequantizeRowQ4_0)(bytes, y);
  for (let b = 0; b < x.length / 32; b++) {
    const block = x.subarray(b * 32, b * 32 + 32);
    const { max, d, tight, clipped } = bounds(kind, block, bytes, b * blockBytes);
    for (let j = 0; j < 32; j++) {
      const v = block[j]!;
      const error = Math.abs(v - y[b * 32 + j]!);
      // Q4_0's range is [-8d, 7d] on the side of max's sign: opposite values beyond 7.5d are clipped.
      const canClip = kind === "Q4_0" && Math.sign(v) !== Math.sign(max) && Math.abs(v) > 7.49 * d;
      if (error > (canClip ? clipped : tight)) {
        throw new Error(`${kind} block ${b} element ${j}: ${v} → ${y[b * 32 + j]}, error ${error}, d ${d}`);
      }
    }
  }
  return bytes;
}

const rows = fc
  .tuple(
    fc.array(fc.float({ min: -1000, max: 1000, noNaN: true, noDefaultInfinity: true }), {
      minLength: 32,
      maxLength: 160,
    }),
    fc.integer({ min: -30, max: 8 }),
  )
  .map(([values, exponent]) =>
    Float32Array.from(values.slice(0, values.length - (values.length % 32)), (v) => v * 2 ** exponent),
  );

describe("round trips (fast-check)", () => {
  it("Q8_0: |x - y| ≤ d/2 + 127·|d - fp16(d)|", () => {
    fc.assert(
      fc.property(rows, (x) => {
        checkRoundTrip("Q8_0", x);
      }),
      { numRuns: 300 },
    );
  });

  it("Q4_0: |x - y| ≤ d/2 + 8·|d - fp16(d)|, or d for clipped values opposite the max", () => {
    fc.assert(
      fc.property(rows, (x) => {
        checkRoundTrip("Q4_0", x);
      }),
      { numRuns: 300 },
    );
  });

  it("requantizing a dequantized row gives the same bytes (blocks with a normal fp16 scale)", () => {
    for (const kind of ["Q8_0", "Q4_0"] as const) {
      const blockBytes = kind === "Q8_0" ? 34 : 18;
      const type = kind === "Q8_0" ? GgmlType.Q8_0 : GgmlType.Q4_0;
      fc.assert(
        fc.property(rows, (x) => {
          const bytes = new Uint8Array((x.length / 32) * blockBytes);
          quantizeRow(type, x, bytes);
          const y = new Float32Array(x.length);
          (kind === "Q8_0" ? dequantizeRowQ8_0 : dequantizeRowQ4_0)(bytes, y);
          const again = new Uint8Array(bytes.length);
          quantizeRow(type, y, again);
          for (let b = 0; b < x.length / 32; b++) {
            const at = b * blockBytes;
            const d16 = Math.abs(f16BitsToF32(bytes[at]! | (bytes[at + 1]! << 8)));
            if (d16 < 2 ** -14) continue;
            expect(hex(again.subarray(at, at + blockBytes))).toBe(hex(bytes.subarray(at, at + blockBytes)));
          }
        }),
        { numRuns: 200 },
      );
    }
  });

  it("reads F32, F16 and BF16 bytes", () => {
    const values = [1, -2.5, 0.1, 65504, -0];
    const f32 = new Uint8Array(Float32Array.from(values).buffer);
    expect(Array.from(toFloat32(GgmlType.F32, f32))).toEqual(Array.from(Float32Array.from(values)));
    const unaligned = new Uint8Array(f32.length + 1).subarray(1);
    unaligned.set(f32);
    expect(Array.from(toFloat32(GgmlType.F32, unaligned))).toEqual(Array.from(Float32Array.from(values)));
    const f16 = new Uint8Array(Uint16Array.from(values, f32ToF16Bits).buffer);
    expect(Array.from(toFloat32(GgmlType.F16, f16))).toEqual([1, -2.5, 0.0999755859375, 65504, -0]);
    const bf16 = new Uint8Array(Uint16Array.from(values, f32ToBf16Bits).buffer);
    expect(Array.from(toFloat32(GgmlType.BF16, bf16))).toEqual([1, -2.5, 0.10009765625, 65536, -0]);
    expect(() => toFloat32(GgmlType.Q8_0, f32)).toThrow(RangeError);
    expect(() => quantizeRowQ8_0(new Float32Array(31), new Uint8Array(34))).toThrow(RangeError);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Whole files
// ---------------------------------------------------------------------------------------------------------

/** Deterministic ~N(0, 0.02) values, with an occasional outlier. */
function randomValues(count: number, seed: number): Float32Array {
  let state = seed >>> 0 || 1;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    let sum = 0;
    for (let k = 0; k < 4; k++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      sum += (state >>> 0) / 2 ** 32;
    }
    out[i] = (sum - 2) * 0.035 * (i % 997 === 0 ? 20 : 1);
  }
  return out;
}

function encode(type: number, values: Float32Array): Uint8Array {
  if (type === GgmlType.F32) return new Uint8Array(values.slice().buffer);
  const convert = type === GgmlType.F16 ? f32ToF16Bits : f32ToBf16Bits;
  return new Uint8Array(Uint16Array.from(values, convert).buffer);
}

type SyntheticTensor = { name: string; dims: number[]; type: number };

const SYNTHETIC: SyntheticTensor[] = [
  { name: "token_embd.weight", dims: [64, 40], type: GgmlType.F16 },
  { name: "blk.0.attn_norm.weight", dims: [64], type: GgmlType.F32 },
  { name: "blk.0.attn_q.weight", dims: [64, 64], type: GgmlType.F32 },
  { name: "blk.0.attn_q.bias", dims: [64], type: GgmlType.F32 },
  { name: "blk.0.ffn_up.weight", dims: [64, 96], type: GgmlType.BF16 },
  { name: "blk.0.ffn_down.weight", dims: [96, 64], type: GgmlType.F16 },
  { name: "blk.0.ffn_gate_inp.weight", dims: [64, 4], type: GgmlType.F32 },
  { name: "blk.0.odd.weight", dims: [50, 8], type: GgmlType.F32 },
  { name: "blk.0.column.weight", dims: [64, 1], type: GgmlType.F16 },
  // 4096 × 520 F16 = 4.06 MiB: read in two chunks of whole rows (512 + 8).
  { name: "blk.1.ffn_up.weight", dims: [4096, 520], type: GgmlType.F16 },
  { name: "output_norm.weight", dims: [64], type: GgmlType.F32 },
  { name: "output.weight", dims: [64, 40], type: GgmlType.F16 },
];

const SYNTHETIC_METADATA: [string, GgufValue][] = [
  ["general.architecture", { type: "string", value: "llama" }],
  ["general.name", { type: "string", value: "synthetic" }],
  ["general.file_type", { type: "u32", value: LlamaFileType.MOSTLY_F16 }],
  ["llama.block_count", { type: "u32", value: 2 }],
  ["test.list", { type: "array", itemType: "i32", value: [3, -1] }],
];

async function writeSynthetic(
  path: string,
  tensors: SyntheticTensor[] = SYNTHETIC,
  metadata: [string, GgufValue][] = SYNTHETIC_METADATA,
): Promise<void> {
  const sources: GgufTensorSource[] = tensors.map((tensor, index) => ({
    ...tensor,
    data: () => {
      const count = tensor.dims.reduce((a, b) => a * b, 1);
      if (tensor.type === GgmlType.Q4_K) return [new Uint8Array((count / 256) * 144).fill(0x11)];
      if (tensor.type === GgmlType.Q6_K) return [new Uint8Array((count / 256) * 210).fill(0x22)];
      if (tensor.type === GgmlType.Q8_0) return [q8(Array.from(randomValues(count, index + 1)))];
      if (tensor.type === GgmlType.Q4_0) return [q4(Array.from(randomValues(count, index + 1)))];
      return [encode(tensor.type, randomValues(count, index + 1))];
    },
  }));
  await writeGguf(path, { metadata, tensors: sources });
}

const EXPECTED_TYPES = {
  Q8_0: {
    "token_embd.weight": GgmlType.Q8_0,
    "blk.0.attn_norm.weight": GgmlType.F32,
    "blk.0.attn_q.weight": GgmlType.Q8_0,
    "blk.0.attn_q.bias": GgmlType.F32,
    "blk.0.ffn_up.weight": GgmlType.Q8_0,
    "blk.0.ffn_down.weight": GgmlType.Q8_0,
    "blk.0.ffn_gate_inp.weight": GgmlType.F32,
    "blk.0.odd.weight": GgmlType.F32,
    "blk.0.column.weight": GgmlType.F16,
    "blk.1.ffn_up.weight": GgmlType.Q8_0,
    "output_norm.weight": GgmlType.F32,
    "output.weight": GgmlType.Q8_0,
  },
  Q4_0: {
    "token_embd.weight": GgmlType.Q4_0,
    "blk.0.attn_norm.weight": GgmlType.F32,
    "blk.0.attn_q.weight": GgmlType.Q4_0,
    "blk.0.attn_q.bias": GgmlType.F32,
    "blk.0.ffn_up.weight": GgmlType.Q4_0,
    "blk.0.ffn_down.weight": GgmlType.Q4_0,
    "blk.0.ffn_gate_inp.weight": GgmlType.F32,
    "blk.0.odd.weight": GgmlType.F32,
    "blk.0.column.weight": GgmlType.F16,
    "blk.1.ffn_up.weight": GgmlType.Q4_0,
    "output_norm.weight": GgmlType.F32,
    "output.weight": GgmlType.Q8_0, // the output projection: Q8_0 in place of llama.cpp's Q6_K
  },
} as const;

async function listFiles(path: string): Promise<string[]> {
  return (await readdir(path, { recursive: true })).map(String).sort();
}

describe("quantizeGguf", () => {
  let source: string;
  let sourceSha: string;
  beforeAll(async () => {
    source = join(dir, "synthetic-f16.gguf");
    await writeSynthetic(source);
    sourceSha = sha256(await readFile(source));
  });

  for (const target of ["Q8_0", "Q4_0"] as const) {
    it(`quantizes F32, F16 and BF16 matrices to ${target} and keeps the rest`, async () => {
      const cacheDir = join(dir, `cache-${target}`);
      const progress: QuantizeProgress[] = [];
      const result = await quantizeGguf({ source, target, cacheDir, onProgress: (p) => progress.push(p) });
      expect(result).toEqual({
        path: join(cacheDir, `${sourceSha}-${target}.gguf`),
        sourceSha256: sourceSha,
        cached: false,
        quantized: true,
        bytes: (await stat(result.path)).size,
      });

      const input = await readGguf(source);
      const output = await readGguf(result.path);
      expect(Object.fromEntries(output.tensors.map((t) => [t.name, t.type]))).toEqual(EXPECTED_TYPES[target]);
      // llama.cpp's order: non-block tensors, then by block number, then by name.
      expect(output.tensors.map((t) => t.name)).toEqual([
        "output.weight",
        "output_norm.weight",
        "token_embd.weight",
        "blk.0.attn_norm.weight",
        "blk.0.attn_q.bias",
        "blk.0.attn_q.weight",
        "blk.0.column.weight",
        "blk.0.ffn_down.weight",
        "blk.0.ffn_gate_inp.weight",
        "blk.0.ffn_up.weight",
        "blk.0.odd.weight",
        "blk.1.ffn_up.weight",
      ]);
      const inputs = new Map(input.tensors.map((t) => [t.name, t]));
      expect(output.tensors.map((t) => t.dims)).toEqual(output.tensors.map((t) => inputs.get(t.name)!.dims));
      // Metadata in order; the two keys llama.cpp sets move to the end (gguf_set_val removes and appends).
      expect([...output.metadata]).toEqual([
        ...SYNTHETIC_METADATA.filter(([key]) => key !== "general.file_type"),
        ["general.quantization_version", { type: "u32", value: 2 }],
        [
          "general.file_type",
          { type: "u32", value: target === "Q8_0" ? LlamaFileType.MOSTLY_Q8_0 : LlamaFileType.MOSTLY_Q4_0 },
        ],
      ]);
      expect(fileTypeOf(output)).toMatchObject({ name: target, fromMetadata: true, quantized: true });

      for (const tensor of output.tensors) {
        const original = inputs.get(tensor.name)!;
        const before = await readTensorBytes(input, original);
        const after = await readTensorBytes(output, tensor);
        if (tensor.type === original.type) {
          expect(hex(after)).toBe(hex(before));
          continue;
        }
        const values = toFloat32(original.type, before);
        const kind = tensor.type === GgmlType.Q8_0 ? "Q8_0" : "Q4_0";
        expect(sha256(after)).toBe(sha256(checkRoundTrip(kind, values)));
      }

      // One report per chunk: 12 tensors, the 4 MiB one in two chunks.
      expect(progress).toHaveLength(13);
      const total = input.tensors.reduce((sum, t) => sum + t.byteLength, 0);
      expect(progress.at(-1)).toEqual({
        tensor: "blk.1.ffn_up.weight",
        tensorIndex: 11,
        tensorCount: 12,
        bytesRead: total,
        totalBytes: total,
      });
      expect(progress.map((p) => p.bytesRead)).toEqual(
        [...progress.map((p) => p.bytesRead)].sort((a, b) => a - b),
      );
      expect(progress.filter((p) => p.tensor === "blk.1.ffn_up.weight").map((p) => p.bytesRead)).toHaveLength(
        2,
      );

      // The second call finds the file: no tensor is read, the file is not rewritten.
      const { mtimeMs } = await stat(result.path);
      const again: QuantizeProgress[] = [];
      const second = await quantizeGguf({ source, target, cacheDir, onProgress: (p) => again.push(p) });
      expect(second).toEqual({ ...result, cached: true });
      expect(again).toEqual([]);
      expect((await stat(result.path)).mtimeMs).toBe(mtimeMs);
      // Only the output (and possibly the source's hash record) is left: no partial files.
      expect((await listFiles(cacheDir)).filter((name) => !name.startsWith("sha256"))).toEqual([
        `${sourceSha}-${target}.gguf`,
      ]);

      // The output already is the target: used as is.
      const asIs = await quantizeGguf({ source: result.path, target, cacheDir });
      expect(asIs).toEqual({
        path: result.path,
        sourceSha256: sha256(await readFile(result.path)),
        cached: false,
        quantized: false,
        bytes: result.bytes,
      });
    });
  }

  it("quantizes the tied embeddings (no output.weight) of a Q4_0 model to Q8_0", async () => {
    const path = join(dir, "tied.gguf");
    await writeSynthetic(path, [
      { name: "token_embd.weight", dims: [64, 40], type: GgmlType.F32 },
      { name: "blk.0.attn_q.weight", dims: [64, 64], type: GgmlType.F32 },
    ]);
    const { path: out } = await quantizeGguf({
      source: path,
      target: "Q4_0",
      cacheDir: join(dir, "cache-tied"),
    });
    expect((await readGguf(out)).tensors.map((t) => t.type)).toEqual([GgmlType.Q8_0, GgmlType.Q4_0]);
  });

  it("writes the same bytes every time, and survives concurrent calls for the same output", async () => {
    const one = await quantizeGguf({ source, target: "Q4_0", cacheDir: join(dir, "cache-Q4_0") });
    const cacheDir = join(dir, "cache-race");
    const results = await Promise.all([
      quantizeGguf({ source, target: "Q4_0", cacheDir }),
      quantizeGguf({ source, target: "Q4_0", cacheDir }),
      quantizeGguf({ source, target: "Q4_0", cacheDir }),
    ]);
    expect(new Set(results.map((r) => r.path)).size).toBe(1);
    expect(sha256(await readFile(results[0]!.path))).toBe(sha256(await readFile(one.path)));
    expect((await listFiles(cacheDir)).filter((name) => !name.startsWith("hashes"))).toEqual([
      `${sourceSha}-Q4_0.gguf`,
    ]);
  });

  it("uses a model whose weights are all the target type as is, even without general.file_type", async () => {
    const path = join(dir, "q8-unlabelled.gguf");
    await writeSynthetic(
      path,
      [
        { name: "token_embd.weight", dims: [64, 8], type: GgmlType.Q8_0 },
        { name: "blk.0.attn_norm.weight", dims: [64], type: GgmlType.F32 },
        { name: "blk.0.attn_q.weight", dims: [64, 64], type: GgmlType.Q8_0 },
      ],
      [["general.architecture", { type: "string", value: "llama" }]],
    );
    const file = await readGguf(path);
    expect(fileTypeOf(file)).toEqual({
      name: "Q8_0",
      fileType: LlamaFileType.MOSTLY_Q8_0,
      fromMetadata: false,
      quantized: true,
      weightTypes: { Q8_0: 2 },
    });
    const result = await quantizeGguf({ source: path, target: "Q8_0", cacheDir: join(dir, "cache-asis") });
    expect(result).toMatchObject({ path, quantized: false, cached: false, bytes: file.fileSize });
    // Q8_0 cannot become Q4_0 from here.
    await expect(
      quantizeGguf({ source: path, target: "Q4_0", cacheDir: join(dir, "cache-asis") }),
    ).rejects.toThrow(QuantizationError);
  });

  it("uses an unlabelled llama.cpp-style Q4_0 model (Q6_K output projection) as is", async () => {
    const path = join(dir, "q4-unlabelled.gguf");
    await writeSynthetic(
      path,
      [
        { name: "token_embd.weight", dims: [256, 8], type: GgmlType.Q4_0 },
        { name: "blk.0.attn_q.weight", dims: [256, 256], type: GgmlType.Q4_0 },
        { name: "output.weight", dims: [256, 8], type: GgmlType.Q6_K },
      ],
      [["general.architecture", { type: "string", value: "llama" }]],
    );
    expect(fileTypeOf(await readGguf(path))).toMatchObject({
      name: "Q4_0",
      weightTypes: { Q4_0: 2, Q6_K: 1 },
    });
    const result = await quantizeGguf({ source: path, target: "Q4_0", cacheDir: join(dir, "cache-asis") });
    expect(result).toMatchObject({ path, quantized: false });
    await expect(
      quantizeGguf({ source: path, target: "Q8_0", cacheDir: join(dir, "cache-asis") }),
    ).rejects.toThrow(/already quantized \(Q4_0\) and cannot be requantized to Q8_0/);
  });

  it("refuses a K-quant model", async () => {
    const path = join(dir, "q4k.gguf");
    await writeSynthetic(
      path,
      [
        { name: "token_embd.weight", dims: [256, 4], type: GgmlType.Q4_K },
        { name: "blk.0.attn_norm.weight", dims: [64], type: GgmlType.F32 },
        { name: "blk.0.attn_q.weight", dims: [256, 8], type: GgmlType.Q4_K },
      ],
      [
        ["general.architecture", { type: "string", value: "llama" }],
        ["general.file_type", { type: "u32", value: LlamaFileType.MOSTLY_Q4_K_M }],
      ],
    );
    expect(fileTypeOf(await readGguf(path))).toMatchObject({ name: "Q4_K_M", quantized: true });
    const cacheDir = join(dir, "cache-q4k");
    for (const target of ["Q8_0", "Q4_0"] as const) {
      const error = await quantizeGguf({ source: path, target, cacheDir }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(QuantizationError);
      expect((error as QuantizationError).shortMessage).toBe(
        `The model is already quantized (Q4_K_M) and cannot be requantized to ${target}.`,
      );
      expect((error as QuantizationError).details).toContain("blk.0.attn_q.weight is Q4_K");
      // With tied embeddings token_embd.weight is the output projection, which a Q4_0 model may keep as it is.
      expect((error as QuantizationError).details?.includes("token_embd.weight is Q4_K")).toBe(
        target === "Q8_0",
      );
    }
  });

  it("refuses an unknown target", async () => {
    await expect(
      quantizeGguf({ source, target: "Q5_0" as never, cacheDir: join(dir, "cache-unknown") }),
    ).rejects.toThrow(QuantizationError);
  });

  it("refuses one part of a split model", async () => {
    const path = join(dir, "split.gguf");
    await writeSynthetic(
      path,
      [{ name: "blk.0.attn_q.weight", dims: [64, 64], type: GgmlType.F16 }],
      [["split.count", { type: "u16", value: 2 }]],
    );
    await expect(
      quantizeGguf({ source: path, target: "Q8_0", cacheDir: join(dir, "cache-split") }),
    ).rejects.toThrow(/split/);
  });

  it("leaves no file when aborted, before or during the work", async () => {
    const cacheDir = join(dir, "cache-abort");
    const before = new AbortController();
    before.abort();
    await expect(quantizeGguf({ source, target: "Q8_0", cacheDir, signal: before.signal })).rejects.toThrow();

    const during = new AbortController();
    const error = await quantizeGguf({
      source,
      target: "Q8_0",
      cacheDir,
      signal: during.signal,
      onProgress: (p) => {
        if (p.tensor === "blk.1.ffn_up.weight") during.abort(); // after the first of its two chunks
      },
    }).catch((e: unknown) => e);
    expect((error as Error).name).toBe("AbortError");
    expect((await listFiles(cacheDir)).filter((name) => !name.startsWith("hashes"))).toEqual([]);
  });
});

/** A minimal llama model (hyperparameters and weights only: enough for llama.cpp's quantizer). */
async function writeMinimalLlama(path: string, tied: boolean): Promise<void> {
  const u32 = (value: number): GgufValue => ({ type: "u32", value });
  const metadata: [string, GgufValue][] = [
    ["general.architecture", { type: "string", value: "llama" }],
    ["general.name", { type: "string", value: "minimal" }],
    ["general.quantization_version", u32(2)],
    ["general.file_type", u32(LlamaFileType.MOSTLY_F16)],
    ["llama.block_count", u32(1)],
    ["llama.context_length", u32(64)],
    ["llama.embedding_length", u32(64)],
    ["llama.feed_forward_length", u32(96)],
    ["llama.attention.head_count", u32(4)],
    ["llama.attention.head_count_kv", u32(2)],
    ["llama.attention.layer_norm_rms_epsilon", { type: "f32", value: 1e-5 }],
  ];
  const { F32, F16, BF16 } = GgmlType;
  const tensors: [string, number[], number][] = [
    ["token_embd.weight", [64, 40], BF16],
    ["output_norm.weight", [64], F32],
    ...(tied ? [] : [["output.weight", [64, 40], F16] as [string, number[], number]]),
    ["blk.0.attn_norm.weight", [64], F32],
    ["blk.0.attn_q.weight", [64, 64], F32],
    ["blk.0.attn_k.weight", [64, 32], F16],
    ["blk.0.attn_v.weight", [64, 32], BF16],
    ["blk.0.attn_output.weight", [64, 64], F16],
    ["blk.0.ffn_norm.weight", [64], F32],
    ["blk.0.ffn_gate.weight", [64, 96], F16],
    ["blk.0.ffn_up.weight", [64, 96], F32],
    ["blk.0.ffn_down.weight", [96, 64], BF16],
  ];
  await writeGguf(path, {
    metadata,
    tensors: tensors.map(([name, dims, type], index) => ({
      name,
      dims,
      type,
      data: encode(
        type,
        randomValues(
          dims.reduce((a, b) => a * b, 1),
          1000 + index,
        ),
      ),
    })),
  });
}

describe("agreement with llama.cpp's llama_model_quantize", () => {
  // SHA-256 of the files llama_model_quantize (libllama of node-llama-cpp 3.22.1, llama.cpp de3ff81; nthread 1)
  // wrote from these inputs: ftype MOSTLY_Q8_0, and MOSTLY_Q4_0 with output_tensor_type Q8_0 (here also
  // its default, Q6_K falling back to Q8_0 for 64-wide rows).
  const cases = {
    untied: {
      source: "0f6de240af592bb524fcde92b4f5b23623e4aaa62010b86581618e2e7c43b915",
      Q8_0: "5fc4a8c4a28ade78e57dac6946590821c971a23202643c81991129b4960a69c3",
      Q4_0: "7a6047cf145bbf7e6476f8de0b55935d2ed1676ee3a5541711c4749b90fc015b",
    },
    tied: {
      source: "2cc1b9604eb31c84dd05ac154b4212b441c4a2e861e26fdf41a4b4dd5f84a235",
      Q8_0: "9f1c7c03ac12fb5c743d6da3f41f46cf0edded8309c5ceda51f88ffc634e9fbf",
      Q4_0: "97204f7b124458f041265689863d43b63d132620c422462a0b59985e71e83f8a",
    },
  };
  for (const [variant, hashes] of Object.entries(cases)) {
    it(`writes the same file byte for byte (${variant} embeddings; F32, F16 and BF16 weights)`, async () => {
      const source = join(dir, `minimal-${variant}.gguf`);
      await writeMinimalLlama(source, variant === "tied");
      expect(sha256(await readFile(source))).toBe(hashes.source);
      for (const target of ["Q8_0", "Q4_0"] as const) {
        const { path } = await quantizeGguf({ source, target, cacheDir: join(dir, "cache-minimal") });
        expect(sha256(await readFile(path))).toBe(hashes[target]);
      }
    });
  }
});

describe("quantized models run in llama.cpp", () => {
  it("loads Q8_0 and Q4_0 from F32 and F16 test models and generates greedily, the same twice", async () => {
    const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
    const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
    const cacheDir = join(dir, "cache-llama");
    const outputs: Record<string, number[]> = {};
    for (const type of ["F32", "F16"] as const) {
      const source = join(dir, `tiny-${type}.gguf`);
      await generateTestModel(source, { seed: 11, type });
      for (const target of ["Q8_0", "Q4_0"] as const) {
        const { path } = await quantizeGguf({ source, target, cacheDir });
        const file = await readGguf(path);
        expect(file.tensors.find((t) => t.name === "blk.0.attn_q.weight")?.type).toBe(GgmlType[target]);
        const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
        try {
          const context = await model.createContext({ contextSize: 256, batchSize: 64, threads: 1 });
          const runs: number[][] = [];
          for (let run = 0; run < 2; run++) {
            const sequence = context.getSequence();
            const tokens: number[] = [];
            for await (const token of sequence.evaluate(model.tokenize("hello world, the answer is"), {
              temperature: 0,
            })) {
              tokens.push(token);
              if (tokens.length === 20) break;
            }
            runs.push(tokens);
            sequence.dispose();
          }
          expect(runs[0]!.length).toBeGreaterThan(0);
          expect(runs[1]).toEqual(runs[0]);
          outputs[`${type}-${target}`] = runs[0]!;
          await context.dispose();
        } finally {
          await model.dispose();
        }
      }
    }
    expect(Object.keys(outputs)).toHaveLength(4);
  });
});
