import { decode as fastPngDecode, encode as fastPngEncode } from "fast-png";
import { Inflate } from "fflate";
import { CrynuxError, type CrynuxErrorParameters } from "./errors.js";
import { imagePHash } from "./phash.js";
import { MAX_IMAGE_SIDE } from "./sd.js";

/** Why {@link decodePng} refused its input. */
export type PngDecodeErrorReason =
  /** Not a byte array, or no PNG signature. */
  | "not_png"
  /** The bytes end before the image does (a cut-off file). */
  | "truncated"
  /** Broken structure: bad CRC, bad header, chunks out of order, bad zlib data, wrong amount of pixel data. */
  | "corrupt"
  /** Larger than {@link MAX_IMAGE_SIDE} on a side, or more than {@link MAX_PNG_BYTES} bytes. */
  | "too_large"
  /** A valid PNG this decoder does not take: 16-bit samples, or interlaced with fewer than 8 bits per sample. */
  | "unsupported";

/** Thrown by {@link decodePng} and {@link pngPHash} for bytes that are not a PNG image they can read. */
export class PngDecodeError extends CrynuxError {
  override name = "PngDecodeError";
  /** Machine-readable kind of problem. */
  readonly reason: PngDecodeErrorReason;
  constructor(reason: PngDecodeErrorReason, shortMessage: string, parameters: CrynuxErrorParameters = {}) {
    super(shortMessage, { docsPath: "sd.md#result-hashes", ...parameters });
    this.reason = reason;
  }
}

/** Thrown by {@link encodePng} for a size or pixel buffer that does not describe an image. */
export class PngEncodeError extends CrynuxError {
  override name = "PngEncodeError";
}

/** An 8-bit RGBA image, row by row, not premultiplied. */
export type RgbaImage = { width: number; height: number; rgba: Uint8Array };

/**
 * Largest PNG file {@link decodePng} reads. An uncompressed 2048x2048 RGBA image is 16 MiB; the rest is
 * room for metadata chunks.
 */
export const MAX_PNG_BYTES = 64 * 1024 * 1024;

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10] as const;

const ColorType = { Gray: 0, Rgb: 2, Palette: 3, GrayAlpha: 4, Rgba: 6 } as const;
type ColorType = (typeof ColorType)[keyof typeof ColorType];

/** Bit depths the PNG specification allows per colour type, and samples per pixel. */
const COLOR_TYPES: ReadonlyMap<number, { depths: readonly number[]; channels: number }> = new Map([
  [ColorType.Gray, { depths: [1, 2, 4, 8, 16], channels: 1 }],
  [ColorType.Rgb, { depths: [8, 16], channels: 3 }],
  [ColorType.Palette, { depths: [1, 2, 4, 8], channels: 1 }],
  [ColorType.GrayAlpha, { depths: [8, 16], channels: 2 }],
  [ColorType.Rgba, { depths: [8, 16], channels: 4 }],
]);

type Header = {
  width: number;
  height: number;
  depth: number;
  colorType: ColorType;
  channels: number;
  interlaced: boolean;
};

/** What the chunk walk keeps: the header, the palette and transparency, and where the image data lies. */
type Layout = {
  header: Header;
  /** RGBA per palette entry (alpha from tRNS, else 255). */
  palette: Uint8Array | null;
  /** The tRNS colour key of a gray or RGB image, as 8-bit sample values. */
  colorKey: readonly number[] | null;
  /** Byte ranges [start, end) of the IHDR, IDAT and IEND chunks, whole (length, type, data, CRC). */
  criticalChunks: [number, number][];
  /** The data of every IDAT chunk, in order. */
  idat: Uint8Array[];
};

/**
 * Decodes a PNG to 8-bit RGBA, expanding what Go's `image/png` decodes to gray, gray+alpha, RGB, RGBA or
 * paletted images the same way: gray samples of 1, 2 or 4 bits are scaled to 8 bits, a tRNS colour key
 * makes matching gray or RGB pixels transparent, palette entries take their alpha from tRNS, and an index
 * past the palette reads opaque black.
 *
 * The file is checked before anything is inflated: signature, chunk framing and CRCs, the header (a
 * side from 1 to {@link MAX_IMAGE_SIDE}, a valid depth and colour type, no 16-bit samples), chunk order.
 * The zlib stream is then inflated in bounded steps and must give exactly the bytes the header calls for,
 * with a matching Adler-32, so a small file that declares a huge image or inflates without end is refused
 * without allocating it. Ancillary chunks (text, ICC profile, ...) are checked for their CRC and ignored.
 *
 * 16-bit PNGs are refused: Go decodes them to 16-bit images that goimagehash hashes on another path
 * (see {@link imagePHash}), so their hash would not be the network's.
 *
 * @throws PngDecodeError with a `reason`, for anything that is not such a PNG.
 */
