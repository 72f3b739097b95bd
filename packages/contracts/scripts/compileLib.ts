import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";
import { ContractsError } from "../src/errors.js";

/** The only compiler release this project builds with; a different `solc` package fails the build. */
export const SOLC_VERSION = "0.8.30";
/** Compile through the IR pipeline. Off: the legacy pipeline compiles several times faster in solc-js. */
export const VIA_IR = false;
export const EVM_VERSION = "cancun";
export const OPTIMIZER_RUNS = 200;

/** Repository root (this file lives in packages/contracts/scripts). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
/** Where the Solidity sources live. */
export const SOURCES_DIR = path.join(REPO_ROOT, "contracts/src");
/** Where the generated TypeScript goes. The generator owns this folder: files it does not emit are deleted. */
export const GENERATED_DIR = path.join(REPO_ROOT, "packages/contracts/src/generated");

/** The compiler settings of every build; recorded in the generated build info. */
export const COMPILER_SETTINGS = {
  optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
  viaIR: VIA_IR,
  evmVersion: EVM_VERSION,
} as const;

/** Solidity source texts keyed by source unit name (a path relative to the repository root). */
export type SourceMap = Record<string, string>;

export type CompilerMessage = {
  severity: "error" | "warning" | "info";
  type: string;
  /** The message as solc formats it, with the source location and a code excerpt. */
  formattedMessage: string;
};

export type CompiledContract = {
  /** The Solidity contract name, e.g. `TaskQueue`. */
  name: string;
  /** The identifier used in TypeScript, e.g. `taskQueue` (exports `taskQueueAbi`, `taskQueueBytecode`). */
  camelName: string;
  /** Source unit name of the file that defines it. */
  sourceName: string;
  abi: readonly AbiItem[];
  bytecode: `0x${string}`;
};

export type CompileResult = {
  /** Full compiler version, e.g. `0.8.30+commit.73712a01.Emscripten.clang`. */
  solcVersion: string;
  settings: typeof COMPILER_SETTINGS;
  /** sha256 (hex) of the standard JSON input: every source text and the settings. */
  inputHash: string;
  /** sha256 (hex) of each source text, keyed by source unit name. */
  sourceHashes: Record<string, string>;
  /** Deployable contracts, sorted by name. */
  contracts: CompiledContract[];
  /** Warnings and infos; errors throw {@link SolidityCompileError} instead. */
  messages: CompilerMessage[];
};

// An ABI entry as solc emits it: plain JSON.
type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
type AbiItem = { [key: string]: JsonValue };

/** Thrown when solc reports errors, when the compiler is not the pinned one, or when outputs collide. */
export class SolidityCompileError extends ContractsError {
  override name = "SolidityCompileError";
}

type SolcOutput = {
  errors?: CompilerMessage[];
  sources?: Record<string, { ast?: SolcAstNode }>;
  contracts?: Record<
    string,
    Record<
      string,
      {
        abi: AbiItem[];
        evm: { bytecode: { object: string; linkReferences?: Record<string, unknown> } };
      }
    >
  >;
};
type SolcAstNode = {
  nodeType: string;
  name?: string;
  contractKind?: string;
  abstract?: boolean;
  nodes?: SolcAstNode[];
};

type Solc = {
  version(): string;
  compile(
    input: string,
    options?: { import?: (path: string) => { contents: string } | { error: string } },
  ): string;
};
const compiler = solc as unknown as Solc;

/** Fails unless the installed `solc` package is the pinned release. */
export function assertSolcVersion(version: string = compiler.version()): void {
  if (!version.startsWith(`${SOLC_VERSION}+`)) {
    throw new SolidityCompileError(
      `solc ${version} is installed but this project is pinned to ${SOLC_VERSION}`,
      `Install the pinned compiler: npm install -D -w @crynux/contracts solc@${SOLC_VERSION}`,
    );
  }
}

