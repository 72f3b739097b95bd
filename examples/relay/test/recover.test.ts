import fc from "fast-check";
import { type Hex, recoverAddress, toHex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { nativeRecoverAddress } from "../src/recover.js";

describe("native signer recovery", () => {
  const recover = nativeRecoverAddress();

  it("loads libsecp256k1 on this platform", () => {
    expect(recover).toBeTypeOf("function");
  });

  it("recovers the same address as viem for any key and digest (property)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 32, maxLength: 32 }), async (digestBytes) => {
        const account = privateKeyToAccount(generatePrivateKey());
        const digest = toHex(digestBytes);
        const signature = await account.sign({ hash: digest });
        expect(recover!(digest, signature)).toBe(account.address);
        expect(recover!(digest, signature)).toBe(await recoverAddress({ hash: digest, signature }));
      }),
      { numRuns: 50 },
    );
  });

  it("accepts recovery ids 0/1 as well as 27/28 and refuses others", async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    const digest = toHex(new Uint8Array(32).fill(7));
    const signature = await account.sign({ hash: digest });
    const v = Number.parseInt(signature.slice(-2), 16);
    const zeroBased = `${signature.slice(0, -2)}${(v - 27).toString(16).padStart(2, "0")}` as Hex;
    expect(recover!(digest, zeroBased)).toBe(account.address);
    expect(() => recover!(digest, `${signature.slice(0, -2)}05` as Hex)).toThrow(/recovery id/);
    expect(() => recover!(digest, "0x1234")).toThrow(/65 bytes/);
  });

  it("throws rather than returning an address for a signature off the curve", () => {
    const bad = `0x${"ff".repeat(64)}1b` as Hex;
    expect(() => recover!(toHex(new Uint8Array(32)), bad)).toThrow();
  });
});
