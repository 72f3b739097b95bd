import { f16BitsToF32, f32ToF16Bits } from "../gguf/float16.js";
import { GgmlType, ggmlTypeName } from "../gguf/types.js";

/**
 * Exact ports of ggml's reference block codecs (`ggml/src/ggml-quants.c`): `quantize_row_q8_0_ref`,
 * `quantize_row_q4_0_ref`, `dequantize_row_q8_0` and `dequantize_row_q4_0`. These are the functions
 * `llama-quantize` runs for Q8_0 and Q4_0 when no importance matrix is given, so a row quantized here
 * has the same bytes as one quantized by llama.cpp.
 *
 * C computes in `float`; every float operation is emulated with `Math.fround` (a double result of
 * +, -, *, / on two floats rounded once to float is the correctly rounded float result). Float to
 * `int8_t` conversions truncate toward zero and keep the low byte, as x86-64 does for `cvttss2si`.
 *
 * Checked against the C functions compiled with gcc -O2 on x86-64 (identical bytes on millions of values,
 * ties, subnormals, NaN and ±Inf included). A build that fuses `x * id + 8.5f` into one FMA (gcc's default
 * `-ffp-contract=fast` with FMA enabled, e.g. `-march=haswell`, or aarch64) rounds once instead of twice
 * and gives a different Q4_0 nibble on rare near-ties. The x64 libggml-base that node-llama-cpp 3.22.1
 * ships does not fuse: files quantized by its `llama_model_quantize` match this port byte for byte.
 */

/** Elements per Q8_0 / Q4_0 block (`QK8_0`, `QK4_0`). */
export const QK = 32;
/** Bytes per Q8_0 block: an fp16 scale and 32 int8 quants. */
export const Q8_0_BLOCK_BYTES = 34;
/** Bytes per Q4_0 block: an fp16 scale and 32 4-bit quants in 16 bytes. */
export const Q4_0_BLOCK_BYTES = 18;

const fround = Math.fround;

/**
 * `(int8_t)x` for a float `x` as x86-64 converts it (`cvttss2si`, then the low byte): truncation toward
 * zero; NaN, ±Inf and values outside the int32 range give 0 (the low byte of INT_MIN). C leaves the
 * out-of-range cases undefined; only non-finite inputs or scales reach them.
 */
function toInt8(x: number): number {
  return x >= -2147483648 && x < 2147483648 ? ((x | 0) << 24) >> 24 : 0;
}

/** C's `roundf`: round half away from zero. */
function roundf(x: number): number {
  const r = Math.floor(Math.abs(x) + 0.5); // exact in double for a float x
  return x < 0 ? -r : r;
}

function blockCount(elements: number): number {
  if (elements % QK !== 0)
    throw new RangeError(`A row of ${elements} values is not a whole number of blocks.`);
  return elements / QK;
}

function checkDestination(bytes: number, needed: number): void {
  if (bytes < needed) throw new RangeError(`The destination has ${bytes} bytes; ${needed} are needed.`);
}

/**
 * `quantize_row_q8_0_ref`: per block of 32, `d = amax / 127`, `id = 1 / d`, `q = roundf(x * id)`
 * (round half away from zero), `d` stored as fp16.
 *
 * @param src values; the length must be a multiple of 32.
 * @param dst at least `src.length / 32 * 34` bytes.
 */
