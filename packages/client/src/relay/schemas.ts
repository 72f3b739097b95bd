/**
 * Wire shapes of the relay HTTP API, shared by the relay client and the relay server so both parse and
 * produce the same bodies.
 *
 * Conventions:
 * - Task ids travel as **decimal strings** (`"12"`), in paths and in bodies: they are uint256 on-chain and a
 *   JSON number loses precision above 2^53. The client turns them into `bigint`.
 * - Block numbers and counts are JSON numbers (safe integers).
 * - Hashes are `0x`-prefixed hex, except blob digests (`sha256` of a stored file), which are 64 lowercase hex
 *   digits without prefix, as `sha256sum` prints them and as the blob store names files.
 * - Response objects are parsed leniently (unknown keys are dropped) so that an older client keeps working
 *   against a newer relay that adds fields.
 * @module
 */
import { gptResponseSchema, jsonObjectSchema } from "@crynux/tasks";
import { isAddress } from "viem";
import { z } from "zod";

const MAX_UINT256 = 2n ** 256n - 1n;
const decimalPattern = /^(0|[1-9][0-9]{0,77})$/;

/** A task id on the wire: a decimal uint256 without sign or leading zeros. */
export const taskIdSchema = z
  .string()
  .regex(decimalPattern, "must be a decimal integer without leading zeros")
  // zod runs every check even after one fails, so the pattern is tested again before BigInt sees the value.
  .refine((value) => !decimalPattern.test(value) || BigInt(value) <= MAX_UINT256, "must fit in uint256");

/** A task id path parameter (`:taskId`), as a bigint. */
export const taskIdParamSchema = taskIdSchema.transform((value) => BigInt(value));

const addressSchema = z
  .string()
  .refine((value) => isAddress(value, { strict: false }), "must be a 20-byte hex address")
  .transform((value) => value as `0x${string}`);
const bytes32Schema = z
  .string()
  .regex(/^0x[0-9a-fA-F]{64}$/, "must be 32 bytes of 0x-prefixed hex")
  .transform((value) => value as `0x${string}`);
const countSchema = z.int().min(0);
const taskTypeSchema = z.union([z.literal(0), z.literal(1)]);

/** A blob digest: sha256 as 64 lowercase hex digits, no `0x`. */
export const blobSha256Schema = z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits");

/** Error codes the relay answers with (the `code` of an error body). */
export const RELAY_ERROR_CODES = [
  "unauthorized",
  "forbidden",
  "not_found",
  "task_not_found",
  "task_not_started",
  "task_not_success",
  "args_not_found",
  "results_not_found",
  "invalid_task_id",
  "invalid_json",
  "invalid_args",
  "hash_mismatch",
  "invalid_result",
  "result_mismatch",
  "payload_too_large",
  "rate_limited",
  "timeout",
  "internal",
] as const;
/** An error code the relay is known to answer with (see {@link RELAY_ERROR_CODES}). */
export type RelayErrorCode = (typeof RELAY_ERROR_CODES)[number];

/**
 * Every error answer: `{ error: { code, message, field? } }`. `code` is any string so that a client keeps
 * reading codes added later; {@link RELAY_ERROR_CODES} lists the ones known today.
 */
export const relayErrorBodySchema = z.object({
  error: z.object({
    code: z.string().min(1),
    message: z.string(),
    /** First bad field of the request, path parts joined by "." (`messages.0.content`). */
    field: z.string().optional(),
  }),
});
/** A relay error answer, parsed. */
export type RelayErrorBody = z.infer<typeof relayErrorBodySchema>;

/** `GET /v1/health`. `indexedBlock` is the last block the indexer applied (0 before any). */
export const relayHealthSchema = z.object({
  status: z.literal("ok"),
  chainId: z.int().positive(),
  indexedBlock: countSchema,
  headBlock: countSchema,
});
/** A `GET /v1/health` answer, parsed. */
export type RelayHealth = z.infer<typeof relayHealthSchema>;

/** `GET /v1/info`: enough to build the EIP-712 domain (`relayDomain`) and to size uploads. */
export const relayInfoSchema = z.object({
  name: z.string().min(1),
  version: z.literal("1"),
  chainId: z.int().positive(),
  taskContract: addressSchema,
  /** Blocks the indexer waits before it trusts an event. */
  confirmations: countSchema,
  limits: z.object({
    maxArgsBytes: z.int().positive(),
    maxResultBytes: z.int().positive(),
  }),
});
/** A `GET /v1/info` answer, parsed. */
export type RelayInfo = z.infer<typeof relayInfoSchema>;

