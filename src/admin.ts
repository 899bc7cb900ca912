import { fstatSync, statSync, writeSync } from "node:fs";
import { getPriority, setPriority } from "node:os";
import { resolve } from "node:path";
import Database from "better-sqlite3";
import { ConfigError, loadDatabaseFile, misspelledSettings } from "./config.js";
import { DomainError } from "./domain/errors.js";
import { checkOrganizationName, createApiToken, createOrganization, listApiTokens, listOrganizations, revokeApiToken } from "./services/accounts.js";
import { abandonCopies, backupDatabase, restoreDatabase, type BackupSummary } from "./store/backup.js";
import { convertPageSize, databasePath, migrationsFolder, openDatabase, refuseLinked, requireWritable, type Db } from "./store/database.js";
import { isBusy } from "./store/errors.js";
import { knownMigrations, NewerDatabaseError, UnknownMigrationError } from "./store/migrations.js";
import { describeStartupError } from "./startup-errors.js";

const USAGE = `usage:
  admin org create NAME
  admin org list                    name, id and creation time of each organization
  admin token create --org NAME     prints the new token alone on stdout
  admin token list --org NAME       id, creation time and state (live, or revoked and when) of each token
  admin token revoke ID
  admin db page-size                rewrites a database made with 4 KiB pages in 2 KiB ones
                                    (service stopped; needs room for a copy of the file)
  admin db backup PATH              copies the database to PATH, a new file, while the service runs
  admin db restore PATH             puts the backup at PATH in the database's place
                                    (service stopped; the database it replaces is kept aside)`;

/** Command-line administration of organizations, API tokens and the database file, against DATABASE_URL. */
async function run(args: string[]): Promise<void> {
  if (args.length === 1 && ["help", "--help", "-h"].includes(args[0]!)) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const [noun, verb, ...rest] = args;
  // Exactly `--org NAME`: anything more is a mistake better refused than ignored.
  const org = () => {
    const i = rest.indexOf("--org");
    const name = i >= 0 ? rest[i + 1] : undefined;
    if (!name) throw new UsageError("--org NAME is required");
    if (rest.length !== 2) throw new UsageError(`unexpected arguments: ${rest.filter((_, j) => j !== i && j !== i + 1).join(" ")}\n${USAGE}`);
    return name;
  };
  // The command is recognised before the database is opened, so a typo creates no file.
  let command: (db: Db) => void;
  // Only the first step of setting up before the service's first start (README, "Quick
  // start") makes a database where there is none; every other command needs one.
  let makesDatabase = false;
  if (noun === "org" && verb === "create" && rest.length === 1) {
    makesDatabase = true;
    const name = rest[0]!;
    checkOrganizationName(name); // before a database is made for it
    command = (db) => {
      const row = createOrganization(db, name);
      process.stderr.write(`created organization ${row.name} (${row.id})\n`);
    };
  } else if (noun === "org" && verb === "list" && rest.length === 0) {
    command = (db) => {
      for (const o of listOrganizations(db)) process.stdout.write(`${o.name}\t${o.id}\t${new Date(o.createdAt).toISOString()}\n`);
    };
  } else if (noun === "token" && verb === "create") {
    const name = org();
    command = (db) => {
      if (goesNowhere()) throw new UsageError("stdout goes to /dev/null (or was closed), where no one would see the new token; none was made. Run the command again with stdout going somewhere");
      const { id, token } = createApiToken(db, name);
      if (!output(`${token}\n`)) {
        // No one saw it: a live token no one holds is revoked rather than left behind.
        revokeApiToken(db, id);
        throw new Unfinished(`stdout could not be written, so the new token ${id} was revoked; run the command again with stdout going somewhere`);
      }
      process.stderr.write(`created API token ${id}; it is shown only now\n`);
    };
  } else if (noun === "token" && verb === "list") {
    const name = org();
    command = (db) => {
      for (const t of listApiTokens(db, name)) {
        const state = t.revokedAt ? `revoked ${new Date(t.revokedAt).toISOString()}` : "live";
        process.stdout.write(`${t.id}\t${new Date(t.createdAt).toISOString()}\t${state}\n`);
      }
    };
  } else if (noun === "token" && verb === "revoke" && rest.length === 1) {
    const id = rest[0]!;
    command = (db) => {
      process.stderr.write(`revoked API token ${revokeApiToken(db, id)}\n`);
    };
  } else if (noun === "db" && verb === "page-size" && rest.length === 0) {
    command = (db) => {
      const { from, to } = convertPageSize(db);
      process.stderr.write(from === to ? `pages are already ${to} bytes\n` : `pages were ${from} bytes, now ${to}\n`);
    };
  } else if (noun === "db" && (verb === "backup" || verb === "restore") && rest.length === 1) {
    // Not through openDatabase, which migrates: a backup copies the database as the running
    // service has it, and the database a restore replaces may be missing, damaged or in use.
    const databaseFile = databaseFileOfCli();
    try {
      if (verb === "backup") await backup(databaseFile, rest[0]!);
      else restore(databaseFile, rest[0]!);
    } catch (err) {
      if (err instanceof UnknownMigrationError) throw new UsageError(`DATABASE_URL: ${databaseFile}: ${err.message}; use that build's admin CLI`);
      if (err instanceof NewerDatabaseError) {
        throw new UsageError(`DATABASE_URL: ${databaseFile} was migrated by a newer release of this service (${err.message}); use that release's admin CLI`);
      }
      if (isBusy(err)) throw new UsageError(`DATABASE_URL: ${databaseFile} stayed locked by another process (an admin command, a migration) for 5 s; try again`);
      throw said(err, databaseFile);
    }
    return;
  } else {
    throw new UsageError(USAGE);
  }
  const databaseFile = databaseFileOfCli();
  // A path that names no database is a mistake (a typo, another working directory) for
  // anything but that first step: a new empty file there would take changes the service
  // never sees. The first step says where it made one, so a mistyped path shows.
  const exists = databaseThere(databaseFile);
  if (!exists && !makesDatabase) {
    throw new UsageError(`DATABASE_URL: no database at ${databaseFile}; set DATABASE_URL to the service's database file (the service, or \`admin org create\`, creates it)`);
  }
  if (!exists) process.stderr.write(`no database at ${databaseFile}: making a new one\n`);
  let db: Db;
  try {
    // A page-size conversion needs the database alone; the other commands work beside the service.
    db = openDatabase(databaseFile, { claim: noun === "db" && verb === "page-size" ? "command" : false });
  } catch (err) {
    throw said(err, databaseFile);
  }
  try {
    command(db);
  } catch (err) {
    throw said(err, databaseFile);
  } finally {
    db.$client.close();
  }
}

