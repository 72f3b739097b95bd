import type { Hex } from "viem";
import { CrynuxError } from "./errors.js";

/**
 * Thrown for input that cannot be hashed or compared: bad image dimensions, a pixel buffer of the
 * wrong length, a hash outside the unsigned 64-bit range, or malformed hex.
 */
export class PHashInputError extends CrynuxError {
  override name = "PHashInputError";
}

/** Side of the square image the DCT runs on (goimagehash resizes every image to 64x64). */
const SIZE = 64;
/** Side of the low-frequency corner of the DCT that becomes the hash. */
const HASH_SIDE = 8;
const MAX_U64 = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------
// Resize: nfnt/resize `Resize(64, 64, img, Bilinear)` for an 8-bit *image.NRGBA / *image.RGBA.
// ---------------------------------------------------------------------------------------------

type Weights = {
  /** `length` fixed-point (x256) coefficients per output sample. */
  coeffs: Int32Array;
  /** First input index of each output sample (before edge clamping). */
  start: Int32Array;
  /** Sum of the coefficients of each output sample (the divisor), as int32. */
  sums: Int32Array;
  length: number;
};

/** Mirrors nfnt/resize `createWeights8` with the `linear` kernel, blur 1, for 64 output samples. */
function bilinearWeights(inputSize: number): Weights {
  const scale = inputSize / SIZE;
  const length = 2 * Math.max(Math.ceil(scale), 1);
  const factor = Math.min(1 / scale, 1);
  const coeffs = new Int32Array(SIZE * length);
  const start = new Int32Array(SIZE);
  const sums = new Int32Array(SIZE);
  for (let y = 0; y < SIZE; y++) {
    let interp = scale * (y + 0.5) - 0.5;
    // Go's int(float64) truncates toward zero (not floor) for the negative values of upscaling.
    const first = Math.trunc(interp) - length / 2 + 1;
    start[y] = first;
    interp -= first;
    let sum = 0;
    for (let i = 0; i < length; i++) {
      const t = Math.abs((interp - i) * factor);
      // int16(kernel(in) * 256): truncation toward zero of a non-negative value.
      const c = Math.trunc((t <= 1 ? 1 - t : 0) * 256);
      coeffs[y * length + i] = c;
      sum += c;
    }
    sums[y] = sum | 0;
  }
  return { coeffs, start, sums, length };
}

/** nfnt/resize edge handling: indices below 0 read 0, indices at or past the last read the last. */
function clampIndex(i: number, last: number): number {
  return i >= 0 && i < last ? i : i >= last ? last : 0;
}

/**
 * One accumulated channel divided as nfnt/resize does: int32 accumulators (wrapping, as Go's do),
 * truncating division, then `clampUint8`.
 */
function divideClamp(acc: number, sum: number): number {
  return Math.max(0, Math.min(255, Math.trunc((acc | 0) / sum)));
}

/**
 * The 64x64 grayscale image goimagehash hashes: nfnt/resize's two separable 8-bit passes (the first
 * also premultiplies alpha, `resizeNRGBA`), giving an *image.RGBA whose premultiplied channels then go
 * through goimagehash `pixel2Gray`.
 */
