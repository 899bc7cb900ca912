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
 * The database records a migration this release does not have, older than its newest: a
 * build whose migrations differ from this release's (one made between releases, whose
 * migration was rewritten before it shipped) migrated it, and what that migration made is
 * unknown here. Refused like a newer release's database, and for the same reason.
 */
export class UnknownMigrationError extends NewerDatabaseError {
  constructor(appliedAt: number, newestKnown: number) {
    super(appliedAt, newestKnown);
    this.message = `the database has a migration of ${new Date(appliedAt).toISOString()} that differs from this release's migrations (it was migrated by another build, one made between releases)`;
  }
}

/**
 * Earlier forms of committed migrations that databases in use may record, by the time each
 * recorded: each is known to leave a database the later migrations take as they take the
 * current form's. (0003's first form also made a covering index, which 0004 rebuilds with
 * the table either way.) A migration is never to be changed once it has shipped; this is
 * for the ones that were.
 */
const EARLIER_FORMS: ReadonlyMap<number, readonly string[]> = new Map([
  [1796224048765, ["1e22fc06ea27f9bc59748b18974cbed036eda6a167cc9009278a6afd570c13d2"]],
  // 0006 as first committed (5ec23cf, 2026-12-06, with a time of its own): it added a column
  // nothing reads now (runners.stale_secrets), and the current 0006, newer, applies on top.
  // (Its second form, 83fe011's, added the column the current one adds: refused.)
  [1796551607190, ["852fd84f1c80c214399224897c4cd976098a8d7489f8fb492f6e3c213d5fbd00"]],
]);

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
    const last = refuseUnknown(sqlite, migrations);
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
  return refuseUnknown(sqlite, readMigrationFiles({ migrationsFolder })) !== null;
}

/**
 * Throws NewerDatabaseError if a newer release has migrated `sqlite`, UnknownMigrationError
 * if it records a migration this release does not have (by its time and its hash); answers
 * when the newest applied migration was made (its folder's time), or null if none is.
 */
function refuseUnknown(sqlite: Database.Database, known: { folderMillis: number; hash: string }[]): number | null {
  if (!hasMigrationsTable(sqlite)) return null;
  const applied = sqlite.prepare(`SELECT created_at, hash FROM "${TABLE}" ORDER BY created_at`).raw().all() as [number | string | null, string][];
  const newest = Math.max(0, ...known.map((m) => m.folderMillis));
  const last = applied.length === 0 || applied.at(-1)![0] === null ? null : Number(applied.at(-1)![0]);
  if (last !== null && last > newest) throw new NewerDatabaseError(last, newest);
  const hashes = new Map(known.map((m) => [m.folderMillis, [m.hash, ...(EARLIER_FORMS.get(m.folderMillis) ?? [])]]));
  for (const [at, hash] of applied) {
    if (at !== null && !(hashes.get(Number(at)) ?? EARLIER_FORMS.get(Number(at)))?.includes(hash)) throw new UnknownMigrationError(Number(at), newest);
  }
  return last;
}

function hasMigrationsTable(sqlite: Database.Database): boolean {
  return sqlite.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(TABLE) !== undefined;
}
