import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { fromBinary, fromJsonString, type DescMessage } from "@bufbuild/protobuf";
import {
  CreateSCMIntegrationResponseSchema,
  GetSCMIntegrationResponseSchema,
  ListSCMIntegrationsResponseSchema,
} from "../gen/gitpod/v1/runner_configurations_pb.js";
import { PATHS, binaryRequest, grpcFrame, jsonRequest } from "./load/requests.js";
import { seed, type Seeded } from "./seed.js";
import { processTree } from "./rss-watch.js";

/**
 * What the benchmarks share: starting the compiled service and the baseline, driving load at
 * them over 127.0.0.1, and reading what a run cost them (CPU time, peak memory) from /proc.
 */

export type Scenario = "create" | "get" | "list";
export const PROTOCOLS = ["connect-json", "connect-binary", "grpc"] as const;
export type Protocol = (typeof PROTOCOLS)[number];
/**
 * rps and requests count successful calls only; errors, the failed ones (a run with any is
 * not a valid figure, and the report says so). cpu: CPU time the target's processes (all their
 * threads, workers included) spent per successful request, in µs; driverCpu, what the load
 * generator spent per request it sent (from /usr/bin/time; absent without it). diskKb: what
 * the target's processes read from the disk itself (not from the OS page cache) per successful
 * request, in KB: above nothing, the run measured the virtual disk as well (absent from the
 * records of runs made before it was counted).
 */
export interface Run { rps: number; p50: number; p99: number; errors: number; requests: number; cpu: number; driverCpu?: number; diskKb?: number }
export interface Target { name: string; url: string; proc: ChildProcess }
export type Dataset = Seeded & { file: string; runnersFile: string; idsFile: string };

export const ROOT = process.cwd();
export const log = (line: string) => process.stdout.write(`${line}\n`);
// Whatever happens, no service or baseline outlives the benchmark.
const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
});

/**
 * The node flags `npm start` runs the service with (package.json), read from there so
 * the benchmark measures what is deployed; the baseline gets the same runtime.
 */
export function nodeFlagsOf(dir: string): string[] {
  const start = (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts.start ?? "";
  const m = /\bnode((?: --\S+)*) dist\/src\/main\.js/.exec(start);
  if (!m) throw new Error(`${dir}/package.json's start script does not run dist/src/main.js with node: ${start}`);
  return m[1]!.trim().split(" ").filter(Boolean);
}
export const NODE_FLAGS = nodeFlagsOf(ROOT);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

async function waitForHealth(url: string, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`process exited with ${proc.exitCode}`);
    try {
      // The baseline has no /healthz: any HTTP answer means it listens.
      await fetch(`${url}/healthz`);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${url} did not come up`);
}

/**
 * The compiled service of the checkout at `dir` (this one unless given) on `dbFile`. With
 * `watch`, bench/rss-watch.ts follows its resident set and writes its makeup at each high to that file.
 */
export async function startService(dbFile: string, options: { workers?: number; dir?: string; name?: string; watch?: string } = {}): Promise<Target> {
  const workers = options.workers ?? 1;
  const port = await freePort();
  // One token drives all the load here, far past any sensible per-token limit: it is off.
  // The flags of the checkout it runs: a change of flags is part of what is compared.
  const proc = spawn(process.execPath, [...nodeFlagsOf(options.dir ?? ROOT), "dist/src/main.js"], {
    cwd: options.dir ?? ROOT,
    env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", DATABASE_URL: dbFile, LOG_LEVEL: "info", WORKERS: String(workers), RATE_LIMIT_PER_SECOND: "0", RATE_LIMIT_BYTES_PER_SECOND: "0" },
    stdio: "ignore",
  });
  children.add(proc);
  const url = `http://127.0.0.1:${port}`;
  await waitForHealth(url, proc);
  if (options.watch) {
    // It exits by itself once the service is gone.
    children.add(spawn(process.execPath, ["dist/bench/rss-watch.js", String(proc.pid), options.watch], { cwd: ROOT, stdio: "ignore" }));
  }
  return { name: options.name ?? (workers > 1 ? `service x${workers}` : "service"), url, proc };
}

/** The baseline; with `durableFile`, the durable no-op, whose creates are answered after a sync of that file (bench/baseline.ts). */
export async function startBaseline(options: { durableFile?: string } = {}): Promise<Target> {
  const port = await freePort();
  const env = { ...process.env, PORT: String(port), DURABLE_FILE: options.durableFile ?? "" };
  const proc = spawn(process.execPath, [...NODE_FLAGS, "dist/bench/baseline.js"], { cwd: ROOT, env, stdio: "ignore" });
  children.add(proc);
  const url = `http://127.0.0.1:${port}`;
  await waitForHealth(url, proc);
  return { name: options.durableFile ? "durable no-op" : "baseline", url, proc };
}

export async function stop(t: Target): Promise<void> {
  if (t.proc.exitCode !== null) return;
  const exited = new Promise((r) => t.proc.once("exit", r));
  t.proc.kill("SIGTERM");
  await exited;
}

/** Peak resident set (VmHWM) of a process and of each of its children (the workers), in MB, in that order. */
export function peakRssEachMb(pid: number): number[] {
  return processTree(pid).map((p) => {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, "utf8"));
    return m ? Math.round(Number(m[1]) / 1024) : 0;
  });
}

