import { readFileSync } from "node:fs";
import {
  encodePng,
  imagePHash,
  parseSdTaskArgs,
  pngPHash,
  type SdTaskArgs,
  type SdTaskArgsInput,
  sdResultFromPHashes,
  TaskArgsError,
} from "@crynux/tasks";
import { delay, HttpResponse, http } from "msw";
import { setupServer } from "msw/node";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  AUTOMATIC1111_DEFAULT_OVERRIDE_SETTINGS,
  type Automatic1111Txt2ImgRequest,
  automatic1111Sampler,
  type CreateAutomatic1111EngineParameters,
  createAutomatic1111Engine,
  createSdExecutor,
  NodeCoreError,
  type SdEngine,
  SdEngineError,
  type SdEngineErrorReason,
} from "../src/index.js";

// #region A fake AUTOMATIC1111 WebUI (1.10) on msw: the real JSON shapes of its API, images drawn from a
// seeded PRNG per seed, so that the same request gives the same PNGs.

const URL_BASE = "http://a1111.test:7860";
const MODELS_DIR = "/home/sd/stable-diffusion-webui/models";

const CHECKPOINTS = [
  {
    title: "v1-5-pruned-emaonly.safetensors [6ce0161689]",
    model_name: "v1-5-pruned-emaonly",
    hash: "6ce0161689",
    sha256: "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
    filename: `${MODELS_DIR}/Stable-diffusion/v1-5-pruned-emaonly.safetensors`,
    config: null,
  },
  {
    title: "sd_xl_base_1.0.safetensors [31e35c80fc]",
    model_name: "sd_xl_base_1.0",
    hash: "31e35c80fc",
    sha256: "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
    filename: `${MODELS_DIR}/Stable-diffusion/sd_xl_base_1.0.safetensors`,
    config: null,
  },
  {
    title: "sd_xl_refiner_1.0.safetensors [7440042bbd]",
    model_name: "sd_xl_refiner_1.0",
    hash: "7440042bbd",
    sha256: "7440042bbdc8a24813002c09b6b69b64dc90fded4472613437b7f55f9b7d9c5f",
    filename: `${MODELS_DIR}/Stable-diffusion/sd_xl_refiner_1.0.safetensors`,
    config: null,
  },
  {
    title: "sd_xl_turbo_1.0_fp16.safetensors [e869ac7d69]",
    model_name: "sd_xl_turbo_1.0_fp16",
    hash: "e869ac7d69",
    sha256: null,
    filename: `${MODELS_DIR}/Stable-diffusion/sd_xl_turbo_1.0_fp16.safetensors`,
    config: null,
  },
];
const LORAS = [
  {
    name: "pixel-art-xl",
    alias: "pixel-art-xl",
    path: `${MODELS_DIR}/Lora/pixel-art-xl.safetensors`,
    metadata: { ss_network_dim: "64" },
  },
  {
    name: "add_detail",
    alias: "add_detail",
    path: `${MODELS_DIR}/Lora/add_detail.safetensors`,
    metadata: {},
  },
];
const VAES = [{ model_name: "sdxl_vae.safetensors", filename: `${MODELS_DIR}/VAE/sdxl_vae.safetensors` }];
const CONTROLNET_MODELS = ["control_v11p_sd15_canny [d14c016b]", "diffusers_xl_canny_full [2b69fca4]"];

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A "generated" picture: a seeded two-colour gradient with blobs and noise, opaque. */
function drawImage(seed: number, width: number, height: number): Uint8Array {
  const rnd = mulberry32(seed);
  const from = [rnd() * 255, rnd() * 255, rnd() * 255];
  const to = [rnd() * 255, rnd() * 255, rnd() * 255];
  const angle = rnd() * 6.28;
  const blobs = Array.from({ length: 4 }, () => [rnd(), rnd(), 0.05 + rnd() * 0.2, rnd() * 255] as const);
  const rgba = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const u = x / width;
      const v = y / height;
      const t = Math.min(1, Math.max(0, 0.5 + (u - 0.5) * Math.cos(angle) + (v - 0.5) * Math.sin(angle)));
      const o = (y * width + x) * 4;
      for (let c = 0; c < 3; c++) {
        let value = from[c]! + (to[c]! - from[c]!) * t;
        for (const [bx, by, r, shade] of blobs) if ((u - bx) ** 2 + (v - by) ** 2 < r * r) value = shade;
        rgba[o + c] = Math.max(0, Math.min(255, Math.round(value + (rnd() - 0.5) * 16)));
      }
      rgba[o + 3] = 255;
    }
  }
  return rgba;
}

