import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { seal } from "./sealed-box.js";

// Seals in a worker thread: crypto_box_seal costs two X25519 multiplications (about
// 45 µs here), the largest single cost of a create, and on the event loop it delays
// every other request. The jobs of one event-loop turn travel in messages of up to
// MAX_JOBS each way.
// The thread runs plain JavaScript (no TypeScript loader there), so it spells out what
// seal() in sealed-box.ts does.
const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const sodium = require(workerData.sodium);
parentPort.on("message", (jobs) => {
  const boxes = jobs.map(({ text, key }) => {
    try {
      const message = Buffer.from(text, "utf8");
      const out = Buffer.alloc(message.length + sodium.crypto_box_SEALBYTES);
      sodium.crypto_box_seal(out, message, Buffer.from(key));
      return out;
    } catch {
      return null; // a key libsodium refuses: that job fails, the others go on
    }
  });
  parentPort.postMessage(boxes);
});
`;

/**
 * The most jobs one message carries. A turn's creates arrive together and, sealed in one
 * message, would wait together and then reach the write batch together, leaving the event
 * loop idle meanwhile; in parts, the first ones go on to their commit while the thread
 * seals the rest.
 */
const MAX_JOBS = 8;

interface Job {
  text: string;
  key: Uint8Array;
  resolve: (box: Buffer) => void;
  reject: (err: unknown) => void;
}

/**
 * Seals off the event loop, one worker thread for the process (its first use starts it).
 * Should the thread fail, sealing falls back to this thread: slower, never wrong. A job
 * whose key libsodium refuses fails alone.
 */
class SealWorker {
  private worker: Worker | null = null;
  /** Sealing here, on the caller's thread: the thread failed, or was never wanted (onEventLoop). */
  private failed = false;
  private queue: Job[] = [];
  /** Batches sent, oldest first; the worker answers them in order. */
  private inFlight: Job[][] = [];
  private scheduled = false;

  /** Seals on the caller's thread from now on; called before the first seal, no thread is ever started. */
  onEventLoop(): void {
    this.fail();
  }

  /** Where seals run now; "event loop" also once a failed thread was given up. */
  place(): SealingPlace {
    return this.failed ? "event loop" : "thread";
  }

  seal(plaintext: string, publicKey: Buffer): Promise<Buffer> {
    if (this.failed) {
      try {
        return Promise.resolve(seal(plaintext, publicKey));
      } catch (err) {
        return Promise.reject(err); // as a rejection, like the worker's, never a throw
      }
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ text: plaintext, key: publicKey, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // Once the current callback's promise continuations have run: the creates resolved by
        // one read batch or one poll callback go together, without waiting a turn of the loop.
        queueMicrotask(() => this.send());
      }
    });
  }

  private send(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (this.failed) return this.sealHere(batch);
    let posted = 0;
    try {
      const worker = this.start();
      for (; posted < batch.length; posted += MAX_JOBS) {
        const part = batch.slice(posted, posted + MAX_JOBS);
        worker.postMessage(part.map(({ text, key }) => ({ text, key })));
        this.inFlight.push(part);
      }
      worker.ref(); // until its answer is in: a waiting create keeps the process alive
    } catch {
      // No thread to be had: seal here from now on, what the thread still held included.
      this.fail();
      this.sealHere(batch.slice(posted));
    }
  }

  /** Gives the thread up: the jobs it held are sealed here, and so is every later one. */
  private fail(): void {
    if (this.failed) return;
    this.failed = true;
    this.worker = null;
    for (const batch of this.inFlight.splice(0)) this.sealHere(batch);
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const sodium = createRequire(import.meta.url).resolve("sodium-native");
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { sodium } });
    worker.on("message", (boxes: Uint8Array[]) => {
      // An answer that comes in after the thread failed finds its jobs sealed here already.
      if (this.failed) return;
      const batch = this.inFlight.shift()!;
      batch.forEach((job, i) => {
        const box = boxes[i];
        if (box) job.resolve(Buffer.from(box.buffer, box.byteOffset, box.byteLength));
        else job.reject(new Error("the public key could not be sealed to"));
      });
      if (this.inFlight.length === 0) worker.unref();
    });
    worker.on("error", () => this.fail());
    worker.on("exit", () => this.fail());
    // After the listeners, which ref it again: an idle thread keeps no process alive.
    worker.unref();
    this.worker = worker;
    return worker;
  }

  private sealHere(batch: Job[]): void {
    for (const job of batch) {
      try {
        job.resolve(seal(job.text, Buffer.from(job.key)));
      } catch (err) {
        job.reject(err);
      }
    }
  }
}

const shared = new SealWorker();
let requested = 0;

export type SealingPlace = "thread" | "event loop";

/**
 * Seals on the event loop from now on, for a process with no core to spare for the
 * thread (as many workers as cores): there the thread would only take turns with the
 * event loops, and it holds memory of its own, a V8 heap and a malloc arena (two workers'
 * threads held 9 to 14 MB together; BENCHMARKS.md, "Both cores").
 */
export function sealOnEventLoop(): void {
  shared.onEventLoop();
}

/** Where this process seals now. */
export const sealingPlace = (): SealingPlace => shared.place();

/** crypto_box_seal of `plaintext` to `publicKey`, computed off the event loop. */
export function sealOffLoop(plaintext: string, publicKey: Buffer): Promise<Buffer> {
  requested++;
  return shared.seal(plaintext, publicKey);
}

/** How many seals this process has asked for: work a refused request should not cause. */
export const sealsRequested = () => requested;
