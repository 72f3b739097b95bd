import type { SdTaskArgs } from "@crynux/tasks";

/** What {@link SdEngine.generate} takes besides the task arguments. */
export type SdGenerateOptions = {
  /** Aborts the generation (the engine also asks its server to stop). */
  signal?: AbortSignal;
};

/** The images of one SD task, in order: `task_config.num_images` PNG files. */
export type SdGenerateResult = {
  images: Uint8Array[];
};

/** What an engine says about itself (for logs, the node's status page and model checks). */
export type SdEngineInfo = {
  /** Engine kind, e.g. `"automatic1111"`. */
  engine: string;
  /** Where the engine's server listens, if it has one. */
  url?: string;
  /** The checkpoint loaded now, in the engine's own naming, or `null` if it does not say. */
  checkpoint: string | null;
  /** Checkpoints the engine can load. */
  checkpoints: string[];
  /** LoRA networks the engine can apply. */
  loras: string[];
  /** ControlNet models the engine can use (empty without ControlNet support). */
  controlnetModels: string[];
};

/**
 * Something that turns SD task arguments into PNG images: usually an adapter for a Stable Diffusion server
 * that runs beside the node (`createAutomatic1111Engine`).
 */
export type SdEngine = {
  /**
   * Generates the task's images.
   * @throws {SdEngineError} with a `reason`: `unsupported_option` / `invalid_args` for a task the engine
   *   cannot run as written, `model_not_found`, `engine_unreachable`, `engine_error`, `bad_response`,
   *   `timeout`, `aborted`.
   */
  generate(args: SdTaskArgs, options?: SdGenerateOptions): Promise<SdGenerateResult>;
  /** Describes the engine and the models it has. */
  info(): Promise<SdEngineInfo>;
};