function pngFor(seed: number, width: number, height: number): Uint8Array {
  return encodePng(drawImage(seed, width, height), width, height);
}

const base64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");

/** A txt2img answer as the WebUI writes it: images, the request echoed, and `info` as a JSON string. */
function txt2imgAnswer(body: Automatic1111Txt2ImgRequest, images: Uint8Array[], extraInfo: object = {}) {
  const seeds = images.map((_, i) => body.seed + i);
  return {
    images: images.map(base64),
    parameters: { ...body, script_args: [], sampler_index: "Euler" },
    info: JSON.stringify({
      prompt: body.prompt,
      all_prompts: seeds.map(() => body.prompt),
      negative_prompt: body.negative_prompt,
      all_negative_prompts: seeds.map(() => body.negative_prompt),
      seed: body.seed,
      all_seeds: seeds,
      subseed: 0,
      all_subseeds: seeds.map(() => 0),
      subseed_strength: 0,
      width: body.width,
      height: body.height,
      sampler_name: body.sampler_name,
      cfg_scale: body.cfg_scale,
      steps: body.steps,
      batch_size: body.batch_size,
      restore_faces: false,
      face_restoration_model: null,
      sd_model_name: "v1-5-pruned-emaonly",
      sd_model_hash: "6ce0161689",
      sd_vae_name: null,
      sd_vae_hash: null,
      seed_resize_from_w: -1,
      seed_resize_from_h: -1,
      denoising_strength: null,
      extra_generation_params: { "Schedule type": body.scheduler },
      index_of_first_image: 0,
      infotexts: seeds.map((seed) => `${body.prompt}\nSteps: ${body.steps}, Seed: ${seed}`),
      styles: [],
      job_timestamp: "20261124233000",
      clip_skip: 1,
      is_using_inpainting_conditioning: false,
      version: "v1.10.1",
      ...extraInfo,
    }),
  };
}

/** The fake server's state and what it saw. */
class FakeWebUi {
  txt2img: Automatic1111Txt2ImgRequest[] = [];
  interrupts = 0;
  controlnetInstalled = true;
  /** Replaces the txt2img answer; by default `batch_size` images drawn from `seed + i`. */
  answer: ((body: Automatic1111Txt2ImgRequest, request: Request) => Promise<Response> | Response) | null =
    null;
  onTxt2img: (() => void) | null = null;

  images(body: Automatic1111Txt2ImgRequest): Uint8Array[] {
    return Array.from({ length: body.batch_size }, (_, i) => pngFor(body.seed + i, body.width, body.height));
  }

  handlers = [
    http.get(`${URL_BASE}/sdapi/v1/sd-models`, () => HttpResponse.json(CHECKPOINTS)),
    http.get(`${URL_BASE}/sdapi/v1/loras`, () => HttpResponse.json(LORAS)),
    http.get(`${URL_BASE}/sdapi/v1/sd-vae`, () => HttpResponse.json(VAES)),
    http.get(`${URL_BASE}/controlnet/model_list`, () =>
      this.controlnetInstalled
        ? HttpResponse.json({ model_list: CONTROLNET_MODELS })
        : HttpResponse.json({ detail: "Not Found" }, { status: 404 }),
    ),
    http.get(`${URL_BASE}/sdapi/v1/options`, () =>
      HttpResponse.json({
        samples_save: true,
        samples_format: "png",
        sd_model_checkpoint: CHECKPOINTS[0]!.title,
        sd_vae: "Automatic",
        CLIP_stop_at_last_layers: 1,
        randn_source: "GPU",
      }),
    ),
    http.post(`${URL_BASE}/sdapi/v1/interrupt`, () => {
      this.interrupts++;
      return HttpResponse.json(null);
    }),
    http.post(`${URL_BASE}/sdapi/v1/txt2img`, async ({ request }) => {
      const body = (await request.clone().json()) as Automatic1111Txt2ImgRequest;
      this.txt2img.push(body);
      this.onTxt2img?.();
      if (this.answer) return this.answer(body, request);
      return HttpResponse.json(txt2imgAnswer(body, this.images(body)));
    }),
  ];
}

let webui = new FakeWebUi();
const server = setupServer();

beforeAll(() => server.listen({ onUnhandledRequest: "error" }));
beforeEach(() => {
  webui = new FakeWebUi();
  server.resetHandlers(...webui.handlers);
});
afterEach(() => server.resetHandlers());
afterAll(() => server.close());