/**
 * DATABASE_URL as the service reads it, made absolute so that every line names the file
 * whatever the working directory. A setting that looks like it (DATABSE_URL, DB_PATH) is
 * warned of, as the service does: unset, the command goes to the default file instead.
 */
function databaseFileOfCli(): string {
  for (const { given } of misspelledSettings().filter((m) => m.meant === "DATABASE_URL")) {
    process.stderr.write(`warning: ${given} is set, but nothing reads it: did you mean DATABASE_URL?\n`);
  }
  return resolve(loadDatabaseFile());
}

class UsageError extends Error {}
/** The command began and could not finish (exit 1): what it did is undone or said. */
class Unfinished extends Error {}

/** `err` as the CLI reports it: a refusal as it is, a failure a start would explain (a file it cannot use) as that line, anything else (a bug) as it came. */
function said(err: unknown, databaseFile: string): unknown {
  if (err instanceof DomainError) return err;
  const reason = describeStartupError(err, { databaseFile });
  return reason === null ? err : new UsageError(reason);
}

/**
 * Whether a file is at the database's path. A look that fails (a folder this user cannot
 * search) is said as such, not taken for no database, as existsSync would.
 */
function databaseThere(databaseFile: string): boolean {
  try {
    return statSync(databaseFile, { throwIfNoEntry: false }) !== undefined;
  } catch (err) {
    throw said(err, databaseFile);
  }
}

/** The backup's scheduling priority (nice), lower than the service's. */
const BACKUP_NICENESS = 10;

