import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import {
  CanonicalJsonError,
  ChatTemplateError,
  CrynuxError,
  canonicalize,
  decodePng,
  encodePng,
  formatIssuePath,
  ModelRefError,
  PngDecodeError,
  parseGptResponse,
  parseGptTaskArgs,
  parseModelRef,
  parseSdTaskArgs,
  pngPHash,
  renderChatTemplate,
  TaskArgsError,
  TaskType,
  taskHash,
  UnknownTaskTypeError,
  workUnits,
} from "../src/index.js";
import { gptArgsArbitrary, sdArgsArbitrary } from "./arbitraries.js";

// Every property runs this many generated cases; the trials below report the real count.
const RUNS = 300;

/** Every value shape fast-check knows, hostile ones (null prototypes, boxed values, sparse arrays…) included. */
const anything = fc.anything({
  maxDepth: 4,
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withNullPrototype: true,
  withObjectString: true,
  withSparseArray: true,
  withTypedArray: true,
  withUnicodeString: true,
});

/** Values a program could hand a parser that make reading them fail or recurse without end. */
function hostileValues(): unknown[] {
  const throwingGetter = {};
  Object.defineProperty(throwingGetter, "model", {
    enumerable: true,
    get() {
      throw new Error("getter exploded");
    },
  });
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const trapping = new Proxy(
    {},
    {
      ownKeys() {
        throw new Error("ownKeys trap");
      },
      get() {
        throw new Error("get trap");
      },
    },
  );
  const cyclic: Record<string, unknown> = { model: "o/r:Q4_0", messages: [] };
  (cyclic["messages"] as unknown[]).push({ role: "user", content: "hi", tool_calls: [cyclic] });
  let deepArray: unknown = [];
  for (let i = 0; i < 20_000; i++) deepArray = [deepArray];
  let deepObject: unknown = {};
  for (let i = 0; i < 20_000; i++) deepObject = { a: deepObject };
  const deepText = `${"[".repeat(50_000)}${"]".repeat(50_000)}`;
  return [
    throwingGetter,
    revoked,
    trapping,
    cyclic,
    deepArray,
    deepObject,
    deepText,
    { model: "o/r:Q4_0", messages: [{ role: "user", content: "x" }], template_args: deepObject },
    { model: "o/r:Q4_0", messages: [{ role: "user", content: "x" }], tools: [deepObject] },
    { model: "o/r:Q4_0", messages: [{ role: "user", content: "x", tool_calls: [{ a: deepArray }] }] },
    JSON.parse('{"__proto__": {"model": "o/r:Q4_0"}}'),
    { model: "x".repeat(2_000_000), messages: [] },
    "",
    "\u0000",
    "{",
    "null",
    Symbol("s"),
    () => ({}),
    10n ** 80n,
    Number.NaN,
    new Uint8Array(8),
  ];
}

type Parser = { name: string; parse: (input: unknown) => unknown };
const parsers: Parser[] = [
  { name: "parseGptTaskArgs", parse: parseGptTaskArgs },
  { name: "parseSdTaskArgs", parse: parseSdTaskArgs },
  { name: "parseGptResponse", parse: parseGptResponse },
  { name: "workUnits(GPT)", parse: (input) => workUnits(TaskType.GPT, input) },
  { name: "workUnits(SD)", parse: (input) => workUnits(TaskType.SD, input) },
];

/**
 * Runs `parse` and returns what it threw; fails the test on any error that is not a well-formed
 * TaskArgsError (one or more issues, each with a path array and a message, the path in the text).
 */
