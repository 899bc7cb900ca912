import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import { newKeyPair } from "../src/crypto/sealed-box.js";
import { createLogger } from "../src/log.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { createApp, type AppOptions } from "../src/server.js";
import { openDatabase, type Db } from "../src/store/database.js";
import { listen, type RunningServer } from "../src/transport/http-server.js";
import { SecretWatch } from "./secret-watch.js";

export interface TestServer {
  url: string;
  db: Db;
  /** An API token of organization "acme". */
  token: string;
  /** An API token of a second organization, "other". */
  otherToken: string;
  logs: string[];
  /** Watches this server for leaked tokens and secrets; checked on close. */
  watch: SecretWatch;
  close(): Promise<void>;
}

/** What a test may change about its server; the rate limit is off unless given. */
export type ServerOptions = Pick<AppOptions, "rateLimit" | "bodyRateLimit" | "idempotencyTtlMs" | "interceptors" | "corsOrigins" | "ownUnary">;

/** The PUBLIC_URL test servers are configured with. */
export const PUBLIC_URL = "https://scm.example.test";

/**
 * A real server on 127.0.0.1 port 0 over a fresh on-disk SQLite with the migrations
 * applied. Closing it checks that no token or client secret it saw reached the
 * database files, the log or any response other than the one that issued it.
 */
export async function startServer(options: ServerOptions = {}): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), "scm-test-"));
  const file = join(dir, "test.db");
  const db = openDatabase(file);
  createOrganization(db, "acme");
  createOrganization(db, "other");
  const token = createApiToken(db, "acme").token;
  const otherToken = createApiToken(db, "other").token;
  return serveDatabase(db, file, dir, { token, otherToken }, options);
}

/**
 * Serves an open database as startServer does, for a test that made the database itself;
 * `token` and `otherToken` are API tokens of two organizations in it. Closing the server
 * runs the leak watch and removes `dir`, the folder that holds `file`.
 */
