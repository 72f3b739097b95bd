export { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "./float16.js";
export {
  alignUp,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  type GgufFile,
  metadataNumber,
  metadataString,
  metadataValue,
  readGguf,
  readTensorBytes,
  readTensorData,
  tensorByteLength,
} from "./reader.js";
export {
  GGML_BLOCK,
  GgmlType,
  type GgufArray,
  type GgufArrayItem,
  type GgufScalarType,
  type GgufTensorInfo,
  type GgufValue,
  GgufValueTypeId,
  ggmlTypeName,
  LlamaFileType,
  tensorElements,
} from "./types.js";
export { type GgufTensorSource, type WriteGgufParameters, writeGguf } from "./writer.js";
