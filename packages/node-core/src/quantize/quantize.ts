import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { NodeCoreError, type NodeCoreErrorParameters } from "../errors.js";
import { type GgufFile, readGguf, readTensorData } from "../gguf/reader.js";
import { GgmlType, type GgufTensorInfo, type GgufValue, ggmlTypeName, LlamaFileType } from "../gguf/types.js";
import { type GgufTensorSource, writeGguf } from "../gguf/writer.js";
import { fileSha256 } from "../models/contentHash.js";
import { isFloatType, QK, quantizedRowBytes, quantizeRow, toFloat32 } from "./blocks.js";

/**
 * GGUF quantizer for Crynux GPT tasks' `quantize_bits`: 8 → Q8_0, 4 → Q4_0.
 *
 * ## Which tensors are quantized
 *
 * The selection follows `llama_model_quantize` (llama.cpp `src/llama-quant.cpp`,
 * `tensor_allows_quantization`) for these two types:
 *
 * - Only tensors with at least 2 dimensions that count (`ggml_n_dims`: trailing 1s do not count) and a
 *   name ending in `weight` are candidates; norms (`*_norm.weight`), MoE router gates
 *   (`ffn_gate_inp.weight`), positional / token-type embeddings, conv1d and RWKV mixing weights and the
 *   other small tensors llama.cpp lists are kept as they are. 1-D tensors (norms, biases) are copied
 *   byte for byte, in their own type (F32 in every llama.cpp conversion).
 * - A candidate whose row length (`dims[0]`) is not a multiple of 32 cannot hold Q8_0/Q4_0 blocks; it is
 *   copied unchanged. (llama.cpp defines no fallback type for Q8_0/Q4_0 and refuses such a model; keeping
 *   the source type, as its F16 fallback for other types intends, loses nothing.)
 * - Q8_0: every other candidate becomes Q8_0, `output.weight` and `token_embd.weight` included. This is
 *   exactly what `llama-quantize model.gguf Q8_0` does, with or without `--pure`.
 * - Q4_0: every other candidate becomes Q4_0 except the output projection: `output.weight`, or, when the
 *   model has no `output.weight` (tied embeddings), `token_embd.weight` (and `per_layer_token_embd.weight`),
 *   which become **Q8_0**. llama.cpp's default ("mixed") Q4_0 recipe stores that tensor as Q6_K, which this
 *   quantizer cannot write; `--pure` would make it Q4_0. Q8_0 keeps the intent of the mixed recipe (the
 *   logits are the most quantization-sensitive matrix, and with tied embeddings the same matrix is also
 *   the embedding table) at a small size cost, and is deterministic. `token_embd.weight` of a model with
 *   a separate `output.weight` is Q4_0, as in llama.cpp.
 *
 * Only F32, F16 and BF16 tensors are converted: a model whose weights are already in another quantized
 * type (Q4_K, Q8_0 when Q4_0 is asked, …) is refused, as `llama-quantize` refuses without
 * `--allow-requantize` (requantizing compounds the error). A model already in the requested
 * quantization is used as it is.
 *
 * ## Bytes
 *
 * Blocks are encoded with exact ports of ggml's reference quantizers (see `blocks.ts`), the code path
 * `llama-quantize` takes without an importance matrix, and the file is laid out as `llama_model_quantize`
 * lays it out: metadata copied in order with `split.*` dropped and `general.quantization_version` (u32 2)
 * and `general.file_type` (u32 `MOSTLY_Q8_0` = 7 / `MOSTLY_Q4_0` = 2) moved to the end, as
 * `gguf_set_val_u32` does; tensors in llama.cpp's order (non-block tensors, then by block number, then by
 * name). For an F32/F16/BF16 model whose weight rows are multiples of 32, the output is byte for byte the
 * file of `llama-quantize` (the llama.cpp that node-llama-cpp 3.22.1 ships, commit de3ff81) for Q8_0, and
 * for Q4_0 with `--output-tensor-type q8_0` (plain `llama-quantize … Q4_0` too when the output projection's
 * rows are not a multiple of 256, since Q6_K then falls back to Q8_0 there).
 */

