import { defineConfig } from "vitest/config";

// Tests run against the TypeScript sources: the "source" export condition of every
// @crynux/* package points at src/, so no build is needed before `npm test`.
export default defineConfig({
  resolve: { conditions: ["source"] },
  ssr: { resolve: { conditions: ["source"] } },
  test: {
    include: [
      "packages/*/src/**/*.test.ts",
      "packages/*/test/**/*.test.ts",
      "examples/*/src/**/*.test.ts",
      "examples/*/test/**/*.test.ts",
      "test-support/**/*.test.ts",
    ],
    testTimeout: 30_000,
    pool: "forks",
  },
});
