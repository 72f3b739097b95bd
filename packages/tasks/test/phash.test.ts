import jpeg from "jpeg-js";
import { PNG } from "pngjs";
import { describe, expect, it } from "vitest";
import { CrynuxError } from "../src/errors.js";
import {
  hammingDistance,
  imagePHash,
  PHashInputError,
  pHashDct8x8,
  pHashFromHex,
  pHashGray64,
  pHashMedian,
  pHashToHex,
  sdResultFromPHashes,
  sdResultsMatch,
} from "../src/phash.js";

// #region images (procedural pictures, all from a seeded PRNG)
type Rgba = [number, number, number, number];
type Picture = { width: number; height: number; pixels: Uint8Array };
/** A scene: colour at continuous coordinates (u, v) in [0, 1), so it can be drawn at any size. */
type Scene = (u: number, v: number) => Rgba;

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

const byte = (x: number): number => Math.max(0, Math.min(255, Math.round(x)));

/** Draws a scene, averaging `ss` x `ss` samples per pixel (anti-aliasing) when `ss` > 1. */
function draw(scene: Scene, width: number, height: number, ss = 1): Picture {
  const pixels = new Uint8Array(width * height * 4);
  const acc = [0, 0, 0, 0];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      acc.fill(0);
      for (let sy = 0; sy < ss; sy++) {
        for (let sx = 0; sx < ss; sx++) {
          const c = scene((x + (sx + 0.5) / ss) / width, (y + (sy + 0.5) / ss) / height);
          for (let i = 0; i < 4; i++) acc[i]! += c[i]!;
        }
      }
      pixels.set(
        acc.map((v) => byte(v / (ss * ss))),
        (y * width + x) * 4,
      );
    }
  }
  return { width, height, pixels };
}

/** Independent random bytes per pixel (not resolution independent); alpha 255 unless `alpha`. */
function noisePicture(seed: number, width: number, height: number, alpha = false): Picture {
  const rnd = mulberry32(seed);
  const pixels = new Uint8Array(width * height * 4);
  for (let i = 0; i < pixels.length; i++) {
    pixels[i] = i % 4 === 3 && !alpha ? 255 : Math.floor(rnd() * 256);
  }
  return { width, height, pixels };
}

const gradient =
  (angle: number, from: Rgba, to: Rgba): Scene =>
  (u, v) => {
    const t = Math.min(1, Math.max(0, 0.5 + (u - 0.5) * Math.cos(angle) + (v - 0.5) * Math.sin(angle)));
    return from.map((f, i) => f + (to[i]! - f) * t) as Rgba;
  };

const checkerboard =
  (cells: number, a: Rgba, b: Rgba, angle = 0): Scene =>
  (u, v) => {
    const x = (u - 0.5) * Math.cos(angle) - (v - 0.5) * Math.sin(angle);
    const y = (u - 0.5) * Math.sin(angle) + (v - 0.5) * Math.cos(angle);
    return (Math.floor(x * cells + 100) + Math.floor(y * cells + 100)) % 2 === 0 ? a : b;
  };

/** A smooth two-colour blend along wavy curves. */
const waves =
  (fu: number, fv: number, phase: number, from: Rgba, to: Rgba): Scene =>
  (u, v) => {
    const t = 0.5 + 0.25 * Math.sin(fu * u + phase) + 0.25 * Math.cos(fv * v - phase * u);
    return from.map((f, i) => f + (to[i]! - f) * t) as Rgba;
  };

/** Smooth value noise: bilinear interpolation of a seeded random grid, one grid per channel. */
function valueNoise(seed: number, grid: number): Scene {
  const rnd = mulberry32(seed);
  const lattice = Array.from({ length: 3 }, () =>
    Array.from({ length: (grid + 1) * (grid + 1) }, () => rnd() * 255),
  );
  return (u, v) => {
    const gx = u * grid;
    const gy = v * grid;
    const x0 = Math.floor(gx);
    const y0 = Math.floor(gy);
    const fx = gx - x0;
    const fy = gy - y0;
    const c = lattice.map((l) => {
      const at = (x: number, y: number) => l[y * (grid + 1) + x]!;
      const top = at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx;
      const bottom = at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx;
      return top * (1 - fy) + bottom * fy;
    });
    return [c[0]!, c[1]!, c[2]!, 255];
  };
}