/** Reads every `.sol` file under `dir`, keyed by its path relative to the repository root (posix separators). */
export function readSources(dir: string = SOURCES_DIR, root: string = REPO_ROOT): SourceMap {
  const sources: SourceMap = {};
  if (!existsSync(dir)) return sources;
  const walk = (current: string): void => {
    for (const entry of readdirSync(current).sort()) {
      const full = path.join(current, entry);
      if (statSync(full).isDirectory()) walk(full);
      else if (entry.endsWith(".sol")) {
        sources[path.relative(root, full).split(path.sep).join("/")] = readFileSync(full, "utf8");
      }
    }
  };
  walk(dir);
  return sources;
}

const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");

/**
 * Compiles `sources` (all of them; relative imports between them resolve inside the map) with the pinned
 * solc and the project's settings. Any import outside the map is refused: nothing is read from disk or
 * downloaded. Throws {@link SolidityCompileError} on compiler errors.
 */
export function compileSources(sources: SourceMap): CompileResult {
  const solcVersion = compiler.version();
  assertSolcVersion(solcVersion);
  const sortedNames = Object.keys(sources).sort();
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(sortedNames.map((name) => [name, { content: sources[name]! }])),
    settings: {
      ...COMPILER_SETTINGS,
      outputSelection: {
        "*": { "": ["ast"], "*": ["abi", "evm.bytecode.object", "evm.bytecode.linkReferences"] },
      },
    },
  };
  const inputJson = JSON.stringify(input);
  if (sortedNames.length === 0) {
    // solc rejects an empty input; nothing to build is not an error.
    return {
      solcVersion,
      settings: COMPILER_SETTINGS,
      inputHash: sha256(inputJson),
      sourceHashes: {},
      contracts: [],
      messages: [],
    };
  }
  const refuseImport = (importPath: string) => ({
    error: `import "${importPath}" is not a file under contracts/src; only relative imports between the project's sources are allowed`,
  });
  const output = JSON.parse(compiler.compile(inputJson, { import: refuseImport })) as SolcOutput;

  const messages = output.errors ?? [];
  const errors = messages.filter((message) => message.severity === "error");
  if (errors.length > 0) {
    throw new SolidityCompileError(
      `solc reported ${errors.length} error${errors.length === 1 ? "" : "s"}`,
      errors.map((error) => error.formattedMessage.trimEnd()).join("\n\n"),
    );
  }

  // Interfaces, libraries and abstract contracts are not deployed; the AST tells them apart (a library has bytecode).
  const deployable = new Set<string>();
  for (const [sourceName, { ast }] of Object.entries(output.sources ?? {})) {
    for (const node of ast?.nodes ?? []) {
      if (node.nodeType === "ContractDefinition" && node.contractKind === "contract" && !node.abstract) {
        deployable.add(`${sourceName}:${node.name}`);
      }
    }
  }

  const contracts: CompiledContract[] = [];
  for (const [sourceName, byName] of Object.entries(output.contracts ?? {})) {
    for (const [name, contract] of Object.entries(byName)) {
      if (!deployable.has(`${sourceName}:${name}`) || contract.evm.bytecode.object === "") continue;
      if (Object.keys(contract.evm.bytecode.linkReferences ?? {}).length > 0) {
        throw new SolidityCompileError(
          `${name} (${sourceName}) needs linking to an external library`,
          "Make the library's functions internal so they are inlined; deployment does not link libraries.",
        );
      }
      contracts.push({
        name,
        camelName: toCamelName(name),
        sourceName,
        abi: contract.abi,
        bytecode: `0x${contract.evm.bytecode.object}`,
      });
    }
  }
  contracts.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  assertUniqueNames(contracts);

  return {
    solcVersion,
    settings: COMPILER_SETTINGS,
    inputHash: sha256(inputJson),
    sourceHashes: Object.fromEntries(sortedNames.map((name) => [name, sha256(sources[name]!)])),
    contracts,
    messages: messages.filter((message) => message.severity !== "error"),
  };
}

