import { CrynuxError, type CrynuxErrorParameters } from "@crynux/tasks";

export type ClientErrorParameters = CrynuxErrorParameters;

/** Base class of every error thrown by `@crynux/client`; catch it to catch them all. */
export class ClientError extends CrynuxError {
  override name = "ClientError";
}

/** Why a relay request signature was refused. */
export type RelaySignatureErrorReason = "missing" | "malformed" | "expired" | "invalid";

/**
 * A relay request signature could not be accepted. The server answers `missing`, `malformed`, `expired`
 * and `invalid` alike with 401 `unauthorized`; the reason is kept for its logs and for tests.
 */
export class RelaySignatureError extends ClientError {
  override name = "RelaySignatureError";
  readonly reason: RelaySignatureErrorReason;

  constructor(
    reason: RelaySignatureErrorReason,
    shortMessage: string,
    parameters: ClientErrorParameters = {},
  ) {
    super(shortMessage, parameters);
    this.reason = reason;
  }
}

export type RelayRequestErrorParameters = ClientErrorParameters & {
  /** HTTP status of the relay's answer. */
  status: number;
  /** The relay's error code (`task_not_found`, `forbidden`, ...), or `http_<status>` when the body had none. */
  code: string;
  /** First bad field of the request, as the relay names it (`messages.0.content`). */
  field?: string | undefined;
  method?: string | undefined;
  url?: string | undefined;
};

/** The relay answered with an HTTP error; `code` is the machine-readable reason from its error body. */
export class RelayRequestError extends ClientError {
  override name = "RelayRequestError";
  readonly status: number;
  readonly code: string;
  readonly field: string | undefined;
  readonly method: string | undefined;
  readonly url: string | undefined;

  constructor(message: string, parameters: RelayRequestErrorParameters) {
    const { status, code, field, method, url, ...rest } = parameters;
    const where = method && url ? `${method} ${url} → ` : "";
    const details = [
      `${where}HTTP ${status} ${code}${field ? ` (field: ${field})` : ""}`,
      ...(rest.details ? [rest.details] : []),
    ].join("\n");
    super(message, { ...rest, details });
    this.status = status;
    this.code = code;
    this.field = field;
    this.method = method;
    this.url = url;
  }
}

/** The relay answered successfully but its body does not match the protocol's schema. */
export class RelayResponseError extends ClientError {
  override name = "RelayResponseError";
  readonly url: string | undefined;

  constructor(shortMessage: string, parameters: ClientErrorParameters & { url?: string | undefined } = {}) {
    const { url, ...rest } = parameters;
    super(shortMessage, rest);
    this.url = url;
  }
}

/** The relay could not be reached, or did not answer in time (after the retries allowed). */
export class RelayConnectionError extends ClientError {
  override name = "RelayConnectionError";
  readonly method: string | undefined;
  readonly url: string | undefined;

  constructor(
    shortMessage: string,
    parameters: ClientErrorParameters & { method?: string | undefined; url?: string | undefined } = {},
  ) {
    const { method, url, ...rest } = parameters;
    super(shortMessage, rest);
    this.method = method;
    this.url = url;
  }
}
