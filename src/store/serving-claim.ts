import { accessSync, chmodSync, closeSync, constants, existsSync, fchmodSync, fchownSync, lstatSync, openSync, statSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { DomainError } from "../domain/errors.js";
import { isBusy } from "./errors.js";

/** The database is claimed by another process: a running service, or an admin command that needs it alone. */
export class DatabaseClaimedError extends Error {
  constructor(readonly lockFile: string) {
    super(`${lockFile} is held by another process`);
    this.name = "DatabaseClaimedError";
  }
}

/** The companion file whose lock stands for the claim on the database file at `path` (symbolic links followed). */
export const claimFile = (path: string) => `${path}.lock`;

/**
 * Claims the database file at `path` (symbolic links followed; its folder is there) for this
 * process until it exits; throws DatabaseClaimedError while another process holds the claim.
 * `made`: the claim file was made by this call.
 *
 * Two services on one file would each sync only their own commits, so each could show the
 * other's before they are on disk, and neither would hear of the other's changes to tokens
 * or runner keys. Workers are not a second service: their primary holds the claim for them.
 *
 * The claim is SQLite's exclusive lock on an empty companion file, `FILE.lock`, taken and
 * never let go. It is a lock on an open file, so the kernel drops it when the process ends,
 * however it ends: no stale claim survives a crash or SIGKILL, and no process id needs
 * checking. It is the same kind of lock (fcntl) that SQLite's readers and writers of the
 * database itself rely on, so it holds wherever they do.
 */
export function claimDatabase(path: string): { made: boolean } {
  const file = claimFile(path);
  // Each pass that finds the file gone (removed as it was being claimed, see below) makes it
  // again, a few times at most.
  for (let tries = 1; ; tries++) {
    if (tries > MAX_TRIES) throw new ClaimFileError(`${file} keeps disappearing as it is claimed`);
    const made = makeClaimFile(path, file);
    const inode = statSync(file, { throwIfNoEntry: false })?.ino;
    if (inode === undefined) {
      // There and not there: a symbolic link to nothing, which no retry mends.
      if (lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink()) throw new ClaimFileError(`${file} is a symbolic link to no file; remove it`);
      continue;
    }
    // SQLite would open a file it may not write read-only without a word, and its exclusive
    // lock would then be a shared one: no claim at all.
    try {
      accessSync(file, constants.R_OK | constants.W_OK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue; // gone meanwhile
      throw err;
    }
    let conn: Database.Database;
    try {
      conn = new Database(file, { timeout: 0, fileMustExist: true });
    } catch (err) {
      if ((err as { code?: unknown }).code === "SQLITE_CANTOPEN" && !existsSync(file)) continue;
      throw err;
    }
    try {
      // Kept after the transaction's first lock; the journal in memory, so no -journal file
      // appears beside it (nothing is ever written).
      conn.pragma("locking_mode = EXCLUSIVE");
      conn.pragma("journal_mode = MEMORY");
      conn.exec("BEGIN EXCLUSIVE");
    } catch (err) {
      conn.close();
      if (isBusy(err)) throw new DatabaseClaimedError(file);
      throw err;
    }
    // A lock on a file removed meanwhile (a refused restore takes away the one it made) is
    // no claim: the next process would lock a new file of that name. Taken again then.
    if (statSync(file, { throwIfNoEntry: false })?.ino === inode) {
      held.push(conn);
      closeToReaders(path, file);
      return { made };
    }
    conn.close();
  }
}

/** How many passes a claim may take while its file vanishes under it. */
const MAX_TRIES = 20;

/** The claim file is unusable in a way a retry cannot mend. */
export class ClaimFileError extends Error {
  override readonly name = "ClaimFileError";
}

/**
 * The mode of the claim file of a database of mode `mode`: read and write for whoever may
 * write the database, nothing for the others. Whoever may open the claim file may hold a lock
 * on it, and a reader's lock would keep the service from starting.
 */
export function claimMode(mode: number): number {
  const write = mode & 0o222;
  return write | (write << 1);
}

/**
 * Takes the read bits off a claim file, made by an earlier release with the database's
 * mode, for those who may not write the database (see claimMode); best effort, as its owner
 * or root. Held now, it can be changed without a reader's lock in the way.
 */
function closeToReaders(path: string, file: string): void {
  try {
    const [database, claim] = [statSync(path), statSync(file)];
    const mode = claimMode(database.mode);
    if ((claim.mode & ~mode & 0o777) !== 0) chmodSync(file, claim.mode & mode & 0o777);
  } catch {
    // not ours to change: it stays as it was
  }
}

/**
 * Makes the claim file unless it is there; true if made. It is for whoever may write the
 * database (claimMode; this user's alone where there is no database yet); made by root (an
 * admin command), it goes to the database's owner (or its folder's), whom the service most
 * likely runs as.
 */
function makeClaimFile(path: string, file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
  try {
    const database = statSync(path, { throwIfNoEntry: false });
    if (database) fchmodSync(fd, claimMode(database.mode));
    if (process.getuid?.() === 0) {
      const owner = database ?? statSync(dirname(path));
      fchownSync(fd, owner.uid, owner.gid);
    }
  } finally {
    closeSync(fd);
  }
  return true;
}

// Referenced until the process exits, so that no collection closes them.
const held: Database.Database[] = [];

/** The refusal of an admin command that needs the database alone (restore, page-size) while the service runs. */
export const inUse = () => new DomainError("failed_precondition", "the database is in use by another process; stop the service first");

/**
 * Claims the database for an admin command that needs it alone, so that a service cannot
 * start under it: refused with `inUse` while the service (or another such command) runs.
 */
export function claimForCommand(path: string): { made: boolean } {
  try {
    return claimDatabase(path);
  } catch (err) {
    throw err instanceof DatabaseClaimedError ? inUse() : err;
  }
}
