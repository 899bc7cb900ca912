import {
  chownSync,
  closeSync,
  existsSync,
  fchmodSync,
  fchownSync,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import Database from "better-sqlite3";
import { DomainError } from "../domain/errors.js";
import { databasePath, makeFolders, migrationsFolder, nearestFolder } from "./database.js";
import { isBusy, isDamaged, isOutOfSpace } from "./errors.js";
import { knownMigrations, NewerDatabaseError, UnknownMigrationError } from "./migrations.js";
import { claimFile, claimForCommand, inUse } from "./serving-claim.js";

/** What a backup holds, read back from the copy itself once it is made. */
export interface BackupSummary {
  bytes: number;
  organizations: number;
  runners: number;
  integrations: number;
}

/**
 * What a restore moved out of the way: the database it replaced (null where there was
 * none) and any -wal, -shm or -journal that lay beside it, each under the name it now has.
 */
export interface Replaced {
  replaced: string | null;
  strays: string[];
}

/** The files SQLite keeps beside a database, named after it. */
const COMPANIONS = ["-wal", "-shm", "-journal"] as const;

/** Pages copied between two syncs of a backup: 16 MiB of 2 KiB pages (32 of 4 KiB ones). */
const STEP_PAGES = 8192;

/**
 * Copies the database open on `source` (the admin CLI's own connection, opened without
 * migrating it) as it stands at one moment to `target`, while the service keeps serving:
 * SQLite's online backup, all of it read inside one read transaction. Writers go on
 * meanwhile; checkpoints cannot start the WAL over until the copy ends, so the WAL grows
 * for that long.
 *
 * The copy is made in a hidden folder of its own beside `target`, checked (integrity_check),
 * synced and only then linked into place, which fails if `target` has appeared meanwhile: a
 * backup that exists is whole, and no file is overwritten. Like the database, it is readable
 * by this user alone, and it holds what the database holds (token hashes, sealed secrets,
 * the keys that sign page tokens): keep it as the database is kept.
 */
export async function backupDatabase(source: Database.Database, target: string): Promise<BackupSummary> {
  // resolve() would drop the slash and make a file of the folder named.
  if (target === "" || target.endsWith("/")) throw new DomainError("invalid_argument", `"${target}" names no file; give the backup's file name`);
  const path = resolve(target);
  // Beside a database of that name, SQLite would read the backup as part of it.
  const companion = COMPANIONS.find((s) => path.endsWith(s));
  if (companion) throw new DomainError("invalid_argument", `${target}: a name ending in ${companion} is SQLite's for the file beside a database; choose another`);
  fsCall(`cannot use ${target}`, () => refuseTaken(path, target));
  const folder = dirname(path);
  if (!statSync(folder, { throwIfNoEntry: false })?.isDirectory()) throw new DomainError("failed_precondition", `the folder ${folder} does not exist`);
  const work = fsCall(`cannot write in ${folder}`, () => workFolder(folder, basename(path), "partial"));
  try {
    const partial = join(work, basename(path));
    const out = fsCall(`cannot write in ${folder}`, () => openSync(partial, "wx", 0o600));
    try {
      await copyAtOneMoment(source, partial, out, target);
      const summary = inspect(partial, target);
      fsCall(`cannot sync ${partial}`, () => fsyncSync(out));
      // A signal that came during the check above is acted on here, before the backup is named.
      await new Promise(setImmediate);
      fsCall(`cannot use ${target}`, () => refuseTaken(path, target));
      place(partial, path, target);
      fsCall(`cannot sync the folder ${folder}`, () => syncPath(folder));
      return summary;
    } finally {
      closeSync(out);
    }
  } finally {
    removeOwn(work);
  }
}

/** A backup at `path`, or a file beside it that SQLite would read into one, is refused. */
function refuseTaken(path: string, target: string): void {
  if (lstatSync(path, { throwIfNoEntry: false })) throw new DomainError("already_exists", `${target} exists; a backup never overwrites a file`);
  for (const s of COMPANIONS) {
    if (lstatSync(path + s, { throwIfNoEntry: false })) {
      throw new DomainError("already_exists", `${target}${s} exists beside it, and SQLite would read it into the backup; move it away first`);
    }
  }
}

async function copyAtOneMoment(source: Database.Database, partial: string, out: number, target: string): Promise<void> {
  source.exec("BEGIN");
  try {
    // The copy's moment: this read transaction's snapshot, which every step reads, so the
    // service's commits meanwhile do not start the copy over.
    source.prepare("SELECT count(*) FROM sqlite_master").pluck().get();
    // Synced as it goes: left to the end, the copy's hundreds of MB waited to be written
    // out ahead of the service's own syncs, and its writes stalled for as long.
    await source.backup(partial, { progress: () => (fdatasyncSync(out), STEP_PAGES) });
  } catch (err) {
    if (err instanceof Database.SqliteError || (err as NodeJS.ErrnoException).syscall === "fdatasync") {
      const code = (err as { code: string }).code;
      // Only the copy is written: a full disk is the backup's.
      if (isOutOfSpace(code)) throw new DomainError("failed_precondition", `the disk that holds ${dirname(partial)} is full (${code}); no backup was made`);
      throw new DomainError("failed_precondition", `the copy to ${target} failed (${code}); no backup was made`);
    }
    throw err;
  } finally {
    source.exec("COMMIT");
  }
}

/** Gives the finished copy its name: a hard link, which fails if that name was taken meanwhile. */
function place(from: string, to: string, shownAs: string): void {
  try {
    linkSync(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw new DomainError("already_exists", `${shownAs} exists; a backup never overwrites a file`);
    // A file system without hard links: renamed, the name checked just before (a file
    // that took it in between would be replaced).
    if (code === "EPERM" || code === "ENOTSUP" || code === "EOPNOTSUPP") return fsCall(`cannot name the backup ${shownAs}`, () => renameSync(from, to));
    throw fsError(`cannot name the backup ${shownAs}`, err);
  }
}

/**
 * Puts the backup at `source` in the place of the database at `file`, for a service that is
 * stopped. The backup is copied beside the database and checked there first (a SQLite
 * database of this service, by a release no newer than this one, that passes
 * integrity_check), so a bad one changes nothing. The database it replaces is not deleted:
 * it is folded into one file (its WAL checkpointed) and kept as `<file>.replaced-<time>`,
 * which the answer names, and the copy then takes its name in one rename. Refused while
 * another process has the database open.
 */
export function restoreDatabase(file: string, source: string): BackupSummary & Replaced {
  const from = fsCall(`cannot read ${source}`, () => {
    const found = statSync(source, { throwIfNoEntry: false });
    if (!found) throw new DomainError("not_found", `${source}: no such file`);
    if (!found.isFile()) throw new DomainError("invalid_argument", `${source} is not a regular file`);
    const real = realpathSync(source);
    // Changes in a WAL or a hot journal beside it are not in the file: a live database, or
    // one not closed cleanly. (A -shm alone is no sign: a read-only look leaves one.)
    for (const [s, what] of [["-wal", "a WAL"], ["-journal", "a rollback journal"]] as const) {
      if ((statSync(real + s, { throwIfNoEntry: false })?.size ?? 0) > 0) {
        throw new DomainError("failed_precondition", `${source} has ${what} beside it (${basename(real)}${s}): a copy of the file alone is not the database; make backups with \`admin db backup\``);
      }
    }
    return real;
  });
  const { path, itself } = fsCall(`DATABASE_URL: cannot use ${file}`, () => {
    const path = databasePath(file);
    // By file, not name: a hard link to the database is the database too (its WAL beside the other name).
    const [at, given] = [statSync(path, { throwIfNoEntry: false }), statSync(from)];
    return { path, itself: path === from || (at !== undefined && at.dev === given.dev && at.ino === given.ino) };
  });
  if (itself) throw new DomainError("invalid_argument", `${source} is the database itself`);
  const folder = dirname(path);
  // Run as root where there is no database yet, what it makes goes to the owner of the
  // folder it goes in (the nearest that exists), whom the service most likely runs as.
  const heir = process.getuid?.() === 0 ? statSync(nearestFolder(folder)) : undefined;
  const madeFolders = fsCall(`cannot create the folder ${folder}`, () => makeFolders(folder));
  if (heir) for (const d of madeFolders) fsCall(`cannot give ${d} to its owner`, () => chownSync(d, heir.uid, heir.gid));
  // Before the copy: a running service is found at once, and none can start until the restore is done.
  const claim = claimForCommand(path);
  const before = statSync(path, { throwIfNoEntry: false }) ?? (heir && { mode: 0o600, uid: heir.uid, gid: heir.gid });
  const work = fsCall(`cannot write in ${folder}`, () => workFolder(folder, basename(path), "restoring"));
  const restoring = join(work, basename(path));
  let placed = false;
  try {
    copyPrivately(from, restoring, before, source);
    const summary = inspect(restoring, source);
    fsCall(`cannot sync ${restoring}`, () => syncPath(restoring));
    const replaced = replace(path, restoring);
    placed = true;
    fsCall(`cannot sync the folder ${folder}`, () => syncPath(folder));
    return { ...summary, ...replaced };
  } finally {
    removeOwn(work);
    // A restore refused leaves nothing it made behind: neither its claim file nor a folder.
    if (!placed && claim.made) rmSync(claimFile(path), { force: true });
    if (!placed) for (const d of madeFolders.reverse()) try { rmdirSync(d); } catch { /* not empty: keep it */ }
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
    // Tables against their indexes too, which quick_check does not compare: 4 s on a
    // 700 MB database here.
    const check = conn.pragma("integrity_check", { simple: true });
    if (check !== "ok") throw new DomainError("invalid_argument", `${shownAs} is damaged: SQLite's integrity_check found faults`);
    const count = (table: string) => conn!.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
    return { bytes: statSync(file).size, organizations: count("organizations"), runners: count("runners"), integrations: count("scm_integrations") };
  } catch (err) {
    if (err instanceof UnknownMigrationError) throw new DomainError("failed_precondition", `${shownAs} cannot be restored by this release: ${err.message}`);
    if (err instanceof NewerDatabaseError) {
      throw new DomainError("failed_precondition", `${shownAs} was made by a newer release of this service (${err.message}); restore it with that release`);
    }
    if (err instanceof Database.SqliteError) {
      if (isDamaged(err.code)) {
        throw new DomainError("invalid_argument", `${shownAs} is not a readable SQLite database (${err.code})`);
      }
      // A SQLite database without this service's tables (some other program's).
      if (err.code === "SQLITE_ERROR") throw new DomainError("invalid_argument", `${shownAs} is not a database of this service`);
      if (isOutOfSpace(err.code)) throw new DomainError("failed_precondition", `the disk that holds ${dirname(file)} is full (${err.code})`);
      throw new DomainError("failed_precondition", `${shownAs} could not be checked (${err.code})`);
    }
    throw err;
  } finally {
    conn?.close();
  }
}

/**
 * Puts `restoring` in the place of the database at `path` and answers where the one it
 * replaced went, if there was one. The old one is checkpointed into one file first, which
 * also proves that no other process has it open, then linked to its new name, and the
 * copy is renamed over it: at every moment a database is at `path`. A -wal, -shm or
 * -journal left beside it (a damaged database's, or strays) goes with it, since SQLite
 * would read a stale one into the restored file.
 */
function replace(path: string, restoring: string): Replaced {
  const exists = existsSync(path);
  if (exists) {
    const old = new Database(path, { fileMustExist: true });
    try {
      // Leaving WAL mode needs the only connection: the service, if it runs, has another.
      old.pragma("journal_mode = DELETE");
    } catch (err) {
      if (isBusy(err)) throw inUse();
      // Damaged past reading (the reason for a restore, perhaps): kept as it is.
    } finally {
      old.close();
    }
  }
  const strays = COMPANIONS.filter((s) => existsSync(path + s));
  if (!exists && strays.length === 0) {
    fsCall(`cannot rename ${restoring}`, () => renameSync(restoring, path));
    return { replaced: null, strays: [] };
  }
  const aside = `${path}.replaced-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  if (exists) {
    try {
      linkSync(path, aside);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP") throw fsError(`cannot keep the database as ${aside}`, err);
      // A file system without hard links: moved, leaving the name empty for a moment.
      fsCall(`cannot keep the database as ${aside}`, () => renameSync(path, aside));
    }
  }
  // After the database's own name: until it has one, its WAL stays beside it.
  for (const s of strays) fsCall(`cannot move ${path}${s} aside`, () => renameSync(path + s, aside + s));
  fsCall(`cannot rename ${restoring}`, () => renameSync(restoring, path));
  return { replaced: exists ? aside : null, strays: strays.map((s) => aside + s) };
}

/**
 * Copies `from` to a new file readable by this user alone, or with the mode (and, run as
 * root, the owner) of the database it will replace, `like`; the caller syncs it once it
 * has been checked. copyFileSync would give it the backup's mode.
 */
function copyPrivately(from: string, to: string, like: { mode: number; uid: number; gid: number } | undefined, shownAs: string): void {
  const input = fsCall(`cannot read ${shownAs}`, () => openSync(from, "r"));
  try {
    const out = fsCall(`cannot write in ${dirname(to)}`, () => openSync(to, "wx", 0o600));
    try {
      fsCall(`cannot copy ${shownAs} to ${to}`, () => {
        if (like) {
          fchmodSync(out, like.mode & 0o777);
          const now = fstatSync(out);
          if (process.getuid?.() === 0 && (now.uid !== like.uid || now.gid !== like.gid)) fchownSync(out, like.uid, like.gid);
        }
        const chunk = Buffer.allocUnsafe(1 << 20);
        for (let n; (n = readSync(input, chunk, 0, chunk.length, null)) > 0; ) {
          for (let at = 0; at < n; ) at += writeSync(out, chunk, at, n - at);
        }
      });
    } finally {
      closeSync(out);
    }
  } finally {
    closeSync(input);
  }
}

// The work folders this process made, for removeOwn and abandonCopies.
const own = new Set<string>();

/**
 * A new hidden folder in `folder`, readable by this user alone, for a copy and the files
 * SQLite makes beside it: none of them can be reached through a name planted in a shared
 * folder (/tmp, say) once the copy's name shows there. Beside its final place, so that a
 * rename or hard link puts it there.
 */
function workFolder(folder: string, name: string, kind: string): string {
  const path = mkdtempSync(join(folder, `.${name}.${kind}-`));
  own.add(path);
  return path;
}

/** Removes a work folder of this process with what is in it; never throws. */
function removeOwn(path: string): void {
  if (!own.delete(path)) return;
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    // already gone, or not removable: nothing more to do here
  }
}

/** Removes every work folder this process made: for a backup interrupted by a signal. */
export function abandonCopies(): void {
  for (const path of [...own]) removeOwn(path);
}

/** fsync of a file or a folder (a folder's, so that a rename in it is on disk). */
function syncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Runs a file-system call, turning a refusal of the system's into a DomainError that says what could not be done. */
function fsCall<T>(what: string, call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw fsError(what, err);
  }
}

function fsError(what: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code !== "string" || !/^E[A-Z]+$/.test(code)) return err;
  return new DomainError("failed_precondition", code === "ENOSPC" ? `${what}: the disk is full (ENOSPC)` : `${what} (${code})`);
}
