import {
  type Account,
  type Address,
  type Chain,
  concat,
  domainSeparator,
  getAddress,
  type Hex,
  keccak256,
  type LocalAccount,
  numberToHex,
  recoverAddress,
  sha256,
  type Transport,
  type WalletClient,
} from "viem";
import { RelaySignatureError } from "../errors.js";

/**
 * EIP-712 types of a relay request. Typed data rather than a personal-sign string so that browser wallets
 * show the user what is signed.
 */
export const RELAY_REQUEST_TYPES = {
  RelayRequest: [
    { name: "method", type: "string" },
    { name: "path", type: "string" },
    { name: "bodyHash", type: "bytes32" },
    { name: "timestamp", type: "uint256" },
  ],
} as const;

/** The EIP-712 domain of one relay: signatures made for another relay, chain or Task contract do not verify. */
export type RelayDomain = {
  name: string;
  version: "1";
  chainId: number;
  verifyingContract: Address;
};

/** Options of {@link relayDomain}: the relay's name, the chain id and the Task contract address. */
export type RelayDomainParameters = {
  /** The relay's name as its `GET /v1/info` reports it; `"Crynux Relay"` by default. */
  name?: string | undefined;
  chainId: number;
  /** Address of the Task contract the relay serves. */
  taskContract: Address;
};

/** Builds the EIP-712 domain of a relay. */
export function relayDomain({ name, chainId, taskContract }: RelayDomainParameters): RelayDomain {
  return { name: name ?? "Crynux Relay", version: "1", chainId, verifyingContract: taskContract };
}

const utf8 = new TextEncoder();

/**
 * sha256 of the raw request body; a request without a body hashes zero bytes. (sha256 rather than keccak256:
 * it is about 12× faster in JavaScript — 33 ms against 400 ms for a 4 MiB upload — and native in browsers
 * and Node.)
 */
export function relayBodyHash(body: Uint8Array | string | undefined): Hex {
  if (body === undefined) return sha256(new Uint8Array());
  return sha256(typeof body === "string" ? utf8.encode(body) : body);
}

/** What signs relay requests: a local account, or a wallet client (e.g. a browser wallet) with an account. */
export type RelaySigner = LocalAccount | WalletClient<Transport, Chain | undefined, Account>;

/** The address a {@link RelaySigner} signs as. */
export function relaySignerAddress(signer: RelaySigner): Address {
  return isLocalAccount(signer) ? signer.address : signer.account.address;
}

function isLocalAccount(signer: RelaySigner): signer is LocalAccount {
  return "type" in signer && signer.type === "local";
}

/**
 * Options of {@link signRelayRequest}: the signer, the relay's domain and the request (method, path, body) to
 * sign.
 */
export type SignRelayRequestParameters = {
  account: RelaySigner;
  domain: RelayDomain;
  /** HTTP method; signed uppercase. */
  method: string;
  /** URL pathname plus search, exactly as sent (`/v1/tasks/12/args`). */
  path: string;
  /** The exact body bytes sent (a string is signed as its UTF-8 bytes). */
  body?: Uint8Array | string | undefined;
  /** Unix seconds; now by default. */
  timestamp?: number | undefined;
};

/** A signed relay request: the Unix-seconds timestamp and signature, and the two headers that carry them. */
export type SignedRelayRequest = {
  timestamp: number;
  signature: Hex;
  /** `x-crynux-timestamp` and `x-crynux-signature`, ready to send. */
  headers: Record<string, string>;
};

const RELAY_REQUEST_TYPE_HASH = keccak256(
  utf8.encode("RelayRequest(string method,string path,bytes32 bodyHash,uint256 timestamp)"),
);
const domainSeparators = new Map<string, Hex>();

/**
 * The EIP-712 digest of a relay request — what `hashTypedData` gives for {@link RELAY_REQUEST_TYPES}, computed
 * directly with the domain separator cached (4 small keccak256 calls instead of viem's generic encoder: about
 * 4× faster, which matters to a server verifying every request).
 */
export function relayRequestDigest(
  domain: RelayDomain,
  message: { method: string; path: string; bodyHash: Hex; timestamp: bigint },
): Hex {
  const key = `${domain.name}\n${domain.version}\n${domain.chainId}\n${domain.verifyingContract.toLowerCase()}`;
  let separator = domainSeparators.get(key);
  if (separator === undefined) {
    separator = domainSeparator({ domain });
    if (domainSeparators.size > 64) domainSeparators.clear();
    domainSeparators.set(key, separator);
  }
  const structHash = keccak256(
    concat([
      RELAY_REQUEST_TYPE_HASH,
      keccak256(utf8.encode(message.method)),
      keccak256(utf8.encode(message.path)),
      message.bodyHash,
      numberToHex(message.timestamp, { size: 32 }),
    ]),
  );
  return keccak256(concat(["0x1901", separator, structHash]));
}

