import { type FileHandle, open } from "node:fs/promises";
import { GgufFormatError } from "../errors.js";
import {
  GGML_BLOCK,
  type GgufArray,
  type GgufArrayItem,
  type GgufScalarType,
  type GgufTensorInfo,
  type GgufValue,
  GgufValueTypeId,
  ggmlTypeName,
  tensorElements,
} from "./types.js";

/** "GGUF" read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;
/** Alignment of the data section when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** The header of a GGUF file: metadata and tensor directory. Tensor data stays on disk. */
export type GgufFile = {
  path: string;
  version: number;
  /** Metadata in file order. */
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute file offset where tensor data starts. */
  dataOffset: number;
  fileSize: number;
};

/** Limits that keep a corrupt or hostile header from exhausting memory. */
const MAX_STRING_BYTES = 64 * 1024 * 1024;
const MAX_ARRAY_ITEMS = 64 * 1024 * 1024;
const MAX_TENSORS = 1_000_000;
const MAX_DIMS = 4;

const typeNames = Object.fromEntries(
  Object.entries(GgufValueTypeId).map(([name, id]) => [id, name]),
) as Record<number, keyof typeof GgufValueTypeId>;

/** Reads a file forwards through a fixed-size buffer, never holding more than one chunk. */
class ChunkedReader {
  private buffer: Buffer;
  private start = 0; // file offset of buffer[0]
  private end = 0; // file offset just past the valid bytes
  private readonly decoder = new TextDecoder("utf-8", { fatal: true });
  position = 0;

  constructor(
    private readonly handle: FileHandle,
    private readonly fileSize: number,
    chunkBytes = 1 << 20,
  ) {
    this.buffer = Buffer.allocUnsafe(chunkBytes);
  }

  private async ensure(bytes: number): Promise<void> {
    if (this.position + bytes <= this.end && this.position >= this.start) return;
    if (this.position + bytes > this.fileSize) {
      throw new GgufFormatError("The GGUF file ends in the middle of its header.", {
        details: `Needed ${bytes} bytes at offset ${this.position}; the file has ${this.fileSize}.`,
      });
    }
    if (bytes > this.buffer.length) this.buffer = Buffer.allocUnsafe(bytes);
    const { bytesRead } = await this.handle.read(this.buffer, 0, this.buffer.length, this.position);
    this.start = this.position;
    this.end = this.position + bytesRead;
    if (bytesRead < bytes) throw new GgufFormatError("Could not read the GGUF header.");
  }

  private view(bytes: number): number {
    const at = this.position - this.start;
    this.position += bytes;
    return at;
  }

  async u32(): Promise<number> {
    await this.ensure(4);
    return this.buffer.readUInt32LE(this.view(4));
  }

  async u64(): Promise<bigint> {
    await this.ensure(8);
    return this.buffer.readBigUInt64LE(this.view(8));
  }

  /** A u64 that must fit in a safe integer (a length or count). */
  async count(what: string, limit: number): Promise<number> {
    const value = await this.u64();
    if (value > BigInt(limit))
      throw new GgufFormatError(`The GGUF header declares ${value} ${what}, over the limit of ${limit}.`);
    return Number(value);
  }

  async string(): Promise<string> {
    const length = await this.count("string bytes", MAX_STRING_BYTES);
    await this.ensure(length);
    const at = this.view(length);
    try {
      return this.decoder.decode(this.buffer.subarray(at, at + length));
    } catch (cause) {
      throw new GgufFormatError("A GGUF string is not valid UTF-8.", { cause });
    }
  }