/** Random discs over a gradient; `alpha` makes the background partly transparent. */
function circles(seed: number, count: number, alpha = false): Scene {
  const rnd = mulberry32(seed);
  const background = gradient(
    rnd() * 6.28,
    [rnd() * 255, rnd() * 255, rnd() * 255, alpha ? 40 : 255],
    [rnd() * 255, rnd() * 255, rnd() * 255, alpha ? 200 : 255],
  );
  const discs = Array.from({ length: count }, () => ({
    x: rnd(),
    y: rnd(),
    r: 0.05 + rnd() * 0.25,
    c: [rnd() * 255, rnd() * 255, rnd() * 255, alpha ? 100 + rnd() * 155 : 255] as Rgba,
  }));
  return (u, v) => {
    let c = background(u, v);
    for (const d of discs) if ((u - d.x) ** 2 + (v - d.y) ** 2 < d.r * d.r) c = d.c;
    return c;
  };
}
function withAlpha(p: Picture, alpha: number): Picture {
  for (let i = 3; i < p.pixels.length; i += 4) p.pixels[i] = alpha;
  return p;
}
// #endregion images

// #region vectors
/**
 * Pictures with the hashes computed by Go: each picture was written as a PNG (8-bit RGB when opaque,
 * 8-bit RGBA otherwise), decoded by Go's image/png (*image.RGBA / *image.NRGBA) and hashed by
 * goimagehash v1.1.0's PerceptionHash steps with github.com/nfnt/resize 83c6a99 (Go 1.19, amd64).
 */
const GO_VECTORS: readonly (readonly [name: string, make: () => Picture, goHash: string])[] = [
  ["solid gray 100x100", () => draw(() => [128, 128, 128, 255], 100, 100), "0x8000000000000000"],
  ["solid red 64x64", () => draw(() => [200, 10, 10, 255], 64, 64), "0x8000000000000000"],
  ["fully transparent 80x80", () => withAlpha(noisePicture(3, 80, 80), 0), "0x0000000000000000"],
  ["pixel noise 64x64", () => noisePicture(1, 64, 64), "0x9b0f055656d7ab41"],
  ["pixel noise with alpha 64x64", () => noisePicture(2, 64, 64, true), "0xc3b5f87c8dcc1134"],
  ["circles with alpha 64x64", () => draw(circles(3, 5, true), 64, 64), "0x8db28fe0f1c368b1"],
  ["pixel noise 1x1", () => noisePicture(4, 1, 1), "0x8000000000000000"],
  ["pixel noise 3x2", () => noisePicture(5, 3, 2), "0xf0d8ed27892712dc"],
  ["pixel noise 1x64", () => noisePicture(6, 1, 64), "0x8080808000000000"],
  ["pixel noise 63x65", () => noisePicture(7, 63, 65), "0xd03897e1de86e199"],
  ["pixel noise with alpha 65x63", () => noisePicture(8, 65, 63, true), "0xbf2c846d80dac36b"],
  ["pixel noise with alpha 31x47", () => noisePicture(9, 31, 47, true), "0x9670007bfe80f9ea"],
  ["pixel noise 640x480", () => noisePicture(10, 640, 480), "0xaac5aec8973123f2"],
  ["pixel noise with alpha 129x1000", () => noisePicture(11, 129, 1000, true), "0xe2943bed806ed51a"],
  [
    "gradient 100x100",
    () => draw(gradient(0.7, [10, 40, 200, 255], [250, 220, 30, 255]), 100, 100),
    "0xaa7efd7af4285020",
  ],
  [
    "gradient 2000x30",
    () => draw(gradient(0.1, [0, 0, 0, 255], [255, 255, 255, 255]), 2000, 30),
    "0xaa7ffd2ad5028d08",
  ],
  [
    "checkerboard 128x128",
    () => draw(checkerboard(8, [255, 255, 255, 255], [0, 0, 0, 255]), 128, 128),
    "0xaa55aa55aa55aa55",
  ],
  [
    "checkerboard 300x200",
    () => draw(checkerboard(6, [240, 240, 240, 255], [20, 20, 60, 255]), 300, 200),
    "0xaa54805408548001",
  ],
  [
    "stripes 90x90",
    () => draw((u) => (Math.floor(u * 5) % 2 ? [250, 250, 250, 255] : [5, 5, 5, 255]), 90, 90),
    "0x8200000000000000",
  ],
  ["circles 200x300", () => draw(circles(12, 6), 200, 300), "0x99376ac631c2751d"],
  ["circles with alpha 333x222", () => draw(circles(13, 8, true), 333, 222), "0xc4b63ecc786a4969"],
  ["value noise 512x512", () => draw(valueNoise(14, 6), 512, 512), "0xe00d6a521fba30fb"],
  ["value noise 1000x700", () => draw(valueNoise(15, 9), 1000, 700), "0xa635169a09d2cbed"],
  [
    "half-transparent value noise 256x256",
    () => withAlpha(draw(valueNoise(16, 7), 256, 256), 128),
    "0xe9e619b25f49c930",
  ],
  ["circles 1024x1024", () => draw(circles(17, 10), 1024, 1024), "0xbff35b0746a1f040"],
];
// #endregion vectors