async function backup(databaseFile: string, target: string): Promise<void> {
  if (!databaseThere(databaseFile)) throw new UsageError(`DATABASE_URL: no database at ${databaseFile}; set DATABASE_URL to the service's database file`);
  try {
    // Reading it makes SQLite's -wal and -shm beside it when the service is not running:
    // made by a user who cannot write the database, they would keep the service from it.
    requireWritable(databaseFile);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new UsageError(`DATABASE_URL: this user cannot write ${databaseFile} or beside it (${code}); run \`db backup\` as the service's user (or root), since reading the database writes SQLite's -wal and -shm files there`);
  }
  // Through another name of the file, SQLite would read another WAL than the service's (said by the caller's catch).
  refuseLinked(databasePath(databaseFile));
  const source = new Database(databaseFile, { fileMustExist: true });
  // Interrupted, the copy is removed: a hidden file the size of the database is not left behind.
  const interrupted = (signal: NodeJS.Signals) => {
    abandonCopies();
    try {
      // Closed, its -wal and -shm go with it if no one else has the database open.
      source.close();
    } catch {
      // exiting anyway
    }
    process.stderr.write(`interrupted (${signal}); no backup was made\n`);
    process.exit(128 + (signal === "SIGINT" ? 2 : signal === "SIGHUP" ? 1 : 15));
  };
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const signal of signals) process.once(signal, interrupted);
  try {
    // Beside a busy service, the copy and its check (seconds of CPU on a large database)
    // give way to it.
    setPriority(Math.max(getPriority(), BACKUP_NICENESS));
    source.pragma("busy_timeout = 5000");
    if (!knownMigrations(source, migrationsFolder())) throw new UsageError(`DATABASE_URL: ${databaseFile} is not a database of this service`);
    const made = await backupDatabase(source, target);
    process.stderr.write(`backed up to ${target}: ${describe(made)}\n`);
  } finally {
    for (const signal of signals) process.off(signal, interrupted);
    source.close();
  }
}

function restore(databaseFile: string, backupFile: string): void {
  const { replaced, strays, ...restored } = restoreDatabase(databaseFile, backupFile);
  process.stderr.write(`restored ${backupFile} to ${databaseFile}: ${describe(restored)}\n`);
  if (replaced) process.stderr.write(`the database it replaced is now ${replaced}; delete it once the restored one is known good\n`);
  if (strays.length > 0) process.stderr.write(`files SQLite had left beside it were moved aside: ${strays.join(", ")}\n`);
}

function describe(b: BackupSummary): string {
  const n = (count: number, noun: string) => `${count} ${noun}${count === 1 ? "" : "s"}`;
  return `${n(b.bytes, "byte")}; ${n(b.organizations, "organization")}, ${n(b.runners, "runner")}, ${n(b.integrations, "SCM integration")}`;
}

/**
 * Writes to stdout at once, and says whether it could: a reader that is gone (EPIPE) or a
 * closed descriptor would otherwise surface later, the token long made, as an unhandled
 * error with a stack trace. (For one short line, the first this process writes: a pipe
 * cannot be full yet, so a non-blocking stdout cannot refuse it with EAGAIN.)
 */
function output(text: string): boolean {
  try {
    const bytes = Buffer.from(text);
    for (let at = 0; at < bytes.length; ) at += writeSync(1, bytes, at);
    return true;
  } catch {
    return false;
  }
}

/** Whether stdout is /dev/null: as given (`>/dev/null`), or closed (`>&-`), which node fills with it at start. */
function goesNowhere(): boolean {
  try {
    const out = fstatSync(1);
    const nul = statSync("/dev/null");
    return out.isCharacterDevice() && out.rdev === nul.rdev;
  } catch {
    return false; // no /dev/null to compare with: the write itself still tells (see output)
  }
}

// A listing whose reader went away (`admin token list | head -1`): it changed nothing, so a line says so.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  process.stderr.write(`stdout could not be written (${err.code ?? "error"})\n`);
  process.exitCode = 1;
});

try {
  await run(process.argv.slice(2));
} catch (err) {
  if (err instanceof Unfinished) {
    process.stderr.write(`${err.message}\n`);
    process.exitCode = 1;
  } else if (err instanceof UsageError || err instanceof ConfigError || err instanceof DomainError) {
    process.stderr.write(`${err.message}\n`);
    process.exitCode = 2;
  } else {
    throw err;
  }
}
