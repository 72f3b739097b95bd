/**
 * Base class of every error thrown by `@crynux/contracts` (the package depends on nothing but viem, so it
 * has its own base): `shortMessage` is one line, `details` the rest.
 */
export class ContractsError extends Error {
  override name = "ContractsError";
  readonly shortMessage: string;
  readonly details: string | undefined;

  constructor(shortMessage: string, details?: string, options?: { cause?: unknown }) {
    super(details ? `${shortMessage}\n\n${details}` : shortMessage, options);
    this.shortMessage = shortMessage;
    this.details = details;
  }
}
