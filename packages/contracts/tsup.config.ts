import { libraryConfig } from "../../tsup.config.base.js";

// Only the testing/vitest entry imports vitest; it is the test runner's, never bundled.
// src/cli/deploy.ts is the crynux-deploy bin: its `#!/usr/bin/env node` line survives bundling, and tsup
// makes an output that starts with one executable.
export default libraryConfig(
  ["src/index.ts", "src/testing/index.ts", "src/testing/vitest.ts", "src/cli/deploy.ts"],
  { external: ["vitest"] },
);
