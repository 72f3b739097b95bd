import { CrynuxError, type CrynuxErrorParameters } from "@crynux/tasks";

/**
 * Constructor options of {@link ClientError}: `shortMessage`, optional `details`, `cause` and `docsPath`, as
 * for every `CrynuxError`.
 */
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

/**
 * Constructor options of `RelayRequestError`: the relay's HTTP status, error code and the request that got
 * the answer.
 */
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

/** A write action (createTask, cancelTask, …) was called on a client without an account. */
export class AccountRequiredError extends ClientError {
  override name = "AccountRequiredError";

  constructor(action: string, parameters: ClientErrorParameters = {}) {
    super(`${action} sends a transaction, but the Crynux client has no account.`, {
      details:
        "Pass `account` to createCrynuxClient (a local account, or the address of a wallet's account).",
      ...parameters,
    });
  }
}

/**
 * Task arguments that `@crynux/tasks` refuses for the task type; thrown before any transaction is sent.
 * `issues` lists every bad field (the `cause` is the `TaskArgsError`, or an `UnknownTaskTypeError`).
 */
export class InvalidTaskArgsError extends ClientError {
  override name = "InvalidTaskArgsError";
  readonly issues: { path: (string | number)[]; message: string; code: string }[];

  constructor(
    shortMessage: string,
    parameters: ClientErrorParameters & {
      issues?: { path: (string | number)[]; message: string; code: string }[];
    } = {},
  ) {
    const { issues, ...rest } = parameters;
    super(shortMessage, { docsPath: "tasks.md#validation", ...rest });
    this.issues = issues ?? [];
  }
}

/** The Task contract has no task with this id (state NONE). */
export class TaskNotFoundError extends ClientError {
  override name = "TaskNotFoundError";
  readonly taskId: bigint;

  constructor(taskId: bigint, parameters: ClientErrorParameters = {}) {
    super(`Task ${taskId} does not exist.`, parameters);
    this.taskId = taskId;
  }
}

/**
 * A contract call of an action was refused (found while simulating it, so no transaction was sent) or its
 * transaction reverted. `errorName` is the contract's custom error when it could be decoded (`ZeroValue`,
 * `Unauthorized`, `DeadlineNotReached`, …).
 */
export class TaskContractError extends ClientError {
  override name = "TaskContractError";
  readonly functionName: string;
  readonly errorName: string | undefined;
  readonly transactionHash: `0x${string}` | undefined;

  constructor(
    shortMessage: string,
    parameters: ClientErrorParameters & {
      functionName: string;
      errorName?: string | undefined;
      transactionHash?: `0x${string}` | undefined;
    },
  ) {
    const { functionName, errorName, transactionHash, ...rest } = parameters;
    super(shortMessage, rest);
    this.functionName = functionName;
    this.errorName = errorName;
    this.transactionHash = transactionHash;
  }
}

/** A fee could not be suggested (e.g. the network snapshot could not be read); pass `fee` explicitly. */
export class FeeSuggestionError extends ClientError {
  override name = "FeeSuggestionError";
}

/** `waitForTask` gave up: the task had not finished when `timeoutMs` ran out. `stage` is where it was. */
export class WaitForTaskTimeoutError extends ClientError {
  override name = "WaitForTaskTimeoutError";
  readonly taskId: bigint;
  readonly stage: string | undefined;

  constructor(taskId: bigint, timeoutMs: number, stage: string | undefined) {
    super(`Task ${taskId} did not finish within ${timeoutMs} ms.`, {
      details: `last stage seen: ${stage ?? "none"}. The task goes on on-chain; wait again or cancel it after its deadline.`,
    });
    this.taskId = taskId;
    this.stage = stage;
  }
}

/**
 * The task ended without a result: `outcome` is `error` (two nodes reported a task error: the arguments could
 * not be run) or `aborted` (`reason`: `results mismatch`, `cancelled`, `evicted`). The fee was refunded,
 * except to the error reporters.
 */
export class TaskAbortedError extends ClientError {
  override name = "TaskAbortedError";
  readonly taskId: bigint;
  readonly outcome: "error" | "aborted";
  readonly reason: string | undefined;

  constructor(
    taskId: bigint,
    outcome: "error" | "aborted",
    reason: string | undefined,
    parameters: ClientErrorParameters = {},
  ) {
    super(
      outcome === "error"
        ? `Task ${taskId} failed: the nodes reported a task error.`
        : `Task ${taskId} was aborted${reason ? ` (${reason})` : ""}.`,
      parameters,
    );
    this.taskId = taskId;
    this.outcome = outcome;
    this.reason = reason;
  }
}

/** The task has no agreed result on-chain (yet): it is not in state SUCCESS or UPLOADED. */
export class TaskResultNotAvailableError extends ClientError {
  override name = "TaskResultNotAvailableError";
  readonly taskId: bigint;
  readonly state: string;

  constructor(taskId: bigint, state: string) {
    super(`Task ${taskId} has no result (state: ${state}).`);
    this.taskId = taskId;
    this.state = state;
  }
}

/** The result downloaded from the relay does not match the result the nodes agreed on on-chain. */
export class TaskResultMismatchError extends ClientError {
  override name = "TaskResultMismatchError";
  readonly taskId: bigint;

  constructor(taskId: bigint, parameters: ClientErrorParameters = {}) {
    super(`The result of task ${taskId} from the relay does not match the on-chain result.`, parameters);
    this.taskId = taskId;
  }
}
