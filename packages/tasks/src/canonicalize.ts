import { CrynuxError } from "./errors.js";

/** Thrown when a value cannot be written as RFC 8785 canonical JSON. */
export class CanonicalJsonError extends CrynuxError {
  override name = "CanonicalJsonError";
  /** JSON-pointer-like path of the offending value (`$` is the root). */
  readonly path: string;
  constructor(reason: string, path: string, options: { cause?: unknown } = {}) {
    super(`Cannot canonicalize the value at ${path}: ${reason}.`, {
      docsPath: "tasks.md#canonical-json",
      cause: options.cause,
    });
    this.path = path;
  }
}

/**
 * Writes `value` as RFC 8785 (JSON Canonicalization Scheme) text: no whitespace, object keys sorted by
 * their UTF-16 code units, numbers in the ECMAScript shortest round-trip form (`-0` as `0`), strings with
 * the minimal JSON escapes.
 *
 * Accepts what `JSON.parse` produces: `null`, booleans, finite numbers, well-formed strings, arrays and
 * plain objects. Object properties whose value is `undefined` are left out (as `JSON.stringify` does);
 * anything else (`undefined` in an array, `NaN`, `Infinity`, a bigint, a lone surrogate, a `Date`, a cycle)
 * throws {@link CanonicalJsonError} instead of being silently changed.
 *
 * @example
 * canonicalize({ b: [1, 2.50, -0], a: "€" }) // '{"a":"€","b":[1,2.5,0]}'
 */
export function canonicalize(value: unknown): string {
  const out: string[] = [];
  try {
    write(value, "$", out, new Set());
  } catch (error) {
    if (error instanceof CanonicalJsonError) throw error;
    // A nesting deeper than the stack (RangeError), a throwing getter or a revoked proxy: still a typed error.
    throw new CanonicalJsonError("the value could not be read (nested too deeply, or a getter threw)", "$", {
      cause: error,
    });
  }
  return out.join("");
}

/** {@link canonicalize}, encoded as UTF-8: the bytes that Crynux hashes. */
export function canonicalBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalize(value));
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function writeString(text: string, path: string, out: string[]): void {
  if (loneSurrogate.test(text))
    throw new CanonicalJsonError("the string contains a lone UTF-16 surrogate", path);
  // ECMAScript's JSON.stringify escapes exactly what RFC 8785 §3.2.2.2 prescribes.
  out.push(JSON.stringify(text));
}

function write(value: unknown, path: string, out: string[], ancestors: Set<object>): void {
  switch (typeof value) {
    case "string":
      writeString(value, path, out);
      return;
    case "boolean":
      out.push(value ? "true" : "false");
      return;
    case "number":
      if (!Number.isFinite(value)) throw new CanonicalJsonError(`${value} is not a JSON number`, path);
      // Number#toString is the serialization RFC 8785 §3.2.2.3 refers to; it maps -0 to "0".
      out.push(String(value));
      return;
    case "object":
      break;
    default:
      throw new CanonicalJsonError(`a ${typeof value} is not a JSON value`, path);
  }
  if (value === null) {
    out.push("null");
    return;
  }
  if (ancestors.has(value)) throw new CanonicalJsonError("the value contains a cycle", path);
  ancestors.add(value);
  if (Array.isArray(value)) {
    out.push("[");
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out.push(",");
      write(value[i], `${path}[${i}]`, out, ancestors);
    }
    out.push("]");
  } else {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      throw new CanonicalJsonError(
        `a ${proto?.constructor?.name ?? "non-plain"} object is not a JSON value`,
        path,
      );
    }
    const record = value as Record<string, unknown>;
    // Default sort compares UTF-16 code units, the order RFC 8785 §3.2.3 requires.
    const keys = Object.keys(record)
      .filter((key) => record[key] !== undefined)
      .sort();
    out.push("{");
    keys.forEach((key, index) => {
      if (index > 0) out.push(",");
      const childPath = `${path}.${key}`;
      writeString(key, childPath, out);
      out.push(":");
      write(record[key], childPath, out, ancestors);
    });
    out.push("}");
  }
  ancestors.delete(value);
}
