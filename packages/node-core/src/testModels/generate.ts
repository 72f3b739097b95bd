/**
 * Seeded random-weight GGUF models for tests and benchmarks: real llama.cpp architectures ("llama",
 * "qwen2") with a real tokenizer vocabulary ("spm" = SentencePiece with byte fallback, "bpe" = GPT-2
 * byte-level BPE with merges) and ChatML control tokens. llama.cpp loads and runs them like any model;
 * what they generate is noise, but it is deterministic noise: the file is a pure function of the options.
 *
 * Nothing is downloaded. Tensors are generated chunk by chunk while they are written, so even the
 * ~5 GB F32 Llama-3.2-1B shape needs only a few MiB of memory.
 */
import { NodeCoreError, type NodeCoreErrorParameters } from "../errors.js";
import { f32ToF16Bits } from "../gguf/float16.js";
import { alignUp, GGUF_DEFAULT_ALIGNMENT, tensorByteLength } from "../gguf/reader.js";
import { GgmlType, type GgufValue, LlamaFileType } from "../gguf/types.js";
import { type GgufTensorSource, writeGguf } from "../gguf/writer.js";

/** Hyperparameters of a test model. */
export type TestModelShape = {
  /** Hidden size (`{arch}.embedding_length`). */
  embedding: number;
  /** Transformer blocks (`{arch}.block_count`). */
  layers: number;
  /** Attention (query) heads; `embedding / heads` is the head size and must be even (RoPE). */
  heads: number;
  /** Key/value heads (grouped-query attention); must divide `heads`. */
  kvHeads: number;
  /** Hidden size of the SwiGLU feed-forward network. */
  feedForward: number;
  /** Tokens in the vocabulary (rows of `token_embd.weight`). At least {@link MIN_TEST_VOCAB}. */
  vocab: number;
  /** Training context length (`{arch}.context_length`). */
  contextLength: number;
  /** RoPE base frequency (`{arch}.rope.freq_base`); default 10000. */
  ropeFreqBase?: number;
  /** RMSNorm epsilon (`{arch}.attention.layer_norm_rms_epsilon`); default 1e-5. */
  rmsNormEps?: number;
  /** Whether the output projection reuses `token_embd.weight` (no `output.weight`); default false. */
  tiedEmbeddings?: boolean;
};

/**
 * Built-in shapes. `tiny` makes a file under 1 MB that generates in microseconds per token; the other two
 * have the exact dimensions of the public Qwen2.5-0.5B and Llama-3.2-1B `config.json` (hidden size, layers,
 * heads, KV heads, intermediate size, vocabulary, max positions, rope theta, RMS epsilon, tied embeddings).
 * Llama 3.2's "llama3" RoPE scaling (a `rope_freqs` tensor in real GGUFs) is not reproduced.
 */
export const TEST_MODEL_SHAPES = {
  tiny: {
    embedding: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    feedForward: 128,
    vocab: 768,
    contextLength: 4096,
    ropeFreqBase: 10_000,
    rmsNormEps: 1e-5,
    tiedEmbeddings: false,
  },
  "qwen2.5-0.5b": {
    embedding: 896,
    layers: 24,
    heads: 14,
    kvHeads: 2,
    feedForward: 4864,
    vocab: 151_936,
    contextLength: 32_768,
    ropeFreqBase: 1_000_000,
    rmsNormEps: 1e-6,
    tiedEmbeddings: true,
  },
  "llama-3.2-1b": {
    embedding: 2048,
    layers: 16,
    heads: 32,
    kvHeads: 8,
    feedForward: 8192,
    vocab: 128_256,
    contextLength: 131_072,
    ropeFreqBase: 500_000,
    rmsNormEps: 1e-5,
    tiedEmbeddings: true,
  },
} as const satisfies Record<string, TestModelShape>;

/** What {@link generateTestModel} makes. */
export type GenerateTestModelOptions = {
  /** Seeds the weights. Same options ⇒ byte-identical file. A safe non-negative integer. */
  seed: number;
  /** A built-in shape name or explicit dimensions; default `"tiny"`. */
  shape?: keyof typeof TEST_MODEL_SHAPES | TestModelShape;
  /** llama.cpp architecture; default `"llama"`. `"qwen2"` adds q/k/v biases like Qwen2.5. */
  architecture?: "llama" | "qwen2";
  /** `"spm"` (`tokenizer.ggml.model = "llama"`) or `"bpe"` (`"gpt2"`, pre-tokenizer `"qwen2"`); default `"spm"`. */
  tokenizer?: "spm" | "bpe";
  /** Jinja template written to `tokenizer.chat_template`; default {@link CHATML_TEMPLATE}. */
  chatTemplate?: string;
  /** Type of the 2-D weight tensors (norms and biases stay F32); default `"F32"`. */
  type?: "F32" | "F16";
  /** `general.name`; default derived from the options. */
  name?: string;
  /**
   * Added to every element of the EOS row of the output projection (`output.weight`, or `token_embd.weight`
   * when embeddings are tied), so that greedy decoding sometimes picks EOS: the EOS logit grows by
   * `eosBoost · Σh` (h the normalized final hidden state), which is large and positive for some contexts.
   * Default 0. With the untied tiny shape, 0.1 makes greedy decoding reach EOS within a few tokens for most
   * seeds; a tied model prefers to repeat its input token, so fewer seeds reach EOS at the same boost.
   */
  eosBoost?: number;
  /** Default: the shape's `tiedEmbeddings` (true for the real shapes, false for `tiny`). */
  tiedEmbeddings?: boolean;
};

