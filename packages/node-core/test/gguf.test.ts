import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufFormatError } from "../src/errors.js";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  GgmlType,
  type GgufValue,
  metadataValue,
  readGguf,
  readTensorBytes,
  readTensorData,
  writeGguf,
} from "../src/gguf/index.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-gguf-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const metadata: [string, GgufValue][] = [
  ["general.architecture", { type: "string", value: "llama" }],
  ["general.name", { type: "string", value: "tëst ✓" }],
  ["test.u8", { type: "u8", value: 255 }],
  ["test.i8", { type: "i8", value: -128 }],
  ["test.u16", { type: "u16", value: 65535 }],
  ["test.i16", { type: "i16", value: -32768 }],
  ["test.u32", { type: "u32", value: 4294967295 }],
  ["test.i32", { type: "i32", value: -2147483648 }],
  ["test.f32", { type: "f32", value: 0.5 }],
  ["test.f64", { type: "f64", value: Math.PI }],
  ["test.bool", { type: "bool", value: true }],
  ["test.u64", { type: "u64", value: 18446744073709551615n }],
  ["test.i64", { type: "i64", value: -9223372036854775808n }],
  ["test.strings", { type: "array", itemType: "string", value: ["a", "", "ü"] }],
  [
    "test.nested",
    { type: "array", itemType: "array", value: [{ type: "array", itemType: "i32", value: [1, -2] }] },
  ],
];

describe("GGUF reader and writer", () => {
  it("round-trips metadata of every type and tensors of several types", async () => {
    const f32 = new Float32Array([1, 2, 3, 4, 5, 6]);
    const q8 = new Uint8Array(34 * 2).map((_, i) => i);
    const path = join(dir, "roundtrip.gguf");
    const progress: number[] = [];
    await writeGguf(path, {
      metadata,
      tensors: [
        { name: "a", dims: [3, 2], type: GgmlType.F32, data: new Uint8Array(f32.buffer) },
        {
          name: "b",
          dims: [64],
          type: GgmlType.Q8_0,
          data: function* () {
            yield q8.subarray(0, 10);
            yield q8.subarray(10);
          },
        },
      ],
      onProgress: ({ bytesWritten }) => progress.push(bytesWritten),
    });
    const file = await readGguf(path);
    expect(file.version).toBe(3);
    expect([...file.metadata]).toEqual(metadata);
    expect(metadataValue(file, "test.nested")).toEqual([[1, -2]]);
    expect(
      file.tensors.map(({ name, dims, type, offset, byteLength }) => ({
        name,
        dims,
        type,
        offset,
        byteLength,
      })),
    ).toEqual([
      { name: "a", dims: [3, 2], type: GgmlType.F32, offset: 0n, byteLength: 24 },
      { name: "b", dims: [64], type: GgmlType.Q8_0, offset: 32n, byteLength: 68 },
    ]);
    expect(file.dataOffset % 32).toBe(0);
    expect(new Float32Array((await readTensorBytes(file, file.tensors[0]!)).slice().buffer)).toEqual(f32);
    const chunks: Uint8Array[] = [];
    for await (const chunk of readTensorData(file, file.tensors[1]!, { chunkBytes: 16 })) chunks.push(chunk);
    expect(chunks.length).toBe(5);
    expect(Buffer.concat(chunks)).toEqual(Buffer.from(q8));
    expect(progress.at(-1)).toBe((await stat(path)).size);
  });

  it("reads a header whose strings straddle the 1 MiB read chunks", async () => {
    const tokens = Array.from({ length: 60_000 }, (_, i) => `token-${i}-${"x".repeat(i % 40)}`);
    const path = join(dir, "big-header.gguf");
    await writeGguf(path, {
      metadata: [["tokenizer.ggml.tokens", { type: "array", itemType: "string", value: tokens }]],
      tensors: [{ name: "t", dims: [8], type: GgmlType.F32, data: new Uint8Array(32) }],
    });
    const file = await readGguf(path);
    expect(metadataValue(file, "tokenizer.ggml.tokens")).toEqual(tokens);
  });

  it("refuses data that does not match the tensor shape and leaves no file behind", async () => {
    const path = join(dir, "short.gguf");
    await expect(
      writeGguf(path, {
        metadata: [],
        tensors: [{ name: "t", dims: [8], type: GgmlType.F32, data: new Uint8Array(31) }],
      }),
    ).rejects.toThrow(GgufFormatError);
    await expect(stat(path)).rejects.toThrow();
  });

  it("refuses values that do not fit their declared type", async () => {
    await expect(
      writeGguf(join(dir, "bad.gguf"), { metadata: [["k", { type: "u8", value: 256 }]], tensors: [] }),
    ).rejects.toThrow(/not a valid u8/);
  });

  it("rejects files that are not GGUF, truncated, or inconsistent", async () => {
    const notGguf = join(dir, "not.gguf");
    await writeFile(notGguf, "hello world, this is not a model file at all");
    await expect(readGguf(notGguf)).rejects.toThrow(/not a GGUF file/);

    const good = join(dir, "good.gguf");
    await writeGguf(good, {
      metadata,
      tensors: [{ name: "t", dims: [8], type: GgmlType.F32, data: new Uint8Array(32) }],
    });
    const bytes = await readFile(good);
    const truncatedHeader = join(dir, "truncated-header.gguf");
    await writeFile(truncatedHeader, bytes.subarray(0, 100));
    await expect(readGguf(truncatedHeader)).rejects.toThrow(GgufFormatError);
    const truncatedData = join(dir, "truncated-data.gguf");
    await writeFile(truncatedData, bytes.subarray(0, bytes.length - 8));
    await expect(readGguf(truncatedData)).rejects.toThrow(/outside the file/);

    const hugeCount = Buffer.from(bytes);
    hugeCount.writeBigUInt64LE(1n << 60n, 8);
    const huge = join(dir, "huge.gguf");
    await writeFile(huge, hugeCount);
    await expect(readGguf(huge)).rejects.toThrow(/over the limit/);
  });
});

describe("half and bfloat16 conversion", () => {
  it("converts exactly representable values both ways", () => {
    for (const value of [0, 1, -1, 0.5, 65504, -65504, 2 ** -14, 2 ** -24, 1.5, 3.140625]) {
      expect(f16BitsToF32(f32ToF16Bits(value))).toBe(value);
    }
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // rounds up to infinity
    expect(f32ToF16Bits(Number.NaN) & 0x7c00).toBe(0x7c00);
  });

  it("rounds to nearest even like a hardware conversion", () => {
    // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    // Subnormals: 1.5 × 2^-24 is halfway between 2^-24 and 2^-23 → even (2^-23).
    expect(f32ToF16Bits(1.5 * 2 ** -24)).toBe(0x0002);
    const view = new Float32Array(1);
    for (let i = 0; i < 2000; i++) {
      view[0] = (Math.random() - 0.5) * 200;
      const x = view[0]!;
      const back = f16BitsToF32(f32ToF16Bits(x));
      expect(Math.abs(back - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11 + 2 ** -25);
    }
  });

  it("converts bfloat16", () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(f32ToBf16Bits(-3.5))).toBe(-3.5);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
  });
});
