import type { SdTaskArgs } from "@crynux/tasks";
import { z } from "zod";
import { NodeCoreError } from "../errors.js";
import {
  AUTOMATIC1111_DEFAULT_OVERRIDE_SETTINGS,
  type Automatic1111Catalog,
  type Automatic1111MappingSettings,
  automatic1111Txt2ImgRequest,
  checkAutomatic1111Task,
} from "./automatic1111Request.js";
import type { SdEngine, SdEngineInfo, SdGenerateOptions, SdGenerateResult } from "./engine.js";
import { SdEngineError } from "./errors.js";

/** What {@link createAutomatic1111Engine} takes. */
export type CreateAutomatic1111EngineParameters = {
  /** Base URL of the WebUI, started with `--api` (e.g. `http://127.0.0.1:7860`). */
  url: string;
  /** The fetch to use; default `globalThis.fetch`. */
  fetch?: typeof globalThis.fetch;
  /** Limit for one `generate` or `info` call, in milliseconds, the model load included; default 10 minutes. */
  timeoutMs?: number;
  /**
   * Crynux model names (HF ids such as `crynux-network/stable-diffusion-v1-5`, URLs, file names) → the names
   * the WebUI knows them by (checkpoint title, model name or file name; LoRA, VAE or ControlNet model name).
   * Names that are not in the map are looked up as they are.
   */
  modelMap?: Record<string, string>;
  /** Headers sent with every request, e.g. `Authorization` for a WebUI started with `--api-auth`. */
  headers?: Record<string, string>;
  /**
   * Largest `txt2img` response accepted, in bytes. Default: what `num_images` uncompressed RGBA images of
   * the task's size take in base64, plus room for the request the WebUI echoes back.
   */
  maxResponseBytes?: number;
  /**
   * WebUI settings pinned on every request; default {@link AUTOMATIC1111_DEFAULT_OVERRIDE_SETTINGS}. A fork
   * that lacks one of these settings answers with an error: pass the subset it has.
   */
  overrideSettings?: Record<string, string | number | boolean>;
  /** `task_config.safety_checker: true` (the schema's default): ignore it (default) or refuse the task. */
  safetyChecker?: "ignore" | "refuse";
  /** The precision the WebUI runs at (`--no-half` gives float32); default `"float16"`. */
  dtype?: "float16" | "bfloat16" | "float32";
};

const parametersSchema = z.object({
  url: z.url({ protocol: /^https?$/ }),
  timeoutMs: z.int().positive().default(600_000),
  modelMap: z.record(z.string(), z.string().min(1)).default({}),
  headers: z.record(z.string(), z.string()).default({}),
  maxResponseBytes: z.int().positive().optional(),
  overrideSettings: z
    .record(z.string(), z.union([z.string(), z.number(), z.boolean()]))
    .default({ ...AUTOMATIC1111_DEFAULT_OVERRIDE_SETTINGS }),
  safetyChecker: z.enum(["ignore", "refuse"]).default("ignore"),
  dtype: z.enum(["float16", "bfloat16", "float32"]).default("float16"),
});

// Response shapes of the WebUI API (extra fields are kept out of the way, not refused).
const checkpointsSchema = z.array(
  z.looseObject({
    title: z.string(),
    model_name: z.string(),
    hash: z.string().nullish(),
    sha256: z.string().nullish(),
    filename: z.string(),
  }),
);
const lorasSchema = z.array(
  z.looseObject({ name: z.string(), alias: z.string().nullish(), path: z.string().nullish() }),
);
const vaesSchema = z.array(z.looseObject({ model_name: z.string(), filename: z.string().nullish() }));
const controlnetModelsSchema = z.looseObject({ model_list: z.array(z.string()) });
const optionsSchema = z.looseObject({ sd_model_checkpoint: z.string().nullish() });
const txt2imgResponseSchema = z.looseObject({
  images: z.array(z.string()).nullable(),
  parameters: z.unknown().optional(),
  info: z.string().nullish(),
});
const generationInfoSchema = z.looseObject({ index_of_first_image: z.int().min(0).optional() });

