import { accessSync, chownSync, closeSync, constants, existsSync, fchownSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, realpathSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { sql, type Placeholder } from "drizzle-orm";
import { drizzle, type BetterSQLite3Database } from "drizzle-orm/better-sqlite3";
import { DomainError } from "../domain/errors.js";
import { isBusy, isOutOfSpace } from "./errors.js";
import { GroupCommit, type GroupCommitOptions } from "./group-commit.js";
import { applyMigrations, ForeignDatabaseError, knownMigrations, NewerDatabaseError, refuseForeign } from "./migrations.js";
import { ReadBatch } from "./read-batch.js";
import * as schema from "./schema.js";
import { claimDatabase, claimForCommand, inUse } from "./serving-claim.js";
import { loadWalGather } from "./wal-gather.js";

export type Db = BetterSQLite3Database<typeof schema> & {
  $client: Database.Database;
  /**
   * Runs a write in the next group commit (see group-commit.ts) and settles once it is
   * durable. Every write the API acknowledges goes through here. `oneStatement`: the work
   * changes the database through one statement at most, so it needs no savepoint.
   */
  write<T>(work: () => T, options?: { oneStatement: boolean }): Promise<T>;
  /**
   * Runs reads with the others of this event-loop turn, back to back at its end, in one
   * read transaction (see read-batch.ts).
   */
  read<T>(work: () => T): Promise<T>;
  /**
   * Settles once every commit so far is on disk (see group-commit.ts); undefined when
   * they all are. Reads wait for it before they answer.
   */
  durable(): Promise<void> | undefined;
  /**
   * Set once the database could no longer be vouched for (a sync of it failed, or it read as
   * damaged): writes and reads then fail until a restart.
   */
  haltedBy(): Error | null;
  /** Makes writes and reads fail until a restart, as a failed sync of the WAL does. */
  halt(err: Error): void;
  /** Calls `listener` once writes and reads have stopped for good (at once if they have). */
  whenHalted(listener: (err: Error) => void): void;
  /** How many group commits ran and how many writes they carried. */
  commitStats(): { commits: number; writes: number; syncs: number };
  /** Which write transaction is running (inside a write): the same number means the same transaction. */
  writeTransaction(): number;
};

/** The page size of a new database (see openDatabase). */
export const PAGE_SIZE = 2048;

export interface DatabaseOptions {
  /**
   * How long a write batch waits for another process's write lock before its writes fail
   * with `unavailable` (default 5 s; see group-commit.ts).
   */
  lockWaitMs?: GroupCommitOptions["lockWaitMs"];
  /** Other processes serve from this database too (worker processes): see group-commit.ts, and the page cache's size below. */
  sharedWithProcesses?: GroupCommitOptions["sharedWithProcesses"];
  /** How the WAL is synced off the event loop; tests hold it back. */
  syncWal?: GroupCommitOptions["syncWal"];
  /**
   * Claims the database for this process before anything changes it (see serving-claim.ts):
   * throws DatabaseClaimedError while another process holds the claim, or for "command" (an
   * admin command that needs the database alone) the `inUse` refusal. Held until the
   * process exits, past this connection's close.
   */
  claim?: boolean | "command";
  /** Told before migrations are applied to a database that has some already (an upgrade), which may take a while. */
  onUpgrade?: (migrations: number) => void;
}

/**
 * Opens (creating if needed) the SQLite database at `file`, sets the pragmas every
 * connection needs and applies the committed migrations.
 */
export function openDatabase(file: string, options: DatabaseOptions = {}): Db {
  // The file a symbolic link names, one still dangling too: made through the link, O_EXCL
  // would refuse it and SQLite make it with the umask's mode.
  const path = file === ":memory:" ? file : databasePath(file);
  if (file !== ":memory:") {
    // A new database is this user's alone (SQLite gives its -wal and -shm the file's mode):
    // it holds the keys that sign page tokens and idempotency records. Existing files and
    // folders keep the mode they were given. Made by root (`admin org create` before a first
    // start, say), the file and the folders made for it go to the owner of the nearest folder
    // that was there, whom the service most likely runs as; SQLite gives -wal and -shm the
    // file's owner.
    refuseLinked(path);
    const heir = process.getuid?.() === 0 ? statSync(nearestFolder(dirname(path))) : undefined;
    const madeFolders = makeFolders(dirname(path));
    if (heir) for (const d of madeFolders) chownSync(d, heir.uid, heir.gid);
    requireWritable(file);
    let made: number | undefined;
    try {
      made = openSync(path, "wx", 0o600);
      if (heir) fchownSync(made, heir.uid, heir.gid);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      if (made !== undefined) closeSync(made);
    }
  }
  refuseForeignFile(file);
  if (options.claim === "command") claimForCommand(path);
  else if (options.claim) claimDatabase(path);
  // Before the first connection: the VFS it loads applies to connections opened after it.
  loadWalGather(walGatherLibrary());
  const sqlite = new Database(file);
  // 2 KiB pages instead of 4: a create changes a few index pages at random places, and
  // each changed page is written whole to the WAL and again by the checkpoint, so smaller
  // pages halve what a create writes (about 41 -> 24 KB under load on a million rows) with
  // reads as fast. Rows and index entries of the usual size (about 300 bytes) still fit a
  // page without overflow, which 1 KiB would not. It applies only to a new, empty file; an
  // existing database keeps its size (the admin CLI's `db page-size` converts one).
  sqlite.pragma(`page_size = ${PAGE_SIZE}`);
  // WAL lets readers run beside the writer. synchronous=FULL fsyncs the WAL on every
  // commit, so an acknowledged write survives power loss, not only a process crash; the
  // group commit syncs its batches itself, off the event loop, to the same effect.
  sqlite.pragma("journal_mode = WAL");
  sqlite.pragma("synchronous = FULL");
  sqlite.pragma("foreign_keys = ON");
  // Deleted rows are overwritten with zeros rather than left in free space: a ciphertext
  // dropped on a key change (or with its integration) must not stay in the file, where
  // the old key, if it leaked, would open it. Creates free next to nothing, so it costs them little.
  sqlite.pragma("secure_delete = ON");
  // 16 MiB of page cache (the default is 2 MiB) keeps the interior pages of every index
  // in memory. More makes creates slower: after most commits that split a page, SQLite walks
  // the whole cache (BENCHMARKS.md, "Where the remaining gap is"); at 64 MiB that cost more
  // than the cache saved. A worker process keeps half: the workers cache the same pages
  // each, and each drops its whole cache whenever another one has committed, so under
  // writes it seldom fills anyway (BENCHMARKS.md, "Both cores").
  sqlite.pragma(`cache_size = -${options.sharedWithProcesses ? 8192 : 16384}`);
  // For start-up and the admin CLI: a second process may hold the write lock for a moment.
  // The serving connection lowers it (server.ts).
  sqlite.pragma("busy_timeout = 5000");
  applyMigrations(sqlite, migrationsFolder(), options.onUpgrade);
  const orm = drizzle(sqlite, { schema });
  const reads = new ReadBatch(sqlite);
  const commits = new GroupCommit(sqlite, options);
  // The group commit keeps descriptors of the WAL open for its syncs: they close with the connection.
  const close = sqlite.close.bind(sqlite);
  sqlite.close = () => {
    commits.close();
    return close();
  };
  return Object.assign(orm, {
    write: <T>(work: () => T, options?: { oneStatement: boolean }) => commits.run(work, options?.oneStatement),
    read: <T>(work: () => T) => reads.run(work),
    durable: () => commits.durable(),
    haltedBy: () => commits.haltedBy(),
    halt: (err: Error) => commits.halt(err),
    whenHalted: (listener: (err: Error) => void) => commits.whenHalted(listener),
    commitStats: () => ({ ...commits.stats, syncs: commits.syncs() }),
    writeTransaction: () => commits.transactions,
  });
}

/**
 * Refuses another program's SQLite file, or a newer release's, before this service opens it to write: even the
 * pragmas below change a file (journal_mode = WAL), and closing a connection that could
 * write copies a WAL another program left into it. Looked at through a read-only
 * connection, which never does. A file that cannot be opened so is left to the open
 * that follows, which says what is wrong.
 */
function refuseForeignFile(file: string): void {
  if (file === ":memory:") return;
  let look: Database.Database;
  try {
    look = new Database(file, { readonly: true, fileMustExist: true });
  } catch {
    return;
  }
  try {
    refuseForeign(look, migrationsFolder());
    // A newer release's too, before the pragmas below switch its journal or leave a WAL.
    knownMigrations(look, migrationsFolder());
  } catch (err) {
    // Not a database at all (SQLITE_NOTADB) is left to `new Database` below, which reports it.
    if (err instanceof ForeignDatabaseError || err instanceof NewerDatabaseError) throw err;
  } finally {
    look.close();
  }
}

/** The database file has other names (hard links), `links` in all; `besides` are those in its own folder. */
export class LinkedDatabaseError extends Error {
  constructor(
    readonly links: number,
    readonly besides: string[],
  ) {
    super(`the file has ${links} names (hard links)`);
    this.name = "LinkedDatabaseError";
  }
}

/**
 * Throws LinkedDatabaseError when the file at `path` has other names. SQLite keeps the WAL
 * (and its index) beside the name it opened, so through two names of one file there are two
 * WALs: what is written through one is not seen through the other, and their checkpoints
 * write over each other's pages. It would also get past the claim, which is by name.
 */
export function refuseLinked(path: string): void {
  const found = statSync(path, { throwIfNoEntry: false });
  if (!found?.isFile() || found.nlink === 1) return;
  // The other names in the same folder, to say which to remove (a restore cut off between its
  // link and its rename leaves one, .replaced-TIME); the folder is read only in this case.
  const besides: string[] = [];
  try {
    for (const name of readdirSync(dirname(path))) {
      const other = join(dirname(path), name);
      if (other === path) continue;
      const s = lstatSync(other, { throwIfNoEntry: false });
      if (s?.ino === found.ino && s.dev === found.dev) besides.push(other);
    }
  } catch {
    // said without them
  }
  throw new LinkedDatabaseError(found.nlink, besides);
}

/** The nearest folder that exists at or above `folder`. */
export function nearestFolder(folder: string): string {
  let d = folder;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

/**
 * `mkdir -p`, a level at a time. Node 20's recursive mkdir tries again for ever where a level
 * cannot be made but its parent exists (under /proc, say), and a start hung there.
 */
export function makeFolders(dir: string): string[] {
  const missing: string[] = [];
  // Not existsSync, which reads a folder on the way this user cannot search as missing.
  for (let d = dir; !statSync(d, { throwIfNoEntry: false }) && dirname(d) !== d; d = dirname(d)) missing.unshift(d);
  // Nothing missing: a file in the folder's place still fails here (EEXIST), as it should.
  if (missing.length === 0) mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const d of missing) mkdirSync(d, { mode: 0o700 });
  return missing;
}

/**
 * The file SQLite opens for `given`: it follows symbolic links (dangling ones too, making
 * the file the last names) and keeps -wal and -shm beside the file they point to.
 */
export function databasePath(given: string): string {
  // Not existsSync, which reads a folder this user cannot search (EACCES) as no file.
  if (statSync(given, { throwIfNoEntry: false })) return realpathSync(given);
  // A chain of links to a file not made yet, as far as the kernel would follow one (40).
  let path = resolve(given);
  for (let hops = 0; hops < 40 && lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink(); hops++) path = resolve(dirname(path), readlinkSync(path));
  return path;
}

/**
 * Throws (EACCES, EPERM for an immutable file, EROFS) unless this process may write the
 * database, its folder (where SQLite makes the -wal and -shm files) and those files if
 * they exist. (The claim's .lock is left to the claim: commands that take none need not write it.) SQLite would open a file it may not write read-only without a word, and the
 * service would start and then fail every write; asking the kernel takes no lock, so a
 * worker starts as quickly while another writes.
 */
export function requireWritable(given: string): void {
  const file = databasePath(given);
  for (const path of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      accessSync(path, constants.R_OK | constants.W_OK);
    } catch (err) {
      // Not there (yet, or any more: the last other connection to close removes -wal and -shm).
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  accessSync(dirname(file), constants.W_OK | constants.X_OK);
}

/**
 * Rewrites a database made with another page size in PAGE_SIZE pages (VACUUM, which can
 * change the size only outside WAL mode), for the admin CLI. It needs the database to
 * itself, so the service must be stopped, and room for a second copy of the file while it
 * runs, in the temporary folder and beside the database. Returns the page size before and after.
 */
export function convertPageSize(db: Db): { from: number; to: number } {
  const sqlite = db.$client;
  const from = sqlite.pragma("page_size", { simple: true }) as number;
  if (from === PAGE_SIZE) return { from, to: from };
  try {
    sqlite.pragma("journal_mode = DELETE");
  } catch (err) {
    // Leaving WAL mode needs the only connection: another process (the service) has one.
    if (isBusy(err)) throw inUse();
    throw err;
  }
  try {
    sqlite.pragma(`page_size = ${PAGE_SIZE}`);
    sqlite.exec("VACUUM");
  } catch (err) {
    // VACUUM builds the copy in SQLite's temporary folder, then writes it back over the file.
    const code = String((err as { code?: unknown }).code);
    if (isOutOfSpace(code)) {
      throw new DomainError("resource_exhausted", `out of disk space (${code}), nothing changed: the rewrite needs room for a copy of the database both in SQLite's temporary folder (SQLITE_TMPDIR, else TMPDIR, else /var/tmp) and on the database's own disk`);
    }
    throw err;
  } finally {
    sqlite.pragma("journal_mode = WAL");
  }
  return { from, to: sqlite.pragma("page_size", { simple: true }) as number };
}

/** Where npm ci builds native/wal-gather.c (native/build.mjs): build/ beside drizzle/. */
export function walGatherLibrary(): string {
  return join(dirname(migrationsFolder()), "build", "wal-gather.so");
}

/** The committed drizzle/ folder, found from here both in src/ (tsx) and dist/src/ (built). */
export function migrationsFolder(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, "drizzle");
    if (existsSync(join(candidate, "meta", "_journal.json"))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) throw new Error("the drizzle/ migrations folder was not found");
    dir = parent;
  }
}

