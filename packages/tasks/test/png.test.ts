import { crc32, deflateSync } from "node:zlib";
import fc from "fast-check";
import jpeg from "jpeg-js";
import { PNG } from "pngjs";
import { describe, expect, it } from "vitest";
import { CrynuxError } from "../src/errors.js";
import { imagePHash } from "../src/phash.js";
import {
  decodePng,
  encodePng,
  MAX_PNG_BYTES,
  PngDecodeError,
  type PngDecodeErrorReason,
  PngEncodeError,
  pngPHash,
} from "../src/png.js";

// #region PNG writer: any colour type, bit depth, filter and interlace, so the decoder meets what real
// encoders produce (fast-png's encoder only writes filter 0, non-interlaced, 8/16-bit).

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value >>> 0);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function chunk(type: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const typeAndData = concat([new TextEncoder().encode(type), data]);
  return concat([u32(data.length), typeAndData, u32(crc32(typeAndData))]);
}

const SIGNATURE = Uint8Array.of(137, 80, 78, 71, 13, 10, 26, 10);

function ihdr(width: number, height: number, depth: number, colorType: number, interlace = 0): Uint8Array {
  return chunk("IHDR", concat([u32(width), u32(height), Uint8Array.of(depth, colorType, 0, 0, interlace)]));
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Filters one scanline with the given PNG filter type (0-4) against the previous one of its pass. */
function filterRow(raw: Uint8Array, prior: Uint8Array, type: number, bpp: number): Uint8Array {
  const out = new Uint8Array(raw.length + 1);
  out[0] = type;
  for (let i = 0; i < raw.length; i++) {
    const left = i >= bpp ? raw[i - bpp]! : 0;
    const up = prior[i]!;
    const upLeft = i >= bpp ? prior[i - bpp]! : 0;
    const predictor = [0, left, up, (left + up) >> 1, paeth(left, up, upLeft)][type]!;
    out[i + 1] = (raw[i]! - predictor) & 0xff;
  }
  return out;
}

type PngSpec = {
  width: number;
  height: number;
  depth: number;
  colorType: number;
  interlace?: 0 | 1;
  /** Sample `c` of pixel (x, y), in the image's bit depth. */
  sample: (x: number, y: number, c: number) => number;
  plte?: number[][];
  trns?: number[];
  /** Chunks written between the header (and palette) and the image data. */
  extraChunks?: Uint8Array[];
  filterSeed?: number;
};

const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
] as const;

/** The filtered, uncompressed image data of a spec (what goes through zlib into IDAT). */
function imageData(spec: PngSpec): Uint8Array {
  const channels = CHANNELS[spec.colorType]!;
  const bpp = Math.max(1, (channels * spec.depth) / 8);
  const rnd = mulberry32(spec.filterSeed ?? 1);
  const passes = spec.interlace === 1 ? ADAM7 : ([[0, 0, 1, 1]] as const);
  const rows: Uint8Array[] = [];
  for (const [x0, y0, dx, dy] of passes) {
    const passWidth = Math.ceil((spec.width - x0) / dx);
    const passHeight = Math.ceil((spec.height - y0) / dy);
    if (passWidth <= 0 || passHeight <= 0) continue;
    const rowBytes = Math.ceil((passWidth * channels * spec.depth) / 8);
    let prior = new Uint8Array(rowBytes);
    for (let py = 0; py < passHeight; py++) {
      const raw = new Uint8Array(rowBytes);
      let bit = 0;
      for (let px = 0; px < passWidth; px++) {
        for (let c = 0; c < channels; c++) {
          const value = spec.sample(x0 + px * dx, y0 + py * dy, c);
          if (spec.depth === 16) {
            raw[bit >> 3] = value >> 8;
            raw[(bit >> 3) + 1] = value & 0xff;
          } else {
            raw[bit >> 3]! |= value << (8 - spec.depth - (bit & 7));
          }
          bit += spec.depth;
        }
      }
      rows.push(filterRow(raw, prior, Math.floor(rnd() * 5), bpp));
      prior = raw;
    }
  }
  return concat(rows);
}

