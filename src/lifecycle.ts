import cluster, { type Worker } from "node:cluster";
import { ConfigError, loadConfig, misspelledSettings, publicUrlKnown, publicUrlOn, type Config } from "./config.js";
import { createLogger, type Logger } from "./log.js";
import { bootstrap } from "./services/accounts.js";
import { openDatabase, type Db } from "./store/database.js";
import { describeStartupError } from "./startup-errors.js";
import { haltCause } from "./store/errors.js";
import { onReloadSignal, onStopSignals, SIGNALS_HELD } from "./signals.js";
import { serveMetrics } from "./metrics/endpoint.js";
import { databaseFamilies, workerFamilies } from "./metrics/figures.js";
import { WorkerMetrics } from "./metrics/workers.js";
import { HALT_ASKED, isHaltMessage, NOT_HALTED, type HaltMessage } from "./halt-messages.js";
import { workerNodeFlags } from "./worker-flags.js";

/**
 * Starts the service: config, database and migrations, first-start token, then either
 * serves from this process or, with WORKERS > 1, forks that many workers which share the
 * port (each accepting its own connections) and the SQLite database.
 */
async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  // With WORKERS, every line of a worker says which one wrote it.
  const log = createLogger(config.logLevel, undefined, cluster.isWorker ? { worker: cluster.worker?.id } : undefined);
  try {
    if (cluster.isWorker) return await serve(config, log);
    for (const { given, meant } of misspelledSettings()) log.warn(`${given} is set, but nothing reads it: did you mean ${meant}?`, { variable: given, setting: meant });

    // Migrations and the first-start token happen once, before any worker opens the database.
    // Nothing else is logged until it serves, and an upgrade of a large database may take a while.
    // One service a database (see serving-claim.ts): the claim outlives this connection, for the workers.
    const db = openDatabase(config.databaseFile, { claim: true, onUpgrade: (migrations) => log.info("upgrading the database; the service serves once this is done, which on a large one may take a while", { migrations }) });
    const first = bootstrap(db, config.bootstrapOrgName);
    // The token is in the database now and shown only this once, so it is printed whatever
    // happens next: at once where the address is known, else once listening (PORT=0), and
    // should the start fail first, with the failure.
    if (first) welcome = (url) => printFirstStart(first.orgName, first.token, url);
    if (publicUrlKnown(config)) showWelcome(config.publicUrl);
    if (config.workers === 1) {
      // A WAL the last run left long (a crash, a reader that held it) is emptied first, as
      // the primary's open and close below does with workers. SQLite starts the -shm over
      // small on its first open, and while a long WAL is reused in place, the -shm alone
      // must grow: on a full disk that fails a commit after its frames are written, and a
      // crash then would bring back a write that was answered with an error.
      // Best effort: on a full disk the copy fails, and the service still starts to serve reads.
      try {
        db.$client.pragma("wal_checkpoint(TRUNCATE)");
      } catch (err) {
        log.warn("could not empty the WAL at start; serving with it as it is", { error: err instanceof Error ? err.name : typeof err, driver_code: String((err as { code?: unknown }).code) });
      }
      return await serve(config, log, db);
    }
    db.$client.close();
    await supervise(config, log);
  } catch (err) {
    showWelcome(config.publicUrl);
    const reason = describeStartupError(err, { ...config, tls: Boolean(config.tlsCertFile), tlsFiles: [config.tlsCertFile, config.tlsKeyFile].filter((f) => f !== undefined) });
    if (reason === null) throw err;
    process.stderr.write(`startup error: ${reason}${cluster.isWorker ? ` (worker ${cluster.worker?.id})` : ""}\n`);
    process.exit(1);
  }
}

/** Serves from this process (alone, or as a worker) with the serving code, loaded only now. */
async function serve(config: Config, log: Logger, db?: Db): Promise<void> {
  const { serve: serveHere } = await import("./serving.js");
  return serveHere(config, log, { db, onListening: showWelcome });
}

