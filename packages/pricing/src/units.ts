import { CnxAmountError } from "./errors.js";

/** Decimals of CNX, the chain's native currency. */
export const CNX_DECIMALS = 18;
const WEI_PER_CNX = 10n ** 18n;

/**
 * Parses a decimal CNX amount (`"1.5"`, `"400"`, `"0.000000000000000001"`) into wei.
 * @throws {CnxAmountError} for anything but a non-negative decimal with at most 18 fraction digits.
 */
export function parseCnx(amount: string): bigint {
  if (typeof amount !== "string") throw new CnxAmountError(`A CNX amount is a string, got ${typeof amount}.`);
  const match = /^(\d+)(?:\.(\d+))?$/.exec(amount.trim());
  if (!match) throw new CnxAmountError(`${JSON.stringify(amount)} is not a decimal CNX amount (e.g. "1.5").`);
  const whole = match[1]!;
  const fraction = match[2] ?? "";
  if (fraction.length > CNX_DECIMALS) {
    throw new CnxAmountError(
      `${JSON.stringify(amount)} has more than ${CNX_DECIMALS} decimals (1 wei = 1e-18 CNX).`,
    );
  }
  return BigInt(whole) * WEI_PER_CNX + BigInt(fraction.padEnd(CNX_DECIMALS, "0"));
}

/** Options of {@link formatCnx}. */
export type FormatCnxOptions = {
  /** Round (half up) to at most this many decimals; default: all 18, trailing zeros dropped. */
  maxDecimals?: number;
};

/** Writes wei as a decimal CNX amount without trailing zeros: `1500000000000000000n` → `"1.5"`. */
export function formatCnx(wei: bigint, options: FormatCnxOptions = {}): string {
  const negative = wei < 0n;
  let value = negative ? -wei : wei;
  const maxDecimals = options.maxDecimals ?? CNX_DECIMALS;
  if (!Number.isInteger(maxDecimals) || maxDecimals < 0 || maxDecimals > CNX_DECIMALS) {
    throw new CnxAmountError(`maxDecimals must be an integer from 0 to ${CNX_DECIMALS}.`);
  }
  if (maxDecimals < CNX_DECIMALS) {
    const unit = 10n ** BigInt(CNX_DECIMALS - maxDecimals);
    value = ((value + unit / 2n) / unit) * unit;
  }
  const whole = value / WEI_PER_CNX;
  const fraction = (value % WEI_PER_CNX).toString().padStart(CNX_DECIMALS, "0").replace(/0+$/, "");
  return `${negative ? "-" : ""}${whole}${fraction ? `.${fraction}` : ""}`;
}