export function decodePng(bytes: Uint8Array): RgbaImage {
  if (!(bytes instanceof Uint8Array)) {
    throw new PngDecodeError("not_png", "A PNG must be given as a Uint8Array.");
  }
  if (bytes.length > MAX_PNG_BYTES) {
    throw new PngDecodeError(
      "too_large",
      `The PNG has ${bytes.length} bytes, over the limit of ${MAX_PNG_BYTES}.`,
    );
  }
  const layout = readLayout(bytes);
  const { header } = layout;
  // fast-png inflates again below; this first pass is what bounds memory (fast-png inflates each IDAT
  // chunk whole, with no limit), and costs about as much as fast-png's own decoding.
  checkImageData(layout);

  // fast-png gets only the critical chunks it needs: it inflates ICC profiles and decodes text itself,
  // with no bound on the inflated size.
  const sanitized = concat([
    Uint8Array.from(SIGNATURE),
    ...layout.criticalChunks.map(([start, end]) => bytes.subarray(start, end)),
  ]);
  let samples: Uint8Array;
  try {
    const decoded = fastPngDecode(sanitized);
    if (!(decoded.data instanceof Uint8Array)) throw new Error("fast-png returned 16-bit samples.");
    samples = decoded.data;
  } catch (error) {
    throw new PngDecodeError("corrupt", "The PNG image data could not be decoded.", {
      details: error instanceof Error ? error.message : String(error),
      cause: error,
    });
  }
  const rowBytes = Math.ceil((header.width * header.channels * header.depth) / 8);
  if (samples.length !== rowBytes * header.height) {
    throw new PngDecodeError(
      "corrupt",
      `The decoder returned ${samples.length} bytes of samples, expected ${rowBytes * header.height}.`,
    );
  }
  return { width: header.width, height: header.height, rgba: toRgba(samples, rowBytes, layout) };
}

/**
 * The pHash of a PNG image as the network computes it: {@link imagePHash} of {@link decodePng}'s RGBA.
 * @throws PngDecodeError for bytes {@link decodePng} refuses.
 */
export function pngPHash(bytes: Uint8Array): bigint {
  const { width, height, rgba } = decodePng(bytes);
  return imagePHash(rgba, width, height);
}

/**
 * Encodes 8-bit RGBA pixels (row by row, not premultiplied) as an 8-bit RGBA PNG.
 * @throws PngEncodeError if a side is not an integer from 1 to {@link MAX_IMAGE_SIDE} (larger images could
 *   not be decoded again), or if the buffer is not `width * height * 4` bytes.
 */
export function encodePng(rgba: Uint8Array | Uint8ClampedArray, width: number, height: number): Uint8Array {
  for (const side of [width, height]) {
    if (!Number.isSafeInteger(side) || side < 1 || side > MAX_IMAGE_SIDE) {
      throw new PngEncodeError(
        `Image sides must be integers from 1 to ${MAX_IMAGE_SIDE}, got ${width}x${height}.`,
      );
    }
  }
  if (!(rgba instanceof Uint8Array || rgba instanceof Uint8ClampedArray)) {
    throw new PngEncodeError("Pixels must be a Uint8Array or a Uint8ClampedArray of RGBA values.");
  }
  if (rgba.length !== width * height * 4) {
    throw new PngEncodeError(
      `Pixel buffer has ${rgba.length} bytes, expected ${width * height * 4} (${width}x${height} RGBA).`,
    );
  }
  const png = fastPngEncode({ width, height, data: rgba, channels: 4, depth: 8 });
  // fast-png returns a view of its growing write buffer; keep only the file's bytes.
  return png.byteLength === png.buffer.byteLength ? png : png.slice();
}

// ---------------------------------------------------------------------------------------------
// Chunk walk
// ---------------------------------------------------------------------------------------------

function readUint32(bytes: Uint8Array, offset: number): number {
  return (
    ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>>
    0
  );
}

function chunkName(bytes: Uint8Array, offset: number): string {
  return String.fromCharCode(bytes[offset]!, bytes[offset + 1]!, bytes[offset + 2]!, bytes[offset + 3]!);
}

