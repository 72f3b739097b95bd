import { describe, expect, it } from "vitest";
import {
  relayArgsResponseSchema,
  relayArgsUploadResponseSchema,
  relayErrorBodySchema,
  relayHealthSchema,
  relayInfoSchema,
  relayResultsResponseSchema,
  relayResultsUploadResponseSchema,
  relayStatsSchema,
  taskIdParamSchema,
  taskIdSchema,
} from "../src/relay/index.js";

const hash = `0x${"ab".repeat(32)}`;
const blob = "0f".repeat(32);
const gptResponse = {
  model: "owner/repo:Q4_0",
  choices: [{ index: 0, message: { role: "assistant", content: "Hello" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
};

describe("task ids", () => {
  it("are decimal strings up to 2^256 - 1", () => {
    const max = (2n ** 256n - 1n).toString();
    for (const good of ["0", "12", max]) expect(taskIdSchema.parse(good)).toBe(good);
    expect(taskIdParamSchema.parse(max)).toBe(2n ** 256n - 1n);
  });

  it("refuse numbers, signs, leading zeros, hex and values past uint256", () => {
    const bad = [12, "", "012", "-1", "+1", "1.0", "0x10", " 1", (2n ** 256n).toString(), "9".repeat(79)];
    for (const value of bad) expect(taskIdSchema.safeParse(value).success, String(value)).toBe(false);
  });
});

describe("error body", () => {
  it("has a code, a message and maybe a field", () => {
    expect(
      relayErrorBodySchema.parse({
        error: { code: "invalid_args", message: "bad", field: "messages.0.content" },
      }),
    ).toEqual({ error: { code: "invalid_args", message: "bad", field: "messages.0.content" } });
    expect(
      relayErrorBodySchema.parse({ error: { code: "future_code", message: "" } }).error.field,
    ).toBeUndefined();
  });

  it("refuses bodies without an error object or code", () => {
    for (const bad of [
      {},
      { error: "nope" },
      { error: { message: "x" } },
      { error: { code: "", message: "x" } },
    ]) {
      expect(relayErrorBodySchema.safeParse(bad).success).toBe(false);
    }
  });
});

describe("health, info and stats", () => {
  it("parse good bodies and drop unknown fields", () => {
    expect(
      relayHealthSchema.parse({ status: "ok", chainId: 31337, indexedBlock: 10, headBlock: 12, extra: true }),
    ).toEqual({ status: "ok", chainId: 31337, indexedBlock: 10, headBlock: 12 });
    const info = {
      name: "Crynux Relay",
      version: "1",
      chainId: 31337,
      taskContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
      confirmations: 2,
      limits: { maxArgsBytes: 1 << 20, maxResultBytes: 64 << 20 },
    };
    expect(relayInfoSchema.parse(info)).toEqual(info);
    const stats = {
      nodes: { total: 3, available: 2, busy: 1 },
      tasks: { total: 5, queued: 1, running: 1 },
      indexedBlock: 9,
    };
    expect(relayStatsSchema.parse(stats)).toEqual(stats);
  });

  it("refuse wrong types, versions, addresses and negative counts", () => {
    expect(
      relayHealthSchema.safeParse({ status: "down", chainId: 1, indexedBlock: 0, headBlock: 0 }).success,
    ).toBe(false);
    expect(
      relayHealthSchema.safeParse({ status: "ok", chainId: 1, indexedBlock: "5", headBlock: 0 }).success,
    ).toBe(false);
    const info = {
      name: "Crynux Relay",
      version: "1",
      chainId: 31337,
      taskContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
      confirmations: 0,
      limits: { maxArgsBytes: 1, maxResultBytes: 1 },
    };
    expect(relayInfoSchema.safeParse({ ...info, version: "2" }).success).toBe(false);
    expect(relayInfoSchema.safeParse({ ...info, taskContract: "0x1234" }).success).toBe(false);
    expect(relayInfoSchema.safeParse({ ...info, chainId: 0 }).success).toBe(false);
    expect(relayInfoSchema.safeParse({ ...info, limits: { maxArgsBytes: 1 } }).success).toBe(false);
    expect(
      relayStatsSchema.safeParse({
        nodes: { total: 3, available: -1, busy: 1 },
        tasks: { total: 0, queued: 0, running: 0 },
        indexedBlock: 0,
      }).success,
    ).toBe(false);
    expect(
      relayStatsSchema.safeParse({
        nodes: { total: 3, available: 1.5, busy: 1 },
        tasks: { total: 0, queued: 0, running: 0 },
        indexedBlock: 0,
      }).success,
    ).toBe(false);
  });
});

describe("arguments", () => {
  it("upload answer carries the task id, hash and whether it was stored", () => {
    expect(relayArgsUploadResponseSchema.parse({ taskId: "7", taskHash: hash, stored: true })).toEqual({
      taskId: "7",
      taskHash: hash,
      stored: true,
    });
    expect(relayArgsUploadResponseSchema.safeParse({ taskId: 7, taskHash: hash, stored: true }).success).toBe(
      false,
    );
    expect(
      relayArgsUploadResponseSchema.safeParse({ taskId: "7", taskHash: "0x12", stored: true }).success,
    ).toBe(false);
    expect(relayArgsUploadResponseSchema.safeParse({ taskId: "7", taskHash: hash }).success).toBe(false);
  });

  it("download answer carries the task type and the args object", () => {
    const args = { model: "owner/repo:Q4_0", messages: [{ role: "user", content: "Hi" }] };
    expect(relayArgsResponseSchema.parse({ taskId: "7", taskType: 1, taskHash: hash, args })).toEqual({
      taskId: "7",
      taskType: 1,
      taskHash: hash,
      args,
    });
    for (const bad of [
      { taskId: "7", taskType: 2, taskHash: hash, args },
      { taskId: "7", taskType: 1, taskHash: hash, args: [args] },
      { taskId: "7", taskType: 1, taskHash: hash, args: "{}" },
      { taskId: "7", taskType: 1, taskHash: hash },
    ]) {
      expect(relayArgsResponseSchema.safeParse(bad).success).toBe(false);
    }
  });
});

describe("results", () => {
  it("upload answer carries the task id and whether it was stored", () => {
    expect(relayResultsUploadResponseSchema.parse({ taskId: "1", stored: false })).toEqual({
      taskId: "1",
      stored: false,
    });
    expect(relayResultsUploadResponseSchema.safeParse({ taskId: "1" }).success).toBe(false);
  });

  it("GPT answer carries the response", () => {
    const body = { taskId: "3", taskType: 1, response: gptResponse };
    expect(relayResultsResponseSchema.parse(body)).toEqual(body);
    expect(
      relayResultsResponseSchema.safeParse({ ...body, response: { ...gptResponse, choices: [] } }).success,
    ).toBe(false);
    expect(relayResultsResponseSchema.safeParse({ taskId: "3", taskType: 1 }).success).toBe(false);
  });

  it("SD answer lists the images in order with their digests", () => {
    const body = {
      taskId: "3",
      taskType: 0,
      images: [
        { index: 0, sha256: blob, size: 10 },
        { index: 1, sha256: blob, size: 10 },
      ],
    };
    expect(relayResultsResponseSchema.parse(body)).toEqual(body);
    const bad = [
      { ...body, images: [] },
      { ...body, images: [{ index: 1, sha256: blob, size: 10 }] },
      { ...body, images: [{ index: 0, sha256: `0x${blob}`, size: 10 }] },
      { ...body, images: [{ index: 0, sha256: blob.toUpperCase(), size: 10 }] },
      { ...body, images: [{ index: 0, sha256: blob, size: -1 }] },
      { ...body, taskType: 1 },
    ];
    for (const value of bad) expect(relayResultsResponseSchema.safeParse(value).success).toBe(false);
  });
});
