import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import fs from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import { syncBuiltinESMExports } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { describe, it } from "node:test";
import Database from "better-sqlite3";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/better-sqlite3";
import fc from "fast-check";
import { loadConfig, misspelledSettings, SETTINGS } from "../src/config.js";
import { normalizeHost } from "../src/domain/host.js";
import { createLogger } from "../src/log.js";
import { describeStartupError } from "../src/startup-errors.js";
import { openDatabase, refuseLinked } from "../src/store/database.js";
import { ClaimFileError, claimDatabase, claimMode, DatabaseClaimedError } from "../src/store/serving-claim.js";
import { readTlsFiles } from "../src/transport/tls-files.js";
import { logLines, SecretWatch } from "./secret-watch.js";
import { CREATE_PATH, holdHttp1, type Held, startProcess, stopIfRunning } from "./service-process.js";
import { call, childrenRunning, createRunner, hasOpen, startServer, until } from "./harness.js";
import { DomainError } from "../src/domain/errors.js";
import { bootstrap, createOrganization, listApiTokens } from "../src/services/accounts.js";


it("SIGTERM lets a request in flight finish, refuses new connections, and exits 0", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-drain-"));
  try {
    const { child, port, token, exited, watch, finish } = await startProcess(dir);
    const body = JSON.stringify({ name: "drain-runner", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" });
    // In flight once the server's 100 Continue came: half the body then, the signal, then the rest.
    const held = holdHttp1(port, token!, body, watch, { path: "/gitpod.v1.RunnerService/CreateRunner", sentFirst: 10 });
    await held.inFlight;
    child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    const { status, text } = await held.finish();
    assert.equal(status, 200, text);
    assert.match(JSON.parse(text).runner.runnerId, /^[0-9a-f-]{36}$/);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
    assert.equal(await exited, 0);
    finish();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A CreateRunner over a raw HTTP/1.1 connection, in flight: the server's 100 Continue has
 * come (it has the call), and the first 10 bytes of `body` are sent; the rest is the test's.
 */
async function createRunnerInFlight(port: number, token: string, body: string, requestId: string) {
  const socket = net.connect(port, "127.0.0.1");
  let received = "";
  socket.on("data", (d) => (received += d));
  socket.on("error", () => {});
  const closed = new Promise((r) => socket.once("close", r));
  await new Promise((r) => socket.once("connect", r));
  socket.write(`POST /gitpod.v1.RunnerService/CreateRunner HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\nX-Request-Id: ${requestId}\r\n\r\n`);
  await until("the server has the call", () => received.includes("HTTP/1.1 100 Continue"));
  socket.write(body.slice(0, 10));
  return { socket, closed, received: () => received };
}

it("during the drain, a health check behind a call in flight is told NOT_SERVING (/healthz 503)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-drain-health-"));
  try {
    const { child, port, token, state, exited, watch, finish } = await startProcess(dir);
    const body = JSON.stringify({ name: "drain-health", provider: "RUNNER_PROVIDER_LINUX_HOST" });
    // With Expect: 100-continue, the server's 100 says it has the request: it is in flight.
    watch.noteSent("/gitpod.v1.RunnerService/CreateRunner", { authorization: `Bearer ${token}` }, body);
    // The call is in flight (half its body sent) when the signal comes.
    const call = await createRunnerInFlight(port, token!, body, "drain-health");
    child.kill("SIGTERM");
    await until("the drain began", () => state.out.includes('"msg":"shutting down"'));
    // The rest of the body, and a health check pipelined behind it on the same connection.
    call.socket.write(`${body.slice(10)}GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    await call.closed;
    watch.noteReceived({}, call.received());
    const statuses = [...call.received().matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
    assert.deepEqual(statuses, ["100", "200", "503"], call.received());
    assert.equal(await exited, 0);
    finish();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a call still running at SHUTDOWN_TIMEOUT_MS is cut off, logged canceled with a warning counting it, and the exit is still 0", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-drain-cut-"));
  try {
    const { child, port, token, state, exited, finish } = await startProcess(dir, { SHUTDOWN_TIMEOUT_MS: "300" });
    const body = JSON.stringify({ name: "never-finished", provider: "RUNNER_PROVIDER_LINUX_HOST" });
    // In flight, and its body never ends.
    const call = await createRunnerInFlight(port, token!, body, "held-past-timeout");
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
    await call.closed;
    assert.doesNotMatch(call.received(), /HTTP\/1\.1 200/, "no answer: it was cut off");
    const logged = logLines(state.out).map((l) => JSON.parse(l));
    assert.equal(logged.find((l) => l.request_id === "held-past-timeout")?.code, "canceled");
    const warning = logged.find((l) => l.msg === "requests still running at the shutdown timeout were cut off");
    assert.deepEqual([warning?.level, warning?.requests, warning?.timeout_ms], ["warn", 1, 300]);
    finish();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});


/** The same over an HTTP/2 session: a stream whose body waits until `finish`. */
function holdHttp2(session: http2.ClientHttp2Session, token: string, body: string, watch: SecretWatch): Held {
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json", "content-length": Buffer.byteLength(body), expect: "100-continue" };
  watch.noteSent(CREATE_PATH, headers, body);
  const stream = session.request({ ":method": "POST", ":path": CREATE_PATH, ...headers }, { endStream: false });
  const inFlight = new Promise<void>((resolve, reject) => (stream.once("continue", resolve), stream.once("error", reject)));
  const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
    let got: http2.IncomingHttpHeaders = {};
    let text = "";
    stream.on("response", (h) => (got = h));
    stream.on("data", (d) => (text += d));
    stream.on("end", () => {
      watch.noteReceived(got, text);
      resolve({ status: Number(got[":status"]), text });
    });
    stream.on("error", reject);
  });
  return { inFlight, finish: () => (stream.end(body), answer) };
}

it("SIGTERM under load: requests in flight finish OK, new ones are refused cleanly, exit 0, everything acknowledged is stored", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-drain-load-"));
  try {
    // One token sends everything; the per-token rate limit would only get in the way.
    const { child, port, token, state, exited, watch, finish } = await startProcess(dir, { RATE_LIMIT_PER_SECOND: "0" });
    const post = (path: string, body: unknown, agent?: http.Agent) =>
      new Promise<{ status: number; body: any }>((resolve, reject) => {
        const data = JSON.stringify(body);
        const headers = { authorization: `Bearer ${token}`, "content-type": "application/json", "content-length": Buffer.byteLength(data) };
        watch.noteSent(`/${path}`, headers, data);
        const req = http.request(
          { port, host: "127.0.0.1", method: "POST", path: `/${path}`, agent, headers },
          (res) => {
            let text = "";
            let ended = false;
            res.on("data", (d) => (text += d));
            res.on("end", () => {
              ended = true;
              watch.noteReceived(res.headers, text);
              try {
                resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
              } catch {
                reject(new HalfAnswer(`${res.statusCode} ${text}`));
              }
            });
            // Once an answer began, anything short of its end is a half answer.
            res.on("error", () => reject(new HalfAnswer(`${res.statusCode} cut off`)));
            res.on("close", () => ended || reject(new HalfAnswer(`${res.statusCode} cut off`)));
          },
        );
        req.on("error", reject);
        req.end(data);
      });
    class HalfAnswer extends Error {}
    const runner = await post("gitpod.v1.RunnerService/CreateRunner", { name: "under-load", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" });
    assert.equal(runner.status, 200, JSON.stringify(runner.body));
    const runnerId: string = runner.body.runner.runnerId;
    const createBody = (host: string) => ({ runnerId, scmId: "github", host, pat: true });

    // Slow requests, held in flight over both protocols: the server has each one
    // (it sent 100 Continue) while its body is withheld until after the signal.
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", () => {});
    const goaway = new Promise<void>((resolve) => session.once("goaway", () => resolve()));
    const held = [
      ...Array.from({ length: 3 }, (_, i) => holdHttp1(port, token!, JSON.stringify(createBody(`slow-h1-${i}.example.com`)), watch)),
      ...Array.from({ length: 2 }, (_, i) => holdHttp2(session, token!, JSON.stringify(createBody(`slow-h2-${i}.example.com`)), watch)),
    ];
    await Promise.all(held.map((h) => h.inFlight));

    // Fast creates from 16 loops on kept-alive connections, until the service is gone.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const acked = new Map<string, string>();
    const refused = new Map<string, number>();
    const half: string[] = [];
    let n = 0;
    let loading = true;
    let signalled: () => void;
    const signalSent = new Promise<void>((r) => (signalled = r));
    const loop = async () => {
      while (loading) {
        const host = `fast-${n++}.example.com`;
        try {
          const r = await post("gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", createBody(host), agent);
          if (r.status === 200) acked.set(r.body.id, host);
          else half.push(`${r.status} ${JSON.stringify(r.body)}`);
          if (acked.size === 60) {
            child.kill("SIGTERM");
            signalled();
          }
        } catch (err) {
          if (err instanceof HalfAnswer) half.push(err.message);
          else {
            // No answer at all: the connection was refused or closed before any byte of
            // one. A client may safely retry that elsewhere.
            const code = (err as NodeJS.ErrnoException).code ?? String(err);
            refused.set(code, (refused.get(code) ?? 0) + 1);
            if (code === "ECONNREFUSED") await new Promise((r) => setTimeout(r, 5));
          }
        }
      }
    };
    const loops = Array.from({ length: 16 }, loop);
    await signalSent;
    for (let i = 0; i < 400 && !state.out.includes('"msg":"shutting down"'); i++) await new Promise((r) => setTimeout(r, 10));
    const shuttingDown = /"msg":"shutting down","signal":"SIGTERM","in_flight":(\d+)/.exec(state.out);
    assert.ok(shuttingDown, "the service logs that it is shutting down");
    assert.ok(Number(shuttingDown[1]) >= held.length, `the held requests are in flight: ${shuttingDown[1]}`);

    // New connections are refused from now on (any accepted in the moment before the
    // listener closed must still be answered whole).
    let newConnection = "";
    for (let i = 0; i < 50 && newConnection !== "ECONNREFUSED"; i++) {
      try {
        const r = await post("gitpod.v1.RunnerService/GetRunner", { runnerId });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        await new Promise((r) => setTimeout(r, 20));
      } catch (err) {
        assert.ok(!(err instanceof HalfAnswer), (err as Error).message);
        newConnection = (err as NodeJS.ErrnoException).code ?? String(err);
      }
    }
    assert.equal(newConnection, "ECONNREFUSED");

    // HTTP/2: the open session got GOAWAY; a new stream on it is refused, never answered.
    await goaway;
    const newStream = await new Promise<string>((resolve) => {
      try {
        const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/GetRunner", authorization: `Bearer ${token}`, "content-type": "application/json" });
        stream.on("response", (h) => resolve(`answered ${h[":status"]}`));
        stream.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? String(err)));
        stream.end(JSON.stringify({ runnerId }));
      } catch (err) {
        resolve((err as NodeJS.ErrnoException).code ?? String(err));
      }
    });
    assert.match(newStream, /^ERR_HTTP2_(GOAWAY_SESSION|INVALID_SESSION|STREAM_ERROR)$/, newStream);

    // The held requests now send their bodies and are answered in full.
    const answers = await Promise.all(held.map((h) => h.finish()));
    for (const a of answers) {
      assert.equal(a.status, 200, a.text);
      const id = JSON.parse(a.text).id as string;
      assert.match(id, /^[0-9a-f-]{36}$/);
      acked.set(id, "held");
    }
    loading = false;
    await Promise.all(loops);
    agent.destroy();
    session.destroy();
    assert.deepEqual(half, [], "no half or failed answers");
    assert.equal((await exited), 0);

    // Everything acknowledged is stored, and nothing was done without its answer.
    const db = new Database(join(dir, "db", "s.db"), { readonly: true });
    try {
      const ids = new Set((db.prepare("SELECT id FROM scm_integrations WHERE runner_id = ?").all(runnerId) as { id: string }[]).map((r) => r.id));
      for (const id of acked.keys()) assert.ok(ids.has(id), `acknowledged ${id} is stored`);
      assert.equal(ids.size, acked.size);
    } finally {
      db.close();
    }
    finish();
    t.diagnostic(`acknowledged ${acked.size} (${held.length} held over the signal); refused without an answer: ${JSON.stringify(Object.fromEntries(refused))}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("the service starts on an empty database, prints a working token once, and exits 0 on SIGTERM", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-proc-"));
  try {
    // A setting misspelled is warned of, naming the one likely meant.
    const { child, port, token, state, exited, watch, finish } = await startProcess(dir, { DATABSE_URL: join(dir, "elsewhere.db") });
    assert.ok(token, "the first start prints an API token");
    const misspelled = logLines(state.out).map((l) => JSON.parse(l)).find((l) => l.variable === "DATABSE_URL");
    assert.deepEqual([misspelled?.level, misspelled?.msg], ["warn", "DATABSE_URL is set, but nothing reads it: did you mean DATABASE_URL?"]);
    // The database the listening line names is where it is, as an absolute path.
    assert.equal(logLines(state.out).map((l) => JSON.parse(l)).find((l) => l.msg === "listening")?.database, join(dir, "db", "s.db"));
    const health = await watch.fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    assert.ok(health.headers.get("x-request-id"));
    const res = await watch.fetch(`http://127.0.0.1:${port}/gitpod.v1.RunnerService/CreateRunner`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "x-request-id": "req-42" },
      body: JSON.stringify({ name: "my-runner", provider: "RUNNER_PROVIDER_AWS_EC2" }), // the printed example
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-request-id"), "req-42");
    const schema = await watch.fetch(`http://127.0.0.1:${port}/gitpod.v1.RunnerConfigurationService/GetRunnerConfigurationSchema`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ runnerId: ((await res.json()) as { runner: { runnerId: string } }).runner.runnerId }),
    });
    type Entry = { oauth?: { callbackUrl: string } };
    const callbacks = ((await schema.json()) as { schema: { scm: Entry[] } }).schema.scm.map((e) => e.oauth?.callbackUrl).filter(Boolean);
    assert.ok(callbacks.length > 0 && callbacks.every((u) => u === `http://127.0.0.1:${port}/auth/oauth2/callback`), JSON.stringify(callbacks));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
    const out = state.out;
    const requestLine = out.split("\n").find((l) => l.includes('"request_id":"req-42"'));
    assert.ok(requestLine, "one structured log line per request");
    const logged = JSON.parse(requestLine!);
    assert.equal(logged.procedure, "/gitpod.v1.RunnerService/CreateRunner");
    assert.equal(logged.code, "ok");
    assert.equal(typeof logged.duration_ms, "number");
    // Who asked: the peer, and the token's organization and row id (the admin token's), never the token.
    assert.equal(logged.client, "127.0.0.1");
    const db = new Database(join(dir, "db", "s.db"), { readonly: true });
    const tokenRow = db.prepare("SELECT id, org_id FROM api_tokens").get() as { id: string; org_id: string };
    db.close();
    assert.deepEqual([logged.org_id, logged.token_id], [tokenRow.id === logged.token_id ? tokenRow.org_id : "?", tokenRow.id]);
    assert.equal(out.split(token!).length - 1, 2, "the token appears only in the first-start message (alone and in the curl example)");
    // PORT=0: the example names the port the system chose.
    assert.ok(out.includes(`curl -sS http://127.0.0.1:${port}/gitpod.v1.RunnerService/CreateRunner`), out);
    finish();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("on an IPv6 address the log and the printed example write it in brackets, and it serves there", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-ipv6-"));
  try {
    const { child, port, state, exited } = await startProcess(dir, { HOST: "::1" });
    assert.match(state.out, new RegExp(`"msg":"listening","address":"\\[::1\\]:${port}"`));
    assert.ok(state.out.includes(`curl -sS http://[::1]:${port}/gitpod.v1.RunnerService/CreateRunner`), state.out);
    assert.equal((await fetch(`http://[::1]:${port}/healthz`)).status, 200);
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a bad configuration value stops the start with a message naming it", () => {
  assert.throws(() => loadConfig({ PORT: "http" }), /PORT/);
  assert.throws(() => loadConfig({ PORT: "70000" }), /PORT/);
  assert.throws(() => loadConfig({ LOG_LEVEL: "loud" }), /LOG_LEVEL/);
  assert.throws(() => loadConfig({ TLS_CERT_FILE: "/nope" }), /TLS_CERT_FILE and TLS_KEY_FILE/);
  assert.throws(() => loadConfig({ TLS_RELOAD_CHECK_MS: "50" }), /^ConfigError: TLS_RELOAD_CHECK_MS must be 0 \(off\) or at least 100, got 50$/);
  assert.throws(() => loadConfig({ TLS_RELOAD_CHECK_MS: "-1" }), /^ConfigError: TLS_RELOAD_CHECK_MS must be a whole number/);
  assert.equal(loadConfig({}).tlsReloadCheckMs, 60_000);
  assert.equal(loadConfig({ TLS_RELOAD_CHECK_MS: "0" }).tlsReloadCheckMs, 0);
  assert.throws(() => loadConfig({ DATABASE_URL: "postgres://x/y" }), /DATABASE_URL/);
  // Not one durable file: each worker would have its own, and all of it is gone at exit.
  for (const memory of [":memory:", "file::memory:", "file:", "file:x.db?mode=memory", "file://db.example/x.db", "./data/"]) {
    assert.throws(() => loadConfig({ DATABASE_URL: memory }), /^ConfigError: DATABASE_URL must/, memory);
  }
  assert.equal(loadConfig({ DATABASE_URL: "file:///var/lib/scm/x.db" }).databaseFile, "/var/lib/scm/x.db");
  assert.equal(loadConfig({ DATABASE_URL: "file:data/x.db" }).databaseFile, "data/x.db");
  // Percent-encoded in both forms of file: URL, as SQLite reads them.
  assert.equal(loadConfig({ DATABASE_URL: "file:my%20data/x.db" }).databaseFile, "my data/x.db");
  assert.equal(loadConfig({ DATABASE_URL: "file:///srv/my%20data/x.db" }).databaseFile, "/srv/my data/x.db");
  for (const bad of ["file:100%.db", "file:///srv/%zz.db"]) assert.throws(() => loadConfig({ DATABASE_URL: bad }), /^ConfigError: DATABASE_URL has a '%'/, bad);
  assert.throws(() => loadConfig({ DATABASE_URL: "file:///srv/x%00y.db" }), /^ConfigError: DATABASE_URL must not hold %00/);
  // A scheme in any case is a scheme, not the start of a relative path; an escaped slash makes no folder.
  assert.equal(loadConfig({ DATABASE_URL: "File:///srv/x.db" }).databaseFile, "/srv/x.db");
  assert.equal(loadConfig({ DATABASE_URL: "FILE:data/x.db" }).databaseFile, "data/x.db");
  for (const bad of ["file:///srv/a%2Fb.db", "file:a%2fb.db"]) assert.throws(() => loadConfig({ DATABASE_URL: bad }), /^ConfigError: DATABASE_URL must not hold %2F: write a slash as it is$/, bad);
  // Before, `FILE:x.db` named a file of that very name: one kept so is not swapped for a new database.
  const cwd = process.cwd();
  const here = mkdtempSync(join(tmpdir(), "scm-scheme-"));
  try {
    process.chdir(here);
    writeFileSync("FILE:kept.db", "");
    assert.throws(() => loadConfig({ DATABASE_URL: "FILE:kept.db" }), /^ConfigError: DATABASE_URL: "FILE:kept\.db" is read as a file: URL now \(its scheme in any case\), while a file of that very name holds a database: set DATABASE_URL=\.\/FILE:kept\.db to keep using it$/);
    assert.equal(loadConfig({ DATABASE_URL: "./FILE:kept.db" }).databaseFile, "./FILE:kept.db");
  } finally {
    process.chdir(cwd);
    rmSync(here, { recursive: true, force: true });
  }
  assert.throws(() => loadConfig({ DATABASE_URL: "file://[bad" }), /^ConfigError: DATABASE_URL is not a well-formed file: URL/);
  // A folder is no certificate, and a path that cannot be looked up is said so; a pipe (a
  // process substitution, a secrets tool) is taken.
  assert.throws(() => loadConfig({ TLS_CERT_FILE: tmpdir(), TLS_KEY_FILE: tmpdir() }), /^ConfigError: TLS_CERT_FILE: .* is a folder, not a file/);
  assert.throws(() => loadConfig({ TLS_CERT_FILE: "/etc/passwd/x", TLS_KEY_FILE: "/etc/passwd/x" }), /^ConfigError: TLS_CERT_FILE: cannot look up \/etc\/passwd\/x \(ENOTDIR\)/);
  const fifoDir = mkdtempSync(join(tmpdir(), "scm-fifo-"));
  try {
    execFileSync("mkfifo", [join(fifoDir, "cert"), join(fifoDir, "key")]);
    assert.equal(loadConfig({ TLS_CERT_FILE: join(fifoDir, "cert"), TLS_KEY_FILE: join(fifoDir, "key") }).tlsCertFile, join(fifoDir, "cert"));
    // ... by one process only: every worker reads the files, and a pipe serves one reader.
    assert.throws(() => loadConfig({ TLS_CERT_FILE: join(fifoDir, "cert"), TLS_KEY_FILE: join(fifoDir, "key"), WORKERS: "2" }), /^ConfigError: TLS_CERT_FILE: .* is not a regular file, and with WORKERS above 1/);
    // DATABASE_URL naming a folder is refused by name, not left to SQLite.
    assert.throws(() => loadConfig({ DATABASE_URL: fifoDir }), /^ConfigError: DATABASE_URL must name a database file/);
    // file: URLs were taken as written before they were percent-decoded: a database kept
    // under the written name is not swapped for a new one under the decoded name.
    writeFileSync(join(fifoDir, "my%20data.db"), "");
    assert.throws(() => loadConfig({ DATABASE_URL: `file:${fifoDir}/my%20data.db` }), /^ConfigError: DATABASE_URL: file: URLs are percent-decoded now, so .* names .*my data\.db, where there is no database, while .*my%20data\.db holds one/);
    writeFileSync(join(fifoDir, "my data.db"), "");
    assert.equal(loadConfig({ DATABASE_URL: `file:${fifoDir}/my%20data.db` }).databaseFile, join(fifoDir, "my data.db"));
  } finally {
    rmSync(fifoDir, { recursive: true, force: true });
  }
  // One that exists but cannot be read (the start reads it after these checks; root reads anything, so the error is made here).
  const denied = Object.assign(new Error("EACCES: permission denied, open '/etc/scm/key.pem'"), { code: "EACCES", syscall: "open" });
  assert.equal(describeStartupError(denied, { databaseFile: "x.db", tls: true }), "TLS_CERT_FILE / TLS_KEY_FILE cannot be read (EACCES)");
  const tlsFiles = ["/etc/scm/cert.pem", "/etc/scm/key.pem"];
  assert.equal(describeStartupError(Object.assign(denied, { path: "/etc/scm/key.pem" }), { databaseFile: "x.db", tls: true, tlsFiles }), "TLS_KEY_FILE cannot be read (EACCES)", "the file its path names");
  // As the service reads them: each read says which file it was, also of one file given as both.
  const missing = join(tmpdir(), `scm-no-such-dir-${process.pid}`, "both.pem");
  let readError: unknown;
  try {
    readTlsFiles({ certFile: missing, keyFile: missing });
  } catch (err) {
    readError = err;
  }
  assert.equal(describeStartupError(readError, { databaseFile: "x.db", tls: true, tlsFiles: [missing, missing] }), "TLS_CERT_FILE cannot be read (ENOENT)");
  // The database file refused where access() let it by (a special file system, a security module): named as the database, also beside TLS.
  const dbDenied = Object.assign(new Error("EACCES: permission denied, open '/sys/x.db'"), { code: "EACCES", syscall: "open", path: "/sys/x.db" });
  for (const tls of [false, true]) {
    assert.match(describeStartupError(dbDenied, { databaseFile: "/sys/x.db", tls, tlsFiles }) ?? "", /^DATABASE_URL: \/sys\/x\.db cannot be opened for reading and writing \(EACCES\)/);
  }
  // Another file's: not explained, so it keeps its stack.
  assert.equal(describeStartupError(Object.assign(new Error("x"), { code: "EACCES", syscall: "open", path: "/elsewhere" }), { databaseFile: "/sys/x.db", tls: true, tlsFiles }), null);
  // A file whose name begins with the database's is not the database's: a certificate beside it is the certificate's.
  const besideFiles = ["/sys/x.db.crt", "/sys/x.db.key"];
  const certDenied = Object.assign(new Error("EACCES: permission denied, open '/sys/x.db.crt'"), { code: "EACCES", syscall: "open", path: "/sys/x.db.crt" });
  assert.equal(describeStartupError(certDenied, { databaseFile: "/sys/x.db", tls: true, tlsFiles: besideFiles }), "TLS_CERT_FILE cannot be read (EACCES)");
  for (const own of ["-wal", "-shm", "-journal", ".lock"]) {
    const ownDenied = Object.assign(new Error("EACCES"), { code: "EACCES", syscall: "open", path: `/sys/x.db${own}` });
    assert.match(describeStartupError(ownDenied, { databaseFile: "/sys/x.db", tls: true, tlsFiles: besideFiles }) ?? "", /^DATABASE_URL: \/sys\/x\.db cannot be opened/, own);
  }
  assert.equal(loadConfig({ DATABASE_URL: "./100%.db" }).databaseFile, "./100%.db", "a plain path is taken as written");
  // The callback URL is PUBLIC_URL plus a path.
  const refused: [string, RegExp][] = [
    ["https://scm.example.com/?a=b", /must not include a query$/],
    ["https://scm.example.com/#x", /must not include a fragment$/],
    ["ftp://scm.example.com", /must be an http or https URL, got scheme ftp$/],
  ];
  for (const [url, why] of refused) assert.throws(() => loadConfig({ PUBLIC_URL: url }), (e: Error) => e.message.startsWith(`PUBLIC_URL "${url}" must`) && why.test(e.message), url);
  // Credentials however written (a URL parser reads each of these with a user name), never echoed.
  for (const url of ["https://admin:s3cr3t-pw@scm.example.com", "http:admin:s3cr3t-pw@scm.example.com", "http:/admin:s3cr3t-pw@scm.example.com", "https:\\admin:s3cr3t-pw@scm.example.com", "https://admin:s3cr3t-pw@[bad"]) {
    assert.throws(() => loadConfig({ PUBLIC_URL: url }), (e: Error) => /^PUBLIC_URL \(not shown: it holds an '@'\) must/.test(e.message) && !e.message.includes("s3cr3t"), url);
  }
  // Whatever a parser would repair, or read its own way, is not taken as a callback base.
  for (const url of ["http:scm.example.com", "https://scm.example.com/a b", "http://scm.example.com\\evil.example", "https:///scm.example.com", "https://scm.example.com/a/../b", "https://scm.example.com/%2e%2e/b", "https://scm.example.com/./b"]) {
    assert.throws(() => loadConfig({ PUBLIC_URL: url }), /^ConfigError: PUBLIC_URL ".*" must (begin with https?:\/\/ and a host name|not contain (whitespace|backslashes)|not include \. or \.\. path segments)/, url);
  }
  assert.equal(loadConfig({ PUBLIC_URL: "HTTPS://SCM.Example.com:443/" }).publicUrl, "https://scm.example.com");
  assert.equal(loadConfig({ PUBLIC_URL: "https://scm.example.com/@team/scm" }).publicUrl, "https://scm.example.com/@team/scm");
  assert.equal(loadConfig({ HOST: "::1", PORT: "9000" }).publicUrl, "http://[::1]:9000");
  // Made from HOST, it is written as the URL parser writes it, as a PUBLIC_URL given is.
  assert.equal(loadConfig({ HOST: "LOCALHOST", PORT: "9000" }).publicUrl, "http://localhost:9000");
  assert.equal(loadConfig({ HOST: "0x7f.1", PORT: "9000" }).publicUrl, "http://127.0.0.1:9000");
  assert.throws(() => loadConfig({ HOST: "999.1.1.1" }), /^ConfigError: HOST "999\.1\.1\.1" is not a host name or IP address/);
  for (const host of ["scm#x", "scm/x", "scm?x"]) {
    assert.throws(() => loadConfig({ HOST: host }), /^ConfigError: HOST ".*" is not a host name or IP address/, host);
  }
  assert.throws(() => loadConfig({ HOST: "admin:hunter2@10.0.0.5" }), (e: Error) => /^HOST \(not shown: it holds an '@'\) is not a host name/.test(e.message) && !e.message.includes("hunter2"));
  assert.throws(() => loadConfig({ HOST: "fe80::1%lo" }), /^ConfigError: HOST "fe80::1%lo" has an IPv6 zone[^]*set PUBLIC_URL/);
  assert.equal(loadConfig({ HOST: "fe80::1%lo", PUBLIC_URL: "http://scm.lan:8080" }).publicUrl, "http://scm.lan:8080");
  // A PUBLIC_URL set does not let a HOST through that is neither a name nor an address.
  assert.throws(() => loadConfig({ HOST: "bad host", PUBLIC_URL: "http://scm.lan:8080" }), /^ConfigError: HOST "bad host" is not a host name or IP address/);
  assert.throws(() => loadConfig({ HOST: "admin:pw@10.0.0.5", PUBLIC_URL: "http://scm.lan:8080" }), (e: Error) => /^HOST \(not shown: it holds an '@'\) is not a host name/.test(e.message) && !e.message.includes("pw@"));
  assert.equal(loadConfig({}).port, 8080);
  // Names near a setting are told apart from other programs' variables.
  assert.deepEqual(misspelledSettings({ LOGLEVEL: "debug", WORKER: "2", HOTS: "::1", metrics_port: "9", HOME: "/root", SSL_CERT_FILE: "x", HOSTNAME: "h", PORT: "1" }), [
    { given: "LOGLEVEL", meant: "LOG_LEVEL" }, { given: "WORKER", meant: "WORKERS" }, { given: "HOTS", meant: "HOST" }, { given: "metrics_port", meant: "METRICS_PORT" },
  ]);
  // The settings the misspelling check knows are every variable loadConfig reads, no more.
  const read = new Set<string>();
  loadConfig(new Proxy({}, { get: (_, name) => (typeof name === "string" && read.add(name), undefined) }));
  assert.deepEqual([...read].sort(), [...SETTINGS].sort());
  // The database's file by another name, and settings without their unit or kind.
  assert.deepEqual(misspelledSettings({ DATABASE_PATH: "x", DB_URL: "x", IDLE_TIMEOUT: "5", TLS_CERT: "c", DBUS_SESSION_BUS_ADDRESS: "x" }).map((m) => m.meant), [
    "DATABASE_URL", "DATABASE_URL", "IDLE_TIMEOUT_MS", "TLS_CERT_FILE",
  ]);
});

it("each failure a start can meet is told in its one line (also through drizzle's wrapping), and what is not the start's own stays null, keeping its stack", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-why-"));
  try {
    const file = join(dir, "s.db");
    const at = { databaseFile: file, host: "127.0.0.1", port: 8080 };
    const sqlite = (code: string) => new Database.SqliteError(`driver text for ${code}`, code);
    const sys = (syscall: string, code: string, path?: string) => Object.assign(new Error(`${code}: ${syscall}`), { syscall, code }, path === undefined ? {} : { path });
    // Locked, as the driver says it and as drizzle (every query of the service's) wraps it.
    const holder = new Database(file);
    holder.exec("CREATE TABLE t (x); BEGIN EXCLUSIVE");
    const conn = new Database(file, { timeout: 0 });
    let wrapped: unknown;
    try {
      drizzle(conn).run(sql`INSERT INTO t VALUES (1)`);
    } catch (err) {
      wrapped = err;
    } finally {
      conn.close();
      holder.exec("ROLLBACK");
      holder.close();
    }
    assert.ok(!(wrapped instanceof Database.SqliteError) && (wrapped as Error).cause instanceof Database.SqliteError, "drizzle wraps the driver's error");
    const locked = `DATABASE_URL: ${file} is locked by another process (an admin command, or another copy of the service) for longer than a start waits`;
    assert.equal(describeStartupError(wrapped, at), locked);
    assert.equal(describeStartupError(sqlite("SQLITE_BUSY"), at), locked);
    assert.equal(describeStartupError(sqlite("SQLITE_LOCKED_SHAREDCACHE"), at), locked);
    for (const full of ["SQLITE_FULL", "SQLITE_IOERR_SHMSIZE"]) {
      assert.equal(describeStartupError(sqlite(full), at), `DATABASE_URL: the disk that holds ${file} is full (${full}); free some space there and start again`);
    }
    for (const broken of ["SQLITE_IOERR_WRITE", "SQLITE_CORRUPT"]) assert.equal(describeStartupError(sqlite(broken), at), `DATABASE_URL: ${file} could not be read or written (${broken})`);
    assert.equal(describeStartupError(sqlite("SQLITE_CONSTRAINT_UNIQUE"), at), null, "a bug");
    // The listener.
    assert.equal(describeStartupError(sys("listen", "EACCES"), { ...at, port: 80 }), "PORT 80: no permission to listen on 127.0.0.1:80");
    assert.equal(describeStartupError(sys("listen", "EADDRNOTAVAIL"), { ...at, host: "10.9.9.9" }), 'HOST "10.9.9.9" is not an address of this machine');
    assert.equal(describeStartupError(sys("getaddrinfo", "ENOTFOUND"), { ...at, host: "scm.invalid" }), 'HOST "scm.invalid" does not resolve to an address (ENOTFOUND)');
    assert.equal(describeStartupError(sys("listen", "EINVAL"), at), null, "no IPv6 zone to blame");
    // A name that fits, where the -wal beside it does not.
    assert.equal(describeStartupError(sys("open", "ENAMETOOLONG", `${file}-wal`), at), `DATABASE_URL: cannot look up ${file} (ENAMETOOLONG): the name, or a part of it, is too long for the file system`);
    // A folder on the database's way is the database's lookup; a file whose name the database's begins with is not.
    assert.equal(describeStartupError(sys("stat", "ENOTDIR", dir), at), `DATABASE_URL: cannot look up ${file} (ENOTDIR): a part of the path is a file, not a folder`);
    assert.equal(describeStartupError(sys("stat", "ENOENT", join(dir, "s")), at), null);
    // Without TLS, no error is a PEM file's: not one without a path, nor a bug.
    assert.equal(describeStartupError(sys("open", "EACCES"), at), null);
    assert.equal(describeStartupError(new TypeError("x is not a function"), at), null);
    // One file given as both, named only by the error's path: neither setting is said.
    const pem = join(dir, "both.pem");
    assert.equal(describeStartupError(sys("open", "EACCES", pem), { ...at, tls: true, tlsFiles: [pem, pem] }), "TLS_CERT_FILE / TLS_KEY_FILE cannot be read (EACCES)");
    // Hard links: the other name in the same folder is named, quoted for its control
    // character, and no "others elsewhere" are claimed when it is the only one.
    const linkDir = join(dir, "links");
    mkdirSync(linkDir);
    const db = join(linkDir, "l.db");
    writeFileSync(db, "");
    const other = join(linkDir, "l.db\u001b[2K");
    linkSync(db, other);
    let linked: unknown;
    try {
      refuseLinked(db);
    } catch (err) {
      linked = err;
    }
    assert.equal(
      describeStartupError(linked, { databaseFile: db }),
      `DATABASE_URL: ${db} has 2 names (hard links to one file): SQLite keeps a WAL beside each name, so what is written through one is lost to the others; remove the other names (beside it: ${JSON.stringify(other)}) (copies are made with \`admin db backup\`)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("LOG_LEVEL writes its level and those above it, one JSON line each with the fields given and those of every line; silent writes nothing", () => {
  const written = (level: "debug" | "info" | "warn" | "error" | "silent") => {
    const lines: string[] = [];
    const log = createLogger(level, (line) => lines.push(line), { worker: 3 });
    log.debug("d", { n: 1 });
    log.info("i", { n: 2 });
    log.warn("w", { n: 3 });
    log.error("e", { n: 4 });
    return lines.map((line) => {
      assert.ok(line.endsWith("}\n"), "one line each");
      const { time, ...rest } = JSON.parse(line);
      assert.match(time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      return rest;
    });
  };
  const all = [
    { level: "debug", msg: "d", n: 1, worker: 3 },
    { level: "info", msg: "i", n: 2, worker: 3 },
    { level: "warn", msg: "w", n: 3, worker: 3 },
    { level: "error", msg: "e", n: 4, worker: 3 },
  ];
  assert.deepEqual(written("debug"), all);
  assert.deepEqual(written("info"), all.slice(1));
  assert.deepEqual(written("warn"), all.slice(2));
  assert.deepEqual(written("error"), all.slice(3));
  assert.deepEqual(written("silent"), []);
});

it("a start that cannot go on says why in one line, without a stack trace, and exits 1", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-start-"));
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
  try {
    const start = (env: Record<string, string>) => {
      try {
        execFileSync(process.execPath, ["--import", "tsx", "src/main.ts"], { env: { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env }, stdio: ["ignore", "pipe", "pipe"], timeout: 30_000 });
        return { code: 0, stderr: "", stdout: "" };
      } catch (err) {
        const e = err as { status: number | null; stderr: Buffer; stdout: Buffer };
        return { code: e.status, stderr: e.stderr.toString(), stdout: e.stdout.toString() };
      }
    };
    const port = String((taken.address() as net.AddressInfo).port);
    const notADatabase = join(dir, "notes.txt");
    writeFileSync(notADatabase, "x".repeat(4096));
    writeFileSync(join(dir, "file"), "");
    const cert = join(dir, "junk.pem");
    writeFileSync(cert, "not a certificate\n");
    // A real certificate, and keys that are not its own: one of another type, one OpenSSL cannot serve with at all.
    const [ecCert, ecKey, rsaKey, x25519Key] = ["ec.crt", "ec.key", "rsa.key", "x25519.key"].map((f) => join(dir, f)) as [string, string, string, string];
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ecKey, "-out", ecCert, "-days", "1", "-subj", "/CN=localhost"], { stdio: "ignore" });
    execFileSync("openssl", ["genpkey", "-algorithm", "RSA", "-out", rsaKey], { stdio: "ignore" });
    execFileSync("openssl", ["genpkey", "-algorithm", "X25519", "-out", x25519Key], { stdio: "ignore" });
    // Another program's database, which a start must leave exactly as it was.
    const foreign = join(dir, "other.db");
    const other = new Database(foreign);
    other.exec("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me')");
    other.close();
    const foreignBytes = readFileSync(foreign);
    const cases: [Record<string, string>, RegExp][] = [
      [{ DATABASE_URL: notADatabase }, /^startup error: DATABASE_URL: .*notes\.txt is not a SQLite database\n$/],
      [{ DATABASE_URL: foreign }, /^startup error: DATABASE_URL: .*other\.db is not a database of this service: it holds tables of something else \(notes\) and none of this service's; set DATABASE_URL to this service's database, or to a new file\n$/],
      [{ DATABASE_URL: join(dir, "file", "x.db") }, /^startup error: DATABASE_URL: cannot look up .*x\.db \(ENOTDIR\): a part of the path is a file, not a folder\n$/],
      [{ DATABASE_URL: join(dir, "file", "sub", "x.db") }, /^startup error: DATABASE_URL: cannot look up .*x\.db \(ENOTDIR\): a part of the path is a file, not a folder\n$/],
      [{ DATABASE_URL: join(dir, `${"n".repeat(300)}.db`) }, /^startup error: DATABASE_URL: cannot look up .*nnn\.db \(ENAMETOOLONG\): the name, or a part of it, is too long for the file system\n$/],
      [{ DATABASE_URL: join(dir, "b.db"), TLS_CERT_FILE: cert, TLS_KEY_FILE: cert }, /^startup error: TLS_CERT_FILE does not hold a PEM certificate this service can use \(ERR_OSSL_/],
      // With workers, the one that cannot start stops the service instead of being forked again and again.
      [{ DATABASE_URL: join(dir, "c.db"), TLS_CERT_FILE: cert, TLS_KEY_FILE: cert, WORKERS: "2" }, /startup error: TLS_CERT_FILE does not hold a PEM certificate/],
      // A certificate where the key belongs: the message names the file.
      [{ DATABASE_URL: join(dir, "h.db"), TLS_CERT_FILE: ecCert, TLS_KEY_FILE: ecCert }, /^startup error: TLS_KEY_FILE does not hold a PEM private key this service can use \(ERR_OSSL_/],
      [{ DATABASE_URL: join(dir, "d.db"), PORT: port }, /^startup error: PORT \d+: 127\.0\.0\.1:\d+ is already in use\n$/],
      // A worker's line says which worker met it.
      [{ DATABASE_URL: join(dir, "e.db"), PORT: port, WORKERS: "2" }, /startup error: PORT \d+: 127\.0\.0\.1:\d+ is already in use \(worker \d+\)\n/],
      [{ DATABASE_URL: join(dir, "f.db"), TLS_CERT_FILE: ecCert, TLS_KEY_FILE: rsaKey }, /^startup error: TLS_KEY_FILE: the key does not belong to the certificate in TLS_CERT_FILE\n$/],
      [{ DATABASE_URL: join(dir, "g.db"), TLS_CERT_FILE: ecCert, TLS_KEY_FILE: x25519Key }, /^startup error: TLS_KEY_FILE: the key does not belong to the certificate in TLS_CERT_FILE\n$/],
      // A folder that cannot be made though its parent exists (node's recursive mkdir loops there).
      [{ DATABASE_URL: "/proc/scm-no-such/x.db" }, /^startup error: DATABASE_URL: cannot create the folder for \/proc\/scm-no-such\/x\.db \((ENOENT|EACCES)\)\n$/],
      // An IPv6 zone naming no interface, on the API's listener and on the metrics page's.
      [{ DATABASE_URL: join(dir, "i.db"), HOST: "fe80::1%scm-none", PUBLIC_URL: "http://scm.lan:8080" }, /^startup error: HOST "fe80::1%scm-none": its IPv6 zone names no network interface of this machine\n$/],
      [{ DATABASE_URL: join(dir, "j.db"), METRICS_PORT: "0", METRICS_HOST: "fe80::1%scm-none" }, /^startup error: METRICS_HOST "fe80::1%scm-none": its IPv6 zone names no network interface of this machine\n$/],
    ];
    for (const [env, expected] of cases) {
      const r = start(env);
      assert.equal(r.code, 1, `${JSON.stringify(env)}: ${r.stderr}`);
      assert.match(r.stderr, expected);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
      // The primary's log names why it stopped: no one sent it a signal.
      if (env.WORKERS) assert.match(r.stdout, /"msg":"shutting down","cause":"a worker could not start"/);
      // A first start that got as far as making the admin token shows it, failed or not:
      // it is shown only once, and the next start would make none.
      const bootstrapped = /[b-j]\.db$/.test(env.DATABASE_URL ?? ""); // the starts that failed after making it
      const tokens = r.stdout.match(/scmapi_[A-Za-z0-9_-]{43}/g) ?? [];
      // Once as it is and once in the example, when made.
      assert.equal(tokens.length, bootstrapped ? 2 : 0, `${JSON.stringify(env)}: the token is shown once if made: ${r.stdout}`);
    }
    assert.ok(readFileSync(foreign).equals(foreignBytes), "the other program's database is as it was");
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith("other.db")), ["other.db"], "no -wal or -shm beside it");
    // A bad value is a configuration error (exit 2) on every start, not only on the first,
    // which is the one that would use it: here the database has its token already.
    const badName = start({ DATABASE_URL: join(dir, "b.db"), BOOTSTRAP_ORG_NAME: "bad name!" });
    assert.equal(badName.code, 2, badName.stderr);
    assert.match(badName.stderr, /^configuration error: BOOTSTRAP_ORG_NAME "bad name!" must be 1 to 63 letters/);
  } finally {
    taken.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

it("hosts are normalized and checked", () => {
  const ok: Array<[string, string]> = [
    ["GitHub.com", "github.com"],
    ["dev.azure.com/Acme/", "dev.azure.com/acme"],
    ["git.example.com:0443", "git.example.com:443"],
    ["10.0.0.1:8080", "10.0.0.1:8080"],
    ["[::1]:3000/x", "[::1]:3000/x"],
  ];
  for (const [input, expected] of ok) assert.deepEqual(normalizeHost(input), { ok: true, host: expected }, input);
  for (const bad of ["", "https://github.com", "a@b.com", "h.com?q", "h.com#f", "h .com", "h.com\n", "-h.com", "h.com:99999", "1.2.3.999", "h.com//x", "h.com/../x", "[::1", "a".repeat(256), "[1.2.3.4::]", "[1.2.3.4:1::]", "[1::1.2.3.4:5]", "[:::]", "[1:::2]"]) {
    assert.equal(normalizeHost(bad).ok, false, JSON.stringify(bad));
  }
  assert.deepEqual(normalizeHost("[::FFFF:1.2.3.4]"), { ok: true, host: "[::ffff:102:304]" }, "an embedded IPv4 address may end one");
  // An international name is refused with its ASCII form, which is taken.
  assert.deepEqual(normalizeHost("Bücher.de/tfs"), { ok: false, reason: '"bücher.de" is an international name: write it in its ASCII form (punycode), "xn--bcher-kva.de"' });
  assert.deepEqual(normalizeHost("xn--bcher-kva.de/tfs"), { ok: true, host: "xn--bcher-kva.de/tfs" });
  assert.deepEqual(normalizeHost("bü_cher.de"), { ok: false, reason: '"bü_cher.de" is not a valid host name or IP address' });
  // A fully qualified name (a trailing dot) is the same host: refused, saying how to write it.
  assert.deepEqual(normalizeHost("GitHub.com.:8443/x"), { ok: false, reason: 'must not end with a dot: give "github.com"' });
  assert.deepEqual(normalizeHost("h..com"), { ok: false, reason: '"h..com" is not a valid host name or IP address' });
});

it("any bracketed address is refused or taken as the URL parser writes it, never thrown on", () => {
  const unit = fc.constantFrom(..."0123456789abcdef:.".split(""), "::", "1.2.3.4", "ffff");
  fc.assert(
    fc.property(fc.string({ unit, maxLength: 16 }), fc.boolean(), (body, withPort) => {
      const input = `[${body}]${withPort ? ":8443" : ""}`;
      const checked = normalizeHost(input);
      if (checked.ok) assert.equal(checked.host, new URL(`http://${input}`).host, input);
    }),
    { numRuns: 5000 },
  );
});

it("the admin CLI creates an organization and a token (alone on stdout), lists and revokes it", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-admin-"));
  try {
    const env = { ...process.env, DATABASE_URL: join(dir, "a.db") };
    const admin = (...args: string[]) =>
      execFileSync(process.execPath, ["--import", "tsx", "src/admin.ts", ...args], { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    // Where there is no database, only `org create` (the first step before a first start)
    // makes one, and says so; anything else is refused, as a path that is likely mistyped.
    assert.throws(() => admin("token", "create", "--org", "team-a"), (e: { stderr: string; status: number }) => /^DATABASE_URL: no database at .*a\.db;/.test(e.stderr) && e.status === 2);
    assert.equal(existsSync(join(dir, "a.db")), false);
    // A name org create refuses makes no database either.
    assert.throws(() => admin("org", "create", "bad name!"), /name: must be/);
    assert.equal(existsSync(join(dir, "a.db")), false);
    const made = spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", "org", "create", "team-a"], { env, encoding: "utf8" });
    assert.equal(made.status, 0, made.stderr);
    assert.match(made.stderr, /^no database at .*a\.db: making a new one\ncreated organization team-a /);
    const token = admin("token", "create", "--org", "team-a");
    assert.match(token, /^scmapi_[A-Za-z0-9_-]{43}\n$/);
    const [id, , state] = admin("token", "list", "--org", "team-a").trim().split("\t");
    assert.equal(state, "live");
    // It reads DATABASE_URL alone: the service's other settings, even broken ones, do not stop it.
    const elsewhere = execFileSync(process.execPath, ["--import", "tsx", "src/admin.ts", "token", "list", "--org", "team-a"], {
      env: { ...env, PORT: "not a port", TLS_CERT_FILE: join(dir, "missing.pem"), TLS_KEY_FILE: join(dir, "missing.pem") }, encoding: "utf8",
    });
    assert.equal(elsewhere.trim().split("\t")[0], id);
    assert.throws(() => admin("token", "revoke", id!, "extra"), /usage:/, "extra arguments are refused, not ignored");
    assert.throws(() => admin("org", "create", "team-b", "team-c"), /usage:/);
    admin("org", "create", "team-0");
    const orgs = admin("org", "list").trim().split("\n").map((l) => l.split("\t"));
    assert.deepEqual(orgs.map((o) => o[0]), ["team-0", "team-a"], "by name");
    assert.ok(orgs.every((o) => /^[0-9a-f-]{36}$/.test(o[1]!) && !Number.isNaN(Date.parse(o[2]!))));
    assert.throws(() => admin("org", "list", "team-a"), /usage:/);
    // Asked for, the usage goes to stdout and the command succeeds.
    for (const help of ["--help", "-h", "help"]) assert.match(admin(help), /^usage:\n  admin org create NAME\n  admin org list /);
    assert.throws(() => admin("token", "list", "--org", "team-a", "--all"), /unexpected arguments: --all/);
    // Ids are shown in lower case; one typed in upper case names the same token.
    const revoked = spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", "token", "revoke", id!.toUpperCase()], { env, encoding: "utf8" });
    assert.equal(revoked.status, 0, revoked.stderr);
    assert.equal(revoked.stderr, `revoked API token ${id}\n`, "the id as it is shown, not as typed");
    assert.throws(() => admin("token", "revoke", "not-an-id"), (e: { stderr: string; status: number }) => /id: must be a uuid/.test(e.stderr) && e.status === 2);
    assert.match(admin("token", "list", "--org", "team-a"), /\trevoked /);
    // A file that is no database: one line saying so, no stack trace.
    writeFileSync(join(dir, "notes.txt"), "x".repeat(4096));
    assert.throws(
      () => execFileSync(process.execPath, ["--import", "tsx", "src/admin.ts", "org", "create", "x-team"], { env: { ...env, DATABASE_URL: join(dir, "notes.txt") }, stdio: ["ignore", "pipe", "pipe"] }),
      (e: { stderr: Buffer; status: number }) => /^DATABASE_URL: .*notes\.txt is not a SQLite database\n$/.test(e.stderr.toString()) && e.status === 2,
    );
    assert.throws(() => admin("token", "create", "--org", "missing"), /not found/);
    // The token is shown on stdout alone, by design; the database keeps no copy of it.
    const watch = new SecretWatch();
    watch.noteToken(token.trim());
    watch.finish(join(dir, "a.db"), []);
    rmSync(join(dir, "a.db"));
    assert.throws(() => admin("tokn", "create"), /usage:/);
    assert.equal(existsSync(join(dir, "a.db")), false, "a usage error creates no database");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a new database has 2 KiB pages; `admin db page-size` rewrites an older 4 KiB one, only while no one else has it open", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-pages-"));
  try {
    const file = join(dir, "old.db");
    const env = { ...process.env, DATABASE_URL: file };
    const admin = (...args: string[]) =>
      execFileSync(process.execPath, ["--import", "tsx", "src/admin.ts", ...args], { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    const pageSize = () => {
      const db = new Database(file, { readonly: true });
      try {
        return db.pragma("page_size", { simple: true });
      } finally {
        db.close();
      }
    };
    // A database as earlier releases made it: 4 KiB pages, WAL.
    const old = new Database(file);
    old.pragma("page_size = 4096");
    old.pragma("journal_mode = WAL");
    old.exec("CREATE TABLE made_by_an_earlier_release (x); DROP TABLE made_by_an_earlier_release");
    old.close();
    admin("org", "create", "team-a");
    admin("token", "create", "--org", "team-a");
    assert.equal(pageSize(), 4096, "opening an existing database keeps its page size");

    const service = new Database(file); // stands for the running service
    service.prepare("SELECT count(*) FROM organizations").get();
    assert.throws(() => admin("db", "page-size"), /in use by another process; stop the service first/);
    service.close();
    assert.equal(pageSize(), 4096);

    assert.equal(admin("db", "page-size"), "", "the report goes to stderr");
    assert.equal(pageSize(), 2048);
    const after = new Database(file, { readonly: true });
    try {
      assert.equal(after.pragma("journal_mode", { simple: true }), "wal");
      assert.equal(after.pragma("integrity_check", { simple: true }), "ok");
    } finally {
      after.close();
    }
    const [, , state] = admin("token", "list", "--org", "team-a").trim().split("\t");
    assert.equal(state, "live", "the data came through");

    const fresh = join(dir, "new.db");
    openDatabase(fresh).$client.close(); // as the service's first start makes it
    const db = new Database(fresh, { readonly: true });
    try {
      assert.equal(db.pragma("page_size", { simple: true }), 2048);
    } finally {
      db.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("the claim file is for whoever may write the database, a second claim in one process is refused as in another, and a link to nothing is said", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-claim-mode-"));
  try {
    const file = join(dir, "shared.db");
    openDatabase(file).$client.close();
    // Shared with a group: whoever may write the database may claim it.
    chmodSync(file, 0o660);
    claimDatabase(file);
    assert.equal(statSync(`${file}.lock`).mode & 0o777, 0o660);
    assert.throws(() => claimDatabase(file), (err) => err instanceof DatabaseClaimedError);
    // Whoever may only read it may not open the claim file: a reader's lock would keep the service from starting.
    assert.deepEqual([0o644, 0o640, 0o600, 0o660, 0o664].map(claimMode), [0o600, 0o600, 0o600, 0o660, 0o660]);
    // One an earlier release made with the database's mode is closed to readers once claimed.
    const older = join(dir, "older.db");
    openDatabase(older).$client.close();
    chmodSync(older, 0o644);
    writeFileSync(`${older}.lock`, "");
    chmodSync(`${older}.lock`, 0o644);
    claimDatabase(older);
    assert.equal(statSync(`${older}.lock`).mode & 0o777, 0o600);
    // A claim file that is a link to nothing is said as such, not retried for ever.
    const dangling = join(dir, "dangling.db");
    symlinkSync(join(dir, "nowhere", "x"), `${dangling}.lock`);
    assert.throws(() => claimDatabase(dangling), (err) => err instanceof ClaimFileError && describeStartupError(err, { databaseFile: dangling }) === `DATABASE_URL: ${dangling}.lock is a symbolic link to no file; remove it`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// A claim file removed as it is being claimed (a refused restore takes away the one it made)
// and made again by the next claimer: a lock on the removed one would be no claim at all.
it("a claim whose file is replaced between its lock and its look at the file is taken again, on the file now there", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-claim-swap-"));
  const file = join(dir, "swapped.db");
  const lock = `${file}.lock`;
  const realStat = fs.statSync;
  // fs's functions as ES modules import them follow the object's after syncBuiltinESMExports.
  const useStat = (stat: typeof fs.statSync) => {
    (fs as { statSync: typeof fs.statSync }).statSync = stat;
    syncBuiltinESMExports();
  };
  try {
    openDatabase(file).$client.close();
    let looks = 0;
    // The claim looks at its file twice before it holds it: for its inode, then, locked, to
    // see it is still the same. Just before that second look, the file is replaced.
    useStat(((path: string, options?: object) => {
      if (path === lock && ++looks === 2) {
        rmSync(lock);
        writeFileSync(lock, "");
      }
      return realStat(path, options as never);
    }) as typeof fs.statSync);
    claimDatabase(file);
    useStat(realStat);
    assert.ok(looks >= 3, `looked ${looks} times: it took the new file again`);
    // The claim is on the file that is there: a second claimer is refused.
    assert.throws(() => claimDatabase(file), (err) => err instanceof DatabaseClaimedError);
  } finally {
    useStat(realStat);
    rmSync(dir, { recursive: true, force: true });
  }
});

it("one database, one service: a second service on the same file is refused at start, and a killed one leaves no claim behind", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-claim-"));
  try {
    // With workers, the primary holds the claim for them after closing its own connection.
    const first = await startProcess(dir, { WORKERS: "2" });
    t.after(() => stopIfRunning(first.child));
    const dbFile = join(dir, "db", "s.db");
    const lock = `${dbFile}.lock`;
    assert.equal(statSync(lock).mode & 0o777, 0o600, "the claim file is this user's alone");

    // Through a symbolic link too: the claim is on the file it names.
    symlinkSync(dbFile, join(dir, "alias.db"));
    for (const databaseUrl of [dbFile, join(dir, "alias.db")]) {
      const second = spawnSync(process.execPath, ["--import", "tsx", "src/main.ts"], {
        env: { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: databaseUrl },
        encoding: "utf8",
        timeout: 30_000,
      });
      assert.equal(second.status, 1, second.stderr + second.stdout);
      assert.match(second.stderr, /^startup error: DATABASE_URL: .* is served by another process already \(another copy of this service, or an admin command that needs it alone, such as `db restore`; any process that holds a lock on .*s\.db\.lock counts\): one database, one service; for more processes, set WORKERS\n$/);
      assert.doesNotMatch(second.stdout, /listening|scmapi_/);
    }

    // Admin commands that need the database alone are refused at once; the others work beside it.
    const admin = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", ...args], { env: { ...process.env, DATABASE_URL: dbFile }, encoding: "utf8" });
    assert.equal(admin("db", "backup", join(dir, "backup.db")).status, 0);
    for (const args of [["db", "page-size"], ["db", "restore", join(dir, "backup.db")]]) {
      const refused = admin(...args);
      assert.equal(refused.status, 2, refused.stderr);
      assert.equal(refused.stderr, "the database is in use by another process; stop the service first\n", args.join(" "));
    }
    assert.equal(admin("org", "list").status, 0);

    // Another name of the file (a hard link) would have a WAL of its own, and a claim of its
    // own: refused, by the service and by the CLI, as soon as there are two names.
    const second = join(dir, "hard.db");
    linkSync(dbFile, second);
    const linked = spawnSync(process.execPath, ["--import", "tsx", "src/main.ts"], { env: { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: second }, encoding: "utf8", timeout: 30_000 });
    assert.equal(linked.status, 1, linked.stderr);
    assert.equal(linked.stderr, `startup error: DATABASE_URL: ${second} has 2 names (hard links to one file): SQLite keeps a WAL beside each name, so what is written through one is lost to the others; remove the other names (copies are made with \`admin db backup\`)\n`, "the other is in another folder");
    // One in the same folder is named.
    const beside = `${dbFile}.replaced-2026`;
    linkSync(dbFile, beside);
    const named = spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", "org", "list"], { env: { ...process.env, DATABASE_URL: dbFile }, encoding: "utf8" });
    assert.equal(named.status, 2, named.stderr);
    assert.match(named.stderr, new RegExp(`has 3 names \\(hard links to one file\\).*remove the other names \\(beside it: ${beside.replace(/[.]/g, "\\.")}, and others elsewhere\\)`));
    rmSync(beside);
    for (const args of [["org", "list"], ["db", "backup", join(dir, "never.db")]]) {
      const refused = spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", ...args], { env: { ...process.env, DATABASE_URL: second }, encoding: "utf8" });
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(refused.stderr, /has 2 names \(hard links to one file\)/);
    }
    rmSync(second);
    assert.deepEqual(readdirSync(dir).sort(), ["alias.db", "backup.db", "db"]);
    assert.deepEqual(readdirSync(join(dir, "db")).sort(), ["s.db", "s.db-shm", "s.db-wal", "s.db.lock"], "the refused restore left nothing behind");

    // Killed, the primary's claim goes with it (its workers exit too): the next start serves.
    // Its workers are looked for first: once it is gone they are no longer its children.
    const workers = childrenRunning(first.child.pid!, "src/main.ts");
    assert.equal(workers.length, 2, "two workers serve");
    first.child.kill("SIGKILL");
    await first.exited;
    for (let i = 0; i < 100 && workers.some((w) => existsSync(`/proc/${w}`)); i++) await new Promise((r) => setTimeout(r, 50));
    const next = await startProcess(dir);
    t.after(() => stopIfRunning(next.child));
    const health = await fetch(`http://127.0.0.1:${next.port}/healthz`);
    assert.equal(health.status, 200);
    next.child.kill("SIGTERM");
    assert.equal(await next.exited, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("`npm start`, the README's way to run, passes SIGTERM to the service, which drains and stops", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-npm-"));
  const env = { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: join(dir, "s.db") };
  // detached: a group of its own, as under a supervisor, so nothing else passes the signal on.
  const npm = spawn("npm", ["start"], { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  try {
    let out = "";
    npm.stdout.on("data", (d) => (out += d));
    npm.stderr.on("data", (d) => (out += d));
    const exited = new Promise<number | null>((r) => npm.once("close", r));
    for (let i = 0; i < 1200 && !/"msg":"listening"/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    const port = Number(/"msg":"listening","address":"[^"]*:(\d+)"/.exec(out)?.[1]);
    assert.ok(port > 0, out);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    npm.kill("SIGTERM");
    await exited;
    for (let i = 0; i < 100 && !/"msg":"stopped"/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(out, /"msg":"shutting down","signal":"SIGTERM"/);
    assert.match(out, /"msg":"stopped"/);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`), "nothing listens any more");
  } finally {
    // Should the service outlive npm (the failure this test is for), it still goes.
    try {
      if (npm.pid) process.kill(-npm.pid, "SIGKILL");
    } catch {
      // the group is gone already
    }
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a log reader that goes away (EPIPE on stdout) does not stop the service", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-epipe-"));
  try {
    const { child, port, exited } = await startProcess(dir);
    child.stdout.destroy();
    // Each request writes a log line into the closed pipe.
    for (let i = 0; i < 5; i++) {
      assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(child.exitCode, null, "still running");
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a first start stopped by SIGTERM before it listens still prints the token it made, and exits 0", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-early-stop-"));
  const dbFile = join(dir, "s.db");
  // Another process holds the write lock of an empty database, so the start waits in its
  // migrations: a moment after the signal handlers are in place, before the token exists.
  const other = new Database(dbFile);
  other.pragma("journal_mode = WAL");
  other.exec("BEGIN IMMEDIATE");
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: dbFile },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const state = { out: "", err: "" };
  child.stdout.on("data", (d) => (state.out += d));
  child.stderr.on("data", (d) => (state.err += d));
  const exited = new Promise<number | null>((resolve) => child.once("close", resolve));
  try {
    // It has the database open: it is inside its migrations, waiting for the lock.
    while (child.exitCode === null && !hasOpen(child.pid!, dbFile)) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200));
    child.kill("SIGTERM");
    other.exec("COMMIT");
    assert.equal(await exited, 0, state.out + state.err);
    const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(state.out)?.[0];
    assert.ok(token, `the token was printed: ${state.out}`);
    assert.match(state.out, /"msg":"stopped"/);
    const db = new Database(dbFile, { readonly: true });
    const hashes = db.prepare("SELECT token_hash FROM api_tokens").pluck().all() as Buffer[];
    db.close();
    assert.equal(hashes.length, 1);
    assert.ok(hashes[0]!.equals(createHash("sha256").update(token!).digest()), "the printed token is the one stored");
  } finally {
    if (other.inTransaction) other.exec("ROLLBACK");
    other.close();
    if (child.exitCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

// A look-alike of DATABASE_URL would leave the command on the default file: it is warned
// of, as the service warns; and every line names the file whatever the working directory.
it("the admin CLI warns of a setting that looks like DATABASE_URL and names the database by its full path", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-admin-path-"));
  try {
    const file = join(dir, "b.db");
    const env = { ...process.env, DATABASE_URL: relative(process.cwd(), file), DATABSE_URL: join(dir, "elsewhere.db") };
    const made = spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", "org", "create", "team-b"], { env, encoding: "utf8" });
    assert.equal(made.status, 0, made.stderr);
    const [warning, making, created] = made.stderr.split("\n");
    assert.equal(warning, "warning: DATABSE_URL is set, but nothing reads it: did you mean DATABASE_URL?");
    assert.equal(making, `no database at ${file}: making a new one`);
    assert.match(created!, /^created organization team-b /);
    assert.equal(existsSync(join(dir, "elsewhere.db")), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("`admin token create` whose stdout no one reads revokes the token it made and says so, without a stack trace; to /dev/null it makes none", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-admin-epipe-"));
  try {
    const env = { ...process.env, DATABASE_URL: join(dir, "a.db") };
    assert.equal(spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", "org", "create", "team-a"], { env }).status, 0);
    const child = spawn(process.execPath, ["--import", "tsx", "src/admin.ts", "token", "create", "--org", "team-a"], { env, stdio: ["ignore", "pipe", "pipe"] });
    // The reader is gone before the token is written.
    child.stdout.destroy();
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    assert.equal(code, 1, "begun and not finished: 1, as README says, not 2 (refused, nothing changed)");
    assert.match(err, /^stdout could not be written, so the new token \S+ was revoked; run the command again with stdout going somewhere\n$/);
    const listed = spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", "token", "list", "--org", "team-a"], { env, encoding: "utf8" });
    assert.match(listed.stdout, /^\S+\t\S+\trevoked \S+\n$/, "the one token there is revoked");
    // stdout closed (node then gives the process /dev/null) or sent to /dev/null: no token is made.
    for (const shell of ["node --import tsx src/admin.ts token create --org team-a >&-", "node --import tsx src/admin.ts token create --org team-a >/dev/null"]) {
      const nowhere = spawnSync("sh", ["-c", shell], { env, encoding: "utf8" });
      assert.equal(nowhere.status, 2, shell);
      assert.match(nowhere.stderr, /^stdout goes to \/dev\/null \(or was closed\), where no one would see the new token; none was made/, shell);
    }
    const after = spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", "token", "list", "--org", "team-a"], { env, encoding: "utf8" });
    assert.equal(after.stdout, listed.stdout, "no token was made");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("hosts, normalized", () => {
  // Every trailing slash goes, not only the last one.
  it("loses all its trailing slashes, however many", async () => {
    assert.deepEqual(normalizeHost("github.com//"), { ok: true, host: "github.com" });
    assert.deepEqual(normalizeHost("dev.azure.com/Acme///"), { ok: true, host: "dev.azure.com/acme" });
    const s = await startServer();
    try {
      const { runnerId } = await createRunner(s);
      const r = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", { runnerId, scmId: "gitlab", host: "GitLab.example.com/group//", pat: true });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const again = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", { runnerId, scmId: "gitlab", host: "gitlab.example.com/group", pat: true });
      assert.equal(again.body.code, "already_exists", "one host however many slashes end it");
    } finally {
      await s.close();
    }
  });

  // Port 0 is no port a client can reach.
  it("refuses port 0, however written", () => {
    for (const host of ["git.example.com:0", "git.example.com:00000", "[::1]:0", "10.0.0.1:0/x"]) {
      assert.deepEqual(normalizeHost(host), { ok: false, reason: "port must be a number from 1 to 65535" }, host);
    }
    assert.deepEqual(normalizeHost("git.example.com:1"), { ok: true, host: "git.example.com:1" });
    assert.deepEqual(normalizeHost("git.example.com:65535"), { ok: true, host: "git.example.com:65535" });
  });
});

// A second organization of a name is a refusal, not a crash.
it("an organization name taken already is refused: already_exists, and from the admin CLI one line and exit 2", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-admin-"));
  try {
    const file = join(dir, "a.db");
    const db = openDatabase(file);
    try {
      createOrganization(db, "team-a");
      assert.throws(() => createOrganization(db, "team-a"), (e: unknown) => e instanceof DomainError && e.reason === "already_exists" && e.message === 'organization "team-a" already exists');
    } finally {
      db.$client.close();
    }
    const again = spawnSync(process.execPath, ["--import", "tsx", "src/admin.ts", "org", "create", "team-a"], { env: { ...process.env, DATABASE_URL: file }, encoding: "utf8" });
    assert.equal(again.status, 2, again.stderr);
    assert.equal(again.stderr, 'organization "team-a" already exists\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// createOrganization checks the name itself, whoever calls it.
it("an organization whose name is not one is refused: invalid_argument, nothing made", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-admin-"));
  try {
    const db = openDatabase(join(dir, "a.db"));
    try {
      for (const name of ["", "bad name!", "-dash-first", "x".repeat(64)]) {
        assert.throws(() => createOrganization(db, name), (e: unknown) => e instanceof DomainError && e.reason === "invalid_argument" && /must be 1 to 63 letters/.test(e.message), JSON.stringify(name));
      }
      assert.equal(db.$client.prepare("SELECT count(*) FROM organizations").pluck().get(), 0);
    } finally {
      db.$client.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// An organization made (by the admin CLI) before the first start gets the first token.
it("the first start's bootstrap takes an organization that exists already and gives it the token; once tokens exist it makes none", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-admin-"));
  try {
    const db = openDatabase(join(dir, "a.db"));
    try {
      const org = createOrganization(db, "team-a");
      const made = bootstrap(db, "team-a");
      assert.equal(made?.orgName, "team-a");
      assert.match(made!.token, /^scmapi_[A-Za-z0-9_-]{43}$/);
      assert.deepEqual(db.$client.prepare("SELECT id FROM organizations").pluck().all(), [org.id]);
      assert.equal(listApiTokens(db, "team-a").length, 1);
      assert.equal(bootstrap(db, "team-a"), null);
      assert.equal(listApiTokens(db, "team-a").length, 1);
      // With tokens in place it only reads: another process holding the write lock does not stop it.
      const other = new Database(join(dir, "a.db"));
      try {
        other.exec("BEGIN IMMEDIATE");
        assert.equal(bootstrap(db, "team-a"), null);
        other.exec("ROLLBACK");
      } finally {
        other.close();
      }
    } finally {
      db.$client.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Two first starts on one fresh file (the claim keeps two services apart, not an admin CLI's
// token made in between): the one that waited for the write lock looks again, and makes none.
it("a first start that finds no token, but waits for the write lock while another process makes one, makes no second token", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-admin-"));
  const file = join(dir, "a.db");
  try {
    const db = openDatabase(file);
    try {
      const org = createOrganization(db, "team-b");
      // The other process takes the write lock, adds a token, and commits a moment later.
      const other = spawn(process.execPath, ["-e", `
        const db = new (require("better-sqlite3"))(process.argv[1]);
        db.exec("BEGIN IMMEDIATE");
        db.prepare("INSERT INTO api_tokens (id, org_id, token_hash, created_at) VALUES ('t-other', ?, randomblob(32), 0)").run(process.argv[2]);
        process.stdout.write("held\\n");
        setTimeout(() => { db.exec("COMMIT"); db.close(); }, 300);
      `, file, org.id], { stdio: ["ignore", "pipe", "inherit"] });
      const exited = new Promise((resolve) => other.once("exit", resolve));
      await new Promise<void>((resolve, reject) => {
        other.stdout!.once("data", () => resolve());
        other.once("exit", (code) => reject(new Error(`the lock holder exited early (${code})`)));
      });
      // Its first read (no token yet: the other's is not committed) says make one; then it
      // waits for the lock, and finds the other's token once it has it.
      assert.equal(bootstrap(db, "team-b"), null);
      assert.equal(await exited, 0);
      assert.deepEqual(listApiTokens(db, "team-b").map((t) => t.id), ["t-other"]);
    } finally {
      db.$client.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("configuration bounds", () => {
  // A service with no worker would serve nothing.
  // "-1" is a whole number too: the message says which ones are taken, and how written.
  it("a number setting that is not decimal digits is refused naming its range", () => {
    for (const raw of ["-1", "0x50", "8080.0"]) assert.throws(() => loadConfig({ PORT: raw }), { name: "ConfigError", message: `PORT must be a whole number from 0 to 65535, in decimal digits, got "${raw}"` });
  });

  it("WORKERS must be 1 to 64", () => {
    for (const n of ["0", "65"]) assert.throws(() => loadConfig({ WORKERS: n }), new RegExp(`^ConfigError: WORKERS must be between 1 and 64, got ${n}$`), n);
    assert.equal(loadConfig({ WORKERS: "64" }).workers, 64);
    assert.equal(loadConfig({}).workers, 1);
  });

  // A request timeout equal to the headers timeout is allowed, and is the default above 30 s.
  it("REQUEST_TIMEOUT_MS may equal HEADERS_TIMEOUT_MS, and defaults to it when that is over 30 s", () => {
    const raised = loadConfig({ HEADERS_TIMEOUT_MS: "40000" });
    assert.deepEqual([raised.headersTimeoutMs, raised.requestTimeoutMs], [40_000, 40_000]);
    const equal = loadConfig({ HEADERS_TIMEOUT_MS: "5000", REQUEST_TIMEOUT_MS: "5000" });
    assert.deepEqual([equal.headersTimeoutMs, equal.requestTimeoutMs], [5000, 5000]);
  });
});

it("SIGINT (Ctrl-C in a terminal, or `docker stop` with STOPSIGNAL SIGINT) stops the service as SIGTERM does: it drains, logs its stop, and exits 0", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-sigint-"));
  try {
    const { child, port, state, exited } = await startProcess(dir);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    child.kill("SIGINT");
    assert.equal(await exited, 0, state.out + state.err);
    const lines = logLines(state.out).map((l) => JSON.parse(l) as { msg?: string; signal?: string });
    assert.equal(lines.find((l) => l.msg === "shutting down")?.signal, "SIGINT");
    assert.ok(lines.some((l) => l.msg === "stopped"), state.out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// The stop's last resort: should something after the drain hang (here the checkpointer
// thread, which never hears its stop), the process still ends, and says so with exit 1.
it("a shutdown that cannot finish (a background thread stuck) still exits, with 1 and a line saying so, SHUTDOWN_TIMEOUT_MS plus 5 s after the signal", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-stuck-stop-"));
  try {
    const fixture = join(import.meta.dirname, "fixtures", "hang-thread-stop.cjs");
    const { child, port, state, exited } = await startProcess(dir, { SHUTDOWN_TIMEOUT_MS: "0", HANG_THREAD_STOP: "1", NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --require ${fixture}` });
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    child.kill("SIGTERM");
    assert.equal(await exited, 1, state.out + state.err);
    const lines = logLines(state.out).map((l) => JSON.parse(l) as { msg?: string; level?: string; timeout_ms?: number; time?: string });
    const stopping = lines.find((l) => l.msg === "shutting down");
    const gaveUp = lines.find((l) => l.msg === "shutdown did not finish; exiting anyway");
    assert.deepEqual([gaveUp?.level, gaveUp?.timeout_ms], ["error", 0], state.out);
    // Not before the grace after the drain's timeout (0 here) has passed.
    assert.ok(Date.parse(gaveUp!.time!) - Date.parse(stopping!.time!) >= 5000, `${stopping?.time} -> ${gaveUp?.time}`);
    assert.equal(lines.some((l) => l.msg === "stopped"), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
