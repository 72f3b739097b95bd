import pg from "pg";
import { createSqlStore, type SqlExecutor, type SqlQueryable } from "./sql.js";
import type { OpenPostgresStoreOptions, RelayStore } from "./types.js";

/** Adapts a node-postgres pool to the executor the store's SQL runs on (the same SQL as PGlite). */
export function postgresExecutor(pool: pg.Pool): SqlExecutor {
  const wrap = (q: Pick<pg.Pool | pg.PoolClient, "query">): SqlQueryable => ({
    async query<Row extends Record<string, unknown>>(text: string, params: unknown[] = []) {
      const result = await q.query<Row>(text, params);
      return { rows: result.rows };
    },
  });
  return {
    ...wrap(pool),
    async transaction(fn) {
      // A transaction must stay on one connection, so it takes its own client from the pool.
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        const result = await fn(wrap(client));
        await client.query("COMMIT");
        client.release();
        return result;
      } catch (error) {
        // A connection whose ROLLBACK failed is in an unknown state: destroy it instead of reusing it.
        await client.query("ROLLBACK").then(
          () => client.release(),
          (rollbackError: unknown) => client.release(rollbackError instanceof Error ? rollbackError : true),
        );
        throw error;
      }
    },
    close: () => pool.end(),
  };
}

/** Opens (and migrates) a relay store in a PostgreSQL database through a node-postgres pool. */
export async function openPostgresStore(options: OpenPostgresStoreOptions): Promise<RelayStore> {
  const pool = new pg.Pool({ connectionString: options.connectionString });
  // An idle client losing its connection emits "error" on the pool; unhandled, it would end the process.
  pool.on("error", () => {});
  try {
    return await createSqlStore(postgresExecutor(pool));
  } catch (error) {
    await pool.end();
    throw error;
  }
}
