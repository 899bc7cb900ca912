import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import Database from "better-sqlite3";
import os from "node:os";
import { join } from "node:path";
import { PROTOCOLS, ROOT, keptData, load, log, median, prepareData, settle, startBaseline, startService, stop, warmFileCache, type Protocol, type Run, type Scenario, type Target } from "./drive.js";

/**
 * `npm run bench:compare -- REV [SCENARIOS] [CONCURRENCY]`: this checkout against git
 * revision REV, side by side with the baseline, on copies of one seeded database.
 * Each round runs baseline, REV and this checkout in turn (the last two swapping places from
 * one round to the next, each run waiting for a quiet machine), so drift on the machine
 * touches all three alike; figures are medians of the rounds, and each service's ratio is
 * the median of its runs over the baseline run of their round. Each service runs with the
 * node flags of its own checkout's `npm start`. For a change's effect, where the
 * full `npm run bench` is too slow and one run too noisy to tell a few percent.
 *
 *   npm run bench:compare -- HEAD~1 get,list 64
 *
 * BENCH_ROWS (default 1000000) and BENCH_ROUNDS (default 4, and even: each service takes
 * each place equally often) size it; BENCH_PROTOCOL picks the
 * protocol (connect-json, the default, connect-binary or grpc); BENCH_SEED_DIR keeps the
 * seed in that folder for the next comparison of the same size (see keptData).
 * The database is seeded by this checkout's code, so a change to how a new database is made
 * (its page size, its schema) is on both sides and does not show here. REV's copy forgets the
 * migrations REV does not know (their records only: REV would refuse a database of a newer
 * release), which is sound while those migrations only add what an older build ignores.
 */

const [rev, scenarioArg = "create,get,list", concurrencyArg = "64"] = process.argv.slice(2);
if (!rev) {
  process.stderr.write("usage: npm run bench:compare -- REV [create,get,list] [concurrency]\n");
  process.exit(2);
}
const scenarios = scenarioArg.split(",") as Scenario[];
for (const s of scenarios) if (!["create", "get", "list"].includes(s)) throw new Error(`unknown scenario: ${s}`);
const concurrency = Number(concurrencyArg);
const rows = Number(process.env.BENCH_ROWS ?? 1_000_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 4);
if (!Number.isInteger(rounds) || rounds < 2 || rounds % 2 !== 0) throw new Error(`BENCH_ROUNDS must be an even number, at least 2: each service takes each place equally often (got ${process.env.BENCH_ROUNDS})`);
const SECONDS = 4;
const protocol = (process.env.BENCH_PROTOCOL ?? "connect-json") as Protocol;
if (!PROTOCOLS.includes(protocol)) throw new Error(`unknown BENCH_PROTOCOL: ${protocol} (one of ${PROTOCOLS.join(", ")})`);

const work = mkdtempSync(join(os.tmpdir(), "scm-compare-"));
const other = join(work, "checkout");
try {
  // The other revision, built with this checkout's dependencies.
  execFileSync("git", ["worktree", "add", "--detach", other, rev], { cwd: ROOT, stdio: "ignore" });
  symlinkSync(join(ROOT, "node_modules"), join(other, "node_modules"));
  execFileSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], { cwd: other, stdio: "inherit" });

  const size = { runners: Math.max(1, Math.round(rows / 100)), integrations: rows };
  const data = process.env.BENCH_SEED_DIR ? keptData(process.env.BENCH_SEED_DIR, size) : prepareData(work, "compare", size);
  // Each service writes its own copy: creates of one must not grow the other's table.
  const files = ["before", "after"].map((name) => {
    const file = join(work, `${name}.db`);
    copyFileSync(data.file, file);
    return file;
  });
  forgetNewerMigrations(files[0]!, other);
  const targets: Target[] = [
    await startBaseline(),
    await startService(files[0]!, { dir: other, name: rev }),
    await startService(files[1]!, { name: "this checkout" }),
  ];

  log(`${protocol} at ${concurrency}, ${rows} rows, median of ${rounds} rounds of ${SECONDS} s`);
  log("| scenario | target | req/s | ratio to baseline | CPU µs per request | p99 ms | errors |\n|---|---|---|---|---|---|---|");
  for (const s of scenarios) {
    for (const file of files) warmFileCache(file);
    for (const t of targets) {
      await settle(targets);
      load(t, s, protocol, 64, data, 2); // JIT and caches settle
    }
    const runs: Run[][] = targets.map(() => []);
    // The two services swap places each round: the one run just after the other meets its
    // checkpoints still at work, which showed as a p99 half again as high for the same build.
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? [0, 1, 2] : [0, 2, 1];
      for (const i of order) {
        await settle(targets);
        runs[i]!.push(load(targets[i]!, s, protocol, concurrency, data, SECONDS));
      }
    }
    targets.forEach((t, i) => {
      const m = (f: (r: Run) => number) => median(runs[i]!.map(f));
      const ratio = median(runs[i]!.map((r, round) => r.rps / runs[0]![round]!.rps));
      const errors = runs[i]!.reduce((n, r) => n + r.errors, 0);
      log(`| ${s} | ${t.name} | ${m((r) => r.rps).toFixed(0)} | ${ratio.toFixed(2)} | ${m((r) => r.cpu).toFixed(0)} | ${m((r) => r.p99).toFixed(1)} | ${errors} |`);
    });
  }
  for (const t of targets) await stop(t);
} finally {
  try {
    execFileSync("git", ["worktree", "remove", "--force", other], { cwd: ROOT, stdio: "ignore" });
  } catch {
    // never added
  }
  rmSync(work, { recursive: true, force: true });
}

/** Removes from `file` the records of migrations the checkout at `dir` does not have (see above). */
function forgetNewerMigrations(file: string, dir: string): void {
  const journal = JSON.parse(readFileSync(join(dir, "drizzle/meta/_journal.json"), "utf8")) as { entries: { when: number }[] };
  const newest = Math.max(...journal.entries.map((e) => e.when));
  const db = new Database(file);
  try {
    db.prepare('DELETE FROM "__drizzle_migrations" WHERE created_at > ?').run(newest);
  } finally {
    db.close();
  }
}