function buildPng(spec: PngSpec, zlibData = new Uint8Array(deflateSync(imageData(spec)))): Uint8Array {
  const parts = [SIGNATURE, ihdr(spec.width, spec.height, spec.depth, spec.colorType, spec.interlace)];
  if (spec.plte) parts.push(chunk("PLTE", Uint8Array.from(spec.plte.flat())));
  if (spec.trns) parts.push(chunk("tRNS", Uint8Array.from(spec.trns)));
  parts.push(...(spec.extraChunks ?? []));
  // Split the zlib stream over several IDAT chunks, as encoders with a fixed buffer do.
  for (let i = 0; i < zlibData.length; i += 1000) parts.push(chunk("IDAT", zlibData.subarray(i, i + 1000)));
  parts.push(chunk("IEND"));
  return concat(parts);
}

/** A smooth, seeded picture with some noise, as `sample` for any bit depth and channel count. */
function picture(seed: number, depth: number): PngSpec["sample"] {
  const rnd = mulberry32(seed);
  const phases = Array.from({ length: 4 }, () => rnd() * 6.28);
  const max = 2 ** depth - 1;
  return (x, y, c) => {
    const wave = 0.5 + 0.3 * Math.sin(x / 7 + phases[c]!) + 0.2 * Math.cos(y / 5 - phases[c]!);
    const noise = (mulberry32(seed ^ (x * 7919 + y * 104729 + c))() - 0.5) * 0.2;
    return Math.max(0, Math.min(max, Math.round((wave + noise) * max)));
  };
}

function referenceDecode(bytes: Uint8Array): { width: number; height: number; data: Uint8Array } {
  const png = PNG.sync.read(Buffer.from(bytes));
  return { width: png.width, height: png.height, data: new Uint8Array(png.data) };
}

function expectSameAsPngjs(bytes: Uint8Array, colorKey = false): void {
  const ours = decodePng(bytes);
  const reference = referenceDecode(bytes);
  expect([ours.width, ours.height]).toEqual([reference.width, reference.height]);
  // pngjs clears the colour of pixels a tRNS key makes transparent; Go keeps it (NRGBA with alpha 0),
  // and so does decodePng. Premultiplied, as the pHash reads them, both are zero.
  const comparable = Uint8Array.from(ours.rgba);
  for (let i = 0; colorKey && i < comparable.length; i += 4) {
    if (comparable[i + 3] === 0) comparable.fill(0, i, i + 3);
  }
  expect(Buffer.from(comparable).equals(Buffer.from(reference.data))).toBe(true);
  expect(pngPHash(bytes)).toBe(imagePHash(reference.data, reference.width, reference.height));
}

function decodeError(bytes: unknown): PngDecodeError {
  try {
    decodePng(bytes as Uint8Array);
  } catch (error) {
    expect(error).toBeInstanceOf(PngDecodeError);
    expect(error).toBeInstanceOf(CrynuxError);
    return error as PngDecodeError;
  }
  throw new Error("decodePng accepted the input");
}

function expectReason(bytes: unknown, reason: PngDecodeErrorReason): void {
  expect(decodeError(bytes).reason).toBe(reason);
}

/** Rewrites every complete chunk's CRC, so that a mutation reaches the checks behind the CRC check. */
function fixCrcs(bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes);
  const view = new DataView(out.buffer);
  let offset = 8;
  while (offset + 12 <= out.length) {
    const length = view.getUint32(offset);
    const end = offset + 8 + length + 4;
    if (length > 0x7fffffff || end > out.length) break;
    view.setUint32(end - 4, crc32(out.subarray(offset + 4, end - 4)));
    offset = end;
  }
  return out;
}

/** Offset of the first chunk of the given type (its length field). */
function chunkOffset(bytes: Uint8Array, type: string): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    if (Buffer.from(bytes.subarray(offset + 4, offset + 8)).toString("latin1") === type) return offset;
    offset += 12 + view.getUint32(offset);
  }
  throw new Error(`no ${type} chunk`);
}

function noiseRgba(seed: number, width: number, height: number): Uint8Array {
  const rnd = mulberry32(seed);
  return Uint8Array.from({ length: width * height * 4 }, () => Math.floor(rnd() * 256));
}
// #endregion

