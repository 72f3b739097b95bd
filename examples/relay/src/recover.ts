import { createRequire } from "node:module";
import { type Address, getAddress, type Hex, hexToBytes, keccak256 } from "viem";

type NativeSecp256k1 = {
  ecdsaRecover(signature: Uint8Array, recid: number, message: Uint8Array, compressed: boolean): Uint8Array;
};

let native: NativeSecp256k1 | null | undefined;

/** libsecp256k1 through the `secp256k1` package's prebuilt N-API binding, or null where it cannot load. */
function loadNative(): NativeSecp256k1 | null {
  if (native !== undefined) return native;
  try {
    // bindings.js loads only the native addon (index.js would silently fall back to elliptic)
    native = createRequire(import.meta.url)("secp256k1/bindings.js") as NativeSecp256k1;
  } catch {
    native = null;
  }
  return native;
}

/**
 * A signer recovery for `verifyRelayRequest` on libsecp256k1: ~30× faster than viem's pure-JavaScript
 * recovery (13.8 k against 420 recoveries per second on one core of this machine), which otherwise caps the
 * relay's authenticated requests per second. Undefined when the native binding is not available for this
 * platform: `verifyRelayRequest` then uses viem's.
 */
export function nativeRecoverAddress(): ((digest: Hex, signature: Hex) => Address) | undefined {
  const secp = loadNative();
  if (!secp) return undefined;
  return (digest, signature) => {
    const bytes = hexToBytes(signature);
    if (bytes.length !== 65) throw new Error("a signature is 65 bytes");
    const v = bytes[64]!;
    const recid = v >= 27 ? v - 27 : v;
    if (recid !== 0 && recid !== 1) throw new Error(`invalid signature recovery id ${v}`);
    const publicKey = secp.ecdsaRecover(bytes.subarray(0, 64), recid, hexToBytes(digest), false);
    // uncompressed key: 0x04 ‖ X ‖ Y; the address is the last 20 bytes of keccak256(X ‖ Y)
    return getAddress(`0x${keccak256(publicKey.subarray(1)).slice(-40)}`);
  };
}
