import { CrynuxError, type CrynuxErrorParameters } from "@crynux/tasks";

export type RelayErrorParameters = CrynuxErrorParameters & {
  /** Machine-readable code, sent as `error.code` in an HTTP error body. */
  code: string;
  /** HTTP status the server answers with when this error reaches it. */
  status: number;
  /** Path of the offending input field, joined by ".", when one field is to blame. */
  field?: string | undefined;
};

/** Base class of every error of the relay; carries what the HTTP layer needs to answer. */
export class RelayError extends CrynuxError {
  override name = "RelayError";
  readonly code: string;
  readonly status: number;
  readonly field: string | undefined;

  constructor(shortMessage: string, parameters: RelayErrorParameters) {
    const { code, status, field, ...rest } = parameters;
    super(shortMessage, rest);
    this.code = code;
    this.status = status;
    this.field = field;
  }
}

/** Something different is already stored under the same key; stored data is never overwritten. */
export class StoreConflictError extends RelayError {
  override name = "StoreConflictError";
  readonly taskId: bigint;
  readonly kind: "args" | "results";

  constructor(kind: "args" | "results", taskId: bigint, parameters: CrynuxErrorParameters = {}) {
    super(`Different ${kind} are already stored for task ${taskId}`, {
      code: "conflict",
      status: 409,
      ...parameters,
    });
    this.taskId = taskId;
    this.kind = kind;
  }
}

/** The signing address made more requests than the relay's per-address rate limit allows. */
export class RateLimitedError extends RelayError {
  override name = "RateLimitedError";
  /** Seconds until the address may make one more request (sent as `retry-after`). */
  readonly retryAfterSeconds: number;

  constructor(retryAfterSeconds: number) {
    super(`Too many requests from this address; retry in ${retryAfterSeconds} s.`, {
      code: "rate_limited",
      status: 429,
    });
    this.retryAfterSeconds = retryAfterSeconds;
  }
}
