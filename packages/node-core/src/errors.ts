/** Parameters shared by every error of `@crynux/node-core`. */
export type NodeCoreErrorParameters = {
  details?: string | undefined;
  docsPath?: string | undefined;
  cause?: unknown;
};

/**
 * Base class of every error thrown by `@crynux/node-core`: `shortMessage` is one line for a log or a task
 * error report; `message` adds the details and the docs path.
 */
export class NodeCoreError extends Error {
  override name = "NodeCoreError";
  readonly shortMessage: string;
  readonly details: string | undefined;
  readonly docsPath: string | undefined;

  constructor(shortMessage: string, parameters: NodeCoreErrorParameters = {}) {
    const lines = [shortMessage];
    if (parameters.details) lines.push("", parameters.details);
    if (parameters.docsPath) lines.push("", `Docs: docs/${parameters.docsPath}`);
    super(lines.join("\n"), parameters.cause === undefined ? undefined : { cause: parameters.cause });
    this.shortMessage = shortMessage;
    this.details = parameters.details;
    this.docsPath = parameters.docsPath;
  }
}

/** A file that is not a GGUF file this toolkit can read, or a GGUF file that is cut short or inconsistent. */
export class GgufFormatError extends NodeCoreError {
  override name = "GgufFormatError";
  constructor(shortMessage: string, parameters: NodeCoreErrorParameters = {}) {
    super(shortMessage, { docsPath: "node-core.md#gguf", ...parameters });
  }
}
