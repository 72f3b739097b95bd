import { libraryConfig } from "../../tsup.config.base.js";

// Only the testing/vitest entry imports vitest; it is the test runner's, never bundled.
export default libraryConfig(["src/index.ts", "src/testing/index.ts", "src/testing/vitest.ts"], {
  external: ["vitest"],
});