function relayMessage(
  method: string,
  path: string,
  body: Uint8Array | string | undefined,
  timestamp: number,
) {
  return {
    method: method.toUpperCase(),
    path,
    bodyHash: relayBodyHash(body),
    timestamp: BigInt(timestamp),
  };
}

/** Signs one relay request. Sign each attempt afresh: the server refuses timestamps more than 60 s off. */
export async function signRelayRequest(parameters: SignRelayRequestParameters): Promise<SignedRelayRequest> {
  const { account, domain, method, path, body } = parameters;
  const timestamp = parameters.timestamp ?? Math.floor(Date.now() / 1000);
  if (!Number.isSafeInteger(timestamp) || timestamp < 0)
    throw new RangeError(`The timestamp must be a non-negative integer of seconds, got ${timestamp}.`);
  const typedData = {
    domain,
    types: RELAY_REQUEST_TYPES,
    primaryType: "RelayRequest",
    message: relayMessage(method, path, body, timestamp),
  } as const;
  const signature = isLocalAccount(account)
    ? await account.signTypedData(typedData)
    : await account.signTypedData({ ...typedData, account: account.account });
  return {
    timestamp,
    signature,
    headers: { "x-crynux-timestamp": String(timestamp), "x-crynux-signature": signature },
  };
}

/**
 * Options of {@link verifyRelayRequest}: the relay's domain, the request as received with its two headers,
 * and the clock and skew allowed.
 */
export type VerifyRelayRequestParameters = {
  domain: RelayDomain;
  method: string;
  path: string;
  body: Uint8Array | string | undefined;
  timestampHeader: string | null | undefined;
  signatureHeader: string | null | undefined;
  /** Unix seconds; the clock now by default. */
  now?: number | undefined;
  maxSkewSeconds?: number | undefined;
  /**
   * Recovers the signer from the EIP-712 digest and the 65-byte signature. Default: viem's (pure JavaScript,
   * a few hundred per second per core); a server may pass a native implementation.
   */
  recoverAddress?: ((digest: Hex, signature: Hex) => Address | Promise<Address>) | undefined;
};

// Decimal seconds without sign or leading zeros; 16 digits is far beyond any real clock yet stays exact.
const timestampPattern = /^(0|[1-9][0-9]{0,15})$/;
const signaturePattern = /^0x[0-9a-fA-F]{130}$/;

/**
 * Checks a relay request's signature headers and returns the address that signed it. It does not decide
 * whether that address may make the request: the caller compares it with the expected signer, since a
 * tampered request simply recovers some other address.
 * @throws {RelaySignatureError} `missing` (a header is absent), `malformed` (not a decimal timestamp or a
 * 65-byte hex signature), `expired` (timestamp more than `maxSkewSeconds` from now, either way) or
 * `invalid` (no address can be recovered from the signature).
 */
export async function verifyRelayRequest(parameters: VerifyRelayRequestParameters): Promise<Address> {
  const { domain, method, path, body, timestampHeader, signatureHeader } = parameters;
  const maxSkewSeconds = parameters.maxSkewSeconds ?? 60;
  if (!timestampHeader) throw new RelaySignatureError("missing", "The x-crynux-timestamp header is missing.");
  if (!signatureHeader) throw new RelaySignatureError("missing", "The x-crynux-signature header is missing.");
  if (!timestampPattern.test(timestampHeader))
    throw new RelaySignatureError("malformed", "The x-crynux-timestamp header is not decimal unix seconds.");
  if (!signaturePattern.test(signatureHeader))
    throw new RelaySignatureError(
      "malformed",
      "The x-crynux-signature header is not a 65-byte hex signature.",
    );
  const timestamp = Number(timestampHeader);
  const now = parameters.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > maxSkewSeconds)
    throw new RelaySignatureError("expired", "The request timestamp is too far from the server's clock.", {
      details: `timestamp ${timestamp}, server time ${now}, allowed skew ${maxSkewSeconds} s`,
    });
  try {
    const typedData = {
      domain,
      types: RELAY_REQUEST_TYPES,
      primaryType: "RelayRequest",
      message: relayMessage(method, path, body, timestamp),
    } as const;
    const digest = relayRequestDigest(domain, typedData.message);
    if (parameters.recoverAddress) {
      return getAddress(await parameters.recoverAddress(digest, signatureHeader as Hex));
    }
    return await recoverAddress({ hash: digest, signature: signatureHeader as Hex });
  } catch (cause) {
    throw new RelaySignatureError(
      "invalid",
      "No signer can be recovered from the x-crynux-signature header.",
      {
        cause,
      },
    );
  }
}
