import { resolve } from "node:path";
import Database from "better-sqlite3";
import { isOutOfSpace } from "./store/errors.js";
import { MetricsListenError } from "./metrics/endpoint.js";
import { ForeignDatabaseError, NewerDatabaseError, UnknownMigrationError } from "./store/migrations.js";
import { LinkedDatabaseError } from "./store/database.js";
import { ClaimFileError, DatabaseClaimedError } from "./store/serving-claim.js";
import { describeTlsFailure } from "./transport/tls-files.js";

/** What a start needs from the configuration to explain its failures. */
export interface StartContext {
  databaseFile: string;
  host?: string;
  port?: number;
  /** Whether TLS_CERT_FILE and TLS_KEY_FILE are set. */
  tls?: boolean;
  /** Their paths, as given. */
  tlsFiles?: string[];
}

/**
 * A failure to start (a port in use, an unreadable database, a certificate that is none) as
 * one line naming what to fix, instead of a stack trace with driver text. Recognised by
 * error codes and system calls, never by message text; null for anything else, which is
 * a bug and keeps its stack.
 */
export function describeStartupError(err: unknown, at: StartContext): string | null {
  // drizzle wraps the driver's error.
  if (err instanceof Error && !(err instanceof Database.SqliteError) && err.cause instanceof Database.SqliteError) err = err.cause;
  const code = typeof (err as { code?: unknown })?.code === "string" ? (err as { code: string }).code : "";
  const where = `${at.host ?? ""}:${at.port ?? ""}`;
  if (err instanceof UnknownMigrationError) {
    return `DATABASE_URL: ${at.databaseFile} cannot be served by this release: ${err.message}; run the build that migrated it, or this release on a copy made before that build ran`;
  }
  if (err instanceof NewerDatabaseError) {
    return `DATABASE_URL: ${at.databaseFile} was upgraded by a newer release of this service (${err.message}); run that release, or this one on a copy made before the upgrade`;
  }
  if (err instanceof MetricsListenError) return err.message;
  if (err instanceof LinkedDatabaseError) {
    // Names as anyone who may write the folder chose them: quoted where they hold a control character.
    const shown = err.besides.map((name) => (/[\u0000-\u001f\u007f-\u009f]/.test(name) ? JSON.stringify(name) : name));
    const which = shown.length > 0 ? ` (beside it: ${shown.join(", ")}${shown.length < err.links - 1 ? ", and others elsewhere" : ""})` : "";
    return `DATABASE_URL: ${at.databaseFile} has ${err.links} names (hard links to one file): SQLite keeps a WAL beside each name, so what is written through one is lost to the others; remove the other names${which} (copies are made with \`admin db backup\`)`;
  }
  if (err instanceof ClaimFileError) return `DATABASE_URL: ${err.message}`;
  if (err instanceof DatabaseClaimedError) {
    return `DATABASE_URL: ${at.databaseFile} is served by another process already (another copy of this service, or an admin command that needs it alone, such as \`db restore\`; any process that holds a lock on ${err.lockFile} counts): one database, one service; for more processes, set WORKERS`;
  }
  if (err instanceof ForeignDatabaseError) {
    return `DATABASE_URL: ${at.databaseFile} is not a database of this service: ${err.message}; set DATABASE_URL to this service's database, or to a new file`;
  }
  if (err instanceof Database.SqliteError) {
    if (code === "SQLITE_NOTADB") return `DATABASE_URL: ${at.databaseFile} is not a SQLite database`;
    if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
      return `DATABASE_URL: ${at.databaseFile} is locked by another process (an admin command, or another copy of the service) for longer than a start waits`;
    }
    if (code.startsWith("SQLITE_CANTOPEN") || code.startsWith("SQLITE_READONLY") || code.startsWith("SQLITE_PERM")) {
      return notWritable(at.databaseFile, code);
    }
    if (isOutOfSpace(code)) return `DATABASE_URL: the disk that holds ${at.databaseFile} is full (${code}); free some space there and start again`;
    if (code.startsWith("SQLITE_IOERR") || code.startsWith("SQLITE_CORRUPT")) {
      return `DATABASE_URL: ${at.databaseFile} could not be read or written (${code})`;
    }
    return null;
  }
  const path = (err as { path?: unknown })?.path;
  switch ((err as { syscall?: unknown })?.syscall) {
    case "access": // the database's own check (see openDatabase)
      return notWritable(at.databaseFile, code);
    case "open": // the database file made with its mode (see openDatabase), where access() let it by
      if (typeof path === "string" && isDatabaseFile(path, at.databaseFile)) return notWritable(at.databaseFile, code);
      break;
    case "mkdir":
      return `DATABASE_URL: cannot create the folder for ${at.databaseFile} (${code})`;
    case "stat":
    case "lstat":
    case "realpath": // looking the database up (see databasePath)
      // The file, a file beside it, or a folder on its way.
      if (typeof path === "string" && (isDatabaseFile(path, at.databaseFile) || resolve(at.databaseFile).startsWith(`${resolve(path)}/`))) {
        return notFound(at.databaseFile, code);
      }
      break;
    case "listen":
    case "bind":
      if (code === "EADDRINUSE") return `PORT ${at.port}: ${where} is already in use`;
      if (code === "EACCES") return `PORT ${at.port}: no permission to listen on ${where}`;
      if (code === "EADDRNOTAVAIL") return `HOST "${at.host}" is not an address of this machine`;
      // An IPv6 zone that names no interface of this machine (fe80::1%nope).
      if (code === "EINVAL" && at.host?.includes("%")) return `HOST "${at.host}": its IPv6 zone names no network interface of this machine`;
      return null;
    case "getaddrinfo":
      return `HOST "${at.host}" does not resolve to an address (${code})`;
  }
  // Past the database's own checks, the PEM files are the files a start reads (by the path
  // it names, when a system call's error names one).
  const files = at.tlsFiles ?? [];
  const pemFile = path === undefined || files.includes(String(path));
  if (!at.tls || !(pemFile || !/^E[A-Z]+$/.test(code))) return null;
  // Which of the two, where the error's path says and the read did not (one file given as both says neither).
  if (path !== undefined && (err as { setting?: string }).setting === undefined && files[0] !== files[1]) {
    const which = files.indexOf(String(path));
    if (which >= 0) return describeTlsFailure(Object.assign(err as Error, { setting: which === 0 ? "TLS_CERT_FILE" : "TLS_KEY_FILE" }));
  }
  return describeTlsFailure(err);
}