  async scalar(type: GgufScalarType): Promise<number | bigint | boolean | string> {
    switch (type) {
      case "u8":
        await this.ensure(1);
        return this.buffer.readUInt8(this.view(1));
      case "i8":
        await this.ensure(1);
        return this.buffer.readInt8(this.view(1));
      case "u16":
        await this.ensure(2);
        return this.buffer.readUInt16LE(this.view(2));
      case "i16":
        await this.ensure(2);
        return this.buffer.readInt16LE(this.view(2));
      case "u32":
        return this.u32();
      case "i32":
        await this.ensure(4);
        return this.buffer.readInt32LE(this.view(4));
      case "f32":
        await this.ensure(4);
        return this.buffer.readFloatLE(this.view(4));
      case "bool": {
        await this.ensure(1);
        const byte = this.buffer.readUInt8(this.view(1));
        if (byte > 1) throw new GgufFormatError(`A GGUF bool has the value ${byte}.`);
        return byte === 1;
      }
      case "string":
        return this.string();
      case "u64":
        return this.u64();
      case "i64":
        await this.ensure(8);
        return this.buffer.readBigInt64LE(this.view(8));
      case "f64":
        await this.ensure(8);
        return this.buffer.readDoubleLE(this.view(8));
    }
  }

  async valueType(): Promise<keyof typeof GgufValueTypeId> {
    const id = await this.u32();
    const name = typeNames[id];
    if (name === undefined) throw new GgufFormatError(`Unknown GGUF metadata type ${id}.`);
    return name;
  }

  async array(): Promise<GgufArray> {
    const itemType = await this.valueType();
    const length = await this.count("array items", MAX_ARRAY_ITEMS);
    const value: GgufArrayItem[] = new Array(length);
    for (let i = 0; i < length; i++)
      value[i] = itemType === "array" ? await this.array() : await this.scalar(itemType);
    return { type: "array", itemType, value };
  }

  async value(): Promise<GgufValue> {
    const type = await this.valueType();
    if (type === "array") return this.array();
    return { type, value: await this.scalar(type) } as GgufValue;
  }
}

/** Byte size of a tensor's data, or a {@link GgufFormatError} for a type this toolkit does not know. */
export function tensorByteLength(type: number, dims: readonly number[]): number {
  const block = GGML_BLOCK[type];
  if (block === undefined) throw new GgufFormatError(`Unknown GGML tensor type ${type}.`);
  const elements = tensorElements(dims);
  const rowLength = dims[0] ?? 1;
  if (rowLength % block.elements !== 0) {
    throw new GgufFormatError(
      `A ${ggmlTypeName(type)} tensor row of ${rowLength} elements is not a whole number of ${block.elements}-element blocks.`,
    );
  }
  return (elements / block.elements) * block.bytes;
}

/**
 * Reads the header of a GGUF file (v2 or v3): metadata, tensor names, shapes, types and offsets. Reads
 * the file in 1 MiB chunks and never loads tensor data, so it is cheap on multi-gigabyte models.
 *
 * @throws {GgufFormatError} for a file that is not GGUF, is cut short, or whose tensors do not fit in it.
 */