/** The GGUF quantizations this quantizer writes. */
export type QuantizationTarget = "Q8_0" | "Q4_0";

/** Reported after every chunk of tensor data. */
export type QuantizeProgress = {
  /** The tensor being processed. */
  tensor: string;
  /** Its index in the file (0-based). */
  tensorIndex: number;
  tensorCount: number;
  /** Source tensor bytes processed so far, over all tensors. */
  bytesRead: number;
  /** Source tensor bytes in all. */
  totalBytes: number;
};

/** What {@link quantizeGguf} quantizes, and where it caches the result. */
export type QuantizeGgufParameters = {
  /** Path of the source GGUF file (F32, F16 or BF16 weights). */
  source: string;
  target: QuantizationTarget;
  /** Directory of quantized models (created when missing). */
  cacheDir: string;
  /** Called as tensors are quantized, e.g. to show progress. */
  onProgress?: (progress: QuantizeProgress) => void;
  /** Aborting stops the work; no partial output file is left behind. */
  signal?: AbortSignal;
};

/** The model to run. */
export type QuantizeGgufResult = {
  /** The quantized file, or `source` itself when it already was in the requested quantization. */
  path: string;
  /** SHA-256 (hex) of the source file's bytes. */
  sourceSha256: string;
  /** The quantized file was already in the cache (no tensor data was read). */
  cached: boolean;
  /** False when the source is used as it is. */
  quantized: boolean;
  /** Size of the file at `path`. */
  bytes: number;
};

/** The source cannot be quantized to the requested type. */
export class QuantizationError extends NodeCoreError {
  override name = "QuantizationError";
  constructor(shortMessage: string, parameters: NodeCoreErrorParameters = {}) {
    super(shortMessage, { docsPath: "node-core.md#quantizer", ...parameters });
  }
}

const TARGETS = {
  Q8_0: { type: GgmlType.Q8_0, fileType: LlamaFileType.MOSTLY_Q8_0 },
  Q4_0: { type: GgmlType.Q4_0, fileType: LlamaFileType.MOSTLY_Q4_0 },
} as const satisfies Record<QuantizationTarget, { type: number; fileType: number }>;

/** `general.quantization_version` written by current llama.cpp (`GGML_QNT_VERSION`). */
const QUANTIZATION_VERSION = 2;

/** Names of `enum llama_ftype` values (`general.file_type`). */
const FILE_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  7: "Q8_0",
  8: "Q5_0",
  9: "Q5_1",
  10: "Q2_K",
  11: "Q3_K_S",
  12: "Q3_K_M",
  13: "Q3_K_L",
  14: "Q4_K_S",
  15: "Q4_K_M",
  16: "Q5_K_S",
  17: "Q5_K_M",
  18: "Q6_K",
  19: "IQ2_XXS",
  20: "IQ2_XS",
  21: "Q2_K_S",
  22: "IQ3_XS",
  23: "IQ3_XXS",
  24: "IQ1_S",
  25: "IQ4_NL",
  26: "IQ3_S",
  27: "IQ3_M",
  28: "IQ2_S",
  29: "IQ2_M",
  30: "IQ4_XS",
  31: "IQ1_M",
  32: "BF16",
  36: "TQ1_0",
  37: "TQ2_0",
  38: "MXFP4_MOE",
};