/** Worker deaths before listening, within this window, after which the service gives up (when no other worker serves). */
const EARLY_DEATHS = { limit: 5, windowMs: 60_000 };

/** How long the primary waits to start another worker in place of one that could not start while others serve: doubling from the first to the most. */
const RESTART_WAIT = { firstMs: 1000, maxMs: 60_000 };

/**
 * The primary of a multi-process service: forks the workers, passes SIGTERM/SIGINT on so
 * each drains its own requests, and exits once all have stopped (0, or 1 if one failed to).
 * A worker that dies while serving, or is killed, is replaced. While no worker serves, one
 * that exits by itself before it could listen (a port in use, an unreadable certificate)
 * stops the service, since its replacement would fail the same way; so do five deaths before
 * listening within a minute, whatever their cause (a crash at start, memory too tight to
 * start at all). While others serve, it is replaced after a wait instead (see RESTART_WAIT).
 */
async function supervise(config: Config, log: Logger): Promise<void> {
  let stopping = false;
  let exitCode = 0;
  let halted: string | null = null;
  const listening = new Set<number>();
  const earlyDeaths: number[] = [];
  let restartTries = 0;
  let forks = 0;
  // Counted here, not read from cluster.workers: node keeps a worker there until both its
  // exit and its channel's close were seen, in either order, so on the last exit the list
  // may still name it. Read from there, the last exit went unseen, and the process ended
  // only when nothing was left to run: with code 0 whatever the workers did, and unlogged.
  let alive = 0;
  const fork = () => {
    forks++;
    alive++;
    return cluster.fork();
  };
  // The metrics page is served here, from what the serving workers answer when asked; it
  // listens before any worker starts, so that a port it cannot have stops the start.
  const workerMetrics = new WorkerMetrics();
  if (config.metrics) {
    await serveMetrics(config.metrics.host, config.metrics.port, async () => {
      const serving = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && listening.has(w.id));
      const gathered = await workerMetrics.gather(serving);
      return [
        ...workerFamilies({ configured: config.workers, serving: serving.length, answered: gathered.answered, restarts: Math.max(0, forks - config.workers) }),
        ...databaseFamilies(config.databaseFile),
        ...gathered.families,
      ];
    }, log);
  }
  // The signal passed on to the workers; the log names what asked for the stop, which is
  // not always a signal (a worker that could not start).
  const stop = (signal: NodeJS.Signals, cause: string = signal) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { ...(cause === signal ? { signal } : { cause }), workers: config.workers });
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal);
  };
  // Each worker serves with certificates of its own and reads them again itself. Every one
  // that holds its signals is told, also one this process has not yet heard listen: it holds
  // the signal until it serves, and then reads the files again if they changed since it first
  // did. One that does not hold them yet would be ended by it, and reads the files later anyway.
  const holding = new Set<number>();
  onReloadSignal(() => {
    if (stopping) return;
    for (const worker of Object.values(cluster.workers ?? {})) if (worker && holding.has(worker.id)) worker.process.kill("SIGHUP");
  });
  // Each worker accepts its own connections from the shared socket. With node's default
  // (the primary accepts and hands each connection to a worker), a connection handed to a
  // worker that was just killed is never answered; this way it stays in the kernel's queue
  // for another worker. Throughput measured the same either way (README, "All cores").
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ execArgv: workerNodeFlags(process.execArgv) });
  for (let i = 0; i < config.workers; i++) fork();
  cluster.on("listening", (worker, address) => {
    listening.add(worker.id);
    restartTries = 0;
    // Every worker listens on the same port, PORT=0 too: the first one tells it.
    showWelcome(publicUrlOn(config, address.port));
  });
  cluster.on("message", (worker, m: unknown) => {
    workerMetrics.onMessage(worker, m);
    if ((m as typeof SIGNALS_HELD | null)?.signalsHeld === true) holding.add(worker.id);
    if ((m as typeof HALT_ASKED | null)?.haltAsked === true) return tell(worker, halted ? { halt: halted } : NOT_HALTED);
    if (!isHaltMessage(m) || halted) return;
    halted = m.halt;
    log.error(`a worker gave up the database (${haltCause(m.halt)}): every worker refuses calls until the service is restarted`, { about_worker: worker.id, code: m.halt });
    for (const other of Object.values(cluster.workers ?? {})) if (other && other !== worker) tell(other, m);
  });
  // A worker on its way out may have closed its channel already: without a callback, send
  // would report that as an 'error' event, which nothing handles, and stop the primary. A
  // worker that goes is told by its replacement's question anyway.
  const tell = (worker: Worker, m: HaltMessage | typeof NOT_HALTED) => void worker.send(m, () => {});
  cluster.on("exit", (worker, code, signal) => {
    alive--;
    holding.delete(worker.id);
    const started = listening.delete(worker.id);
    // A worker whose own shutdown failed exits 1; so does the service then. So does one
    // killed while it drained (the OOM killer, say): the calls it held were cut off, which
    // a lone process's exit by that signal would have told its supervisor. (One still
    // starting, not yet listening, is ended by the signal passed on: it held no calls.)
    if (stopping && code !== 0 && (signal === null || started)) {
      exitCode = 1;
      if (signal !== null) log.error("a worker was killed while it drained; the calls it still held were cut off", { about_worker: worker.id, signal });
    }
    if (!stopping && !started) {
      const now = Date.now();
      earlyDeaths.push(now);
      while (earlyDeaths[0]! < now - EARLY_DEATHS.windowMs) earlyDeaths.shift();
      if (listening.size > 0) {
        // The others serve: what stops this one (certificate files caught mid-renewal,
        // memory tight for a moment) may pass, and stopping would end their serving too.
        const retryMs = Math.min(RESTART_WAIT.maxMs, RESTART_WAIT.firstMs * 2 ** restartTries++);
        log.error("a worker could not start; the others serve on, and another is started later", { about_worker: worker.id, code, signal, retry_in_ms: retryMs });
        setTimeout(() => {
          if (!stopping) fork();
        }, retryMs);
        return;
      }
      if (signal === null || earlyDeaths.length >= EARLY_DEATHS.limit) {
        log.error("a worker could not start; stopping the service", { about_worker: worker.id, code, signal, deaths_before_listening: earlyDeaths.length });
        exitCode = 1;
        stop("SIGTERM", "a worker could not start");
      } else {
        log.error("a worker died while starting; starting another", { about_worker: worker.id, code, signal });
        fork();
        return;
      }
    } else if (!stopping) {
      log.error("worker exited; starting another", { about_worker: worker.id, code, signal });
      fork();
      return;
    }
    if (alive === 0) {
      showWelcome(config.publicUrl); // no worker ever listened
      log.info("stopped", { code: exitCode });
      process.exit(exitCode);
    }
  });
  onStopSignals((signal) => stop(signal));
}

/** The first-start message while it waits for the address a server listens on (PORT=0). */
let welcome: ((url: string) => void) | undefined;

function showWelcome(url: string): void {
  welcome?.(url);
  welcome = undefined;
}

/**
 * Shown once, on the start that created the first token, on stdout beside the log lines
 * (not as one of them). Where a supervisor keeps stdout, it is kept with them: the README
 * says how to start without it.
 */
function printFirstStart(orgName: string, token: string, url: string): void {
  process.stdout.write(
    [
      "",
      `First start: created organization "${orgName}" and an admin API token.`,
      "This token is shown only now; keep it somewhere safe:",
      "",
      `  ${token}`,
      "",
      "Create a runner with it:",
      "",
      `  curl -sS ${url}/gitpod.v1.RunnerService/CreateRunner \\`,
      `    -H 'Authorization: Bearer ${token}' \\`,
      `    -H 'Content-Type: application/json' \\`,
      `    -d '{"name":"my-runner","provider":"RUNNER_PROVIDER_AWS_EC2"}'`,
      "",
      "",
    ].join("\n"),
  );
}

await main();