/** Limit for the small JSON documents (model lists, options). */
const CATALOG_RESPONSE_BYTES = 16 * 1024 * 1024;
/** How long an abort waits for the WebUI to acknowledge `/sdapi/v1/interrupt`. */
const INTERRUPT_TIMEOUT_MS = 5_000;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

type Call = {
  signal: AbortSignal;
  fetch: typeof globalThis.fetch;
  baseUrl: string;
  headers: Record<string, string>;
};

/**
 * An {@link SdEngine} on the API of an AUTOMATIC1111 Stable Diffusion WebUI (1.9 or later) or a compatible
 * fork (Forge), running beside the node with `--api`. Each task is one `POST /sdapi/v1/txt2img`: its
 * checkpoint through `override_settings.sd_model_checkpoint` (kept loaded for the next task), its LoRA as a
 * `<lora:name:weight>` prompt tag, its refiner through `refiner_checkpoint`/`refiner_switch_at`, its
 * ControlNet as an `alwayson_scripts.controlnet` unit (sd-webui-controlnet). Models are looked up in the
 * server's lists (`/sdapi/v1/sd-models`, `/sdapi/v1/loras`, `/sdapi/v1/sd-vae`, `/controlnet/model_list`),
 * through `modelMap`. What the API cannot express is refused with an `unsupported_option`
 * {@link SdEngineError} before the server is asked anything; see docs/sd.md for the field table.
 *
 * A timeout or an abort during generation also sends `POST /sdapi/v1/interrupt`, so the GPU is free for
 * the next task.
 */