/** Peak resident set of a single-process target, in MB. */
export const peakRssMb = (pid: number): number => Math.max(...peakRssEachMb(pid));

/** What the process holds in memory now, by kind (anonymous, file pages, shared memory), for the report. */
export function residentMb(pid: number): string {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  const mb = (name: string) => Math.round(kb(name) / 1024);
  return `${mb("VmRSS")} MB resident: ${mb("RssAnon")} anonymous, ${mb("RssFile")} file, ${mb("RssShmem")} shared`;
}

const TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
/** User and system CPU time of these live processes (every thread), in µs. */
function cpuMicros(pids: number[]): number {
  let ticks = 0;
  for (const p of pids) {
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    const fields = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ");
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return (ticks / TICKS_PER_SECOND) * 1e6;
}

/** Bytes these live processes have had read from the storage device (`read_bytes` in /proc/PID/io). */
function diskReadBytes(pids: number[]): number {
  let bytes = 0;
  for (const p of pids) bytes += Number(/^read_bytes: (\d+)$/m.exec(readFileSync(`/proc/${p}/io`, "utf8"))?.[1] ?? 0);
  return bytes;
}

/**
 * Creates each target answered as done, warm-up runs included: after its service stops, its
 * table must hold at least that many more rows (see run.ts).
 */
export const acknowledgedCreates = new Map<Target, number>();

const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined;

let tagCounter = 0;
/** One run of `seconds` at concurrency `c`, wrk for HTTP/1.1 and our gRPC driver for gRPC. */
export function load(t: Target, s: Scenario, p: Protocol, c: number, data: { token: string; runnersFile: string; idsFile: string }, seconds: number): Run {
  const tag = `${process.pid}x${++tagCounter}`;
  const pids = processTree(t.proc.pid!);
  const cpuBefore = cpuMicros(pids);
  const diskBefore = diskReadBytes(pids);
  const [cmd, ...args] =
    p === "grpc"
      ? [process.execPath, "dist/bench/load/grpc.js", t.url, s, String(c), String(seconds), data.token, data.runnersFile, data.idsFile, tag]
      : ["wrk", "-t1", `-c${c}`, `-d${seconds}s`, "-s", "bench/load/wrk.lua", t.url, "--", s, p === "connect-json" ? "json" : "binary", data.token, data.runnersFile, data.idsFile, tag];
  // The load generator's own CPU time, which the machine's second core pays.
  const timeFile = join(os.tmpdir(), `scm-bench-time-${process.pid}`);
  const out = TIME
    ? execFileSync(TIME, ["-f", "%U %S", "-o", timeFile, cmd!, ...args], { cwd: ROOT, encoding: "utf8" })
    : execFileSync(cmd!, args, { cwd: ROOT, encoding: "utf8" });
  const line = out.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  if (!line) throw new Error(`no result from the load generator:\n${out}`);
  const r = JSON.parse(line) as { requests: number; ok: number; duration_us: number; errors: number; p50_us: number; p99_us: number };
  const cpu = (cpuMicros(pids) - cpuBefore) / Math.max(1, r.ok);
  const diskKb = (diskReadBytes(pids) - diskBefore) / 1000 / Math.max(1, r.ok);
  if (s === "create") acknowledgedCreates.set(t, (acknowledgedCreates.get(t) ?? 0) + r.ok);
  let driverCpu: number | undefined;
  if (TIME) {
    const [user, system] = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
    rmSync(timeFile, { force: true });
    driverCpu = ((user! + system!) * 1e6) / Math.max(1, r.requests);
  }
  return { rps: r.ok / (r.duration_us / 1e6), p50: r.p50_us / 1000, p99: r.p99_us / 1000, errors: r.errors, requests: r.ok, cpu, driverCpu, diskKb };
}

/**
 * One call of the scenario over the protocol, its answer checked, before a target's runs of
 * a row. The load generators count answers by their status alone, so a row could otherwise
 * measure answers of the wrong kind. The service must answer with what was asked for: a
 * create its new id, a Get the integration asked for, a List a full page of the runner's. A
 * no-op answers its empty message. Anything else ends the benchmark.
 */
export async function probe(t: Target, s: Scenario, p: Protocol, data: Dataset, service: boolean): Promise<void> {
  const ask = {
    runnerId: data.runnerIds[0]!, id: data.integrationIds[data.integrationIds.length >> 1]!,
    host: `probe-${process.pid}x${++tagCounter}.bench.example`, secret: "bench-probe-secret",
  };
  const schema: DescMessage = { create: CreateSCMIntegrationResponseSchema, get: GetSCMIntegrationResponseSchema, list: ListSCMIntegrationsResponseSchema }[s];
  const fail = (problem: string) => new Error(`${t.name}, ${s} over ${p}: ${problem}`);
  let answer: Record<string, unknown>;
  if (p === "grpc") {
    answer = fromBinary(schema, await grpcCall(t.url, PATHS[s], binaryRequest(s, ask), data.token).catch((err: Error) => Promise.reject(fail(err.message))));
  } else {
    const json = p === "connect-json";
    const res = await httpPost(`${t.url}${PATHS[s]}`, json ? "application/json" : "application/proto", data.token, json ? jsonRequest(s, ask) : binaryRequest(s, ask));
    if (res.status !== 200) throw fail(`HTTP ${res.status}: ${res.body.toString("utf8").slice(0, 200)}`);
    answer = json ? fromJsonString(schema, res.body.toString("utf8")) : fromBinary(schema, res.body);
  }
  if (s === "create") {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(String(answer.id))) throw fail(`no id in the answer: ${String(answer.id)}`);
    if (service) acknowledgedCreates.set(t, (acknowledgedCreates.get(t) ?? 0) + 1);
  } else if (s === "get") {
    const got = (answer.integration as { id?: string } | undefined)?.id;
    if (service ? got !== ask.id : got !== undefined) throw fail(`asked for ${ask.id}, answered ${got ?? "no integration"}`);
  } else {
    const page = answer.integrations as { runnerId: string }[];
    const full = page.length === 25 && page.every((x) => x.runnerId === ask.runnerId);
    if (service ? !full : page.length !== 0) throw fail(`asked for a page of 25 of runner ${ask.runnerId}, answered ${page.length} integrations`);
  }
}

