import { statSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { single, type Family } from "./exposition.js";

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

/** The sizes of the database file and its WAL (absent while there is none). */
export function databaseFamilies(file: string): Family[] {
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