/** The file type llama.cpp's loader guesses from the most common tensor type (`llama_model_loader`). */
const GUESSED_FILE_TYPE: Readonly<Record<number, number>> = {
  [GgmlType.F32]: 0,
  [GgmlType.F16]: 1,
  [GgmlType.BF16]: 32,
  [GgmlType.Q4_0]: 2,
  [GgmlType.Q4_1]: 3,
  [GgmlType.Q5_0]: 8,
  [GgmlType.Q5_1]: 9,
  [GgmlType.Q8_0]: 7,
  [GgmlType.Q2_K]: 10,
  [GgmlType.Q3_K]: 12,
  [GgmlType.Q4_K]: 15,
  [GgmlType.Q5_K]: 17,
  [GgmlType.Q6_K]: 18,
  [GgmlType.TQ1_0]: 36,
  [GgmlType.TQ2_0]: 37,
  [GgmlType.IQ2_XXS]: 19,
  [GgmlType.IQ2_XS]: 20,
  [GgmlType.IQ2_S]: 28,
  [GgmlType.IQ3_XXS]: 23,
  [GgmlType.IQ1_S]: 24,
  [GgmlType.IQ1_M]: 31,
  [GgmlType.IQ4_NL]: 25,
  [GgmlType.IQ4_XS]: 30,
  [GgmlType.IQ3_S]: 26,
  [GgmlType.MXFP4]: 38,
};

/** What a GGUF model currently is, as far as quantization goes. */
export type GgufFileTypeInfo = {
  /** `"F32"`, `"F16"`, `"BF16"`, `"Q8_0"`, `"Q4_0"`, `"Q4_K_M"`, … (`"file type N"` for an unknown number). */
  name: string;
  /** The `llama_ftype` number: `general.file_type`, or llama.cpp's guess from the tensor types. */
  fileType: number | undefined;
  /** Whether `fileType` comes from `general.file_type` (true) or was guessed from the tensors (false). */
  fromMetadata: boolean;
  /** Whether any weight matrix (a tensor the quantizer would quantize) is stored in a block-quantized type. */
  quantized: boolean;
  /** Number of weight matrices of each tensor type, by type name. */
  weightTypes: Record<string, number>;
};

/** `ggml_n_dims`: the dimensions up to the last one larger than 1 (at least 1). */
function effectiveDims(dims: readonly number[]): number {
  for (let i = dims.length - 1; i >= 1; i--) if (dims[i]! > 1) return i + 1;
  return 1;
}

/** Substrings of tensor names llama.cpp never quantizes (`tensor_allows_quantization`). */
const KEEP_SUBSTRINGS = [
  "_norm.weight",
  "ffn_gate_inp.weight",
  "ffn_gate_tid2eid.weight",
  "altup",
  "laurel",
  "per_layer_model_proj",
  "ssm_conv1d",
  "shortconv.conv.weight",
  "indexer.k_proj.weight",
  "indexer.q_proj.weight",
  "time_mix_first.weight",
  "time_mix_w0.weight",
  "time_mix_w1.weight",
  "time_mix_w2.weight",
  "time_mix_v0.weight",
  "time_mix_v1.weight",
  "time_mix_v2.weight",
  "time_mix_a0.weight",
  "time_mix_a1.weight",
  "time_mix_a2.weight",
  "time_mix_g1.weight",
  "time_mix_g2.weight",
  "time_mix_decay_w1.weight",
  "time_mix_decay_w2.weight",
  "time_mix_lerp_fused.weight",
  "attn_rel_b.weight",
  ".position_embd",
  "sam.pos_embd",
  "sam.neck.",
  "sam.net_",
  ".rel_pos",
  ".patch_embd",
  ".patch_merger",
  "a.rvq.codebook",
  "mm.a.code_embd",
];
/** Exact names llama.cpp never quantizes (positional and token-type embeddings, `LLM_TN`). */
const KEEP_NAMES = new Set(["position_embd.weight", "token_types.weight"]);

/** Whether llama.cpp would quantize this tensor at all (shape and name; not the row length). */
function isWeightMatrix(tensor: GgufTensorInfo): boolean {
  if (effectiveDims(tensor.dims) < 2) return false;
  const name = tensor.name;
  if (!name.endsWith("weight")) return false;
  if (KEEP_NAMES.has(name)) return false;
  return !KEEP_SUBSTRINGS.some((part) => name.includes(part));
}