const RESERVED_FILE_NAMES = new Set(["index"]);

function assertUniqueNames(contracts: CompiledContract[]): void {
  const seen = new Map<string, CompiledContract>();
  for (const contract of contracts) {
    const key = contract.camelName.toLowerCase();
    const other = seen.get(key);
    if (other) {
      throw new SolidityCompileError(
        `Contracts ${other.name} (${other.sourceName}) and ${contract.name} (${contract.sourceName}) map to the same generated name`,
        "Rename one of them: generated exports are named after the contract alone.",
      );
    }
    if (RESERVED_FILE_NAMES.has(contract.camelName)) {
      throw new SolidityCompileError(
        `Contract ${contract.name} collides with the generated ${contract.camelName}.ts`,
      );
    }
    seen.set(key, contract);
  }
}

/** `TaskQueue` → `taskQueue`, `QOS` → `qos`, `ERC20Token` → `erc20Token`, `QOSManager` → `qosManager`. */
export function toCamelName(name: string): string {
  const leadingUpper = /^[A-Z0-9]+/.exec(name)?.[0] ?? "";
  if (leadingUpper.length === 0) return name;
  if (leadingUpper.length === name.length) return name.toLowerCase();
  // The last capital of a run starts the next word when a lowercase letter follows it (QOSManager).
  const next = name[leadingUpper.length]!;
  const cut = leadingUpper.length > 1 && /[a-z]/.test(next) && /[A-Z]/.test(leadingUpper.at(-1)!) ? 1 : 0;
  const lowered = leadingUpper.slice(0, leadingUpper.length - cut).toLowerCase();
  return lowered + name.slice(lowered.length);
}

// ---------------------------------------------------------------------------------------------------------
// Emitting TypeScript. The text is written already formatted the way Biome formats it (objects kept
// expanded, two-space indent, double quotes, trailing commas), so `biome check` passes without a rewrite.

const HEADER =
  "// Generated by packages/contracts/scripts/compile.ts (npm run contracts:build). Do not edit.";

// Readable key order for ABI entries (the order viem's docs use); unknown keys follow, sorted.
const KEY_ORDER = [
  "type",
  "name",
  "internalType",
  "indexed",
  "components",
  "inputs",
  "outputs",
  "stateMutability",
  "anonymous",
];

function orderedKeys(value: { [key: string]: JsonValue }): string[] {
  const known = KEY_ORDER.filter((key) => key in value);
  const rest = Object.keys(value)
    .filter((key) => !KEY_ORDER.includes(key))
    .sort();
  return [...known, ...rest];
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function emitValue(value: JsonValue, indent: string): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    if (value.some((item) => item === null || typeof item !== "object")) {
      // Primitive arrays do not occur in solc ABIs; keep them on one line if they ever do.
      return `[${value.map((item) => emitValue(item, inner)).join(", ")}]`;
    }
    return `[\n${value.map((item) => `${inner}${emitValue(item, inner)},`).join("\n")}\n${indent}]`;
  }
  const keys = orderedKeys(value);
  if (keys.length === 0) return "{}";
  const lines = keys.map((key) => {
    const printedKey = IDENTIFIER.test(key) ? key : JSON.stringify(key);
    return `${inner}${printedKey}: ${emitValue(value[key]!, inner)},`;
  });
  return `{\n${lines.join("\n")}\n${indent}}`;
}

function emitContract(contract: CompiledContract): string {
  return [
    HEADER,
    `// Source: ${contract.sourceName}`,
    'import type { Hex } from "viem";',
    "",
    `/** ABI of the \`${contract.name}\` contract. */`,
    `export const ${contract.camelName}Abi = ${emitValue(contract.abi as JsonValue, "")} as const;`,
    "",
    `/** Creation bytecode of the \`${contract.name}\` contract. */`,
    `export const ${contract.camelName}Bytecode: Hex =`,
    `  ${JSON.stringify(contract.bytecode)};`,
    "",
  ].join("\n");
}

