/** The `quantize_bits` values a GPT task may ask for. */
export type QuantizeBits = 4 | 8;

/**
 * GGUF quantization types, as `llama.cpp` names them, that a model reference may name. Only `Q4_0` and
 * `Q8_0` are produced by Crynux nodes themselves (from an F32/F16/BF16 model); the others are accepted
 * when a model repository already ships them.
 */
export const GGUF_QUANTIZATION_TYPES = [
  "F32",
  "F16",
  "BF16",
  "Q8_0",
  "Q6_K",
  "Q5_K_M",
  "Q5_K_S",
  "Q5_1",
  "Q5_0",
  "Q4_K_M",
  "Q4_K_S",
  "Q4_1",
  "Q4_0",
  "Q3_K_L",
  "Q3_K_M",
  "Q3_K_S",
  "Q2_K",
  "IQ4_NL",
  "IQ4_XS",
  "IQ3_M",
  "IQ3_S",
  "IQ3_XS",
  "IQ3_XXS",
  "IQ2_M",
  "IQ2_S",
  "IQ2_XS",
  "IQ2_XXS",
  "IQ1_M",
  "IQ1_S",
] as const;

/** A GGUF quantization type name (upper case, as in `Q4_K_M`). */
export type GgufQuantizationType = (typeof GGUF_QUANTIZATION_TYPES)[number];

/** The quantization a node applies for each `quantize_bits` value. */
export const QUANTIZATION_FOR_BITS = {
  4: "Q4_0",
  8: "Q8_0",
} as const satisfies Record<QuantizeBits, GgufQuantizationType>;

/**
 * Maps a task's `quantize_bits` to the GGUF quantization type the node must run: `4` → `Q4_0`,
 * `8` → `Q8_0`, `null`/`undefined` → `null` (run the model file as it is).
 */
export function quantizationForBits(bits: QuantizeBits | null | undefined): "Q4_0" | "Q8_0" | null {
  if (bits === null || bits === undefined) return null;
  return QUANTIZATION_FOR_BITS[bits];
}

/** Whether `name` (any case) is a known GGUF quantization type. */
export function isGgufQuantizationType(name: string): boolean {
  return (GGUF_QUANTIZATION_TYPES as readonly string[]).includes(name.toUpperCase());
}