/** The tensor that produces the logits (`output.weight`, or the token embeddings when they are tied). */
function isOutputProjection(tensor: GgufTensorInfo, tied: boolean): boolean {
  if (tensor.name === "output.weight") return true;
  return tied && (tensor.name === "token_embd.weight" || tensor.name === "per_layer_token_embd.weight");
}

/**
 * What a GGUF model currently is: its `general.file_type` (or, without one, llama.cpp's guess from the
 * most common type of its weight matrices) and the types its weight matrices are stored in.
 */
export function fileTypeOf(file: Pick<GgufFile, "metadata" | "tensors">): GgufFileTypeInfo {
  const counts = new Map<number, number>();
  let quantized = false;
  for (const tensor of file.tensors) {
    if (!isWeightMatrix(tensor)) continue;
    counts.set(tensor.type, (counts.get(tensor.type) ?? 0) + 1);
    if (!isFloatType(tensor.type)) quantized = true;
  }
  const weightTypes: Record<string, number> = {};
  for (const [type, count] of counts) weightTypes[ggmlTypeName(type)] = count;

  const entry = file.metadata.get("general.file_type");
  if (entry !== undefined && (entry.type === "u32" || entry.type === "i32")) {
    const fileType = entry.value;
    return {
      name: FILE_TYPE_NAMES[fileType] ?? `file type ${fileType}`,
      fileType,
      fromMetadata: true,
      quantized,
      weightTypes,
    };
  }
  if (counts.size === 0)
    for (const tensor of file.tensors) counts.set(tensor.type, (counts.get(tensor.type) ?? 0) + 1);
  let mostCommon: number | undefined;
  let best = 0;
  for (const [type, count] of counts) {
    if (count > best) {
      best = count;
      mostCommon = type;
    }
  }
  if (mostCommon === undefined)
    return { name: "empty", fileType: undefined, fromMetadata: false, quantized, weightTypes };
  const fileType = GUESSED_FILE_TYPE[mostCommon];
  return {
    name:
      fileType === undefined
        ? ggmlTypeName(mostCommon)
        : (FILE_TYPE_NAMES[fileType] ?? ggmlTypeName(mostCommon)),
    fileType,
    fromMetadata: false,
    quantized,
    weightTypes,
  };
}

/** What happens to one tensor. */
type TensorPlan = { tensor: GgufTensorInfo; outType: number; quantize: boolean };

/** The plan for a file: either use it as is, or write these tensors. */
type Plan = { asIs: true } | { asIs: false; tensors: TensorPlan[] };

function planQuantization(file: GgufFile, target: QuantizationTarget): Plan {
  const { type: targetType, fileType: targetFileType } = TARGETS[target];
  const info = fileTypeOf(file);
  const hasTargetTensor = file.tensors.some((tensor) => tensor.type === targetType);
  if (info.fromMetadata && info.fileType === targetFileType && hasTargetTensor) return { asIs: true };

  const tied = !file.tensors.some((tensor) => tensor.name === "output.weight");
  const tensors: TensorPlan[] = [];
  const conflicts: GgufTensorInfo[] = [];
  for (const tensor of file.tensors) {
    const copy = { tensor, outType: tensor.type, quantize: false };
    if (!isWeightMatrix(tensor) || tensor.dims[0]! % QK !== 0) {
      tensors.push(copy);
      continue;
    }
    const output = isOutputProjection(tensor, tied);
    const outType = target === "Q4_0" && output ? GgmlType.Q8_0 : targetType;
    if (tensor.type === outType) tensors.push(copy);
    else if (isFloatType(tensor.type)) tensors.push({ tensor, outType, quantize: true });
    else if (target === "Q4_0" && output)
      tensors.push(copy); // a Q4_0 model's Q6_K (or Q4_0) output layer
    else conflicts.push(tensor);
  }
  if (conflicts.length > 0) {
    const listed = conflicts
      .slice(0, 5)
      .map((tensor) => `${tensor.name} is ${ggmlTypeName(tensor.type)}`)
      .join(", ");
    throw new QuantizationError(
      `The model is already quantized (${info.name}) and cannot be requantized to ${target}.`,
      {
        details:
          `Only F32, F16 and BF16 weights are quantized; ${conflicts.length} weight matrices are not (${listed}` +
          `${conflicts.length > 5 ? ", …" : ""}). Use a ${target} or an unquantized (F16/BF16/F32) GGUF of this model.`,
      },
    );
  }
  if (!tensors.some((plan) => plan.quantize)) return { asIs: true };
  return { asIs: false, tensors: tensors.sort((a, b) => compareTensorNames(a.tensor.name, b.tensor.name)) };
}

