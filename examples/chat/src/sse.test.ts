import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { normalizeBridgeUrl } from "./bridge.js";
import { formatCnx, formatFee } from "./progress.js";
import { createSseParser, type SseEvent } from "./sse.js";

function parse(chunks: readonly string[]): { events: SseEvent[]; comments: string[] } {
  const events: SseEvent[] = [];
  const comments: string[] = [];
  const parser = createSseParser({ onEvent: (e) => events.push(e), onComment: (c) => comments.push(c) });
  for (const chunk of chunks) parser.push(chunk);
  parser.end();
  return { events, comments };
}

/** Cuts `text` at the given positions (sorted, deduplicated, within the text). */
const cut = (text: string, at: number[]) => {
  const points = [...new Set(at.map((p) => p % (text.length + 1)))].sort((a, b) => a - b);
  const parts: string[] = [];
  let from = 0;
  for (const point of points) {
    parts.push(text.slice(from, point));
    from = point;
  }
  parts.push(text.slice(from));
  return parts;
};

describe("createSseParser", () => {
  test("what the bridge streams: keep-alive comments, data events, [DONE]", () => {
    const { events, comments } = parse([': keep-alive\n\n: keep-alive\n\ndata: {"a":1}\n\ndata: [DONE]\n\n']);
    expect(comments).toEqual(["keep-alive", "keep-alive"]);
    expect(events).toEqual([
      { event: "message", data: '{"a":1}' },
      { event: "message", data: "[DONE]" },
    ]);
  });

  test("multi-line data, named events, fields without a space or a value, ignored fields", () => {
    const { events } = parse(["event: error\ndata:one\ndata\ndata:  two\nid: 7\nretry: 10\n\n"]);
    expect(events).toEqual([{ event: "error", data: "one\n\n two" }]);
  });

  test("an event without its blank line at the end of the stream is dropped", () => {
    expect(parse(["data: whole\n\ndata: cut"]).events).toEqual([{ event: "message", data: "whole" }]);
  });

  test("CRLF, CR and LF line ends, cut anywhere across chunks, give the same events", () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: fc.constantFrom("a", "b", " ", ":", "é", "{", "}") }), {
          minLength: 1,
          maxLength: 5,
        }),
        fc.constantFrom("\n", "\r\n", "\r"),
        fc.array(fc.nat(), { maxLength: 8 }),
        (payloads, newline, positions) => {
          // Two data lines per event: a CRLF split across chunks and read as two line ends would split it.
          const text = payloads
            .map((data) => `: ping${newline}data: ${data}${newline}data: ${data}${newline}${newline}`)
            .join("");
          const { events, comments } = parse(cut(text, positions));
          expect(events.map((e) => e.data)).toEqual(payloads.map((data) => `${data}\n${data}`));
          expect(comments).toHaveLength(payloads.length);
        },
      ),
    );
  });
});

describe("page helpers", () => {
  test("normalizeBridgeUrl accepts the bridge URL or the OpenAI base URL", () => {
    for (const url of [
      "http://127.0.0.1:8090",
      "http://127.0.0.1:8090/",
      " http://127.0.0.1:8090/v1 ",
      "http://127.0.0.1:8090/v1/",
    ])
      expect(normalizeBridgeUrl(url)).toBe("http://127.0.0.1:8090");
    expect(normalizeBridgeUrl("https://example.com/bridge/v1")).toBe("https://example.com/bridge");
  });

  test("formatCnx prints wei as CNX without trailing zeros; formatFee keeps tiny fees in wei", () => {
    expect(formatCnx("0")).toBe("0");
    expect(formatCnx("1000000000000000000")).toBe("1");
    expect(formatCnx("1500000000000000000")).toBe("1.5");
    expect(formatCnx("1234")).toBe("0.000000000000001234");
    expect(formatCnx("123456789000000000000")).toBe("123.456789");
    expect(formatFee("32")).toBe("32 wei");
    expect(formatFee("999999999999")).toBe("999999999999 wei");
    expect(formatFee("1000000000000")).toBe("0.000001 CNX");
  });
});
