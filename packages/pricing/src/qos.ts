import { PricingInputError } from "./errors.js";

/** Score of the 1st, 2nd and 3rd node to commit (and, separately, to disclose). */
export const TASK_SCORE_REWARDS = [10, 9, 6] as const;
/** Sum of all three nodes' task scores: (10 + 9 + 6) × 2. */
export const TASK_SCORE_LIMIT = 50;
/** Selection weight of a node with no finished task yet (the best task score). */
export const NEW_NODE_WEIGHT = 20;
/** Kick-out threshold: a node whose last 3 task scores sum to this or less is removed. */
export const KICK_OUT_THRESHOLD = 20;
/** How many recent task scores the kick-out rule looks at. */
export const KICK_OUT_WINDOW = 3;

/** A 0-based place (0 = first) in committing or disclosing, or `null` when the node never did. */
export type Place = 0 | 1 | 2 | null;

/** A node's task score: its commit place score plus its disclose place score (0 for a missing step). */
export function taskScore(commitPlace: Place, disclosePlace: Place): number {
  const score = (place: Place) => {
    if (place === null) return 0;
    const reward = TASK_SCORE_REWARDS[place];
    if (reward === undefined) throw new PricingInputError(`A place is 0, 1 or 2, got ${String(place)}.`);
    return reward;
  };
  return score(commitPlace) + score(disclosePlace);
}

/** A node's score history as the contract keeps it: the sum and count of all its task scores. */
export type ScoreHistory = { sum: number | bigint; count: number | bigint };

/** Selection weight: the node's average task score (floor), 20 for a new node, at least 1. */
export function selectionWeight(history: ScoreHistory): number {
  const count = BigInt(history.count);
  if (count === 0n) return NEW_NODE_WEIGHT;
  const average = Number(BigInt(history.sum) / count);
  return Math.max(1, average);
}

/**
 * Whether a node is kicked out after its latest task: the sum of its last 3 task scores, counting a
 * missing slot (a node with fewer than 3 tasks) as 20, is 20 or less. A fresh node is therefore kicked
 * after two zero-score tasks (0 + 0 + 20); the slowest honest node scores 12 per task (36) and stays.
 *
 * @param recentScores the node's task scores, oldest first (only the last 3 count)
 */
export function shouldKickOut(recentScores: readonly number[]): boolean {
  const window = recentScores.slice(-KICK_OUT_WINDOW);
  const padded =
    window.reduce((sum, score) => sum + score, 0) + (KICK_OUT_WINDOW - window.length) * NEW_NODE_WEIGHT;
  return padded <= KICK_OUT_THRESHOLD;
}
