/**
 * Writes a seeded random-weight GGUF test model (see src/testModels/generate.ts).
 *
 *   tsx packages/node-core/scripts/generate-test-model.ts --out x.gguf --shape tiny --seed 1 --type F16
 *
 * Exit status: 0 done, 1 failed while writing, 2 invalid arguments.
 */
import { mkdir, readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  type GenerateTestModelOptions,
  generateTestModel,
  TEST_MODEL_SHAPES,
  TestModelError,
  type TestModelProgress,
} from "../src/testModels/generate.js";

const SHAPES = Object.keys(TEST_MODEL_SHAPES) as (keyof typeof TEST_MODEL_SHAPES)[];

const HELP = `Usage: tsx packages/node-core/scripts/generate-test-model.ts --out <file.gguf> [options]

Writes a GGUF model with seeded random weights and a real tokenizer vocabulary, which llama.cpp
(node-llama-cpp) loads and runs. The same options always give a byte-identical file.

Options:
  --out <path>                 output file (required; its directory is created)
  --shape <name>               ${SHAPES.join(" | ")} (default tiny)
  --seed <n>                   non-negative integer seed of the weights (default 1)
  --type <type>                F32 | F16: type of the 2-D weights; norms stay F32 (default F32)
  --arch <arch>                llama | qwen2 (qwen2 adds q/k/v biases) (default llama)
  --tokenizer <kind>           spm | bpe (default spm)
  --name <name>                general.name (default derived from the options)
  --eos-boost <x>              added to the EOS row of the output projection (default 0)
  --tied | --untied            tie output.weight to token_embd.weight or not
                               (default: tied for the real shapes, untied for tiny)
  --chat-template-file <path>  Jinja chat template (default ChatML)
  --quiet                      no progress line on stderr
  -h, --help                   show this help

Sizes: tiny < 1 MB; qwen2.5-0.5b ≈ 1 GB as F16, 2 GB as F32; llama-3.2-1b ≈ 2.5 GB as F16, 5 GB as F32.
`;

class UsageError extends Error {}

function oneOf<T extends string>(
  flag: string,
  value: string | undefined,
  allowed: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value))
    throw new UsageError(`--${flag} must be one of ${allowed.join(", ")}, not "${value}".`);
  return value as T;
}

async function parse(
  argv: string[],
): Promise<{ out: string; options: GenerateTestModelOptions; quiet: boolean } | "help"> {
  let values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; strict: true }>>["values"];
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return "help";
  if (!values.out) throw new UsageError("--out <path> is required.");
  const seedText = values.seed ?? "1";
  if (!/^\d+$/.test(seedText) || !Number.isSafeInteger(Number(seedText)))
    throw new UsageError(`--seed must be a non-negative integer, not "${seedText}".`);
  let eosBoost: number | undefined;
  if (values["eos-boost"] !== undefined) {
    eosBoost = Number(values["eos-boost"]);
    if (values["eos-boost"].trim() === "" || !Number.isFinite(eosBoost))
      throw new UsageError(`--eos-boost must be a number, not "${values["eos-boost"]}".`);
  }
  if (values.tied && values.untied) throw new UsageError("--tied and --untied exclude each other.");
  let chatTemplate: string | undefined;
  if (values["chat-template-file"] !== undefined) {
    try {
      chatTemplate = await readFile(values["chat-template-file"], "utf8");
    } catch (error) {
      throw new UsageError(`Cannot read --chat-template-file: ${(error as Error).message}`);
    }
  }
  const options: GenerateTestModelOptions = { seed: Number(seedText) };
  const shape = oneOf("shape", values.shape, SHAPES);
  if (shape) options.shape = shape;
  const type = oneOf("type", values.type?.toUpperCase(), ["F32", "F16"] as const);
  if (type) options.type = type;
  const architecture = oneOf("arch", values.arch, ["llama", "qwen2"] as const);
  if (architecture) options.architecture = architecture;
  const tokenizer = oneOf("tokenizer", values.tokenizer, ["spm", "bpe"] as const);
  if (tokenizer) options.tokenizer = tokenizer;
  if (values.name !== undefined) options.name = values.name;
  if (eosBoost !== undefined) options.eosBoost = eosBoost;
  if (values.tied || values.untied) options.tiedEmbeddings = Boolean(values.tied);
  if (chatTemplate !== undefined) options.chatTemplate = chatTemplate;
  return { out: resolve(values.out), options, quiet: Boolean(values.quiet) };
}

const OPTIONS = {
  out: { type: "string" },
  shape: { type: "string" },
  seed: { type: "string" },
  type: { type: "string" },
  arch: { type: "string" },
  tokenizer: { type: "string" },
  name: { type: "string" },
  "eos-boost": { type: "string" },
  tied: { type: "boolean" },
  untied: { type: "boolean" },
  "chat-template-file": { type: "string" },
  quiet: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const MB = 1024 * 1024;

/** A progress line: rewritten in place on a terminal, one line per 10 % otherwise. */
function progressReporter(started: number): (progress: TestModelProgress) => void {
  const tty = process.stderr.isTTY;
  let lastDraw = 0;
  let lastTenth = -1;
  let finished = false;
  return ({ bytesWritten, totalBytes, tensor }) => {
    const now = performance.now();
    const done = bytesWritten >= totalBytes;
    const tenth = Math.floor((bytesWritten / totalBytes) * 10);
    if (finished || (tty ? now - lastDraw < 200 && !done : tenth === lastTenth && !done)) return;
    finished = done;
    lastDraw = now;
    lastTenth = tenth;
    const seconds = (now - started) / 1000;
    const line =
      `${((bytesWritten / totalBytes) * 100).toFixed(1).padStart(5)}%  ` +
      `${(bytesWritten / MB).toFixed(1)} / ${(totalBytes / MB).toFixed(1)} MiB  ` +
      `${(bytesWritten / MB / Math.max(seconds, 1e-3)).toFixed(0)} MiB/s  ${tensor}`;
    process.stderr.write(tty ? `\r${line.padEnd(100)}` : `${line}\n`);
  };
}

async function main(): Promise<number> {
  let parsed: Awaited<ReturnType<typeof parse>>;
  try {
    parsed = await parse(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`generate-test-model: ${error.message}\nRun with --help for usage.\n`);
    return 2;
  }
  if (parsed === "help") {
    process.stdout.write(HELP);
    return 0;
  }
  const { out, options, quiet } = parsed;
  const started = performance.now();
  try {
    await mkdir(dirname(out), { recursive: true });
    const { bytes } = await generateTestModel(out, options, quiet ? undefined : progressReporter(started));
    if (!quiet && process.stderr.isTTY) process.stderr.write("\n");
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`${out}: ${bytes} bytes in ${seconds.toFixed(1)} s\n`);
    return 0;
  } catch (error) {
    if (!quiet && process.stderr.isTTY) process.stderr.write("\n");
    if (error instanceof TestModelError) {
      process.stderr.write(`generate-test-model: ${error.shortMessage}\nRun with --help for usage.\n`);
      return 2;
    }
    process.stderr.write(`generate-test-model: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

process.exitCode = await main();