function readLayout(bytes: Uint8Array): Layout {
  for (let i = 0; i < SIGNATURE.length; i++) {
    if (bytes[i] !== SIGNATURE[i]) {
      if (i === bytes.length) throw new PngDecodeError("not_png", "The bytes end inside the PNG signature.");
      throw new PngDecodeError("not_png", "The bytes do not start with the PNG signature.");
    }
  }
  let header: Header | null = null;
  let palette: Uint8Array | null = null;
  let paletteEntries = 0;
  let colorKey: number[] | null = null;
  const criticalChunks: [number, number][] = [];
  const idat: Uint8Array[] = [];
  /** 0: before IDAT, 1: inside the IDAT run, 2: after it. */
  let idatState = 0;
  let offset: number = SIGNATURE.length;
  for (;;) {
    if (offset + 12 > bytes.length) {
      throw new PngDecodeError("truncated", "The PNG ends before its IEND chunk.");
    }
    const length = readUint32(bytes, offset);
    const type = chunkName(bytes, offset + 4);
    if (length > 0x7fffffff) {
      throw new PngDecodeError("corrupt", `Chunk ${JSON.stringify(type)} declares ${length} bytes.`);
    }
    if (!/^[A-Za-z]{4}$/.test(type)) {
      throw new PngDecodeError("corrupt", "A chunk type is not four ASCII letters.");
    }
    const dataStart = offset + 8;
    const end = dataStart + length + 4;
    if (end > bytes.length) {
      throw new PngDecodeError("truncated", `The PNG ends inside its ${type} chunk.`);
    }
    if (crc32(bytes, offset + 4, dataStart + length) !== readUint32(bytes, dataStart + length)) {
      throw new PngDecodeError("corrupt", `The CRC of the ${type} chunk does not match its contents.`);
    }
    const data = bytes.subarray(dataStart, dataStart + length);

    if (header === null) {
      if (type !== "IHDR") throw new PngDecodeError("corrupt", "The first chunk is not IHDR.");
      header = readHeader(data);
      criticalChunks.push([offset, end]);
    } else if (type === "IHDR") {
      throw new PngDecodeError("corrupt", "The PNG has more than one IHDR chunk.");
    } else if (type === "IDAT") {
      if (idatState === 2) throw new PngDecodeError("corrupt", "The IDAT chunks are not consecutive.");
      if (header.colorType === ColorType.Palette && palette === null) {
        throw new PngDecodeError("corrupt", "A paletted PNG has no PLTE chunk before its image data.");
      }
      idatState = 1;
      idat.push(data);
      criticalChunks.push([offset, end]);
    } else if (type === "IEND") {
      if (idatState === 0) throw new PngDecodeError("corrupt", "The PNG has no IDAT chunk.");
      criticalChunks.push([offset, end]);
      return { header, palette, colorKey, criticalChunks, idat };
    } else {
      if (idatState === 1) idatState = 2;
      if (type === "PLTE") {
        if (idatState !== 0 || palette !== null || colorKey !== null) {
          throw new PngDecodeError("corrupt", "The PLTE chunk is out of order or repeated.");
        }
        if (header.colorType === ColorType.Gray || header.colorType === ColorType.GrayAlpha) {
          throw new PngDecodeError("corrupt", "A grayscale PNG has a PLTE chunk.");
        }
        paletteEntries = length / 3;
        const maxEntries = header.colorType === ColorType.Palette ? 1 << header.depth : 256;
        if (length % 3 !== 0 || paletteEntries < 1 || paletteEntries > maxEntries) {
          throw new PngDecodeError("corrupt", `The PLTE chunk has a bad length (${length} bytes).`);
        }
        // A palette in an RGB image only suggests colours for display; only paletted images use it.
        palette = new Uint8Array(paletteEntries * 4);
        for (let i = 0; i < paletteEntries; i++) {
          palette.set([data[i * 3]!, data[i * 3 + 1]!, data[i * 3 + 2]!, 255], i * 4);
        }
      } else if (type === "tRNS") {
        if (idatState !== 0 || colorKey !== null) {
          throw new PngDecodeError("corrupt", "The tRNS chunk is out of order or repeated.");
        }
        colorKey = readTransparency(header, palette, paletteEntries, data);
      }
      // Other chunks are skipped, as Go's decoder skips them (after checking their CRC).
    }
    offset = end;
  }
}

