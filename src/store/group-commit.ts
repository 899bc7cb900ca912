import { closeSync, fdatasync, fsyncSync, openSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { isBusy, isSyncFailure, mayHaveCommitted, OutcomeUnknown } from "./errors.js";

interface Pending {
  work: () => unknown;
  /** The work changes the database through one statement at most (see GroupCommit.run). */
  oneStatement: boolean;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  /** When it was queued: it waits for another process's write lock until lockWaitMs after. */
  queuedAt: number;
}

/** The most writes that share one transaction; more wait for the next one. */
const MAX_BATCH = 512;
/** How long a batch waits for another process's write lock before its writes fail, unless configured. */
const DEFAULT_LOCK_WAIT_MS = 5000;
/** How often writes waiting for another process's write lock try it again. */
const LOCK_RETRY_MS = 2;

export interface GroupCommitOptions {
  /** How long a batch waits for another process's write lock before its writes fail with SQLITE_BUSY. */
  lockWaitMs?: number | undefined;
  /**
   * Other processes serving from the same database write to it as this one does, syncing
   * their commits off their own event loops (worker processes). Their commits become
   * visible here before they are on disk, so an answer that shows what the database holds
   * then also waits for a sync of the WAL that began after those commits (see `durable`).
   */
  sharedWithProcesses?: boolean | undefined;
  /** The off-loop sync (fdatasync unless replaced, as tests do to hold it back). */
  syncWal?: ((fd: number, done: (err: Error | null) => void) => void) | undefined;
}

/**
 * SQLite rolled the whole transaction back on its own while a write ran in it, as it may
 * on SQLITE_FULL, SQLITE_IOERR or SQLITE_NOMEM: the writes before it in the batch are
 * undone too. Carries the error that caused it.
 */
class TransactionLost extends Error {
  constructor(override readonly cause: unknown) {
    super("the transaction was rolled back by SQLite");
  }
}

/**
 * Group commit. Writes queued during one turn of the event loop run in one
 * `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint (unless it changes the
 * database through one statement, see `run`), and are answered only once that
 * transaction is on disk. One fsync then serves many requests instead of one, while a
 * write that throws (a duplicate, a rule that fails against current data) rolls back only
 * its own changes and fails only its own request.
 *
 * The fsync runs off the event loop. The batch commits with synchronous=NORMAL, which in
 * WAL mode writes the frames without syncing them (and never corrupts the database), and
 * then the WAL file is fdatasync'd on libuv's thread pool; its writes are answered when
 * that returns. Meanwhile the event loop serves other requests and commits the next
 * batch, whose frames the next fdatasync covers (see WalSync). An answered write
 * therefore survives power loss exactly as under synchronous=FULL, without each COMMIT
 * stalling the process.
 * Commits are visible to reads before their fdatasync returns, so reads wait for it
 * (see `durable`) before they answer: nothing shown can be lost.
 */
export class GroupCommit {
  /** Transactions committed and writes they carried, for the metrics page (and tests and benchmarks). */
  readonly stats = { commits: 0, writes: 0 };
  /**
   * Counts the batches' transactions as they begin: two writes that see the same number run
   * in one transaction, which holds the write lock, so no other process wrote between them.
   */
  transactions = 0;
  private queue: Pending[] = [];
  private scheduled = false;
  /**
   * Set while another process holds the write lock: the one timer that tries it again for
   * every waiting write. Until it fires no batch is cut; new writes wait in the queue.
   */
  private retry: NodeJS.Timeout | null = null;
  private readonly lockWaitMs: number;
  private readonly wal: WalSync | null;
  /** Why writes and reads fail for good, or null while all is well. */
  private failure: Error | null = null;
  private readonly onHalt: ((err: Error) => void)[] = [];
  /**
   * With other writing processes: SQLite's count of commits made by other connections, and
   * its value when last read. It changes when this connection next begins a transaction
   * after such a commit, never for this connection's own.
   */
  private readonly dataVersion: Database.Statement | null;
  private seenVersion: unknown = undefined;

  constructor(
    private readonly sqlite: Database.Database,
    options: GroupCommitOptions = {},
  ) {
    this.lockWaitMs = options.lockWaitMs ?? DEFAULT_LOCK_WAIT_MS;
    // An in-memory database has nothing to sync: its commits are as durable as they get.
    this.wal = sqlite.memory ? null : new WalSync(`${mainFile(sqlite)}-wal`, options.syncWal ?? fdatasync, (err) => this.halt(err));
    this.dataVersion = options.sharedWithProcesses && this.wal ? sqlite.prepare("PRAGMA data_version").pluck() : null;
    this.seenVersion = this.dataVersion?.get();
  }

  /** Why writes and reads fail for good (a sync failed, or the database read as damaged), or null while all is well. */
  haltedBy(): Error | null {
    return this.failure;
  }

  /**
   * Stops every write and read for good, as a failed sync of the WAL does: what the disk
   * holds can no longer be vouched for (see WalSync). Also called when a sync of the
   * checkpointer's fails, when the database reads as damaged (errorInterceptor), and when
   * another worker gave the database up (relayHalts).
   */
  halt(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.wal?.fail(err);
    for (const listener of this.onHalt.splice(0)) listener(err);
  }

  /** Calls `listener` once writes and reads have stopped for good (at once if they have). */
  whenHalted(listener: (err: Error) => void): void {
    if (this.failure) listener(this.failure);
    else this.onHalt.push(listener);
  }

  /** Closes the descriptors the off-loop syncs use; for when the connection closes. */
  close(): void {
    this.wal?.close();
  }

  /** How many off-loop syncs finished. */
  syncs(): number {
    return this.wal?.finished ?? 0;
  }

  /**
   * Settles once every transaction committed so far is on disk; undefined when all of
   * them already are. A response that shows what the database holds waits for this.
   * Another process's commits count too (with `sharedWithProcesses`): what this process
   * read may include them, and their own syncs are not seen from here, so when another
   * process has committed since this was last asked, a sync of this process's own begins
   * and covers them (a sync of the WAL flushes every frame written to it before it began,
   * whoever wrote them). The other process commits the same way in turn; its writers wait
   * for their own syncs.
   */
  durable(): Promise<void> | undefined {
    if (this.failure) return Promise.reject(this.failure);
    if (this.dataVersion !== null) {
      const version = this.dataVersion.get();
      if (version !== this.seenVersion) {
        this.seenVersion = version;
        this.wal!.foreignCommit();
      }
    }
    return this.wal?.durable();
  }

  /**
   * Runs `work` in the next shared transaction; settles once that transaction is durable.
   * With `oneStatement`, the caller promises that `work` changes the database through one
   * statement at most, and it runs without a savepoint of its own: SQLite undoes a failed
   * statement by itself (or the whole transaction, which the batch then reports), so the
   * savepoint would only cost its two statements and a copy of every page the write
   * touches.
   * `work` may run more than once (see commit): it must keep what it decides to itself,
   * not add to state it shares with its caller, and whatever it does outside the database
   * must do no harm twice.
   */
  run<T>(work: () => T, oneStatement = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ work, oneStatement, resolve: resolve as (value: unknown) => void, reject, queuedAt: Date.now() });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.retry !== null) return;
    this.scheduled = true;
    // setImmediate runs after the poll phase, so every request that arrived in this turn
    // has queued its write before the batch is cut.
    setImmediate(() => {
      this.scheduled = false;
      if (this.retry === null) this.flush(false);
    });
  }

  /** Commits the next batch off the queue, and schedules the one after it if more wait. */
  private flush(retrying: boolean): void {
    this.commit(this.queue.splice(0, MAX_BATCH), retrying);
    if (this.queue.length > 0) this.schedule();
  }

  /**
   * BEGIN IMMEDIATE. A retry does not wait in SQLite's busy handler: that sleeps on the event
   * loop (the connection's busy_timeout, kept short for the first try), and retries every
   * LOCK_RETRY_MS slept through most of it while a lock was held.
   */
  private begin(retrying: boolean): void {
    if (!retrying) return void this.sqlite.exec("BEGIN IMMEDIATE");
    const patience = this.sqlite.pragma("busy_timeout", { simple: true }) as number;
    this.sqlite.pragma("busy_timeout = 0");
    try {
      this.sqlite.exec("BEGIN IMMEDIATE");
    } finally {
      this.sqlite.pragma(`busy_timeout = ${patience}`);
    }
  }

  /**
   * The batch found the write lock held by another process. Its writes wait off the event
   * loop, at the head of the queue, with every write that comes meanwhile: one timer tries
   * the lock for all of them (one per batch had the loop doing little else), and a write
   * that has waited lockWaitMs fails with the error.
   */
  private waitForLock(batch: Pending[], err: unknown): void {
    const now = Date.now();
    const waiting: Pending[] = [];
    for (const p of batch) {
      if (now - p.queuedAt < this.lockWaitMs) waiting.push(p);
      else p.reject(err);
    }
    this.queue.unshift(...waiting);
    if (this.retry !== null || this.queue.length === 0) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      this.flush(true);
    }, LOCK_RETRY_MS);
  }

  // Prepared once: exec() would parse the statement again for every write.
  private prepared: Record<"savepoint" | "release" | "rollbackTo", Database.Statement> | undefined;
  private statements() {
    this.prepared ??= {
      savepoint: this.sqlite.prepare("SAVEPOINT write"),
      release: this.sqlite.prepare("RELEASE write"),
      rollbackTo: this.sqlite.prepare("ROLLBACK TO write"),
    };
    return this.prepared;
  }

  /**
   * The batch's own fdatasync replaces SQLite's: it commits with synchronous=NORMAL, and
   * every other write on this connection (first start, tests) keeps FULL. SQLite takes
   * the change only outside a transaction (a PRAGMA applies as it is compiled, so it runs
   * through pragma(), not a prepared statement).
   */
  private setSync(level: "NORMAL" | "FULL"): void {
    if (this.wal && !this.sqlite.inTransaction) this.sqlite.pragma(`synchronous = ${level}`);
  }

  /** Back to FULL; a failure here must not undo the answer to a batch already decided. */
  private restoreSync(): void {
    try {
      this.setSync("FULL");
    } catch {
      // The next batch sets the level again before it begins.
    }
  }

  private commit(batch: Pending[], retrying: boolean): void {
    const db = this.sqlite;
    const outcomes: ({ ok: true; value: unknown } | { ok: false; err: unknown })[] = [];
    const s = this.statements();
    let committing = false;
    try {
      // Nothing may be committed once it can no longer be made durable.
      if (this.failure) throw this.failure;
      this.setSync("NORMAL");
      this.begin(retrying);
      this.transactions += 1;
    } catch (err) {
      // Another process (a second worker, the admin CLI) holds the write lock. Waiting
      // here would stall every request of this process, so the batch waits off the
      // event loop and tries again; the connection's busy_timeout is kept short.
      this.restoreSync();
      if (isBusy(err)) return this.waitForLock(batch, err);
      for (const p of batch) p.reject(err);
      return;
    }
    try {
      for (const p of batch) {
        const guarded = !p.oneStatement;
        if (guarded) s.savepoint.run();
        let value: unknown;
        try {
          value = p.work();
        } catch (err) {
          // Most failures (a duplicate, a rule) leave the transaction open and undo only
          // this savepoint (or, unguarded, the one failed statement). Some (SQLITE_FULL,
          // SQLITE_IOERR) make SQLite roll back the whole transaction: then there is no
          // savepoint to return to, and the writes before this one are gone as well.
          if (!db.inTransaction) throw new TransactionLost(err);
          if (guarded) {
            s.rollbackTo.run();
            s.release.run();
          }
          outcomes.push({ ok: false, err });
          continue;
        }
        if (guarded) s.release.run();
        outcomes.push({ ok: true, value });
      }
      committing = true;
      db.exec("COMMIT");
      this.stats.commits += 1;
      this.stats.writes += batch.length;
    } catch (caught) {
      const err = caught instanceof TransactionLost ? caught.cause : caught;
      try {
        if (db.inTransaction) db.exec("ROLLBACK");
      } catch {
        // SQLite rolls back by itself when it cannot; the writes fail either way.
      }
      this.restoreSync();
      if (caught instanceof TransactionLost && !isSyncFailure(err)) {
        // One write made SQLite give up the transaction as it ran (a size limit such as
        // max_page_count, memory): it fails, with the error that caused it (not a follow-on
        // "no such savepoint"). The others did nothing wrong and are undone with it, so they
        // run again, first in the next batch, rather than fail with the write they happened
        // to meet. Each round fails one write at least, so this ends. (Hence the rule in `run`: work
        // must be safe to run again.)
        const failed = outcomes.length;
        batch[failed]!.reject(err);
        this.queue.unshift(...batch.slice(0, failed), ...batch.slice(failed + 1));
        if (this.queue.length > 0) this.schedule();
        return;
      }
      // COMMIT itself failed (disk full, I/O error), or a sync inside it: no write of this
      // batch can be acknowledged, and which one made it fail cannot be told, so every one
      // fails, and the next batch starts afresh: refused, as a rule, since a failed write of
      // the WAL stops before the frame that marks the commit. Failing after that frame (see
      // mayHaveCommitted), the writes that did their work are of unknown outcome.
      const unknown = committing && mayHaveCommitted(err);
      batch.forEach((p, i) => p.reject(unknown && outcomes[i]?.ok ? new OutcomeUnknown(err) : err));
      // Should COMMIT report a failed sync (batches commit with synchronous=NORMAL, which
      // leaves syncing to WalSync), it is as final as a failed off-loop sync.
      if (isSyncFailure(err)) this.halt(err as Error);
      return;
    }
    this.restoreSync();
    const settle = () =>
      batch.forEach((p, i) => {
        const o = outcomes[i]!;
        if (o.ok) p.resolve(o.value);
        else p.reject(o.err);
      });
    // Failed writes wait for the sync too: a duplicate found against a row of the batch
    // before must not be reported before that row is on disk.
    const synced = this.wal?.afterCommit();
    if (synced === undefined) settle();
    // Committed, and perhaps on disk though the sync failed: the writes that did their work
    // are of unknown outcome; those refused changed nothing, and are refused as the service is.
    else synced.then(settle, (err: unknown) => batch.forEach((p, i) => p.reject(outcomes[i]!.ok ? new OutcomeUnknown(err) : err)));
  }
}