export function createAutomatic1111Engine(parameters: CreateAutomatic1111EngineParameters): SdEngine {
  const parsed = parametersSchema.safeParse(parameters);
  if (!parsed.success) {
    throw new NodeCoreError("Invalid AUTOMATIC1111 engine parameters.", {
      details: z.prettifyError(parsed.error),
      docsPath: "sd.md#configuration",
    });
  }
  const config = parsed.data;
  const fetchImpl = parameters.fetch ?? globalThis.fetch;
  const baseUrl = config.url.replace(/\/+$/, "");
  const settings: Automatic1111MappingSettings = {
    modelMap: config.modelMap,
    overrideSettings: config.overrideSettings,
    safetyChecker: config.safetyChecker,
    dtype: config.dtype,
  };

  /** Runs `work` under the engine's time limit and the caller's signal, mapping both to SdEngineErrors. */
  async function bounded<T>(
    signal: AbortSignal | undefined,
    work: (call: Call) => Promise<T>,
    onCancel?: () => Promise<void>,
  ): Promise<T> {
    if (signal?.aborted) {
      throw new SdEngineError("aborted", "The SD generation was aborted.", { cause: signal.reason });
    }
    const controller = new AbortController();
    const timer = setTimeout(() => {
      controller.abort(
        new SdEngineError(
          "timeout",
          `The AUTOMATIC1111 server did not finish within ${config.timeoutMs} ms.`,
        ),
      );
    }, config.timeoutMs);
    const onAbort = () => {
      controller.abort(
        new SdEngineError("aborted", "The SD generation was aborted.", { cause: signal?.reason }),
      );
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await work({ signal: controller.signal, fetch: fetchImpl, baseUrl, headers: config.headers });
    } catch (error) {
      if (!controller.signal.aborted) throw error;
      await onCancel?.();
      throw controller.signal.reason;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  async function interrupt(): Promise<void> {
    try {
      const response = await fetchImpl(`${baseUrl}/sdapi/v1/interrupt`, {
        method: "POST",
        headers: config.headers,
        signal: AbortSignal.timeout(INTERRUPT_TIMEOUT_MS),
      });
      discard(response);
    } catch {
      // Best effort: the generation was given up on either way, and the caller gets the timeout or abort.
    }
  }

  async function catalogFor(call: Call, args: SdTaskArgs): Promise<Automatic1111Catalog> {
    const needs = checkAutomatic1111Task(args, settings);
    const [checkpoints, loras, vaes, controlnetModels] = await Promise.all([
      getJson(call, "/sdapi/v1/sd-models", checkpointsSchema),
      needs.loras ? getJson(call, "/sdapi/v1/loras", lorasSchema) : undefined,
      needs.vaes ? getJson(call, "/sdapi/v1/sd-vae", vaesSchema) : undefined,
      needs.controlnetModels ? getControlnetModels(call) : undefined,
    ]);
    if (needs.controlnetModels && controlnetModels === null) {
      throw new SdEngineError(
        "model_not_found",
        "The AUTOMATIC1111 server has no ControlNet extension (no /controlnet/model_list).",
        { details: "Install sd-webui-controlnet in the WebUI to run ControlNet tasks." },
      );
    }
    return {
      checkpoints,
      ...(loras ? { loras } : {}),
      ...(vaes ? { vaes } : {}),
      ...(controlnetModels ? { controlnetModels } : {}),
    };
  }

  return {
    async generate(args: SdTaskArgs, options: SdGenerateOptions = {}): Promise<SdGenerateResult> {
      // Refuse unsupported tasks before any request, whatever the state of the server.
      checkAutomatic1111Task(args, settings);
      let generating = false;
      return bounded(
        options.signal,
        async (call) => {
          const catalog = await catalogFor(call, args);
          const body = JSON.stringify(automatic1111Txt2ImgRequest(args, catalog, settings));
          const limit = config.maxResponseBytes ?? defaultResponseLimit(args, body.length);
          generating = true;
          const response = await requestJson(call, "POST", "/sdapi/v1/txt2img", body, limit);
          generating = false;
          return { images: imagesOf(response, args) };
        },
        () => (generating ? interrupt() : Promise.resolve()),
      );
    },

    async info(): Promise<SdEngineInfo> {
      return bounded(undefined, async (call) => {
        const [options, checkpoints, loras, controlnetModels] = await Promise.all([
          getJson(call, "/sdapi/v1/options", optionsSchema),
          getJson(call, "/sdapi/v1/sd-models", checkpointsSchema),
          getJson(call, "/sdapi/v1/loras", lorasSchema, { optional: true }),
          getControlnetModels(call),
        ]);
        return {
          engine: "automatic1111",
          url: baseUrl,
          checkpoint: options.sd_model_checkpoint ?? null,
          checkpoints: checkpoints.map((c) => c.title),
          loras: (loras ?? []).map((l) => l.name),
          controlnetModels: controlnetModels ?? [],
        };
      });
    },
  };
}

/**
 * The default bound on a `txt2img` response: base64 of `num_images` (one more with ControlNet, whose
 * detected map some versions add) uncompressed RGBA images plus 1 MiB each, and the request the WebUI
 * echoes in `parameters` and in every image's infotext.
 */
function defaultResponseLimit(args: SdTaskArgs, requestBytes: number): number {
  const { image_width: width, image_height: height, num_images: count } = args.task_config;
  const images = count + (args.controlnet === null ? 0 : 1);
  const perImage = width * height * 4 + 1024 * 1024;
  return Math.ceil((images * perImage * 4) / 3) + (count + 2) * requestBytes + 4 * 1024 * 1024;
}

async function getControlnetModels(call: Call): Promise<string[] | null> {
  const list = await getJson(call, "/controlnet/model_list", controlnetModelsSchema, { optional: true });
  return list === null ? null : list.model_list;
}

async function getJson<T extends z.ZodType>(
  call: Call,
  path: string,
  schema: T,
  options: { optional: true },
): Promise<z.output<T> | null>;
async function getJson<T extends z.ZodType>(call: Call, path: string, schema: T): Promise<z.output<T>>;
/** A GET of a small JSON document; with `optional`, a 404 (an extension not installed) gives `null`. */
async function getJson<T extends z.ZodType>(
  call: Call,
  path: string,
  schema: T,
  options: { optional?: boolean } = {},
): Promise<z.output<T> | null> {
  const json = await requestJson(call, "GET", path, undefined, CATALOG_RESPONSE_BYTES, options.optional);
  if (json === null) return null;
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new SdEngineError("bad_response", `The AUTOMATIC1111 server's ${path} has an unexpected shape.`, {
      details: z.prettifyError(parsed.error),
    });
  }
  return parsed.data;
}

/** One API call; returns the parsed JSON body (`null` for an optional resource that is not there). */
async function requestJson(
  call: Call,
  method: "GET" | "POST",
  path: string,
  body: string | undefined,
  limit: number,
  optional = false,
): Promise<unknown> {
  let response: Response;
  try {
    response = await call.fetch(`${call.baseUrl}${path}`, {
      method,
      headers: {
        accept: "application/json",
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...call.headers,
      },
      ...(body === undefined ? {} : { body }),
      signal: call.signal,
    });
  } catch (error) {
    if (call.signal.aborted) throw error;
    throw new SdEngineError(
      "engine_unreachable",
      `The AUTOMATIC1111 server at ${call.baseUrl} cannot be reached.`,
      {
        details: error instanceof Error ? `${error.message}${causeMessage(error)}` : String(error),
        cause: error,
      },
    );
  }
  if (optional && response.status === 404) {
    discard(response);
    return null;
  }
  if (!response.ok) {
    const text = await readBody(response, 64 * 1024, path).then(
      (bytes) => new TextDecoder().decode(bytes),
      () => "",
    );
    throw new SdEngineError(
      "engine_error",
      `The AUTOMATIC1111 server answered ${method} ${path} with HTTP ${response.status}.`,
      { details: text.slice(0, 2000) || undefined },
    );
  }
  const bytes = await readBody(response, limit, path);
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as unknown;
  } catch (error) {
    throw new SdEngineError("bad_response", `The AUTOMATIC1111 server's ${path} answer is not JSON.`, {
      details: new TextDecoder().decode(bytes.subarray(0, 200)),
      cause: error,
    });
  }
}

