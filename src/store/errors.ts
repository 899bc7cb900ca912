import Database from "better-sqlite3";

/** Whether a driver error is a UNIQUE or PRIMARY KEY violation. */
export function isUniqueViolation(err: unknown): boolean {
  return (
    err instanceof Database.SqliteError &&
    (err.code === "SQLITE_CONSTRAINT_UNIQUE" || err.code === "SQLITE_CONSTRAINT_PRIMARYKEY")
  );
}

/**
 * Driver failures a client should hear about as something other than `internal`:
 * a full disk is resource_exhausted, a busy, locked, read-only or failing database is
 * unavailable (worth a retry once the trouble ends). Null for everything else.
 */
export function classifyDriverError(err: unknown): "resource_exhausted" | "unavailable" | null {
  if (!(err instanceof Database.SqliteError)) return null;
  const code = err.code;
  if (code === "SQLITE_FULL") return "resource_exhausted";
  if (/^SQLITE_(BUSY|LOCKED|READONLY|IOERR|CANTOPEN|PROTOCOL)/.test(code)) return "unavailable";
  return null;
}