function resizedGray(pixels: Uint8Array | Uint8ClampedArray, width: number, height: number): Float64Array {
  const h = bilinearWeights(width);
  const v = bilinearWeights(height);
  for (const sum of [h.sums, v.sums]) {
    if (sum.includes(0)) throw new PHashInputError("Image is too large to hash.");
  }

  // Pass 1: horizontal filter of every input row; the output is stored transposed (64 rows of
  // `height` samples), as nfnt/resize does, one plane per colour channel.
  const tr = new Uint8Array(SIZE * height);
  const tg = new Uint8Array(SIZE * height);
  const tb = new Uint8Array(SIZE * height);
  const lastX = width - 1;
  for (let row = 0; row < height; row++) {
    const rowBase = row * width;
    for (let x = 0; x < SIZE; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      const first = h.start[x]!;
      const ci = x * h.length;
      for (let i = 0; i < h.length; i++) {
        const c = h.coeffs[ci + i]!;
        if (c === 0) continue;
        const p = (rowBase + clampIndex(first + i, lastX)) * 4;
        const a = pixels[p + 3]!;
        // Alpha premultiplication in 8 bits, truncating: the identity when a = 255.
        r += c * (((pixels[p]! * a) / 255) | 0);
        g += c * (((pixels[p + 1]! * a) / 255) | 0);
        b += c * (((pixels[p + 2]! * a) / 255) | 0);
      }
      const sum = h.sums[x]!;
      const o = x * height + row;
      tr[o] = divideClamp(r, sum);
      tg[o] = divideClamp(g, sum);
      tb[o] = divideClamp(b, sum);
    }
  }

  // Pass 2: filter the transposed image along its rows (the input's columns), then convert each
  // output pixel to gray. The *image.RGBA result's `RGBA()` gives c*0x101 per channel, so
  // `c16/257` and `c16/256` are both c again.
  const gray = new Float64Array(SIZE * SIZE);
  const lastY = height - 1;
  for (let x = 0; x < SIZE; x++) {
    const rowBase = x * height;
    for (let y = 0; y < SIZE; y++) {
      let r = 0;
      let g = 0;
      let b = 0;
      const first = v.start[y]!;
      const ci = y * v.length;
      for (let i = 0; i < v.length; i++) {
        const c = v.coeffs[ci + i]!;
        if (c === 0) continue;
        const p = rowBase + clampIndex(first + i, lastY);
        r += c * tr[p]!;
        g += c * tg[p]!;
        b += c * tb[p]!;
      }
      const sum = v.sums[y]!;
      gray[y * SIZE + x] = luminosity(divideClamp(r, sum), divideClamp(g, sum), divideClamp(b, sum));
    }
  }
  return gray;
}

