import { z } from "zod";

/** The node-llama-cpp version this executor is built and tested against (part of every runtime id). */
export const NODE_LLAMA_CPP_VERSION = "3.22.1";

/**
 * Everything that can change a GPT result between two honest nodes. Nodes with the same profile (and the
 * same engine version and hardware backend) produce byte-identical responses, so the profile is part of
 * the on-chain group key (`runtimeId`): a GPT task's 3 nodes all come from one group.
 *
 * Measured on node-llama-cpp 3.22.1 (CPU): with sampling, threads 1 vs 2 and batch 512 vs 64 change the
 * output, so both belong here.
 */
export const executionProfileSchema = z.strictObject({
  /** Compute backend. Only the CPU backend is supported for now. */
  backend: z.literal("cpu"),
  /** Exact number of math threads for every evaluation. */
  threads: z.int().min(1).max(256),
  /** Tokens evaluated per batch (prompt processing). */
  batchSize: z.int().min(1).max(8192),
  /** Context size in tokens: prompt + max_new_tokens must fit. */
  contextSize: z.int().min(128).max(1_048_576),
});

/** The deterministic execution profile of a GPT executor. */
export type ExecutionProfile = z.output<typeof executionProfileSchema>;

/** The profile of the reference network: 1 thread, batch 512, 4096-token context. */
export const DEFAULT_EXECUTION_PROFILE: Readonly<ExecutionProfile> = Object.freeze({
  backend: "cpu",
  threads: 1,
  batchSize: 512,
  contextSize: 4096,
});

/**
 * The runtime id a node registers with (`join(gpuName, gpuVram, runtimeId)`), naming the engine, its
 * version, the backend and the profile: `node-llama-cpp@3.22.1/cpu/t1/b512/c4096`.
 */
export function runtimeId(profile: ExecutionProfile = DEFAULT_EXECUTION_PROFILE): string {
  return `node-llama-cpp@${NODE_LLAMA_CPP_VERSION}/${profile.backend}/t${profile.threads}/b${profile.batchSize}/c${profile.contextSize}`;
}

/** Parses a runtime id back into its profile, or returns `undefined` for an id of another engine. */
export function parseRuntimeId(id: string): ExecutionProfile | undefined {
  const match = /^node-llama-cpp@([^/]+)\/(cpu)\/t(\d+)\/b(\d+)\/c(\d+)$/.exec(id);
  if (!match) return undefined;
  const result = executionProfileSchema.safeParse({
    backend: match[2],
    threads: Number(match[3]),
    batchSize: Number(match[4]),
    contextSize: Number(match[5]),
  });
  return result.success ? result.data : undefined;
}
