import { type Hex, keccak256, sha256 } from "viem";
import { canonicalBytes } from "./canonicalize.js";
import type { GptResponse } from "./gpt.js";

/**
 * The task hash that `createTask` puts on-chain: keccak256 of the RFC 8785 canonical JSON of the task
 * arguments, exactly as they are uploaded to the relay (defaults are not added: hash what you send).
 *
 * @example
 * taskHash({ model: "owner/repo:Q4_0", messages: [{ role: "user", content: "Hi" }] })
 */
export function taskHash(args: unknown): Hex {
  return keccak256(canonicalBytes(args));
}

/**
 * The result a GPT node commits to and discloses: sha256 of the RFC 8785 canonical JSON of its response.
 * Honest nodes of one group produce byte-identical responses, so their hashes are equal.
 */
export function gptResultHash(response: GptResponse): Hex {
  return sha256(canonicalBytes(response));
}
