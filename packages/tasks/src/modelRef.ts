import { CrynuxError } from "./errors.js";
import { type GgufQuantizationType, isGgufQuantizationType } from "./quantization.js";

/** Thrown by {@link parseModelRef} for a reference that does not name one GGUF file. */
export class ModelRefError extends CrynuxError {
  override name = "ModelRefError";
  readonly ref: string;
  constructor(ref: string, reason: string) {
    super(`Invalid model reference ${JSON.stringify(ref)}: ${reason}`, {
      details: [
        "A model reference is one of:",
        "  hf:owner/repo/path/to/file.gguf   a file in a Hugging Face repository",
        "  hf:owner/repo:Q4_K_M              the repository's file of that quantization",
        "  owner/repo:Q4_K_M                 the same, without the scheme",
        "  file:/path/to/model.gguf          a local file (file:///path/to/model.gguf also works)",
        "A revision may follow the repository: hf:owner/repo@main/file.gguf.",
      ].join("\n"),
      docsPath: "tasks.md#model-references",
    });
    this.ref = ref;
  }
}

/** A model stored in a Hugging Face repository. */
export type HfModelRef = {
  kind: "hf";
  owner: string;
  repo: string;
  /** Branch, tag or commit; `undefined` means the default branch. */
  revision: string | undefined;
  /** Path of the GGUF file inside the repository; set when the reference names the file. */
  file: string | undefined;
  /** Quantization type that selects the file; set when the reference names a quantization instead. */
  quantization: GgufQuantizationType | undefined;
};

/** A model file on the node's own disk. */
export type FileModelRef = {
  kind: "file";
  /** The path as written (absolute, or relative to the node's model directory). */
  path: string;
};

/** A parsed model reference. */
export type ModelRef = HfModelRef | FileModelRef;

const hubName = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$/;
// Branch and tag names with "/" are not supported: the first "/" after the revision starts the file path.
const revisionPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

function checkGgufName(ref: string, path: string): void {
  if (!/\.gguf$/i.test(path)) throw new ModelRefError(ref, `${JSON.stringify(path)} is not a .gguf file`);
}

function parseHubName(ref: string, name: string, what: "owner" | "repository"): string {
  if (!hubName.test(name) || name.includes("..") || name.includes("--")) {
    throw new ModelRefError(ref, `${JSON.stringify(name)} is not a valid Hugging Face ${what} name`);
  }
  return name;
}

function parseQuantization(ref: string, tag: string): GgufQuantizationType {
  if (!isGgufQuantizationType(tag)) {
    throw new ModelRefError(
      ref,
      `${JSON.stringify(tag)} is not a GGUF quantization type (such as Q4_0 or Q8_0)`,
    );
  }
  return tag.toUpperCase() as GgufQuantizationType;
}

function parseFileRef(ref: string, rest: string): FileModelRef {
  let path = rest;
  if (rest.startsWith("//")) {
    // file:///abs/path (a URL with an empty host); percent-escapes are decoded.
    if (!rest.startsWith("///"))
      throw new ModelRefError(ref, "a file URL must have an empty host (file:///path)");
    try {
      path = decodeURIComponent(rest.slice(2));
    } catch {
      throw new ModelRefError(ref, "the file URL has a broken percent-escape");
    }
  }
  if (path.length === 0) throw new ModelRefError(ref, "the file path is empty");
  if (path.includes("\0")) throw new ModelRefError(ref, "the file path contains a NUL character");
  checkGgufName(ref, path);
  return { kind: "file", path };
}

