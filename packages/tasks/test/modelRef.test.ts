import { describe, expect, it } from "vitest";
import {
  formatModelRef,
  isGgufQuantizationType,
  ModelRefError,
  parseModelRef,
  QUANTIZATION_FOR_BITS,
  quantizationForBits,
} from "../src/index.js";

describe("parseModelRef", () => {
  it("parses an hf: file reference", () => {
    expect(parseModelRef("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf")).toEqual({
      kind: "hf",
      owner: "Qwen",
      repo: "Qwen2.5-0.5B-Instruct-GGUF",
      revision: undefined,
      file: "qwen2.5-0.5b-instruct-q4_0.gguf",
      quantization: undefined,
    });
  });

  it("parses nested files and revisions", () => {
    expect(parseModelRef("hf:owner/repo@abc123/sub/dir/model-F16.gguf")).toMatchObject({
      revision: "abc123",
      file: "sub/dir/model-F16.gguf",
    });
    expect(parseModelRef("hf:owner/repo@v1.0:q4_k_m")).toMatchObject({
      revision: "v1.0",
      quantization: "Q4_K_M",
    });
  });

  it("parses hf: and plain ids with a quantization suffix (case-insensitive)", () => {
    expect(parseModelRef("hf:bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0")).toMatchObject({
      quantization: "Q8_0",
      file: undefined,
    });
    expect(parseModelRef("bartowski/Llama-3.2-1B-Instruct-GGUF:q4_0")).toEqual({
      kind: "hf",
      owner: "bartowski",
      repo: "Llama-3.2-1B-Instruct-GGUF",
      revision: undefined,
      file: undefined,
      quantization: "Q4_0",
    });
  });

  it("parses file: paths and file:/// URLs", () => {
    expect(parseModelRef("file:/models/tiny.gguf")).toEqual({ kind: "file", path: "/models/tiny.gguf" });
    expect(parseModelRef("file:models/tiny.GGUF")).toEqual({ kind: "file", path: "models/tiny.GGUF" });
    expect(parseModelRef("file:///models/my%20model.gguf")).toEqual({
      kind: "file",
      path: "/models/my model.gguf",
    });
  });

  it.each([
    ["", /empty/],
    [" owner/repo:Q4_0", /whitespace/],
    ["Qwen/Qwen2.5-7B-Instruct", /does not name one GGUF file/],
    ["owner/repo/file.gguf", /needs the hf: scheme/],
    ["hf:owner/repo/file.bin", /not a \.gguf file/],
    ["hf:owner/repo/../x.gguf", /clean path/],
    ["hf:owner/repo:Q9_9", /not a GGUF quantization type/],
    ["hf:-bad/repo:Q4_0", /owner name/],
    ["hf:owner/re..po:Q4_0", /repository name/],
    ["hf:owner", /expected owner\/repo/],
    ["hf:owner/repo@:Q4_0", /revision/],
    ["https://huggingface.co/x/y/resolve/main/z.gguf", /URLs are not model references/],
    ["file:", /empty/],
    ["file:/models/model.bin", /not a \.gguf file/],
    ["file://host/model.gguf", /empty host/],
    ["file:///bad%zz.gguf", /percent-escape/],
  ])("rejects %j", (ref, reason) => {
    expect(() => parseModelRef(ref)).toThrow(ModelRefError);
    expect(() => parseModelRef(ref)).toThrow(reason);
  });

  it("explains the accepted forms", () => {
    try {
      parseModelRef("Qwen/Qwen2.5-7B-Instruct");
      expect.unreachable();
    } catch (error) {
      expect((error as ModelRefError).details).toContain("hf:owner/repo/path/to/file.gguf");
      expect((error as ModelRefError).ref).toBe("Qwen/Qwen2.5-7B-Instruct");
    }
  });

  it.each([
    "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf",
    "hf:owner/repo@v2:Q4_K_M",
    "hf:owner/repo@main/a/b.gguf",
    "file:/x/y.gguf",
  ])("formatModelRef(parseModelRef(%j)) round-trips", (ref) => {
    expect(formatModelRef(parseModelRef(ref))).toBe(ref);
  });

  it("formats plain ids in the canonical hf: form", () => {
    expect(formatModelRef(parseModelRef("owner/repo:q8_0"))).toBe("hf:owner/repo:Q8_0");
  });
});

describe("quantization options", () => {
  it("maps quantize_bits to GGUF types", () => {
    expect(quantizationForBits(4)).toBe("Q4_0");
    expect(quantizationForBits(8)).toBe("Q8_0");
    expect(quantizationForBits(null)).toBeNull();
    expect(quantizationForBits(undefined)).toBeNull();
    expect(QUANTIZATION_FOR_BITS).toEqual({ 4: "Q4_0", 8: "Q8_0" });
  });

  it("knows GGUF type names in any case", () => {
    expect(isGgufQuantizationType("q4_k_m")).toBe(true);
    expect(isGgufQuantizationType("BF16")).toBe(true);
    expect(isGgufQuantizationType("Q4_2")).toBe(false);
  });
});