export async function serveDatabase(
  db: Db,
  file: string,
  dir: string,
  tokens: { token: string; otherToken: string },
  options: ServerOptions = {},
): Promise<TestServer> {
  const logs: string[] = [];
  const watch = new SecretWatch();
  watch.noteToken(tokens.token);
  watch.noteToken(tokens.otherToken);
  const app = createApp(db, createLogger("info", (l) => logs.push(l)), {
    publicUrl: PUBLIC_URL,
    ...options,
    interceptors: [watch.interceptor(), ...(options.interceptors ?? [])],
  });
  const server: RunningServer = await listen(watch.wrap(app.handler), 0, "127.0.0.1", app.listenOptions);
  return {
    url: `http://127.0.0.1:${server.address.port}`,
    db,
    ...tokens,
    logs,
    watch,
    async close() {
      await server.shutdown(1000);
      await app.close();
      try {
        watch.finish(file, logs, () => db.$client.open && db.$client.close());
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** A Connect JSON call by plain fetch, exactly as the README's curl example makes it. */
export async function call(
  s: TestServer,
  path: string,
  body: unknown,
  token: string | null = s.token,
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${s.url}/${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

/** Creates a runner through the API; answers its id and its own access token. */
export async function createRunner(s: TestServer, token = s.token, name = "runner-one") {
  const r = await call(s, "gitpod.v1.RunnerService/CreateRunner", {
    name,
    kind: "RUNNER_KIND_REMOTE",
    provider: "RUNNER_PROVIDER_LINUX_HOST",
  }, token);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { runnerId: r.body.runner.runnerId as string, runnerToken: r.body.accessToken as string };
}

/** Signs the runner up with a fresh X25519 key pair, as a runner would; answers the keys. */
export async function signUp(s: TestServer, runnerToken: string) {
  const keys = newKeyPair();
  const r = await call(s, "gitpod.v1.RunnerInteractionService/Signup", { publicKey: keys.publicKey.toString("base64") }, runnerToken);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return keys;
}

/**
 * Counts with `countSql` in a copy of the database's main file alone, without its WAL: what
 * checkpoints have put there. Tries again (checkpoints run every 50 ms) until the count
 * reaches `want`; a copy taken while a checkpoint writes may be torn, and that round does
 * not count. Returns the last count, -1 when no whole copy was seen.
 */
export async function countInMainFile(file: string, countSql: string, want: number): Promise<number> {
  const copy = `${file}.main-only`;
  let found = -1;
  for (let i = 0; i < 40 && found < want; i++) {
    copyFileSync(file, copy);
    const alone = new Database(copy, { readonly: true });
    try {
      const whole = alone.pragma("integrity_check", { simple: true }) === "ok";
      found = whole ? (alone.prepare(countSql).pluck().get() as number) : -1;
    } catch {
      found = -1;
    } finally {
      alone.close();
    }
    if (found < want) await new Promise((r) => setTimeout(r, 250));
  }
  rmSync(copy, { force: true });
  return found;
}

/** The service as a child process (src/main.ts), as `npm start` runs it. */
export interface Service {
  child: ChildProcess;
  port: number;
  /** stdout and stderr as they came. */
  out: { text: string; err: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts src/main.ts on `dbFile` (with `extraEnv` added to the environment) and resolves once it listens. */
export async function startService(dbFile: string, extraEnv: Record<string, string> = {}): Promise<Service> {
  const env = {
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    DATABASE_URL: dbFile,
    // One token sends everything here; the per-token rate limit would only get in the way.
    RATE_LIMIT_PER_SECOND: "0",
    ...extraEnv,
  };
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { env, stdio: ["ignore", "pipe", "pipe"] });
  const out = { text: "", err: "" };
  child.stdout!.on("data", (d) => (out.text += d));
  child.stderr!.on("data", (d) => (out.err += d));
  // "close", once its output is all read too: "exit" may come before its last lines.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("close", (code, signal) => resolve({ code, signal })),
  );
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /"msg":"listening","address":"[^"]*:(\d+)"/.exec(out.text);
      if (m) {
        clearInterval(timer);
        resolve(Number(m[1]));
      }
    }, 10);
    void exited.then(({ code }) => {
      clearInterval(timer);
      reject(new Error(`the service exited (${code}) before listening: ${out.text}${out.err}`));
    });
  });
  return { child, port, out, exited };
}

/**
 * Another process writes some 10 MiB through the database's WAL, never checkpointing, and is
 * killed (SIGKILL) before it closes: the WAL is left that long. With `committed`, the writes
 * are committed (a table filled and dropped); without, they are a transaction's pages that
 * spilled into the WAL before it committed, which a later open ignores, leaving all that
 * length free to reuse.
 */
export function crashMidWrite(file: string, committed: boolean): void {
  const result = spawnSync(process.execPath, ["-e", `
    const db = require("better-sqlite3")(${JSON.stringify(file)});
    db.pragma("wal_autocheckpoint = 0");
    db.pragma("cache_size = 20");
    db.exec("BEGIN; CREATE TABLE filler (b BLOB)");
    const insert = db.prepare("INSERT INTO filler VALUES (randomblob(1500))");
    for (let i = 0; i < 7000; i++) insert.run();
    if (${committed}) db.exec("DROP TABLE filler; COMMIT");
    process.kill(process.pid, "SIGKILL");
  `], { stdio: "inherit" });
  assert.equal(result.signal, "SIGKILL", `the writer was to be killed: ${result.error ?? result.status}`);
}

/** Whether process `pid` has `file` open (a start waiting on a locked database has it open). */
export function hasOpen(pid: number, file: string): boolean {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === file;
      } catch {
        return false;
      }
    });
  } catch {
    return false; // gone
  }
}

/**
 * The child processes of `pid` whose command line names `script`: a primary's workers, say. Not
 * every child is one: under tsx, a process that had to compile runs esbuild's service as a child too.
 */
export function childrenRunning(pid: number, script: string): number[] {
  let children: number[];
  try {
    children = execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).trim().split("\n").map(Number);
  } catch {
    return []; // pgrep exits 1 when there are none
  }
  return children.filter((c) => {
    try {
      return readFileSync(`/proc/${c}/cmdline`, "latin1").includes(script);
    } catch {
      return false;
    }
  });
}

/** The log lines of `s` with this message, parsed. */
export function lines(s: Service, msg: string): Record<string, any>[] {
  return s.out.text.split("\n").filter((l) => l.includes(`"msg":"${msg}"`)).map((l) => JSON.parse(l));
}

/**
 * Random numbers a failing run can replay: from TEST_SEED when set, else from a seed drawn
 * now, which the test's output shows (`# seed ...`); a run that fails is run again with it.
 */