// ---------------------------------------------------------------------------------------------
// A slow, direct reference of the same algorithm, written from the formulas rather than the loops.
// ---------------------------------------------------------------------------------------------

/** nfnt/resize bilinear fixed-point weight of input `tap` (relative to `start`) for output `o`. */
function naiveWeights(inputSize: number, o: number): { start: number; weights: number[] } {
  const scale = inputSize / 64;
  const taps = 2 * Math.max(Math.ceil(scale), 1);
  const center = scale * (o + 0.5) - 0.5;
  const start = Math.trunc(center) - taps / 2 + 1;
  const weights: number[] = [];
  for (let i = 0; i < taps; i++) {
    const d = Math.abs((center - start - i) * Math.min(1 / scale, 1));
    weights.push(Math.floor(Math.max(0, 1 - d) * 256));
  }
  return { start, weights };
}

function naiveGray64(p: Picture): number[][] {
  const { width, height, pixels } = p;
  const px = (x: number, y: number, ch: number) => pixels[(y * width + x) * 4 + ch]!;
  if (width === 64 && height === 64) {
    return Array.from({ length: 64 }, (_, y) =>
      Array.from({ length: 64 }, (_, x) => {
        const [r, g, b] = [0, 1, 2].map((ch) => Math.floor((px(x, y, ch) * 257 * px(x, y, 3)) / 255));
        return 0.299 * Math.floor(r! / 257) + 0.587 * Math.floor(g! / 257) + 0.114 * Math.floor(b! / 256);
      }),
    );
  }
  const clampTo = (i: number, n: number) => Math.min(Math.max(i, 0), n - 1);
  const filter = (samples: (i: number) => number, n: number, o: number, inputSize: number) => {
    const { start, weights } = naiveWeights(inputSize, o);
    let acc = 0;
    let sum = 0;
    weights.forEach((w, i) => {
      acc += w * samples(clampTo(start + i, n));
      sum += w;
    });
    return Math.min(255, Math.floor(acc / sum));
  };
  // horizontal pass on premultiplied values: rows[y][X][ch]
  const rows = Array.from({ length: height }, (_, y) =>
    Array.from({ length: 64 }, (_, X) =>
      [0, 1, 2].map((ch) => filter((x) => Math.floor((px(x, y, ch) * px(x, y, 3)) / 255), width, X, width)),
    ),
  );
  return Array.from({ length: 64 }, (_, Y) =>
    Array.from({ length: 64 }, (_, X) => {
      const [r, g, b] = [0, 1, 2].map((ch) => filter((y) => rows[y]![X]![ch]!, height, Y, height));
      return 0.299 * r! + 0.587 * g! + 0.114 * b!;
    }),
  );
}

