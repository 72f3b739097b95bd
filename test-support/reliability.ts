import type { TestContext } from "vitest";

/**
 * One fault or attack tried by a test, for docs/reliability.md. The report is generated from a test run
 * (`npm run reliability`): the row's result is the test's own pass/fail state, never written by hand.
 */
export type Trial = {
  /** Table the row goes in, e.g. "Fault injection", "Contracts", "Relay", "Bridge", "Task args". */
  area: string;
  /** What was done to the system, in a few words ("kill -9 the node after the commitment was sent"). */
  fault: string;
  /** How many times it was tried in this run (property-test runs, kill points, requests, tasks…). */
  runs: number;
  /** What the system did, as checked by the test's assertions ("task succeeded after restart; not slashed"). */
  expected: string;
};

declare module "vitest" {
  interface TaskMeta {
    reliability?: Trial[];
  }
}

/**
 * Records a trial on the running test. Call it once the test knows how many runs it made (e.g. at the end);
 * the reporter pairs each trial with the test's final state, so a failed assertion shows as a failed row.
 */
export function recordTrial(context: Pick<TestContext, "task">, trial: Trial): void {
  if (!Number.isInteger(trial.runs) || trial.runs < 1)
    throw new Error(`recordTrial: runs must be ≥ 1 (${trial.runs})`);
  const meta = context.task.meta;
  meta.reliability = [...(meta.reliability ?? []), trial];
}
