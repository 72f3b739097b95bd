import { CrynuxError, type CrynuxErrorParameters } from "@crynux/tasks";

/** Exit codes of `crynux-node`. */
export const EXIT = { ok: 0, runtime: 1, usage: 2 } as const;

/** Base class of the node program's errors; `exitCode` is what the CLI exits with when it reaches it. */
export class NodeProgramError extends CrynuxError {
  override name = "NodeProgramError";
  readonly exitCode: number;
  constructor(shortMessage: string, parameters: CrynuxErrorParameters & { exitCode?: number } = {}) {
    const { exitCode, ...rest } = parameters;
    super(shortMessage, rest);
    this.exitCode = exitCode ?? EXIT.runtime;
  }
}

/**
 * A config file, environment variable, key file or deployment file that cannot be used. `issues` holds one
 * entry per bad field, each naming the field's path (`chain.rpcUrl`, `models.prepare.0.model`, …).
 */
export class NodeConfigError extends NodeProgramError {
  override name = "NodeConfigError";
  readonly issues: { path: string; message: string }[];
  constructor(
    shortMessage: string,
    parameters: { issues?: { path: string; message: string }[]; cause?: unknown; details?: string } = {},
  ) {
    const issues = parameters.issues ?? [];
    super(shortMessage, {
      exitCode: EXIT.usage,
      details:
        parameters.details ??
        (issues.length ? issues.map((issue) => `- ${issue.path}: ${issue.message}`).join("\n") : undefined),
      cause: parameters.cause,
    });
    this.issues = issues;
  }
}

/** Bad command-line usage (unknown command or flag, missing value). */
export class UsageError extends NodeProgramError {
  override name = "UsageError";
  constructor(shortMessage: string) {
    super(shortMessage, { exitCode: EXIT.usage });
  }
}