/** The block number of `blk.N.…` names, -1 for others (`sscanf(name, "blk.%d.", &layer)`). */
function layerOf(name: string): number {
  const match = /^blk\.([+-]?\d+)/.exec(name);
  return match ? Number(match[1]) : -1;
}

/**
 * The order llama.cpp writes a quantized model's tensors in (`llama_model_loader::weight_name_comparer`):
 * non-block tensors first, then by block number, then by name (bytewise).
 */
function compareTensorNames(a: string, b: string): number {
  const layerA = layerOf(a);
  const layerB = layerOf(b);
  if (layerA !== layerB) return layerA < layerB ? -1 : 1;
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** Source bytes read per chunk (whole rows; a single row may be larger). */
const CHUNK_BYTES = 4 << 20;

/**
 * Quantizes a GGUF model to Q8_0 or Q4_0, streaming tensor by tensor and chunk by chunk (memory use stays
 * at a few chunks whatever the model size), into `<cacheDir>/<sha256 of source>-<target>.gguf`.
 *
 * The source's SHA-256 is cached in `<cacheDir>/hashes/` keyed by path, size and mtime, so a large model
 * is hashed once; a second call finds the output and returns `cached: true` without reading tensor data.
 * The output appears atomically (temporary file + rename): concurrent calls, in one process or several,
 * each write a complete identical file and the last rename wins, so readers never see a partial file.
 *
 * @throws {QuantizationError} when the model is in another quantized type, or is split in several files.
 * @throws the signal's reason when aborted (no output file is left).
 */
export async function quantizeGguf(parameters: QuantizeGgufParameters): Promise<QuantizeGgufResult> {
  const { source, target, cacheDir, onProgress, signal } = parameters;
  if (!Object.hasOwn(TARGETS, target))
    throw new QuantizationError(`Unknown quantization ${String(target)} (Q8_0 and Q4_0 are known).`);
  signal?.throwIfAborted();
  const file = await readGguf(source);
  const splitCount = file.metadata.get("split.count");
  if (splitCount !== undefined && "value" in splitCount && Number(splitCount.value) > 1) {
    throw new QuantizationError(
      `${source} is one part of a split GGUF model and cannot be quantized alone.`,
      {
        details: `split.count is ${splitCount.value}; merge the parts (llama-gguf-split --merge) first.`,
      },
    );
  }
  const plan = planQuantization(file, target);

  await mkdir(cacheDir, { recursive: true });
  const sourceSha256 = await fileSha256(source, { cacheDir, signal });
  if (plan.asIs) return { path: source, sourceSha256, cached: false, quantized: false, bytes: file.fileSize };

  const output = join(cacheDir, `${sourceSha256}-${target}.gguf`);
  const existing = await validOutput(output, file);
  if (existing !== undefined)
    return { path: output, sourceSha256, cached: true, quantized: true, bytes: existing };

  signal?.throwIfAborted();
  const totalBytes = file.tensors.reduce((sum, tensor) => sum + tensor.byteLength, 0);
  let bytesRead = 0;
  const tensors: GgufTensorSource[] = plan.tensors.map((entry, tensorIndex) => ({
    name: entry.tensor.name,
    dims: entry.tensor.dims,
    type: entry.outType,
    data: () =>
      streamTensor(file, entry, signal, (bytes) => {
        bytesRead += bytes;
        onProgress?.({
          tensor: entry.tensor.name,
          tensorIndex,
          tensorCount: plan.tensors.length,
          bytesRead,
          totalBytes,
        });
      }),
  }));
  try {
    const { bytesWritten } = await writeGguf(output, { metadata: quantizedMetadata(file, target), tensors });
    return { path: output, sourceSha256, cached: false, quantized: true, bytes: bytesWritten };
  } catch (error) {
    // A rename that lost a race against an identical file (Windows refuses to replace an open file).
    if (!signal?.aborted) {
      const raced = await validOutput(output, file);
      if (raced !== undefined)
        return { path: output, sourceSha256, cached: false, quantized: true, bytes: raced };
    }
    throw error;
  }
}

/** The source metadata in order, with the file type and quantization version of `target`. */
function quantizedMetadata(file: GgufFile, target: QuantizationTarget): Map<string, GgufValue> {
  const metadata = new Map(file.metadata);
  // gguf_set_val_* removes a key and appends it again: both keys end up last, in this order.
  for (const key of [
    "split.no",
    "split.count",
    "split.tensors.count",
    "general.quantization_version",
    "general.file_type",
  ])
    metadata.delete(key);
  metadata.set("general.quantization_version", { type: "u32", value: QUANTIZATION_VERSION });
  metadata.set("general.file_type", { type: "u32", value: TARGETS[target].fileType });
  return metadata;
}

/** Streams one tensor's output bytes: the source bytes, or their quantization, whole rows per chunk. */
async function* streamTensor(
  file: GgufFile,
  { tensor, outType, quantize }: TensorPlan,
  signal: AbortSignal | undefined,
  progress: (bytes: number) => void,
): AsyncGenerator<Uint8Array> {
  const rowLength = tensor.dims[0]!;
  const sourceRowBytes = tensor.byteLength / (tensor.elements / rowLength);
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / sourceRowBytes));
  const chunkBytes = rowsPerChunk * sourceRowBytes;
  const scratch = quantize ? new Float32Array(rowsPerChunk * rowLength) : undefined;
  signal?.throwIfAborted();
  for await (const chunk of readAhead(readTensorData(file, tensor, { chunkBytes }))) {
    signal?.throwIfAborted();
    if (scratch === undefined) {
      yield chunk;
    } else {
      const values = toFloat32(tensor.type, chunk, scratch);
      const out = new Uint8Array(quantizedRowBytes(outType, values.length));
      quantizeRow(outType, values, out);
      yield out;
    }
    progress(chunk.length);
  }
}

/**
 * Asks for the next chunk before handing out the current one, so that the read (in libuv's thread pool)
 * overlaps the quantization of the chunk before it. At most two chunks are held.
 */
async function* readAhead(source: AsyncGenerator<Uint8Array>): AsyncGenerator<Uint8Array> {
  let pending = source.next();
  try {
    for (;;) {
      const result = await pending;
      if (result.done) return;
      pending = source.next();
      yield result.value;
    }
  } finally {
    pending.catch(() => {}); // settled or not, its outcome no longer matters
    await source.return(undefined); // runs after the queued read, and closes the file
  }
}

/** The size of a complete quantized output of `file` at `path`, or undefined when there is none. */
async function validOutput(path: string, file: GgufFile): Promise<number | undefined> {
  try {
    const output = await readGguf(path);
    if (output.tensors.length !== file.tensors.length) return undefined;
    return output.fileSize;
  } catch {
    return undefined;
  }
}
