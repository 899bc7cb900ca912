import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import type { Logger } from "../log.js";
import type { Db } from "./database.js";
import { mainFile } from "./group-commit.js";
import { isDamaged } from "./errors.js";

/**
 * How often the checkpointer copies the WAL back into the database file. Often, so that
 * little is left to copy when the WAL is reset, which is done holding the write lock: at
 * 250 ms a reset stalled the writes for up to ~140 ms (create p99 at concurrency 16 about
 * 100 ms); at 50 ms, about 25 ms, at the same throughput.
 */
const INTERVAL_MS = 50;

/**
 * The longest wait between RESTART tries while a reader keeps them failing (see the
 * worker): past it, 1.6 s of writes at most (about 100 MB under full create load) pile
 * up in the WAL after the reader has gone.
 */
const MAX_RESTART_BACKOFF_MS = 1600;

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
// at the next interval on a fresh connection; the WAL keeps every commit meanwhile.
// A failed sync is another matter. Linux tells each descriptor open at the time of a failed
// writeback once, and a descriptor opened later not at all, so after one the pages may be
// lost and a later sync through a fresh connection would succeed: copying the WAL on then
// could put into the database file a commit whose frames never reached the disk, which
// recovery after a power loss would half undo. So a failed sync stops the thread for good,
// and so does the service's own (it sets the shared halt flag, checked before each
// checkpoint). The thread keeps a descriptor of each file open from its start and syncs
// through them before a fresh connection copies anything, which covers the failures that
// happened before that connection opened.
const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const { closeSync, fdatasyncSync, openSync } = require("node:fs");
const Database = require(workerData.driver);
const halted = new Int32Array(workerData.halt);
const connect = () => {
  const db = new Database(workerData.file);
  db.pragma("busy_timeout = 0");
  // SQLite opens the WAL at the first read: open it now, before the guards' syncs, so that
  // every failure after those syncs reaches this connection's own descriptor.
  db.pragma("user_version");
  return db;
};
// A failed sync; never retried.
class Fatal extends Error {}
const STOPPED = new Fatal("stopped: the service's own sync of the WAL failed");
const guards = {};
const guard = (path) => (guards[path] ??= openSync(path, "r"));
const syncFile = (path) => {
  const fd = guard(path); // a file that cannot be opened is ordinary trouble, tried again
  try { fdatasyncSync(fd); } catch (err) { throw new Fatal(path + ": " + String(err && err.message), { cause: err }); }
};
const checkpoint = (mode) => {
  if (Atomics.load(halted, 0) !== 0) throw STOPPED;
  return db.pragma("wal_checkpoint(" + mode + ")")[0];
};
const fatal = (err) => err instanceof Fatal || /^SQLITE_IOERR_(DIR_)?FSYNC/.test(String(err && err.code));
let db = null;
let failing = null;
// When checkpoints began to succeed again. Recovery is reported after a second of them:
// on a disk that is nearly full, or with another worker checkpointing the same WAL, one
// may succeed between failures (having little or nothing to copy), and the log would
// otherwise say "failed" and "work again" in turn many times a second.
let okSince = -1;
// The WAL's length when a RESTART last finished. Until a write starts the WAL over, a
// checkpoint finds it just as long, and there is nothing more to do.
let restartedAt = -1;
// A RESTART that found a reader in its way (a backup's copy, one long read transaction)
// held the writers off for its 50 ms for nothing; tried every interval, that kept them
// off most of the time for as long as the reader stayed. So the next try waits, twice as
// long after each such failure, up to a limit that bounds how far the WAL outgrows its
// threshold once the reader has gone.
let restartBackoff = 0;
let restartNotBefore = 0;
const stop = () => {
  clearInterval(timer);
  try { if (db) db.close(); } catch {}
  for (const fd of Object.values(guards)) try { closeSync(fd); } catch {}
  process.exit(0);
};
// Opened before any connection of this thread, so they hear of every failed writeback since.
try { guard(workerData.file); guard(workerData.wal); } catch {}
const timer = setInterval(() => {
  try {
    if (db === null) {
      db = connect();
      syncFile(workerData.file);
      syncFile(workerData.wal);
    }
    const state = checkpoint("PASSIVE");
    // Started over by the writers themselves (they do once a checkpoint has copied it all
    // and no reader holds it): whatever held the last RESTART off has gone.
    if (state.log <= workerData.resetFrames) restartBackoff = restartNotBefore = 0;
    if (state.log > workerData.resetFrames && state.log !== restartedAt && performance.now() >= restartNotBefore) {
      const start = performance.now();
      syncFile(workerData.file);
      checkpoint("PASSIVE");
      syncFile(workerData.file);
      const synced = performance.now();
      db.pragma("busy_timeout = 50");
      let restart;
      try { restart = checkpoint("RESTART"); } finally { db.pragma("busy_timeout = 0"); }
      restartedAt = restart.busy === 0 ? state.log : -1;
      restartBackoff = restart.busy === 0 ? 0 : Math.min(workerData.maxBackoffMs, restartBackoff === 0 ? workerData.intervalMs * 2 : restartBackoff * 2);
      restartNotBefore = performance.now() + restartBackoff;
      parentPort.postMessage({ restart: { frames: state.log, done: restart.busy === 0, syncMs: synced - start, restartMs: performance.now() - synced } });
    }
    if (failing !== null) {
      if (okSince < 0) okSince = performance.now();
      else if (performance.now() - okSince >= 1000) { failing = null; parentPort.postMessage({ failing: null }); }
    }
  } catch (err) {
    okSince = -1;
    if (err === STOPPED) return stop();
    if (fatal(err)) {
      parentPort.postMessage({ halted: String((err.cause && err.cause.code) || err.code || "EIO"), detail: String(err.message) });
      return stop();
    }
    if (String(err && err.code).startsWith("SQLITE_BUSY")) return;
    // A full disk or a file that cannot be written: tell the service (once per kind of
    // trouble, not every interval) and try again next time on a fresh connection, since
    // one opened while the file was not writable stays read-only.
    const code = String((err && err.code) || (err && err.name) || "error");
    if (code !== failing) { failing = code; parentPort.postMessage({ failing: code, detail: String(err && err.message) }); }
    try { if (db) db.close(); } catch {}
    db = null;
  }
}, workerData.intervalMs);
parentPort.on("message", stop);
`;

type CheckpointerMessage =
  | { failing: string | null; detail?: string }
  | { halted: string; detail: string }
  | { restart: { frames: number; done: boolean; syncMs: number; restartMs: number } };

/**
 * Moves WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the
 * COMMIT that crosses its threshold, copying pages and fsyncing the database file while
 * every request waits; here the serving connection turns it off and a worker thread
 * checkpoints instead. Should the thread fail, the automatic checkpoint comes back, unless
 * a sync failed: then nothing may be copied any more (see the worker's comment), and a
 * failed sync in the thread stops the service's writes and reads as the WAL's own does.
 */
export function startCheckpointer(db: Db, log: Logger, options: { resetFrames?: number } = {}): { stop(): Promise<void> } {
  const sqlite = db.$client;
  if (sqlite.memory) return { stop: async () => {} };
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  const halt = new SharedArrayBuffer(4);
  const file = mainFile(sqlite);
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { file, wal: `${file}-wal`, halt, driver, intervalMs: INTERVAL_MS, resetFrames: options.resetFrames ?? RESET_FRAMES, maxBackoffMs: MAX_RESTART_BACKOFF_MS },
  });
  worker.unref();
  sqlite.pragma("wal_autocheckpoint = 0");
  let stopped = false;
  let exited = false;
  worker.once("exit", () => (exited = true));
  db.whenHalted((err) => {
    // Set before any message could arrive: the thread checks it before each checkpoint.
    Atomics.store(new Int32Array(halt), 0, 1);
    if (!exited) worker.postMessage("stop");
    if (isDamaged((err as { code?: unknown }).code)) log.error("checkpoints stopped until a restart: the database read as damaged, so the WAL is not copied into the database file any more; check the storage before restarting, see README");
    else log.error("checkpoints stopped until a restart: a sync failed, so the WAL is not copied into the database file any more; reboot the host (or drop its page cache) before restarting, see README");
  });
  worker.on("message", (m: CheckpointerMessage) => {
    if ("restart" in m) {
      const r = m.restart;
      // Whether it finished (a busy one is tried again next interval), and how long the
      // syncs ahead of it and the RESTART itself took.
      log.debug("wal restart", { frames: r.frames, done: r.done, sync_ms: Math.round(r.syncMs), restart_ms: Math.round(r.restartMs) });
    } else if ("halted" in m) {
      log.error("a checkpoint could not sync to disk", { driver_code: m.halted, detail: m.detail });
      db.halt(new Database.SqliteError(`a checkpoint could not sync to disk: ${m.detail}`, "SQLITE_IOERR_FSYNC"));
    } else if (m.failing === null) log.info("checkpoints work again");
    else log.warn("checkpoint failed; trying again", { driver_code: m.failing, detail: m.detail });
  });
  worker.on("error", (err) => {
    if (db.haltedBy() !== null) return log.error("checkpointer failed", { error: err.name, detail: err.message });
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