function emitIndex(result: CompileResult): string {
  const lines = [HEADER, 'export * from "./build-info.js";'];
  for (const contract of result.contracts) lines.push(`export * from "./${contract.camelName}.js";`);
  return `${lines.join("\n")}\n`;
}

function emitBuildInfo(result: CompileResult): string {
  const info = {
    compiler: "solc",
    solcVersion: result.solcVersion,
    settings: result.settings as unknown as JsonValue,
    inputHash: result.inputHash,
    sources: result.sourceHashes,
    contracts: Object.fromEntries(result.contracts.map((contract) => [contract.name, contract.sourceName])),
  };
  return [
    HEADER,
    "",
    "/** How the generated ABIs and bytecode were built: compiler, settings and sha256 of the inputs. */",
    `export const contractsBuildInfo = ${emitBuildInfoValue(info, "")} as const;`,
    "",
  ].join("\n");
}

// Like emitValue but with the keys in the given order (build info is not an ABI).
function emitBuildInfoValue(value: JsonValue, indent: string): string {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return emitValue(value, indent);
  const keys = Object.keys(value);
  if (keys.length === 0) return "{}";
  const inner = `${indent}  `;
  const lines = keys.map((key) => {
    const printedKey = IDENTIFIER.test(key) ? key : JSON.stringify(key);
    return `${inner}${printedKey}: ${emitBuildInfoValue(value[key]!, inner)},`;
  });
  return `{\n${lines.join("\n")}\n${indent}}`;
}

/** The generated files (name relative to the generated folder → content), in a stable order. */
export function renderGenerated(result: CompileResult): Map<string, string> {
  const files = new Map<string, string>();
  files.set("build-info.ts", emitBuildInfo(result));
  for (const contract of result.contracts) files.set(`${contract.camelName}.ts`, emitContract(contract));
  files.set("index.ts", emitIndex(result));
  return new Map([...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export type GeneratedDiff = {
  /** Files whose content differs from what the compiler produces now. */
  changed: string[];
  /** Files the compiler produces that do not exist. */
  missing: string[];
  /** Files in the generated folder the compiler no longer produces. */
  stale: string[];
};

/** Compares the generated folder on disk with `files`. */
export function diffGenerated(files: Map<string, string>, dir: string = GENERATED_DIR): GeneratedDiff {
  const diff: GeneratedDiff = { changed: [], missing: [], stale: [] };
  for (const [name, content] of files) {
    const file = path.join(dir, name);
    if (!existsSync(file)) diff.missing.push(name);
    else if (readFileSync(file, "utf8") !== content) diff.changed.push(name);
  }
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) if (!files.has(name)) diff.stale.push(name);
  }
  return diff;
}

export const isUpToDate = (diff: GeneratedDiff): boolean =>
  diff.changed.length + diff.missing.length + diff.stale.length === 0;

/** Writes `files` into the generated folder (only those that changed) and deletes files it no longer produces. */
export function writeGenerated(
  files: Map<string, string>,
  dir: string = GENERATED_DIR,
): { written: string[]; removed: string[] } {
  mkdirSync(dir, { recursive: true });
  const diff = diffGenerated(files, dir);
  for (const name of diff.stale) rmSync(path.join(dir, name), { recursive: true, force: true });
  const written = [...diff.changed, ...diff.missing].sort();
  for (const name of written) writeFileSync(path.join(dir, name), files.get(name)!);
  return { written, removed: diff.stale };
}

/** Reads contracts/src, compiles it and renders the generated files, all in memory. */
export function buildGenerated(dir: string = SOURCES_DIR): {
  result: CompileResult;
  files: Map<string, string>;
} {
  const result = compileSources(readSources(dir));
  return { result, files: renderGenerated(result) };
}