const MODEL_MAP = {
  "crynux-network/stable-diffusion-v1-5": "v1-5-pruned-emaonly",
  "crynux-network/stable-diffusion-xl-base-1.0": "sd_xl_base_1.0",
  "stabilityai/stable-diffusion-xl-refiner-1.0": "sd_xl_refiner_1.0.safetensors",
  "nerijs/pixel-art-xl": "pixel-art-xl",
  "diffusers/controlnet-canny-sdxl-1.0": "diffusers_xl_canny_full",
  "madebyollin/sdxl-vae-fp16-fix": "sdxl_vae.safetensors",
};

function engine(overrides: Partial<CreateAutomatic1111EngineParameters> = {}): SdEngine {
  return createAutomatic1111Engine({ url: `${URL_BASE}/`, modelMap: MODEL_MAP, ...overrides });
}

function task(input: Partial<SdTaskArgsInput> = {}): SdTaskArgs {
  return parseSdTaskArgs({
    base_model: "crynux-network/stable-diffusion-v1-5",
    prompt: "a lighthouse on a cliff at dusk, oil painting",
    task_config: { image_width: 64, image_height: 64, num_images: 2, steps: 20, seed: 42, cfg: 7 },
    ...input,
  });
}

async function sentBody(args: SdTaskArgs, options: Partial<CreateAutomatic1111EngineParameters> = {}) {
  await engine(options).generate(args);
  expect(webui.txt2img).toHaveLength(1);
  return webui.txt2img[0]!;
}

async function engineError(promise: Promise<unknown>): Promise<SdEngineError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(SdEngineError);
    expect(error).toBeInstanceOf(NodeCoreError);
    return error as SdEngineError;
  }
  throw new Error("expected an SdEngineError");
}

async function expectReason(promise: Promise<unknown>, reason: SdEngineErrorReason): Promise<SdEngineError> {
  const error = await engineError(promise);
  expect(error.reason).toBe(reason);
  return error;
}

const CANNY_IMAGE = `data:image/png;base64,${base64(pngFor(7, 64, 64))}`;
// #endregion

