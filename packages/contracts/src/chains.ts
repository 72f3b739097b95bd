import { type Chain, defineChain } from "viem";
import { z } from "zod";
import { ContractsError } from "./errors.js";

/** The native currency of every Crynux chain. */
export const crynuxNativeCurrency = { name: "Crynux", symbol: "CNX", decimals: 18 } as const;

/** The local development chain: anvil (or the devnet example) on 127.0.0.1:8545, chain id 31337. */
// Annotated: the type defineChain infers names viem internals that a .d.ts cannot reference.
export const crynuxDevnet: Chain<undefined> & { id: 31337 } = /*#__PURE__*/ defineChain({
  id: 31337,
  name: "Crynux Devnet",
  nativeCurrency: crynuxNativeCurrency,
  rpcUrls: { default: { http: ["http://127.0.0.1:8545"] } },
  testnet: true,
});

const httpUrl = z.url({ protocol: /^https?$/, error: "must be an http(s) URL" });

/** What {@link defineCrynuxChain} accepts. */
export const crynuxChainConfigSchema = z.object({
  /** EIP-155 chain id. */
  id: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  name: z.string().trim().min(1),
  /** JSON-RPC endpoint over HTTP(S). */
  rpcUrl: httpUrl,
  /** Optional JSON-RPC endpoint over WebSocket. */
  webSocketUrl: z.url({ protocol: /^wss?$/, error: "must be a ws(s) URL" }).optional(),
  /** Optional block explorer (Blockscout, Etherscan-like) base URL. */
  explorerUrl: httpUrl.optional(),
  testnet: z.boolean().optional(),
});

/**
 * Input of {@link defineCrynuxChain}: the chain id, name, HTTP RPC URL and optionally a WebSocket URL and
 * the testnet flag; validated there.
 */
export type CrynuxChainConfig = z.input<typeof crynuxChainConfigSchema>;

/** Thrown by {@link defineCrynuxChain} when the configuration is invalid. */
export class InvalidChainConfigError extends ContractsError {
  override name = "InvalidChainConfigError";

  constructor(details: string, options?: { cause?: unknown }) {
    super("Invalid Crynux chain configuration", details, options);
  }
}

/**
 * A viem chain for a Crynux deployment (a rollapp or any EVM chain running the contracts), paying in CNX.
 *
 * @example
 * const chain = defineCrynuxChain({ id: 10_000, name: "Crynux Rollapp", rpcUrl: "https://rpc.example.org" });
 * const client = createPublicClient({ chain, transport: http() });
 */
export function defineCrynuxChain(config: CrynuxChainConfig): Chain {
  const parsed = crynuxChainConfigSchema.safeParse(config);
  if (!parsed.success) {
    throw new InvalidChainConfigError(z.prettifyError(parsed.error), { cause: parsed.error });
  }
  const { id, name, rpcUrl, webSocketUrl, explorerUrl, testnet } = parsed.data;
  return defineChain({
    id,
    name,
    nativeCurrency: crynuxNativeCurrency,
    rpcUrls: {
      default: { http: [rpcUrl], ...(webSocketUrl ? { webSocket: [webSocketUrl] } : {}) },
    },
    ...(explorerUrl ? { blockExplorers: { default: { name: `${name} explorer`, url: explorerUrl } } } : {}),
    ...(testnet === undefined ? {} : { testnet }),
  });
}