/** One HTTP/1.1 POST on a connection of its own (a kept-alive one may have been closed by the server meanwhile). */
function httpPost(url: string, contentType: string, token: string, body: string | Uint8Array): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent: false, headers: { "content-type": contentType, authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** One gRPC call over cleartext HTTP/2: the answer's message, or an error saying how it failed. */
function grpcCall(url: string, path: string, request: Uint8Array, token: string): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${token}` });
    const chunks: Buffer[] = [];
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (headers = h));
    stream.on("trailers", (h) => (trailers = h));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      const status = trailers["grpc-status"] ?? headers["grpc-status"];
      const body = Buffer.concat(chunks);
      if (Number(headers[":status"]) !== 200 || status !== "0") reject(new Error(`HTTP ${headers[":status"]}, grpc-status ${status}: ${decodeURIComponent(String(trailers["grpc-message"] ?? headers["grpc-message"] ?? ""))}`));
      else if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) reject(new Error("the answer is not one uncompressed message"));
      else resolve(body.subarray(5));
    });
    stream.end(grpcFrame(request));
  });
}

/**
 * Waits until the targets are idle (under 5% of a core for 100 ms, checkpoints and the
 * like done, at most 5 s) and the OS has written back the files they changed, so that
 * a run starts on a quiet machine instead of paying for the run before it: a baseline run
 * right after the service's creates showed a p99 of 190 ms where the others showed 16.
 */
export async function settle(targets: Target[]): Promise<void> {
  const pids = targets.filter((t) => t.proc.exitCode === null).flatMap((t) => processTree(t.proc.pid!));
  const until = Date.now() + 5000;
  for (;;) {
    const before = cpuMicros(pids);
    await new Promise((r) => setTimeout(r, 100));
    if (cpuMicros(pids) - before < 5000 || Date.now() > until) break;
  }
  execFileSync("sync");
}

/** The middle value; for an even count, the mean of the two middle ones. */
export function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
export function summarize(runs: Run[]): Run {
  return {
    rps: median(runs.map((r) => r.rps)), p50: median(runs.map((r) => r.p50)), p99: median(runs.map((r) => r.p99)),
    errors: runs.reduce((n, r) => n + r.errors, 0), requests: runs.reduce((n, r) => n + r.requests, 0), cpu: median(runs.map((r) => r.cpu)),
    driverCpu: runs.every((r) => r.driverCpu !== undefined) ? median(runs.map((r) => r.driverCpu!)) : undefined,
    diskKb: median(runs.map((r) => r.diskKb ?? 0)),
  };
}

/** Seeds a database in `work` and writes the runner and integration ids the load generators pick from. */
export function prepareData(work: string, name: string, size: { runners: number; integrations: number }): Dataset {
  const paths = dataPaths(work, name);
  const t0 = Date.now();
  const seeded = seed(paths.file, size.runners, size.integrations);
  log(`seeded ${name}: ${size.integrations} integrations over ${size.runners} runners in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  writeFileSync(paths.runnersFile, seeded.runnerIds.join("\n") + "\n");
  writeFileSync(paths.idsFile, seeded.integrationIds.join("\n") + "\n");
  return { ...seeded, ...paths };
}

