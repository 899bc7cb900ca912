import type Database from "better-sqlite3";

interface Pending {
  read: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * The reads of one event-loop turn run together at its end (setImmediate, after the poll
 * phase has taken in every request that arrived), back to back, in one read transaction.
 *
 * Together: answered inside the I/O callback that brought it in, each request runs the
 * whole path (HTTP, connect-node, the lookup, encoding, the write to the socket) before
 * the next one starts, and under load every stage finds its code and data evicted from the
 * CPU caches by the others. Deferred to the end of the turn, the requests of a turn pass each
 * stage one after another. Under load this roughly halved the CPU time of a Get, and a
 * no-op handler that defers its answer the same way gains as much (BENCHMARKS.md).
 *
 * One transaction: in WAL mode every autocommit statement takes and drops a read lock on
 * the shared-memory index, which costs several times a primary-key lookup; one deferred
 * BEGIN per batch pays that once. The batch commits before anything else runs, so reads
 * never hold back this process's writes, and a batch sees one consistent snapshot, taken
 * after every write this process acknowledged.
 */
export class ReadBatch {
  private queue: Pending[] = [];

  constructor(private readonly sqlite: Database.Database) {}

  run<T>(read: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const first = this.queue.push({ read, resolve: resolve as (value: unknown) => void, reject }) === 1;
      if (first) setImmediate(() => this.drain());
    });
  }

  private drain(): void {
    const batch = this.queue;
    this.queue = [];
    const db = this.sqlite;
    // Never inside another transaction: none is open between callbacks.
    const own = !db.inTransaction;
    try {
      if (own) db.exec("BEGIN");
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    for (const p of batch) {
      try {
        p.resolve(p.read());
      } catch (err) {
        p.reject(err);
      }
    }
    try {
      if (own && db.inTransaction) db.exec("COMMIT");
    } catch {
      // A read transaction has nothing to lose; its answers stand.
    }
  }
}
