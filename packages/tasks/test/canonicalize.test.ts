import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CanonicalJsonError, canonicalBytes, canonicalize } from "../src/canonicalize.js";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

describe("canonicalize: RFC 8785 examples", () => {
  it("§3.2.2 sample: numbers, escaping and literals", () => {
    const input = String.raw`{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`;
    const expected = String.raw`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`;
    expect(canonicalize(JSON.parse(input))).toBe(expected);
  });

  it("§3.2.4 UTF-8 bytes of the sample", () => {
    const input = JSON.parse(
      String.raw`{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]}`,
    );
    expect(hex(canonicalBytes(input))).toBe(
      [
        "7b226c69746572616c73223a5b6e756c6c2c747275652c66616c73655d2c226e756d62657273223a5b3333",
        "333333333333332e333333333333332c31652b33302c342e352c302e3030322c31652d32375d2c22737472",
        "696e67223a22e282ac245c75303030665c6e4127425c225c5c5c5c5c222f227d",
      ].join(""),
    );
  });

  it("§3.2.3 sorting by UTF-16 code units", () => {
    const input = String.raw`{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`;
    expect(canonicalize(JSON.parse(input))).toBe(
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    );
  });

  it("sorting and escaping of the JCS reference test data (weird.json)", () => {
    const input = String.raw`{
  "\u20ac": "Euro Sign",
  "1": "One",
  "\u0080": "Control\u007f",
  "\ud83d\ude02": "Smiley",
  "\u00f6": "Latin Small Letter O With Diaeresis",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "</script>": "Browser Challenge"
}`;
    expect(canonicalize(JSON.parse(input))).toBe(
      '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f","ö":"Latin Small Letter O With Diaeresis","€":"Euro Sign","😂":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    );
  });

  // RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
  const appendixB: [string, string][] = [
    ["0000000000000000", "0"],
    ["8000000000000000", "0"],
    ["0000000000000001", "5e-324"],
    ["8000000000000001", "-5e-324"],
    ["7fefffffffffffff", "1.7976931348623157e+308"],
    ["ffefffffffffffff", "-1.7976931348623157e+308"],
    ["4340000000000000", "9007199254740992"],
    ["c340000000000000", "-9007199254740992"],
    ["4430000000000000", "295147905179352830000"],
    ["44b52d02c7e14af5", "9.999999999999997e+22"],
    ["44b52d02c7e14af6", "1e+23"],
    ["44b52d02c7e14af7", "1.0000000000000001e+23"],
    ["444b1ae4d6e2ef4e", "999999999999999700000"],
    ["444b1ae4d6e2ef4f", "999999999999999900000"],
    ["444b1ae4d6e2ef50", "1e+21"],
    ["3eb0c6f7a0b5ed8c", "9.999999999999997e-7"],
    ["3eb0c6f7a0b5ed8d", "0.000001"],
    ["41b3de4355555553", "333333333.3333332"],
    ["41b3de4355555554", "333333333.33333325"],
    ["41b3de4355555555", "333333333.3333333"],
    ["41b3de4355555556", "333333333.3333334"],
    ["41b3de4355555557", "333333333.33333343"],
    ["becbf647612f3696", "-0.0000033333333333333333"],
    ["43143ff3c1cb0959", "1424953923781206.2"],
  ];
  it.each(appendixB)("Appendix B: %s → %s", (bits, text) => {
    const view = new DataView(new ArrayBuffer(8));
    view.setBigUint64(0, BigInt(`0x${bits}`));
    expect(canonicalize(view.getFloat64(0))).toBe(text);
  });

  it.each([
    ["7fffffffffffffff", "NaN"],
    ["7ff0000000000000", "Infinity"],
  ])("Appendix B: %s (%s) is an error", (bits) => {
    const view = new DataView(new ArrayBuffer(8));
    view.setBigUint64(0, BigInt(`0x${bits}`));
    expect(() => canonicalize(view.getFloat64(0))).toThrow(CanonicalJsonError);
  });
});

describe("canonicalize: values that are not I-JSON", () => {
  it.each([
    ["undefined", undefined],
    ["a bigint", 1n],
    ["a function", () => 1],
    ["a symbol", Symbol("x")],
    ["a Date", new Date(0)],
    ["a Map", new Map()],
    ["undefined in an array", [1, undefined]],
    ["a lone high surrogate", "a\ud800b"],
    ["a lone low surrogate", "\udc00"],
    ["a lone surrogate in a key", { "\ud800": 1 }],
  ])("rejects %s", (_, value) => {
    expect(() => canonicalize(value)).toThrow(CanonicalJsonError);
  });

  it("rejects cycles but accepts shared (acyclic) references", () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalize(cyclic)).toThrow(/cycle/);
    const shared = { x: 1 };
    expect(canonicalize({ a: shared, b: [shared] })).toBe('{"a":{"x":1},"b":[{"x":1}]}');
  });

  it("names the path of the bad value", () => {
    try {
      canonicalize({ a: [{ b: Number.NaN }] });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(CanonicalJsonError);
      expect((error as CanonicalJsonError).path).toBe("$.a[0].b");
    }
  });

  it("leaves out properties whose value is undefined, like JSON.stringify", () => {
    expect(canonicalize({ b: 1, a: undefined })).toBe('{"b":1}');
    expect(canonicalize(Object.assign(Object.create(null), { z: true, y: null }))).toBe(
      '{"y":null,"z":true}',
    );
  });
});

describe("canonicalize: properties", () => {
  const json = fc.jsonValue();

  it("agrees with JSON.parse: the canonical text parses back to an equal value", () => {
    fc.assert(
      fc.property(json, (value) => {
        // -0 is written as 0, which JSON equality cannot tell apart anyway.
        expect(JSON.parse(canonicalize(value))).toEqual(JSON.parse(JSON.stringify(value)));
      }),
    );
  });

  it("is idempotent", () => {
    fc.assert(
      fc.property(json, (value) => {
        const once = canonicalize(value);
        expect(canonicalize(JSON.parse(once))).toBe(once);
      }),
    );
  });

  it("does not depend on key order", () => {
    const shuffle = <T>(items: T[], seed: number): T[] => {
      const copy = [...items];
      let state = seed;
      for (let i = copy.length - 1; i > 0; i--) {
        state = (state * 1103515245 + 12345) >>> 0;
        const j = state % (i + 1);
        [copy[i], copy[j]] = [copy[j]!, copy[i]!];
      }
      return copy;
    };
    const reorder = (value: unknown, seed: number): unknown => {
      if (Array.isArray(value)) return value.map((item) => reorder(item, seed));
      if (value && typeof value === "object") {
        const entries = shuffle(Object.entries(value), seed);
        return Object.fromEntries(entries.map(([key, item]) => [key, reorder(item, seed + 1)]));
      }
      return value;
    };
    fc.assert(
      fc.property(json, fc.nat(), (value, seed) => {
        expect(canonicalize(reorder(value, seed))).toBe(canonicalize(value));
      }),
    );
  });

  it("has no whitespace outside strings and is valid UTF-8 JSON", () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (value) => {
        const text = canonicalize(value);
        const withoutStrings = text.replace(/"(?:[^"\\]|\\.)*"/g, "");
        expect(withoutStrings).not.toMatch(/\s/);
        expect(new TextDecoder("utf-8", { fatal: true }).decode(canonicalBytes(value))).toBe(text);
      }),
    );
  });
});
