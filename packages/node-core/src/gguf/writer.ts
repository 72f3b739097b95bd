import { randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { GgufFormatError } from "../errors.js";
import { alignUp, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, tensorByteLength } from "./reader.js";
import { type GgufArray, type GgufScalarType, type GgufValue, GgufValueTypeId } from "./types.js";

/** A tensor to write: its shape and type, and its bytes as a buffer or as a stream of chunks. */
export type GgufTensorSource = {
  name: string;
  /** GGML order: `dims[0]` is the row length. */
  dims: number[];
  type: number;
  /** The bytes, or a function that streams them (called once, when the tensor's turn comes). */
  data: Uint8Array | (() => AsyncIterable<Uint8Array> | Iterable<Uint8Array>);
};

/** What {@link writeGguf} writes. */
export type WriteGgufParameters = {
  /** Metadata in the order it is to be written. `general.alignment` (u32), if present, sets the alignment. */
  metadata: Iterable<readonly [string, GgufValue]>;
  tensors: readonly GgufTensorSource[];
  /** Called after each tensor with the bytes written so far and the total. */
  onProgress?: (progress: { tensor: string; bytesWritten: number; totalBytes: number }) => void;
};

/** Serializes metadata and the tensor directory into a growable buffer. */
class HeaderWriter {
  private buffer = Buffer.allocUnsafe(1 << 16);
  length = 0;

  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + bytes));
    this.buffer.copy(next, 0, 0, this.length);
    this.buffer = next;
  }

  u32(value: number): void {
    this.reserve(4);
    this.buffer.writeUInt32LE(value, this.length);
    this.length += 4;
  }

  u64(value: bigint | number): void {
    this.reserve(8);
    this.buffer.writeBigUInt64LE(BigInt(value), this.length);
    this.length += 8;
  }

  string(value: string): void {
    const bytes = Buffer.from(value, "utf8");
    this.u64(bytes.length);
    this.reserve(bytes.length);
    bytes.copy(this.buffer, this.length);
    this.length += bytes.length;
  }

  scalar(type: GgufScalarType, value: unknown, key: string): void {
    const fail = (): never => {
      throw new GgufFormatError(`Metadata ${key}: ${String(value)} is not a valid ${type}.`);
    };
    const int = (min: number, max: number) => {
      if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) fail();
      return value as number;
    };
    switch (type) {
      case "u8":
        this.reserve(1);
        this.buffer.writeUInt8(int(0, 0xff), this.length);
        this.length += 1;
        return;
      case "i8":
        this.reserve(1);
        this.buffer.writeInt8(int(-0x80, 0x7f), this.length);
        this.length += 1;
        return;
      case "u16":
        this.reserve(2);
        this.buffer.writeUInt16LE(int(0, 0xffff), this.length);
        this.length += 2;
        return;
      case "i16":
        this.reserve(2);
        this.buffer.writeInt16LE(int(-0x8000, 0x7fff), this.length);
        this.length += 2;
        return;
      case "u32":
        this.u32(int(0, 0xffff_ffff));
        return;
      case "i32":
        this.reserve(4);
        this.buffer.writeInt32LE(int(-0x8000_0000, 0x7fff_ffff), this.length);
        this.length += 4;
        return;
      case "f32":
        if (typeof value !== "number") fail();
        this.reserve(4);
        this.buffer.writeFloatLE(value as number, this.length);
        this.length += 4;
        return;
      case "f64":
        if (typeof value !== "number") fail();
        this.reserve(8);
        this.buffer.writeDoubleLE(value as number, this.length);
        this.length += 8;
        return;
      case "bool":
        if (typeof value !== "boolean") fail();
        this.reserve(1);
        this.buffer.writeUInt8(value ? 1 : 0, this.length);
        this.length += 1;
        return;
      case "string":
        if (typeof value !== "string") fail();
        this.string(value as string);
        return;
      case "u64":
        if (typeof value !== "bigint" || value < 0n || value >= 1n << 64n) fail();
        this.u64(value as bigint);
        return;
      case "i64":
        if (typeof value !== "bigint" || value < -(1n << 63n) || value >= 1n << 63n) fail();
        this.reserve(8);
        this.buffer.writeBigInt64LE(value as bigint, this.length);
        this.length += 8;
        return;
    }
  }

  array(array: GgufArray, key: string): void {
    this.u32(GgufValueTypeId[array.itemType]);
    this.u64(array.value.length);
    for (const item of array.value) {
      if (array.itemType === "array") {
        if (typeof item !== "object")
          throw new GgufFormatError(`Metadata ${key}: a nested array item is not an array.`);
        this.array(item, key);
      } else {
        this.scalar(array.itemType, item, key);
      }
    }
  }

  value(value: GgufValue, key: string): void {
    this.u32(GgufValueTypeId[value.type]);
    if (value.type === "array") this.array(value, key);
    else this.scalar(value.type, value.value, key);
  }

  padTo(alignment: number): void {
    const target = alignUp(this.length, alignment);
    this.reserve(target - this.length);
    this.buffer.fill(0, this.length, target);
    this.length = target;
  }

  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

