import type Database from "better-sqlite3";
import type { ReadWindow } from "./read-window.js";

interface Pending {
  work: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** The most writes that share one transaction; more wait for the next one. */
const MAX_BATCH = 512;
/** How long a batch waits for another process's write lock before its writes fail, unless configured. */
export const DEFAULT_LOCK_WAIT_MS = 5000;
const LOCK_RETRY_MS = 2;

export interface GroupCommitOptions {
  /** How long a batch waits for another process's write lock before its writes fail with SQLITE_BUSY. */
  lockWaitMs?: number;
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
 * `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint, and are answered only after
 * that COMMIT returned, that is after the WAL was fsync'd (synchronous=FULL). One fsync
 * then serves many requests instead of one, while a write that throws (a duplicate, a
 * rule that fails against current data) rolls back only its own savepoint and fails
 * only its own request.
 */
export class GroupCommit {
  /** Transactions committed and writes they carried, for tests and benchmarks. */
  readonly stats = { commits: 0, writes: 0 };
  private queue: Pending[] = [];
  private scheduled = false;
  private readonly lockWaitMs: number;

  constructor(
    private readonly sqlite: Database.Database,
    private readonly reads: ReadWindow,
    options: GroupCommitOptions = {},
  ) {
    this.lockWaitMs = options.lockWaitMs ?? DEFAULT_LOCK_WAIT_MS;
  }

  /** Runs `work` in the next shared transaction; settles once that transaction is durable. */
  run<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ work, resolve: resolve as (value: unknown) => void, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate runs after the poll phase, so every request that arrived in this turn
    // has queued its write before the batch is cut.
    setImmediate(() => {
      this.scheduled = false;
      const batch = this.queue.splice(0, MAX_BATCH);
      if (this.queue.length > 0) this.schedule();
      this.commit(batch, Date.now());
    });
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

  private commit(batch: Pending[], since: number): void {
    const db = this.sqlite;
    const outcomes: ({ ok: true; value: unknown } | { ok: false; err: unknown })[] = [];
    this.reads.close();
    try {
      db.exec("BEGIN IMMEDIATE");
    } catch (err) {
      // Another process (a second worker, the admin CLI) holds the write lock. Waiting
      // here would stall every request of this process, so the batch waits off the
      // event loop and tries again; the connection's busy_timeout is kept short.
      if (isBusy(err) && Date.now() - since < this.lockWaitMs) {
        setTimeout(() => this.commit(batch, since), LOCK_RETRY_MS);
        return;
      }
      for (const p of batch) p.reject(err);
      return;
    }
    try {
      const s = this.statements();
      for (const p of batch) {
        s.savepoint.run();
        let value: unknown;
        try {
          value = p.work();
        } catch (err) {
          // Most failures (a duplicate, a rule) leave the transaction open and undo only
          // this savepoint. Some (SQLITE_FULL, SQLITE_IOERR) make SQLite roll back the whole
          // transaction: then there is no savepoint to return to, and the writes before
          // this one are gone as well.
          if (!db.inTransaction) throw new TransactionLost(err);
          s.rollbackTo.run();
          s.release.run();
          outcomes.push({ ok: false, err });
          continue;
        }
        s.release.run();
        outcomes.push({ ok: true, value });
      }
      db.exec("COMMIT");
      this.stats.commits += 1;
      this.stats.writes += batch.length;
    } catch (caught) {
      // The transaction was lost, or COMMIT itself failed (disk full, I/O error): no write
      // of this batch can be acknowledged, so every one fails, with the error that caused
      // it (not a follow-on "no such savepoint"), and the next batch starts afresh.
      const err = caught instanceof TransactionLost ? caught.cause : caught;
      try {
        if (db.inTransaction) db.exec("ROLLBACK");
      } catch {
        // SQLite rolls back by itself when it cannot; the writes fail either way.
      }
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => {
      const o = outcomes[i]!;
      if (o.ok) p.resolve(o.value);
      else p.reject(o.err);
    });
  }
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && code.startsWith("SQLITE_BUSY");
}
