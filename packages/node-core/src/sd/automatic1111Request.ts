import type { SdTaskArgs } from "@crynux/tasks";
import { SdEngineError } from "./errors.js";

// The pure half of the AUTOMATIC1111 adapter: SD task arguments → a `/sdapi/v1/txt2img` request body.
// Everything a task asks for that this API cannot express is refused here, before the server is asked
// anything, so that the same task is refused the same way on every node whatever the state of its server.

/** How the adapter treats fields that depend on its configuration. */
export type Automatic1111MappingSettings = {
  /** Crynux model names (HF ids, URLs, file names) → names the server knows. */
  modelMap: Readonly<Record<string, string>>;
  /** WebUI settings sent with every request (`override_settings`); the task's checkpoint and VAE are added. */
  overrideSettings: Readonly<Record<string, string | number | boolean>>;
  /** `task_config.safety_checker: true`: the WebUI has no safety checker, so ignore the flag or refuse the task. */
  safetyChecker: "ignore" | "refuse";
  /** The precision the server runs at; a task asking for another `dtype` is refused. */
  dtype: "float16" | "bfloat16" | "float32";
};

/** One entry of `GET /sdapi/v1/sd-models`. */
export type Automatic1111Checkpoint = {
  title: string;
  model_name: string;
  hash?: string | null | undefined;
  sha256?: string | null | undefined;
  filename: string;
};
/** One entry of `GET /sdapi/v1/loras`. */
export type Automatic1111Lora = {
  name: string;
  alias?: string | null | undefined;
  path?: string | null | undefined;
};
/** One entry of `GET /sdapi/v1/sd-vae`. */
export type Automatic1111Vae = { model_name: string; filename?: string | null | undefined };

/** What the server has installed, as far as a task needs it. */
export type Automatic1111Catalog = {
  checkpoints: readonly Automatic1111Checkpoint[];
  loras?: readonly Automatic1111Lora[];
  vaes?: readonly Automatic1111Vae[];
  /** `GET /controlnet/model_list` entries, e.g. `control_v11p_sd15_canny [d14c016b]`. */
  controlnetModels?: readonly string[];
};

/** Which catalog lists a task needs beyond the checkpoints. */
export type Automatic1111CatalogNeeds = { loras: boolean; vaes: boolean; controlnetModels: boolean };

/** A sampler and noise schedule of the WebUI (1.9 or later, where the two are separate fields). */
export type Automatic1111Sampler = { sampler_name: string; scheduler: string };

/** The request body of `POST /sdapi/v1/txt2img` this adapter sends. */
export type Automatic1111Txt2ImgRequest = {
  prompt: string;
  negative_prompt: string;
  styles: string[];
  seed: number;
  subseed: number;
  subseed_strength: number;
  seed_resize_from_h: number;
  seed_resize_from_w: number;
  sampler_name: string;
  scheduler: string;
  batch_size: number;
  n_iter: number;
  steps: number;
  cfg_scale: number;
  width: number;
  height: number;
  restore_faces: boolean;
  tiling: boolean;
  enable_hr: boolean;
  do_not_save_samples: boolean;
  do_not_save_grid: boolean;
  send_images: boolean;
  save_images: boolean;
  override_settings: Record<string, string | number | boolean>;
  override_settings_restore_afterwards: boolean;
  refiner_checkpoint?: string;
  refiner_switch_at?: number;
  alwayson_scripts: Record<string, { args: unknown[] }>;
};

/**
 * WebUI settings pinned on every request by default: they change the pixels, and a person using the same
 * WebUI could have changed them. CPU noise (`randn_source`) gives the same starting latents on any GPU.
 */
export const AUTOMATIC1111_DEFAULT_OVERRIDE_SETTINGS: Readonly<Record<string, string | number | boolean>> = {
  CLIP_stop_at_last_layers: 1,
  eta_noise_seed_delta: 0,
  randn_source: "CPU",
  samples_format: "png",
  sd_vae: "None",
};

function unsupported(what: string, why: string): SdEngineError {
  return new SdEngineError(
    "unsupported_option",
    `${what} is not supported by the AUTOMATIC1111 engine: ${why}.`,
  );
}

