import { imagePHash, MAX_IMAGE_SIDE } from "@crynux/tasks";
import { PNG } from "pngjs";

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Why bytes were not accepted as an SD result image. */
export type PngProblem = { ok: false; reason: string };

/** Whether `bytes` start with the 8-byte PNG signature. */
export function hasPngSignature(bytes: Uint8Array): boolean {
  return bytes.length >= SIGNATURE.length && SIGNATURE.every((b, i) => bytes[i] === b);
}

/**
 * The pHash of a PNG image as nodes compute it, or why the bytes are not an acceptable image.
 * The header's dimensions are checked before decoding: a few hundred bytes of PNG can declare an
 * image of gigabytes, and the decoder would allocate all of it.
 */
export function pngPHash(bytes: Uint8Array): { ok: true; pHash: bigint } | PngProblem {
  if (!hasPngSignature(bytes)) return { ok: false, reason: "not a PNG file (bad signature)" };
  // The first chunk must be IHDR: 4-byte length, "IHDR", then width and height (big-endian uint32).
  if (bytes.length < 24 || String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") {
    return { ok: false, reason: "not a PNG file (no IHDR chunk)" };
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  if (width === 0 || height === 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE) {
    return {
      ok: false,
      reason: `image is ${width}x${height}; each side must be between 1 and ${MAX_IMAGE_SIDE}`,
    };
  }
  let decoded: { width: number; height: number; data: Buffer };
  try {
    decoded = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (error) {
    return { ok: false, reason: `the PNG cannot be decoded (${(error as Error).message})` };
  }
  // pngjs expands every colour type and bit depth to 8-bit RGBA, the input imagePHash takes.
  const pixels = new Uint8Array(decoded.data.buffer, decoded.data.byteOffset, decoded.data.byteLength);
  return { ok: true, pHash: imagePHash(pixels, decoded.width, decoded.height) };
}