function parseHfRef(ref: string, rest: string, explicitScheme: boolean): HfModelRef {
  const slash = rest.indexOf("/");
  if (slash < 0) throw new ModelRefError(ref, "expected owner/repo");
  const owner = parseHubName(ref, rest.slice(0, slash), "owner");
  const afterOwner = rest.slice(slash + 1);
  // The repository name ends at the first "/", ":" or "@".
  const end = afterOwner.search(/[/:@]/);
  const repoName = end < 0 ? afterOwner : afterOwner.slice(0, end);
  const repo = parseHubName(ref, repoName, "repository");
  let tail = end < 0 ? "" : afterOwner.slice(end);
  let revision: string | undefined;
  if (tail.startsWith("@")) {
    const revEnd = tail.search(/[/:]/);
    const rev = revEnd < 0 ? tail.slice(1) : tail.slice(1, revEnd);
    if (!revisionPattern.test(rev) || rev.includes("..")) {
      throw new ModelRefError(ref, `${JSON.stringify(rev)} is not a valid revision`);
    }
    revision = rev;
    tail = revEnd < 0 ? "" : tail.slice(revEnd);
  }
  if (tail.startsWith(":")) {
    return {
      kind: "hf",
      owner,
      repo,
      revision,
      file: undefined,
      quantization: parseQuantization(ref, tail.slice(1)),
    };
  }
  if (tail.startsWith("/")) {
    if (!explicitScheme) {
      throw new ModelRefError(
        ref,
        "a file inside a repository needs the hf: scheme (hf:owner/repo/file.gguf)",
      );
    }
    const file = tail.slice(1);
    const parts = file.split("/");
    if (parts.some((part) => part === "" || part === "." || part === "..")) {
      throw new ModelRefError(ref, `${JSON.stringify(file)} is not a clean path inside the repository`);
    }
    checkGgufName(ref, file);
    return { kind: "hf", owner, repo, revision, file, quantization: undefined };
  }
  throw new ModelRefError(
    ref,
    "a repository alone does not name one GGUF file: add the file (hf:owner/repo/file.gguf) or a quantization (owner/repo:Q4_0)",
  );
}

/**
 * Parses a GPT task's `model` field into a {@link ModelRef}. Every accepted form names exactly one GGUF
 * file, so that all nodes of a task run the same weights.
 *
 * @throws {ModelRefError} for anything else, with the accepted forms in `details`.
 * @example
 * parseModelRef("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf")
 * // { kind: "hf", owner: "Qwen", repo: "Qwen2.5-0.5B-Instruct-GGUF", file: "qwen2.5-0.5b-instruct-q4_0.gguf", ... }
 * parseModelRef("bartowski/Llama-3.2-1B-Instruct-GGUF:q8_0") // quantization: "Q8_0"
 * parseModelRef("file:/models/tiny.gguf") // { kind: "file", path: "/models/tiny.gguf" }
 */
export function parseModelRef(ref: string): ModelRef {
  if (typeof ref !== "string") {
    // String() of an object may throw (null prototype, hostile toString); the type is enough to say.
    const shown =
      ref !== null && (typeof ref === "object" || typeof ref === "function")
        ? `(a non-string ${typeof ref})`
        : String(ref);
    throw new ModelRefError(shown, "a model reference is a string");
  }
  if (ref.trim() !== ref || ref.length === 0) {
    throw new ModelRefError(ref, "it is empty or has leading/trailing whitespace");
  }
  if (ref.length > 1024) throw new ModelRefError(ref.slice(0, 64), "it is longer than 1024 characters");
  if (ref.startsWith("file:")) return parseFileRef(ref, ref.slice("file:".length));
  if (ref.startsWith("hf:")) return parseHfRef(ref, ref.slice("hf:".length), true);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(ref)) {
    throw new ModelRefError(ref, "URLs are not model references; use hf: or file:");
  }
  return parseHfRef(ref, ref, false);
}

/** Writes a {@link ModelRef} back in its canonical form (`hf:` scheme, upper-case quantization). */
export function formatModelRef(ref: ModelRef): string {
  if (ref.kind === "file") return `file:${ref.path}`;
  const base = `hf:${ref.owner}/${ref.repo}${ref.revision === undefined ? "" : `@${ref.revision}`}`;
  return ref.file === undefined ? `${base}:${ref.quantization}` : `${base}/${ref.file}`;
}
