import { z } from "zod";
import { parseWith } from "./taskArgsError.js";

const nonEmptyString = z.string().min(1);

/**
 * A fraction written as a whole percentage in (0, 100], as the original's `FloatFractionAsInt`
 * (70 means 0.7).
 */
export const percentSchema = z.int().min(1).max(100);

/** Values of the SD `version` field that the original task runner understands. */
export const SD_TASK_VERSIONS = ["1.0.0", "2.0.0", "2.1.0", "2.5.0", "3.0.0"] as const;

/** Largest image side a task may ask for, in pixels. */
export const MAX_IMAGE_SIDE = 2048;

const imageSide = z
  .int()
  .min(64)
  .max(MAX_IMAGE_SIDE)
  .refine((side) => side % 8 === 0, "must be a multiple of 8");

/** Image settings of an SD task. Every field has a default, so `{}` is valid. */
export const sdTaskConfigSchema = z.strictObject({
  image_width: imageSide.default(512),
  image_height: imageSide.default(512),
  steps: z.int().min(1).max(100).default(1),
  seed: z.int().min(0).max(2_147_483_647).default(0),
  num_images: z.int().min(1).max(10).default(6),
  safety_checker: z.boolean().default(true),
  cfg: z.number().min(0).max(20).default(5),
});

/** A model given by name, with an optional variant (`"fp16"`). */
export const sdModelSchema = z.strictObject({
  name: nonEmptyString,
  variant: z.string().nullable().default(null),
});

/** A LoRA applied on the base model. */
export const sdLoraSchema = z.strictObject({
  model: nonEmptyString,
  weight_file_name: z.string().default(""),
  weight: percentSchema.default(100),
});

/** The SDXL refiner stage. */
export const sdRefinerSchema = z.strictObject({
  model: nonEmptyString,
  variant: z.string().nullable().default(null),
  denoising_cutoff: percentSchema.default(80),
  steps: z.int().min(1).max(100).default(20),
});

const noArgs = (method: string) => z.strictObject({ method: z.literal(method) });
const withArgs = <T extends z.ZodRawShape>(method: string, args: T) =>
  z.strictObject({ method: z.literal(method), args: z.strictObject(args).nullable().optional() });
const pidinetArgs = { apply_filter: z.boolean().default(false) };
const leresArgs = { thr_a: z.int().default(0), thr_b: z.int().default(0) };

/** ControlNet image preprocessors, by `method`, with their optional `args`. */
export const sdPreprocessSchema = z.discriminatedUnion("method", [
  withArgs("canny", {
    low_threshold: z.int().min(0).max(255).default(100),
    high_threshold: z.int().min(0).max(255).default(200),
  }),
  noArgs("scribble_hed"),
  noArgs("scribble_hedsafe"),
  noArgs("softedge_hedsafe"),
  noArgs("depth_midas"),
  withArgs("mlsd", { thr_v: percentSchema.default(10), thr_d: percentSchema.default(10) }),
  noArgs("openpose"),
  noArgs("openpose_face"),
  noArgs("openpose_faceonly"),
  noArgs("openpose_full"),
  noArgs("openpose_hand"),
  withArgs("scribble_pidinet", pidinetArgs),
  withArgs("softedge_pidinet", pidinetArgs),
  withArgs("scribble_pidisafe", pidinetArgs),
  withArgs("softedge_pidisafe", pidinetArgs),
  noArgs("normal_bae"),
  noArgs("lineart_coarse"),
  noArgs("lineart_realistic"),
  noArgs("lineart_anime"),
  withArgs("depth_zoe", { gamma_corrected: z.boolean().default(false) }),
  withArgs("depth_leres", leresArgs),
  withArgs("depth_leres++", leresArgs),
  withArgs("shuffle", {
    h: z.int().nullable().default(null),
    w: z.int().nullable().default(null),
    f: z.int().nullable().default(null),
  }),
  withArgs("mediapipe_face", {
    max_faces: z.int().min(1).default(1),
    min_confidence: percentSchema.default(50),
  }),
]);

/** Data URL of a PNG/JPEG/... image, as ControlNet takes it. */
const imageDataUrl = z
  .string()
  .refine((value) => value === "" || /^data:image\/[a-z0-9.+-]+;base64,[A-Za-z0-9+/]+={0,2}$/i.test(value), {
    message: "must be a data:image/...;base64,... URL",
  });