function notFound(databaseFile: string, code: string): string {
  const why: Record<string, string> = {
    EACCES: "this user must be able to search every folder on its path",
    ENAMETOOLONG: "the name, or a part of it, is too long for the file system",
    ELOOP: "symbolic links there point in a loop, or too many in a row",
    ENOTDIR: "a part of the path is a file, not a folder",
  };
  return `DATABASE_URL: cannot look up ${databaseFile} (${code})${why[code] ? `: ${why[code]}` : ""}`;
}

function notWritable(databaseFile: string, code: string): string {
  // A name that fits, but not with -wal, -shm or .lock after it.
  if (code === "ENAMETOOLONG") return notFound(databaseFile, code);
  return `DATABASE_URL: ${databaseFile} cannot be opened for reading and writing (${code}): this user must be able to write the file, its folder, and its -wal, -shm and .lock files if they exist`;
}

/**
 * Whether `path` is the database file or one of the files beside it that belong to it (SQLite's
 * -wal, -shm and -journal, the service's .lock), not any file whose name merely begins with the
 * database's (a certificate at `x.db.crt` beside `x.db`).
 */
function isDatabaseFile(path: string, databaseFile: string): boolean {
  const file = resolve(databaseFile);
  const given = resolve(path);
  return given === file || ["-wal", "-shm", "-journal", ".lock"].some((suffix) => given === file + suffix);
}
