/**
 * Quickstart: what an application does before it pays for a Crynux task, and what decides whether two
 * nodes agree. Everything runs locally; nothing is downloaded.
 */
import {
  formatIssuePath,
  gptResultHash,
  hammingDistance,
  imagePHash,
  parseGptResponse,
  parseGptTaskArgs,
  parseModelRef,
  parseSdTaskArgs,
  pHashToHex,
  quantizationForBits,
  renderChatTemplate,
  sdResultFromPHashes,
  sdResultsMatch,
  TaskArgsError,
  TaskType,
  taskHash,
  workUnits,
} from "@crynux/tasks";

// The chat template of Qwen2.5 Instruct models (ChatML), as stored in their GGUF metadata (without tools).
const chatmlTemplate =
  "{%- for message in messages %}{%- if loop.first and message.role != 'system' %}" +
  "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}" +
  "{%- endif %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

function heading(text: string): void {
  console.log(`\n== ${text} ${"=".repeat(Math.max(0, 70 - text.length))}`);
}

heading("1. A GPT task, validated");
const gptArgs = {
  model: "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-fp16.gguf",
  messages: [
    { role: "system", content: "You are a concise assistant." },
    { role: "user", content: "Name the three primary colors." },
  ],
  generation_config: { max_new_tokens: 64, do_sample: false },
  seed: 42,
  quantize_bits: 4,
} as const;
const parsed = parseGptTaskArgs(gptArgs);
console.log("model       ", parseModelRef(parsed.model));
console.log("quantization", quantizationForBits(parsed.quantize_bits));
console.log("task hash   ", taskHash(gptArgs), "(keccak256 of the RFC 8785 canonical JSON)");
console.log("work units  ", workUnits(TaskType.GPT, gptArgs), "(the cap declared on-chain)");

heading("2. The exact prompt a node will feed the model");
console.log(
  renderChatTemplate({ template: chatmlTemplate, messages: parsed.messages, addGenerationPrompt: true }),
);

heading("3. Bad arguments are rejected with every field named");
try {
  parseGptTaskArgs({
    model: "Qwen/Qwen2.5-7B-Instruct",
    messages: [{ role: "developer", content: "hi" }],
    seed: -1,
  });
} catch (error) {
  if (!(error instanceof TaskArgsError)) throw error;
  console.log(error.shortMessage);
  for (const issue of error.issues) console.log(`  ${formatIssuePath(issue.path)}: ${issue.message}`);
}

heading("4. A GPT result and its hash");
const response = parseGptResponse({
  model: gptArgs.model,
  choices: [
    { index: 0, message: { role: "assistant", content: "Red, yellow and blue." }, finish_reason: "stop" },
  ],
  usage: { prompt_tokens: 31, completion_tokens: 7, total_tokens: 38 },
});
console.log(
  "result hash ",
  gptResultHash(response),
  "(sha256 of the canonical response; all 3 nodes must agree)",
);

heading("5. An SD task and the perceptual hashes that decide agreement");
const sdArgs = {
  base_model: "stabilityai/sdxl-turbo",
  prompt: "a lighthouse at dusk",
  task_config: { num_images: 2, steps: 1, cfg: 0 },
};
console.log("defaults    ", parseSdTaskArgs(sdArgs).task_config);
console.log("work units  ", workUnits(TaskType.SD, sdArgs));

/** A 256×256 test picture: a sunset gradient with a disc, optionally shifted and noisy. */
function picture(shift: number, noise: number, seed: number): Uint8Array {
  const size = 256;
  const pixels = new Uint8Array(size * size * 4);
  let state = seed;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      state = (state * 1664525 + 1013904223) >>> 0;
      const jitter = ((state >>> 24) / 255 - 0.5) * noise;
      const inDisc = (x - 90 - shift) ** 2 + (y - 110) ** 2 < 45 ** 2;
      const offset = (y * size + x) * 4;
      pixels[offset] = Math.max(0, Math.min(255, (inDisc ? 250 : 40 + y * 0.8) + jitter));
      pixels[offset + 1] = Math.max(0, Math.min(255, (inDisc ? 220 : 20 + y * 0.4) + jitter));
      pixels[offset + 2] = Math.max(0, Math.min(255, (inDisc ? 120 : 120 - y * 0.3) + jitter));
      pixels[offset + 3] = 255;
    }
  }
  return pixels;
}
const nodeA = [imagePHash(picture(0, 0, 1), 256, 256), imagePHash(picture(60, 0, 1), 256, 256)];
const nodeB = [imagePHash(picture(0, 6, 2), 256, 256), imagePHash(picture(60, 6, 3), 256, 256)];
const nodeC = [imagePHash(picture(120, 0, 1), 256, 256), imagePHash(picture(-40, 0, 1), 256, 256)];
for (const [name, hashes] of [
  ["node A", nodeA],
  ["node B", nodeB],
  ["node C", nodeC],
] as const) {
  console.log(name, hashes.map(pHashToHex).join(" "), "→ result", sdResultFromPHashes(hashes));
}
console.log(
  "A vs B distances",
  nodeA.map((hash, i) => hammingDistance(hash, nodeB[i]!)),
  "match:",
  sdResultsMatch(sdResultFromPHashes(nodeA), sdResultFromPHashes(nodeB)),
);
console.log(
  "A vs C distances",
  nodeA.map((hash, i) => hammingDistance(hash, nodeC[i]!)),
  "match:",
  sdResultsMatch(sdResultFromPHashes(nodeA), sdResultFromPHashes(nodeC)),
);
