import fc from "fast-check";
import type { GptTaskArgsInput, SdTaskArgsInput } from "../src/index.js";

/** JSON values as they arrive over the wire (JSON cannot carry -0). */
const json = fc
  .jsonValue({ maxDepth: 2 })
  .map((value) => JSON.parse(JSON.stringify(value)) as unknown)
  // A "__proto__" key is rejected by the schemas on purpose (see docs/tasks.md).
  .filter((value) => !JSON.stringify(value).includes('"__proto__"'));
const nonEmpty = fc.string({ minLength: 1, maxLength: 40 });
const probability = fc.double({ min: 0, max: 1, noNaN: true, noDefaultInfinity: true });
const base64 = fc
  .uint8Array({ minLength: 1, maxLength: 30 })
  .map((bytes) => Buffer.from(bytes).toString("base64"));

export const modelRefArbitrary = fc.constantFrom(
  "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf",
  "bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
  "hf:owner/repo@v1.0:q4_k_m",
  "file:/models/tiny.gguf",
  "file:models/relative path.gguf",
);

const contentArbitrary = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.constant(null),
  fc.array(
    fc.oneof(
      nonEmpty.map((text) => ({ type: "text" as const, text })),
      base64.map((data) => ({ type: "image" as const, base64: data })),
    ),
    { maxLength: 3 },
  ),
);

const messageArbitrary = fc.record(
  {
    role: fc.constantFrom("system", "user", "assistant", "tool"),
    content: contentArbitrary,
    tool_call_id: fc.option(fc.string({ maxLength: 10 })),
    tool_calls: fc.option(fc.array(fc.dictionary(fc.string({ maxLength: 8 }), json), { maxLength: 2 })),
  },
  { requiredKeys: ["role"] },
);

const generationConfigArbitrary = fc.record(
  {
    max_new_tokens: fc.integer({ min: 1, max: 131072 }),
    stop_strings: fc.array(nonEmpty, { maxLength: 4 }),
    do_sample: fc.boolean(),
    num_beams: fc.integer({ min: 1, max: 16 }),
    temperature: fc.double({ min: 0, max: 100, noNaN: true }),
    typical_p: probability,
    top_k: fc.integer({ min: 0, max: 1000 }),
    top_p: probability,
    min_p: probability,
    repetition_penalty: fc.double({ min: 0.01, max: 100, noNaN: true }),
    num_return_sequences: fc.integer({ min: 1, max: 10 }),
  },
  { requiredKeys: [] },
);

/** Valid GPT task arguments, with optional fields present or absent. */
export const gptArgsArbitrary: fc.Arbitrary<GptTaskArgsInput> = fc.record(
  {
    model: modelRefArbitrary,
    messages: fc.array(messageArbitrary, { minLength: 1, maxLength: 4 }),
    tools: fc.option(fc.array(fc.dictionary(fc.string({ maxLength: 8 }), json), { maxLength: 2 })),
    generation_config: fc.option(generationConfigArbitrary),
    template_args: fc.option(fc.dictionary(fc.string({ maxLength: 8 }), json)),
    seed: fc.integer({ min: 0, max: 0xffffffff }),
    dtype: fc.constantFrom("float16", "bfloat16", "float32", "auto"),
    quantize_bits: fc.constantFrom(4, 8, null),
  },
  { requiredKeys: ["model", "messages"] },
) as fc.Arbitrary<GptTaskArgsInput>;

const side = fc.integer({ min: 8, max: 256 }).map((n) => n * 8);
const percent = fc.integer({ min: 1, max: 100 });

/** Valid SD task arguments. */
export const sdArgsArbitrary: fc.Arbitrary<SdTaskArgsInput> = fc.record(
  {
    version: fc.constantFrom("1.0.0", "2.0.0", "2.1.0", "2.5.0", "3.0.0"),
    base_model: fc.oneof(
      nonEmpty,
      fc.record({ name: nonEmpty, variant: fc.option(fc.constantFrom("fp16", "")) }),
    ),
    prompt: nonEmpty,
    negative_prompt: fc.string({ maxLength: 20 }),
    task_config: fc.record(
      {
        image_width: side,
        image_height: side,
        steps: fc.integer({ min: 1, max: 100 }),
        seed: fc.integer({ min: 0, max: 2147483647 }),
        num_images: fc.integer({ min: 1, max: 10 }),
        safety_checker: fc.boolean(),
        cfg: fc.double({ min: 0, max: 20, noNaN: true }),
      },
      { requiredKeys: [] },
    ),
    lora: fc.option(fc.record({ model: nonEmpty, weight: percent }, { requiredKeys: ["model"] })),
    controlnet: fc.option(
      fc.record(
        {
          model: nonEmpty,
          weight: percent,
          image_dataurl: base64.map((data) => `data:image/png;base64,${data}`),
          preprocess: fc.oneof(
            fc.constant({ method: "canny", args: { low_threshold: 50, high_threshold: 150 } }),
            fc.constant({ method: "openpose" }),
            fc.constant({ method: "depth_leres++", args: null }),
            fc.record({ method: fc.constant("mlsd"), args: fc.record({ thr_v: percent, thr_d: percent }) }),
          ),
        },
        { requiredKeys: ["model"] },
      ),
    ),
    scheduler: fc.oneof(
      fc.constant({ method: "EulerAncestralDiscreteScheduler", args: { timestep_spacing: "trailing" } }),
      fc.constant({
        method: "DPMSolverMultistepScheduler",
        args: { use_karras_sigmas: true, solver_order: 2 },
      }),
      fc.constant({ method: "LCMScheduler" }),
    ),
    refiner: fc.option(
      fc.record({ model: nonEmpty, denoising_cutoff: percent }, { requiredKeys: ["model"] }),
    ),
  },
  { requiredKeys: ["base_model", "prompt", "task_config"] },
) as fc.Arbitrary<SdTaskArgsInput>;