/**
 * Writes a GGUF v3 file, streaming tensor data one tensor (and one chunk) at a time, so a model larger
 * than memory can be written. The file appears atomically: it is written under a temporary name and
 * renamed when complete, so a crash never leaves a truncated model where a complete one is expected.
 *
 * @returns the size of the file written.
 * @throws {GgufFormatError} when a tensor's bytes do not match its shape and type, or a value its type.
 */
export async function writeGguf(
  path: string,
  parameters: WriteGgufParameters,
): Promise<{ bytesWritten: number }> {
  const metadata = [...parameters.metadata];
  const alignmentEntry = metadata.find(([key]) => key === "general.alignment")?.[1];
  const alignment = alignmentEntry?.type === "u32" ? alignmentEntry.value : GGUF_DEFAULT_ALIGNMENT;
  if (alignment < 1 || (alignment & (alignment - 1)) !== 0) {
    throw new GgufFormatError(`general.alignment ${alignment} is not a power of two.`);
  }

  const header = new HeaderWriter();
  header.u32(GGUF_MAGIC);
  header.u32(3);
  header.u64(parameters.tensors.length);
  header.u64(metadata.length);
  const keys = new Set<string>();
  for (const [key, value] of metadata) {
    if (keys.has(key)) throw new GgufFormatError(`The metadata key ${key} is given twice.`);
    keys.add(key);
    header.string(key);
    header.value(value, key);
  }
  const sizes: number[] = [];
  let offset = 0;
  const names = new Set<string>();
  for (const tensor of parameters.tensors) {
    if (names.has(tensor.name)) throw new GgufFormatError(`The tensor ${tensor.name} is given twice.`);
    names.add(tensor.name);
    const size = tensorByteLength(tensor.type, tensor.dims);
    sizes.push(size);
    header.string(tensor.name);
    header.u32(tensor.dims.length);
    for (const dim of tensor.dims) header.u64(dim);
    header.u32(tensor.type);
    header.u64(offset);
    offset = alignUp(offset + size, alignment);
  }
  header.padTo(alignment);
  const totalBytes = header.length + offset;

  const temporary = `${path}.${randomBytes(6).toString("hex")}.partial`;
  const handle = await open(temporary, "w");
  let position = 0;
  const write = async (bytes: Uint8Array) => {
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position);
      done += bytesWritten;
      position += bytesWritten;
    }
  };
  try {
    await write(header.bytes());
    const padding = new Uint8Array(alignment);
    for (const [index, tensor] of parameters.tensors.entries()) {
      const expected = sizes[index]!;
      let written = 0;
      const chunks = tensor.data instanceof Uint8Array ? [tensor.data] : tensor.data();
      for await (const chunk of chunks) {
        written += chunk.length;
        if (written > expected) break;
        await write(chunk);
      }
      if (written !== expected) {
        throw new GgufFormatError(
          `Tensor ${tensor.name} has ${written > expected ? "more" : "fewer"} bytes than its shape needs.`,
          {
            details: `${expected} bytes expected for dims [${tensor.dims.join(", ")}] of type ${tensor.type}.`,
          },
        );
      }
      const pad = alignUp(expected, alignment) - expected;
      if (pad > 0) await write(padding.subarray(0, pad));
      parameters.onProgress?.({ tensor: tensor.name, bytesWritten: position, totalBytes });
    }
    await handle.sync();
    await handle.close();
    await rename(temporary, path);
  } catch (error) {
    await handle.close().catch(() => {});
    await rm(temporary, { force: true });
    throw error;
  }
  return { bytesWritten: position };
}