export function seededRandom(t: { diagnostic(message: string): void }): () => number {
  const seed = process.env.TEST_SEED ? Number(process.env.TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`seed ${seed} (TEST_SEED=${seed} replays the order it chose)`);
  // mulberry32: small, and enough to order a test's steps.
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Waits until `done`, up to `withinMs`, and fails naming `what` if it never is. */
export async function until(what: string, done: () => boolean, withinMs = 5000): Promise<void> {
  for (let waited = 0; waited < withinMs && !done(); waited += 25) await new Promise((r) => setTimeout(r, 25));
  assert.ok(done(), what);
}

/** The metrics page as samples, keyed `name{label="value",...}` with labels in name order. */
export type MetricsPage = Map<string, number>;

/**
 * Fetches the metrics page from 127.0.0.1:`port` and reads it strictly: every sample's family
 * has one HELP and one TYPE before it and its samples together, and a histogram's buckets
 * count up to its `_count`. Throws on anything else.
 */
export async function scrapeMetrics(port: number, host = "127.0.0.1"): Promise<MetricsPage> {
  const res = await fetch(`http://${host.includes(":") ? `[${host}]` : host}:${port}/metrics`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const page: MetricsPage = new Map();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  const typed = new Map<string, string>();
  const helped = new Set<string>();
  const closed = new Set<string>();
  let current = "";
  const text = await res.text();
  assert.ok(text.endsWith("\n"), "the page ends with a line feed");
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta;
      if (kind === "TYPE") {
        assert.ok(!typed.has(name!), `one TYPE for ${name}`);
        assert.match(rest!, /^(counter|gauge|histogram)$/);
        typed.set(name!, rest!);
      } else {
        assert.ok(!helped.has(name!), `one HELP for ${name}`);
        helped.add(name!);
      }
      if (current !== name) closed.add(current);
      current = name!;
      continue;
    }
    const label = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*"';
    const m = new RegExp(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\\{(${label}(?:,${label})*)\\})? (-?\\d+(?:\\.\\d+)?(?:e[+-]?\\d+)?|[+-]Inf|NaN)$`).exec(line);
    assert.ok(m, `a sample line: ${JSON.stringify(line)}`);
    const [, name, labelText = "", value] = m;
    assert.ok(helped.has(current) && typed.has(current), `${current} has its HELP and TYPE before its samples`);
    const family = typed.has(name!) ? name! : name!.replace(/_(bucket|sum|count)$/, "");
    assert.ok(typed.has(family), `${name} has a TYPE before it`);
    assert.equal(family, current, `${name}'s samples are together, under their family`);
    assert.ok(!closed.has(family), `${family} is written once`);
    const labels = Object.fromEntries([...labelText.matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => [k!, v!]));
    const key = `${name}${labelText ? `{${Object.keys(labels).sort().map((k) => `${k}="${labels[k]}"`).join(",")}}` : ""}`;
    assert.ok(!page.has(key), `one sample ${key}`);
    const n = value === "+Inf" ? Infinity : value === "-Inf" ? -Infinity : Number(value);
    page.set(key, n);
    samples.push({ name: name!, labels, value: n });
  }
  // A histogram's buckets count up, and the last (+Inf) is its count.
  for (const count of samples.filter((x) => x.name.endsWith("_count") && typed.get(x.name.slice(0, -6)) === "histogram")) {
    const bucketName = `${count.name.slice(0, -6)}_bucket`;
    const sameSeries = (l: Record<string, string>) => Object.keys(l).length === Object.keys(count.labels).length + 1 && Object.entries(count.labels).every(([k, v]) => l[k] === v);
    const buckets = samples
      .filter((b) => b.name === bucketName && sameSeries(b.labels))
      .map((b) => [b.labels.le === "+Inf" ? Infinity : Number(b.labels.le), b.value] as const)
      .sort((a, b) => a[0] - b[0]);
    assert.ok(buckets.length > 1 && buckets.at(-1)![0] === Infinity, `${count.name}: buckets up to +Inf`);
    buckets.forEach(([, v], i) => assert.ok(i === 0 || v >= buckets[i - 1]![1], `${count.name}: buckets count up`));
    assert.equal(buckets.at(-1)![1], count.value, `${count.name}: the +Inf bucket is the count`);
  }
  return page;
}

/** The port of the metrics page `s` logged. */
export function metricsPort(s: Service): number {
  const address = lines(s, "metrics listening")[0]?.address as string | undefined;
  assert.ok(address, "the metrics page listens");
  return Number(address.split(":").at(-1));
}