describe("encodePng / decodePng round trip", () => {
  it("gives back the exact pixels, alpha included", () => {
    const bytes = encodePng(noiseRgba(1, 3, 3), 3, 3);
    expect(bytes.byteLength).toBe(bytes.buffer.byteLength);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer(),
        (width, height, seed) => {
          const rgba = noiseRgba(seed, width, height);
          const decoded = decodePng(encodePng(rgba, width, height));
          expect(decoded).toEqual({ width, height, rgba });
        },
      ),
      { numRuns: 60 },
    );
  });

  it("encodes what pngjs decodes to the same pixels, at the largest side too", () => {
    for (const [width, height] of [
      [1, 1],
      [64, 64],
      [2048, 3],
      [5, 2048],
    ] as const) {
      const rgba = noiseRgba(width * 31 + height, width, height);
      const bytes = encodePng(rgba, width, height);
      expect(Buffer.from(referenceDecode(bytes).data).equals(Buffer.from(rgba))).toBe(true);
      expect(pngPHash(bytes)).toBe(imagePHash(rgba, width, height));
    }
  });

  it("accepts a Uint8ClampedArray and a Buffer", () => {
    const rgba = noiseRgba(7, 9, 4);
    const bytes = encodePng(new Uint8ClampedArray(rgba), 9, 4);
    expect(decodePng(Buffer.from(bytes)).rgba).toEqual(rgba);
  });

  it("refuses sizes and buffers that are not an image", () => {
    for (const [width, height, length] of [
      [0, 1, 0],
      [2049, 1, 2049 * 4],
      [1.5, 2, 12],
      [2, 2, 15],
    ] as const) {
      expect(() => encodePng(new Uint8Array(length), width, height)).toThrow(PngEncodeError);
    }
    expect(() => encodePng([1, 2, 3, 4] as unknown as Uint8Array, 1, 1)).toThrow(PngEncodeError);
  });
});

describe("decodePng: every colour type, as pngjs decodes it", () => {
  const size = { width: 37, height: 23 };
  const cases: { name: string; spec: Omit<PngSpec, "width" | "height" | "sample"> }[] = [
    ...[1, 2, 4, 8].map((depth) => ({ name: `gray ${depth}-bit`, spec: { depth, colorType: 0 } })),
    { name: "gray 8-bit with a tRNS key", spec: { depth: 8, colorType: 0, trns: [0, 128] } },
    { name: "gray 2-bit with a tRNS key", spec: { depth: 2, colorType: 0, trns: [0, 1] } },
    { name: "gray+alpha 8-bit", spec: { depth: 8, colorType: 4 } },
    { name: "RGB 8-bit", spec: { depth: 8, colorType: 2 } },
    { name: "RGB 8-bit with a tRNS key", spec: { depth: 8, colorType: 2, trns: [0, 128, 0, 128, 0, 128] } },
    { name: "RGBA 8-bit", spec: { depth: 8, colorType: 6 } },
    ...[1, 2, 4, 8].map((depth) => ({
      name: `palette ${depth}-bit`,
      spec: { depth, colorType: 3, plte: paletteOf(2 ** depth) },
    })),
    {
      name: "palette 4-bit with tRNS alpha for some entries",
      spec: { depth: 4, colorType: 3, plte: paletteOf(16), trns: [0, 40, 128, 255, 7] },
    },
    ...[0, 2, 3, 4, 6].map((colorType) => ({
      name: `Adam7-interlaced 8-bit colour type ${colorType}`,
      spec: {
        depth: 8,
        colorType,
        interlace: 1 as const,
        ...(colorType === 3 ? { plte: paletteOf(256) } : {}),
      },
    })),
  ];

  function paletteOf(entries: number): number[][] {
    const rnd = mulberry32(entries);
    return Array.from({ length: entries }, () => [0, 0, 0].map(() => Math.floor(rnd() * 256)));
  }

  for (const { name, spec } of cases) {
    it(name, () => {
      for (const seed of [1, 2, 3]) {
        const full: PngSpec = { ...size, ...spec, sample: picture(seed, spec.depth), filterSeed: seed };
        if (spec.trns && spec.colorType !== 3) {
          // Put the key colour on some pixels so that transparency shows.
          const key = spec.trns.filter((_, i) => i % 2 === 1);
          const base = full.sample;
          full.sample = (x, y, c) => ((x + y) % 5 === 0 ? key[c]! : base(x, y, c));
        }
        expectSameAsPngjs(buildPng(full), spec.trns !== undefined && spec.colorType !== 3);
      }
    });
  }

  it("PNGs written by pngjs (its own filter choices), every colour type", () => {
    for (const colorType of [0, 2, 4, 6] as const) {
      const png = new PNG({ width: 50, height: 30 });
      png.data = Buffer.from(noiseRgba(colorType + 10, 50, 30));
      const bytes = new Uint8Array(PNG.sync.write(png, { colorType, inputHasAlpha: true }));
      expectSameAsPngjs(bytes);
    }
  });

  it("an RGBA image with varied alpha hashes like imagePHash of its pixels", () => {
    const rgba = noiseRgba(99, 100, 80);
    expect(pngPHash(encodePng(rgba, 100, 80))).toBe(imagePHash(rgba, 100, 80));
  });

  it("skips ancillary chunks, even a compressed one that would inflate to gigabytes", () => {
    const spec: PngSpec = { ...size, depth: 8, colorType: 2, sample: picture(5, 8) };
    const bomb = new Uint8Array(deflateSync(Buffer.alloc(32 * 1024 * 1024)));
    const withChunks = buildPng({
      ...spec,
      extraChunks: [
        chunk("tEXt", new TextEncoder().encode("parameters\0a cat, steps: 20")),
        chunk("iCCP", concat([new TextEncoder().encode("icc\0"), Uint8Array.of(0), bomb])),
        chunk("zzZz", Uint8Array.of(1, 2, 3)),
      ],
    });
    expect(decodePng(withChunks)).toEqual(decodePng(buildPng(spec)));
  });

  it("reads a palette index past the palette as opaque black, as Go does", () => {
    const bytes = buildPng({
      width: 4,
      height: 1,
      depth: 2,
      colorType: 3,
      plte: [
        [10, 20, 30],
        [40, 50, 60],
      ],
      trns: [100],
      sample: (x) => x,
    });
    expect(Array.from(decodePng(bytes).rgba)).toEqual([
      10, 20, 30, 100, 40, 50, 60, 255, 0, 0, 0, 255, 0, 0, 0, 255,
    ]);
  });
});

