import type Database from "better-sqlite3";
import type { ReadWindow } from "./read-window.js";

interface Pending {
  work: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** The most writes that share one transaction; more wait for the next one. */
const MAX_BATCH = 512;
/** How long a batch waits for another process's write lock before its writes fail. */
const LOCK_WAIT_MS = 5000;
const LOCK_RETRY_MS = 2;

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

  constructor(
    private readonly sqlite: Database.Database,
    private readonly reads: ReadWindow,
  ) {}

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
      if (isBusy(err) && Date.now() - since < LOCK_WAIT_MS) {
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
        try {
          outcomes.push({ ok: true, value: p.work() });
          s.release.run();
        } catch (err) {
          s.rollbackTo.run();
          s.release.run();
          outcomes.push({ ok: false, err });
        }
      }
      db.exec("COMMIT");
      this.stats.commits += 1;
      this.stats.writes += batch.length;
    } catch (err) {
      // The savepoint handling or COMMIT itself failed (disk full, I/O error): nothing of
      // this batch is durable, so every write in it fails.
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
