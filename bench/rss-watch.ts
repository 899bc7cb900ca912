import { readFileSync, writeFileSync } from "node:fs";

/**
 * `node dist/bench/rss-watch.js <pid> <out.json>`: samples a process's resident set every
 * 10 ms and, each time it reaches a new high, writes what it is made of to <out.json>. VmHWM
 * tells the benchmark how high the service went; this tells it what was resident then,
 * which a figure read after the row, once the moment has passed, cannot.
 */

export interface RssMakeup {
  /** When the high was sampled (ms since the epoch), and the sample's total. */
  at: number; rssMb: number;
  /** malloc's main heap ([heap]), malloc's per-thread arenas, other anonymous memory (V8's heap, mostly; thread stacks), mapped files. */
  mallocMb: number; arenasMb: number; otherAnonMb: number; fileMb: number;
}

const ARENA_ALIGN = 64n << 20n; // glibc maps each thread arena at a 64 MiB boundary

/** One pass over /proc/<pid>/smaps, summing each mapping's Rss into its kind. */
export function makeup(pid: number): RssMakeup {
  const kinds = { mallocMb: 0, arenasMb: 0, otherAnonMb: 0, fileMb: 0 };
  let kind: keyof typeof kinds = "otherAnonMb";
  let total = 0;
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
  }
  const round = (n: number) => Math.round(n);
  return { at: Date.now(), rssMb: round(total), mallocMb: round(kinds.mallocMb), arenasMb: round(kinds.arenasMb), otherAnonMb: round(kinds.otherAnonMb), fileMb: round(kinds.fileMb) };
}

if (process.argv[1]?.endsWith("rss-watch.js")) {
  const pid = Number(process.argv[2]);
  const out = process.argv[3]!;
  let high = 0;
  setInterval(() => {
    let status: string;
    try {
      status = readFileSync(`/proc/${pid}/status`, "utf8");
    } catch {
      process.exit(0); // the process is gone
    }
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
    // smaps costs a millisecond or two: read it only for a high at least 2 MB above the last.
    if (kb < high + 2048) return;
    high = kb;
    try {
      writeFileSync(out, JSON.stringify(makeup(pid)));
    } catch {
      process.exit(0);
    }
  }, 10);
}
