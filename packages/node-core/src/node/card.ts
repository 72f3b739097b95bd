import { cpus, totalmem } from "node:os";
import type { Llama } from "node-llama-cpp";

/** The card a node registers with (`join(gpuName, gpuVram, runtimeId)`): VRAM in whole GB. */
export type NodeCard = { gpuName: string; gpuVram: number };

/**
 * Detects the node's card with node-llama-cpp: the first GPU's name and its VRAM (rounded up to whole GB,
 * as the original node did); on a machine without a GPU backend, the CPU model and the total memory in GB.
 * Pass `llama` to reuse an instance (a CPU-only instance reports the CPU); by default one is loaded with
 * GPU auto-detection from the prebuilt binaries (never built).
 */
export async function detectCard(options: { llama?: Llama } = {}): Promise<NodeCard> {
  let llama = options.llama;
  if (!llama) {
    try {
      const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
      llama = await getLlama({ gpu: "auto", build: "never", logLevel: LlamaLogLevel.error });
    } catch {
      return cpuCard();
    }
  }
  if (llama.gpu === false) return cpuCard();
  const [names, vram] = await Promise.all([llama.getGpuDeviceNames(), llama.getVramState()]);
  const gpuName = names[0]?.trim();
  if (!gpuName || vram.total <= 0) return cpuCard();
  return { gpuName, gpuVram: Math.max(1, Math.ceil(vram.total / 2 ** 30)) };
}

/** The CPU "card": its model name and the machine's memory in whole GB (at least 1). */
export function cpuCard(): NodeCard {
  const model = cpus()[0]?.model.trim().replace(/\s+/g, " ");
  return { gpuName: model || "cpu", gpuVram: Math.max(1, Math.round(totalmem() / 2 ** 30)) };
}
