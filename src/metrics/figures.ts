import { statSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { databasePath } from "../store/database.js";
import type { RunningServer } from "../transport/http-server.js";
import { single, type Family } from "./exposition.js";
import { WORKER_ANSWER_MS } from "./workers.js";

// What the metrics page shows beside the requests (see RequestMetrics): the process, the
// database's files, the listener, and with WORKERS the primary's view of its workers.

const startedAt = Date.now() / 1000 - process.uptime();

/** What this process costs: memory, CPU, and how busy its event loop has been. */
export function processFamilies(): Family[] {
  const cpu = process.cpuUsage();
  const memory = process.memoryUsage();
  return [
    single("process_resident_memory_bytes", "Resident memory of the process.", "gauge", memory.rss),
    single("process_cpu_seconds_total", "CPU time of the process, user and system.", "counter", (cpu.user + cpu.system) / 1e6),
    single("process_start_time_seconds", "When the process started, in seconds since the epoch.", "gauge", Math.round(startedAt)),
    single("nodejs_heap_used_bytes", "JavaScript heap in use.", "gauge", memory.heapUsed),
    // Its rate is the event loop's utilization: near 1, requests wait for this process's CPU.
    single("scm_event_loop_busy_seconds_total", "Time the event loop spent running code rather than waiting.", "counter", performance.eventLoopUtilization().active / 1000),
  ];
}

/** The sizes of the database file and its WAL (0 while there is none), which SQLite keeps beside the file a symbolic link names. */
export function databaseFamilies(given: string): Family[] {
  let file = given;
  try {
    file = databasePath(given);
  } catch {
    // sizes of 0 below
  }
  const size = (path: string) => {
    try {
      return statSync(path, { throwIfNoEntry: false })?.size ?? 0;
    } catch {
      return 0;
    }
  };
  return [
    single("scm_database_bytes", "Size of the SQLite database file.", "gauge", size(file)),
    single("scm_database_wal_bytes", "Size of its write-ahead log, which checkpoints copy into the file.", "gauge", size(`${file}-wal`)),
  ];
}

/** What the listener holds now, and the certificate it serves; `tlsReloads` counts the reads after the first. */
export function listenerFamilies(server: RunningServer, tlsReloads: { ok: number; failed: number }): Family[] {
  const families = [
    single("scm_requests_in_flight", "Requests being served right now.", "gauge", server.inFlight()),
    single("scm_request_body_bytes_held", "Bytes of request bodies held right now, against the budget the calls with a token share.", "gauge", server.bodyBytesHeld()),
    single("scm_open_request_body_bytes_held", "The same for the calls that take no token (health checks, reflection), against a budget of their own.", "gauge", server.openBodyBytesHeld()),
  ];
  if (!server.certificate) return families;
  return [
    ...families,
    single("scm_tls_certificate_expiry_seconds", "When the certificate served to new connections expires, in seconds since the epoch.", "gauge", Date.parse(server.certificate().notAfter) / 1000),
    {
      name: "scm_tls_reloads_total",
      help: "Reads of the certificate files after the first (SIGHUP, or the files changed), by result; a failed one leaves the previous certificate served.",
      type: "counter",
      samples: [
        { labels: { result: "ok" }, value: tlsReloads.ok },
        { labels: { result: "failed" }, value: tlsReloads.failed },
      ],
    },
  ];
}

/** The primary's view of its workers (WORKERS above 1). */
export function workerFamilies(w: { configured: number; serving: number; answered: number; restarts: number }): Family[] {
  return [
    single("scm_workers_configured", "Worker processes the service runs (WORKERS).", "gauge", w.configured),
    single("scm_workers_serving", "Worker processes serving now; fewer than configured while one is replaced or cannot start.", "gauge", w.serving),
    single("scm_workers_answered", `Serving workers whose figures are on this page; fewer than serving when one did not answer within ${WORKER_ANSWER_MS / 1000} s (stuck).`, "gauge", w.answered),
    single("scm_worker_restarts_total", "Workers started in place of one that exited or could not start.", "counter", w.restarts),
  ];
}
