import { CrynuxError, type CrynuxErrorParameters } from "@crynux/tasks";

/**
 * Error types of OpenAI's error format (`error.type`); clients such as the official `openai` package map
 * the HTTP status to their own error classes and keep `type`, `code` and `param`.
 */
export type BridgeErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "rate_limit_error"
  | "insufficient_quota"
  | "insufficient_funds"
  | "conflict_error"
  | "api_error"
  | "service_unavailable";

export type BridgeErrorParameters = CrynuxErrorParameters & {
  /** HTTP status the server answers with. */
  status: number;
  type: BridgeErrorType;
  /** Machine-readable reason (`invalid_api_key`, `model_not_found`, …). */
  code: string;
  /** The request field to blame, as OpenAI names it (`messages[0].content`, `max_tokens`). */
  param?: string | undefined;
  /** Seconds the client should wait before retrying (sent as `retry-after`). */
  retryAfterSeconds?: number | undefined;
};

/** Base class of every error of the bridge; carries what its HTTP layer answers with. */
export class BridgeError extends CrynuxError {
  override name = "BridgeError";
  readonly status: number;
  readonly type: BridgeErrorType;
  readonly code: string;
  readonly param: string | undefined;
  readonly retryAfterSeconds: number | undefined;

  constructor(shortMessage: string, parameters: BridgeErrorParameters) {
    const { status, type, code, param, retryAfterSeconds, ...rest } = parameters;
    super(shortMessage, rest);
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  /** The body OpenAI's API answers errors with. */
  toJSON(): OpenAiErrorBody {
    return {
      error: { message: this.shortMessage, type: this.type, param: this.param ?? null, code: this.code },
    };
  }
}

/** `{ error: { message, type, param, code } }`, as OpenAI's API writes it. */
export type OpenAiErrorBody = {
  error: { message: string; type: string; param: string | null; code: string | null };
};

/** A configuration file, environment variable or deployment file that cannot be used. */
export class BridgeConfigError extends BridgeError {
  override name = "BridgeConfigError";
  constructor(shortMessage: string, parameters: { details?: string; cause?: unknown } = {}) {
    super(shortMessage, { status: 500, type: "api_error", code: "invalid_config", ...parameters });
  }
}

/** A request body or field the bridge cannot use (400). */
export class InvalidRequestError extends BridgeError {
  override name = "InvalidRequestError";
  constructor(
    shortMessage: string,
    param?: string,
    parameters: CrynuxErrorParameters & { code?: string } = {},
  ) {
    const { code, ...rest } = parameters;
    super(shortMessage, {
      status: 400,
      type: "invalid_request_error",
      code: code ?? "invalid_value",
      param,
      ...rest,
    });
  }
}
