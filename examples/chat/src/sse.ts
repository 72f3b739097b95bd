/** One server-sent event: its type (`message` unless the stream named it) and its joined `data` lines. */
export type SseEvent = { event: string; data: string };

export type SseParser = {
  /** Feeds decoded text; it may end anywhere, even inside a line. */
  push(text: string): void;
  /** The stream ended: an event left without its blank line is dropped, as the specification says. */
  end(): void;
};

/**
 * Parses a `text/event-stream` body (WHATWG HTML, "Parsing an event stream"), calling `onEvent` per event and
 * `onComment` per comment line: the bridge sends `: keep-alive` comments while a task runs, which the page
 * shows as a sign of life.
 */
export function createSseParser(handlers: {
  onEvent: (event: SseEvent) => void;
  onComment?: (comment: string) => void;
}): SseParser {
  let buffer = "";
  let data: string[] = [];
  let event = "";
  // A CR at the end of a chunk may be the first half of a CRLF split across chunks.
  let pendingCr = false;

  const line = (text: string) => {
    if (text === "") {
      if (data.length > 0) handlers.onEvent({ event: event || "message", data: data.join("\n") });
      data = [];
      event = "";
      return;
    }
    if (text.startsWith(":")) {
      handlers.onComment?.(text.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    const value = colon === -1 ? "" : text.slice(colon + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    // `id` and `retry` steer reconnection, which a fetch-based reader does not do.
  };

  return {
    push(text) {
      if (pendingCr && text.startsWith("\n")) text = text.slice(1);
      pendingCr = false;
      buffer += text;
      for (;;) {
        const match = /\r\n|\r|\n/.exec(buffer);
        if (!match) break;
        if (match[0] === "\r" && match.index === buffer.length - 1) pendingCr = true;
        line(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
      }
    },
    end() {
      buffer = "";
      data = [];
      event = "";
    },
  };
}