/** goimagehash `pixel2Gray` on 8-bit channel values (after its integer `/257`, `/257`, `/256`). */
function luminosity(r: number, g: number, b: number): number {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

/**
 * nfnt/resize returns a 64x64 input unchanged, so goimagehash reads the decoded image itself:
 * `color.NRGBA.RGBA()` premultiplies in 16 bits (c*0x101*a/0xff), then `pixel2Gray` divides
 * red and green by 257 and blue by 256 (which differ from the 8-bit premultiplication only when
 * alpha is below 255).
 */
function directGray(pixels: Uint8Array | Uint8ClampedArray): Float64Array {
  const gray = new Float64Array(SIZE * SIZE);
  for (let i = 0; i < SIZE * SIZE; i++) {
    const p = i * 4;
    const a = pixels[p + 3]!;
    const r16 = Math.trunc((pixels[p]! * 0x101 * a) / 0xff);
    const g16 = Math.trunc((pixels[p + 1]! * 0x101 * a) / 0xff);
    const b16 = Math.trunc((pixels[p + 2]! * 0x101 * a) / 0xff);
    gray[i] = luminosity(Math.trunc(r16 / 257), Math.trunc(g16 / 257), Math.trunc(b16 / 256));
  }
  return gray;
}

// ---------------------------------------------------------------------------------------------
// DCT: goimagehash `DCT2DFast64` (Byeong Gi Lee's recursive DCT-II, unscaled) with its static tables.
// ---------------------------------------------------------------------------------------------

/**
 * `2·cos((i + 0.5)·π / n)` for n = 64, 32, 16, 8, 4, 2, i < n/2: the values of goimagehash's static
 * tables exactly as Go computes them (shortest round-trip decimals of the float64 values).
 */
const COS_TABLES: ReadonlyMap<number, Float64Array> = new Map([
  [
    64,
    Float64Array.of(
      1.9993976373924083,
      1.9945809133573804,
      1.9849590691974202,
      1.9705552847778824,
      1.9514042600770571,
      1.9275521315908797,
      1.8990563611860733,
      1.8659855976694777,
      1.8284195114070614,
      1.7864486023910306,
      1.7401739822174227,
      1.6897071304994142,
      1.6351696263031674,
      1.5766928552532127,
      1.5144176930129691,
      1.448494165902934,
      1.3790810894741339,
      1.3063456859075537,
      1.2304631811612539,
      1.151616382835691,
      1.0699952397741948,
      0.9857963844595683,
      0.8992226593092132,
      0.8104826280099796,
      0.7197900730699766,
      0.627363480797783,
      0.5334255149497968,
      0.43820248031373954,
      0.3419237775206027,
      0.24482135039843256,
      0.1471291271993349,
      0.049082457045824535,
    ),
  ],
  [
    32,
    Float64Array.of(
      1.9975909124103448,
      1.978353019929562,
      1.9400625063890882,
      1.8830881303660416,
      1.8079785862468867,
      1.7154572200005442,
      1.6064150629612899,
      1.4819022507099182,
      1.3431179096940369,
      1.191398608984867,
      1.0282054883864435,
      0.8551101868605644,
      0.6737797067844401,
      0.48596035980652796,
      0.2934609489107235,
      0.09813534865483627,
    ),
  ],
  [
    16,
    Float64Array.of(
      1.9903694533443936,
      1.9138806714644176,
      1.76384252869671,
      1.546020906725474,
      1.2687865683272912,
      0.9427934736519956,
      0.5805693545089246,
      0.19603428065912154,
    ),
  ],
  [8, Float64Array.of(1.9615705608064609, 1.6629392246050907, 1.1111404660392046, 0.3901806440322566)],
  [4, Float64Array.of(1.8477590650225735, 0.7653668647301797)],
  // 1.4142135623730951: Go's 2·cos(π/4) is the float64 nearest √2.
  [2, Float64Array.of(Math.SQRT2)],
]);

/** One scratch buffer per recursion level (each level's two sub-transforms run one after the other). */
const SCRATCH: ReadonlyMap<number, Float64Array> = new Map(
  [64, 32, 16, 8, 4, 2].map((n) => [n, new Float64Array(n)] as const),
);

/**
 * In-place unscaled DCT-II of `data[offset .. offset + n)`, n a power of two from 2 to 64; mirrors
 * goimagehash `DCT1DFast64` and its `forwardTransformStatic32/16/8/4` (same operations, same order).
 */
function forwardDct(data: Float64Array, offset: number, n: number): void {
  if (n === 1) return;
  const half = n >> 1;
  const temp = SCRATCH.get(n)!;
  const cos = COS_TABLES.get(n)!;
  for (let i = 0; i < half; i++) {
    const x = data[offset + i]!;
    const y = data[offset + n - 1 - i]!;
    temp[i] = x + y;
    temp[i + half] = (x - y) / cos[i]!;
  }
  forwardDct(temp, 0, half);
  forwardDct(temp, half, half);
  for (let i = 0; i < half - 1; i++) {
    data[offset + i * 2] = temp[i]!;
    data[offset + i * 2 + 1] = temp[i + half]! + temp[i + half + 1]!;
  }
  data[offset + n - 2] = temp[half - 1]!;
  data[offset + n - 1] = temp[n - 1]!;
}

const column = new Float64Array(SIZE);

/**
 * goimagehash `DCT2DFast64` followed by `FlattenPixelsFast64(…, 8, 8)`: rows, then columns, of the
 * 64x64 gray image (overwritten), returning the top-left 8x8 coefficients in row-major order. Only
 * the 8 columns that reach the hash are transformed (columns are independent, so this is exact).
 */
function lowFrequencies(gray: Float64Array): Float64Array {
  for (let row = 0; row < SIZE; row++) forwardDct(gray, row * SIZE, SIZE);
  const out = new Float64Array(HASH_SIDE * HASH_SIDE);
  for (let col = 0; col < HASH_SIDE; col++) {
    for (let j = 0; j < SIZE; j++) column[j] = gray[j * SIZE + col]!;
    forwardDct(column, 0, SIZE);
    for (let j = 0; j < HASH_SIDE; j++) out[j * HASH_SIDE + col] = column[j]!;
  }
  return out;
}

/**
 * goimagehash `MedianOfPixelsFast64` / `quickSelectMedian`: a Lomuto quickselect (middle pivot
 * `low/2 + high/2`) to index `n/2` of a copy, then, for an even length, `s[k-1]/2 + s[k]/2`. The
 * loop only leaves once `low = k` was set just past a pivot placed at `k-1`, so for 64 values this is
 * the mean of the 32nd and 33rd smallest. Exported for tests only.
 * @internal
 */
export function pHashMedian(values: ArrayLike<number>): number {
  const s = Float64Array.from(values);
  if (s.length === 0) throw new PHashInputError("Cannot take the median of no values.");
  const k = s.length >> 1;
  let low = 0;
  let high = s.length - 1;
  while (low < high) {
    const pivot = Math.trunc(low / 2) + Math.trunc(high / 2);
    const pivotValue = s[pivot]!;
    s[pivot] = s[high]!;
    s[high] = pivotValue;
    let store = low;
    for (let i = low; i < high; i++) {
      if (s[i]! < pivotValue) {
        const t = s[store]!;
        s[store] = s[i]!;
        s[i] = t;
        store++;
      }
    }
    const t = s[high]!;
    s[high] = s[store]!;
    s[store] = t;
    if (k <= store) high = store;
    else low = store + 1;
  }
  return s.length % 2 === 0 ? s[k - 1]! / 2 + s[k]! / 2 : s[k]!;
}

/**
 * Steps 1-2 of {@link imagePHash}: the 64x64 gray image (row-major) goimagehash builds. Exported for
 * tests only.
 * @internal
 */
export function pHashGray64(
  rgbaPixels: Uint8Array | Uint8ClampedArray,
  width: number,
  height: number,
): Float64Array {
  checkImage(rgbaPixels, width, height);
  return width === SIZE && height === SIZE ? directGray(rgbaPixels) : resizedGray(rgbaPixels, width, height);
}

/**
 * Step 3 of {@link imagePHash}: the top-left 8x8 coefficients (row-major) of `DCT2DFast64` of a
 * 64x64 row-major gray image (not modified). Exported for tests only.
 * @internal
 */
export function pHashDct8x8(gray64: ArrayLike<number>): Float64Array {
  if (gray64.length !== SIZE * SIZE) throw new PHashInputError("The DCT input must have 64x64 values.");
  return lowFrequencies(Float64Array.from(gray64));
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/**
 * The 64-bit DCT perceptual hash of an image, bit for bit what Crynux's Go code computes with
 * `goimagehash.PerceptionHash` (github.com/corona10/goimagehash v1.1.0, resizing with
 * github.com/nfnt/resize `Resize(64, 64, img, Bilinear)`) on the image decoded by Go's `image/png`:
 *
 * 1. nfnt/resize bilinear resize to 64x64 in 8-bit fixed point (x256 weights, truncating integer
 *    division, clamping, edge replication), with alpha premultiplied in the first pass; a 64x64
 *    image is used as it is;
 * 2. goimagehash gray: `0.299·(R16/257) + 0.587·(G16/257) + 0.114·(B16/256)` (integer divisions of
 *    the 16-bit premultiplied channels of `color.RGBA()`);
 * 3. `DCT2DFast64` (unscaled fast DCT-II on rows then columns), top-left 8x8 coefficients row by row;
 * 4. bit `63 - i` is set when coefficient `i` is greater than the `MedianOfPixelsFast64` median.
 *
 * `rgbaPixels` are non-premultiplied 8-bit RGBA, row by row (what PNG decoders and the browser's
 * `ImageData` give). Which Go image type this matches:
 * - every alpha 255: an 8-bit RGB PNG (Go's `*image.RGBA`), and equally an 8-bit RGBA PNG whose
 *   alpha is all opaque or an 8-bit grayscale PNG expanded to R = G = B (Go's `*image.NRGBA` and
 *   `*image.Gray` give the same hash then);
 * - some alpha below 255: an 8-bit RGBA or gray+alpha PNG (Go's `*image.NRGBA`, resized by
 *   nfnt's `resizeNRGBA`, which premultiplies alpha).
 *
 * Not reproduced: images that Go decodes to other types (paletted and 16-bit PNGs, JPEG), for
 * which nfnt/resize takes its 16-bit or YCbCr paths. Go on amd64 is the reference (no fused
 * multiply-add in the float arithmetic).
 *
 * @returns the hash as an unsigned bigint in [0, 2^64).
 * @throws PHashInputError if `width` or `height` is not a positive integer, or if the buffer's
 *   length is not `width * height * 4`.
 */
export function imagePHash(
  rgbaPixels: Uint8Array | Uint8ClampedArray,
  width: number,
  height: number,
): bigint {
  const coefficients = lowFrequencies(pHashGray64(rgbaPixels, width, height));
  const median = pHashMedian(coefficients);
  let high = 0;
  let low = 0;
  for (let i = 0; i < 64; i++) {
    if (coefficients[i]! > median) {
      if (i < 32) high |= 1 << (31 - i);
      else low |= 1 << (63 - i);
    }
  }
  return (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
}

function checkImage(rgbaPixels: Uint8Array | Uint8ClampedArray, width: number, height: number): void {
  if (!Number.isSafeInteger(width) || width <= 0 || !Number.isSafeInteger(height) || height <= 0) {
    throw new PHashInputError(`Image size must be positive integers, got ${width}x${height}.`);
  }
  if (!(rgbaPixels instanceof Uint8Array || rgbaPixels instanceof Uint8ClampedArray)) {
    throw new PHashInputError("Pixels must be a Uint8Array or a Uint8ClampedArray of RGBA values.");
  }
  if (rgbaPixels.length !== width * height * 4) {
    throw new PHashInputError(
      `Pixel buffer has ${rgbaPixels.length} bytes, expected ${width * height * 4} (${width}x${height} RGBA).`,
    );
  }
}

function checkU64(hash: bigint, what: string): void {
  if (typeof hash !== "bigint" || hash < 0n || hash > MAX_U64) {
    throw new PHashInputError(`${what} must be an unsigned 64-bit bigint, got ${String(hash)}.`);
  }
}

/** The hash as 8 big-endian bytes in hex: `0x` and 16 lowercase hex digits. */
export function pHashToHex(hash: bigint): `0x${string}` {
  checkU64(hash, "pHash");
  return `0x${hash.toString(16).padStart(16, "0")}`;
}

/**
 * Inverse of {@link pHashToHex}: `0x` followed by exactly 16 hex digits (either case).
 * @throws PHashInputError otherwise.
 */
export function pHashFromHex(hex: string): bigint {
  if (typeof hex !== "string" || !/^0x[0-9a-fA-F]{16}$/.test(hex)) {
    throw new PHashInputError(`A pHash is 0x and 16 hex digits, got ${JSON.stringify(hex)}.`);
  }
  return BigInt(hex);
}

function popcount32(x: number): number {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  v = (v + (v >>> 4)) & 0x0f0f0f0f;
  return Math.imul(v, 0x01010101) >>> 24;
}

/**
 * Number of differing bits of two 64-bit hashes.
 * @throws PHashInputError if either is negative or wider than 64 bits.
 */
export function hammingDistance(a: bigint, b: bigint): number {
  checkU64(a, "First hash");
  checkU64(b, "Second hash");
  const x = a ^ b;
  return popcount32(Number(x >> 32n)) + popcount32(Number(x & 0xffffffffn));
}

/**
 * The Crynux SD task result: the concatenation of one 8-byte big-endian pHash per image, in image
 * order (`0x` for no image).
 */
export function sdResultFromPHashes(hashes: readonly bigint[]): `0x${string}` {
  return `0x${hashes.map((h) => pHashToHex(h).slice(2)).join("")}`;
}

/**
 * Whether two SD results agree as the network checks them: the same length, a whole number of
 * 8-byte hashes, and every pair of hashes at a Hamming distance below `threshold` (5 on Crynux).
 * Two empty results (`0x`) match. Results of different lengths or of a partial hash do not match.
 * @throws PHashInputError if either is not `0x` followed by hex digits, or if `threshold` is not a
 *   non-negative integer.
 */
export function sdResultsMatch(a: Hex, b: Hex, threshold = 5): boolean {
  for (const r of [a, b]) {
    if (typeof r !== "string" || !/^0x[0-9a-fA-F]*$/.test(r)) {
      throw new PHashInputError(`An SD result is 0x and hex digits, got ${JSON.stringify(r)}.`);
    }
  }
  if (!Number.isSafeInteger(threshold) || threshold < 0) {
    throw new PHashInputError(`Threshold must be a non-negative integer, got ${threshold}.`);
  }
  if (a.length !== b.length || (a.length - 2) % 16 !== 0) return false;
  for (let i = 2; i < a.length; i += 16) {
    const d = hammingDistance(BigInt(`0x${a.slice(i, i + 16)}`), BigInt(`0x${b.slice(i, i + 16)}`));
    if (d >= threshold) return false;
  }
  return true;
}