describe("createAutomatic1111Engine: request mapping", () => {
  it("maps the prompt, the image settings and the checkpoint, pinning the settings that change pixels", async () => {
    const body = await sentBody(task({ negative_prompt: "blurry, low quality" }));
    expect(body).toEqual({
      prompt: "a lighthouse on a cliff at dusk, oil painting",
      negative_prompt: "blurry, low quality",
      styles: [],
      seed: 42,
      subseed: 0,
      subseed_strength: 0,
      seed_resize_from_h: -1,
      seed_resize_from_w: -1,
      sampler_name: "DPM++ 2M",
      scheduler: "uniform",
      batch_size: 2,
      n_iter: 1,
      steps: 20,
      cfg_scale: 7,
      width: 64,
      height: 64,
      restore_faces: false,
      tiling: false,
      enable_hr: false,
      do_not_save_samples: true,
      do_not_save_grid: true,
      send_images: true,
      save_images: false,
      override_settings: {
        ...AUTOMATIC1111_DEFAULT_OVERRIDE_SETTINGS,
        sd_model_checkpoint: "v1-5-pruned-emaonly.safetensors [6ce0161689]",
      },
      override_settings_restore_afterwards: false,
      alwayson_scripts: {},
    });
  });

  it("returns the server's images, decoded from base64, in order", async () => {
    const { images } = await engine().generate(task());
    expect(images).toEqual([pngFor(42, 64, 64), pngFor(43, 64, 64)]);
  });

  it("finds a checkpoint by title, model name, file name, hash or sha256 without a modelMap", async () => {
    for (const name of [
      "sd_xl_base_1.0.safetensors [31e35c80fc]",
      "sd_xl_base_1.0",
      "sd_xl_base_1.0.safetensors",
      "31e35c80fc",
      "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
    ]) {
      webui.txt2img = [];
      const body = await sentBody(task({ base_model: { name, variant: "fp16" } }), { modelMap: {} });
      expect(body.override_settings["sd_model_checkpoint"]).toBe("sd_xl_base_1.0.safetensors [31e35c80fc]");
    }
  });

  it("adds the LoRA as a prompt tag with its weight as a fraction, found by model or weight file", async () => {
    const byModel = await sentBody(task({ lora: { model: "nerijs/pixel-art-xl", weight: 70 } }));
    expect(byModel.prompt).toBe("a lighthouse on a cliff at dusk, oil painting <lora:pixel-art-xl:0.7>");
    webui.txt2img = [];
    const byFile = await sentBody(
      task({
        lora: {
          model: "https://civitai.com/api/download/models/62833",
          weight_file_name: "add_detail.safetensors",
        },
      }),
    );
    expect(byFile.prompt).toBe("a lighthouse on a cliff at dusk, oil painting <lora:add_detail:1>");
  });

  it("maps the VAE to the sd_vae setting", async () => {
    const body = await sentBody(task({ vae: "madebyollin/sdxl-vae-fp16-fix" }));
    expect(body.override_settings["sd_vae"]).toBe("sdxl_vae.safetensors");
  });

  it("maps the refiner to refiner_checkpoint and refiner_switch_at", async () => {
    const body = await sentBody(
      task({
        base_model: "crynux-network/stable-diffusion-xl-base-1.0",
        refiner: { model: "stabilityai/stable-diffusion-xl-refiner-1.0", denoising_cutoff: 75, steps: 20 },
      }),
    );
    expect(body.override_settings["sd_model_checkpoint"]).toBe("sd_xl_base_1.0.safetensors [31e35c80fc]");
    expect(body.refiner_checkpoint).toBe("sd_xl_refiner_1.0.safetensors [7440042bbd]");
    expect(body.refiner_switch_at).toBe(0.75);
  });

  it("maps ControlNet to an always-on sd-webui-controlnet unit with the preprocessor's sliders", async () => {
    const body = await sentBody(
      task({
        controlnet: {
          model: "diffusers/controlnet-canny-sdxl-1.0",
          image_dataurl: CANNY_IMAGE,
          weight: 70,
          preprocess: { method: "canny", args: { low_threshold: 50, high_threshold: 150 } },
        },
      }),
    );
    expect(body.alwayson_scripts).toEqual({
      controlnet: {
        args: [
          {
            enabled: true,
            image: CANNY_IMAGE,
            module: "canny",
            threshold_a: 50,
            threshold_b: 150,
            model: "diffusers_xl_canny_full [2b69fca4]",
            weight: 0.7,
            processor_res: 64,
            resize_mode: "Crop and Resize",
            control_mode: "Balanced",
            guidance_start: 0,
            guidance_end: 1,
            pixel_perfect: false,
            low_vram: false,
            save_detected_map: false,
          },
        ],
      },
    });
  });

  it("maps every preprocessor the extension has, with defaults when args are absent", async () => {
    const cases: [SdTaskArgsInput["controlnet"], object][] = [
      [{ model: "control_v11p_sd15_canny", preprocess: null }, { module: "none" }],
      [
        { model: "control_v11p_sd15_canny", preprocess: { method: "canny" } },
        { threshold_a: 100, threshold_b: 200 },
      ],
      [
        { model: "control_v11p_sd15_canny", preprocess: { method: "mlsd", args: { thr_v: 20, thr_d: 5 } } },
        { module: "mlsd", threshold_a: 0.2, threshold_b: 0.05 },
      ],
      [
        {
          model: "control_v11p_sd15_canny",
          preprocess: { method: "depth_leres++", args: { thr_a: 3, thr_b: 4 } },
        },
        { module: "depth_leres++", threshold_a: 3, threshold_b: 4 },
      ],
      [
        { model: "control_v11p_sd15_canny", preprocess: { method: "mediapipe_face", args: null } },
        { module: "mediapipe_face", threshold_a: 1, threshold_b: 0.5 },
      ],
      [
        { model: "control_v11p_sd15_canny", preprocess: { method: "openpose_full" } },
        { module: "openpose_full" },
      ],
      [
        {
          model: "control_v11p_sd15_canny",
          preprocess: { method: "softedge_pidisafe", args: { apply_filter: false } },
        },
        { module: "softedge_pidisafe" },
      ],
      [
        { model: "control_v11p_sd15_canny", preprocess: { method: "shuffle", args: {} } },
        { module: "shuffle" },
      ],
    ];
    for (const [controlnet, expected] of cases) {
      webui.txt2img = [];
      const body = await sentBody(task({ controlnet: { image_dataurl: CANNY_IMAGE, ...controlnet! } }));
      const unit = body.alwayson_scripts["controlnet"]!.args[0] as Record<string, unknown>;
      expect(unit).toMatchObject({
        ...expected,
        model: "control_v11p_sd15_canny [d14c016b]",
        processor_res: 64,
      });
    }
  });

  it("maps each scheduler to a WebUI sampler and schedule type", async () => {
    const cases: [SdTaskArgsInput["scheduler"], string, string][] = [
      [{ method: "DPMSolverMultistepScheduler", args: null }, "DPM++ 2M", "uniform"],
      [{ method: "DPMSolverMultistepScheduler", args: { use_karras_sigmas: true } }, "DPM++ 2M", "karras"],
      [
        {
          method: "DPMSolverMultistepScheduler",
          args: { algorithm_type: "sde-dpmsolver++", solver_order: 2 },
        },
        "DPM++ 2M SDE",
        "uniform",
      ],
      [
        {
          method: "DPMSolverMultistepScheduler",
          args: { algorithm_type: "sde-dpmsolver++", solver_order: 3 },
        },
        "DPM++ 3M SDE",
        "uniform",
      ],
      [
        { method: "DPMSolverMultistepScheduler", args: { solver_type: "midpoint", lower_order_final: true } },
        "DPM++ 2M",
        "uniform",
      ],
      [
        { method: "EulerAncestralDiscreteScheduler", args: { timestep_spacing: "trailing" } },
        "Euler a",
        "sgm_uniform",
      ],
      [
        { method: "EulerAncestralDiscreteScheduler", args: { timestep_spacing: "leading" } },
        "Euler a",
        "uniform",
      ],
      [{ method: "LCMScheduler", args: null }, "LCM", "uniform"],
    ];
    for (const [scheduler, sampler_name, schedule] of cases) {
      expect(automatic1111Sampler(task({ scheduler }).scheduler)).toEqual({
        sampler_name,
        scheduler: schedule,
      });
    }
    const body = await sentBody(
      task({
        scheduler: { method: "EulerAncestralDiscreteScheduler", args: { timestep_spacing: "trailing" } },
      }),
    );
    expect([body.sampler_name, body.scheduler]).toEqual(["Euler a", "sgm_uniform"]);
  });

  it("sends the configured settings and headers (e.g. --api-auth)", async () => {
    let authorization: string | null = null;
    webui.answer = (body, request) => {
      authorization = request.headers.get("authorization");
      return HttpResponse.json(txt2imgAnswer(body, webui.images(body)));
    };
    const body = await sentBody(task(), {
      overrideSettings: { CLIP_stop_at_last_layers: 2 },
      headers: { authorization: "Basic dXNlcjpwYXNz" },
    });
    expect(body.override_settings).toEqual({
      CLIP_stop_at_last_layers: 2,
      sd_model_checkpoint: "v1-5-pruned-emaonly.safetensors [6ce0161689]",
    });
    expect(authorization).toBe("Basic dXNlcjpwYXNz");
  });
});