/** Unscaled 2-D DCT-II from its definition, top-left 8x8, row-major. */
function naiveDct8x8(gray: number[][]): number[] {
  const out: number[] = [];
  for (let k = 0; k < 8; k++) {
    for (let l = 0; l < 8; l++) {
      let s = 0;
      for (let y = 0; y < 64; y++) {
        for (let x = 0; x < 64; x++) {
          s +=
            gray[y]![x]! *
            Math.cos((Math.PI * (y + 0.5) * k) / 64) *
            Math.cos((Math.PI * (x + 0.5) * l) / 64);
        }
      }
      out.push(s);
    }
  }
  return out;
}

/** The hash from the slow reference, and whether a coefficient is too close to the median to tell. */
function naiveHash(p: Picture): { hash: bigint; ambiguous: boolean } {
  const coefficients = naiveDct8x8(naiveGray64(p));
  const sorted = [...coefficients].sort((a, b) => a - b);
  const median = (sorted[31]! + sorted[32]!) / 2;
  const scale = Math.max(...coefficients.map(Math.abs));
  return {
    hash: coefficients.reduce((h, c, i) => (c > median ? h | (1n << BigInt(63 - i)) : h), 0n),
    ambiguous: coefficients.some((c) => Math.abs(c - median) <= 1e-9 * scale),
  };
}

const pngRoundTrip = (p: Picture): Picture => {
  const png = new PNG({ width: p.width, height: p.height });
  png.data = Buffer.from(p.pixels);
  const back = PNG.sync.read(PNG.sync.write(png));
  return { width: back.width, height: back.height, pixels: new Uint8Array(back.data) };
};

const jpegRoundTrip = (p: Picture, quality: number): Picture => {
  const encoded = jpeg.encode({ data: Buffer.from(p.pixels), width: p.width, height: p.height }, quality);
  const back = jpeg.decode(encoded.data, { useTArray: true, formatAsRGBA: true });
  return { width: back.width, height: back.height, pixels: new Uint8Array(back.data) };
};

const hashOf = (p: Picture) => imagePHash(p.pixels, p.width, p.height);

describe("imagePHash against Go (goimagehash v1.1.0 + nfnt/resize)", () => {
  it.each(GO_VECTORS.map(([name, make, hash]) => ({ name, make, hash })))(
    "$name hashes to $hash",
    ({ make, hash }) => {
      const p = make();
      expect(pHashToHex(hashOf(p))).toBe(hash);
    },
  );
});

