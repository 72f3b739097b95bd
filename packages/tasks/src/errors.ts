/** Parameters shared by every error of `@crynux/tasks`. */
export type CrynuxErrorParameters = {
  /** Extra lines that explain the error (one per problem). */
  details?: string | undefined;
  /** Path of the guide in `docs/` that explains the error, relative to the docs root. */
  docsPath?: string | undefined;
  /** The error that caused this one. */
  cause?: unknown;
};

/**
 * Base class of every error thrown by `@crynux/tasks`. `shortMessage` is one line for a user;
 * `message` adds the details and the docs path.
 */
export class CrynuxError extends Error {
  override name = "CrynuxError";
  readonly shortMessage: string;
  readonly details: string | undefined;
  readonly docsPath: string | undefined;

  constructor(shortMessage: string, parameters: CrynuxErrorParameters = {}) {
    const lines = [shortMessage];
    if (parameters.details) lines.push("", parameters.details);
    if (parameters.docsPath) lines.push("", `Docs: docs/${parameters.docsPath}`);
    super(lines.join("\n"), parameters.cause === undefined ? undefined : { cause: parameters.cause });
    this.shortMessage = shortMessage;
    this.details = parameters.details;
    this.docsPath = parameters.docsPath;
  }
}
