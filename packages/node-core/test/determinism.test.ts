import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createModelResolver } from "../src/index.js";
import { generateTestModels } from "./helpers/models.js";

type Line = {
  id: string;
  resultHash?: string;
  response?: { choices: { finish_reason: string }[] };
  error?: string;
};

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const runner = fileURLToPath(new URL("./helpers/run-tasks.ts", import.meta.url));
let dir: string;
let modelDir: string;
let cacheDir: string;
let tasksFile: string;
let tasks: { id: string; args: Record<string, unknown> }[];

const prompts = [
  [{ role: "user", content: "Hello" }],
  [
    { role: "system", content: "You are terse." },
    { role: "user", content: "List three colours." },
  ],
  [
    { role: "user", content: "What is 2 + 2?" },
    { role: "assistant", content: "4" },
    { role: "user", content: "And times three? Explain in détail, s'il vous plaît — 谢谢." },
  ],
  [
    {
      role: "user",
      content: [
        { type: "text", text: "Describe " },
        { type: "text", text: "a quiet harbour at night." },
      ],
    },
  ],
];

/** 68 tasks over 4 models, 4 prompts and the decoding settings a task can ask for. */
function buildTasks(models: string[]): { id: string; args: Record<string, unknown> }[] {
  const settings: [string, Record<string, unknown>, number?][] = [
    ["greedy", { max_new_tokens: 20 }],
    ["sample", { do_sample: true, temperature: 0.9, top_k: 40, top_p: 0.95, max_new_tokens: 20 }, 11],
    ["sample-seed2", { do_sample: true, temperature: 0.9, top_k: 40, top_p: 0.95, max_new_tokens: 20 }, 12],
    [
      "min-p-n2",
      { do_sample: true, temperature: 1.1, min_p: 0.05, num_return_sequences: 2, max_new_tokens: 12 },
      5,
    ],
    ["penalty", { repetition_penalty: 1.3, max_new_tokens: 20 }],
    ["typical", { do_sample: true, temperature: 1, typical_p: 0.8, max_new_tokens: 12 }, 3],
    ["long", { max_new_tokens: 64 }],
    ["stop", { max_new_tokens: 40, stop_strings: ["e", "."] }],
  ];
  const list: { id: string; args: Record<string, unknown> }[] = [];
  models.forEach((model, m) => {
    settings.forEach(([name, generation_config, seed], s) => {
      const messages = prompts[(m + s) % prompts.length];
      list.push({
        id: `${model}/${name}`,
        args: { model: `file:${model}`, messages, generation_config, seed: seed ?? 0 },
      });
    });
    list.push({
      id: `${model}/template-args`,
      args: { model: `file:${model}`, messages: prompts[1], template_args: { date_string: "2 Feb 2026" } },
    });
  });
  for (const model of models.slice(0, 2)) {
    for (const bits of [8, 4]) {
      for (const [name, generation_config, seed] of [
        ["greedy", { max_new_tokens: 16 }, 0],
        ["sample", { do_sample: true, temperature: 0.8, max_new_tokens: 16 }, 21],
        ["n3", { do_sample: true, temperature: 1.3, num_return_sequences: 3, max_new_tokens: 8 }, 4],
        ["penalty", { repetition_penalty: 1.2, max_new_tokens: 16 }, 0],
      ] as const) {
        list.push({
          id: `${model}/q${bits}/${name}`,
          args: {
            model: `file:${model}`,
            messages: prompts[bits === 8 ? 2 : 3],
            quantize_bits: bits,
            generation_config,
            seed,
          },
        });
      }
    }
  }
  return list;
}

function runProcess(threads: number, order: "forward" | "reverse"): Promise<Map<string, Line>> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        "--conditions=source",
        "--import",
        "tsx",
        runner,
        tasksFile,
        modelDir,
        cacheDir,
        String(threads),
        order,
      ],
      { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 240_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`runner exited with ${code}: ${stderr.slice(-2000)}`));
      const lines = stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as Line);
      resolve(new Map(lines.map((line) => [line.id, line])));
    });
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "crynux-determinism-"));
  modelDir = join(dir, "models");
  cacheDir = join(dir, "cache");
  await mkdir(modelDir, { recursive: true });
  const models = await generateTestModels(modelDir);
  tasks = buildTasks(models);
  tasksFile = join(dir, "tasks.json");
  await writeFile(tasksFile, JSON.stringify(tasks));
  // Quantize up front, so the processes below find the Q8_0 / Q4_0 files in the shared cache.
  const resolve = createModelResolver({ modelDir, cacheDir });
  for (const model of models.slice(0, 2)) {
    for (const bits of [8, 4] as const)
      await resolve({ model: `file:${model}`, quantize_bits: bits } as never, {});
  }
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("GPT execution is deterministic across processes", () => {
  let runs: Record<1 | 2, Map<string, Line>[]>;

  beforeAll(async () => {
    // Two at a time: this machine has two cores.
    const [a, b] = await Promise.all([runProcess(1, "forward"), runProcess(2, "forward")]);
    const [c, d] = await Promise.all([runProcess(1, "forward"), runProcess(2, "forward")]);
    const [e, f] = await Promise.all([runProcess(1, "reverse"), runProcess(2, "reverse")]);
    runs = { 1: [a, c, e], 2: [b, d, f] };
  }, 600_000);

  it("runs at least 50 varied tasks without errors", () => {
    expect(tasks.length).toBeGreaterThanOrEqual(50);
    for (const run of [...runs[1], ...runs[2]]) {
      expect(run.size).toBe(tasks.length);
      for (const line of run.values()) expect(line.error, line.id).toBeUndefined();
    }
  });

  it.each([1, 2] as const)(
    "with %i thread(s), 3 processes (one in reverse task order) give identical result hashes",
    (threads) => {
      const [first, ...others] = runs[threads];
      for (const task of tasks) {
        const expected = first!.get(task.id)!.resultHash;
        expect(expected).toMatch(/^0x[0-9a-f]{64}$/);
        for (const other of others)
          expect(other.get(task.id)!.resultHash, `${task.id}, threads ${threads}`).toBe(expected);
      }
    },
  );

  it("covers both finish reasons, and another seed gives another result", () => {
    const run = runs[1][0]!;
    const reasons = new Set(
      [...run.values()].flatMap((line) => line.response!.choices.map((choice) => choice.finish_reason)),
    );
    expect([...reasons].sort()).toEqual(["length", "stop"]);
    const models = new Set(tasks.map((task) => task.id.split("/")[0]!));
    let differing = 0;
    for (const model of models) {
      if (run.get(`${model}/sample`)!.resultHash !== run.get(`${model}/sample-seed2`)!.resultHash)
        differing++;
    }
    expect(differing).toBe(models.size);
  });
});
