/** Benchmarks of @crynux/tasks: the work every relay upload, node task and client call does. */
import {
  canonicalBytes,
  canonicalize,
  gptResultHash,
  imagePHash,
  parseGptTaskArgs,
  parseSdTaskArgs,
  renderChatTemplate,
  taskHash,
} from "@crynux/tasks";
import { measure, report } from "./lib.js";

const longText = "The quick brown fox jumps over the lazy dog. ".repeat(200);
const gptArgs = {
  model: "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf",
  messages: Array.from({ length: 20 }, (_, i) => ({
    role: i % 2 === 0 ? "user" : "assistant",
    content: `${i}: ${longText}`,
  })),
  generation_config: { max_new_tokens: 512, temperature: 0.7, top_p: 0.9, do_sample: true },
  seed: 1,
};
const gptBytes = canonicalBytes(gptArgs).length;
const smallGpt = { model: "o/r:Q4_0", messages: [{ role: "user", content: "Hello!" }] };
const sdArgs = {
  base_model: "stabilityai/sdxl-turbo",
  prompt: "a lighthouse",
  task_config: { num_images: 4 },
};
const response = {
  model: gptArgs.model,
  choices: [
    { index: 0, message: { role: "assistant" as const, content: longText }, finish_reason: "stop" as const },
  ],
  usage: { prompt_tokens: 100, completion_tokens: 200, total_tokens: 300 },
};
const template =
  "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

function picture(size: number): Uint8Array {
  const pixels = new Uint8Array(size * size * 4);
  for (let i = 0; i < pixels.length; i++) pixels[i] = i % 4 === 3 ? 255 : (i * 2654435761) >>> 24;
  return pixels;
}
const p512 = picture(512);
const p1024 = picture(1024);

report("tasks", [
  measure(`canonicalize (GPT args, ${(gptBytes / 1024).toFixed(0)} KiB)`, () => canonicalize(gptArgs), {
    bytes: gptBytes,
  }),
  measure(`taskHash (GPT args, ${(gptBytes / 1024).toFixed(0)} KiB)`, () => taskHash(gptArgs), {
    bytes: gptBytes,
  }),
  measure("parseGptTaskArgs (20 long messages)", () => parseGptTaskArgs(gptArgs), { bytes: gptBytes }),
  measure("parseGptTaskArgs (1 short message)", () => parseGptTaskArgs(smallGpt)),
  measure("parseSdTaskArgs", () => parseSdTaskArgs(sdArgs)),
  measure("gptResultHash", () => gptResultHash(response)),
  measure("renderChatTemplate (ChatML, 20 messages)", () =>
    renderChatTemplate({ template, messages: gptArgs.messages as never }),
  ),
  measure("imagePHash 512×512", () => imagePHash(p512, 512, 512), { bytes: p512.length, samples: 9 }),
  measure("imagePHash 1024×1024", () => imagePHash(p1024, 1024, 1024), { bytes: p1024.length, samples: 9 }),
]);
