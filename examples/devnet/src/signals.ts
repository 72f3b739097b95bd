/**
 * Calls `shutdown` on the first SIGINT / SIGTERM. A later signal exits at once with 130, except within the
 * first 2 s: a Ctrl-C reaches every process of the terminal's group, and a wrapper (npm, tsx) may relay the
 * same signal again, which must not cut the shutdown short.
 */
export function onShutdownSignal(shutdown: (signal: NodeJS.Signals) => void): void {
  let first: number | undefined;
  const handler = (signal: NodeJS.Signals) => {
    if (first === undefined) {
      first = Date.now();
      shutdown(signal);
    } else if (Date.now() - first > 2000) {
      process.exit(130);
    }
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
}
