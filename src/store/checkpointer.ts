import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { Logger } from "../log.js";
import type { Db } from "./database.js";

/**
 * How often the checkpointer copies the WAL back into the database file. Often, so that
 * little is left to copy when the WAL is reset, which is done holding the write lock: at
 * 250 ms a reset stalled the writes for up to ~140 ms (create p99 at concurrency 16 about
 * 100 ms); at 50 ms, about 25 ms, at the same throughput.
 */
const INTERVAL_MS = 50;

/** WAL frames (pages) past which the checkpointer also resets the WAL: 32 MiB of 2 KiB pages (64 MiB in an older database with 4 KiB ones). */
const RESET_FRAMES = 16_384;

// Runs in a worker thread with its own connection. PASSIVE never waits for readers or
// the writer; it syncs the WAL, copies what it can into the database file and, only when
// that was everything, syncs the database file too, all off the event loop.
// Under steady load some reader or writer is always active, so the WAL is never found
// idle and would only grow; past resetFrames a RESTART checkpoint waits (50 ms at most, in
// this thread) for a quiet moment and starts it over from its beginning. (RESTART, not
// TRUNCATE: the file keeps its size, so the syncs of the frames written over it have no
// file size to record.) Writers meanwhile get SQLITE_BUSY, which the group commit answers
// by retrying off the event loop.
// The RESTART syncs the database file while it holds the write lock, and the PASSIVE
// rounds before it left that file unsynced, so the thread first syncs the file itself,
// holding nothing: the RESTART then has little left to flush (under creates at concurrency
// 16 it took 8 ms at the median instead of 14, and at most 29 instead of 60). That sync
// takes tens of milliseconds under load, and the commits made meanwhile would be copied and
// synced under the lock, so a second PASSIVE copies them first and a second sync, short now,
// flushes them (create p99 at 16: 23.8 against 26.9 ms, median of 9 alternating pairs).
// A checkpoint that fails for another reason (disk full, file not writable) is tried again
// at the next interval; the WAL keeps every commit meanwhile.
const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const { closeSync, fdatasyncSync, openSync } = require("node:fs");
const Database = require(workerData.driver);
const connect = () => {
  const db = new Database(workerData.file);
  db.pragma("busy_timeout = 0");
  return db;
};
let db = connect();
let file = null; // the database file, opened for syncing only
// Only to shorten the RESTART, which syncs the file again itself and reports real trouble
// (each open descriptor is told of a failed write), so a failure here changes nothing.
const syncAhead = () => {
  try { file = file === null ? openSync(workerData.file, "r") : file; fdatasyncSync(file); return true; } catch { return false; }
};
const busy = (err) => String(err && err.code).startsWith("SQLITE_BUSY");
let failing = null;
// The WAL's length when a RESTART last finished. Until a write starts the WAL over, a
// checkpoint finds it just as long, and there is nothing more to do.
let restartedAt = -1;
const timer = setInterval(() => {
  try {
    db = db || connect();
    const [state] = db.pragma("wal_checkpoint(PASSIVE)");
    if (state.log > workerData.resetFrames && state.log !== restartedAt) {
      const start = performance.now();
      let syncedAhead = syncAhead();
      if (syncedAhead) {
        db.pragma("wal_checkpoint(PASSIVE)");
        syncedAhead = syncAhead();
      }
      const synced = performance.now();
      db.pragma("busy_timeout = 50");
      let restart;
      try { [restart] = db.pragma("wal_checkpoint(RESTART)"); } finally { db.pragma("busy_timeout = 0"); }
      restartedAt = restart.busy === 0 ? state.log : -1;
      parentPort.postMessage({ restart: { frames: state.log, done: restart.busy === 0, syncedAhead, syncMs: synced - start, restartMs: performance.now() - synced } });
    }
    if (failing !== null) { failing = null; parentPort.postMessage({ failing: null }); }
  } catch (err) {
    if (busy(err)) return;
    // A full disk or a file that cannot be written: tell the service (once per kind of
    // trouble, not every interval) and try again next time on a fresh connection, since
    // one opened while the file was not writable stays read-only.
    const code = String((err && err.code) || (err && err.name) || "error");
    if (code !== failing) { failing = code; parentPort.postMessage({ failing: code, detail: String(err && err.message) }); }
    try { if (db) db.close(); } catch {}
    try { if (file !== null) closeSync(file); } catch {}
    db = null;
    file = null;
  }
}, workerData.intervalMs);
parentPort.on("message", () => {
  clearInterval(timer);
  if (db) db.close();
  if (file !== null) closeSync(file);
  process.exit(0);
});
`;

type CheckpointerMessage =
  | { failing: string | null; detail?: string }
  | { restart: { frames: number; done: boolean; syncedAhead: boolean; syncMs: number; restartMs: number } };

/**
 * Moves WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the
 * COMMIT that crosses its threshold, copying pages and fsyncing the database file while
 * every request waits; here the serving connection turns it off and a worker thread
 * checkpoints instead. Should the thread fail, the automatic checkpoint comes back.
 */
export function startCheckpointer(db: Db, log: Logger, options: { resetFrames?: number } = {}): { stop(): Promise<void> } {
  const sqlite = db.$client;
  if (sqlite.memory) return { stop: async () => {} };
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { file: sqlite.name, driver, intervalMs: INTERVAL_MS, resetFrames: options.resetFrames ?? RESET_FRAMES } });
  worker.unref();
  sqlite.pragma("wal_autocheckpoint = 0");
  let stopped = false;
  let exited = false;
  worker.once("exit", () => (exited = true));
  worker.on("message", (m: CheckpointerMessage) => {
    if ("restart" in m) {
      const r = m.restart;
      // Whether it finished (a busy one is tried again next interval), whether the sync ahead
      // of it worked, and how long each took.
      log.debug("wal restart", { frames: r.frames, done: r.done, synced_ahead: r.syncedAhead, sync_ms: Math.round(r.syncMs), restart_ms: Math.round(r.restartMs) });
    } else if (m.failing === null) log.info("checkpoints work again");
    else log.warn("checkpoint failed; trying again", { driver_code: m.failing, detail: m.detail });
  });
  worker.on("error", (err) => {
    log.error("checkpointer failed; automatic checkpoints are back on", { error: err.name, detail: err.message });
    if (sqlite.open) sqlite.pragma("wal_autocheckpoint = 1000");
  });
  return {
    async stop() {
      if (stopped || exited) return;
      stopped = true;
      worker.ref(); // keep the process alive until the thread has closed its connection
      const done = new Promise((resolve) => worker.once("exit", resolve));
      worker.postMessage("stop");
      await done;
    },
  };
}
