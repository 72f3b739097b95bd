// Compiles contracts/src with the pinned solc and writes packages/contracts/src/generated.
//   npx tsx packages/contracts/scripts/compile.ts          write the generated files
//   npx tsx packages/contracts/scripts/compile.ts --check  exit 1 if they are not up to date (CI)
import path from "node:path";
import {
  buildGenerated,
  diffGenerated,
  GENERATED_DIR,
  isUpToDate,
  REPO_ROOT,
  SOURCES_DIR,
  SolidityCompileError,
  writeGenerated,
} from "./compileLib.js";

function main(argv: string[]): number {
  const unknown = argv.filter((arg) => arg !== "--check");
  if (unknown.length > 0) {
    console.error(`Unknown argument ${unknown.join(" ")}. Usage: compile.ts [--check]`);
    return 2;
  }
  const check = argv.includes("--check");
  const relative = (dir: string) => path.relative(REPO_ROOT, dir);

  const started = performance.now();
  const { result, files } = buildGenerated(SOURCES_DIR);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);

  for (const message of result.messages) console.warn(message.formattedMessage.trimEnd());
  const sourceCount = Object.keys(result.sourceHashes).length;
  console.log(
    `Compiled ${sourceCount} source file${sourceCount === 1 ? "" : "s"} from ${relative(SOURCES_DIR)} with solc ` +
      `${result.solcVersion} in ${seconds} s: ${result.contracts.map((c) => c.name).join(", ") || "no deployable contracts"}`,
  );

  if (check) {
    const diff = diffGenerated(files, GENERATED_DIR);
    if (isUpToDate(diff)) {
      console.log(`${relative(GENERATED_DIR)} is up to date.`);
      return 0;
    }
    const where = relative(GENERATED_DIR);
    for (const name of diff.changed) console.error(`  differs: ${where}/${name}`);
    for (const name of diff.missing) console.error(`  missing: ${where}/${name}`);
    for (const name of diff.stale) console.error(`  stale:   ${where}/${name}`);
    console.error("Generated contract files are out of date. Run: npm run contracts:build");
    return 1;
  }

  const { written, removed } = writeGenerated(files, GENERATED_DIR);
  const where = relative(GENERATED_DIR);
  if (written.length + removed.length === 0) console.log(`${where} already up to date.`);
  for (const name of written) console.log(`  wrote:   ${where}/${name}`);
  for (const name of removed) console.log(`  removed: ${where}/${name}`);
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (error) {
  if (error instanceof SolidityCompileError) {
    console.error(error.message);
    process.exitCode = 1;
  } else throw error;
}