/** ControlNet settings. */
export const sdControlnetSchema = z.strictObject({
  model: nonEmptyString,
  variant: z.string().nullable().default(null),
  image_dataurl: imageDataUrl.default(""),
  weight: percentSchema.default(70),
  preprocess: sdPreprocessSchema.nullable().default(null),
});

const optionalNullable = <T extends z.ZodType>(schema: T) => schema.nullable().optional();
const commonSchedulerArgs = {
  num_train_timesteps: optionalNullable(z.int()),
  beta_start: optionalNullable(z.number()),
  beta_end: optionalNullable(z.number()),
  beta_schedule: optionalNullable(z.string()),
  prediction_type: optionalNullable(z.string()),
  timestep_spacing: optionalNullable(z.string()),
  steps_offset: optionalNullable(z.int()),
  rescale_betas_zero_snr: optionalNullable(z.boolean()),
};
const thresholdingArgs = {
  thresholding: optionalNullable(z.boolean()),
  dynamic_thresholding_ratio: optionalNullable(z.number()),
  sample_max_value: optionalNullable(z.number()),
};

/** The sampler (diffusers scheduler), by `method`, with its optional `args`. */
export const sdSchedulerSchema = z.discriminatedUnion("method", [
  z.strictObject({
    method: z.literal("DPMSolverMultistepScheduler"),
    args: z
      .strictObject({
        ...commonSchedulerArgs,
        ...thresholdingArgs,
        solver_order: optionalNullable(z.int()),
        algorithm_type: optionalNullable(z.string()),
        solver_type: optionalNullable(z.string()),
        lower_order_final: optionalNullable(z.boolean()),
        euler_at_final: optionalNullable(z.boolean()),
        use_karras_sigmas: optionalNullable(z.boolean()),
        use_lu_lambdas: optionalNullable(z.boolean()),
        final_sigmas_type: optionalNullable(z.string()),
        lambda_min_clipped: optionalNullable(z.number()),
        variance_type: optionalNullable(z.string()),
      })
      .nullable()
      .default(null),
  }),
  z.strictObject({
    method: z.literal("EulerAncestralDiscreteScheduler"),
    args: z.strictObject(commonSchedulerArgs).nullable().default(null),
  }),
  z.strictObject({
    method: z.literal("LCMScheduler"),
    args: z
      .strictObject({
        ...commonSchedulerArgs,
        ...thresholdingArgs,
        original_inference_steps: optionalNullable(z.int()),
        clip_samples: optionalNullable(z.int()),
        clip_samples_range: optionalNullable(z.number()),
        set_alpha_to_one: optionalNullable(z.boolean()),
        timestep_scaling: optionalNullable(z.number()),
      })
      .nullable()
      .default(null),
  }),
]);

/**
 * Arguments of a Stable Diffusion task (task type 0), field for field as in the Crynux
 * stable-diffusion-task inference format. Unknown fields are rejected; parsing fills in the defaults.
 */
export const sdTaskArgsSchema = z.strictObject({
  version: z.enum(SD_TASK_VERSIONS).default("2.5.0"),
  base_model: z.union([nonEmptyString, sdModelSchema]),
  dtype: z.enum(["float16", "bfloat16", "float32", "auto"]).default("auto"),
  unet: z.string().default(""),
  prompt: nonEmptyString,
  negative_prompt: z.string().default(""),
  task_config: sdTaskConfigSchema,
  lora: sdLoraSchema.nullable().default(null),
  controlnet: sdControlnetSchema.nullable().default(null),
  scheduler: sdSchedulerSchema.default({ method: "DPMSolverMultistepScheduler", args: null }),
  vae: z.string().default(""),
  refiner: sdRefinerSchema.nullable().default(null),
  textual_inversion: z.string().default(""),
});

/** SD task arguments after parsing (defaults filled in). */
export type SdTaskArgs = z.output<typeof sdTaskArgsSchema>;
/** SD task arguments as an application writes them. */
export type SdTaskArgsInput = z.input<typeof sdTaskArgsSchema>;

/**
 * Validates SD task arguments (an object, or JSON text) and returns them typed, with defaults filled in.
 * @throws {TaskArgsError} listing every bad field with its path.
 */
export function parseSdTaskArgs(input: unknown): SdTaskArgs {
  return parseWith(sdTaskArgsSchema, "SD task arguments", input);
}