/** Progress of {@link generateTestModel}: bytes of the final file written so far, out of its total size. */
export type TestModelProgress = { bytesWritten: number; totalBytes: number; tensor: string };

/**
 * The special tokens of every test vocabulary (both tokenizers). `bos`/`eos` are `tokenizer.ggml.bos_token_id`
 * / `eos_token_id`; `imStart`/`imEnd` are ChatML control tokens (llama.cpp treats `</s>` and `<|im_end|>` as
 * end-of-generation); `unk` exists only in the `spm` vocabulary. Ids: see {@link buildTestVocabulary} —
 * spm: unk 0, bos 1, eos 2, `<0x00>`…`<0xFF>` 3–258, imStart 259, imEnd 260; bpe: the 256 byte tokens
 * first and the four control tokens last (bos, eos, imStart, imEnd = vocab − 4 … vocab − 1).
 */
export const SPECIAL_TOKENS = {
  unk: "<unk>",
  bos: "<s>",
  eos: "</s>",
  imStart: "<|im_start|>",
  imEnd: "<|im_end|>",
} as const;

/** The default chat template: plain ChatML, as Qwen2.5 without tools. */
export const CHATML_TEMPLATE =
  "{%- for message in messages %}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/** Smallest vocabulary a test model may have (byte tokens, control tokens and some pieces). */
export const MIN_TEST_VOCAB = 384;
/** Largest vocabulary the synthetic piece generator can fill. */
export const MAX_TEST_VOCAB = 600_000;

/** Invalid options for {@link generateTestModel}. */
export class TestModelError extends NodeCoreError {
  override name = "TestModelError";
  constructor(shortMessage: string, parameters: NodeCoreErrorParameters = {}) {
    super(shortMessage, { docsPath: "node-core.md#test-models", ...parameters });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------------------------

/** llama.cpp `llama_token_type`. */
const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, BYTE: 6 } as const;

/** A test tokenizer vocabulary as written to `tokenizer.ggml.*`. */
export type TestVocabulary = {
  model: "llama" | "gpt2";
  tokens: string[];
  /** SentencePiece scores (spm only). */
  scores: number[] | undefined;
  tokenTypes: number[];
  /** BPE merges "left right" in rank order (bpe only). */
  merges: string[] | undefined;
  ids: { bos: number; eos: number; imStart: number; imEnd: number; unk: number | undefined };
};

/** Characters, words and subwords the vocabularies start with, most useful first (`tiny` keeps ~500). */
const ASCII_CHARACTERS =
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?:;'\"()[]{}<>-_/\\*+=@#$%&^~`|";
const TOP_WORDS =
  "the of and to in is that it for on are as with was you this be at by not or have from but what all " +
  "hello world test model token answer question user assistant system please thank yes no one two three";
const TOP_CAPITALIZED = "Hello The This What How I You Yes No";
const NON_ASCII_CHARACTERS = "éèàçüöäßñíóú—–“”‘’…€✓абвгдеиклмнопрстя你好世界中文日本語";
const WORDS =
  "they his had were we when your can said there use an each which she do how their if will up other about " +
  "out many then them these so some her would make like him into time has look more write go see number way " +
  "could people my than first water been call who now find long down day did get come made may part new old " +
  "good big small fast slow red blue green four five six seven eight nine ten node task data random seed " +
  "prompt chat Crynux GPU CPU World Why Where When café naïve Grüße über Straße niño привет мир 你好 世界";
const SUBWORDS =
  "th he in er an re on at en nd ti es or te ed is it al ar st to nt ng se ha as ou io le ve co me de hi " +
  "ing ion ent her for tha int ere tio ter est ers ati hat ate all eth hes ver his " +
  "tion ment ness able ible ful less ous ive ize ise ally ings ation";
const MORE_CHARACTERS = "êëâîïôùûÿøåæœÉÀÇÜÖÄ£¥©®™°±×÷✗→←★♥жзйфхцчшщъыьэюИПРСМ人大小上下こんにちは";
const CONSONANTS = "bdfgklmnprstvz";
const VOWELS = "aeiou";

/** GPT-2 `bytes_to_unicode`: the printable character that stands for each byte in byte-level BPE. */
const BYTE_TO_UNICODE: readonly string[] = (() => {
  const map: string[] = new Array(256);
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(printable(b) ? b : 256 + next++);
  return map;
})();

const utf8 = new TextEncoder();

/** Builds the normal pieces of a vocabulary in order, each reachable from shorter pieces by merges. */
class PieceBuilder {
  readonly pieces: string[] = [];
  /** BPE only: "left right" for each piece, same order as `pieces`. */
  readonly merges: string[] = [];
  private readonly known = new Set<string>();

