import { fileURLToPath } from "node:url";
import { defineConfig, mergeConfig } from "vitest/config";
import ReliabilityReporter from "./test-support/reliability-reporter.js";
import base from "./vitest.config.js";

// `npm run reliability`: the whole suite, plus a reporter that writes docs/reliability.md from the trials the
// tests recorded (test-support/reliability.ts).
const root = fileURLToPath(new URL(".", import.meta.url));
export default mergeConfig(
  base,
  defineConfig({
    test: {
      reporters: ["default", new ReliabilityReporter({ output: `${root}docs/reliability.md`, root })],
    },
  }),
);
