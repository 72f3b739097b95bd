import { NodeCoreError, type NodeCoreErrorParameters } from "../errors.js";

/** A file of the node's state directory cannot be read as what it should be: never dropped silently. */
export class NodeStoreError extends NodeCoreError {
  override name = "NodeStoreError";
  readonly path: string;
  constructor(shortMessage: string, parameters: NodeCoreErrorParameters & { path: string }) {
    const { path, ...rest } = parameters;
    super(shortMessage, { docsPath: "node-core.md#node-state", ...rest });
    this.path = path;
  }
}

/**
 * The contract refused a transaction (found by the simulation before sending, or by the receipt):
 * `errorName` is the contract's custom error (`AlreadyCommitted`, `CommitDeadlinePassed`, …), or
 * `"Error"` / `"Panic"` / `undefined` when it reverted without one the ABI knows.
 */
export class TxRevertedError extends NodeCoreError {
  override name = "TxRevertedError";
  readonly functionName: string;
  readonly errorName: string | undefined;
  readonly errorArgs: readonly unknown[];
  readonly hash: `0x${string}` | undefined;
  constructor(parameters: {
    functionName: string;
    errorName: string | undefined;
    errorArgs?: readonly unknown[] | undefined;
    hash?: `0x${string}` | undefined;
    cause?: unknown;
  }) {
    const args = parameters.errorArgs?.length
      ? `(${parameters.errorArgs.map((a) => String(a)).join(", ")})`
      : "";
    super(`${parameters.functionName} reverted: ${parameters.errorName ?? "unknown reason"}${args}`, {
      cause: parameters.cause,
      details: parameters.hash ? `transaction ${parameters.hash}` : undefined,
    });
    this.functionName = parameters.functionName;
    this.errorName = parameters.errorName;
    this.errorArgs = parameters.errorArgs ?? [];
    this.hash = parameters.hash;
  }
}

/** A transaction could not be sent or confirmed after every retry (RPC down, node out of gas money). */
export class TxSendError extends NodeCoreError {
  override name = "TxSendError";
}

/** The node was stopped while a step was under way; the step resumes from the store at the next start. */
export class NodeStoppedError extends NodeCoreError {
  override name = "NodeStoppedError";
  constructor() {
    super("The node is stopping.");
  }
}

/** The node cannot start or act: wrong configuration, chain state that forbids the action, … */
export class NodeRuntimeError extends NodeCoreError {
  override name = "NodeRuntimeError";
}