describe("createAutomatic1111Engine: refusals", () => {
  const refusals: [string, Partial<SdTaskArgsInput>, Partial<CreateAutomatic1111EngineParameters>?][] = [
    ["a separate unet", { unet: "latent-consistency/lcm-sdxl" }],
    ["a textual inversion", { textual_inversion: "sd-concepts-library/cat-toy" }],
    ["a dtype the server does not run at", { dtype: "bfloat16" }],
    ["a refiner with its own step count", { refiner: { model: "sd_xl_refiner_1.0", steps: 10 } }],
    ["a <lora:...> tag in the prompt", { prompt: "a cat <lora:add_detail:2>" }],
    ["a <hypernet:...> tag in the negative prompt", { negative_prompt: "<hypernet:x:1>" }],
    ["a noise schedule argument", { scheduler: { method: "LCMScheduler", args: { beta_start: 0.001 } } }],
    [
      "a DPM solver the WebUI lacks",
      { scheduler: { method: "DPMSolverMultistepScheduler", args: { algorithm_type: "dpmsolver" } } },
    ],
    [
      "a third-order DPM++ without SDE",
      { scheduler: { method: "DPMSolverMultistepScheduler", args: { solver_order: 3 } } },
    ],
    [
      "zero terminal SNR",
      { scheduler: { method: "EulerAncestralDiscreteScheduler", args: { rescale_betas_zero_snr: true } } },
    ],
    [
      "an unknown timestep spacing",
      { scheduler: { method: "EulerAncestralDiscreteScheduler", args: { timestep_spacing: "karras" } } },
    ],
    [
      "a preprocessor the extension lacks",
      {
        controlnet: {
          model: "control_v11p_sd15_canny",
          image_dataurl: CANNY_IMAGE,
          preprocess: { method: "scribble_hedsafe" },
        },
      },
    ],
    [
      "a preprocessor option the extension lacks",
      {
        controlnet: {
          model: "control_v11p_sd15_canny",
          image_dataurl: CANNY_IMAGE,
          preprocess: { method: "depth_zoe", args: { gamma_corrected: true } },
        },
      },
    ],
    ["safety_checker when configured to refuse it", {}, { safetyChecker: "refuse" }],
  ];

  for (const [name, input, options] of refusals) {
    it(`refuses ${name} before asking the server anything`, async () => {
      // The server is unreachable: the refusal must not depend on it.
      server.resetHandlers(http.all(`${URL_BASE}/*`, () => HttpResponse.error()));
      const error = await expectReason(engine(options).generate(task(input)), "unsupported_option");
      expect(error.isTaskError).toBe(true);
      expect(error.docsPath).toBe("sd.md#errors");
    });
  }

  it("accepts safety_checker by default (the WebUI has none) and dtype auto or float16", async () => {
    await engine().generate(
      task({ dtype: "float16", task_config: { num_images: 1, image_width: 64, image_height: 64 } }),
    );
    expect(webui.txt2img).toHaveLength(1);
  });

  it("refuses ControlNet without an image as invalid arguments", async () => {
    const error = await expectReason(
      engine().generate(task({ controlnet: { model: "control_v11p_sd15_canny", preprocess: null } })),
      "invalid_args",
    );
    expect(error.isTaskError).toBe(true);
  });

  it("model_not_found for a checkpoint, LoRA, VAE or ControlNet model the server lacks (not a task error)", async () => {
    const cases: Partial<SdTaskArgsInput>[] = [
      { base_model: "runwayml/stable-diffusion-v1-5" },
      { lora: { model: "someone/unknown-lora" } },
      { vae: "stabilityai/sd-vae-ft-mse" },
      { controlnet: { model: "lllyasviel/sd-controlnet-depth", image_dataurl: CANNY_IMAGE } },
      { refiner: { model: "missing-refiner", steps: 20 } },
    ];
    for (const input of cases) {
      const error = await expectReason(engine().generate(task(input)), "model_not_found");
      expect(error.isTaskError).toBe(false);
    }
    const mapped = await expectReason(
      engine({ modelMap: { "crynux-network/stable-diffusion-v1-5": "v1-5-gone" } }).generate(task()),
      "model_not_found",
    );
    expect(mapped.details).toMatch(/v1-5-gone/);
    expect(webui.txt2img).toHaveLength(0);
  });

  it("model_not_found when the ControlNet extension is not installed", async () => {
    webui.controlnetInstalled = false;
    const error = await expectReason(
      engine().generate(
        task({ controlnet: { model: "control_v11p_sd15_canny", image_dataurl: CANNY_IMAGE } }),
      ),
      "model_not_found",
    );
    expect(error.shortMessage).toMatch(/no ControlNet extension/);
  });
});