function expectTaskArgsErrorOrValue(
  parse: (input: unknown) => unknown,
  input: unknown,
): TaskArgsError | null {
  try {
    parse(input);
    return null;
  } catch (error) {
    if (!(error instanceof TaskArgsError)) {
      throw new Error(`expected TaskArgsError, got ${describeError(error)}`, { cause: error });
    }
    expect(error.issues.length).toBeGreaterThan(0);
    for (const issue of error.issues) {
      expect(Array.isArray(issue.path)).toBe(true);
      expect(issue.message.length).toBeGreaterThan(0);
      expect(error.details).toContain(formatIssuePath(issue.path));
    }
    expect(error.field).toBe(formatIssuePath(error.issues[0]!.path));
    return error;
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.constructor.name}: ${error.message.slice(0, 200)}`;
  return `a thrown ${typeof error}`;
}

type Path = (string | number)[];

/** Every path to a value inside a JSON-like document, the root excluded. */
function pathsOf(value: unknown, prefix: Path = []): Path[] {
  if (value === null || typeof value !== "object") return [];
  const entries: [string | number, unknown][] = Array.isArray(value)
    ? value.map((item, index) => [index, item])
    : Object.entries(value);
  return entries.flatMap(([key, child]) => [[...prefix, key], ...pathsOf(child, [...prefix, key])]);
}

type Mutation = { path: Path; kind: "replace" | "delete" | "add"; value: unknown };

/** A structured copy of `document` with one mutation applied at `path`. */
function mutate(document: unknown, mutation: Mutation): unknown {
  const copy = structuredClone(document) as Record<string | number, unknown>;
  const parentPath = mutation.path.slice(0, -1);
  let parent: Record<string | number, unknown> = copy;
  for (const key of parentPath) parent = parent[key] as Record<string | number, unknown>;
  const last = mutation.path[mutation.path.length - 1]!;
  if (mutation.kind === "replace") parent[last] = mutation.value;
  else if (mutation.kind === "delete") {
    if (Array.isArray(parent)) parent.splice(last as number, 1);
    else delete parent[last];
  } else {
    const target = parent[last];
    if (target && typeof target === "object" && !Array.isArray(target)) {
      (target as Record<string, unknown>)["unexpected_field_x"] = mutation.value;
    } else parent[last] = mutation.value;
  }
  return copy;
}

const isPrefix = (a: Path, b: Path) => a.length <= b.length && a.every((part, i) => part === b[i]);

/** Valid arguments with one field replaced by junk, deleted, or given an unknown sibling key. */
function mutatedArbitrary(valid: fc.Arbitrary<unknown>) {
  return valid
    .map((document) => JSON.parse(JSON.stringify(document)) as unknown)
    .chain((document) => {
      const paths = pathsOf(document);
      return fc.record({
        document: fc.constant(document),
        mutation: fc.record({
          path: fc.constantFrom(...paths),
          kind: fc.constantFrom("replace" as const, "delete" as const, "add" as const),
          value: fc.oneof(
            anything,
            fc.constantFrom(-1, 0, 1e308, -1e-308, 2 ** 53, "", " ", "0x", [], {}, null, true),
          ),
        }),
      });
    });
}

describe("task argument parsers on junk", () => {
  for (const { name, parse } of parsers) {
    test(`${name}: fc.anything() and hostile values → only TaskArgsError`, (context) => {
      let runs = 0;
      fc.assert(
        fc.property(anything, (input) => {
          runs++;
          expectTaskArgsErrorOrValue(parse, input);
        }),
        { numRuns: RUNS },
      );
      for (const input of hostileValues()) {
        runs++;
        expect(expectTaskArgsErrorOrValue(parse, input), "hostile values are never accepted").not.toBeNull();
      }
      recordTrial(context, {
        area: "Task args",
        fault: `${name}: random values of every JS type, throwing getters/proxies, cycles, 20 000-deep nesting`,
        runs,
        expected: "only TaskArgsError, with a path and message for each issue; never TypeError/RangeError",
      });
    });

    test(`${name}: random JSON text and JSON values → only TaskArgsError`, (context) => {
      let runs = 0;
      fc.assert(
        fc.property(
          fc.oneof(fc.json({ maxDepth: 4 }), fc.string({ unit: "binary", maxLength: 200 }), fc.jsonValue()),
          (input) => {
            runs++;
            expectTaskArgsErrorOrValue(parse, input);
          },
        ),
        { numRuns: RUNS },
      );
      recordTrial(context, {
        area: "Task args",
        fault: `${name}: random JSON text, random strings, random JSON values`,
        runs,
        expected: "only TaskArgsError naming a path",
      });
    });
  }

  const mutationTargets = [
    { name: "parseGptTaskArgs", parse: parseGptTaskArgs, valid: gptArgsArbitrary as fc.Arbitrary<unknown> },
    { name: "parseSdTaskArgs", parse: parseSdTaskArgs, valid: sdArgsArbitrary as fc.Arbitrary<unknown> },
  ];
  for (const { name, parse, valid } of mutationTargets) {
    test(`${name}: valid arguments with one field mutated → TaskArgsError naming that field`, (context) => {
      let runs = 0;
      let rejected = 0;
      fc.assert(
        fc.property(mutatedArbitrary(valid), ({ document, mutation }) => {
          runs++;
          const error = expectTaskArgsErrorOrValue(parse, mutate(document, mutation));
          if (!error) return;
          rejected++;
          // The blamed field is on the mutated path: the field itself, one of its parents (a union that
          // no branch matched), or a child of it.
          const related = error.issues.some(
            (issue) => isPrefix(issue.path, mutation.path) || isPrefix(mutation.path, issue.path),
          );
          if (!related) {
            throw new Error(
              `issues ${JSON.stringify(error.issues)} do not touch the mutated path ${JSON.stringify(mutation.path)}`,
            );
          }
        }),
        { numRuns: RUNS },
      );
      // Most mutations break the document; a property that never rejects would test nothing.
      expect(rejected).toBeGreaterThan(runs / 4);
      recordTrial(context, {
        area: "Task args",
        fault: `${name}: valid arguments with one field replaced by junk, deleted, or given an unknown key`,
        runs,
        expected: "accepted, or TaskArgsError whose issue path is the mutated field (or its parent/child)",
      });
    });
  }
});

describe("other exported parsers on junk", () => {
  test("parseModelRef: random strings and values → only ModelRefError", (context) => {
    let runs = 0;
    const refs = fc.oneof(
      fc.string({ unit: "binary", maxLength: 80 }),
      fc
        .tuple(
          fc.constantFrom("hf:", "file:", "file://", "file:///", "", "https://", "hf://"),
          fc.stringMatching(/^[A-Za-z0-9._@:/%\\-]{0,60}$/),
          fc.constantFrom("", ".gguf", ":Q4_0", ":q4_k_m", "/x.gguf", "%", "%zz", "\u0000"),
        )
        .map((parts) => parts.join("")),
      anything,
    );
    fc.assert(
      fc.property(refs, (ref) => {
        runs++;
        try {
          parseModelRef(ref as string);
        } catch (error) {
          if (!(error instanceof ModelRefError)) throw new Error(`got ${describeError(error)}`);
        }
      }),
      { numRuns: RUNS * 2 },
    );
    recordTrial(context, {
      area: "Task args",
      fault:
        "parseModelRef: random strings, hf:/file: prefixes with junk, broken percent-escapes, non-strings",
      runs,
      expected: "only ModelRefError",
    });
  });

  test("canonicalize / taskHash: random values → only CanonicalJsonError", (context) => {
    let runs = 0;
    const check = (value: unknown) => {
      runs++;
      for (const fn of [canonicalize, taskHash]) {
        try {
          fn(value);
        } catch (error) {
          if (!(error instanceof CanonicalJsonError)) throw new Error(`got ${describeError(error)}`);
          expect(error.path.startsWith("$")).toBe(true);
        }
      }
    };
    fc.assert(fc.property(anything, check), { numRuns: RUNS });
    // fast-check cannot hold a revoked proxy, so the hostile values are tried one by one.
    for (const value of hostileValues()) check(value);
    recordTrial(context, {
      area: "Task args",
      fault: "canonicalize/taskHash: random values, cycles, proxies, 20 000-deep nesting",
      runs,
      expected: "only CanonicalJsonError with a $-path",
    });
  });

  test("workUnits with an unknown task type → UnknownTaskTypeError", (context) => {
    let runs = 0;
    fc.assert(
      fc.property(
        anything.filter((t) => t !== 0 && t !== 1),
        (taskType) => {
          runs++;
          expect(() => workUnits(taskType as TaskType, {})).toThrow(UnknownTaskTypeError);
        },
      ),
      { numRuns: RUNS },
    );
    recordTrial(context, {
      area: "Task args",
      fault: "workUnits with a task type other than 0/1 (any JS value)",
      runs,
      expected: "UnknownTaskTypeError",
    });
  });

  test("renderChatTemplate: random template text → only ChatTemplateError", (context) => {
    let runs = 0;
    const pieces = fc.constantFrom(
      "{{",
      "}}",
      "{%",
      "%}",
      "{#",
      "#}",
      " for m in messages ",
      " endfor ",
      " if ",
      " endif ",
      " m.content ",
      " raise_exception('no') ",
      " messages[0]['role'] ",
      "|",
      " length ",
      " set x = 1 ",
      "(",
      ")",
      "[",
      "]",
      "'",
      '"',
      " + ",
      " loop.index ",
      "text",
    );
    fc.assert(
      fc.property(
        fc.oneof(
          fc.array(pieces, { maxLength: 20 }).map((p) => p.join("")),
          fc.string({ maxLength: 60 }),
        ),
        (template) => {
          runs++;
          try {
            renderChatTemplate({ template, messages: [{ role: "user", content: "hello" }] });
          } catch (error) {
            if (!(error instanceof ChatTemplateError)) throw new Error(`got ${describeError(error)}`);
          }
        },
      ),
      { numRuns: RUNS },
    );
    recordTrial(context, {
      area: "Task args",
      fault: "renderChatTemplate: random Jinja fragments and random text as the template",
      runs,
      expected: "rendered text or ChatTemplateError",
    });
  });
});

describe("PNG decoding on junk", () => {
  const valid = encodePng(
    Uint8Array.from({ length: 16 * 16 * 4 }, (_, i) => (i * 37) & 0xff),
    16,
    16,
  );

  function expectPngDecodeError(bytes: Uint8Array): void {
    for (const fn of [decodePng, pngPHash]) {
      try {
        fn(bytes);
      } catch (error) {
        if (!(error instanceof PngDecodeError)) {
          throw new Error(`${fn.name}: got ${describeError(error)}`, { cause: error });
        }
        expect(error).toBeInstanceOf(CrynuxError);
        expect(error.reason).toMatch(/^(not_png|truncated|corrupt|unsupported|too_large)$/);
      }
    }
  }

  test("random bytes → only PngDecodeError", (context) => {
    let runs = 0;
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        runs++;
        expectPngDecodeError(bytes);
      }),
      { numRuns: RUNS },
    );
    recordTrial(context, {
      area: "Task args",
      fault: "decodePng/pngPHash on random bytes",
      runs,
      expected: "only PngDecodeError with a reason",
    });
  });

  test("a valid PNG with bytes flipped, cut or spliced → only PngDecodeError", (context) => {
    let runs = 0;
    const mutation = fc.oneof(
      fc
        .array(fc.tuple(fc.nat({ max: valid.length - 1 }), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        })
        .map((flips) => {
          const bytes = valid.slice();
          for (const [at, value] of flips) bytes[at] = value;
          return bytes;
        }),
      fc.nat({ max: valid.length }).map((length) => valid.slice(0, length)),
      fc
        .tuple(fc.nat({ max: valid.length }), fc.uint8Array({ maxLength: 64 }))
        .map(([at, junk]) => Uint8Array.from([...valid.slice(0, at), ...junk, ...valid.slice(at)])),
    );
    fc.assert(
      fc.property(mutation, (bytes) => {
        runs++;
        expectPngDecodeError(bytes);
      }),
      { numRuns: RUNS },
    );
    // Non-Uint8Array inputs a JavaScript caller may pass anyway.
    for (const input of [null, undefined, "png", [137, 80, 78, 71], new ArrayBuffer(8), {}]) {
      runs++;
      expect(() => decodePng(input as Uint8Array)).toThrow(PngDecodeError);
    }
    recordTrial(context, {
      area: "Task args",
      fault:
        "decodePng/pngPHash on a valid PNG with flipped bytes, truncated, or with junk spliced in; non-byte inputs",
      runs,
      expected: "decoded image or PngDecodeError; never another error",
    });
  });
});
