import path from "node:path";
import { describe, expect, test } from "vitest";
import {
  buildGenerated,
  diffGenerated,
  GENERATED_DIR,
  REPO_ROOT,
  readSources,
  SOURCES_DIR,
} from "../scripts/compileLib.js";

// CI runs `npm test`: editing Solidity without `npm run contracts:build` fails here.
const hasSources = Object.keys(readSources(SOURCES_DIR)).length > 0;
if (!hasSources) {
  console.warn(
    `generated.test.ts: no .sol files under ${path.relative(REPO_ROOT, SOURCES_DIR)} yet; skipping the up-to-date check`,
  );
}

describe("generated contract bindings", () => {
  test.skipIf(!hasSources)(
    "match a fresh compile of contracts/src (run `npm run contracts:build` if this fails)",
    () => {
      const { files } = buildGenerated(SOURCES_DIR);
      const diff = diffGenerated(files, GENERATED_DIR);
      expect(diff, "packages/contracts/src/generated is out of date: run `npm run contracts:build`").toEqual({
        changed: [],
        missing: [],
        stale: [],
      });
    },
    180_000,
  );
});
