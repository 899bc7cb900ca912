import Database from "better-sqlite3";

/**
 * Whether a driver error is a UNIQUE or PRIMARY KEY violation, or a trigger that enforces
 * uniqueness where an index cannot (migration 0005: it raises SQLite's own message).
 */
export function isUniqueViolation(err: unknown): boolean {
  return (
    err instanceof Database.SqliteError &&
    (err.code === "SQLITE_CONSTRAINT_UNIQUE" ||
      err.code === "SQLITE_CONSTRAINT_PRIMARYKEY" ||
      (err.code === "SQLITE_CONSTRAINT_TRIGGER" && err.message.startsWith("UNIQUE constraint failed")))
  );
}

/** Whether a driver error is SQLITE_BUSY (or one of its extended codes): another connection holds a lock. */
export function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && code.startsWith("SQLITE_BUSY");
}

/**
 * Whether a driver error is a failed sync of the database or its WAL: what the disk holds
 * can no longer be vouched for, so the service stops writing and reading (GroupCommit.halt).
 * The checkpointer thread, whose source is a string, carries the same test as `fatal`.
 */
export function isSyncFailure(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && /^SQLITE_IOERR_(DIR_)?FSYNC/.test(code);
}

/**
 * Whether a driver error code says the database file does not read as one: a page that does
 * not parse, from failing storage (SQLite reports a read the disk refused with EIO this way)
 * or a damaged file. Writing on would build on what cannot be trusted, and every call fails
 * anyway, so the service stops as after a failed sync (GroupCommit.halt).
 */
export const isDamaged = (code: unknown) => typeof code === "string" && (code.startsWith("SQLITE_CORRUPT") || code === "SQLITE_NOTADB");

/** Why the database was given up (GroupCommit.halt), from the error's code, in words for the log. */
export function haltCause(code: unknown): string {
  return isDamaged(code) ? "the database read as damaged (failing storage, or a damaged file)" : "a sync of the database to disk failed";
}

/**
 * A write committed, or perhaps committed, but never confirmed on disk: its batch's sync
 * failed, or its COMMIT failed on an I/O error after SQLite may have written the commit's
 * frames (on a full disk, a reused WAL takes every frame and then the -shm cannot grow,
 * and recovery at the next start replays the commit). It may be stored after a restart, so
 * it is answered as neither done nor refused: a refusal invites a retry, which would make a
 * second runner where the first survived.
 */
export class OutcomeUnknown extends Error {
  constructor(cause: unknown) {
    super("the write's outcome is unknown", { cause });
    this.name = "OutcomeUnknown";
  }
}

/**
 * Whether a COMMIT that failed with this driver error may still have committed: SQLite writes
 * the commit's frames to the WAL, the last one marking the commit, and only then syncs (when
 * it does) and records the frames in the -shm. A failed write stops before that last frame;
 * a failed sync, or a -shm that cannot grow or be mapped, comes after it.
 */
export function mayHaveCommitted(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return isSyncFailure(err) || (typeof code === "string" && code.startsWith("SQLITE_IOERR_SHM"));
}

/**
 * Whether a driver error code means the disk (or a size limit) is full. SQLITE_IOERR_SHMSIZE
 * is the WAL's shared-memory file (-shm) failing to grow, which is a full disk in practice.
 */
export const isOutOfSpace = (code: string) => code === "SQLITE_FULL" || code === "SQLITE_IOERR_SHMSIZE";

/** A database failure a client should hear about as something other than `internal`. */
export interface DriverTrouble {
  reason: "resource_exhausted" | "unavailable";
  /** What happened, for the client: never the driver's own text, which can carry SQL. */
  message: string;
}

/**
 * Driver failures that are trouble with the database's surroundings rather than a bug:
 * a full disk (or size limit) is resource_exhausted; a write lock another process holds
 * too long, a file that cannot be written and a failing disk are unavailable (a retry can
 * succeed once the trouble ends), and so is a database that reads as damaged (which stops
 * the service until a restart). Null for everything else, which stays `internal`.
 */
export function classifyDriverError(err: unknown): DriverTrouble | null {
  if (!(err instanceof Database.SqliteError)) return null;
  const code = err.code;
  if (isOutOfSpace(code)) {
    return { reason: "resource_exhausted", message: "the database is out of storage space: writes are refused until space is freed, reads still work" };
  }
  if (/^SQLITE_(BUSY|LOCKED|PROTOCOL)/.test(code)) {
    return { reason: "unavailable", message: "the database is locked by another process (another worker or an admin command) for longer than this service waits; try again shortly" };
  }
  if (isSyncFailure(err)) {
    return { reason: "unavailable", message: "a sync of the database to disk failed, so what it holds cannot be vouched for: this service refuses every call until it is restarted" };
  }
  if (/^SQLITE_(READONLY|IOERR|CANTOPEN)/.test(code)) {
    return { reason: "unavailable", message: "the database file cannot be written or read at the moment (the storage refused it); try again once the storage is back" };
  }
  if (isDamaged(code)) {
    return { reason: "unavailable", message: "the database reads as damaged (failing storage, or a damaged file): this service refuses every call until it is restarted" };
  }
  if (code === "SQLITE_NOMEM") {
    return { reason: "unavailable", message: "the database ran out of memory; try again shortly" };
  }
  return null;
}