describe("imagePHash against a slow reference", () => {
  const sizes: [number, number][] = [
    [1, 1],
    [2, 3],
    [7, 5],
    [17, 40],
    [63, 64],
    [64, 63],
    [64, 64],
    [65, 65],
    [80, 33],
    [100, 100],
    [127, 129],
    [128, 64],
    [150, 90],
    [200, 200],
    [256, 256],
    [300, 170],
    [333, 444],
    [512, 384],
    [45, 700],
    [640, 480],
  ];
  it.each(sizes.map(([w, h], i) => ({ w, h, i })))("random $w x $h picture", ({ w, h, i }) => {
    const p =
      i % 3 === 0 ? noisePicture(1000 + i, w, h, i % 2 === 0) : draw(circles(2000 + i, 6, i % 2 === 0), w, h);
    const gray = pHashGray64(p.pixels, p.width, p.height);
    expect(Array.from(gray)).toEqual(naiveGray64(p).flat());
    const naive = naiveHash(p);
    // A 1x1 picture is flat: its AC coefficients are 0 in the fast DCT but rounding noise in the
    // slow one, so the slow reference cannot tell their bits (the Go vectors cover such pictures).
    expect(naive.ambiguous).toBe(w * h === 1);
    if (!naive.ambiguous) expect(hashOf(p)).toBe(naive.hash);
  });

  it("DCT matches the DCT-II definition", () => {
    for (const seed of [1, 2, 3]) {
      const rnd = mulberry32(seed);
      const gray = Array.from({ length: 64 }, () => Array.from({ length: 64 }, () => rnd() * 255));
      const fast = pHashDct8x8(gray.flat());
      const slow = naiveDct8x8(gray);
      for (let i = 0; i < 64; i++)
        expect(Math.abs(fast[i]! - slow[i]!)).toBeLessThan(1e-9 * Math.max(1, Math.abs(slow[i]!)));
    }
  });

  it("does not modify the pixels", () => {
    const p = draw(circles(5, 4, true), 90, 70);
    const copy = p.pixels.slice();
    hashOf(p);
    expect(Buffer.from(p.pixels).equals(copy)).toBe(true);
  });

  it("accepts a Uint8ClampedArray (ImageData) the same as a Uint8Array", () => {
    const p = draw(valueNoise(9, 6), 120, 80);
    expect(imagePHash(new Uint8ClampedArray(p.pixels), 120, 80)).toBe(hashOf(p));
  });

  it("premultiplies alpha in 8 bits like nfnt's NRGBA path", () => {
    const p = draw(circles(11, 5, true), 100, 100);
    const premultiplied = p.pixels.slice();
    const opaque = p.pixels.slice();
    for (let i = 0; i < p.pixels.length; i += 4) {
      const a = p.pixels[i + 3]!;
      for (let c = 0; c < 3; c++) premultiplied[i + c] = Math.floor((p.pixels[i + c]! * a) / 255);
      premultiplied[i + 3] = 255;
      opaque[i + 3] = 255;
    }
    expect(imagePHash(premultiplied, 100, 100)).toBe(hashOf(p));
    expect(imagePHash(opaque, 100, 100)).not.toBe(hashOf(p));
    expect(imagePHash(new Uint8Array(p.pixels.length), 100, 100)).toBe(0n);
  });
});

describe("pHashMedian (goimagehash quickSelectMedian)", () => {
  it("averages the two middle values of an even-length list as s[k-1]/2 + s[k]/2", () => {
    expect(pHashMedian([1, 2, 3, 4])).toBe(2.5);
    expect(pHashMedian([4, 1, 3, 2])).toBe(2.5);
    expect(pHashMedian([5, 5, 5, 5])).toBe(5);
    expect(pHashMedian([1, 3, 2])).toBe(2);
    expect(pHashMedian([7])).toBe(7);
    expect(pHashMedian([2, 1])).toBe(1.5);
    // halves are added, not the sum halved: no overflow for huge values
    expect(pHashMedian([Number.MAX_VALUE, Number.MAX_VALUE, 0, Number.MAX_VALUE])).toBe(Number.MAX_VALUE);
  });

  it("equals the mean of the 32nd and 33rd smallest of 64 values, with ties", () => {
    for (let seed = 0; seed < 200; seed++) {
      const rnd = mulberry32(seed);
      const values = Array.from({ length: 64 }, () =>
        seed % 2 ? Math.floor(rnd() * 8) : rnd() * 1000 - 500,
      );
      const sorted = [...values].sort((a, b) => a - b);
      expect(pHashMedian(values)).toBe(sorted[31]! / 2 + sorted[32]! / 2);
    }
  });

  it("does not reorder its input", () => {
    const values = [3, 1, 2, 0];
    pHashMedian(values);
    expect(values).toEqual([3, 1, 2, 0]);
  });
});

