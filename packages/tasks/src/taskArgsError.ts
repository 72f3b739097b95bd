import type { z } from "zod";
import { CrynuxError } from "./errors.js";

/** One problem found in task arguments (or in a GPT response). */
export type TaskArgsIssue = {
  /** Path of the field, e.g. `["generation_config", "top_p"]`; `[]` is the whole document. */
  path: (string | number)[];
  /** What is wrong with it. */
  message: string;
  /** Machine-readable kind of problem (zod's issue code, or `invalid_json`). */
  code: string;
};

/** Formats a field path the way errors print it: `messages[0].content`, or `(root)`. */
export function formatIssuePath(path: readonly (string | number)[]): string {
  if (path.length === 0) return "(root)";
  return path
    .map((part, index) => {
      if (typeof part === "number") return `[${part}]`;
      if (!/^[A-Za-z_$][\w$]*$/.test(part)) return `[${JSON.stringify(part)}]`;
      return index === 0 ? part : `.${part}`;
    })
    .join("");
}

/**
 * Thrown by `parseGptTaskArgs`, `parseSdTaskArgs` and `parseGptResponse` for input that does not follow
 * the schema. `issues` lists every bad field with its path, not only the first one.
 */
export class TaskArgsError extends CrynuxError {
  override name = "TaskArgsError";
  readonly issues: TaskArgsIssue[];
  /** Which document was being parsed, e.g. `"GPT task arguments"`. */
  readonly subject: string;

  constructor(subject: string, issues: TaskArgsIssue[], options: { cause?: unknown } = {}) {
    const fields = issues.map((issue) => `- ${formatIssuePath(issue.path)}: ${issue.message}`).join("\n");
    super(`Invalid ${subject}: ${issues.length} problem${issues.length === 1 ? "" : "s"}.`, {
      details: fields,
      docsPath: "tasks.md#validation",
      cause: options.cause,
    });
    this.subject = subject;
    this.issues = issues;
  }

  /** The path of the first bad field, formatted (handy for HTTP error bodies). */
  get field(): string | undefined {
    const first = this.issues[0];
    return first ? formatIssuePath(first.path) : undefined;
  }
}

function toPath(path: readonly PropertyKey[]): (string | number)[] {
  return path.map((part) => (typeof part === "number" ? part : String(part)));
}

/** Converts zod's issues into {@link TaskArgsIssue}s, one per unknown key. */
export function issuesFromZod(error: z.ZodError): TaskArgsIssue[] {
  const issues: TaskArgsIssue[] = [];
  for (const issue of error.issues) {
    const path = toPath(issue.path);
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys)
        issues.push({ path: [...path, key], message: "unknown field", code: issue.code });
    } else {
      issues.push({ path, message: issue.message, code: issue.code });
    }
  }
  return issues;
}

/**
 * Parses `input` (a value or JSON text) with `schema`, throwing {@link TaskArgsError} on any problem.
 * @internal
 */
export function parseWith<S extends z.ZodType>(schema: S, subject: string, input: unknown): z.output<S> {
  let value = input;
  if (typeof input === "string") {
    try {
      value = JSON.parse(input);
    } catch (cause) {
      throw new TaskArgsError(subject, [{ path: [], message: "not valid JSON text", code: "invalid_json" }], {
        cause,
      });
    }
  }
  let result: ReturnType<S["safeParse"]>;
  try {
    result = schema.safeParse(value) as ReturnType<S["safeParse"]>;
  } catch (cause) {
    // A hostile object (a throwing getter, a revoked proxy) must still end in a typed error.
    throw new TaskArgsError(
      subject,
      [{ path: [], message: "the value could not be read", code: "invalid_type" }],
      {
        cause,
      },
    );
  }
  if (!result.success) throw new TaskArgsError(subject, issuesFromZod(result.error), { cause: result.error });
  return result.data as z.output<S>;
}
