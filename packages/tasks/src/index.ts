export { CanonicalJsonError, canonicalBytes, canonicalize } from "./canonicalize.js";
export {
  type ChatTemplateContentBlock,
  ChatTemplateError,
  type ChatTemplateErrorKind,
  type ChatTemplateImageBlock,
  type ChatTemplateMessage,
  type ChatTemplateTextBlock,
  contentToText,
  type RenderChatTemplateParameters,
  renderChatTemplate,
  renderFallbackPrompt,
} from "./chatTemplate.js";
export { CrynuxError, type CrynuxErrorParameters } from "./errors.js";
export {
  type ContentBlock,
  contentBlockSchema,
  DTYPES,
  FINISH_REASONS,
  GENERATION_DEFAULTS,
  type GptGenerationConfig,
  type GptMessage,
  type GptResponse,
  type GptTaskArgs,
  type GptTaskArgsInput,
  gptGenerationConfigSchema,
  gptMessageSchema,
  gptResponseSchema,
  gptTaskArgsSchema,
  imageContentBlockSchema,
  MAX_NEW_TOKENS_LIMIT,
  MAX_RETURN_SEQUENCES,
  MESSAGE_ROLES,
  parseGptResponse,
  parseGptTaskArgs,
  type ResolvedGenerationConfig,
  resolveGenerationConfig,
  textContentBlockSchema,
} from "./gpt.js";
export { gptResultHash, taskHash } from "./hash.js";
export { type JsonObject, type JsonValue, jsonObjectSchema } from "./json.js";
export {
  type FileModelRef,
  formatModelRef,
  type HfModelRef,
  type ModelRef,
  ModelRefError,
  parseModelRef,
} from "./modelRef.js";
export {
  hammingDistance,
  imagePHash,
  PHashInputError,
  pHashFromHex,
  pHashToHex,
  sdResultFromPHashes,
  sdResultsMatch,
} from "./phash.js";
export {
  decodePng,
  encodePng,
  MAX_PNG_BYTES,
  PngDecodeError,
  type PngDecodeErrorReason,
  PngEncodeError,
  pngPHash,
  type RgbaImage,
} from "./png.js";
export {
  GGUF_QUANTIZATION_TYPES,
  type GgufQuantizationType,
  isGgufQuantizationType,
  QUANTIZATION_FOR_BITS,
  type QuantizeBits,
  quantizationForBits,
} from "./quantization.js";
export {
  MAX_IMAGE_SIDE,
  parseSdTaskArgs,
  percentSchema,
  SD_TASK_VERSIONS,
  type SdTaskArgs,
  type SdTaskArgsInput,
  sdControlnetSchema,
  sdLoraSchema,
  sdModelSchema,
  sdPreprocessSchema,
  sdRefinerSchema,
  sdSchedulerSchema,
  sdTaskArgsSchema,
  sdTaskConfigSchema,
} from "./sd.js";
export { formatIssuePath, TaskArgsError, type TaskArgsIssue } from "./taskArgsError.js";
export { isTaskType, TaskType, UnknownTaskTypeError } from "./taskType.js";
export { gptWorkUnits, sdWorkUnits, workUnits } from "./workUnits.js";
