/**
 * What the service's own Connect unary path (src/transport/connect-unary.ts) costs by itself:
 * the baseline's no-ops served by connect-node and, with OWN_UNARY=1, by that path, in turn
 * (the order turning each round), Connect JSON at 64 connections, 5-second runs.
 *
 *   npm run build && node dist/bench/own-path.js [rounds, default 4]
 *
 * Prints each run's requests a second and CPU µs per call, and the medians.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { load, NODE_FLAGS, type Target } from "./drive.js";

const rounds = Number(process.argv[2] ?? 4);
// The no-ops read nothing of the requests; the load generator still wants ids to put in them.
const dir = mkdtempSync(join(os.tmpdir(), "own-path-"));
const data = { token: "no-token", runnersFile: join(dir, "runners.txt"), idsFile: join(dir, "ids.txt") };
writeFileSync(data.runnersFile, "0190a0a0-0000-7000-8000-000000000001\n");
writeFileSync(data.idsFile, "0190a0a0-0000-7000-8000-000000000002\n");

async function start(own: boolean): Promise<Target> {
  const proc = spawn(process.execPath, [...NODE_FLAGS, "dist/bench/baseline.js"], {
    env: { ...process.env, PORT: "0", ...(own ? { OWN_UNARY: "1" } : {}) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<number>((resolve) => createInterface({ input: proc.stdout! }).once("line", (l) => resolve(Number(l))));
  return { name: own ? "connect-unary.ts" : "connect-node", url: `http://127.0.0.1:${port}`, proc };
}

const targets = [await start(false), await start(true)];
const runs = new Map<string, { rps: number; cpu: number }[]>();
for (let r = 0; r < rounds; r++) {
  for (const scenario of ["create", "get", "list"] as const) {
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
      const x = load(t, scenario, "connect-json", 64, data, 5);
      const key = `${scenario}, ${t.name}`;
      runs.set(key, [...(runs.get(key) ?? []), { rps: x.rps, cpu: x.cpu }]);
    }
  }
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
for (const [key, xs] of runs) {
  const each = xs.map((x) => `${Math.round(x.rps)} req/s ${Math.round(x.cpu)} µs`).join(", ");
  console.log(`${key}: median ${Math.round(median(xs.map((x) => x.rps)))} req/s, ${Math.round(median(xs.map((x) => x.cpu)))} µs of CPU a call (${each})`);
}
for (const t of targets) t.proc.kill("SIGTERM");
rmSync(dir, { recursive: true, force: true });
