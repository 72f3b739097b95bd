import { PGlite } from "@electric-sql/pglite";
import { createSqlStore, type SqlExecutor, type SqlQueryable } from "./sql.js";
import type { OpenPgliteStoreOptions, RelayStore } from "./types.js";

/** Adapts PGlite to the executor the store's SQL runs on. */
export function pgliteExecutor(pg: PGlite): SqlExecutor {
  const wrap = (q: Pick<PGlite, "query">): SqlQueryable => ({
    async query<Row extends Record<string, unknown>>(text: string, params: unknown[] = []) {
      const result = await q.query<Row>(text, params);
      return { rows: result.rows };
    },
  });
  return {
    ...wrap(pg),
    transaction: (fn) => pg.transaction((tx) => fn(wrap(tx))),
    close: () => pg.close(),
  };
}

/**
 * Opens (and migrates) a relay store in PGlite, a WASM build of PostgreSQL running in this process:
 * on disk under `dataDir`, or in memory when it is not given. One process at a time may open a dataDir.
 */
export async function openPgliteStore(options: OpenPgliteStoreOptions = {}): Promise<RelayStore> {
  const pg = await PGlite.create(options.dataDir);
  try {
    return await createSqlStore(pgliteExecutor(pg));
  } catch (error) {
    await pg.close();
    throw error;
  }
}
