import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

/**
 * `node dist/bench/rss-watch.js <pid> <out.json>`: samples the resident set of a process and
 * of its children (the workers of `WORKERS=2`) every 10 ms, summed at the same instant, and
 * each time that sum reaches a new high writes what each process held then to <out.json>.
 * VmHWM tells the benchmark how high each process went on its own; this tells it what was
 * resident together at one moment, and of what, which a figure read after the row cannot.
 */

export interface RssMakeup {
  /** When the high was sampled (ms since the epoch), and the sample's total. */
  at: number; rssMb: number;
  /** malloc's main heap ([heap]), malloc's per-thread arenas, other anonymous memory (V8's heap, mostly; thread stacks), mapped files. */
  mallocMb: number; arenasMb: number; otherAnonMb: number; fileMb: number;
  /**
   * The proportional set size: each page shared with other processes (node's own code,
   * mapped from one file; the WAL index) counted as its share. Summed over processes it
   * counts each page once, as the machine holds it. Absent in records of earlier runs.
   */
  pssMb?: number;
}

/** The highest summed resident set of a process tree and what each process held then (the parent first). */
export interface TreeHigh { at: number; rssMb: number; pssMb: number; each: RssMakeup[] }

const ARENA_ALIGN = 64n << 20n; // glibc maps each thread arena at a 64 MiB boundary

/** One pass over /proc/<pid>/smaps, summing each mapping's Rss into its kind, and its Pss. */
export function makeup(pid: number): RssMakeup {
  const kinds = { mallocMb: 0, arenasMb: 0, otherAnonMb: 0, fileMb: 0 };
  let kind: keyof typeof kinds = "otherAnonMb";
  let total = 0;
  let pss = 0;
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const [, start, inode, name] = head;
      if (name === "[heap]") kind = "mallocMb";
      else if (inode !== "0" || name!.startsWith("/")) kind = "fileMb";
      else if (!name && BigInt(`0x${start}`) % ARENA_ALIGN === 0n && BigInt(`0x${start}`) > 1n << 40n) kind = "arenasMb";
      else kind = "otherAnonMb";
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) {
      kinds[kind] += Number(rss[1]) / 1024;
      total += Number(rss[1]) / 1024;
    }
    const share = /^Pss:\s+(\d+) kB/.exec(line);
    if (share) pss += Number(share[1]) / 1024;
  }
  const round = (n: number) => Math.round(n);
  return { at: Date.now(), rssMb: round(total), mallocMb: round(kinds.mallocMb), arenasMb: round(kinds.arenasMb), otherAnonMb: round(kinds.otherAnonMb), fileMb: round(kinds.fileMb), pssMb: round(pss) };
}

/** The process and its children, the parent first. */
export function processTree(pid: number): number[] {
  try {
    return [pid, ...execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).split("\n").filter(Boolean).map(Number)];
  } catch {
    return [pid]; // pgrep exits 1 when there are no children
  }
}

if (process.argv[1]?.endsWith("rss-watch.js")) {
  const root = Number(process.argv[2]);
  const out = process.argv[3]!;
  let pids = processTree(root);
  // Workers come and go only at start and after a crash: looked for twice a second.
  setInterval(() => (pids = processTree(root)), 500);
  let high = 0;
  setInterval(() => {
    let kb = 0;
    try {
      for (const pid of pids) kb += Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      // A worker gone between two looks; the parent gone means the service is.
      try {
        readFileSync(`/proc/${root}/status`);
      } catch {
        process.exit(0);
      }
      return;
    }
    // smaps costs a millisecond or two a process: read only for a high at least 2 MB above the last.
    if (kb < high + 2048) return;
    high = kb;
    try {
      const each = pids.map(makeup);
      const sum = (f: (m: RssMakeup) => number) => each.reduce((n, m) => n + f(m), 0);
      writeFileSync(out, JSON.stringify({ at: Date.now(), rssMb: sum((m) => m.rssMb), pssMb: sum((m) => m.pssMb ?? 0), each } satisfies TreeHigh));
    } catch {
      // gone meanwhile; the next sample tells
    }
  }, 10);
}
