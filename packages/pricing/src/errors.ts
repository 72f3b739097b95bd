import { CrynuxError, type CrynuxErrorParameters } from "@crynux/tasks";

/** Base class of every error thrown by `@crynux/pricing`. */
export class PricingError extends CrynuxError {
  override name = "PricingError";
}

/** A CNX amount that cannot be parsed or represented. */
export class CnxAmountError extends PricingError {
  override name = "CnxAmountError";
  constructor(shortMessage: string, parameters: CrynuxErrorParameters = {}) {
    super(shortMessage, { docsPath: "pricing.md#units", ...parameters });
  }
}

/** Arguments outside what the protocol allows (a zero cap, a wrong order permutation, ...). */
export class PricingInputError extends PricingError {
  override name = "PricingInputError";
}
