import { decodePng, imagePHash, PngDecodeError, parseSdTaskArgs, sdResultFromPHashes } from "@crynux/tasks";
import type { Hex } from "viem";
import type { SdEngine, SdEngineInfo } from "./engine.js";
import { SdEngineError } from "./errors.js";

/** What {@link createSdExecutor} takes. */
export type CreateSdExecutorParameters = {
  /** The engine that draws the images (e.g. `createAutomatic1111Engine`). */
  engine: SdEngine;
};

/** What {@link SdExecutor.execute} takes besides the arguments. */
export type ExecuteSdTaskOptions = { signal?: AbortSignal };

/** The outcome of an SD task on this node. */
export type SdExecutionResult = {
  /** The PNG files, in order (`0.png`, `1.png`, ... of the result upload). */
  images: Uint8Array[];
  /** The pHash of each image, as the network computes it. */
  pHashes: bigint[];
  /** `sdResultFromPHashes(pHashes)`: what the node commits to and discloses. */
  result: Hex;
};

/** Runs SD tasks on an {@link SdEngine}. Create it with {@link createSdExecutor}. */
export type SdExecutor = {
  /**
   * Executes an SD task: validates the arguments, has the engine draw the images, checks that there are
   * `num_images` PNGs of the task's size, and hashes them.
   *
   * @throws {TaskArgsError} for invalid arguments; {@link SdEngineError} from the engine, or with reason
   *   `bad_response` when the engine's images are not the task's.
   */
  execute(args: unknown, options?: ExecuteSdTaskOptions): Promise<SdExecutionResult>;
  /** The engine's description. */
  info(): Promise<SdEngineInfo>;
};

/**
 * Creates an {@link SdExecutor}. Tasks run one at a time (one GPU behind the engine), in the order they
 * were given.
 */
export function createSdExecutor(parameters: CreateSdExecutorParameters): SdExecutor {
  const { engine } = parameters;
  let queue: Promise<unknown> = Promise.resolve();
  const serialize = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work);
    queue = run.catch(() => {});
    return run;
  };

  return {
    async execute(input, options = {}) {
      const args = parseSdTaskArgs(input);
      return serialize(async () => {
        const { images } = await engine.generate(args, options.signal ? { signal: options.signal } : {});
        const { num_images: count, image_width: width, image_height: height } = args.task_config;
        if (images.length !== count) {
          throw new SdEngineError(
            "bad_response",
            `The engine returned ${images.length} images, the task asks for ${count}.`,
          );
        }
        const pHashes = images.map((bytes, index) => {
          let image: ReturnType<typeof decodePng>;
          try {
            image = decodePng(bytes);
          } catch (error) {
            if (!(error instanceof PngDecodeError)) throw error;
            throw new SdEngineError(
              "bad_response",
              `Image ${index} from the engine is not a PNG the network can hash.`,
              {
                details: error.shortMessage,
                cause: error,
              },
            );
          }
          if (image.width !== width || image.height !== height) {
            throw new SdEngineError(
              "bad_response",
              `Image ${index} from the engine is ${image.width}x${image.height}, the task asks for ${width}x${height}.`,
            );
          }
          return imagePHash(image.rgba, image.width, image.height);
        });
        return { images, pHashes, result: sdResultFromPHashes(pHashes) };
      });
    },
    info: () => engine.info(),
  };
}
