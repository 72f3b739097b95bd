import fc from "fast-check";
import {
  concat,
  createWalletClient,
  custom,
  encodeAbiParameters,
  type Hex,
  hashTypedData,
  keccak256,
  recoverAddress,
  sha256,
  toBytes,
  toHex,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { ClientError, RelaySignatureError } from "../src/errors.js";
import {
  RELAY_REQUEST_TYPES,
  type RelayDomain,
  relayBodyHash,
  relayDomain,
  relayRequestDigest,
  signRelayRequest,
  verifyRelayRequest,
} from "../src/relay/index.js";

// Anvil's first two well-known keys.
const creator = privateKeyToAccount("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80");
const other = privateKeyToAccount("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d");
const taskContract = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const domain = relayDomain({ chainId: 31337, taskContract });
const now = 1_760_000_000;

type Request = { method: string; path: string; body: Uint8Array | string | undefined };
const request: Request = {
  method: "PUT",
  path: "/v1/tasks/12/args",
  body: '{"messages":[{"content":"Hi","role":"user"}],"model":"owner/repo:Q4_0"}',
};

async function signed(req: Request = request, options: { timestamp?: number; domain?: RelayDomain } = {}) {
  return signRelayRequest({
    account: creator,
    domain: options.domain ?? domain,
    ...req,
    timestamp: options.timestamp ?? now,
  });
}

async function verify(
  headers: { timestamp: string | undefined; signature: string | undefined },
  req: Request = request,
  options: { now?: number; domain?: RelayDomain } = {},
) {
  return verifyRelayRequest({
    domain: options.domain ?? domain,
    ...req,
    timestampHeader: headers.timestamp,
    signatureHeader: headers.signature,
    now: options.now ?? now,
  });
}

async function reasonOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(RelaySignatureError);
  expect(error).toBeInstanceOf(ClientError);
  return (error as RelaySignatureError).reason;
}

describe("relayDomain", () => {
  it("defaults the name to Crynux Relay and the version to 1", () => {
    expect(domain).toEqual({
      name: "Crynux Relay",
      version: "1",
      chainId: 31337,
      verifyingContract: taskContract,
    });
    expect(relayDomain({ name: "Other", chainId: 1, taskContract }).name).toBe("Other");
  });
});

