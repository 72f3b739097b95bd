/** Structured log fields: bigints are written as decimal strings. */
export type LogFields = Record<string, unknown>;

/** Where the node writes its logs. Every method takes a short message and structured fields. */
export type NodeLogger = {
  /** Detail useful only when tracing a problem (each poll, each retry). */
  debug(message: string, fields?: LogFields): void;
  /** Normal progress: joined, task started, committed, paid. */
  info(message: string, fields?: LogFields): void;
  /** Something went wrong but the node carries on (a retried failure, a penalty). */
  warn(message: string, fields?: LogFields): void;
  /** A failure the node cannot recover from by itself, or one that cost it (slashed, stopped). */
  error(message: string, fields?: LogFields): void;
};

/** A logger that writes nothing (the default). */
export const silentLogger: NodeLogger = { debug() {}, info() {}, warn() {}, error() {} };

const LEVELS = ["debug", "info", "warn", "error"] as const;
/** A log level, least severe first; {@link jsonLinesLogger} drops entries below its `level`. */
export type LogLevel = (typeof LEVELS)[number];

/**
 * A logger writing one JSON object per line (`{"time","level","msg",...fields}`) to `write` (default
 * stderr), from `level` up (default `info`). Errors in fields are written with their name and message.
 */
export function jsonLinesLogger(
  options: { level?: LogLevel; write?: (line: string) => void; base?: LogFields } = {},
): NodeLogger {
  const min = LEVELS.indexOf(options.level ?? "info");
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const log =
    (level: LogLevel) =>
    (message: string, fields: LogFields = {}) => {
      if (LEVELS.indexOf(level) < min) return;
      const entry = { time: new Date().toISOString(), level, msg: message, ...options.base, ...fields };
      write(`${JSON.stringify(entry, replacer)}\n`);
    };
  return { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error)
    return {
      name: value.name,
      message: (value as { shortMessage?: string }).shortMessage ?? value.message,
    };
  return value;
}
