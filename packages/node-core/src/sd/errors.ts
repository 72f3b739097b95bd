import { NodeCoreError, type NodeCoreErrorParameters } from "../errors.js";

/** Why an SD engine could not produce a task's images. */
export type SdEngineErrorReason =
  /** The task asks for something the engine cannot do (a field it cannot map). Same on every node running this engine. */
  | "unsupported_option"
  /** The task arguments are invalid for this engine in a way the schema does not catch (e.g. ControlNet without an image). */
  | "invalid_args"
  /** A model the task names (checkpoint, LoRA, VAE, ControlNet) is not installed on this node's server. */
  | "model_not_found"
  /** The server cannot be reached (connection refused, DNS, reset). */
  | "engine_unreachable"
  /** The server answered with an HTTP error (out of memory, a crash in the WebUI). */
  | "engine_error"
  /** The server answered with something that is not the images asked for. */
  | "bad_response"
  /** The engine took longer than its time limit. */
  | "timeout"
  /** The caller aborted. */
  | "aborted";

const TASK_ERROR_REASONS: ReadonlySet<SdEngineErrorReason> = new Set(["unsupported_option", "invalid_args"]);

/**
 * Thrown by SD engines and the SD executor. `reason` says what went wrong; {@link SdEngineError.isTaskError}
 * says whether it comes from the task itself (the node reports a task error) or from this node (its server,
 * its models), which the node must fix rather than report.
 */
export class SdEngineError extends NodeCoreError {
  override name = "SdEngineError";
  readonly reason: SdEngineErrorReason;
  constructor(reason: SdEngineErrorReason, shortMessage: string, parameters: NodeCoreErrorParameters = {}) {
    super(shortMessage, { docsPath: "sd.md#errors", ...parameters });
    this.reason = reason;
  }

  /** Whether the task cannot run as written on this engine (rather than a fault of this node). */
  get isTaskError(): boolean {
    return TASK_ERROR_REASONS.has(this.reason);
  }
}