function readHeader(data: Uint8Array): Header {
  if (data.length !== 13) throw new PngDecodeError("corrupt", "The IHDR chunk is not 13 bytes long.");
  const width = readUint32(data, 0);
  const height = readUint32(data, 4);
  const depth = data[8]!;
  const colorType = data[9]!;
  if (width === 0 || height === 0) {
    throw new PngDecodeError("corrupt", `The PNG declares an empty image (${width}x${height}).`);
  }
  if (width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE) {
    throw new PngDecodeError(
      "too_large",
      `The PNG is ${width}x${height}, larger than ${MAX_IMAGE_SIDE} pixels on a side.`,
    );
  }
  const type = COLOR_TYPES.get(colorType);
  if (type === undefined || !type.depths.includes(depth)) {
    throw new PngDecodeError("corrupt", `Bit depth ${depth} with colour type ${colorType} is not valid PNG.`);
  }
  if (data[10] !== 0 || data[11] !== 0 || (data[12] !== 0 && data[12] !== 1)) {
    throw new PngDecodeError("corrupt", "The PNG uses an unknown compression, filter or interlace method.");
  }
  const interlaced = data[12] === 1;
  if (depth === 16) {
    throw new PngDecodeError(
      "unsupported",
      "16-bit PNGs are not supported: the network's pHash (Go's goimagehash) takes another path for them.",
    );
  }
  if (interlaced && depth < 8) {
    throw new PngDecodeError("unsupported", `Interlaced PNGs with ${depth}-bit samples are not supported.`);
  }
  return { width, height, depth, colorType: colorType as ColorType, channels: type.channels, interlaced };
}

/** Applies a tRNS chunk: alpha for palette entries, or the colour key of a gray or RGB image. */
function readTransparency(
  header: Header,
  palette: Uint8Array | null,
  paletteEntries: number,
  data: Uint8Array,
): number[] | null {
  switch (header.colorType) {
    case ColorType.Palette:
      if (palette === null) throw new PngDecodeError("corrupt", "The tRNS chunk comes before PLTE.");
      if (data.length > paletteEntries) {
        throw new PngDecodeError("corrupt", "The tRNS chunk has more entries than the palette.");
      }
      for (let i = 0; i < data.length; i++) palette[i * 4 + 3] = data[i]!;
      return null;
    case ColorType.Gray: {
      if (data.length !== 2) throw new PngDecodeError("corrupt", "A grayscale tRNS chunk is not 2 bytes.");
      // Go compares the low byte of the key, scaled like the samples, in 8-bit arithmetic.
      return [(data[1]! * GRAY_SCALE[header.depth]!) & 0xff];
    }
    case ColorType.Rgb:
      if (data.length !== 6) throw new PngDecodeError("corrupt", "An RGB tRNS chunk is not 6 bytes.");
      return [data[1]!, data[3]!, data[5]!];
    default:
      throw new PngDecodeError("corrupt", "A PNG with an alpha channel has a tRNS chunk.");
  }
}

/** Multiplier from a gray sample of the given bit depth to 8 bits. */
const GRAY_SCALE: Readonly<Record<number, number>> = { 1: 0xff, 2: 0x55, 4: 0x11, 8: 1 };

// ---------------------------------------------------------------------------------------------
// Image data: bounded inflate and checks
// ---------------------------------------------------------------------------------------------

/** Bytes of the filtered, uncompressed image data the header calls for. */
function inflatedSize(header: Header): number {
  const bitsPerPixel = header.channels * header.depth;
  const scanlines = (width: number, height: number) =>
    width > 0 && height > 0 ? height * (1 + Math.ceil((width * bitsPerPixel) / 8)) : 0;
  if (!header.interlaced) return scanlines(header.width, header.height);
  let total = 0;
  for (const [x0, y0, dx, dy] of ADAM7) {
    total += scanlines(Math.ceil((header.width - x0) / dx), Math.ceil((header.height - y0) / dy));
  }
  return total;
}

const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
] as const;

/** Compressed bytes fed to the inflater at once: deflate expands at most ~1032x, so ~8 MiB out per step. */
const INFLATE_STEP = 8192;

/**
 * Inflates the zlib stream of the IDAT chunks without keeping the output, checking that it holds exactly
 * the image's bytes, that it is complete, and its Adler-32 (as Go's decoder does).
 */