describe("createAutomatic1111Engine: answers that are not the task's images", () => {
  it("engine_error for an HTTP error, with the WebUI's error text", async () => {
    webui.answer = () =>
      HttpResponse.json(
        {
          error: "OutOfMemoryError",
          detail: "",
          body: "",
          errors: "CUDA out of memory. Tried to allocate 2.00 GiB",
        },
        { status: 500 },
      );
    const error = await expectReason(engine().generate(task()), "engine_error");
    expect(error.shortMessage).toMatch(/HTTP 500/);
    expect(error.details).toMatch(/CUDA out of memory/);
    expect(error.isTaskError).toBe(false);
  });

  it("bad_response for malformed JSON or an unexpected shape", async () => {
    webui.answer = () =>
      new HttpResponse('{"images": ["iVBORw0K', { headers: { "content-type": "application/json" } });
    await expectReason(engine().generate(task()), "bad_response");
    webui.answer = () => HttpResponse.json({ images: "not a list" });
    await expectReason(engine().generate(task()), "bad_response");
    server.use(http.get(`${URL_BASE}/sdapi/v1/sd-models`, () => HttpResponse.json({ models: [] })));
    await expectReason(engine().generate(task()), "bad_response");
  });

  it("bad_response for too few or too many images", async () => {
    webui.answer = (body) => HttpResponse.json(txt2imgAnswer(body, webui.images(body).slice(1)));
    const error = await expectReason(engine().generate(task()), "bad_response");
    expect(error.shortMessage).toMatch(/returned 1 images, the task asks for 2/);
    webui.answer = (body) =>
      HttpResponse.json(txt2imgAnswer(body, [...webui.images(body), pngFor(1, 64, 64)]));
    await expectReason(engine().generate(task()), "bad_response");
  });

  it("skips a grid the WebUI puts first, as its info says", async () => {
    webui.answer = (body) => {
      const images = webui.images(body);
      return HttpResponse.json(
        txt2imgAnswer(body, [pngFor(999, 128, 64), ...images], { index_of_first_image: 1 }),
      );
    };
    const { images } = await engine().generate(task());
    expect(images).toEqual([pngFor(42, 64, 64), pngFor(43, 64, 64)]);
  });

  it("drops a ControlNet detected map appended after the images", async () => {
    webui.answer = (body) =>
      HttpResponse.json(txt2imgAnswer(body, [...webui.images(body), pngFor(5, 64, 64)]));
    const args = task({ controlnet: { model: "control_v11p_sd15_canny", image_dataurl: CANNY_IMAGE } });
    const { images } = await engine().generate(args);
    expect(images).toEqual([pngFor(42, 64, 64), pngFor(43, 64, 64)]);
  });

  it("bad_response for an image that is not base64 or not a PNG", async () => {
    webui.answer = (body) => {
      const answer = txt2imgAnswer(body, webui.images(body));
      answer.images[1] = "not base64!";
      return HttpResponse.json(answer);
    };
    await expectReason(engine().generate(task()), "bad_response");
    // What the WebUI sends with samples_format "jpg" (JPEG's magic bytes).
    webui.answer = (body) => {
      const answer = txt2imgAnswer(body, webui.images(body));
      answer.images[0] = base64(Uint8Array.of(0xff, 0xd8, 0xff, 0xe0, 0, 16, 74, 70, 73, 70, 0, 1));
      return HttpResponse.json(answer);
    };
    const error = await expectReason(engine().generate(task()), "bad_response");
    expect(error.shortMessage).toMatch(/Image 0 .* not a PNG/);
  });

  it("bad_response for an answer larger than the limit, declared or streamed", async () => {
    await expectReason(engine({ maxResponseBytes: 1000 }).generate(task()), "bad_response");
    webui.answer = (body) => {
      const bytes = new TextEncoder().encode(JSON.stringify(txt2imgAnswer(body, webui.images(body))));
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < bytes.length; i += 512) controller.enqueue(bytes.subarray(i, i + 512));
          controller.close();
        },
      });
      return new HttpResponse(stream, { headers: { "content-type": "application/json" } });
    };
    const error = await expectReason(engine({ maxResponseBytes: 2000 }).generate(task()), "bad_response");
    expect(error.shortMessage).toMatch(/larger than 2000 bytes/);
    // The default limit follows the task's size and leaves room for real answers.
    await engine().generate(task());
  });

  it("engine_unreachable when the connection fails", async () => {
    server.resetHandlers(http.all(`${URL_BASE}/*`, () => HttpResponse.error()));
    const error = await expectReason(engine().generate(task()), "engine_unreachable");
    expect(error.isTaskError).toBe(false);
  });

  it("timeout: gives up after timeoutMs and interrupts the generation", async () => {
    webui.answer = async () => {
      await delay("infinite");
      return HttpResponse.json({});
    };
    await expectReason(engine({ timeoutMs: 300 }).generate(task()), "timeout");
    expect(webui.txt2img).toHaveLength(1);
    expect(webui.interrupts).toBe(1);
  });

  it("aborted: the caller's signal stops the generation and interrupts it", async () => {
    const controller = new AbortController();
    webui.onTxt2img = () => controller.abort(new Error("node shutting down"));
    webui.answer = async () => {
      await delay("infinite");
      return HttpResponse.json({});
    };
    const error = await expectReason(engine().generate(task(), { signal: controller.signal }), "aborted");
    expect((error.cause as Error).message).toBe("node shutting down");
    expect(webui.interrupts).toBe(1);
  });

  it("aborted before it starts: no request at all", async () => {
    const controller = new AbortController();
    controller.abort();
    await expectReason(engine().generate(task(), { signal: controller.signal }), "aborted");
    expect(webui.txt2img).toHaveLength(0);
    expect(webui.interrupts).toBe(0);
  });

  it("an abort while reading the model list does not interrupt anybody's generation", async () => {
    const controller = new AbortController();
    server.use(
      http.get(`${URL_BASE}/sdapi/v1/sd-models`, async () => {
        controller.abort();
        await delay("infinite");
        return HttpResponse.json([]);
      }),
    );
    await expectReason(engine().generate(task(), { signal: controller.signal }), "aborted");
    expect(webui.interrupts).toBe(0);
  });

  it("refuses invalid parameters", () => {
    expect(() => createAutomatic1111Engine({ url: "ftp://a1111.test" })).toThrow(NodeCoreError);
    expect(() => createAutomatic1111Engine({ url: URL_BASE, timeoutMs: 0 })).toThrow(/timeoutMs/);
  });
});

