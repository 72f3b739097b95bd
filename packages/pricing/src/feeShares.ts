import { PricingInputError } from "./errors.js";
import { type Place, TASK_SCORE_LIMIT, taskScore } from "./qos.js";

/** What {@link feeShares} takes. Nodes are named by their round (0, 1, 2) in the task. */
export type FeeSharesParameters = {
  /** The task fee in wei. */
  fee: bigint;
  /** Rounds in the order their commitments arrived (all three, or the two present with `absentRound`). */
  commitOrder: readonly number[];
  /** Rounds in the order they disclosed (all three, or the two present with `absentRound`). */
  discloseOrder: readonly number[];
  /**
   * The result node: the first discloser of the agreeing pair. Default: the first discloser (all three
   * agree, or the first two do).
   */
  resultRound?: number;
  /** Rounds slashed for disagreeing: their share goes back to the creator. */
  slashedRounds?: readonly number[];
  /**
   * The round that missed the commit deadline while the two others committed (the task settles 2-of-2). It
   * scores 0; the share reserved for it, a 3rd place in both rounds (12/50 of the fee), goes back to the
   * creator.
   */
  absentRound?: number;
};

/** What each node (by round) and the creator receive. */
export type FeeShares = {
  /** Wei paid to the node of each round (0 for a slashed node). */
  shares: [bigint, bigint, bigint];
  /** Wei returned to the task creator (slashed and absent nodes' shares). */
  refund: bigint;
  /** Each node's task score (commit place score + disclose place score). */
  scores: [number, number, number];
};

function places(
  order: readonly number[],
  what: string,
  absentRound: number | undefined,
): [Place, Place, Place] {
  const expected = [0, 1, 2].filter((round) => round !== absentRound);
  if (
    order.length !== expected.length ||
    new Set(order).size !== order.length ||
    order.some((round) => !expected.includes(round))
  ) {
    throw new PricingInputError(
      `${what} must list the rounds ${expected.join(", ")} once each, got [${order.join(", ")}].`,
    );
  }
  const result: [Place, Place, Place] = [null, null, null];
  order.forEach((round, place) => {
    result[round] = place as Place;
  });
  return result;
}

/**
 * The fee split of a settled task, exactly as the contract pays it: each node's share is
 * `fee × score / 50` (integer division, multiplication first) with its score = commit place score + disclose
 * place score (places score 10, 9, 6); a slashed node's share goes back to the creator; the result node,
 * paid last (at `reportResultsUploaded`), receives what remains, so the division dust goes to it.
 *
 * Same order in both rounds gives 40 % / 36 % / 24 %.
 *
 * @example
 * feeShares({ fee: 100n, commitOrder: [0, 1, 2], discloseOrder: [0, 1, 2] }).shares // [40n, 36n, 24n]
 */
export function feeShares(parameters: FeeSharesParameters): FeeShares {
  const { fee } = parameters;
  if (fee < 0n) throw new PricingInputError(`fee must not be negative, got ${fee}.`);
  const absent = parameters.absentRound;
  if (absent !== undefined && absent !== 0 && absent !== 1 && absent !== 2) {
    throw new PricingInputError(`absentRound must be 0, 1 or 2, got ${absent}.`);
  }
  const commit = places(parameters.commitOrder, "commitOrder", absent);
  const disclose = places(parameters.discloseOrder, "discloseOrder", absent);
  const resultRound = parameters.resultRound ?? parameters.discloseOrder[0]!;
  const slashed = new Set(parameters.slashedRounds ?? []);
  if (slashed.has(resultRound)) throw new PricingInputError("The result node cannot be slashed.");
  if (slashed.size > 1)
    throw new PricingInputError("At most one node of three can be slashed (2 of 3 must agree).");
  if (absent !== undefined && slashed.size > 0) {
    throw new PricingInputError("A task settled 2-of-2 has no third result to slash anyone by.");
  }
  const scores = [0, 1, 2].map((round) => taskScore(commit[round]!, disclose[round]!)) as [
    number,
    number,
    number,
  ];
  const shares: [bigint, bigint, bigint] = [0n, 0n, 0n];
  let refund = 0n;
  let paid = 0n;
  for (const round of [0, 1, 2]) {
    if (round === resultRound) continue;
    if (round === absent) {
      const reserved = (fee * BigInt(taskScore(2, 2))) / BigInt(TASK_SCORE_LIMIT);
      refund += reserved;
      paid += reserved;
      continue;
    }
    const share = (fee * BigInt(scores[round]!)) / BigInt(TASK_SCORE_LIMIT);
    if (slashed.has(round)) refund += share;
    else shares[round] = share;
    paid += share;
  }
  shares[resultRound] = fee - paid;
  return { shares, refund, scores };
}
