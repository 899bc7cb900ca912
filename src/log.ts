import type { LogLevel } from "./config.js";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** Writes one JSON object per line. Callers pass only fields that are safe to show. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

/** `every` is added to every line (a worker's number, with WORKERS). */
export function createLogger(level: LogLevel, write: (line: string) => void = batchedStdout(), every?: LogFields): Logger {
  const min = RANK[level];
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (RANK[lvl] < min) return;
    write(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields, ...every }) + "\n");
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}

/**
 * Writes to stdout once per event-loop turn instead of once per line: with a file or
 * /dev/null as stdout every write is a synchronous syscall, which under load cost more
 * than the request it logged. What is pending is written before the process exits.
 */
function batchedStdout(): (line: string) => void {
  let pending = "";
  // A reader that went away (EPIPE) must not take the service down with it: the lines
  // have nowhere to go, and are dropped from then on.
  let gone = false;
  process.stdout.on("error", () => (gone = true));
  const flush = () => {
    if (pending === "") return;
    const out = pending;
    pending = "";
    if (!gone) process.stdout.write(out);
  };
  process.on("exit", flush);
  return (line) => {
    if (pending === "") setImmediate(flush);
    pending += line;
    if (pending.length > 1 << 16) flush();
  };
}