  constructor(
    private readonly kind: "spm" | "bpe",
    private readonly capacity: number,
    /** Texts already in the vocabulary (byte and control tokens). */
    reserved: Iterable<string>,
  ) {
    for (const text of reserved) this.known.add(text);
  }

  get full(): boolean {
    return this.pieces.length >= this.capacity;
  }

  /**
   * The piece's symbols: code points with ' ' → '▁' (spm), or for bpe the byte-level form of each code point
   * (one to four byte characters, e.g. "é" → "Ã©").
   */
  symbols(text: string): string[] {
    if (this.kind === "bpe")
      return Array.from(text, (c) => Array.from(utf8.encode(c), (byte) => BYTE_TO_UNICODE[byte]!).join(""));
    return Array.from(text.replaceAll(" ", "▁"));
  }

  /** Adds `left + right` (both already tokens for bpe) unless it exists. */
  pair(left: string, right: string): void {
    const text = left + right;
    if (this.full || this.known.has(text)) return;
    this.known.add(text);
    this.pieces.push(text);
    if (this.kind === "bpe") this.merges.push(`${left} ${right}`);
  }

  /** Adds one symbol: spm, a character; bpe, a multi-byte character by merging its bytes left to right. */
  single(symbol: string): void {
    if (this.kind === "bpe") {
      const bytes = Array.from(symbol);
      let prefix = bytes[0]!;
      for (let k = 1; k < bytes.length; k++) {
        this.pair(prefix, bytes[k]!);
        prefix += bytes[k]!;
      }
      return;
    }
    if (this.full || this.known.has(symbol)) return;
    this.known.add(symbol);
    this.pieces.push(symbol);
  }

