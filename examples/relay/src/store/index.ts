export { openBlobStore } from "./blobs.js";
export { type CachedStoreOptions, cachedStore } from "./cache.js";
export { openPgliteStore, pgliteExecutor } from "./pglite.js";
export { openPostgresStore, postgresExecutor } from "./postgres.js";
export {
  createSqlStore,
  deriveTask,
  migrate,
  SCHEMA_VERSION,
  type SqlExecutor,
  type SqlQueryable,
  TASK_ERROR_REASON,
} from "./sql.js";
export type * from "./types.js";
