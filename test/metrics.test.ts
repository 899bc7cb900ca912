import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { loadConfig } from "../src/config.js";
import { render, RequestMetrics } from "../src/metrics/exposition.js";
import { childrenRunning, lines, metricsPort, scrapeMetrics, startService, until, type MetricsPage, type Service } from "./harness.js";

const call = (s: Service, path: string, body: unknown, token?: string) =>
  fetch(`http://127.0.0.1:${s.port}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });

/** Writes `text` on a new connection and answers what came back once the server closed it. */
function rawExchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = "";
    const sock = net.connect(port, "127.0.0.1", () => sock.write(text));
    sock.on("data", (d) => (got += d.toString("latin1")));
    sock.on("error", reject);
    sock.on("close", () => resolve(got));
  });
}

/** Scrapes until `want` holds of the page: a request's figures are counted as its answer ends, a moment after the client has it. */
async function scrapeUntil(port: number, what: string, want: (page: MetricsPage) => boolean, host?: string): Promise<MetricsPage> {
  let page = await scrapeMetrics(port, host);
  for (let i = 0; i < 100 && !want(page); i++) {
    await new Promise((r) => setTimeout(r, 50));
    page = await scrapeMetrics(port, host);
  }
  assert.ok(want(page), `${what}: ${JSON.stringify([...page].filter(([k]) => /^scm_(requests_total|workers)/.test(k)))}`);
  return page;
}

it("METRICS_PORT serves a Prometheus page on a listener of its own: requests by procedure and code, their durations, commits, the database's size", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-metrics-"));
  const s = await startService(join(dir, "m.db"), { METRICS_PORT: "0", SHUTDOWN_TIMEOUT_MS: "5000" }); // time to scrape the drain, on a loaded machine too
  t.after(() => {
    s.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(s.out.text)![0];
  const port = metricsPort(s);
  assert.match(lines(s, "metrics listening")[0]!.address, /^127\.0\.0\.1:\d+$/, "loopback unless METRICS_HOST says otherwise");

  const before = await scrapeMetrics(port);
  assert.equal(before.get("scm_commit_writes_total"), 0);
  assert.equal(before.get("scm_database_usable"), 1);
  assert.ok(![...before.keys()].some((k) => k.startsWith("scm_requests_total")), "no requests yet");

  for (const name of ["runner-one", "runner-two"]) assert.equal((await call(s, "/gitpod.v1.RunnerService/CreateRunner", { name, provider: "RUNNER_PROVIDER_AWS_EC2" }, token)).status, 200);
  assert.equal((await call(s, "/gitpod.v1.RunnerService/GetRunner", { runnerId: randomUUID() }, token)).status, 404);
  assert.equal((await call(s, "/gitpod.v1.RunnerService/ListRunners", {})).status, 401);
  // Errors connect-node answers before the service's code runs count under their Connect code.
  const badJson = await fetch(`http://127.0.0.1:${s.port}/gitpod.v1.RunnerService/GetRunner`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: "{bad" });
  assert.equal(((await badJson.json()) as { code: string }).code, "invalid_argument");
  // A body announced over the limit, and never sent: refused after the headers, the
  // connection then closed. (Sent, a client still writing it as the connection closes may
  // get EPIPE instead of the answer, which failed this test once.)
  const tooLarge = await new Promise<string>((resolve, reject) => {
    const sock = net.connect(s.port, "127.0.0.1", () =>
      sock.write(`POST /gitpod.v1.RunnerService/UpdateRunner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer ${token}\r\nContent-Length: ${2 << 20}\r\n\r\n`),
    );
    let answer = "";
    sock.on("data", (d: Buffer) => (answer += d.toString("latin1")));
    sock.on("error", reject);
    sock.on("close", () => resolve(answer));
  });
  assert.match(tooLarge, /^HTTP\/1\.1 429 [^]*"code":"resource_exhausted"/);
  // One whose message quotes a long header: connect-node gzips its body for a client that takes gzip.
  const zipped = await fetch(`http://127.0.0.1:${s.port}/gitpod.v1.RunnerService/GetRunner`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}`, "connect-timeout-ms": "k".repeat(1500), "accept-encoding": "gzip" },
    body: "{}",
  });
  assert.equal(zipped.headers.get("content-encoding"), "gzip");
  assert.equal(((await zipped.json()) as { code: string }).code, "invalid_argument");
  // Paths a client made up are counted, but never named: the page cannot be grown by a scan,
  // whatever the method or protocol.
  const madeUp = ["/wp-admin/setup.php", `/gitpod.v1.RunnerService/${randomUUID()}`, "/.env"];
  for (const path of madeUp) await (await fetch(`http://127.0.0.1:${s.port}${path}`)).arrayBuffer();
  const posted = [`/gitpod.v1.RunnerService/Made${randomUUID().slice(0, 8)}`, `/acme.v9.Made/${randomUUID().slice(0, 8)}`];
  for (const path of posted) await (await call(s, path, {}, token)).arrayBuffer();
  // (A gRPC method of a name it makes up is unimplemented, status 12, as gRPC servers answer.)
  const grpcPath = `/grpc.made.Up/M${randomUUID().slice(0, 8)}`;
  await (await fetch(`http://127.0.0.1:${s.port}${grpcPath}`, { method: "POST", headers: { "content-type": "application/grpc" }, body: new Uint8Array(5) })).arrayBuffer();
  assert.equal((await fetch(`http://127.0.0.1:${s.port}/healthz`)).status, 200);
  assert.equal((await fetch(`http://127.0.0.1:${s.port}/healthz?x=1`)).status, 200, "a query changes nothing");
  const posted405 = await fetch(`http://127.0.0.1:${s.port}/healthz`, { method: "POST" });
  assert.deepEqual([posted405.status, posted405.headers.get("allow")], [405, "GET, HEAD"]);
  assert.equal((await fetch(`http://127.0.0.1:${s.port}/metrics`)).status, 404, "the API's port does not serve the page");
  // Answered by node's parser before the handler: counted too, under no procedure's name.
  assert.match(await rawExchange(s.port, "G\u0000ET / HTTP/1.1\r\nHost: x\r\n\r\n"), /^HTTP\/1\.1 400 /);
  assert.equal((await fetch(`http://127.0.0.1:${s.port}/healthz`, { headers: { "x-padding": "a".repeat(20_000) } })).status, 431);

  // (The 2 MiB body's answer closes only once the rest of it has been read past.)
  const total = (p: MetricsPage) => [...p].filter(([k]) => k.startsWith("scm_requests_total")).reduce((n, [, v]) => n + v, 0);
  const page = await scrapeUntil(port, "every request counted", (p) => total(p) === 19);
  const requests = (procedure: string, code: string) => page.get(`scm_requests_total{code="${code}",procedure="${procedure}"}`);
  assert.equal(requests("gitpod.v1.RunnerService/CreateRunner", "ok"), 2);
  assert.equal(requests("gitpod.v1.RunnerService/GetRunner", "not_found"), 1);
  assert.equal(requests("gitpod.v1.RunnerService/GetRunner", "invalid_argument"), 2);
  assert.equal(requests("gitpod.v1.RunnerService/UpdateRunner", "resource_exhausted"), 1);
  assert.equal(requests("gitpod.v1.RunnerService/ListRunners", "unauthenticated"), 1);
  assert.equal(requests("other", "unimplemented"), 2, "an unserved gitpod.v1 method, and a made-up gRPC one");
  assert.equal(requests("healthz", "ok"), 2);
  assert.equal(requests("other", "http_405"), 1);
  assert.equal(requests("other", "http_404"), 5);
  assert.equal(requests("other", "http_400"), 1);
  assert.equal(requests("other", "http_431"), 1);
  const shown = [...page.keys()].join("\n");
  for (const path of [...madeUp, ...posted, grpcPath]) assert.ok(!shown.includes(path.split("/").at(-1)!), `${path} is not named`);
  assert.ok(!shown.includes(token), "no token");

  assert.equal(page.get('scm_request_duration_seconds_count{procedure="gitpod.v1.RunnerService/CreateRunner"}'), 2);
  const createSeconds = page.get('scm_request_duration_seconds_sum{procedure="gitpod.v1.RunnerService/CreateRunner"}')!;
  assert.ok(createSeconds > 0 && createSeconds < 60, `${createSeconds} s`);
  // Those two have no duration: node does not say when they began.
  assert.equal(page.get('scm_request_duration_seconds_count{procedure="other"}'), 8);
  // Two runners written, through at least one commit and one sync of the WAL.
  assert.equal(page.get("scm_commit_writes_total"), 2);
  assert.ok(page.get("scm_commits_total")! >= 1 && page.get("scm_commits_total")! <= 2);
  assert.ok(page.get("scm_wal_syncs_total")! >= 1);
  assert.equal(page.get("scm_requests_in_flight"), 0);
  assert.equal(page.get("scm_request_body_bytes_held"), 0);
  assert.equal(page.get("scm_open_request_body_bytes_held"), 0);
  assert.ok(page.get("scm_database_bytes")! > 0);
  assert.ok(page.has("scm_database_wal_bytes"));
  assert.ok(page.get("process_resident_memory_bytes")! > 1e6);
  assert.ok(page.get("process_cpu_seconds_total")! > 0);
  // At most every core busy for as long as the process has lived (its start is rounded to the second).
  const lived = Date.now() / 1000 - page.get("process_start_time_seconds")! + 1;
  assert.ok(page.get("process_cpu_seconds_total")! <= lived * availableParallelism(), `${page.get("process_cpu_seconds_total")} CPU seconds in ${lived} s`);
  assert.ok(Math.abs(page.get("process_start_time_seconds")! - Date.now() / 1000) < 600);
  assert.ok(page.get("scm_event_loop_busy_seconds_total")! > 0);
  assert.ok(!page.has("scm_workers_serving"), "one process: no workers");
  assert.ok(!page.has("scm_tls_certificate_expiry_seconds"), "no TLS");

  // Only GET (or HEAD) /metrics.
  const other = await fetch(`http://127.0.0.1:${port}/`);
  assert.equal(other.status, 404);
  assert.match(await other.text(), /the metrics are at \/metrics/);
  const post = await fetch(`http://127.0.0.1:${port}/metrics`, { method: "POST", body: "x" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  const head = await fetch(`http://127.0.0.1:${port}/metrics`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
  // A query (some scrapers add one) changes nothing.
  const queried = await fetch(`http://127.0.0.1:${port}/metrics?format=prometheus`);
  assert.equal(queried.status, 200);
  assert.match(await queried.text(), /^# HELP /);

  // Through a shutdown's drain the page is still served: a request held open (its body never
  // finished) shows in flight, and is counted once cut off.
  const held = net.connect(s.port, "127.0.0.1");
  held.on("error", () => {});
  held.write(`POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`);
  await scrapeUntil(port, "the held request in flight", (p) => p.get("scm_requests_in_flight") === 1);
  s.child.kill("SIGTERM");
  await until("shutting down", () => lines(s, "shutting down").length === 1);
  const draining = await scrapeMetrics(port);
  assert.equal(draining.get("scm_requests_in_flight"), 1);
  assert.equal((await s.exited).code, 0);
  held.destroy();
  assert.equal(lines(s, "request").filter((l) => l.code === "canceled").length, 1, `cut off at the shutdown timeout: ${JSON.stringify(lines(s, "request").slice(-3))}`);
  // And a warning counts what was cut off (it went missing once the drain waited for sockets to close).
  assert.deepEqual(lines(s, "requests still running at the shutdown timeout were cut off").map((l) => l.requests), [1]);
});

it("through a symbolic link to the database, the page shows the WAL SQLite keeps beside the file the link names", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-metrics-"));
  mkdirSync(join(dir, "volume"));
  const file = join(dir, "volume", "m.db");
  const link = join(dir, "m.db");
  symlinkSync(file, link);
  const s = await startService(link, { METRICS_PORT: "0" });
  t.after(() => {
    s.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(s.out.text)![0];
  assert.equal((await call(s, "/gitpod.v1.RunnerService/CreateRunner", { name: "runner-one", provider: "RUNNER_PROVIDER_AWS_EC2" }, token)).status, 200);
  assert.equal(existsSync(`${link}-wal`), false, "no WAL beside the link");
  const page = await scrapeMetrics(metricsPort(s));
  // While the service runs its WAL only grows (checkpoints start it over, never shorten it).
  const wal = page.get("scm_database_wal_bytes")!;
  assert.ok(wal > 0 && wal <= statSync(`${file}-wal`).size, `${wal} bytes of WAL shown`);
  assert.ok(page.get("scm_database_bytes")! > 0);
  s.child.kill("SIGTERM");
  assert.equal((await s.exited).code, 0);
});

it("a duration equal to a bucket's bound is counted in that bucket (le: less than or equal)", () => {
  const m = new RequestMetrics();
  m.record("p", "ok", 0.005);
  m.record("p", "ok", 10);
  const page = render(m.families());
  const bucket = (le: string) => page.split("\n").find((l) => l.startsWith(`scm_request_duration_seconds_bucket{procedure="p",le="${le}"} `))?.split(" ")[1];
  assert.deepEqual(["0.0025", "0.005", "0.01", "5", "10", "+Inf"].map(bucket), ["0", "1", "1", "1", "2", "2"]);
});

it("with WORKERS the primary serves the page: each worker's figures under its label, how many serve, and restarts", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-metrics-"));
  const s = await startService(join(dir, "w.db"), { WORKERS: "2", METRICS_PORT: "0" });
  t.after(() => {
    s.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  await until("both workers listen", () => lines(s, "listening").length === 2, 30_000);
  const port = metricsPort(s);
  const workerIds = () => lines(s, "listening").map((l) => String(l.worker));
  const [first, second] = workerIds();

  // New connections, which the kernel spreads over the workers.
  for (let i = 0; i < 20; i++) await (await fetch(`http://127.0.0.1:${s.port}/healthz`, { headers: { connection: "close" } })).arrayBuffer();
  const healthz = (p: MetricsPage, worker: string) => p.get(`scm_requests_total{code="ok",procedure="healthz",worker="${worker}"}`) ?? 0;
  const page = await scrapeUntil(port, "20 health checks, over both workers", (p) => healthz(p, first!) + healthz(p, second!) === 20);
  assert.equal(page.get("scm_workers_configured"), 2);
  assert.equal(page.get("scm_workers_serving"), 2);
  assert.equal(page.get("scm_worker_restarts_total"), 0);
  for (const w of [first, second]) {
    assert.equal(page.get(`scm_database_usable{worker="${w}"}`), 1);
    assert.ok(page.get(`process_resident_memory_bytes{worker="${w}"}`)! > 1e6);
  }
  assert.ok(page.get("scm_database_bytes")! > 0, "the database's size once, from the primary");
  assert.ok(!page.has(`scm_database_bytes{worker="${first}"}`));

  assert.equal(page.get("scm_workers_answered"), 2);

  // A worker that does not answer (stopped here) is left off after 2 s, and the page says so.
  const [stuck] = childrenRunning(s.child.pid!, "src/main.ts");
  process.kill(stuck!, "SIGSTOP");
  const without = await scrapeMetrics(port);
  process.kill(stuck!, "SIGCONT");
  assert.equal(without.get("scm_workers_serving"), 2);
  assert.equal(without.get("scm_workers_answered"), 1);
  assert.equal([...without.keys()].filter((k) => k.startsWith("scm_database_usable{")).length, 1, "one worker's figures");
  assert.equal((await scrapeMetrics(port)).get("scm_workers_answered"), 2, "back once it answers");

  // A worker killed: the page says so, then shows its replacement.
  process.kill(childrenRunning(s.child.pid!, "src/main.ts")[0]!, "SIGKILL");
  await until("a replacement listens", () => lines(s, "listening").length === 3, 30_000);
  const third = workerIds()[2]!;
  const after = await scrapeUntil(port, "two serve again", (p) => p.get("scm_workers_serving") === 2 && p.has(`scm_database_usable{worker="${third}"}`));
  assert.equal(after.get("scm_worker_restarts_total"), 1);
  assert.equal(after.get("scm_workers_answered"), 2);
  const labelled = new Set([...after.keys()].map((k) => /worker="([^"]+)"/.exec(k)?.[1]).filter((w) => w !== undefined));
  assert.equal(labelled.size, 2, `the serving workers only: ${[...labelled]}`);
  assert.ok(labelled.has(third));

  s.child.kill("SIGTERM");
  assert.equal((await s.exited).code, 0);
});

it("METRICS_PORT and METRICS_HOST are checked at start, and a metrics port in use stops the start, with or without workers", async () => {
  assert.equal(loadConfig({}).metrics, null, "off unless METRICS_PORT is set");
  assert.deepEqual(loadConfig({ METRICS_PORT: "9464" }).metrics, { host: "127.0.0.1", port: 9464 });
  assert.deepEqual(loadConfig({ METRICS_PORT: "0", METRICS_HOST: "::1" }).metrics, { host: "::1", port: 0 });
  for (const [env, error] of [
    [{ METRICS_PORT: "x" }, /^METRICS_PORT must be a whole number from 0 to 65535, in decimal digits, got "x"$/],
    [{ METRICS_PORT: "70000" }, /^METRICS_PORT must be between 0 and 65535, got 70000$/],
    [{ PORT: "9000", METRICS_PORT: "9000" }, /^METRICS_PORT must differ from PORT \(both 9000\)/],
    [{ METRICS_HOST: "0.0.0.0" }, /^METRICS_HOST is set but METRICS_PORT is not/],
    [{ METRICS_PORT: "9464", METRICS_HOST: "a host" }, /^METRICS_HOST "a host" is not a host name or IP address$/],
    [{ METRICS_PORT: "9464", METRICS_HOST: "user:pw@host" }, /^METRICS_HOST \(not shown: it holds an '@'\) is not a host name/],
    [{ METRICS_PORT: "9464", METRICS_HOST: "[::1" }, /^METRICS_HOST "\[::1" is not a host name/],
    [{ METRICS_PORT: "9464", METRICS_HOST: "[::1]x" }, /^METRICS_HOST "\[::1\]x" is not a host name/],
    // The API on every address (HOST's default, or ::) holds the port on loopback too.
    [{ PORT: "9000", METRICS_PORT: "9000", METRICS_HOST: "127.0.0.2" }, /^METRICS_PORT must differ from PORT \(both 9000\) unless METRICS_HOST and HOST are two distinct IP addresses, neither 0\.0\.0\.0 nor ::/],
    // The same address written otherwise, or a name that may resolve to it.
    [{ PORT: "9000", HOST: "127.0.0.1", METRICS_PORT: "9000", METRICS_HOST: "::ffff:127.0.0.1" }, /^METRICS_PORT must differ from PORT/],
    [{ PORT: "9000", HOST: "::1", METRICS_PORT: "9000", METRICS_HOST: "0:0:0:0:0:0:0:1" }, /^METRICS_PORT must differ from PORT/],
    [{ PORT: "9000", HOST: "127.0.0.1", METRICS_PORT: "9000", METRICS_HOST: "localhost" }, /^METRICS_PORT must differ from PORT/],
    [{ PORT: "9000", HOST: "::0", METRICS_PORT: "9000", METRICS_HOST: "127.0.0.1" }, /^METRICS_PORT must differ from PORT/],
    [{ METRICS_PORT: "9464", METRICS_HOST: "[127.0.0.1]" }, /^METRICS_HOST "\[127\.0\.0\.1\]": only an IPv6 address goes in brackets$/],
    [{ PORT: "9000", HOST: "127.0.0.2", METRICS_PORT: "9000", METRICS_HOST: "127.0.0.2" }, /^METRICS_PORT must differ from PORT/],
    [{ PORT: "9000", HOST: "::", METRICS_PORT: "9000", METRICS_HOST: "::1" }, /^METRICS_PORT must differ from PORT/],
  ] as const) {
    assert.throws(() => loadConfig(env), (e: Error) => e.name === "ConfigError" && error.test(e.message), JSON.stringify(env));
  }
  // IPv6 as a URL writes it, and with a zone, which listen takes though a URL cannot.
  assert.deepEqual(loadConfig({ METRICS_PORT: "9464", METRICS_HOST: "[::1]" }).metrics, { host: "::1", port: 9464 });
  assert.deepEqual(loadConfig({ METRICS_PORT: "9464", METRICS_HOST: "fe80::1%eth0" }).metrics, { host: "fe80::1%eth0", port: 9464 });
  assert.deepEqual(loadConfig({ PORT: "9000", HOST: "127.0.0.1", METRICS_PORT: "9000", METRICS_HOST: "127.0.0.2" }).metrics, { host: "127.0.0.2", port: 9000 });

  const dir = mkdtempSync(join(tmpdir(), "scm-metrics-"));
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
  const port = (taken.address() as net.AddressInfo).port;
  try {
    for (const workers of ["1", "2"]) {
      const r = spawnSync(process.execPath, ["--import", "tsx", "src/main.ts"], {
        env: { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: join(dir, `${workers}.db`), METRICS_PORT: String(port), WORKERS: workers },
        encoding: "utf8",
        timeout: 60_000,
      });
      assert.equal(r.status, 1, `WORKERS=${workers}: ${r.stdout}${r.stderr}`);
      assert.equal(r.stderr, `startup error: METRICS_PORT ${port}: 127.0.0.1:${port} is already in use\n`);
      // The page listens first: no call was taken, and with workers none was started.
      assert.doesNotMatch(r.stdout, /"msg":"listening"/);
    }
  } finally {
    taken.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

it("one port number serves the API and the page on two addresses: HOST 127.0.0.1, METRICS_HOST [::1]", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-metrics-"));
  // A port free on both addresses a moment ago.
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const s = await startService(join(dir, "p.db"), { PORT: String(port), METRICS_PORT: String(port), METRICS_HOST: "[::1]" });
  t.after(() => {
    s.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  assert.equal(s.port, port);
  assert.equal(lines(s, "metrics listening")[0]!.address, `[::1]:${port}`);
  assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  const page = await scrapeUntil(port, "the health check counted", (p) => p.get('scm_requests_total{code="ok",procedure="healthz"}') === 1, "::1");
  assert.equal(page.get("scm_database_usable"), 1);
  assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 404, "the API's address does not serve the page");
});

it("the test's reader of the page refuses what Prometheus would not take", async (t) => {
  let page = "";
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
    res.end(page);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="q\\"\\\\"} 2\n# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 0.5\nh_count 2\n';
  page = good;
  assert.equal((await scrapeMetrics(port)).get('a_total{x="1",y="q\\"\\\\"}'), 2);
  for (const bad of [
    good.replace(" 2\n", " null\n"),
    good.replace('x="1",y', 'x="1"y'),
    good.replace('x="1"', '1x="1"'),
    good.replace("# HELP a_total A.\n", "# HELP a_total A.\n# HELP a_total A.\n"),
    good.replace("# TYPE a_total counter\n", ""),
    good.replace("h_count 2", "h_count 3"),
    good.replace('h_bucket{le="1"} 1', 'h_bucket{le="1"} 3'),
    good + "a_total 1\n",
    good.slice(0, -1),
  ]) {
    page = bad;
    await assert.rejects(scrapeMetrics(port), JSON.stringify(bad));
  }
});