/** Where prepareData puts the seed `name` in `dir`: the database and the id lists the load generators read. */
function dataPaths(dir: string, name: string): { file: string; runnersFile: string; idsFile: string } {
  return { file: join(dir, `${name}.db`), runnersFile: join(dir, `${name}-runners.txt`), idsFile: join(dir, `${name}-ids.txt`) };
}

/**
 * `prepareData` kept in `dir` for later runs of the same size: seeding a million rows takes
 * minutes, and a comparison only copies the seed. The name carries a hash of what shapes the
 * file (the migrations, the seed script, how a database is opened), so a change to any of them
 * seeds afresh. The record of the seed is written last: one cut short is made again.
 */
export function keptData(dir: string, size: { runners: number; integrations: number }): Dataset {
  const hash = createHash("sha256");
  const migrations = readdirSync(join(ROOT, "drizzle")).filter((f) => f.endsWith(".sql")).sort().map((f) => `drizzle/${f}`);
  for (const f of [...migrations, "bench/seed.ts", "src/store/database.ts"]) hash.update(f).update(readFileSync(join(ROOT, f)));
  const name = `seed-${size.integrations}x${size.runners}-${hash.digest("hex").slice(0, 12)}`;
  const record = join(dir, `${name}.json`);
  const paths = dataPaths(dir, name);
  if (existsSync(record)) {
    log(`seed kept in ${dir}: ${name}`);
    return { ...(JSON.parse(readFileSync(record, "utf8")) as Seeded), ...paths };
  }
  mkdirSync(dir, { recursive: true });
  // What a seed cut short left behind: seeding starts from an empty file.
  for (const f of [paths.file, `${paths.file}-wal`, `${paths.file}-shm`]) rmSync(f, { force: true });
  const data = prepareData(dir, name, size);
  writeFileSync(record, JSON.stringify({ token: data.token, runnerIds: data.runnerIds, integrationIds: data.integrationIds } satisfies Seeded));
  return data;
}

/**
 * Reads the database file (and its WAL) once, so it is in the OS page cache. This VM
 * reclaims cold file pages (a DAMON reclaim thread runs) even with most of its memory
 * free; without this, figures on the large table measure its virtual disk instead.
 */
export function warmFileCache(file: string): void {
  const chunk = Buffer.allocUnsafe(1 << 20);
  for (const f of [file, `${file}-wal`]) {
    let fd: number;
    try {
      fd = openSync(f, "r");
    } catch {
      continue; // no WAL at the moment
    }
    try {
      while (readSync(fd, chunk, 0, chunk.length, null) > 0);
    } finally {
      closeSync(fd);
    }
  }
}

export interface MachineSpeed { loopMs: number; syscallUs: number; readUs: number }
/**
 * How fast this machine is at the moment, by three costs the figures rest on: a fixed loop
 * of plain JavaScript, a system call that does next to nothing (a read of one byte), and a 2 KiB read
 * of `file` from the OS page cache (what SQLite does for a page its cache lacks). This VM's
 * speed moves from day to day, and not all three alike, so a report names them: a
 * run compares with another only where these agree.
 */
export function machineSpeed(file: string): MachineSpeed {
  const best = (f: () => number) => Math.min(f(), f(), f());
  const loopMs = best(() => {
    const t0 = performance.now();
    let x = 0;
    for (let i = 0; i < 50_000_000; i++) x = (x + i * 7) % 1_000_003;
    if (x < 0) log(String(x)); // keeps the loop from being optimized away
    return performance.now() - t0;
  });
  const fd = openSync(file, "r");
  try {
    const calls = 100_000;
    const one = Buffer.alloc(1);
    const syscallUs = best(() => {
      const t0 = performance.now();
      for (let i = 0; i < calls; i++) readSync(fd, one, 0, 1, 0);
      return ((performance.now() - t0) * 1000) / calls;
    });
    const pages = Math.max(1, Math.floor(fstatSync(fd).size / 2048));
    const page = Buffer.allocUnsafe(2048);
    const readUs = best(() => {
      const t0 = performance.now();
      for (let i = 0; i < calls; i++) readSync(fd, page, 0, 2048, ((i * 7919) % pages) * 2048);
      return ((performance.now() - t0) * 1000) / calls;
    });
    return { loopMs, syscallUs, readUs };
  } finally {
    closeSync(fd);
  }
}
