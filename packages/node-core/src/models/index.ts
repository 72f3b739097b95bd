export { type FileSha256Options, fileSha256, sha256OfFile } from "./contentHash.js";
export {
  DEFAULT_HUB_URL,
  DEFAULT_RETRY_POLICY,
  HubHttpError,
  type RemoteFileInfo,
  type RepoFileEntry,
  type RetryPolicy,
} from "./hub.js";
export {
  hasQuantizationTag,
  InvalidModelFileError,
  ModelDownloadError,
  type ModelDownloadProgress,
  ModelNotFoundError,
  type ModelNotFoundReason,
  ModelTooLargeError,
  type ResolvedModel,
  type ResolveModelOptions,
  resolveModel,
  selectQuantizedFile,
} from "./resolve.js";