/** `GET /v1/stats`. */
export const relayStatsSchema = z.object({
  nodes: z.object({ total: countSchema, available: countSchema, busy: countSchema }),
  tasks: z.object({ total: countSchema, queued: countSchema, running: countSchema }),
  indexedBlock: countSchema,
});
/** A `GET /v1/stats` answer, parsed. */
export type RelayStats = z.infer<typeof relayStatsSchema>;

/**
 * `PUT /v1/tasks/:taskId/args` answer: 201 with `stored: true` on the first upload, 200 with
 * `stored: false` when the same arguments were already stored. The request body is the task arguments
 * (`parseGptTaskArgs` / `parseSdTaskArgs` of `@crynux/tasks`, by the task's on-chain type).
 */
export const relayArgsUploadResponseSchema = z.object({
  taskId: taskIdSchema,
  taskHash: bytes32Schema,
  stored: z.boolean(),
});
/** A `PUT /v1/tasks/:taskId/args` answer, parsed (task id as a decimal string). */
export type RelayArgsUploadResponse = z.infer<typeof relayArgsUploadResponseSchema>;

/**
 * `GET /v1/tasks/:taskId/args` answer. `args` is the stored JSON exactly as uploaded (no defaults filled
 * in), so `taskHash(args)` equals `taskHash`; parse it by `taskType` to use it.
 */
export const relayArgsResponseSchema = z.object({
  taskId: taskIdSchema,
  taskType: taskTypeSchema,
  taskHash: bytes32Schema,
  args: jsonObjectSchema,
});
/** A `GET /v1/tasks/:taskId/args` answer, parsed; `args` still as uploaded. */
export type RelayArgsResponse = z.infer<typeof relayArgsResponseSchema>;

/**
 * `PUT /v1/tasks/:taskId/results` answer (201 first upload, 200 identical re-upload). The request body is
 * the GPT response JSON ({@link relayGptResultsUploadSchema}), or for SD `multipart/form-data` with one PNG
 * file per image under the field names `0`, `1`, … in order.
 */
export const relayResultsUploadResponseSchema = z.object({
  taskId: taskIdSchema,
  stored: z.boolean(),
});
/** A `PUT /v1/tasks/:taskId/results` answer, parsed. */
export type RelayResultsUploadResponse = z.infer<typeof relayResultsUploadResponseSchema>;

/** Body of a GPT results upload; the relay also runs `parseGptResponse`'s consistency checks. */
export const relayGptResultsUploadSchema = gptResponseSchema;

/** One stored SD image, fetched with `GET /v1/tasks/:taskId/results/:index` (`image/png`). */
export const relayResultImageSchema = z.object({
  index: countSchema,
  sha256: blobSha256Schema,
  size: countSchema,
});
/** One stored SD image's index, sha256 and size in bytes, parsed. */
export type RelayResultImage = z.infer<typeof relayResultImageSchema>;

/** `GET /v1/tasks/:taskId/results` answer for a GPT task: the stored response. */
export const relayGptResultsResponseSchema = z.object({
  taskId: taskIdSchema,
  taskType: z.literal(1),
  response: gptResponseSchema,
});

/**
 * `GET /v1/tasks/:taskId/results` answer for an SD task: the stored images' digests; fetch each PNG by index.
 */
export const relaySdResultsResponseSchema = z.object({
  taskId: taskIdSchema,
  taskType: z.literal(0),
  /** In image order: `images[i].index === i`. */
  images: z
    .array(relayResultImageSchema)
    .min(1)
    .superRefine((images, context) => {
      images.forEach((image, position) => {
        if (image.index !== position)
          context.addIssue({ code: "custom", path: [position, "index"], message: `must be ${position}` });
      });
    }),
});

/** `GET /v1/tasks/:taskId/results` answer, by task type. */
export const relayResultsResponseSchema = z.discriminatedUnion("taskType", [
  relayGptResultsResponseSchema,
  relaySdResultsResponseSchema,
]);
/** A `GET /v1/tasks/:taskId/results` answer, parsed. */
export type RelayResultsResponse = z.infer<typeof relayResultsResponseSchema>;
