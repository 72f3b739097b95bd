import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalize, parseSdTaskArgs, TaskArgsError } from "../src/index.js";
import { sdArgsArbitrary } from "./arbitraries.js";

function issuesOf(input: unknown): string[] {
  try {
    parseSdTaskArgs(input);
  } catch (error) {
    expect(error).toBeInstanceOf(TaskArgsError);
    return (error as TaskArgsError).issues.map((issue) => issue.path.join("."));
  }
  throw new Error("expected a TaskArgsError");
}

describe("parseSdTaskArgs", () => {
  it("fills in the defaults of the stable-diffusion-task format", () => {
    expect(
      parseSdTaskArgs({ base_model: "runwayml/stable-diffusion-v1-5", prompt: "a cat", task_config: {} }),
    ).toEqual({
      version: "2.5.0",
      base_model: "runwayml/stable-diffusion-v1-5",
      dtype: "auto",
      unet: "",
      prompt: "a cat",
      negative_prompt: "",
      task_config: {
        image_width: 512,
        image_height: 512,
        steps: 1,
        seed: 0,
        num_images: 6,
        safety_checker: true,
        cfg: 5,
      },
      lora: null,
      controlnet: null,
      scheduler: { method: "DPMSolverMultistepScheduler", args: null },
      vae: "",
      refiner: null,
      textual_inversion: "",
    });
  });

  it("accepts the README example of the original (SDXL-Turbo + LoRA + ControlNet)", () => {
    const args = parseSdTaskArgs({
      version: "2.0.0",
      base_model: { name: "stabilityai/sdxl-turbo" },
      prompt: "best quality, ultra high res, photorealistic++++, 1girl, desert, full shot, dark stillsuit",
      negative_prompt: "out of frame, lowers, text, error, cropped, worst quality",
      task_config: { num_images: 9, steps: 1, cfg: 0 },
      lora: { model: "https://civitai.com/api/download/models/178048" },
      controlnet: {
        model: "diffusers/controlnet-canny-sdxl-1.0",
        image_dataurl: "data:image/png;base64,iVBORw0KGgo=",
        preprocess: { method: "canny" },
        weight: 70,
      },
      scheduler: { method: "EulerAncestralDiscreteScheduler", args: { timestep_spacing: "trailing" } },
    });
    expect(args.base_model).toEqual({ name: "stabilityai/sdxl-turbo", variant: null });
    expect(args.lora).toEqual({
      model: "https://civitai.com/api/download/models/178048",
      weight_file_name: "",
      weight: 100,
    });
    expect(args.controlnet?.preprocess).toEqual({ method: "canny" });
    expect(args.task_config).toMatchObject({ num_images: 9, steps: 1, cfg: 0, image_width: 512 });
  });

  it("applies preprocessor argument defaults", () => {
    const args = parseSdTaskArgs({
      base_model: "m",
      prompt: "p",
      task_config: {},
      controlnet: { model: "c", preprocess: { method: "mediapipe_face", args: {} } },
    });
    expect(args.controlnet?.preprocess).toEqual({
      method: "mediapipe_face",
      args: { max_faces: 1, min_confidence: 50 },
    });
    expect(args.controlnet?.weight).toBe(70);
  });

  it("enforces the original limits and lists every bad field", () => {
    const paths = issuesOf({
      version: "2.5.2",
      base_model: "",
      prompt: "",
      task_config: { steps: 0, seed: 2 ** 31, num_images: 11, cfg: 21, image_width: 513, extra: true },
      lora: { model: "l", weight: 0 },
      controlnet: { model: "c", preprocess: { method: "dwpose" }, image_dataurl: "iVBORw0KGgo=" },
      scheduler: { method: "DDIMScheduler" },
      refiner: { model: "r", denoising_cutoff: 101 },
    });
    expect(paths).toEqual(
      expect.arrayContaining([
        "version",
        "base_model",
        "prompt",
        "task_config.steps",
        "task_config.seed",
        "task_config.num_images",
        "task_config.cfg",
        "task_config.image_width",
        "task_config.extra",
        "lora.weight",
        "controlnet.preprocess.method",
        "controlnet.image_dataurl",
        "scheduler.method",
        "refiner.denoising_cutoff",
      ]),
    );
  });

  it("requires base_model, prompt and task_config", () => {
    expect(issuesOf({})).toEqual(expect.arrayContaining(["base_model", "prompt", "task_config"]));
  });

  it("rejects preprocessors the original leaves out of its union (softedge_hed, dwpose)", () => {
    for (const method of ["softedge_hed", "dwpose"]) {
      expect(
        issuesOf({
          base_model: "m",
          prompt: "p",
          task_config: {},
          controlnet: { model: "c", preprocess: { method } },
        }),
      ).toEqual(["controlnet.preprocess.method"]);
    }
  });

  it("parse(serialize(x)) == x for valid arguments", () => {
    fc.assert(
      fc.property(sdArgsArbitrary, (input) => {
        const parsed = parseSdTaskArgs(input);
        expect(parseSdTaskArgs(JSON.parse(JSON.stringify(parsed)))).toEqual(parsed);
        expect(parseSdTaskArgs(canonicalize(parsed))).toEqual(parsed);
      }),
      { numRuns: 300 },
    );
  });

  it("never throws anything but TaskArgsError on junk", () => {
    const junk = fc.oneof(
      fc.anything(),
      sdArgsArbitrary.chain((args) =>
        fc
          .record({
            key: fc.constantFrom("task_config", "controlnet", "scheduler", "lora", "prompt"),
            value: fc.anything(),
          })
          .map(({ key, value }) => ({ ...args, [key]: value })),
      ),
    );
    fc.assert(
      fc.property(junk, (value) => {
        try {
          parseSdTaskArgs(value);
        } catch (error) {
          expect(error).toBeInstanceOf(TaskArgsError);
        }
      }),
      { numRuns: 500 },
    );
  });
});
