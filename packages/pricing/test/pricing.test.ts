import { TaskType } from "@crynux/tasks";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  CnxAmountError,
  compareTaskValue,
  estimateMillis,
  estimateSeconds,
  feeForValue,
  feeShares,
  formatCnx,
  PricingInputError,
  parseCnx,
  selectionWeight,
  shouldKickOut,
  taskScore,
  taskValue,
} from "../src/index.js";

describe("units", () => {
  it("parses and formats CNX amounts exactly", () => {
    expect(parseCnx("1.5")).toBe(1_500_000_000_000_000_000n);
    expect(parseCnx("400")).toBe(400n * 10n ** 18n);
    expect(parseCnx("0.000000000000000001")).toBe(1n);
    expect(formatCnx(1_500_000_000_000_000_000n)).toBe("1.5");
    expect(formatCnx(1n)).toBe("0.000000000000000001");
    expect(formatCnx(0n)).toBe("0");
    expect(formatCnx(-parseCnx("2.25"))).toBe("-2.25");
    expect(formatCnx(parseCnx("0.2142857"), { maxDecimals: 3 })).toBe("0.214");
    expect(formatCnx(parseCnx("0.9996"), { maxDecimals: 3 })).toBe("1");
  });

  it.each(["", "1.", ".5", "-1", "1e18", "0x10", "1,5", "0.0000000000000000001", " 1 2"])(
    "rejects %j",
    (text) => {
      expect(() => parseCnx(text)).toThrow(CnxAmountError);
    },
  );

  it("round-trips every wei amount", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 30n }), (wei) => {
        expect(parseCnx(formatCnx(wei))).toBe(wei);
      }),
    );
  });
});

describe("task value", () => {
  it("reproduces the docs' example: 10 CNX / 1 image vs 15 CNX / 2 images", () => {
    const one = estimateMillis(TaskType.SD, 1n);
    const two = estimateMillis(TaskType.SD, 2n);
    expect([one, two]).toEqual([50_000n, 70_000n]);
    expect(estimateSeconds(TaskType.SD, 2n)).toBe(70);
    const a = taskValue(parseCnx("10"), one);
    const b = taskValue(parseCnx("15"), two);
    expect(formatCnx(a)).toBe("0.2");
    expect(formatCnx(b, { maxDecimals: 3 })).toBe("0.214");
    // The 2-image task pays more per second, so it is served first.
    expect(
      [
        { taskId: 1n, value: a },
        { taskId: 2n, value: b },
      ]
        .sort(compareTaskValue)
        .map((t) => t.taskId),
    ).toEqual([2n, 1n]);
    // Without the overhead it would be the other way round (0.5 vs 0.375 CNX/s).
    expect(parseCnx("10") / 20n > parseCnx("15") / 40n).toBe(true);
  });

  it("uses the contract's integer rounding and the GPT constants", () => {
    expect(estimateMillis(TaskType.GPT, 256n)).toBe(30_000n + 50n * 256n);
    expect(taskValue(999n, 1000n)).toBe(999n);
    expect(taskValue(1n, 3000n)).toBe(0n); // value 0: the contract rejects such a task
    expect(() => estimateMillis(TaskType.GPT, 0n)).toThrow(PricingInputError);
  });

  it("feeForValue is the least fee that reaches a value", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 1n, max: 10n ** 24n }),
        fc.bigInt({ min: 1n, max: 10n ** 9n }),
        (value, ms) => {
          const fee = feeForValue(value, ms);
          expect(taskValue(fee, ms)).toBeGreaterThanOrEqual(value);
          expect(taskValue(fee - 1n, ms)).toBeLessThan(value);
        },
      ),
    );
  });

  it("orders ties by task id", () => {
    const sorted = [
      { taskId: 3n, value: 5n },
      { taskId: 1n, value: 5n },
      { taskId: 2n, value: 9n },
    ].sort(compareTaskValue);
    expect(sorted.map((t) => t.taskId)).toEqual([2n, 1n, 3n]);
  });
});

const permutations: number[][] = [
  [0, 1, 2],
  [0, 2, 1],
  [1, 0, 2],
  [1, 2, 0],
  [2, 0, 1],
  [2, 1, 0],
];

