import { defineConfig, type Options } from "tsup";

/** The build every published @crynux/* package uses: ESM with .d.ts and source maps, tree-shaken. */
export function libraryConfig(entry: string[], overrides: Options = {}) {
  return defineConfig({
    entry,
    format: ["esm"],
    dts: true,
    sourcemap: true,
    clean: true,
    target: "es2022",
    treeshake: true,
    ...overrides,
  });
}
