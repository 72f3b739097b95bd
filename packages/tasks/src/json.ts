import { z } from "zod";

/** A JSON value, as `JSON.parse` produces it. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
/** A JSON object. */
export type JsonObject = { [key: string]: JsonValue };

type JsonProblem = { path: (string | number)[]; message: string };

/**
 * Finds the first thing in `value` that would not survive a JSON round trip unchanged: a non-finite
 * number, `undefined`, a non-plain object, a cycle, or a `__proto__` key (which JavaScript object
 * literals and many libraries turn into a prototype, silently dropping the data and changing the hash).
 */
function findJsonProblem(
  value: unknown,
  path: (string | number)[],
  ancestors: Set<object>,
): JsonProblem | null {
  switch (typeof value) {
    case "string":
    case "boolean":
      return null;
    case "number":
      return Number.isFinite(value) ? null : { path, message: "must be a finite number" };
    case "object":
      break;
    default:
      return { path, message: `a ${typeof value} is not a JSON value` };
  }
  if (value === null) return null;
  if (ancestors.has(value)) return { path, message: "contains a cycle" };
  ancestors.add(value);
  try {
    if (Array.isArray(value)) {
      for (let index = 0; index < value.length; index++) {
        const problem = findJsonProblem(value[index], [...path, index], ancestors);
        if (problem) return problem;
      }
      return null;
    }
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return { path, message: "must be a plain JSON object" };
    for (const key of Object.keys(value)) {
      if (key === "__proto__") return { path: [...path, key], message: 'the key "__proto__" is not allowed' };
      const problem = findJsonProblem((value as Record<string, unknown>)[key], [...path, key], ancestors);
      if (problem) return problem;
    }
    return null;
  } finally {
    ancestors.delete(value);
  }
}

/** A free-form JSON object (tools, tool calls, template arguments), copied so the input stays untouched. */
export const jsonObjectSchema = z
  .custom<JsonObject>(
    (value) => typeof value === "object" && value !== null && !Array.isArray(value),
    "must be a JSON object",
  )
  .superRefine((value, context) => {
    const problem = findJsonProblem(value, [], new Set());
    if (problem) context.addIssue({ code: "custom", path: problem.path, message: problem.message });
  })
  .transform((value) => JSON.parse(JSON.stringify(value)) as JsonObject);
