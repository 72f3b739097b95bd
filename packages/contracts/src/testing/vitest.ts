// Vitest helpers, in their own entry (@crynux/contracts/testing/vitest) so that importing
// @crynux/contracts/testing never loads vitest.
import { afterAll, beforeAll } from "vitest";
import { type AnvilInstance, type StartAnvilOptions, startAnvil } from "./anvil.js";

/**
 * Starts one anvil for the enclosing `describe` (or file) in `beforeAll` and stops it in `afterAll`.
 * Returns a getter, since the instance exists only once `beforeAll` ran.
 *
 * @example
 * const anvil = useAnvil();
 * test("mines", async () => {
 *   await anvil().testClient.mine({ blocks: 1 });
 * });
 */
export function useAnvil(options?: StartAnvilOptions): () => AnvilInstance {
  let instance: AnvilInstance | undefined;
  beforeAll(
    async () => {
      instance = await startAnvil(options);
    },
    (options?.startTimeoutMs ?? 20_000) + 5_000,
  );
  afterAll(async () => {
    await instance?.stop();
    instance = undefined;
  });
  return () => {
    if (!instance) throw new Error("useAnvil(): the anvil instance is only available inside tests and hooks");
    return instance;
  };
}

export * from "./index.js";
