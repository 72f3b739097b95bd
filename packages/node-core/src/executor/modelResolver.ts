import { quantizationForBits } from "@crynux/tasks";
import { fileSha256 } from "../models/contentHash.js";
import { type ResolveModelOptions, resolveModel } from "../models/resolve.js";
import { type QuantizeProgress, quantizeGguf } from "../quantize/quantize.js";
import type { ExecutorModelResolver } from "./gptExecutor.js";

/** What {@link createModelResolver} takes: where models live and are cached, and progress callbacks. */
export type CreateModelResolverParameters = Omit<ResolveModelOptions, "signal"> & {
  /**
   * Called while a model is being quantized to the bits the task asks for (only the first time: results are
   * cached).
   */
  onQuantizeProgress?: (progress: QuantizeProgress) => void;
};

/**
 * The model resolver a node uses: resolves the task's `model` reference to a local, verified GGUF file
 * (downloading it into the cache when needed), then applies `quantize_bits` (4 → Q4_0, 8 → Q8_0) with the
 * cached quantizer. The file is identified by the SHA-256 of its content, so nodes that ran the same
 * weights can tell.
 *
 * @throws {ModelNotFoundError} / {@link ModelDownloadError} / {@link InvalidModelFileError} /
 * {@link ModelTooLargeError} from resolution, {@link QuantizationError} when the model cannot be
 * quantized as asked (it is already quantized to another type).
 */
export function createModelResolver(parameters: CreateModelResolverParameters): ExecutorModelResolver {
  const { onQuantizeProgress, ...resolveOptions } = parameters;
  return async (args, { signal }) => {
    const resolved = await resolveModel(args.model, signal ? { ...resolveOptions, signal } : resolveOptions);
    const target = quantizationForBits(args.quantize_bits);
    if (target === null) return { path: resolved.path, sha256: resolved.sha256 };
    const quantized = await quantizeGguf({
      source: resolved.path,
      target,
      cacheDir: parameters.cacheDir,
      ...(onQuantizeProgress ? { onProgress: onQuantizeProgress } : {}),
      ...(signal ? { signal } : {}),
    });
    if (!quantized.quantized) return { path: resolved.path, sha256: resolved.sha256 };
    const sha256 = await fileSha256(
      quantized.path,
      signal ? { cacheDir: parameters.cacheDir, signal } : { cacheDir: parameters.cacheDir },
    );
    return { path: quantized.path, sha256 };
  };
}