export async function readGguf(path: string): Promise<GgufFile> {
  const handle = await open(path, "r");
  try {
    const { size: fileSize } = await handle.stat();
    const reader = new ChunkedReader(handle, fileSize);
    if (fileSize < 24 || (await reader.u32()) !== GGUF_MAGIC) {
      throw new GgufFormatError(`${path} is not a GGUF file.`, {
        details: "It does not start with the bytes 'GGUF'.",
      });
    }
    const version = await reader.u32();
    if (version !== 2 && version !== 3)
      throw new GgufFormatError(`GGUF version ${version} is not supported (2 and 3 are).`);
    const tensorCount = await reader.count("tensors", MAX_TENSORS);
    const metadataCount = await reader.count("metadata entries", MAX_TENSORS);
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < metadataCount; i++) {
      const key = await reader.string();
      if (metadata.has(key)) throw new GgufFormatError(`The GGUF metadata key ${key} appears twice.`);
      metadata.set(key, await reader.value());
    }
    const tensors: GgufTensorInfo[] = [];
    const names = new Set<string>();
    for (let i = 0; i < tensorCount; i++) {
      const name = await reader.string();
      if (names.has(name)) throw new GgufFormatError(`The tensor ${name} appears twice.`);
      names.add(name);
      const nDims = await reader.u32();
      if (nDims < 1 || nDims > MAX_DIMS)
        throw new GgufFormatError(`The tensor ${name} has ${nDims} dimensions.`);
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++)
        dims.push(await reader.count(`elements in a dimension of ${name}`, 2 ** 40));
      const type = await reader.u32();
      const offset = await reader.u64();
      tensors.push({
        name,
        dims,
        type,
        offset,
        elements: tensorElements(dims),
        byteLength: tensorByteLength(type, dims),
      });
    }
    const alignmentValue = metadata.get("general.alignment");
    const alignment = alignmentValue?.type === "u32" ? alignmentValue.value : GGUF_DEFAULT_ALIGNMENT;
    if (alignment < 1 || (alignment & (alignment - 1)) !== 0) {
      throw new GgufFormatError(`general.alignment ${alignment} is not a power of two.`);
    }
    const dataOffset = alignUp(reader.position, alignment);
    for (const tensor of tensors) {
      const end = BigInt(dataOffset) + tensor.offset + BigInt(tensor.byteLength);
      if (tensor.offset % BigInt(alignment) !== 0n || end > BigInt(fileSize)) {
        throw new GgufFormatError(
          `The data of tensor ${tensor.name} lies outside the file or is misaligned.`,
          {
            details: `offset ${tensor.offset}, ${tensor.byteLength} bytes, data section at ${dataOffset}, file size ${fileSize}`,
          },
        );
      }
    }
    return { path, version, metadata, tensors, alignment, dataOffset, fileSize };
  } finally {
    await handle.close();
  }
}

/** Rounds `offset` up to a multiple of `alignment`. */
export function alignUp(offset: number, alignment: number): number {
  return Math.ceil(offset / alignment) * alignment;
}

/**
 * Streams the bytes of one tensor from its file, in chunks of at most `chunkBytes` (default 4 MiB).
 * Each chunk is a fresh buffer the caller may keep.
 */
export async function* readTensorData(
  file: GgufFile,
  tensor: GgufTensorInfo,
  options: { chunkBytes?: number } = {},
): AsyncGenerator<Uint8Array> {
  const chunkBytes = options.chunkBytes ?? 4 << 20;
  const handle = await open(file.path, "r");
  try {
    let position = file.dataOffset + Number(tensor.offset);
    let remaining = tensor.byteLength;
    while (remaining > 0) {
      const size = Math.min(chunkBytes, remaining);
      const chunk = Buffer.allocUnsafe(size);
      const { bytesRead } = await handle.read(chunk, 0, size, position);
      if (bytesRead !== size)
        throw new GgufFormatError(`The file ends inside the data of tensor ${tensor.name}.`);
      yield chunk;
      position += size;
      remaining -= size;
    }
  } finally {
    await handle.close();
  }
}

/** Reads the whole data of one (small) tensor into memory. */
export async function readTensorBytes(file: GgufFile, tensor: GgufTensorInfo): Promise<Uint8Array> {
  const out = new Uint8Array(tensor.byteLength);
  let at = 0;
  for await (const chunk of readTensorData(file, tensor)) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** The plain value of a metadata key (numbers, bigints, strings, booleans, arrays of them), or undefined. */
export function metadataValue(file: Pick<GgufFile, "metadata">, key: string): unknown {
  const entry = file.metadata.get(key);
  if (entry === undefined) return undefined;
  return entry.type === "array" ? plainArray(entry) : entry.value;
}

function plainArray(array: GgufArray): unknown[] {
  return array.value.map((item) => (typeof item === "object" ? plainArray(item) : item));
}

/** A string metadata value, or undefined when absent or not a string. */
export function metadataString(file: Pick<GgufFile, "metadata">, key: string): string | undefined {
  const entry = file.metadata.get(key);
  return entry?.type === "string" ? entry.value : undefined;
}

/** A numeric metadata value (any integer or float type), or undefined. */
export function metadataNumber(file: Pick<GgufFile, "metadata">, key: string): number | undefined {
  const entry = file.metadata.get(key);
  if (entry === undefined || entry.type === "array" || entry.type === "string" || entry.type === "bool")
    return undefined;
  return Number(entry.value);
}