  /** Adds a piece and all its prefixes (`▁h`, `▁he`, `▁hel`, …) so merges can build it left to right. */
  piece(text: string): void {
    const symbols = this.symbols(text);
    if (symbols.length === 0) return;
    this.single(symbols[0]!);
    let prefix = symbols[0]!;
    for (let k = 1; k < symbols.length && !this.full; k++) {
      this.single(symbols[k]!);
      this.pair(prefix, symbols[k]!);
      prefix += symbols[k]!;
    }
  }
}

/**
 * The vocabulary of a test model: byte tokens, ChatML control tokens, curated English and non-ASCII pieces,
 * then synthetic consonant-vowel "words" (`ba`, `▁ba`, `bako`, `▁bakoti`…) until `size` tokens. Depends only
 * on the tokenizer kind and size. For bpe every piece is the result of a merge of two earlier tokens.
 */
export function buildTestVocabulary(tokenizer: "spm" | "bpe", size: number): TestVocabulary {
  if (!Number.isInteger(size) || size < MIN_TEST_VOCAB || size > MAX_TEST_VOCAB) {
    throw new TestModelError(
      `A test vocabulary needs ${MIN_TEST_VOCAB} to ${MAX_TEST_VOCAB} tokens, not ${size}.`,
    );
  }
  const space = tokenizer === "spm" ? "▁" : BYTE_TO_UNICODE[0x20]!;
  let head: { text: string; type: number }[];
  let tail: { text: string; type: number }[];
  if (tokenizer === "spm") {
    head = [
      { text: SPECIAL_TOKENS.unk, type: TokenType.UNKNOWN },
      { text: SPECIAL_TOKENS.bos, type: TokenType.CONTROL },
      { text: SPECIAL_TOKENS.eos, type: TokenType.CONTROL },
      ...Array.from({ length: 256 }, (_, byte) => ({
        text: `<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`,
        type: TokenType.BYTE,
      })),
      { text: SPECIAL_TOKENS.imStart, type: TokenType.CONTROL },
      { text: SPECIAL_TOKENS.imEnd, type: TokenType.CONTROL },
    ];
    tail = [];
  } else {
    head = BYTE_TO_UNICODE.map((text) => ({ text, type: TokenType.NORMAL }));
    tail = [SPECIAL_TOKENS.bos, SPECIAL_TOKENS.eos, SPECIAL_TOKENS.imStart, SPECIAL_TOKENS.imEnd].map(
      (text) => ({ text, type: TokenType.CONTROL }),
    );
  }
  const builder = new PieceBuilder(
    tokenizer,
    size - head.length - tail.length,
    [...head, ...tail].map((token) => token.text),
  );

  // Curated pieces, most useful first: spaces, ASCII, frequent words with and without a leading space,
  // common non-ASCII characters, then more words, subwords and characters.
  builder.piece(" ");
  if (tokenizer === "bpe") {
    builder.piece("  ");
    builder.piece("\n\n");
  }
  for (const character of ASCII_CHARACTERS) builder.piece(character);
  for (const word of TOP_WORDS.split(" ")) builder.piece(` ${word}`);
  for (const word of TOP_CAPITALIZED.split(" ")) {
    builder.piece(word);
    builder.piece(` ${word}`);
  }
  for (const character of NON_ASCII_CHARACTERS) builder.piece(character);
  for (const word of TOP_WORDS.split(" ")) builder.piece(word);
  for (const word of WORDS.split(" ")) builder.piece(` ${word}`);
  for (const subword of SUBWORDS.split(" ")) builder.piece(subword);
  for (const character of MORE_CHARACTERS) builder.piece(character);
  for (const word of WORDS.split(" ")) builder.piece(word);
  for (const subword of SUBWORDS.split(" ")) builder.piece(` ${subword}`);

  // Synthetic words of 1, 2, 3… consonant-vowel syllables, each with and without a leading space.
  const syllables: string[] = [];
  for (const c of CONSONANTS) for (const v of VOWELS) syllables.push(c + v);
  for (const syllable of syllables) builder.piece(syllable);
  for (const syllable of syllables) builder.pair(space, syllable);
  let level = syllables;
  while (!builder.full) {
    const next: string[] = [];
    for (const word of level) {
      for (const syllable of syllables) {
        builder.pair(word, syllable);
        builder.pair(space + word, syllable);
        if (builder.full) break;
        if (next.length < 50_000) next.push(word + syllable);
      }
      if (builder.full) break;
    }
    if (next.length === 0) break;
    level = next;
  }
  if (!builder.full) throw new TestModelError(`Could not synthesize ${size} distinct tokens.`);

  const tokens = [...head.map((t) => t.text), ...builder.pieces, ...tail.map((t) => t.text)];
  const tokenTypes = [
    ...head.map((t) => t.type),
    ...builder.pieces.map(() => TokenType.NORMAL),
    ...tail.map((t) => t.type),
  ];
  const idOf = (text: string) => tokens.indexOf(text);
  if (tokenizer === "spm") {
    return {
      model: "llama",
      tokens,
      // Byte and control tokens score 0 (as Llama 2); pieces score lower the later they come, so short
      // pieces merge first.
      scores: tokens.map((_, id) => (id < head.length ? 0 : -(id - head.length + 1))),
      tokenTypes,
      merges: undefined,
      ids: { unk: 0, bos: 1, eos: 2, imStart: 259, imEnd: 260 },
    };
  }
  return {
    model: "gpt2",
    tokens,
    scores: undefined,
    tokenTypes,
    merges: builder.merges,
    ids: {
      unk: undefined,
      bos: idOf(SPECIAL_TOKENS.bos),
      eos: idOf(SPECIAL_TOKENS.eos),
      imStart: idOf(SPECIAL_TOKENS.imStart),
      imEnd: idOf(SPECIAL_TOKENS.imEnd),
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Random weights
// ---------------------------------------------------------------------------------------------------------

/** splitmix32 step, used to expand (seed, tensor name) into xoshiro128** state. */
function splitmix32(state: { x: number }): number {
  state.x = (state.x + 0x9e3779b9) | 0;
  let z = state.x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** xoshiro128** state for one tensor: a function of the seed and the tensor name only. */
function tensorRng(seed: number, name: string): Uint32Array {
  let hash = 0x811c9dc5; // FNV-1a of the name
  for (const byte of utf8.encode(name)) hash = Math.imul(hash ^ byte, 0x01000193);
  const mix = { x: (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32), 0x27d4eb2d) };
  const a = splitmix32(mix);
  mix.x ^= hash;
  const state = new Uint32Array([a, splitmix32(mix), splitmix32(mix), splitmix32(mix)]);
  if ((state[0]! | state[1]! | state[2]! | state[3]!) === 0) state[0] = 1;
  return state;
}

/** The sum of four uniform 16-bit integers: range, mean and standard deviation. */
const SUM4_MAX = 4 * 65535;
const SUM4_MEAN = 2 * 65535;
const SUM4_STD = Math.sqrt((65536 * 65536 - 1) / 3);

/**
 * Fills `out` with sums of four uniform 16-bit integers (two xoshiro128** outputs per element): an
 * Irwin–Hall approximation of a normal distribution, integer-exact and so identical on every platform.
 */
function fillSums(state: Uint32Array, out: Uint32Array): void {
  let s0 = state[0]!;
  let s1 = state[1]!;
  let s2 = state[2]!;
  let s3 = state[3]!;
  for (let i = 0; i < out.length; i++) {
    let x = Math.imul(s1, 5);
    const r1 = Math.imul((x << 7) | (x >>> 25), 9) >>> 0;
    let t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    x = Math.imul(s1, 5);
    const r2 = Math.imul((x << 7) | (x >>> 25), 9) >>> 0;
    t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    out[i] = (r1 & 0xffff) + (r1 >>> 16) + (r2 & 0xffff) + (r2 >>> 16);
  }
  state[0] = s0;
  state[1] = s1;
  state[2] = s2;
  state[3] = s3;
}

/** Value of each sum as `mean + std·z` (z standardized), in F32 and rounded on to F16. */
type ValueTables = { f32: Float32Array; f16: Uint16Array };
const valueTables = new Map<string, ValueTables>();

function tablesFor(mean: number, std: number): ValueTables {
  const key = `${mean}:${std}`;
  let tables = valueTables.get(key);
  if (tables === undefined) {
    const f32 = new Float32Array(SUM4_MAX + 1);
    const f16 = new Uint16Array(SUM4_MAX + 1);
    const scale = std / SUM4_STD;
    for (let sum = 0; sum <= SUM4_MAX; sum++) {
      f32[sum] = mean + (sum - SUM4_MEAN) * scale;
      f16[sum] = f32ToF16Bits(f32[sum]!);
    }
    tables = { f32, f16 };
    valueTables.set(key, tables);
  }
  return tables;
}

/** Elements generated per chunk (4 MiB of F32). */
const CHUNK_ELEMENTS = 1 << 20;

type TensorPlan = {
  name: string;
  dims: number[];
  type: number;
  mean: number;
  std: number;
  /** Add `value` to the elements of row `row` (rows of `dims[0]` elements). */
  boostRow?: { row: number; value: number };
};

/**
 * Streams a tensor's bytes in chunks. While the writer writes one chunk, the next is computed (scheduled with
 * `setImmediate`, so it runs while the write is in flight); chunks are still computed strictly in order, so
 * the bytes do not depend on timing. `onChunk` runs after each chunk has been written.
 */
async function* tensorChunks(
  plan: TensorPlan,
  seed: number,
  onChunk: (bytes: number) => void,
): AsyncGenerator<Uint8Array, void, void> {
  const rng = tensorRng(seed, plan.name);
  const total = plan.dims.reduce((a, b) => a * b, 1);
  const rowLength = plan.dims[0]!;
  const boostStart = plan.boostRow ? plan.boostRow.row * rowLength : 0;
  const boostEnd = plan.boostRow ? boostStart + rowLength : 0;
  const { f32: f32Table, f16: f16Table } = tablesFor(plan.mean, plan.std);
  const sums = new Uint32Array(Math.min(CHUNK_ELEMENTS, total));
  const boosted = new Float32Array(1);
  const compute = (start: number): Uint8Array => {
    const count = Math.min(CHUNK_ELEMENTS, total - start);
    const chunkSums = sums.subarray(0, count);
    fillSums(rng, chunkSums);
    const boostFrom = Math.max(boostStart, start) - start;
    const boostTo = Math.min(boostEnd, start + count) - start;
    if (plan.type === GgmlType.F16) {
      const half = new Uint16Array(count);
      for (let i = 0; i < count; i++) half[i] = f16Table[chunkSums[i]!]!;
      for (let i = boostFrom; i < boostTo; i++) {
        boosted[0] = f32Table[chunkSums[i]!]! + plan.boostRow!.value;
        half[i] = f32ToF16Bits(boosted[0]!);
      }
      return new Uint8Array(half.buffer);
    }
    const values = new Float32Array(count);
    for (let i = 0; i < count; i++) values[i] = f32Table[chunkSums[i]!]!;
    for (let i = boostFrom; i < boostTo; i++) values[i] = values[i]! + plan.boostRow!.value;
    return new Uint8Array(values.buffer);
  };
  let chunk = compute(0);
  for (let start = 0; start < total; start += CHUNK_ELEMENTS) {
    const nextStart = start + CHUNK_ELEMENTS;
    const next =
      nextStart < total
        ? new Promise<Uint8Array>((resolve, reject) =>
            setImmediate(() => {
              try {
                resolve(compute(nextStart));
              } catch (error) {
                reject(error);
              }
            }),
          )
        : undefined;
    yield chunk;
    onChunk(chunk.length);
    if (next === undefined) break;
    chunk = await next;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------------------

type Resolved = {
  seed: number;
  shapeName: string;
  shape: Required<TestModelShape>;
  architecture: "llama" | "qwen2";
  tokenizer: "spm" | "bpe";
  chatTemplate: string;
  type: "F32" | "F16";
  name: string;
  eosBoost: number;
  tiedEmbeddings: boolean;
};

function resolveOptions(options: GenerateTestModelOptions): Resolved {
  const fail = (message: string): never => {
    throw new TestModelError(message);
  };
  const { seed } = options;
  if (typeof seed !== "number" || !Number.isSafeInteger(seed) || seed < 0)
    fail(`The seed must be a non-negative safe integer, not ${String(seed)}.`);
  const shapeOption = options.shape ?? "tiny";
  let shapeName: string;
  let base: TestModelShape;
  if (typeof shapeOption === "string") {
    if (!Object.hasOwn(TEST_MODEL_SHAPES, shapeOption))
      fail(`Unknown test model shape "${shapeOption}" (${Object.keys(TEST_MODEL_SHAPES).join(", ")}).`);
    shapeName = shapeOption;
    base = TEST_MODEL_SHAPES[shapeOption];
  } else {
    shapeName = "custom";
    base = shapeOption;
  }
  const shape: Required<TestModelShape> = {
    ropeFreqBase: 10_000,
    rmsNormEps: 1e-5,
    tiedEmbeddings: false,
    ...base,
  };
  const positive = ["embedding", "layers", "heads", "kvHeads", "feedForward", "contextLength"] as const;
  for (const key of positive) {
    const value = shape[key];
    if (!Number.isSafeInteger(value) || value < 1)
      fail(`shape.${key} must be a positive integer, not ${value}.`);
  }
  if (shape.embedding % shape.heads !== 0)
    fail(`shape.embedding ${shape.embedding} is not a multiple of shape.heads ${shape.heads}.`);
  if ((shape.embedding / shape.heads) % 2 !== 0)
    fail(`The head size ${shape.embedding / shape.heads} must be even for RoPE.`);
  if (shape.heads % shape.kvHeads !== 0)
    fail(`shape.heads ${shape.heads} is not a multiple of shape.kvHeads ${shape.kvHeads}.`);
  if (!Number.isInteger(shape.vocab) || shape.vocab < MIN_TEST_VOCAB || shape.vocab > MAX_TEST_VOCAB)
    fail(`shape.vocab must be an integer from ${MIN_TEST_VOCAB} to ${MAX_TEST_VOCAB}, not ${shape.vocab}.`);
  if (!(shape.ropeFreqBase > 0)) fail(`shape.ropeFreqBase must be positive, not ${shape.ropeFreqBase}.`);
  if (!(shape.rmsNormEps > 0)) fail(`shape.rmsNormEps must be positive, not ${shape.rmsNormEps}.`);

  const architecture = options.architecture ?? "llama";
  if (architecture !== "llama" && architecture !== "qwen2")
    fail(`Unknown architecture "${String(architecture)}" (llama, qwen2).`);
  const tokenizer = options.tokenizer ?? "spm";
  if (tokenizer !== "spm" && tokenizer !== "bpe")
    fail(`Unknown tokenizer "${String(tokenizer)}" (spm, bpe).`);
  const type = options.type ?? "F32";
  if (type !== "F32" && type !== "F16") fail(`Unknown tensor type "${String(type)}" (F32, F16).`);
  const eosBoost = options.eosBoost ?? 0;
  if (!Number.isFinite(eosBoost)) fail(`eosBoost must be a finite number, not ${eosBoost}.`);
  const chatTemplate = options.chatTemplate ?? CHATML_TEMPLATE;
  if (typeof chatTemplate !== "string") fail("chatTemplate must be a string.");
  const tiedEmbeddings = options.tiedEmbeddings ?? shape.tiedEmbeddings;
  const name =
    options.name ?? `crynux-test-${shapeName}-${architecture}-${tokenizer}-${type.toLowerCase()}-seed${seed}`;
  return {
    seed,
    shapeName,
    shape,
    architecture,
    tokenizer,
    chatTemplate,
    type,
    name,
    eosBoost,
    tiedEmbeddings,
  };
}

const u32 = (value: number): GgufValue => ({ type: "u32", value });
const f32 = (value: number): GgufValue => ({ type: "f32", value });
const str = (value: string): GgufValue => ({ type: "string", value });
const bool = (value: boolean): GgufValue => ({ type: "bool", value });

function metadataFor(options: Resolved, vocabulary: TestVocabulary): [string, GgufValue][] {
  const { shape, architecture: arch } = options;
  const metadata: [string, GgufValue][] = [
    ["general.architecture", str(arch)],
    ["general.type", str("model")],
    ["general.name", str(options.name)],
    ["general.file_type", u32(options.type === "F16" ? LlamaFileType.MOSTLY_F16 : LlamaFileType.ALL_F32)],
    ["general.alignment", u32(GGUF_DEFAULT_ALIGNMENT)],
    [`${arch}.vocab_size`, u32(shape.vocab)],
    [`${arch}.context_length`, u32(shape.contextLength)],
    [`${arch}.embedding_length`, u32(shape.embedding)],
    [`${arch}.block_count`, u32(shape.layers)],
    [`${arch}.feed_forward_length`, u32(shape.feedForward)],
    [`${arch}.attention.head_count`, u32(shape.heads)],
    [`${arch}.attention.head_count_kv`, u32(shape.kvHeads)],
    [`${arch}.rope.dimension_count`, u32(shape.embedding / shape.heads)],
    [`${arch}.rope.freq_base`, f32(shape.ropeFreqBase)],
    [`${arch}.attention.layer_norm_rms_epsilon`, f32(shape.rmsNormEps)],
    ["tokenizer.ggml.model", str(vocabulary.model)],
  ];
  if (vocabulary.model === "gpt2") metadata.push(["tokenizer.ggml.pre", str("qwen2")]);
  metadata.push(["tokenizer.ggml.tokens", { type: "array", itemType: "string", value: vocabulary.tokens }]);
  if (vocabulary.scores)
    metadata.push(["tokenizer.ggml.scores", { type: "array", itemType: "f32", value: vocabulary.scores }]);
  metadata.push([
    "tokenizer.ggml.token_type",
    { type: "array", itemType: "i32", value: vocabulary.tokenTypes },
  ]);
  if (vocabulary.merges)
    metadata.push(["tokenizer.ggml.merges", { type: "array", itemType: "string", value: vocabulary.merges }]);
  metadata.push(
    ["tokenizer.ggml.bos_token_id", u32(vocabulary.ids.bos)],
    ["tokenizer.ggml.eos_token_id", u32(vocabulary.ids.eos)],
  );
  if (vocabulary.ids.unk !== undefined)
    metadata.push(["tokenizer.ggml.unknown_token_id", u32(vocabulary.ids.unk)]);
  metadata.push(
    // spm models start prompts with BOS (as Llama 2); bpe ones do not (as Qwen2.5).
    ["tokenizer.ggml.add_bos_token", bool(vocabulary.model === "llama")],
    ["tokenizer.ggml.add_eos_token", bool(false)],
    ["tokenizer.chat_template", str(options.chatTemplate)],
  );
  return metadata;
}

/** Weight init scale of the 2-D tensors and biases (as Hugging Face's `initializer_range`). */
const WEIGHT_STD = 0.02;

function tensorPlans(options: Resolved, eosId: number): TensorPlan[] {
  const { shape } = options;
  const headSize = shape.embedding / shape.heads;
  const kv = shape.kvHeads * headSize;
  const matrix = options.type === "F16" ? GgmlType.F16 : GgmlType.F32;
  const weight = (name: string, dims: number[]): TensorPlan => ({
    name,
    dims,
    type: matrix,
    mean: 0,
    std: WEIGHT_STD,
  });
  const norm = (name: string): TensorPlan => ({
    name,
    dims: [shape.embedding],
    type: GgmlType.F32,
    mean: 1,
    std: WEIGHT_STD,
  });
  const bias = (name: string, size: number): TensorPlan => ({
    name,
    dims: [size],
    type: GgmlType.F32,
    mean: 0,
    std: WEIGHT_STD,
  });
  const boost = options.eosBoost !== 0 ? { row: eosId, value: options.eosBoost } : undefined;

  const embedding = weight("token_embd.weight", [shape.embedding, shape.vocab]);
  const plans: TensorPlan[] = [];
  if (options.tiedEmbeddings) {
    plans.push(boost ? { ...embedding, boostRow: boost } : embedding, norm("output_norm.weight"));
  } else {
    const output = weight("output.weight", [shape.embedding, shape.vocab]);
    plans.push(embedding, norm("output_norm.weight"), boost ? { ...output, boostRow: boost } : output);
  }
  for (let layer = 0; layer < shape.layers; layer++) {
    const blk = `blk.${layer}`;
    plans.push(
      norm(`${blk}.attn_norm.weight`),
      weight(`${blk}.attn_q.weight`, [shape.embedding, shape.embedding]),
    );
    if (options.architecture === "qwen2") plans.push(bias(`${blk}.attn_q.bias`, shape.embedding));
    plans.push(weight(`${blk}.attn_k.weight`, [shape.embedding, kv]));
    if (options.architecture === "qwen2") plans.push(bias(`${blk}.attn_k.bias`, kv));
    plans.push(weight(`${blk}.attn_v.weight`, [shape.embedding, kv]));
    if (options.architecture === "qwen2") plans.push(bias(`${blk}.attn_v.bias`, kv));
    plans.push(
      weight(`${blk}.attn_output.weight`, [shape.embedding, shape.embedding]),
      norm(`${blk}.ffn_norm.weight`),
      weight(`${blk}.ffn_gate.weight`, [shape.embedding, shape.feedForward]),
      weight(`${blk}.ffn_up.weight`, [shape.embedding, shape.feedForward]),
      weight(`${blk}.ffn_down.weight`, [shape.feedForward, shape.embedding]),
    );
  }
  return plans;
}

/** Bytes a GGUF metadata value takes in the header. */
function valueBytes(value: GgufValue): number {
  switch (value.type) {
    case "u8":
    case "i8":
    case "bool":
      return 1;
    case "u16":
    case "i16":
      return 2;
    case "u32":
    case "i32":
    case "f32":
      return 4;
    case "u64":
    case "i64":
    case "f64":
      return 8;
    case "string":
      return 8 + Buffer.byteLength(value.value, "utf8");
    case "array": {
      let bytes = 4 + 8;
      for (const item of value.value) {
        if (typeof item === "object") bytes += valueBytes(item);
        else if (typeof item === "string") bytes += 8 + Buffer.byteLength(item, "utf8");
        else bytes += valueBytes({ type: value.itemType, value: item } as GgufValue);
      }
      return bytes;
    }
  }
}

/** Size of the GGUF v3 header (with padding) that {@link writeGguf} writes for this metadata and tensors. */
function headerBytes(metadata: readonly [string, GgufValue][], tensors: readonly TensorPlan[]): number {
  let bytes = 4 + 4 + 8 + 8;
  for (const [key, value] of metadata) bytes += 8 + Buffer.byteLength(key, "utf8") + 4 + valueBytes(value);
  for (const tensor of tensors)
    bytes += 8 + Buffer.byteLength(tensor.name, "utf8") + 4 + 8 * tensor.dims.length + 4 + 8;
  return alignUp(bytes, GGUF_DEFAULT_ALIGNMENT);
}

/**
 * Writes a random-weight GGUF model that llama.cpp loads and runs. The file is a pure function of
 * `options` (same options ⇒ byte-identical file) and appears atomically at `path` when complete.
 *
 * Tensors (GGML dim order, `dims[0]` = input features): `token_embd.weight` [embedding, vocab],
 * `output_norm.weight`, `output.weight` unless tied, and per block `attn_norm`, `attn_q`, `attn_k`, `attn_v`
 * (+ `.bias` for qwen2), `attn_output`, `ffn_norm`, `ffn_gate`, `ffn_up`, `ffn_down`. Weights and biases are
 * ≈ N(0, 0.02), norm weights ≈ N(1, 0.02), each tensor from its own xoshiro128** stream keyed by
 * (seed, tensor name).
 *
 * @param onProgress called after every chunk (≤ 4 MiB) with the bytes of the file written so far.
 * @throws {TestModelError} for invalid options.
 */
export async function generateTestModel(
  path: string,
  options: GenerateTestModelOptions,
  onProgress?: (progress: TestModelProgress) => void,
): Promise<{ path: string; bytes: number }> {
  const resolved = resolveOptions(options);
  const vocabulary = buildTestVocabulary(resolved.tokenizer, resolved.shape.vocab);
  const metadata = metadataFor(resolved, vocabulary);
  const plans = tensorPlans(resolved, vocabulary.ids.eos);

  const header = headerBytes(metadata, plans);
  const offsets: number[] = [];
  let dataBytes = 0;
  for (const plan of plans) {
    offsets.push(dataBytes);
    dataBytes = alignUp(dataBytes + tensorByteLength(plan.type, plan.dims), GGUF_DEFAULT_ALIGNMENT);
  }
  const totalBytes = header + dataBytes;

  const tensors: GgufTensorSource[] = plans.map((plan, index) => ({
    name: plan.name,
    dims: plan.dims,
    type: plan.type,
    data: () => {
      let written = header + offsets[index]!;
      return tensorChunks(plan, resolved.seed, (bytes) => {
        written += bytes;
        onProgress?.({ bytesWritten: written, totalBytes, tensor: plan.name });
      });
    },
  }));
  const { bytesWritten } = await writeGguf(path, {
    metadata,
    tensors,
    onProgress: (progress) => onProgress?.(progress),
  });
  return { path, bytes: bytesWritten };
}
