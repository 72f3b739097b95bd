export {
  dequantizeRow,
  dequantizeRowQ4_0,
  dequantizeRowQ8_0,
  isFloatType,
  Q4_0_BLOCK_BYTES,
  Q8_0_BLOCK_BYTES,
  QK,
  quantizedRowBytes,
  quantizeRow,
  quantizeRowQ4_0,
  quantizeRowQ8_0,
  toFloat32,
} from "./blocks.js";
export {
  fileTypeOf,
  type GgufFileTypeInfo,
  QuantizationError,
  type QuantizationTarget,
  type QuantizeGgufParameters,
  type QuantizeGgufResult,
  type QuantizeProgress,
  quantizeGguf,
} from "./quantize.js";