describe("robustness of the hash", () => {
  const blend =
    (a: Scene, b: Scene): Scene =>
    (u, v) => {
      const x = a(u, v);
      const y = b(u, v);
      return x.map((c, i) => (c + y[i]!) / 2) as Rgba;
    };
  // Picture-like scenes: their low DCT coefficients are spread out, so the hash is stable. Flat
  // linear gradients and plain checkerboards are not: most of their 64 coefficients are about 0,
  // around the median, so any re-encoding flips many bits (they only take part in the last test).
  const scenes: [string, Scene][] = [
    ["waves", waves(5, 7, 1, [10, 40, 200, 255], [250, 220, 30, 255])],
    ["other waves", waves(9, 4, 2.5, [200, 20, 20, 255], [20, 200, 120, 255])],
    ["circles", circles(42, 7)],
    ["other circles", circles(4242, 9)],
    [
      "circles on a checkerboard",
      blend(circles(99, 6), checkerboard(7, [240, 240, 240, 255], [20, 20, 60, 255], 0.3)),
    ],
    ["noise 1", valueNoise(1, 5)],
    ["noise 2", valueNoise(2, 5)],
    ["noise 3", valueNoise(3, 8)],
  ];

  it("a PNG round trip keeps the hash", () => {
    const pictures = [
      ...scenes.map(([, scene]) => draw(scene, 256, 192)),
      draw(circles(8, 5, true), 130, 77),
    ];
    for (const p of pictures) {
      const back = pngRoundTrip(p);
      expect(Buffer.from(back.pixels).equals(p.pixels)).toBe(true);
      expect(hammingDistance(hashOf(back), hashOf(p))).toBe(0);
    }
  });

  it("a JPEG re-encode at quality 90 stays within distance 4", () => {
    for (const [name, scene] of scenes) {
      const p = draw(scene, 512, 512);
      const d = hammingDistance(hashOf(p), hashOf(jpegRoundTrip(p, 90)));
      expect(d, name).toBeLessThanOrEqual(4);
    }
  });

  it("the same scene drawn at 500x500, 520x520 or 1024x1024 stays within distance 4 of 512x512", () => {
    for (const [k, [name, scene]] of scenes.entries()) {
      const base = hashOf(draw(scene, 512, 512));
      for (const size of k % 4 === 0 ? [500, 520, 1024] : [500, 520]) {
        expect(
          hammingDistance(base, hashOf(draw(scene, size, size))),
          `${name} @${size}`,
        ).toBeLessThanOrEqual(4);
      }
    }
  });

  it("different scenes are more than 10 bits apart", () => {
    const more: [string, Scene][] = [
      ["gradient", gradient(0.7, [10, 40, 200, 255], [250, 220, 30, 255])],
      ["other gradient", gradient(2.9, [200, 20, 20, 255], [20, 200, 120, 255])],
      ["checkerboard", checkerboard(6, [240, 240, 240, 255], [20, 20, 60, 255])],
      ["rotated checkerboard", checkerboard(9, [200, 30, 30, 255], [30, 30, 200, 255], 1.1)],
    ];
    const hashes = [...scenes, ...more].map(
      ([name, scene]) => [name, hashOf(draw(scene, 512, 512))] as const,
    );
    hashes.push(["pixel noise 1", hashOf(noisePicture(1, 512, 512))]);
    hashes.push(["pixel noise 2", hashOf(noisePicture(2, 512, 512))]);
    for (let i = 0; i < hashes.length; i++) {
      for (let j = i + 1; j < hashes.length; j++) {
        const [a, ha] = hashes[i]!;
        const [b, hb] = hashes[j]!;
        expect(hammingDistance(ha, hb), `${a} vs ${b}`).toBeGreaterThan(10);
      }
    }
  });
});