export function quantizeRowQ8_0(src: Float32Array, dst: Uint8Array): void {
  const blocks = blockCount(src.length);
  checkDestination(dst.length, blocks * Q8_0_BLOCK_BYTES);
  for (let i = 0; i < blocks; i++) {
    const base = i * QK;
    let amax = 0;
    let finite = 0; // stays 0 unless a value is NaN or ±Inf (a·0 is NaN for those)
    for (let j = 0; j < QK; j++) {
      const a = Math.abs(src[base + j]!);
      // biome-ignore lint/complexity/useMathMinMax: C's MAX(amax, fabsf(v)), which differs from Math.max on NaN
      amax = amax > a ? amax : a;
      finite += a * 0;
    }
    const d = fround(amax / 127);
    const id = d !== 0 ? fround(1 / d) : 0; // `d ? 1.0f/d : 0.0f`: NaN is truthy in C
    const out = i * Q8_0_BLOCK_BYTES;
    const bits = f32ToF16Bits(d);
    dst[out] = bits & 0xff;
    dst[out + 1] = bits >>> 8;
    if (finite === 0 && id < Number.POSITIVE_INFINITY) {
      // Every |x0| ≤ 127.00002 here. roundf without a sign branch (random signs mispredict): x0 + 128.5 is
      // exact in double and positive, so `| 0` floors it; then a negative tie (x0 = -k - 0.5) moves down.
      // The Uint8Array store keeps the low byte of the int8.
      for (let j = 0; j < QK; j++) {
        const x0 = fround(src[base + j]! * id);
        let q = ((x0 + 128.5) | 0) - 128;
        if (q - x0 === 0.5 && x0 < 0) q -= 1;
        dst[out + 2 + j] = q;
      }
    } else {
      // Non-finite inputs, or a subnormal d whose inverse overflows: the literal C semantics.
      for (let j = 0; j < QK; j++) dst[out + 2 + j] = toInt8(roundf(fround(src[base + j]! * id))) & 0xff;
    }
  }
}

/**
 * `quantize_row_q4_0_ref`: per block of 32, `max` is the value of largest magnitude (the first one on a
 * tie, sign kept), `d = max / -8`, `id = 1 / d`, `q = MIN(15, (int8_t)(x * id + 8.5f))`. Element `j` goes
 * in the low nibble and element `j + 16` in the high nibble of byte `j`; `d` is stored as fp16.
 *
 * @param src values; the length must be a multiple of 32.
 * @param dst at least `src.length / 32 * 18` bytes.
 */
export function quantizeRowQ4_0(src: Float32Array, dst: Uint8Array): void {
  const blocks = blockCount(src.length);
  checkDestination(dst.length, blocks * Q4_0_BLOCK_BYTES);
  for (let i = 0; i < blocks; i++) {
    const base = i * QK;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = src[base + j]!;
      const a = Math.abs(v);
      if (amax < a) {
        amax = a;
        max = v;
      }
    }
    const d = fround(max / -8);
    const id = d !== 0 ? fround(1 / d) : 0;
    const out = i * Q4_0_BLOCK_BYTES;
    const bits = f32ToF16Bits(d);
    dst[out] = bits & 0xff;
    dst[out + 1] = bits >>> 8;
    for (let j = 0; j < QK / 2; j++) {
      const x0 = fround(src[base + j]! * id);
      const x1 = fround(src[base + QK / 2 + j]! * id);
      const xi0 = Math.min(15, toInt8(fround(x0 + 8.5))) & 0xff; // uint8_t xi0 = MIN(15, (int8_t)(x0 + 8.5f))
      const xi1 = Math.min(15, toInt8(fround(x1 + 8.5))) & 0xff;
      dst[out + 2 + j] = (xi0 | (xi1 << 4)) & 0xff;
    }
  }
}

/**
 * `dequantize_row_q8_0`: `y = q * d` with `d` read back from fp16.
 *
 * @param src whole Q8_0 blocks.
 * @param dst `src.length / 34 * 32` values (its length sets how many blocks are decoded).
 */
export function dequantizeRowQ8_0(src: Uint8Array, dst: Float32Array): void {
  const blocks = blockCount(dst.length);
  checkDestination(src.length, blocks * Q8_0_BLOCK_BYTES);
  for (let i = 0; i < blocks; i++) {
    const at = i * Q8_0_BLOCK_BYTES;
    const d = f16BitsToF32(src[at]! | (src[at + 1]! << 8));
    const base = i * QK;
    for (let j = 0; j < QK; j++) dst[base + j] = ((src[at + 2 + j]! << 24) >> 24) * d;
  }
}

/**
 * `dequantize_row_q4_0`: `y[j] = ((qs[j] & 15) - 8) * d`, `y[j + 16] = ((qs[j] >> 4) - 8) * d`.
 *
 * @param src whole Q4_0 blocks.
 * @param dst `src.length / 18 * 32` values (its length sets how many blocks are decoded).
 */
