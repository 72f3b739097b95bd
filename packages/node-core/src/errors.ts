import { CrynuxError, type CrynuxErrorParameters } from "@crynux/tasks";

/** Parameters shared by every error of `@crynux/node-core`. */
export type NodeCoreErrorParameters = CrynuxErrorParameters;

/**
 * Base class of every error thrown by `@crynux/node-core` (itself a {@link CrynuxError}): `shortMessage` is
 * one line for a log or a task error report; `message` adds the details and the docs path.
 */
export class NodeCoreError extends CrynuxError {
  override name = "NodeCoreError";
}

/** A file that is not a GGUF file this toolkit can read, or a GGUF file that is cut short or inconsistent. */
export class GgufFormatError extends NodeCoreError {
  override name = "GgufFormatError";
  constructor(shortMessage: string, parameters: NodeCoreErrorParameters = {}) {
    super(shortMessage, { docsPath: "node-core.md#gguf", ...parameters });
  }
}
