import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { Logger } from "../log.js";
import type { Db } from "./database.js";

/** How often the checkpointer copies the WAL back into the database file. */
const INTERVAL_MS = 250;

// Runs in a worker thread with its own connection. PASSIVE never waits for readers or
// the writer; it copies what it can and fsyncs the database file, all off the event loop.
const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma("busy_timeout = 0");
const timer = setInterval(() => {
  try { db.pragma("wal_checkpoint(PASSIVE)"); } catch (err) { if (!String(err.code).startsWith("SQLITE_BUSY")) throw err; }
}, workerData.intervalMs);
parentPort.on("message", () => { clearInterval(timer); db.close(); process.exit(0); });
`;

/**
 * Moves WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the
 * COMMIT that crosses its threshold, copying pages and fsyncing the database file while
 * every request waits; here the serving connection turns it off and a worker thread
 * checkpoints instead. Should the thread fail, the automatic checkpoint comes back.
 */
export function startCheckpointer(db: Db, log: Logger): { stop(): Promise<void> } {
  const sqlite = db.$client;
  if (sqlite.memory) return { stop: async () => {} };
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { file: sqlite.name, driver, intervalMs: INTERVAL_MS } });
  worker.unref();
  sqlite.pragma("wal_autocheckpoint = 0");
  let stopped = false;
  worker.on("error", (err) => {
    log.error("checkpointer failed; automatic checkpoints are back on", { error: err.name, detail: err.message });
    if (sqlite.open) sqlite.pragma("wal_autocheckpoint = 1000");
  });
  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      worker.ref(); // keep the process alive until the thread has closed its connection
      const exited = new Promise((resolve) => worker.once("exit", resolve));
      worker.postMessage("stop");
      await exited;
    },
  };
}
