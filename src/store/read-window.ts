import type Database from "better-sqlite3";

/**
 * Shares one read transaction among all reads of one event-loop turn. In WAL mode every
 * autocommit statement takes and drops a read lock on the shared-memory index, which
 * costs several times the lookup itself; one deferred BEGIN per turn pays that once.
 * The window closes at the end of the turn (setImmediate), and before any write batch
 * begins, so reads never hold back this process's writes and a turn's reads see one
 * consistent snapshot no older than the turn.
 */
export class ReadWindow {
  private isOpen = false;

  constructor(private readonly sqlite: Database.Database) {}

  run<T>(read: () => T): T {
    if (!this.sqlite.inTransaction) {
      this.sqlite.exec("BEGIN");
      this.isOpen = true;
      setImmediate(() => this.close());
    }
    return read();
  }

  /** Ends the shared read transaction, if one is open. */
  close(): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    if (this.sqlite.inTransaction) this.sqlite.exec("COMMIT");
  }
}
