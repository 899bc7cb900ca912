import cluster from "node:cluster";
import { isatty } from "node:tty";

/**
 * The signals the service acts on, held from the moment the process starts (src/main.ts
 * imports this first): until the service can act on one, it is noted and acted on once it
 * can. Without a listener node ends the process at once: a first start stopped so, after
 * its token was made and before it was printed, left a token that no one had seen, and a
 * reload asked for just after a start stopped the service.
 *
 * SIGTERM and SIGINT stop the service. SIGHUP asks for its certificate to be read again,
 * except in a terminal, where it is the terminal's hangup (the window closed, the SSH
 * session dropped) and stops the service as SIGTERM does, so that nothing is left serving
 * headless, its log lines going nowhere.
 */

/** The message a worker sends once it holds its signals. */
export const SIGNALS_HELD = { signalsHeld: true } as const;

/** Whether the process runs in a terminal: stdin, stdout or stderr is one. */
// Asked of the descriptors: process.stdin would make a stream for fd 0 just to answer.
const inTerminal = isatty(0) || isatty(1) || isatty(2);

let held: NodeJS.Signals | null = null;
const holdSigterm = () => (held ??= "SIGTERM");
const holdSigint = () => (held ??= "SIGINT");
// A reload asked for before the certificate was read is answered by that first read; one
// asked for between that read and onReloadSignal, by the check that follows it (reloadCertificates in serving.ts).
const holdSighup = () => {
  if (inTerminal) held ??= "SIGHUP";
};

process.on("SIGTERM", holdSigterm);
process.on("SIGINT", holdSigint);
process.on("SIGHUP", holdSighup);
// A worker tells the primary that it holds them: before this, a SIGHUP passed on to it would
// end it (see supervise in lifecycle.ts).
if (cluster.isWorker) process.send?.(SIGNALS_HELD);

/** Hands the stopping signals to `stop`, including one that came while they were held. */
export function onStopSignals(stop: (signal: NodeJS.Signals) => void): void {
  // Added before the holders go: with no listener left node stops watching the signal, and
  // one that arrived but was not yet dispatched would be lost.
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.off("SIGTERM", holdSigterm);
  process.off("SIGINT", holdSigint);
  if (inTerminal) {
    process.on("SIGHUP", () => stop("SIGHUP"));
    process.off("SIGHUP", holdSighup);
  }
  if (held !== null) stop(held);
}

/** Hands SIGHUP to `reload` from now on, unless in a terminal (see above). */
export function onReloadSignal(reload: () => void): void {
  if (inTerminal) return;
  process.on("SIGHUP", reload);
  process.off("SIGHUP", holdSighup);
}