function modelNotFound(
  kind: string,
  name: string,
  mapped: string,
  available: readonly string[],
): SdEngineError {
  const shown = available.slice(0, 20).join(", ") || "(none)";
  return new SdEngineError(
    "model_not_found",
    `The ${kind} ${JSON.stringify(name)} is not installed on the AUTOMATIC1111 server.`,
    {
      details: [
        mapped === name ? undefined : `Looked up as ${JSON.stringify(mapped)} (modelMap).`,
        `Available: ${shown}${available.length > 20 ? ", ..." : ""}`,
        "Install it in the WebUI, or map the name with the engine's modelMap option.",
      ]
        .filter((line) => line !== undefined)
        .join("\n"),
    },
  );
}

function baseName(path: string): string {
  return path.split(/[\\/]/).pop() ?? path;
}

function withoutExtension(file: string): string {
  return file.replace(/\.[^.]+$/, "");
}

/** The first candidate that answers to one of `wanted`, by any of its names. */
function findByName<T>(
  candidates: readonly T[],
  names: (candidate: T) => (string | null | undefined)[],
  wanted: readonly string[],
): T | undefined {
  for (const name of wanted) {
    const found = candidates.find((candidate) => names(candidate).includes(name));
    if (found !== undefined) return found;
  }
  return undefined;
}

const checkpointNames = (c: Automatic1111Checkpoint) => [
  c.title,
  c.model_name,
  baseName(c.filename),
  withoutExtension(baseName(c.filename)),
  c.sha256,
  c.hash,
];

