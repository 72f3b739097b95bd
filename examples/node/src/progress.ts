import type { ModelDownloadProgress, NodeLogger, QuantizeProgress } from "@crynux/node-core";

/** Shows model downloads and quantizations: text bars on a terminal, a few log lines otherwise. */
export type ProgressReporter = {
  download(progress: ModelDownloadProgress): void;
  /** `label`: what is being quantized (the model reference and the target). */
  quantize(label: string, progress: QuantizeProgress): void;
  /** Ends the bar in progress (if any) with a newline. */
  finish(): void;
};

export type CreateProgressReporterParameters = {
  /** Draw bars (`\r`-rewritten lines) instead of log lines; usually `process.stderr.isTTY`. */
  tty: boolean;
  /** Where bars go; default stderr. */
  write?: (text: string) => void;
  /** Where the plain lines go when not on a terminal. */
  logger: NodeLogger;
  /** Bar width in characters; default 30. */
  width?: number;
};

/** `[#########---------]`: `fraction` (clamped to 0..1) of `width` characters filled. */
export function renderBar(fraction: number, width = 30): string {
  const clamped = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.round(clamped * width);
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
}

/** Bytes as `12.3 MB` (powers of 1000, as download sizes are usually shown). */
export function formatBytes(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function createProgressReporter(parameters: CreateProgressReporterParameters): ProgressReporter {
  const write = parameters.write ?? ((text: string) => process.stderr.write(text));
  const width = parameters.width ?? 30;
  let active: string | undefined;
  let drawn = "";
  // Last quarter logged per key, so a non-terminal log gets 0 %, 25 %, 50 %, 75 %, 100 % only.
  const logged = new Map<string, number>();

  const show = (key: string, kind: string, done: number, total: number | undefined, fields: object) => {
    const fraction = total ? done / total : 0;
    const complete = total !== undefined && done >= total;
    if (parameters.tty) {
      // Redraw when the bar or the percentage changes, not on every chunk.
      const frame = `${Math.floor(fraction * 100)}:${Math.round(fraction * width)}:${complete}`;
      if (active === key && drawn === frame && total !== undefined) return;
      drawn = frame;
      if (active !== undefined && active !== key) write("\n");
      active = key;
      const percent = total ? `${Math.floor(fraction * 100)}%`.padStart(4) : "   ?";
      const sizes = `${formatBytes(done)}${total ? ` / ${formatBytes(total)}` : ""}`;
      write(`\r${kind} ${key} ${renderBar(fraction, width)} ${percent} ${sizes}\x1b[K`);
      if (complete) {
        write("\n");
        active = undefined;
      }
      return;
    }
    const quarter = complete ? 4 : Math.floor(fraction * 4);
    if ((logged.get(key) ?? -1) >= quarter) return;
    logged.set(key, quarter);
    parameters.logger.info(kind, {
      ...fields,
      bytes: done,
      ...(total !== undefined ? { totalBytes: total, percent: Math.floor(fraction * 100) } : {}),
    });
  };

  return {
    download(progress) {
      show(progress.ref, "download", progress.bytesDownloaded, progress.totalBytes, { model: progress.ref });
    },
    quantize(label, progress) {
      show(label, "quantize", progress.bytesRead, progress.totalBytes, { model: label });
    },
    finish() {
      if (parameters.tty && active !== undefined) write("\n");
      active = undefined;
    },
  };
}
