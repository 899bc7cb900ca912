import type { Worker } from "node:cluster";
import { labelled, type Family } from "./exposition.js";

/**
 * With WORKERS, the primary serves the metrics page and each worker keeps its own figures:
 * on a scrape the primary asks every serving worker over IPC and writes their answers under
 * a `worker` label. Not summed: a replaced worker starts again from zero, which Prometheus
 * reads as a reset of that worker's series, where a sum would seem to run backwards.
 */
type Ask = { metricsAsk: number };
type Answer = { metricsAnswer: number; families: Family[] };

const isAsk = (m: unknown): m is Ask => typeof (m as Ask | null)?.metricsAsk === "number";
const isAnswer = (m: unknown): m is Answer => typeof (m as Answer | null)?.metricsAnswer === "number" && Array.isArray((m as Answer).families);

/** How long a scrape waits for a worker; one that has not answered by then is left off the page. */
export const WORKER_ANSWER_MS = 2000;

/** In a worker: answers the primary's asks with this worker's families. */
export function answerMetricsAsks(collect: () => Family[]): void {
  process.on("message", (m: unknown) => {
    // The channel may be closing (the worker stops): nothing to do about a lost answer.
    if (isAsk(m)) process.send?.({ metricsAnswer: m.metricsAsk, families: collect() } satisfies Answer, undefined, {}, () => {});
  });
}

/** In the primary: asks workers for their families and gathers the answers. */
export class WorkerMetrics {
  private next = 1;
  /** Per scrape: takes a worker's families, or null when it cannot be asked. */
  private readonly pending = new Map<number, (workerId: number, families: Family[] | null) => void>();

  /** Feed every message from a worker through here. */
  onMessage(worker: Worker, m: unknown): void {
    if (isAnswer(m)) this.pending.get(m.metricsAnswer)?.(worker.id, m.families);
  }

  /**
   * The families of every worker in `workers` that answers within WORKER_ANSWER_MS, each under
   * its `worker` label, and how many answered.
   */
  gather(workers: readonly Worker[]): Promise<{ families: Family[]; answered: number }> {
    const id = this.next++;
    const waiting = new Set(workers.map((w) => w.id));
    const got = new Map<number, Family[]>();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.pending.delete(id);
        // In worker order, whichever answered first.
        resolve({ families: [...got.entries()].sort(([a], [b]) => a - b).flatMap(([, families]) => families), answered: got.size });
      };
      const timer = setTimeout(done, WORKER_ANSWER_MS);
      this.pending.set(id, (workerId, families) => {
        if (!waiting.delete(workerId)) return;
        if (families !== null) got.set(workerId, labelled(families, { worker: String(workerId) }));
        if (waiting.size === 0) done();
      });
      // A worker whose channel has closed is simply not waited for.
      for (const w of workers) w.send({ metricsAsk: id } satisfies Ask, undefined, (err) => err && this.pending.get(id)?.(w.id, null));
      if (waiting.size === 0) done();
    });
  }
}