describe("decodePng refuses what it cannot read, with a reason", () => {
  const valid = buildPng({ width: 30, height: 20, depth: 8, colorType: 2, sample: picture(1, 8) });
  const idat = chunkOffset(valid, "IDAT");

  it("not a PNG", () => {
    expectReason(new TextEncoder().encode("hello, this is not an image"), "not_png");
    expectReason(new Uint8Array(0), "not_png");
    expectReason(valid.subarray(0, 5), "not_png");
    const jpg = jpeg.encode({ width: 8, height: 8, data: Buffer.from(noiseRgba(1, 8, 8)) }, 90).data;
    expectReason(new Uint8Array(jpg), "not_png");
    expectReason("‰PNG" as unknown, "not_png");
    expectReason([...valid] as unknown, "not_png");
  });

  it("truncated anywhere after the signature", () => {
    for (const cut of [8, 20, 33, idat + 4, idat + 30, valid.length - 12, valid.length - 1]) {
      expectReason(valid.subarray(0, cut), "truncated");
    }
  });

  it("corrupt: a bad CRC, a flipped bit in the image data, a broken header", () => {
    const badCrc = Uint8Array.from(valid);
    badCrc[idat + 8 + 10]! ^= 0x01;
    expectReason(badCrc, "corrupt");
    // The same flip with its CRC fixed reaches the zlib stream (bad deflate data or Adler-32).
    for (const position of [3, 10, 50, 200]) {
      const flipped = Uint8Array.from(valid);
      flipped[idat + 8 + position]! ^= 0x10;
      expectReason(fixCrcs(flipped), "corrupt");
    }
    const badDepth = fixCrcs(Uint8Array.from(valid).fill(3, 24, 25));
    expectReason(badDepth, "corrupt");
    const zeroWidth = fixCrcs(Uint8Array.from(valid).fill(0, 16, 20));
    expectReason(zeroWidth, "corrupt");
    const noIhdr = concat([SIGNATURE, chunk("IDAT", Uint8Array.of(1)), chunk("IEND")]);
    expectReason(noIhdr, "corrupt");
    const noIdat = concat([SIGNATURE, ihdr(2, 2, 8, 2), chunk("IEND")]);
    expectReason(noIdat, "corrupt");
  });

  it("corrupt: more or less image data than the header calls for", () => {
    const spec: PngSpec = { width: 30, height: 20, depth: 8, colorType: 2, sample: picture(1, 8) };
    const data = imageData(spec);
    const more = new Uint8Array(deflateSync(concat([data, new Uint8Array(1)])));
    expect(decodeError(buildPng(spec, more)).shortMessage).toMatch(/more image data/);
    const less = new Uint8Array(deflateSync(data.subarray(0, data.length - 1)));
    expect(decodeError(buildPng(spec, less)).reason).toBe("corrupt");
    const noAdler = new Uint8Array(deflateSync(data)).subarray(0, -4);
    expectReason(buildPng(spec, noAdler), "corrupt");
    // Well-formed zlib data (right length, right Adler-32) with an unknown scanline filter type.
    const badFilter = Uint8Array.from(data);
    badFilter[(data.length / 20) * 3] = 7;
    const error = decodeError(buildPng(spec, new Uint8Array(deflateSync(badFilter))));
    expect(error.reason).toBe("corrupt");
    expect(error.details).toMatch(/filter/i);
  });

  it("corrupt: palette and transparency chunks that do not fit the image", () => {
    const sample = () => 0;
    expectReason(buildPng({ width: 4, height: 4, depth: 8, colorType: 3, sample }), "corrupt");
    const tooManyEntries = { width: 4, height: 4, depth: 1, colorType: 3, sample, plte: [[1, 2, 3]] };
    expectReason(
      buildPng({
        ...tooManyEntries,
        plte: [
          [0, 0, 0],
          [0, 0, 0],
          [0, 0, 0],
        ],
      }),
      "corrupt",
    );
    expectReason(buildPng({ ...tooManyEntries, trns: [1, 2] }), "corrupt");
    expectReason(buildPng({ width: 4, height: 4, depth: 8, colorType: 6, sample, trns: [0, 1] }), "corrupt");
    expectReason(
      buildPng({ width: 4, height: 4, depth: 8, colorType: 0, sample, plte: [[1, 2, 3]] }),
      "corrupt",
    );
  });

  it("too large: a tiny file that declares a huge image is refused before inflating", () => {
    for (const [width, height] of [
      [2049, 1],
      [1, 2049],
      [100_000, 100_000],
      [0xffffffff, 0xffffffff],
    ] as const) {
      const huge = concat([
        SIGNATURE,
        ihdr(width, height, 8, 6),
        chunk("IDAT", Uint8Array.of(0x78, 1)),
        chunk("IEND"),
      ]);
      expect(decodeError(huge).reason).toBe("too_large");
    }
    expectReason(new Uint8Array(MAX_PNG_BYTES + 1), "too_large");
  });

  it("corrupt, not out of memory: image data that inflates far past the declared size", () => {
    const bomb = new Uint8Array(deflateSync(Buffer.alloc(64 * 1024 * 1024)));
    const bytes = concat([SIGNATURE, ihdr(2048, 2048, 8, 6), chunk("IDAT", bomb), chunk("IEND")]);
    expect(decodeError(bytes).shortMessage).toMatch(/more image data/);
  });

  it("unsupported: 16-bit samples and interlaced images of under 8 bits", () => {
    for (const colorType of [0, 2, 4, 6]) {
      const bytes = buildPng({ width: 6, height: 5, depth: 16, colorType, sample: picture(2, 16) });
      expect(referenceDecode(bytes).width).toBe(6);
      const error = decodeError(bytes);
      expect(error.reason).toBe("unsupported");
      expect(error.shortMessage).toMatch(/16-bit/);
    }
    const interlaced = buildPng({
      width: 9,
      height: 9,
      depth: 1,
      colorType: 0,
      interlace: 1,
      sample: () => 1,
    });
    expectReason(interlaced, "unsupported");
  });

  it("never throws anything but PngDecodeError, on random bytes or mutated PNGs", () => {
    const isDecodeError = (bytes: Uint8Array) => {
      try {
        decodePng(bytes);
      } catch (error) {
        if (!(error instanceof PngDecodeError)) throw error;
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), isDecodeError), { numRuns: 300 });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (tail) => isDecodeError(concat([SIGNATURE, tail]))),
      { numRuns: 300 },
    );
    const samples = [
      valid,
      buildPng({ width: 13, height: 7, depth: 2, colorType: 3, plte: [[1, 2, 3]], sample: () => 2 }),
      buildPng({ width: 13, height: 7, depth: 8, colorType: 4, interlace: 1, sample: picture(3, 8) }),
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...samples),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.option(fc.nat()),
        (png, edits, fix, cut) => {
          let bytes: Uint8Array = Uint8Array.from(png);
          for (const [position, value] of edits) bytes[8 + (position % (bytes.length - 8))] = value;
          if (fix) bytes = fixCrcs(bytes);
          if (cut !== null) bytes = bytes.subarray(0, cut % (bytes.length + 1));
          isDecodeError(bytes);
        },
      ),
      { numRuns: 500 },
    );
  });
});
