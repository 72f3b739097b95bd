import { jsonLinesLogger, type LogFields, type LogLevel, type NodeLogger } from "@crynux/node-core";

export type CreateLoggerParameters = {
  level?: LogLevel;
  /** `json`: one object per line (`time`, `level`, `msg`, then the fields); `pretty`: for people. */
  format?: "json" | "pretty";
  /** Default: stderr (stdout stays for command output). */
  write?: (line: string) => void;
  /** Fields added to every line. */
  base?: LogFields;
};

const LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** The node program's logger, in the {@link NodeLogger} shape node-core writes to. */
export function createLogger(parameters: CreateLoggerParameters = {}): NodeLogger {
  const level = parameters.level ?? "info";
  const write = parameters.write ?? ((line: string) => process.stderr.write(line));
  if ((parameters.format ?? "json") === "json")
    return jsonLinesLogger({ level, write, ...(parameters.base ? { base: parameters.base } : {}) });
  const min = LEVELS.indexOf(level);
  const log =
    (at: LogLevel) =>
    (message: string, fields: LogFields = {}) => {
      if (LEVELS.indexOf(at) < min) return;
      const all = { ...parameters.base, ...fields };
      const rest = Object.entries(all)
        .map(([key, value]) => `${key}=${formatValue(value)}`)
        .join(" ");
      const time = new Date().toISOString().slice(11, 23);
      write(`${time} ${at.toUpperCase().padEnd(5)} ${message}${rest ? ` ${rest}` : ""}\n`);
    };
  return { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };
}

function formatValue(value: unknown): string {
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "string") return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  if (value instanceof Error)
    return JSON.stringify((value as { shortMessage?: string }).shortMessage ?? value.message);
  return (
    JSON.stringify(value, (_key, inner) => (typeof inner === "bigint" ? inner.toString() : inner)) ??
    "undefined"
  );
}
