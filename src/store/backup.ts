import { closeSync, existsSync, fchmodSync, fchownSync, fdatasyncSync, fstatSync, fsyncSync, lstatSync, openSync, readSync, realpathSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import Database from "better-sqlite3";
import { DomainError } from "../domain/errors.js";
import { makeFolders, migrationsFolder, type Db } from "./database.js";
import { isBusy } from "./errors.js";
import { knownMigrations, NewerDatabaseError } from "./migrations.js";

/** What a backup holds, read back from the copy itself once it is made. */
export interface BackupSummary {
  bytes: number;
  organizations: number;
  runners: number;
  integrations: number;
}

/**
 * Copies the database, as it stands at one moment, to `target` while the service keeps
 * serving: SQLite's online backup, all of it read inside one read transaction. Writers go
 * on meanwhile; checkpoints cannot start the WAL over until the copy ends, so the WAL
 * grows for that long.
 *
 * The copy is made under a hidden name beside `target`, checked, synced and only then
 * renamed into place: a backup that exists is whole. Like the database, it is readable by
 * this user alone, and it holds what the database holds (token hashes, sealed secrets, the
 * keys that sign page tokens): keep it as the database is kept.
 */
export async function backupDatabase(db: Db, target: string): Promise<BackupSummary> {
  const path = resolve(target);
  // Beside a database of that name, SQLite would read the backup as part of it.
  const companion = /-(wal|shm|journal)$/.exec(path)?.[0];
  if (companion) throw new DomainError("invalid_argument", `${target}: a name ending in ${companion} is SQLite's for the file beside a database; choose another`);
  if (lstatSync(path, { throwIfNoEntry: false })) throw new DomainError("already_exists", `${target} exists; a backup never overwrites a file`);
  const folder = dirname(path);
  if (!statSync(folder, { throwIfNoEntry: false })?.isDirectory()) throw new DomainError("failed_precondition", `the folder ${folder} does not exist`);
  const partial = join(folder, `.${basename(path)}.${process.pid}.partial`);
  const sqlite = db.$client;
  let out: number | undefined;
  try {
    out = fsCall(`cannot write in ${folder}`, () => openSync(partial, "wx", 0o600));
    sqlite.exec("BEGIN");
    try {
      // The copy's moment: this read transaction's snapshot, which every step reads, so the
      // service's commits meanwhile do not start the copy over.
      sqlite.prepare("SELECT count(*) FROM sqlite_master").pluck().get();
      // Synced as it goes: left to the end, the copy's hundreds of MB waited to be written
      // out ahead of the service's own syncs, and its writes stalled for as long.
      await sqlite.backup(partial, { progress: () => (fdatasyncSync(out!), STEP_PAGES) });
    } finally {
      sqlite.exec("COMMIT");
    }
    const summary = inspect(partial, target);
    fsyncSync(out);
    renameSync(partial, path);
    syncFile(folder);
    return summary;
  } finally {
    if (out !== undefined) closeSync(out);
    removeWithCompanions(partial);
  }
}

/** Pages copied between two syncs of a backup: 16 MiB of 2 KiB pages. */
const STEP_PAGES = 8192;

/**
 * Puts the backup at `source` in the place of the database at `file`, for a service that is
 * stopped. The backup is copied beside the database and checked there first (a SQLite
 * database of this service, by a release no newer than this one, whose pages pass
 * quick_check), so a bad one changes nothing. The database it replaces is not deleted: it
 * is folded into one file (its WAL checkpointed) and renamed `<file>.replaced-<time>`, which
 * the answer names. Refused while another process has the database open.
 */
export function restoreDatabase(file: string, source: string): BackupSummary & { replaced: string | null } {
  const from = resolve(source);
  if (!statSync(from, { throwIfNoEntry: false })?.isFile()) throw new DomainError("not_found", `${source}: no such file`);
  // Commits in a WAL beside it are not in the file: a live database, or one not closed cleanly.
  if ((statSync(`${from}-wal`, { throwIfNoEntry: false })?.size ?? 0) > 0) {
    throw new DomainError("failed_precondition", `${source} has a WAL beside it (${basename(from)}-wal) whose commits a copy of the file alone would lose; make backups with \`admin db backup\``);
  }
  // Through a symbolic link, the file it names is replaced and the link kept.
  const path = existsSync(file) ? realpathSync(file) : resolve(file);
  if (existsSync(path) && realpathSync(from) === path) throw new DomainError("invalid_argument", `${source} is the database itself`);
  const folder = dirname(path);
  fsCall(`cannot create the folder ${folder}`, () => makeFolders(folder));
  const before = statSync(path, { throwIfNoEntry: false });
  const restoring = join(folder, `.${basename(path)}.${process.pid}.restoring`);
  try {
    copyPrivately(from, restoring, before);
    const summary = inspect(restoring, source);
    syncFile(restoring);
    const replaced = moveAside(path);
    renameSync(restoring, path);
    syncFile(folder);
    return { ...summary, replaced };
  } finally {
    removeWithCompanions(restoring);
  }
}

/**
 * Opens a copy and reads back what it holds. Throws a DomainError naming `shownAs` unless it
 * is a sound database of this service that this release can serve (a newer release's is
 * refused here rather than at the next start).
 */
function inspect(file: string, shownAs: string): BackupSummary {
  let conn: Database.Database | undefined;
  try {
    conn = new Database(file, { fileMustExist: true });
    if (!knownMigrations(conn, migrationsFolder())) throw new DomainError("invalid_argument", `${shownAs} is not a database of this service`);
    const check = conn.pragma("quick_check", { simple: true });
    if (check !== "ok") throw new DomainError("invalid_argument", `${shownAs} is damaged: SQLite's quick_check found faults`);
    const count = (table: string) => conn!.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
    return { bytes: statSync(file).size, organizations: count("organizations"), runners: count("runners"), integrations: count("scm_integrations") };
  } catch (err) {
    if (err instanceof NewerDatabaseError) {
      throw new DomainError("failed_precondition", `${shownAs} was made by a newer release of this service (${err.message}); restore it with that release`);
    }
    if (err instanceof Database.SqliteError && (err.code === "SQLITE_NOTADB" || err.code.startsWith("SQLITE_CORRUPT"))) {
      throw new DomainError("invalid_argument", `${shownAs} is not a readable SQLite database (${err.code})`);
    }
    if (err instanceof Database.SqliteError && err.code === "SQLITE_ERROR") {
      // A SQLite database without this service's tables (some other program's).
      throw new DomainError("invalid_argument", `${shownAs} is not a database of this service`);
    }
    throw err;
  } finally {
    conn?.close();
  }
}

/**
 * Moves the database at `path` out of the way, with any -wal, -shm or -journal file beside
 * it (a stale one left next to the restored file would be read into it). Checkpointing it
 * into one file first proves that no other process has it open.
 */
function moveAside(path: string): string | null {
  const companions = ["", "-wal", "-shm", "-journal"].filter((s) => existsSync(path + s));
  if (companions.length === 0) return null;
  if (companions.includes("")) {
    const old = new Database(path, { fileMustExist: true });
    try {
      // Leaving WAL mode needs the only connection: the service, if it runs, has another.
      old.pragma("journal_mode = DELETE");
    } catch (err) {
      if (isBusy(err)) throw new DomainError("failed_precondition", "the database is in use by another process; stop the service first");
      // Damaged past reading (the reason for a restore, perhaps): moved aside as it is.
    } finally {
      old.close();
    }
  }
  const aside = `${path}.replaced-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  for (const s of ["", "-wal", "-shm", "-journal"]) if (existsSync(path + s)) renameSync(path + s, aside + s);
  return existsSync(aside) ? aside : null;
}

/**
 * Copies `from` to a new file readable by this user alone (or with the mode and owner of the
 * database it will replace, `like`), synced. copyFileSync would give it the backup's mode.
 */
function copyPrivately(from: string, to: string, like: { mode: number; uid: number; gid: number } | undefined): void {
  const out = fsCall(`cannot write in ${dirname(to)}`, () => openSync(to, "wx", 0o600));
  const input = openSync(from, "r");
  try {
    if (like) {
      fchmodSync(out, like.mode & 0o777);
      if (process.getuid?.() === 0 && fstatSync(out).uid !== like.uid) fchownSync(out, like.uid, like.gid);
    }
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (let n; (n = readSync(input, chunk, 0, chunk.length, null)) > 0; ) {
      for (let at = 0; at < n; ) at += writeSync(out, chunk, at, n - at);
    }
    fsyncSync(out);
  } finally {
    closeSync(input);
    closeSync(out);
  }
}

/** fsync of a file or a folder (a folder's, so that a rename in it is on disk). */
function syncFile(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function removeWithCompanions(path: string): void {
  for (const s of ["", "-wal", "-shm", "-journal"]) rmSync(path + s, { force: true });
}

/** Runs a file-system call, turning a refusal of the system's into a DomainError that says what could not be done. */
function fsCall<T>(what: string, call: () => T): T {
  try {
    return call();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === "string" && /^E[A-Z]+$/.test(code)) throw new DomainError("failed_precondition", `${what} (${code})`);
    throw err;
  }
}