/**
 * Releases a body that will not be read. Not awaited: cancelling only frees the connection, and some
 * fetch implementations (msw's, for one) never settle the promise.
 */
function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}

function causeMessage(error: Error): string {
  return error.cause instanceof Error ? ` (${error.cause.message})` : "";
}

/** Reads a response body, refusing (and cancelling) it past `limit` bytes. */
async function readBody(response: Response, limit: number, path: string): Promise<Uint8Array> {
  const tooLarge = () =>
    new SdEngineError(
      "bad_response",
      `The AUTOMATIC1111 server's ${path} answer is larger than ${limit} bytes.`,
    );
  const declared = Number(response.headers.get("content-length") ?? Number.NaN);
  if (Number.isFinite(declared) && declared > limit) {
    discard(response);
    throw tooLarge();
  }
  if (response.body === null) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > limit) {
      reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** The task's PNG images out of a `txt2img` answer. */
function imagesOf(json: unknown, args: SdTaskArgs): Uint8Array[] {
  const parsed = txt2imgResponseSchema.safeParse(json);
  if (!parsed.success) {
    throw new SdEngineError("bad_response", "The AUTOMATIC1111 txt2img answer has an unexpected shape.", {
      details: z.prettifyError(parsed.error),
    });
  }
  const images = parsed.data.images ?? [];
  // With a grid (a WebUI setting), the images start after it; `info` says where.
  let first = 0;
  if (parsed.data.info) {
    try {
      first = generationInfoSchema.parse(JSON.parse(parsed.data.info)).index_of_first_image ?? 0;
    } catch {
      // `info` only helps to skip a grid; without it the images start at 0.
    }
  }
  const wanted = args.task_config.num_images;
  const available = images.length - first;
  // ControlNet versions that ignore save_detected_map append the detected map after the images.
  const countOk = args.controlnet === null ? available === wanted : available >= wanted;
  if (!countOk) {
    throw new SdEngineError(
      "bad_response",
      `The AUTOMATIC1111 server returned ${available} images, the task asks for ${wanted}.`,
    );
  }
  return images.slice(first, first + wanted).map((encoded, index) => {
    const data = encoded.replace(/^data:image\/[\w.+-]+;base64,/, "");
    if (data.length % 4 !== 0 || !BASE64.test(data)) {
      throw new SdEngineError("bad_response", `Image ${index} of the txt2img answer is not base64.`);
    }
    const bytes = new Uint8Array(Buffer.from(data, "base64"));
    if (!PNG_SIGNATURE.every((byte, i) => bytes[i] === byte)) {
      throw new SdEngineError(
        "bad_response",
        `Image ${index} of the txt2img answer is not a PNG (is the WebUI's samples_format "png"?).`,
      );
    }
    return bytes;
  });
}