/**
 * Statements built once per database and reused: drizzle otherwise builds the SQL and
 * SQLite prepares it again on every call, which costs more than the lookup itself.
 */
export function prepared<T>(build: (db: Db) => T): (db: Db) => T {
  const cache = new WeakMap<Db, T>();
  return (db) => {
    let value = cache.get(db);
    if (value === undefined) {
      value = build(db);
      cache.set(db, value);
    }
    return value;
  };
}

/**
 * A row limit for drizzle's `.limit()` that SQLite does not plan with. Given a bare
 * `LIMIT ?`, SQLite (3.51 here) reads the value bound to it while planning and marks the
 * statement to be compiled again whenever that parameter is bound: a statement prepared
 * once was parsed and planned anew on every run (16% of reading a List page, in a loop).
 * `? + 0` is an expression, so the plan is made once; the rows are the same. drizzle
 * types `.limit()` as a number or a placeholder, and writes any SQL it is given.
 */
export function rowLimit(limit: number | Placeholder): Placeholder {
  return sql`${limit} + 0` as unknown as Placeholder;
}

/**
 * A better-sqlite3 statement for SQL that drizzle builds, for hot reads whose rows are
 * mapped by hand: drizzle's generic per-column mapping can cost as much as the query.
 * Placeholders become positional parameters, in the order the SQL names them.
 */
export function rawStatement(db: Db, query: { toSQL(): { sql: string } }): Database.Statement {
  return db.$client.prepare(query.toSQL().sql);
}