describe("fee split", () => {
  it("pays 40 / 36 / 24 % when the order is the same in both rounds", () => {
    expect(feeShares({ fee: 100n, commitOrder: [0, 1, 2], discloseOrder: [0, 1, 2] }).shares).toEqual([
      40n,
      36n,
      24n,
    ]);
    expect(
      feeShares({ fee: parseCnx("30"), commitOrder: [2, 0, 1], discloseOrder: [2, 0, 1] }).shares,
    ).toEqual([parseCnx("10.8"), parseCnx("7.2"), parseCnx("12")]);
  });

  it("splits mixed orders by place scores, with the dust to the result node (the first discloser)", () => {
    // Round 0: commit 1st (10) + disclose 2nd (9) = 19; round 1: 2nd + 1st = 18... computed by hand:
    // commitOrder [0,1,2] → commit places 0:1st,1:2nd,2:3rd; discloseOrder [1,0,2] → 1:1st,0:2nd,2:3rd.
    // Scores: r0 = 10 + 9 = 19, r1 = 9 + 10 = 19, r2 = 6 + 6 = 12. Fee 101 wei:
    // r0 = 101·19/50 = 38 (38.38), r2 = 101·12/50 = 24 (24.24), result node r1 = 101 − 38 − 24 = 39.
    const split = feeShares({ fee: 101n, commitOrder: [0, 1, 2], discloseOrder: [1, 0, 2] });
    expect(split.scores).toEqual([19, 19, 12]);
    expect(split.shares).toEqual([38n, 39n, 24n]);
  });

  it("for all 36 order combinations: scores sum to 50, shares follow the formula and sum to the fee", () => {
    const rewards = [10, 9, 6];
    for (const fee of [0n, 1n, 49n, 50n, 12_345_678_901n, parseCnx("3")]) {
      for (const commitOrder of permutations) {
        for (const discloseOrder of permutations) {
          const { shares, scores, refund } = feeShares({ fee, commitOrder, discloseOrder });
          const expectedScores = [0, 1, 2].map(
            (r) => rewards[commitOrder.indexOf(r)]! + rewards[discloseOrder.indexOf(r)]!,
          );
          expect(scores).toEqual(expectedScores);
          expect(scores.reduce((a, b) => a + b)).toBe(50);
          const resultRound = discloseOrder[0]!;
          for (const r of [0, 1, 2]) {
            if (r !== resultRound) expect(shares[r]).toBe((fee * BigInt(expectedScores[r]!)) / 50n);
          }
          expect(shares[0] + shares[1] + shares[2]).toBe(fee);
          expect(refund).toBe(0n);
          const dust = shares[resultRound]! - (fee * BigInt(expectedScores[resultRound]!)) / 50n;
          expect(dust >= 0n && dust < 3n).toBe(true);
        }
      }
    }
  });

  it("returns a slashed node's share to the creator", () => {
    const split = feeShares({
      fee: 1000n,
      commitOrder: [0, 1, 2],
      discloseOrder: [0, 1, 2],
      slashedRounds: [2],
    });
    expect(split.shares).toEqual([400n, 360n, 0n]);
    expect(split.refund).toBe(240n);
    expect(() =>
      feeShares({ fee: 1n, commitOrder: [0, 1, 2], discloseOrder: [0, 1, 2], slashedRounds: [0] }),
    ).toThrow(PricingInputError);
    expect(() => feeShares({ fee: 1n, commitOrder: [0, 1], discloseOrder: [0, 1, 2] })).toThrow(
      PricingInputError,
    );
  });

  it("settles 2-of-2 with an absent round: it scores 0 and its reserved 12/50 go back to the creator", () => {
    const split = feeShares({ fee: 1000n, commitOrder: [0, 2], discloseOrder: [2, 0], absentRound: 1 });
    // r0: commit 1st + disclose 2nd = 19; r2: 9 + 10 = 19 (result node, gets the rest); r1 absent: 0
    expect(split.scores).toEqual([19, 0, 19]);
    expect(split.refund).toBe(240n);
    expect(split.shares).toEqual([380n, 0n, 380n]);
    for (const fee of [0n, 1n, 49n, 12_345_678_901n]) {
      for (const absentRound of [0, 1, 2]) {
        const present = [0, 1, 2].filter((r) => r !== absentRound);
        for (const discloseOrder of [present, [...present].reverse()]) {
          const { shares, refund } = feeShares({ fee, commitOrder: present, discloseOrder, absentRound });
          expect(shares[0] + shares[1] + shares[2] + refund).toBe(fee);
          expect(refund).toBe((fee * 12n) / 50n);
        }
      }
    }
    expect(() =>
      feeShares({ fee: 1n, commitOrder: [0, 1, 2], discloseOrder: [0, 2], absentRound: 1 }),
    ).toThrow(PricingInputError);
    expect(() =>
      feeShares({ fee: 1n, commitOrder: [0, 2], discloseOrder: [0, 2], absentRound: 1, slashedRounds: [2] }),
    ).toThrow(PricingInputError);
  });
});

describe("QoS", () => {
  it("scores places 10 / 9 / 6 per round", () => {
    expect(taskScore(0, 0)).toBe(20);
    expect(taskScore(2, 2)).toBe(12);
    expect(taskScore(1, null)).toBe(9);
    expect(taskScore(null, null)).toBe(0);
  });

  it("weighs nodes by their average task score, 20 when new, at least 1", () => {
    expect(selectionWeight({ sum: 0, count: 0 })).toBe(20);
    expect(selectionWeight({ sum: 37, count: 2 })).toBe(18);
    expect(selectionWeight({ sum: 0n, count: 5n })).toBe(1);
  });

  it("kicks out at a last-3 sum of 20 or less, counting missing slots as 20", () => {
    expect(shouldKickOut([0, 0])).toBe(true); // 0 + 0 + 20
    expect(shouldKickOut([0])).toBe(false); // 0 + 20 + 20
    expect(shouldKickOut([20, 0, 0])).toBe(true);
    expect(shouldKickOut([0, 0, 20])).toBe(true); // exactly 20
    expect(shouldKickOut([0, 9, 12])).toBe(false); // 21 stays
    expect(shouldKickOut([12, 12, 12])).toBe(false); // the slowest honest node
    expect(shouldKickOut([20, 20, 20, 0, 0, 0])).toBe(true); // only the last 3 count
  });
});