function checkImageData(layout: Layout): void {
  const expected = inflatedSize(layout.header);
  const stream = concat(layout.idat);
  if (stream.length < 6) throw new PngDecodeError("corrupt", "The PNG image data is too short.");
  const cmf = stream[0]!;
  const flg = stream[1]!;
  if ((cmf & 0x0f) !== 8 || cmf >> 4 > 7 || (cmf * 256 + flg) % 31 !== 0 || (flg & 0x20) !== 0) {
    throw new PngDecodeError("corrupt", "The PNG image data does not start with a valid zlib header.");
  }
  const adler = new Adler32();
  let produced = 0;
  const inflater = new Inflate((chunk) => {
    produced += chunk.length;
    if (produced > expected) {
      throw new PngDecodeError("corrupt", `The PNG holds more image data than its ${expected} bytes.`);
    }
    adler.update(chunk);
  });
  const deflate = stream.subarray(2, stream.length - 4);
  try {
    for (let i = 0; i < deflate.length; i += INFLATE_STEP) {
      inflater.push(deflate.subarray(i, Math.min(deflate.length, i + INFLATE_STEP)), false);
    }
    inflater.push(new Uint8Array(0), true);
  } catch (error) {
    if (error instanceof PngDecodeError) throw error;
    throw new PngDecodeError("corrupt", "The PNG image data is not a valid deflate stream.", {
      details: error instanceof Error ? error.message : String(error),
      cause: error,
    });
  }
  if (produced < expected) {
    throw new PngDecodeError(
      "corrupt",
      `The PNG holds ${produced} bytes of image data, expected ${expected}.`,
    );
  }
  if (adler.value() !== readUint32(stream, stream.length - 4)) {
    throw new PngDecodeError("corrupt", "The Adler-32 checksum of the PNG image data does not match.");
  }
}

// ---------------------------------------------------------------------------------------------
// Samples to RGBA
// ---------------------------------------------------------------------------------------------

/** Sample `x` of a row of packed samples of `depth` bits (1, 2, 4 or 8). */
function sampleAt(samples: Uint8Array, rowStart: number, x: number, depth: number): number {
  if (depth === 8) return samples[rowStart + x]!;
  const bit = x * depth;
  return (samples[rowStart + (bit >> 3)]! >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
}

function toRgba(samples: Uint8Array, rowBytes: number, layout: Layout): Uint8Array {
  const { width, height, depth, colorType } = layout.header;
  const pixels = width * height;
  // fast-png returns a fresh array of exactly the samples, so RGBA needs no copy.
  if (colorType === ColorType.Rgba) return samples;
  const rgba = new Uint8Array(pixels * 4);
  const key = layout.colorKey;
  if (colorType === ColorType.Rgb) {
    for (let i = 0, p = 0, o = 0; i < pixels; i++, p += 3, o += 4) {
      const r = samples[p]!;
      const g = samples[p + 1]!;
      const b = samples[p + 2]!;
      rgba[o] = r;
      rgba[o + 1] = g;
      rgba[o + 2] = b;
      rgba[o + 3] = key !== null && r === key[0] && g === key[1] && b === key[2] ? 0 : 255;
    }
    return rgba;
  }
  if (colorType === ColorType.GrayAlpha) {
    for (let i = 0, p = 0, o = 0; i < pixels; i++, p += 2, o += 4) {
      const v = samples[p]!;
      rgba[o] = v;
      rgba[o + 1] = v;
      rgba[o + 2] = v;
      rgba[o + 3] = samples[p + 1]!;
    }
    return rgba;
  }
  // Gray and palette: one sample of 1 to 8 bits per pixel, rows padded to whole bytes.
  const palette = layout.palette;
  const scale = GRAY_SCALE[depth]!;
  for (let y = 0, o = 0; y < height; y++) {
    const row = y * rowBytes;
    for (let x = 0; x < width; x++, o += 4) {
      const sample = sampleAt(samples, row, x, depth);
      if (palette !== null) {
        // Go (like libpng) reads an index past the palette as opaque black.
        if (sample * 4 < palette.length) {
          rgba[o] = palette[sample * 4]!;
          rgba[o + 1] = palette[sample * 4 + 1]!;
          rgba[o + 2] = palette[sample * 4 + 2]!;
          rgba[o + 3] = palette[sample * 4 + 3]!;
        } else {
          rgba[o + 3] = 255;
        }
      } else {
        const v = sample * scale;
        rgba[o] = v;
        rgba[o + 1] = v;
        rgba[o + 2] = v;
        rgba[o + 3] = key !== null && v === key[0] ? 0 : 255;
      }
    }
  }
  return rgba;
}

// ---------------------------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------------------------

let crcTable: Uint32Array | undefined;

function crc32(bytes: Uint8Array, start: number, end: number): number {
  if (crcTable === undefined) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = crcTable[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

class Adler32 {
  private a = 1;
  private b = 0;
  update(chunk: Uint8Array): void {
    // 5552 bytes is the most that can be summed before b can overflow 2^32 (zlib's NMAX).
    for (let start = 0; start < chunk.length; start += 5552) {
      const end = Math.min(chunk.length, start + 5552);
      for (let i = start; i < end; i++) {
        this.a += chunk[i]!;
        this.b += this.a;
      }
      this.a %= 65521;
      this.b %= 65521;
    }
  }
  value(): number {
    return ((this.b << 16) | this.a) >>> 0;
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
