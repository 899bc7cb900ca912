// What serves: one process, or each worker. Loaded only there, so that the primary of
// WORKERS > 1, which only forks and watches, does not hold the API's code in memory.

// First: protobuf-es looks for the native base64 encoder when it is imported (see runtime/base64.ts).
import "./runtime/base64.js";
import cluster from "node:cluster";
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import Database from "better-sqlite3";
import { publicUrlOn, type Config } from "./config.js";
import type { Logger } from "./log.js";
import { createApp } from "./server.js";
import { openDatabase, type Db } from "./store/database.js";
import { walGather } from "./store/wal-gather.js";
import { sealOnEventLoop, sealingPlace } from "./crypto/seal-worker.js";
import { haltCause } from "./store/errors.js";
import { onReloadSignal, onStopSignals } from "./signals.js";
import { listen, type RunningServer } from "./transport/http-server.js";
import { serveMetrics } from "./metrics/endpoint.js";
import type { Family } from "./metrics/exposition.js";
import { databaseFamilies, listenerFamilies, processFamilies } from "./metrics/figures.js";
import { answerMetricsAsks } from "./metrics/workers.js";
import { currentVersion, describeTlsFailure, failedForContent, outsideValidity, rereadable, watchTlsFiles, type TlsCredentials, type TlsWatch } from "./transport/tls-files.js";
import { HALT_ASKED, isHaltMessage, type HaltMessage } from "./halt-messages.js";

/** How long past SHUTDOWN_TIMEOUT_MS a shutdown may take to close up before the process just exits. */
const STOP_GRACE_MS = 5000;

/** Serves requests from this process until SIGTERM/SIGINT, then drains and exits 0. */
// Workers sync their commits off the event loop as one process does; what a worker reads of
// another's commits, it syncs itself before answering (group-commit.ts, `durable`).
export async function serve(config: Config, log: Logger, options: { db?: Db; onListening: (url: string) => void }): Promise<void> {
  const db = options.db ?? openDatabase(config.databaseFile, { sharedWithProcesses: cluster.isWorker });
  // With a process a core, a sealing thread has no core of its own to run on: it would take
  // turns with the event loops, and hold memory in every worker (BENCHMARKS.md, "Both cores").
  if (config.workers >= availableParallelism()) sealOnEventLoop();
  if (cluster.isWorker) await relayHalts(db);
  let publicUrl = config.publicUrl;
  const app = createApp(db, log, {
    publicUrl: () => publicUrl,
    rateLimit: config.rateLimitPerSecond > 0 ? { perSecond: config.rateLimitPerSecond, burst: config.rateLimitBurst } : null,
    bodyRateLimit: config.rateLimitBytesPerSecond > 0 ? { perSecond: config.rateLimitBytesPerSecond, burst: config.rateLimitBytesBurst } : null,
    idempotencyTtlMs: config.idempotencyTtlMs,
    corsOrigins: config.corsOrigins,
    metrics: config.metrics !== null,
  });
  const tlsReloads = { ok: 0, failed: 0 };
  let serving: RunningServer | undefined;
  const metrics = (): Family[] => [...app.metrics(), ...(serving ? listenerFamilies(serving, tlsReloads) : []), ...processFamilies()];
  // A worker's figures go to the primary, which serves the page; one process serves its own.
  if (cluster.isWorker && config.metrics) answerMetricsAsks(metrics);
  // Before the API's port, so that a metrics port it cannot have stops the start before any call is taken.
  const metricsEndpoint = cluster.isWorker || !config.metrics ? undefined : await serveMetrics(config.metrics.host, config.metrics.port, () => [...metrics(), ...databaseFamilies(config.databaseFile)], log);
  const server = await listen(app.handler, config.port, config.host, {
    tls: config.tlsCertFile && config.tlsKeyFile ? { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile } : undefined,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    ...app.listenOptions,
  });
  serving = server;
  publicUrl = publicUrlOn(config, server.address.port);
  options.onListening(publicUrl);
  const gather = walGather();
  log.info("listening", {
    // As a URL writes it: an IPv6 address in brackets, so the port stands apart.
    address: `${server.address.family === "IPv6" ? `[${server.address.address}]` : server.address.address}:${server.address.port}`,
    tls: Boolean(config.tlsCertFile),
    tls_not_after: server.certificate?.().notAfter,
    // Where it is, whatever the working directory: a relative DATABASE_URL read from another one is another file.
    database: resolve(config.databaseFile),
    wal_writes_gathered: gather?.on === true,
    sealing: sealingPlace(),
  });
  if (gather && !gather.on) log.warn("WAL writes are not gathered (SQLite makes two system calls a page): creates cost more CPU", { reason: gather.reason });
  // Served all the same (a renewal may be on its way), but said loudly.
  const served = server.certificate?.();
  const invalid = served ? outsideValidity(served) : null;
  if (invalid) log.warn("the TLS certificate is not valid now: clients will refuse it until TLS_CERT_FILE holds a valid one", { reason: invalid.reason, not_after: served!.notAfter, not_before: served!.notBefore });
  const stopWatching = reloadCertificates(server, config, log, tlsReloads);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    stopWatching();
    log.info("shutting down", { signal, in_flight: server.inFlight() });
    // Should anything after the drain hang (a stuck background thread), the process
    // still ends, and says so with a non-zero code.
    setTimeout(() => {
      log.error("shutdown did not finish; exiting anyway", { timeout_ms: config.shutdownTimeoutMs });
      process.exit(1);
    }, config.shutdownTimeoutMs + STOP_GRACE_MS);
    try {
      app.beginShutdown();
      const cutOff = await server.shutdown(config.shutdownTimeoutMs);
      if (cutOff > 0) log.warn("requests still running at the shutdown timeout were cut off", { requests: cutOff, timeout_ms: config.shutdownTimeoutMs });
      await app.close();
      // After a failed sync the files stay as they are: closing the last connection would
      // checkpoint the WAL into the database file, commits that never reached the disk too.
      const haltedBy = db.haltedBy();
      if (haltedBy === null) db.$client.close();
      else log.warn(`database left unclosed (${haltCause((haltedBy as { code?: unknown }).code)}); SQLite recovers from the files at the next start`);
      // Served through the drain, where what is still in flight shows.
      metricsEndpoint?.close();
    } catch (err) {
      log.error("shutdown failed", { error: err instanceof Error ? err.name : typeof err, detail: err instanceof Error ? err.message : undefined });
      process.exit(1);
    }
    log.info("stopped");
    process.exit(0);
  };
  onStopSignals((signal) => void stop(signal));
}

