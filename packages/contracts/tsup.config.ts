import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts", "src/testing/index.ts", "src/testing/vitest.ts"],
  // Only the testing/vitest entry imports vitest; it is the test runner's, never bundled.
  external: ["vitest"],
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "es2022",
  treeshake: true,
});