function findCheckpoint(
  catalog: Automatic1111Catalog,
  settings: Automatic1111MappingSettings,
  name: string,
  kind: string,
): Automatic1111Checkpoint {
  const mapped = settings.modelMap[name] ?? name;
  const found = findByName(catalog.checkpoints, checkpointNames, [mapped]);
  if (found === undefined) {
    throw modelNotFound(
      kind,
      name,
      mapped,
      catalog.checkpoints.map((c) => c.title),
    );
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Sampler
// ---------------------------------------------------------------------------------------------

type SchedulerArgs = Record<string, unknown>;

/** Refuses a scheduler argument unless it is absent or one of the values the mapped sampler matches. */
function allowOnly(
  method: string,
  args: SchedulerArgs,
  field: string,
  allowed: readonly unknown[],
  why: string,
) {
  const value = args[field];
  if (value === null || value === undefined || allowed.includes(value)) return;
  throw unsupported(`scheduler ${method} with ${field} = ${JSON.stringify(value)}`, why);
}

/** Scheduler arguments that define the noise schedule itself, which the WebUI takes from the checkpoint. */
const SCHEDULE_FIELDS = [
  "num_train_timesteps",
  "beta_start",
  "beta_end",
  "beta_schedule",
  "prediction_type",
  "steps_offset",
] as const;

/**
 * Maps the task's diffusers scheduler to the WebUI's sampler and noise schedule:
 * DPMSolverMultistep → `DPM++ 2M` (`DPM++ 2M SDE`, `DPM++ 3M SDE` for the SDE algorithm of order 2, 3),
 * EulerAncestralDiscrete → `Euler a`, LCM → `LCM`; `use_karras_sigmas` → `karras`, `timestep_spacing:
 * "trailing"` → `sgm_uniform`, otherwise `uniform`. Arguments the WebUI cannot follow are refused.
 */
export function automatic1111Sampler(scheduler: SdTaskArgs["scheduler"]): Automatic1111Sampler {
  const method = scheduler.method;
  const args: SchedulerArgs = { ...(scheduler.args ?? {}) };
  for (const field of SCHEDULE_FIELDS) {
    allowOnly(method, args, field, [], "the WebUI takes the noise schedule from the checkpoint");
  }
  allowOnly(method, args, "rescale_betas_zero_snr", [false], "zero terminal SNR is a WebUI-wide setting");
  allowOnly(method, args, "thresholding", [false], "the WebUI samplers have no dynamic thresholding");
  allowOnly(
    method,
    args,
    "timestep_spacing",
    ["linspace", "leading", "trailing"],
    "no matching WebUI schedule",
  );

  let samplerName: string;
  switch (scheduler.method) {
    case "DPMSolverMultistepScheduler": {
      const sde = args["algorithm_type"] === "sde-dpmsolver++";
      allowOnly(
        method,
        args,
        "algorithm_type",
        ["dpmsolver++", "sde-dpmsolver++"],
        "the WebUI has DPM++ only",
      );
      allowOnly(method, args, "solver_order", sde ? [2, 3] : [2], "no WebUI sampler of that order");
      allowOnly(method, args, "solver_type", ["midpoint"], "the WebUI's DPM++ 2M is the midpoint solver");
      allowOnly(method, args, "lower_order_final", [true], "the WebUI sampler always steps down at the end");
      allowOnly(method, args, "euler_at_final", [false], "not a WebUI sampler option");
      allowOnly(method, args, "use_lu_lambdas", [false], "not a WebUI schedule");
      allowOnly(method, args, "final_sigmas_type", ["zero"], "the WebUI schedules end at sigma 0");
      allowOnly(method, args, "lambda_min_clipped", [], "not a WebUI sampler option");
      allowOnly(method, args, "variance_type", [], "not a WebUI sampler option");
      samplerName = sde ? (args["solver_order"] === 3 ? "DPM++ 3M SDE" : "DPM++ 2M SDE") : "DPM++ 2M";
      break;
    }
    case "EulerAncestralDiscreteScheduler":
      samplerName = "Euler a";
      break;
    case "LCMScheduler":
      for (const field of [
        "original_inference_steps",
        "clip_samples",
        "clip_samples_range",
        "set_alpha_to_one",
        "timestep_scaling",
      ]) {
        allowOnly(method, args, field, [], "not a WebUI sampler option");
      }
      samplerName = "LCM";
      break;
  }
  const karras = scheduler.method === "DPMSolverMultistepScheduler" && args["use_karras_sigmas"] === true;
  const schedule = karras ? "karras" : args["timestep_spacing"] === "trailing" ? "sgm_uniform" : "uniform";
  return { sampler_name: samplerName, scheduler: schedule };
}

// ---------------------------------------------------------------------------------------------
// ControlNet
// ---------------------------------------------------------------------------------------------

type Preprocess = NonNullable<NonNullable<SdTaskArgs["controlnet"]>["preprocess"]>;

/** A sd-webui-controlnet preprocessor (`module`) with its two numeric sliders. */
export type ControlnetModule = { module: string; threshold_a?: number; threshold_b?: number };

/** Preprocessors sd-webui-controlnet has under the same name and that take no arguments. */
const PLAIN_MODULES: ReadonlySet<string> = new Set([
  "scribble_hed",
  "softedge_hedsafe",
  "depth_midas",
  "openpose",
  "openpose_face",
  "openpose_faceonly",
  "openpose_full",
  "openpose_hand",
  "normal_bae",
  "lineart_coarse",
  "lineart_realistic",
  "lineart_anime",
]);

/**
 * Maps a Crynux ControlNet preprocessor to the sd-webui-controlnet `module` and its sliders. Percentages
 * (`FloatFractionAsInt`) become fractions, as the Crynux runner uses them.
 */
export function controlnetModule(preprocess: Preprocess | null): ControlnetModule {
  if (preprocess === null) return { module: "none" };
  const method = preprocess.method;
  // The schema fills in defaults when `args` is given; null or absent `args` means all defaults.
  const args = (("args" in preprocess ? preprocess.args : null) ?? {}) as Record<string, unknown>;
  const number = (field: string, fallback: number) => {
    const value = args[field];
    return typeof value === "number" ? value : fallback;
  };
  const refuse = (why: string) => unsupported(`ControlNet preprocessor ${method}`, why);
  switch (method) {
    case "canny":
      return {
        module: "canny",
        threshold_a: number("low_threshold", 100),
        threshold_b: number("high_threshold", 200),
      };
    case "mlsd":
      return {
        module: "mlsd",
        threshold_a: number("thr_v", 10) / 100,
        threshold_b: number("thr_d", 10) / 100,
      };
    case "depth_leres":
    case "depth_leres++":
      return { module: method, threshold_a: number("thr_a", 0), threshold_b: number("thr_b", 0) };
    case "mediapipe_face":
      return {
        module: "mediapipe_face",
        threshold_a: number("max_faces", 1),
        threshold_b: number("min_confidence", 50) / 100,
      };
    case "scribble_pidinet":
    case "softedge_pidinet":
    case "softedge_pidisafe":
      if (args["apply_filter"] === true) throw refuse("sd-webui-controlnet has no apply_filter option");
      return { module: method };
    case "depth_zoe":
      if (args["gamma_corrected"] === true) throw refuse("sd-webui-controlnet has no gamma_corrected option");
      return { module: "depth_zoe" };
    case "shuffle":
      if (["h", "w", "f"].some((field) => args[field] !== null && args[field] !== undefined)) {
        throw refuse("sd-webui-controlnet's shuffle takes no h, w or f");
      }
      return { module: "shuffle" };
    default:
      if (PLAIN_MODULES.has(method)) return { module: method };
      // scribble_hedsafe and scribble_pidisafe have no sd-webui-controlnet counterpart.
      throw refuse("sd-webui-controlnet has no such preprocessor");
  }
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

/** `<lora:...>`, `<hypernet:...>`, ...: WebUI extra-network tags, which would load models the task did not declare. */
const EXTRA_NETWORK_TAG = /<\s*[A-Za-z_][\w-]*\s*:[^>]*>/;

/**
 * Checks everything about a task that does not depend on what the server has installed, and says which
 * catalog lists the request needs.
 * @throws {SdEngineError} `unsupported_option` or `invalid_args`.
 */
export function checkAutomatic1111Task(
  args: SdTaskArgs,
  settings: Automatic1111MappingSettings,
): Automatic1111CatalogNeeds {
  if (args.dtype !== "auto" && args.dtype !== settings.dtype) {
    throw unsupported(`dtype ${args.dtype}`, `the server runs in ${settings.dtype}, set when it starts`);
  }
  if (args.unet !== "") throw unsupported("A separate unet", "the WebUI loads whole checkpoints");
  if (args.textual_inversion !== "") {
    throw unsupported(
      "textual_inversion",
      "WebUI embeddings are used by name in the prompt, not loaded per task",
    );
  }
  if (args.task_config.safety_checker && settings.safetyChecker === "refuse") {
    throw unsupported("safety_checker: true", "the WebUI has no safety checker");
  }
  for (const [field, text] of [
    ["prompt", args.prompt],
    ["negative_prompt", args.negative_prompt],
  ] as const) {
    if (EXTRA_NETWORK_TAG.test(text)) {
      throw unsupported(
        `A WebUI extra-network tag (<name:...>) in ${field}`,
        "models are declared by the task's lora field",
      );
    }
  }
  if (args.refiner !== null && args.refiner.steps !== args.task_config.steps) {
    throw unsupported(
      `refiner.steps (${args.refiner.steps}) different from task_config.steps (${args.task_config.steps})`,
      "the WebUI refiner continues the base model's step schedule",
    );
  }
  if (args.controlnet !== null && args.controlnet.image_dataurl === "") {
    throw new SdEngineError("invalid_args", "ControlNet needs an image: controlnet.image_dataurl is empty.");
  }
  automatic1111Sampler(args.scheduler);
  if (args.controlnet !== null) controlnetModule(args.controlnet.preprocess);
  return { loras: args.lora !== null, vaes: args.vae !== "", controlnetModels: args.controlnet !== null };
}

function percent(value: number): number {
  return value / 100;
}

/**
 * The `POST /sdapi/v1/txt2img` body for a task, with its models resolved against the server's catalog.
 * One batch of `num_images` images (seeds `seed`, `seed + 1`, ... as the WebUI numbers a batch), no
 * high-res pass, no face restoration, nothing saved on the server, settings kept after the request so
 * the next task on the same checkpoint does not reload it.
 *
 * @throws {SdEngineError} `unsupported_option` / `invalid_args` (see {@link checkAutomatic1111Task}),
 *   `model_not_found`.
 */
export function automatic1111Txt2ImgRequest(
  args: SdTaskArgs,
  catalog: Automatic1111Catalog,
  settings: Automatic1111MappingSettings,
): Automatic1111Txt2ImgRequest {
  checkAutomatic1111Task(args, settings);
  const config = args.task_config;
  const baseModel = typeof args.base_model === "string" ? args.base_model : args.base_model.name;
  const checkpoint = findCheckpoint(catalog, settings, baseModel, "checkpoint");
  const overrideSettings: Record<string, string | number | boolean> = {
    ...settings.overrideSettings,
    sd_model_checkpoint: checkpoint.title,
  };

  let prompt = args.prompt;
  if (args.lora !== null) {
    const { model, weight_file_name: weightFile, weight } = args.lora;
    const wanted = [settings.modelMap[model] ?? model];
    if (weightFile !== "")
      wanted.push(settings.modelMap[weightFile] ?? weightFile, withoutExtension(weightFile));
    const loras = catalog.loras ?? [];
    const lora = findByName(
      loras,
      (l) => [
        l.name,
        l.alias,
        l.path ? baseName(l.path) : null,
        l.path ? withoutExtension(baseName(l.path)) : null,
      ],
      wanted,
    );
    if (lora === undefined)
      throw modelNotFound(
        "LoRA",
        model,
        wanted[0]!,
        loras.map((l) => l.name),
      );
    prompt = `${prompt} <lora:${lora.name}:${percent(weight)}>`;
  }

  if (args.vae !== "") {
    const mapped = settings.modelMap[args.vae] ?? args.vae;
    const vaes = catalog.vaes ?? [];
    const vae = findByName(vaes, (v) => [v.model_name, v.filename ? baseName(v.filename) : null], [
      mapped,
      withoutExtension(mapped),
    ]);
    if (vae === undefined)
      throw modelNotFound(
        "VAE",
        args.vae,
        mapped,
        vaes.map((v) => v.model_name),
      );
    overrideSettings["sd_vae"] = vae.model_name;
  }

  const alwayson: Record<string, { args: unknown[] }> = {};
  if (args.controlnet !== null) {
    const { model, image_dataurl: image, weight, preprocess } = args.controlnet;
    const mapped = settings.modelMap[model] ?? model;
    const models = catalog.controlnetModels ?? [];
    const found = findByName(models, (m) => [m, m.replace(/\s*\[[0-9a-fA-F]+\]$/, "")], [mapped]);
    if (found === undefined) throw modelNotFound("ControlNet model", model, mapped, models);
    alwayson["controlnet"] = {
      args: [
        {
          enabled: true,
          image,
          ...controlnetModule(preprocess),
          model: found,
          weight: percent(weight),
          // The Crynux runner detects at the output resolution: max(width, height).
          processor_res: Math.max(config.image_width, config.image_height),
          resize_mode: "Crop and Resize",
          control_mode: "Balanced",
          guidance_start: 0,
          guidance_end: 1,
          pixel_perfect: false,
          low_vram: false,
          save_detected_map: false,
        },
      ],
    };
  }

  const sampler = automatic1111Sampler(args.scheduler);
  const body: Automatic1111Txt2ImgRequest = {
    prompt,
    negative_prompt: args.negative_prompt,
    styles: [],
    seed: config.seed,
    subseed: 0,
    subseed_strength: 0,
    seed_resize_from_h: -1,
    seed_resize_from_w: -1,
    sampler_name: sampler.sampler_name,
    scheduler: sampler.scheduler,
    batch_size: config.num_images,
    n_iter: 1,
    steps: config.steps,
    cfg_scale: config.cfg,
    width: config.image_width,
    height: config.image_height,
    restore_faces: false,
    tiling: false,
    enable_hr: false,
    do_not_save_samples: true,
    do_not_save_grid: true,
    send_images: true,
    save_images: false,
    override_settings: overrideSettings,
    override_settings_restore_afterwards: false,
    alwayson_scripts: alwayson,
  };
  if (args.refiner !== null) {
    body.refiner_checkpoint = findCheckpoint(
      catalog,
      settings,
      args.refiner.model,
      "refiner checkpoint",
    ).title;
    body.refiner_switch_at = percent(args.refiner.denoising_cutoff);
  }
  return body;
}