describe("createAutomatic1111Engine: info", () => {
  it("describes the server: loaded checkpoint, checkpoints, LoRAs, ControlNet models", async () => {
    expect(await engine().info()).toEqual({
      engine: "automatic1111",
      url: URL_BASE,
      checkpoint: "v1-5-pruned-emaonly.safetensors [6ce0161689]",
      checkpoints: CHECKPOINTS.map((c) => c.title),
      loras: ["pixel-art-xl", "add_detail"],
      controlnetModels: CONTROLNET_MODELS,
    });
    webui.controlnetInstalled = false;
    expect((await engine().info()).controlnetModels).toEqual([]);
  });
});

describe("createSdExecutor", () => {
  it("hashes the engine's PNGs: result = sdResultFromPHashes(pngPHash of each image)", async () => {
    const executor = createSdExecutor({ engine: engine() });
    const input = {
      base_model: "crynux-network/stable-diffusion-v1-5",
      prompt: "a red fox in the snow",
      task_config: { image_width: 128, image_height: 96, num_images: 3, seed: 1000, steps: 25 },
    };
    const { images, pHashes, result } = await executor.execute(input);
    const expected = [1000, 1001, 1002].map((seed) => imagePHash(drawImage(seed, 128, 96), 128, 96));
    expect(pHashes).toEqual(expected);
    expect(images.map(pngPHash)).toEqual(expected);
    expect(result).toBe(sdResultFromPHashes(expected));
    expect(result).toMatch(/^0x[0-9a-f]{48}$/);
    // Different pictures, different hashes: the hash is not degenerate.
    expect(new Set(pHashes).size).toBe(3);
  });

  it("runs the default num_images (6) and 512x512 of an otherwise empty task_config", async () => {
    const executor = createSdExecutor({ engine: engine() });
    const { images, result } = await executor.execute({
      base_model: "sd_xl_turbo_1.0_fp16",
      prompt: "a cat",
      task_config: {},
    });
    expect(images).toHaveLength(6);
    expect(webui.txt2img[0]).toMatchObject({
      batch_size: 6,
      width: 512,
      height: 512,
      seed: 0,
      steps: 1,
      cfg_scale: 5,
    });
    expect(result.length).toBe(2 + 6 * 16);
  });

  it("refuses invalid arguments with TaskArgsError, before the engine", async () => {
    const executor = createSdExecutor({ engine: engine() });
    await expect(executor.execute({ prompt: "no model", task_config: {} })).rejects.toBeInstanceOf(
      TaskArgsError,
    );
    expect(webui.txt2img).toHaveLength(0);
  });

  function fakeEngine(images: Uint8Array[]): SdEngine {
    return {
      generate: async () => ({ images }),
      info: async () => ({
        engine: "fake",
        checkpoint: null,
        checkpoints: [],
        loras: [],
        controlnetModels: [],
      }),
    };
  }
  const twoImages = task();

  it("bad_response when the engine returns the wrong number of images", async () => {
    const executor = createSdExecutor({ engine: fakeEngine([pngFor(1, 64, 64)]) });
    await expectReason(executor.execute(twoImages), "bad_response");
  });

  it("bad_response when an image is not a PNG the network can hash, or not the task's size", async () => {
    const notPng = createSdExecutor({ engine: fakeEngine([pngFor(1, 64, 64), Uint8Array.of(1, 2, 3)]) });
    const error = await expectReason(notPng.execute(twoImages), "bad_response");
    expect(error.details).toMatch(/signature/);
    const wrongSize = createSdExecutor({ engine: fakeEngine([pngFor(1, 64, 64), pngFor(2, 64, 72)]) });
    const sizeError = await expectReason(wrongSize.execute(twoImages), "bad_response");
    expect(sizeError.shortMessage).toMatch(/64x72/);
  });

  it("passes engine errors through and keeps running later tasks", async () => {
    let calls = 0;
    const flaky: SdEngine = {
      ...fakeEngine([]),
      generate: async () => {
        calls++;
        if (calls === 1) throw new SdEngineError("engine_error", "boom");
        return { images: [pngFor(1, 64, 64), pngFor(2, 64, 64)] };
      },
    };
    const executor = createSdExecutor({ engine: flaky });
    const [first, second] = await Promise.allSettled([
      executor.execute(twoImages),
      executor.execute(twoImages),
    ]);
    expect(first.status === "rejected" && (first.reason as SdEngineError).reason).toBe("engine_error");
    expect(second.status === "fulfilled" && second.value.pHashes.length).toBe(2);
    expect((await executor.info()).engine).toBe("fake");
  });
});

it("the docs the errors point to exist", () => {
  const docs = readFileSync(new URL("../../../docs/sd.md", import.meta.url), "utf8");
  const anchors = new Set(
    [...docs.matchAll(/^#+ (.+)$/gm)].map((m) =>
      m[1]!
        .toLowerCase()
        .replace(/[^\w\- ]/g, "")
        .replace(/ /g, "-"),
    ),
  );
  for (const path of ["sd.md#errors", "sd.md#configuration", "sd.md#result-hashes"]) {
    expect(anchors.has(path.split("#")[1]!)).toBe(true);
  }
  expect(new SdEngineError("timeout", "x").docsPath).toBe("sd.md#errors");
});