/** How many fdatasyncs of the WAL may run at once. */
const SYNC_SLOTS = 2;

/**
 * fdatasyncs one WAL file off the event loop. A commit is answered by the first sync that
 * started after it. Two may run at once: with one at a time, a commit made just after a
 * sync began waited for that sync to end and then for a whole one of its own; now the
 * second starts at once (create p99 at 16 connections 31.4 -> 26.8 ms, BENCHMARKS.md).
 * A sync covers every commit made before it started, so one that finishes early answers
 * them without waiting for the other.
 *
 * Each slot syncs through a descriptor of its own. Linux reports a failed writeback once
 * per open file: through one shared descriptor, of two syncs waiting for the same lost
 * page, only the first to return would hear of it, and the other would vouch for a commit
 * that is not on disk. Each descriptor hears of every failure at its next sync.
 *
 * A failed sync is final. The kernel may have dropped the pages it could not write and
 * report the next sync as a success, and the WAL's chained checksums make recovery stop
 * at the first lost frame, so nothing committed since can be vouched for: every write
 * and every read fails with `unavailable` from then on (a sync that succeeds afterwards
 * answers nothing), and the service reports itself unhealthy until it is restarted and
 * SQLite recovers from what is really on disk.
 */
class WalSync {
  /** One descriptor per slot, opened on first use; null while that slot is syncing. */
  private idle: (number | null)[] = [];
  /** Transactions committed; the most of them a started sync covers; the most a finished one does. */
  private committed = 0;
  private issued = 0;
  private synced = 0;
  private waiting: { upTo: number; resolve: () => void; reject: (err: unknown) => void }[] = [];
  /** Syncs that returned, failed ones included. */
  finished = 0;
  /** Why syncing stopped for good, once a sync failed. */
  broken: Error | null = null;
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly sync: NonNullable<GroupCommitOptions["syncWal"]>,
    private readonly onBroken: (err: Error) => void,
  ) {
    // Opened at start where the WAL exists already, so that a process short of descriptors
    // later (many clients at once) still syncs; otherwise at the first commit.
    try {
      this.open();
    } catch {
      // no WAL yet
    }
  }

  /** Counts a commit; settles once it is on disk. */
  afterCommit(): Promise<void> {
    this.committed += 1;
    return this.until(this.committed);
  }

  /** Counts another process's commit(s), made before now: the next `durable` waits for a sync that covers them. */
  foreignCommit(): void {
    this.committed += 1;
  }

  durable(): Promise<void> | undefined {
    if (this.broken) return Promise.reject(this.broken);
    return this.synced === this.committed ? undefined : this.until(this.committed);
  }

  private until(upTo: number): Promise<void> {
    if (this.broken) return Promise.reject(this.broken);
    if (this.closed) return Promise.reject(closedBeforeSync());
    return new Promise((resolve, reject) => {
      this.waiting.push({ upTo, resolve, reject });
      this.start();
    });
  }

  private start(): void {
    if (this.broken || this.closed || this.issued === this.committed) return;
    try {
      this.open();
    } catch (err) {
      // Not a failed sync: nothing was written back and lost, the process only could not
      // open a descriptor (EMFILE, say). The calls waiting now fail and may be retried; the
      // next commit or read tries again.
      const unopened = new Database.SqliteError(`the WAL could not be opened to sync it: ${err instanceof Error ? err.message : String(err)}`, "SQLITE_CANTOPEN");
      for (const w of this.waiting.splice(0)) w.reject(unopened);
      return;
    }
    const slot = this.idle.findIndex((fd) => fd !== null);
    if (slot < 0) return; // both are running; the first to finish starts the next
    const fd = this.idle[slot]!;
    this.idle[slot] = null;
    const upTo = (this.issued = this.committed);
    this.sync(fd, (err) => {
      if (this.closed) closeSync(fd);
      else this.idle[slot] = fd;
      this.finished += 1;
      if (this.broken) return;
      if (err) return this.fail(syncFailure(err));
      this.synced = Math.max(this.synced, upTo);
      const done = this.waiting.filter((w) => w.upTo <= this.synced);
      this.waiting = this.waiting.filter((w) => w.upTo > this.synced);
      for (const w of done) w.resolve();
      this.start();
    });
  }

  /**
   * Closes the idle descriptors; one still syncing is closed when its sync returns, and
   * answers the commits it covers. Commits no running sync covers fail: none will start.
   */
  close(): void {
    this.closed = true;
    for (const fd of this.idle) if (fd !== null) closeSync(fd);
    this.idle = [];
    const uncovered = this.waiting.filter((w) => w.upTo > this.issued);
    this.waiting = this.waiting.filter((w) => w.upTo <= this.issued);
    for (const w of uncovered) w.reject(closedBeforeSync());
  }

  /** Ends syncing for good: every waiting commit fails, and so does every later one. */
  fail(err: Error): void {
    if (this.broken) return;
    this.broken = err;
    for (const w of this.waiting.splice(0)) w.reject(err);
    this.onBroken(err);
  }

  /**
   * The WAL exists once the connection first read or wrote, and stays the same file while
   * this connection is open (SQLite deletes it only when the last connection closes).
   * Its directory entry is synced once, as SQLite does for a new journal.
   */
  private open(): void {
    if (this.idle.length > 0) return;
    const fds: number[] = [];
    try {
      for (let i = 0; i < SYNC_SLOTS; i++) fds.push(openSync(this.path, "r"));
      const dir = openSync(dirname(this.path), "r");
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch (err) {
      for (const fd of fds) closeSync(fd);
      throw err;
    }
    this.idle = fds;
  }
}

/** Why a commit was not answered: its connection closed before a sync covered it. */
function closedBeforeSync(): Error {
  return new Database.SqliteError("the database was closed before this write was synced to disk", "SQLITE_MISUSE");
}

/** A failed sync as the driver reports a failed fsync, so callers classify it alike (unavailable). */
function syncFailure(err: unknown): Error {
  const detail = err instanceof Error ? err.message : String(err);
  return new Database.SqliteError(`the WAL could not be synced to disk: ${detail}`, "SQLITE_IOERR_FSYNC");
}

/** The main database file as SQLite opened it (symbolic links resolved), next to which its WAL lives. */
export function mainFile(sqlite: Database.Database): string {
  const main = (sqlite.pragma("database_list") as { name: string; file: string }[]).find((d) => d.name === "main");
  return main?.file || sqlite.name;
}