describe("hex and SD results", () => {
  it("round-trips hashes through hex", () => {
    for (const h of [0n, 1n, 0xffn, 0x0123456789abcdefn, (1n << 64n) - 1n, 1n << 63n]) {
      const hex = pHashToHex(h);
      expect(hex).toMatch(/^0x[0-9a-f]{16}$/);
      expect(pHashFromHex(hex)).toBe(h);
    }
    expect(pHashToHex(0x0123456789abcdefn)).toBe("0x0123456789abcdef");
    expect(pHashFromHex("0xABCDEF0123456789")).toBe(0xabcdef0123456789n);
  });

  it("rejects bad hashes and hex", () => {
    for (const h of [-1n, 1n << 64n]) {
      expect(() => pHashToHex(h)).toThrow(PHashInputError);
      expect(() => hammingDistance(h, 0n)).toThrow(PHashInputError);
      expect(() => hammingDistance(0n, h)).toThrow(PHashInputError);
      expect(() => sdResultFromPHashes([0n, h])).toThrow(PHashInputError);
    }
    for (const hex of [
      "",
      "0x",
      "0x123",
      "0123456789abcdef",
      "0x0123456789abcdef00",
      "0x0123456789abcdeg",
      " 0x0123456789abcdef",
    ]) {
      expect(() => pHashFromHex(hex), hex).toThrow(PHashInputError);
    }
  });

  it("counts differing bits", () => {
    expect(hammingDistance(0n, 0n)).toBe(0);
    expect(hammingDistance(0n, (1n << 64n) - 1n)).toBe(64);
    expect(hammingDistance(1n << 63n, 1n)).toBe(2);
    expect(hammingDistance(0xf0f0n, 0x0ff0n)).toBe(8);
    expect(hammingDistance(0x8000000080000000n, 0n)).toBe(2);
  });

  it("builds and compares SD results", () => {
    const a = [0x0123456789abcdefn, 0xfedcba9876543210n];
    const result = sdResultFromPHashes(a);
    expect(result).toBe("0x0123456789abcdeffedcba9876543210");
    expect(sdResultFromPHashes([])).toBe("0x");
    expect(sdResultsMatch("0x", "0x")).toBe(true);
    expect(sdResultsMatch(result, result)).toBe(true);
    expect(sdResultsMatch(result, result.toUpperCase().replace("0X", "0x") as `0x${string}`)).toBe(true);

    // 4 bits off in the first hash, 0 in the second: a match under threshold 5, not under 4.
    const near = sdResultFromPHashes([a[0]! ^ 0xf000000000000000n, a[1]!]);
    expect(sdResultsMatch(result, near)).toBe(true);
    expect(sdResultsMatch(result, near, 4)).toBe(false);
    // 5 bits off in the second hash: no match.
    const far = sdResultFromPHashes([a[0]!, a[1]! ^ 0x1fn]);
    expect(sdResultsMatch(result, far)).toBe(false);
    expect(sdResultsMatch(result, far, 6)).toBe(true);

    expect(sdResultsMatch(result, sdResultFromPHashes([a[0]!]))).toBe(false);
    expect(sdResultsMatch("0x", result)).toBe(false);
    expect(sdResultsMatch("0x0123", "0x0123")).toBe(false);
    expect(() => sdResultsMatch("0xzz", "0xzz")).toThrow(PHashInputError);
    expect(() => sdResultsMatch(result, result, -1)).toThrow(PHashInputError);
    expect(() => sdResultsMatch(result, result, 1.5)).toThrow(PHashInputError);
  });
});

describe("input errors", () => {
  it("rejects bad sizes and buffers", () => {
    const bad: [Uint8Array, number, number][] = [
      [new Uint8Array(0), 0, 0],
      [new Uint8Array(4), 1, 0],
      [new Uint8Array(4), -1, -1],
      [new Uint8Array(4), 1.5, 1],
      [new Uint8Array(4), Number.NaN, 1],
      [new Uint8Array(4), Number.POSITIVE_INFINITY, 1],
      [new Uint8Array(3), 1, 1],
      [new Uint8Array(5), 1, 1],
      [new Uint8Array(64 * 64 * 3), 64, 64],
    ];
    for (const [pixels, w, h] of bad) {
      expect(() => imagePHash(pixels, w, h), `${w}x${h}`).toThrow(PHashInputError);
    }
    expect(() => imagePHash([1, 2, 3, 4] as unknown as Uint8Array, 1, 1)).toThrow(PHashInputError);
  });

  it("throws a CrynuxError named PHashInputError", () => {
    const error = (() => {
      try {
        imagePHash(new Uint8Array(1), 1, 1);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(CrynuxError);
    expect(error).toBeInstanceOf(PHashInputError);
    expect((error as Error).name).toBe("PHashInputError");
    expect((error as CrynuxError).shortMessage).toMatch(/expected 4/);
  });
});