/**
 * Serves a renewed certificate without a restart: on SIGHUP, and when the files change
 * (looked at every TLS_RELOAD_CHECK_MS). New connections get the new one; open ones keep
 * theirs. Files that cannot be used change nothing and are logged, and the previous
 * certificate stays. Returns a function that stops the watch.
 */
function reloadCertificates(server: RunningServer, config: Config, log: Logger, counts: { ok: number; failed: number }): () => void {
  if (!server.reloadCertificate || !config.tlsCertFile || !config.tlsKeyFile) {
    onReloadSignal(() => log.info("SIGHUP: no TLS certificate to reload"));
    return () => {};
  }
  const files = { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile };
  let watch: TlsWatch | undefined;
  /** Reads the files again; answers whether that is settled (see watchTlsFiles). */
  const reload = (trigger: "SIGHUP" | "files changed"): boolean => {
    let next: TlsCredentials;
    try {
      next = server.reloadCertificate!();
    } catch (err) {
      const reason = describeTlsFailure(err, true) ?? `unexpected ${err instanceof Error ? err.name : typeof err}`;
      log.error("tls certificate not reloaded; still serving the previous one", { trigger, reason });
      counts.failed++;
      return failedForContent(err);
    }
    watch?.settled(next.version);
    counts.ok++;
    log.info("tls certificate reloaded", { trigger, subject: next.subject, not_after: next.notAfter, sha256: next.fingerprint });
    return true;
  };
  onReloadSignal(() => void reload("SIGHUP"));
  const watchable = rereadable(files);
  // A SIGHUP between listening (which read the files) and the line above was held and
  // dropped: what it asked for is done here if the files have changed since.
  if (watchable && currentVersion(files) !== server.certificate!().version) reload("files changed");
  if (config.tlsReloadCheckMs === 0 || !watchable) return () => {};
  watch = watchTlsFiles(files, server.certificate!().version, config.tlsReloadCheckMs, () => reload("files changed"));
  return () => watch!.stop();
}

/** How long a worker waits for the primary's answer before it serves anyway (the primary answers at once). */
const HALT_ANSWER_WAIT_MS = 5000;

/**
 * In a worker: tells the primary when this worker's sync fails, and halts when told another's
 * did. Settles once the primary has said whether one did already, so the worker serves nothing before.
 */
async function relayHalts(db: Db): Promise<void> {
  db.whenHalted((err) => process.send?.({ halt: String((err as { code?: unknown }).code ?? "SQLITE_IOERR_FSYNC") } satisfies HaltMessage));
  let answered!: () => void;
  const answer = new Promise<void>((resolve) => (answered = resolve));
  process.on("message", (m: unknown) => {
    if (isHaltMessage(m)) db.halt(new Database.SqliteError(`another worker: ${haltCause(m.halt)}`, m.halt));
    if ((m as { halt?: unknown } | null)?.halt !== undefined) answered();
  });
  process.send?.(HALT_ASKED);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([answer, new Promise<void>((resolve) => (timer = setTimeout(resolve, HALT_ANSWER_WAIT_MS)))]);
  clearTimeout(timer);
}