describe("relayBodyHash", () => {
  it("hashes no body as zero bytes and strings as their UTF-8 bytes", () => {
    expect(relayBodyHash("")).toBe(relayBodyHash(undefined));
    expect(relayBodyHash("é")).toBe(sha256(new Uint8Array([0xc3, 0xa9])));
    expect(relayBodyHash(new Uint8Array([1, 2, 3]))).toBe(sha256(new Uint8Array([1, 2, 3])));
    // sha256 of zero bytes, the well-known constant
    expect(relayBodyHash(undefined)).toBe(
      "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
  });
});

describe("signRelayRequest / verifyRelayRequest", () => {
  it("recovers the signer and sends the timestamp and signature headers", async () => {
    const result = await signed();
    expect(result.timestamp).toBe(now);
    expect(result.signature).toMatch(/^0x[0-9a-f]{130}$/);
    expect(result.headers).toEqual({
      "x-crynux-timestamp": String(now),
      "x-crynux-signature": result.signature,
    });
    await expect(
      verify({
        timestamp: result.headers["x-crynux-timestamp"],
        signature: result.headers["x-crynux-signature"],
      }),
    ).resolves.toBe(creator.address);
  });

  it("signs the method uppercase and the body as bytes or text alike", async () => {
    const lower = await signed({ ...request, method: "put" });
    const bytes = await signed({ ...request, body: new TextEncoder().encode(request.body as string) });
    expect(lower.signature).toBe(bytes.signature);
    await expect(verify({ timestamp: String(now), signature: lower.signature })).resolves.toBe(
      creator.address,
    );
  });

  it("uses the clock when no timestamp is given", async () => {
    const before = Math.floor(Date.now() / 1000);
    const result = await signRelayRequest({
      account: creator,
      domain,
      method: "GET",
      path: "/v1/tasks/1/args",
    });
    expect(result.timestamp).toBeGreaterThanOrEqual(before);
    await expect(
      verifyRelayRequest({
        domain,
        method: "GET",
        path: "/v1/tasks/1/args",
        body: undefined,
        timestampHeader: String(result.timestamp),
        signatureHeader: result.signature,
      }),
    ).resolves.toBe(creator.address);
  });

  it("signs through a wallet client the same as through the local account", async () => {
    // A wallet client whose transport answers eth_signTypedData_v4 the way a browser wallet would.
    const wallet = createWalletClient({
      account: creator.address,
      transport: custom({
        async request({ method, params }) {
          if (method !== "eth_signTypedData_v4") throw new Error(`unexpected ${method}`);
          const [, json] = params as [string, string];
          const typed = JSON.parse(json);
          const { EIP712Domain: _, ...types } = typed.types;
          return creator.signTypedData({ ...typed, types });
        },
      }),
    });
    const viaWallet = await signRelayRequest({ account: wallet, domain, ...request, timestamp: now });
    expect(viaWallet.signature).toBe((await signed()).signature);
  });

  it("recovers another address when the method, path, body, timestamp or domain differ", async () => {
    const { signature } = await signed();
    const headers = { timestamp: String(now), signature };
    const tampered: [string, Promise<string>][] = [
      ["method", verify(headers, { ...request, method: "GET" })],
      ["path", verify(headers, { ...request, path: "/v1/tasks/13/args" })],
      ["path search", verify(headers, { ...request, path: "/v1/tasks/12/args?x=1" })],
      ["body", verify(headers, { ...request, body: `${request.body} ` })],
      ["no body", verify(headers, { ...request, body: undefined })],
      ["timestamp", verify({ ...headers, timestamp: String(now + 1) }, request)],
      ["chainId", verify(headers, request, { domain: { ...domain, chainId: 1 } })],
      [
        "contract",
        verify(headers, request, {
          domain: { ...domain, verifyingContract: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512" },
        }),
      ],
      ["name", verify(headers, request, { domain: { ...domain, name: "Another Relay" } })],
    ];
    for (const [what, recovered] of tampered) {
      expect(await recovered, what).not.toBe(creator.address);
    }
  });

  it("tells another signer apart", async () => {
    const { signature } = await signRelayRequest({ account: other, domain, ...request, timestamp: now });
    await expect(verify({ timestamp: String(now), signature })).resolves.toBe(other.address);
  });

  it("accepts a clock skew of 60 s either way and refuses 61 s as expired", async () => {
    const { signature } = await signed();
    const headers = { timestamp: String(now), signature };
    await expect(verify(headers, request, { now: now + 60 })).resolves.toBe(creator.address);
    await expect(verify(headers, request, { now: now - 60 })).resolves.toBe(creator.address);
    expect(await reasonOf(verify(headers, request, { now: now + 61 }))).toBe("expired");
    expect(await reasonOf(verify(headers, request, { now: now - 61 }))).toBe("expired");
  });

  it("honours maxSkewSeconds", async () => {
    const { signature } = await signed();
    const check = (maxSkewSeconds: number) =>
      verifyRelayRequest({
        domain,
        ...request,
        timestampHeader: String(now),
        signatureHeader: signature,
        now: now + 10,
        maxSkewSeconds,
      });
    await expect(check(10)).resolves.toBe(creator.address);
    expect(await reasonOf(check(9))).toBe("expired");
  });

  it("refuses missing headers as missing", async () => {
    const { signature } = await signed();
    expect(await reasonOf(verify({ timestamp: undefined, signature }))).toBe("missing");
    expect(await reasonOf(verify({ timestamp: String(now), signature: undefined }))).toBe("missing");
    expect(await reasonOf(verify({ timestamp: "", signature: "" }))).toBe("missing");
  });

  it("refuses malformed headers as malformed", async () => {
    const { signature } = await signed();
    const badTimestamps = ["abc", "1.5", "-1", "+1760000000", " 1760000000", "1e9", "0x10", "01760000000"];
    for (const timestamp of badTimestamps) {
      expect(await reasonOf(verify({ timestamp, signature })), timestamp).toBe("malformed");
    }
    const badSignatures = [
      signature.slice(0, -2),
      `${signature}00`,
      signature.slice(2),
      `0x${"z".repeat(130)}`,
      "signature",
    ];
    for (const bad of badSignatures) {
      expect(await reasonOf(verify({ timestamp: String(now), signature: bad })), bad).toBe("malformed");
    }
  });

  it("refuses a well-formed signature from which no address can be recovered as invalid", async () => {
    const zero = `0x${"0".repeat(128)}1b` as Hex;
    expect(await reasonOf(verify({ timestamp: String(now), signature: zero }))).toBe("invalid");
  });

  it("hands the EIP-712 digest to a custom recoverAddress and checksums what it returns", async () => {
    const { timestamp, signature } = await signed();
    const digests: Hex[] = [];
    const recovered = await verifyRelayRequest({
      domain,
      ...request,
      timestampHeader: String(timestamp),
      signatureHeader: signature,
      now,
      recoverAddress: async (digest, sig) => {
        digests.push(digest);
        return (await recoverAddress({ hash: digest, signature: sig })).toLowerCase() as Hex;
      },
    });
    expect(recovered).toBe(creator.address);
    expect(digests).toHaveLength(1);
    const failing = verifyRelayRequest({
      domain,
      ...request,
      timestampHeader: String(timestamp),
      signatureHeader: signature,
      now,
      recoverAddress: () => {
        throw new Error("bad point");
      },
    });
    expect(await reasonOf(failing)).toBe("invalid");
  });

  it("round-trips any body and path (property)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 512 }),
        fc.webPath(),
        fc.constantFrom("GET", "PUT", "POST", "DELETE"),
        fc.integer({ min: 0, max: 2 ** 40 }),
        async (body, path, method, timestamp) => {
          const { signature } = await signRelayRequest({
            account: creator,
            domain,
            method,
            path,
            body,
            timestamp,
          });
          const recovered = await verifyRelayRequest({
            domain,
            method,
            path,
            body,
            timestampHeader: String(timestamp),
            signatureHeader: signature,
            now: timestamp,
          });
          expect(recovered).toBe(creator.address);
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe("EIP-712 encoding", () => {
  it("relayRequestDigest equals viem's hashTypedData for any request and domain (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("GET", "PUT", "POST"),
        fc.string(),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.bigInt({ min: 0n, max: 2n ** 64n }),
        fc.integer({ min: 1, max: 2 ** 40 }),
        fc.string({ minLength: 1 }),
        (method, path, bodyHash, timestamp, chainId, name) => {
          const d = relayDomain({ name, chainId, taskContract });
          const message = { method, path, bodyHash: toHex(bodyHash), timestamp };
          expect(relayRequestDigest(d, message)).toBe(
            hashTypedData({ domain: d, types: RELAY_REQUEST_TYPES, primaryType: "RelayRequest", message }),
          );
        },
      ),
    );
  });

  it("hashes the typed data as the hand-encoded RelayRequest struct", () => {
    const message = {
      method: "PUT",
      path: "/v1/tasks/12/args",
      bodyHash: relayBodyHash(request.body),
      timestamp: BigInt(now),
    };
    const viemDigest = hashTypedData({
      domain,
      types: RELAY_REQUEST_TYPES,
      primaryType: "RelayRequest",
      message,
    });

    const utf8Hash = (text: string) => keccak256(toBytes(text));
    const domainTypeHash = utf8Hash(
      "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
    );
    const domainSeparator = keccak256(
      encodeAbiParameters(
        [
          { type: "bytes32" },
          { type: "bytes32" },
          { type: "bytes32" },
          { type: "uint256" },
          { type: "address" },
        ],
        [domainTypeHash, utf8Hash("Crynux Relay"), utf8Hash("1"), 31337n, taskContract],
      ),
    );
    const typeHash = utf8Hash("RelayRequest(string method,string path,bytes32 bodyHash,uint256 timestamp)");
    const structHash = keccak256(
      encodeAbiParameters(
        [
          { type: "bytes32" },
          { type: "bytes32" },
          { type: "bytes32" },
          { type: "bytes32" },
          { type: "uint256" },
        ],
        [typeHash, utf8Hash(message.method), utf8Hash(message.path), message.bodyHash, message.timestamp],
      ),
    );
    const handDigest = keccak256(concat(["0x1901", domainSeparator, structHash]));
    expect(viemDigest).toBe(handDigest);
  });
});
