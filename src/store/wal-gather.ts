import { existsSync } from "node:fs";
import Database from "better-sqlite3";

/** Whether this process's SQLite writes WALs through wal-gather (native/wal-gather.c), and if not, why. */
export type WalGather = { on: true } | { on: false; reason: string };

let state: WalGather | undefined;

/**
 * Loads the wal-gather VFS into this process's SQLite, once: it becomes the default VFS, so
 * every connection opened after it (this thread's and the checkpointer's alike) gathers its
 * WAL writes. A process without the library (no C compiler at install) runs as before.
 */
export function loadWalGather(library: string): WalGather {
  if (state) return state;
  if (!existsSync(library)) {
    state = { on: false, reason: `${library} was not built (npm ci builds it with the C compiler better-sqlite3 is built with)` };
    return state;
  }
  // Loading needs a connection; the VFS and the library stay once it closes.
  const boot = new Database(":memory:");
  try {
    boot.loadExtension(library); // its entry point, sqlite3_walgather_init, is named after the file
    state = { on: true };
  } catch (err) {
    state = { on: false, reason: `${library} did not load: ${err instanceof Error ? err.message : String(err)}` };
  } finally {
    boot.close();
  }
  return state;
}

/** What loadWalGather found, or undefined before it ran. */
export function walGather(): WalGather | undefined {
  return state;
}
