import type Database from "better-sqlite3";
import { readMigrationFiles } from "drizzle-orm/migrator";

/** drizzle's table of applied migrations, kept in its format so drizzle-kit reads it as ever. */
const TABLE = "__drizzle_migrations";

/**
 * The database was last migrated by a newer release: this one does not know its schema, and
 * serving from it would fail writes one by one (a column it does not fill, say).
 */
export class NewerDatabaseError extends Error {
  constructor(
    readonly appliedAt: number,
    readonly newestKnown: number,
  ) {
    super(`the database has a migration of ${new Date(appliedAt).toISOString()}, newer than any this release has (${new Date(newestKnown).toISOString()})`);
  }
}

/**
 * The file is a SQLite database of something else: it has tables, and no record of this
 * service's migrations. Migrated, it would take this service's tables (and with its own
 * mode, perhaps readable by anyone, their token hashes and signing keys) beside its own.
 */
export class ForeignDatabaseError extends Error {
  constructor(
    readonly tables: string[],
    why = `it holds tables of something else (${tables.slice(0, 3).join(", ")}${tables.length > 3 ? ", ..." : ""}) and none of this service's`,
  ) {
    super(why);
  }
}

/**
 * Throws ForeignDatabaseError unless `sqlite` is empty or this service's. Its own are told
 * by their first applied migration, which is this service's first (another program using
 * drizzle has the same table of migrations, with its own). Empty is no table of anyone's
 * (SQLite's own statistics aside) and no mark another program set (application_id,
 * user_version); an empty table of migrations is what an older release, which made that
 * table before its first migration's transaction, left when stopped during it.
 */
export function refuseForeign(sqlite: Database.Database, migrationsFolder: string): void {
  const first = hasMigrationsTable(sqlite) ? sqlite.prepare(`SELECT created_at FROM "${TABLE}" ORDER BY created_at LIMIT 1`).pluck().get() : undefined;
  const applied = first !== undefined && first !== null;
  if (applied && Number(first) === Math.min(...readMigrationFiles({ migrationsFolder }).map((m) => m.folderMillis))) return;
  const names = sqlite.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name").pluck().all() as string[];
  const tables = names.filter((n) => !n.startsWith("sqlite_") && (applied || n !== TABLE));
  if (tables.length > 0) throw new ForeignDatabaseError(tables);
  if (sqlite.pragma("application_id", { simple: true }) !== 0 || sqlite.pragma("user_version", { simple: true }) !== 0) {
    throw new ForeignDatabaseError([], "it is marked as another program's (application_id or user_version)");
  }
}

/**
 * Applies the committed migrations that `sqlite` lacks, in one transaction, and refuses a
 * database that a newer release has migrated.
 *
 * drizzle's own migrate() reads what is applied before it begins its transaction, and begins
 * it deferred: two processes starting together on an older database (the service and an admin
 * command, or two workers) both applied the same migrations, and the second failed on what the
 * first had made. Here the pending migrations are read again holding the write lock. A start
 * with nothing to apply takes no lock, so a process starts while others write.
 */
export function applyMigrations(sqlite: Database.Database, migrationsFolder: string, onUpgrade?: (migrations: number) => void): void {
  const migrations = readMigrationFiles({ migrationsFolder });
  const pending = () => {
    const last = lastApplied(sqlite);
    refuseNewer(last, migrations);
    return migrations.filter((m) => last === null || last < m.folderMillis);
  };
  const due = pending().length;
  if (due === 0) return;
  // A new database takes them at once; an upgrade may rebuild a large table first.
  if (due < migrations.length) onUpgrade?.(due);
  sqlite.exec("BEGIN IMMEDIATE");
  try {
    sqlite.exec(`CREATE TABLE IF NOT EXISTS "${TABLE}" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)`);
    const record = sqlite.prepare(`INSERT INTO "${TABLE}" ("hash", "created_at") VALUES (?, ?)`);
    for (const m of pending()) {
      for (const statement of m.sql) sqlite.exec(statement);
      record.run(m.hash, m.folderMillis);
    }
    sqlite.exec("COMMIT");
  } catch (err) {
    if (sqlite.inTransaction) sqlite.exec("ROLLBACK");
    throw err;
  }
}

/**
 * Throws NewerDatabaseError if a newer release has migrated `sqlite`, and says whether it
 * is a database of this service at all (a migration applied); applies nothing.
 */
export function knownMigrations(sqlite: Database.Database, migrationsFolder: string): boolean {
  const last = lastApplied(sqlite);
  refuseNewer(last, readMigrationFiles({ migrationsFolder }));
  return last !== null;
}

function refuseNewer(last: number | null, known: { folderMillis: number }[]): void {
  const newest = Math.max(0, ...known.map((m) => m.folderMillis));
  if (last !== null && last > newest) throw new NewerDatabaseError(last, newest);
}

/** When the newest applied migration was made (its folder's time), or null if none is. */
function lastApplied(sqlite: Database.Database): number | null {
  if (!hasMigrationsTable(sqlite)) return null;
  const last = sqlite.prepare(`SELECT created_at FROM "${TABLE}" ORDER BY created_at DESC LIMIT 1`).pluck().get();
  return last === undefined || last === null ? null : Number(last);
}

function hasMigrationsTable(sqlite: Database.Database): boolean {
  return sqlite.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(TABLE) !== undefined;
}