export function dequantizeRowQ4_0(src: Uint8Array, dst: Float32Array): void {
  const blocks = blockCount(dst.length);
  checkDestination(src.length, blocks * Q4_0_BLOCK_BYTES);
  for (let i = 0; i < blocks; i++) {
    const at = i * Q4_0_BLOCK_BYTES;
    const d = f16BitsToF32(src[at]! | (src[at + 1]! << 8));
    const base = i * QK;
    for (let j = 0; j < QK / 2; j++) {
      const byte = src[at + 2 + j]!;
      dst[base + j] = ((byte & 0x0f) - 8) * d;
      dst[base + QK / 2 + j] = ((byte >>> 4) - 8) * d;
    }
  }
}

/** Bytes of `elements` values (whole blocks) quantized as `type` (Q8_0 or Q4_0). */
export function quantizedRowBytes(type: number, elements: number): number {
  const blocks = blockCount(elements);
  if (type === GgmlType.Q8_0) return blocks * Q8_0_BLOCK_BYTES;
  if (type === GgmlType.Q4_0) return blocks * Q4_0_BLOCK_BYTES;
  throw new RangeError(`${ggmlTypeName(type)} is not a type this quantizer writes.`);
}

/** Quantizes `src` into `dst` as `type` (Q8_0 or Q4_0). */
export function quantizeRow(type: number, src: Float32Array, dst: Uint8Array): void {
  if (type === GgmlType.Q8_0) quantizeRowQ8_0(src, dst);
  else if (type === GgmlType.Q4_0) quantizeRowQ4_0(src, dst);
  else throw new RangeError(`${ggmlTypeName(type)} is not a type this quantizer writes.`);
}

/** Dequantizes `src` (Q8_0 or Q4_0 blocks) into `dst`. */
export function dequantizeRow(type: number, src: Uint8Array, dst: Float32Array): void {
  if (type === GgmlType.Q8_0) dequantizeRowQ8_0(src, dst);
  else if (type === GgmlType.Q4_0) dequantizeRowQ4_0(src, dst);
  else throw new RangeError(`${ggmlTypeName(type)} is not a type this quantizer reads.`);
}

let f16Table: Float32Array | undefined;

/** Whether typed arrays on this machine are little-endian (as GGUF data is). */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** All 65536 fp16 values as floats (256 KiB, built once). */
function halfTable(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16Table[bits] = f16BitsToF32(bits);
  }
  return f16Table;
}

/**
 * The float values of little-endian F32, F16 or BF16 tensor bytes (what `ggml_fp16_to_fp32_row` and
 * `ggml_bf16_to_fp32_row` produce). Writes into `out` when given (it must hold at least as many values);
 * otherwise returns F32 bytes as a view when they are 4-byte aligned, and a new array in every other case.
 */
export function toFloat32(type: number, bytes: Uint8Array, out?: Float32Array): Float32Array {
  const size = type === GgmlType.F32 ? 4 : 2;
  if (!isFloatType(type))
    throw new RangeError(`${ggmlTypeName(type)} is not a float type (F32, F16 or BF16).`);
  if (bytes.length % size !== 0)
    throw new RangeError(`${bytes.length} bytes are not whole ${ggmlTypeName(type)} values.`);
  const n = bytes.length / size;
  if (out !== undefined && out.length < n)
    throw new RangeError(`The output holds ${out.length} of ${n} values.`);
  if (type === GgmlType.F32) {
    if (LITTLE_ENDIAN && out === undefined && bytes.byteOffset % 4 === 0)
      return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    const target = out === undefined ? new Float32Array(n) : out.subarray(0, n);
    if (LITTLE_ENDIAN) {
      new Uint8Array(target.buffer, target.byteOffset, bytes.length).set(bytes);
    } else {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      for (let i = 0; i < n; i++) target[i] = view.getFloat32(4 * i, true);
    }
    return target;
  }
  const target = out === undefined ? new Float32Array(n) : out.subarray(0, n);
  if (type === GgmlType.F16) {
    const table = halfTable();
    if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
      const half = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = 0; i < n; i++) target[i] = table[half[i]!]!;
    } else {
      for (let i = 0; i < n; i++) target[i] = table[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
    }
  } else {
    const u32 = new Uint32Array(target.buffer, target.byteOffset, n);
    for (let i = 0; i < n; i++) u32[i] = ((bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16) >>> 0;
  }
  return target;
}

/** Whether `type` is one {@link toFloat32} reads. */
export function isFloatType(type: number): boolean {
  return type === GgmlType.F32 || type === GgmlType.F16 || type === GgmlType.BF16;
}
