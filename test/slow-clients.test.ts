/**
 * Slow clients: the headers, request and idle timeouts over HTTP/1.1 and HTTP/2, in cleartext
 * and over TLS, as read from the environment; first bytes and connections held past their
 * limits; and the HTTP/1.1 side's own limits, served by a bare handler.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { loadConfig } from "../src/config.js";
import { createLogger } from "../src/log.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { createApp } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { listen } from "../src/transport/http-server.js";
import { MAX_REQUEST_BYTES } from "../src/transport/request-body.js";
import { FLAG, FRAME, frame, headerFrames, literal, RawH2, requestBlock } from "./corpus/raw-h2.js";
import { PUBLIC_URL, until } from "./harness.js";
import { logLines, SecretWatch } from "./secret-watch.js";
import { EVENTUALLY_MS, type LimitedServer, startLimited, selfSigned, holdWriteLockOf, rawConnection, sleep, later, slowExchange, type LogLine, CONNECT_REFUSED, http2Connect, nodeAnswerLines } from "./limited-server.js";

describe("slow clients", () => {
  let s: LimitedServer;
  before(async () => (s = await startLimited({ headersTimeoutMs: 400, requestTimeoutMs: 800, idleTimeoutMs: 800 })));
  after(() => s.close());

  /** Connects, writes `first`, then `dripBytes` every 100 ms until the server closes the connection. */
  const drip = (first: string, dripBytes: string) =>
    slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), first, dripBytes);


  it("HTTP/1.1: headers sent one line at a time are cut off with 408, and logged", async () => {
    const r = await drip(`POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\n`, "X-Slow: a\r\n");
    assert.ok(r.closedByServer, "the server kept waiting for the headers");
    assert.match(r.response, /^HTTP\/1\.1 408 /);
    assert.doesNotMatch(r.response, /x-should-retry/i, "a request that timed out may be sent again");
    assert.match(r.response, /\r\n\r\nrequest timeout: the request headers did not arrive in time\n$/);
    const timedOut = (await nodeAnswerLines(s, 1)).filter((l) => l.code === "http_408");
    assert.equal(timedOut.length, 1, JSON.stringify(timedOut));
    assert.equal(timedOut[0]!.reason, "the request headers did not arrive in time");
  });

  it("HTTP/1.1: a body sent a byte at a time is cut off with 408", async () => {
    const head = `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: slow-body\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`;
    const r = await drip(head, " ");
    assert.ok(r.closedByServer, "the server kept waiting for the body");
    assert.match(r.response, /^HTTP\/1\.1 408 /);
    assert.match(r.response, /\r\n\r\nrequest timeout: the request body did not arrive in time\n$/);
    assert.doesNotMatch(r.response, /x-should-retry/i, "a request that timed out may be sent again");
    // Logged as what the client was told.
    let line: { code?: string; http_status?: number } | undefined;
    for (const t0 = Date.now(); !line && Date.now() - t0 < EVENTUALLY_MS; await sleep(20)) {
      line = s.logs.map((l) => JSON.parse(l) as { request_id?: string; code?: string; http_status?: number }).find((l) => l.request_id === "slow-body");
    }
    assert.equal(line?.code, "http_408", JSON.stringify(line));
    assert.equal(line?.http_status, 408);
  });

  const holdWriteLock = () => holdWriteLockOf(s.file);
  /** A CreateRunner as raw HTTP/1.1, its name and request id both `id`. */
  const rawCreate = (id: string) => {
    const body = JSON.stringify({ name: id, provider: "RUNNER_PROVIDER_AWS_EC2" });
    return `POST /gitpod.v1.RunnerService/CreateRunner HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: ${id}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  };
  const requestLines = () => s.logs.map((l) => JSON.parse(l) as LogLine).filter((l) => l.msg === "request");

  it("HTTP/1.1: a request pipelined behind a call still being worked on stalls in its headers: the call is answered (not 408), then the connection closes", async () => {
    const lock = holdWriteLock();
    try {
      const exchange = slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), `${rawCreate("piped-create")}GET /healthz HTTP/1.1\r\nHo`, "");
      // Past the headers timeout (400 ms), while the create still waits: the stalled request
      // is logged then.
      const stalled = () => requestLines().some((l) => l.code === "canceled" && /pipelined behind calls/.test(l.reason ?? ""));
      for (const t0 = Date.now(); !stalled() && Date.now() - t0 < EVENTUALLY_MS; ) await sleep(20);
      lock.release();
      const r = await exchange;
      assert.ok(r.closedByServer);
      assert.deepEqual(r.response.match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 200"], r.response);
      const lines = requestLines();
      assert.equal(lines.find((l) => l.request_id === "piped-create")?.code, "ok");
      assert.match(lines.find((l) => l.code === "canceled" && l.reason !== undefined)?.reason ?? "", /^the request headers did not arrive in time; pipelined behind calls/);
      assert.equal((s.db.$client.prepare("SELECT count(*) AS n FROM runners WHERE name = 'piped-create'").get() as { n: number }).n, 1);
    } finally {
      lock.release();
    }
  });

  it("HTTP/1.1: a request cut off in its headers behind a call still being worked on is not run when its headers come after all", async () => {
    const lock = holdWriteLock();
    const sock = net.connect(s.port, "127.0.0.1");
    let text = "";
    sock.on("data", (d) => (text += d.toString("latin1")));
    sock.on("error", () => {});
    const closed = new Promise<string>((resolve) => sock.once("close", () => resolve("closed")));
    try {
      await new Promise((r) => sock.once("connect", r));
      const late = rawCreate("late-create");
      const cut = late.indexOf("\r\n") + 2;
      const stalledLines = () => requestLines().filter((l) => l.code === "canceled" && /pipelined behind calls/.test(l.reason ?? "")).length;
      const before = stalledLines();
      sock.write(rawCreate("first-create") + late.slice(0, cut));
      const stalled = () => stalledLines() > before;
      for (const t0 = Date.now(); !stalled() && Date.now() - t0 < EVENTUALLY_MS; ) await sleep(20);
      assert.ok(stalled());
      // The rest of the stalled request, while the first call still waits: it is dropped.
      sock.write(late.slice(cut));
      await sleep(100);
      lock.release();
      assert.equal(await Promise.race([closed, later(EVENTUALLY_MS, "still open")]), "closed");
      assert.deepEqual(text.match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 200"], text);
      const runs = (name: string) => (s.db.$client.prepare("SELECT count(*) AS n FROM runners WHERE name = ?").get(name) as { n: number }).n;
      assert.deepEqual([runs("first-create"), runs("late-create")], [1, 0]);
      assert.equal(requestLines().filter((l) => l.request_id === "late-create").length, 0);
    } finally {
      lock.release();
      sock.destroy();
    }
  });

  it("HTTP/1.1: a CONNECT pipelined behind a call still being worked on waits for that call's answer, and is not answered itself", async () => {
    const lock = holdWriteLock();
    try {
      const exchange = slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), `${rawCreate("before-connect")}CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`, "");
      await sleep(300);
      lock.release();
      const r = await exchange;
      assert.deepEqual(r.response.match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 200"], r.response);
      const lines = requestLines();
      assert.equal(lines.find((l) => l.request_id === "before-connect")?.code, "ok");
      assert.match(lines.find((l) => l.code === "canceled" && l.procedure === "example.com:443")?.reason ?? "", /^CONNECT is not served; pipelined behind calls/);
    } finally {
      lock.release();
    }
  });

  it("HTTP/1.1: the calls a pipelined fault waits for are given REQUEST_TIMEOUT_MS at most, then the connection closes", async () => {
    // The create waits for the lock (up to 5 s); REQUEST_TIMEOUT_MS here is 800 ms.
    const lock = holdWriteLock();
    try {
      let lockHeldAtClose = false;
      const r = await slowExchange((onConnect) => {
        const sock = net.connect(s.port, "127.0.0.1", onConnect);
        sock.once("close", () => (lockHeldAtClose = !lock.released));
        return sock;
      }, `${rawCreate("held-long")}GE\u0001T / HTTP/1.1\r\n\r\n`, "");
      assert.ok(r.closedByServer);
      assert.ok(lockHeldAtClose, "closed while the call it waited for was still waiting");
      assert.equal(r.response, "");
    } finally {
      lock.release();
    }
  });

  it("HTTP/1.1: a call queued behind another on a connection its client leaves still gets its line", async () => {
    const lock = holdWriteLock();
    try {
      const list = `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: queued-second\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`;
      const sock = net.connect(s.port, "127.0.0.1");
      sock.on("error", () => {});
      await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
      sock.write(rawCreate("queued-first") + list);
      await sleep(150);
      sock.destroy();
      const lineOf = (id: string) => requestLines().find((l) => l.request_id === id);
      for (const t0 = Date.now(); !(lineOf("queued-first") && lineOf("queued-second")) && Date.now() - t0 < EVENTUALLY_MS; ) await sleep(20);
      assert.equal(lineOf("queued-second")?.code, "canceled", "the queued call's line");
      assert.deepEqual([lineOf("queued-second")?.http_status], [null]);
    } finally {
      lock.release();
    }
  });

  it("HTTP/1.1: a call answered before its body came (a refused token), whose body then stalls: closed without a second answer or line", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    const head = `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nX-Request-Id: early-answer\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{"a":`;
    const r = await slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), head, "");
    assert.ok(r.closedByServer);
    assert.match(r.response, /^HTTP\/1\.1 401 /);
    assert.equal((r.response.match(/HTTP\/1\.1 \d{3} /g) ?? []).length, 1, r.response);
    const lines = s.logs.map((l) => JSON.parse(l) as LogLine).filter((l) => l.msg === "request" && l.request_id === "early-answer");
    assert.deepEqual(lines.map((l) => l.code), ["unauthenticated"]);
    assert.equal((await nodeAnswerLines(s, 0)).length, before);
  });

  it("a connection that sends nothing, or half an HTTP/2 preface, is closed", async () => {
    for (const first of ["", "PRI * HTTP/2.0\r\n"]) {
      const r = await drip(first, "");
      assert.ok(r.closedByServer, `kept open after ${JSON.stringify(first)}`);
    }
  });

  it("HTTP/2: a connection that opens no stream is closed", async () => {
    const session = http2.connect(s.url);
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    session.on("error", () => {});
    const giveUp = later(EVENTUALLY_MS, "still open");
    assert.notEqual(await Promise.race([closed, giveUp]), "still open");
  });

  it("HTTP/2: a header block sent a fragment at a time is cut off", async () => {
    const raw = await RawH2.connect(s.port);
    // HEADERS without END_HEADERS, then CONTINUATION frames that never finish the block.
    raw.send(frame(FRAME.HEADERS, 0, 1, requestBlock("/gitpod.v1.RunnerService/ListRunners", s.token)));
    const timer = setInterval(() => raw.send(frame(FRAME.CONTINUATION, 0, 1, literal("x-slow", "a"))), 100);
    try {
      assert.ok(await raw.closedWithin(EVENTUALLY_MS), "the server kept waiting for the header block");
    } finally {
      clearInterval(timer);
      raw.destroy();
    }
  });

  it("HTTP/2: a body sent a byte at a time is answered 408 and its stream reset; the connection serves on", async () => {
    const session = http2.connect(s.url);
    session.on("error", () => {});
    try {
      const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", authorization: `Bearer ${s.token}` });
      let status = 0;
      let retryHeader: unknown;
      stream.on("response", (h) => ((status = Number(h[":status"])), (retryHeader = h["x-should-retry"])));
      stream.on("error", () => {});
      stream.resume();
      stream.write("{");
      const timer = setInterval(() => stream.write(" "), 100);
      const closed = new Promise<void>((resolve) => stream.once("close", () => resolve()));
      const outcome = await Promise.race([closed.then(() => "closed"), later(EVENTUALLY_MS, "still open")]);
      clearInterval(timer);
      assert.equal(outcome, "closed");
      assert.equal(status, 408);
      assert.equal(retryHeader, undefined, "a request that timed out may be sent again");
      // Right away, before the idle timeout: the same connection still serves.
      const next = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", authorization: `Bearer ${s.token}` });
      next.end("{}");
      const nextStatus = await new Promise<number>((resolve) => next.on("response", (h) => resolve(Number(h[":status"]))));
      assert.equal(nextStatus, 200);
    } finally {
      session.close();
    }
  });

  it("HTTP/2: a request answered 408 is not carried out, even when its body completes afterwards", async () => {
    const session = http2.connect(s.url);
    session.on("error", () => {});
    try {
      const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/CreateRunner", "content-type": "application/json", authorization: `Bearer ${s.token}` });
      stream.on("error", () => {});
      stream.resume();
      stream.write("{");
      // The rest of the body follows the moment the 408 is seen: too late to count.
      const status = await new Promise<number>((resolve) => stream.on("response", (h) => resolve(Number(h[":status"]))));
      assert.equal(status, 408);
      stream.end(`"name":"too-late","kind":"RUNNER_KIND_REMOTE","provider":"RUNNER_PROVIDER_LINUX_HOST"}`);
      await Promise.race([new Promise((resolve) => stream.once("close", resolve)), later(EVENTUALLY_MS, "still open")]);
      // Whatever the server does with the late bytes, give it the time to do it.
      await sleep(300);
      const stored = s.db.$client.prepare("SELECT count(*) AS n FROM runners WHERE name = 'too-late'").get() as { n: number };
      assert.equal(stored.n, 0, "a request answered 408 must not be carried out");
    } finally {
      session.close();
    }
  });

  it("HTTP/2: a body its client cut off with a reset is not carried out, whatever part of it came", async () => {
    // RST_STREAM before END_STREAM, with no Content-Length (connect's clients send none, and
    // binary bodies lose theirs here): the part that came is a whole message, a runner named
    // "cut-json", and must still not be taken for the request. (node's own client, closing a
    // stream, sends END_STREAM first: what came then is the whole request, and it is carried out.)
    const raw = await RawH2.connect(s.port);
    try {
      const body = Buffer.from(`{"name":"cut-json","kind":"RUNNER_KIND_REMOTE","provider":"RUNNER_PROVIDER_LINUX_HOST"}`);
      raw.send(headerFrames(1, requestBlock("/gitpod.v1.RunnerService/CreateRunner", s.token)));
      raw.send(frame(FRAME.DATA, 0, 1, body));
      await sleep(100);
      raw.send(frame(FRAME.RST_STREAM, 0, 1, Buffer.from([0, 0, 0, 8])));
      await sleep(300);
      // The connection serves on.
      raw.send(headerFrames(3, requestBlock("/gitpod.v1.RunnerService/ListRunners", s.token)));
      raw.send(frame(FRAME.DATA, FLAG.END_STREAM, 3, Buffer.from("{}")));
      await raw.until(() => raw.answered.has(3));
      assert.ok(raw.answered.has(3), "the connection stopped serving");
    } finally {
      raw.destroy();
    }
    const stored = s.db.$client.prepare("SELECT count(*) AS n FROM runners WHERE name = 'cut-json'").get() as { n: number };
    assert.equal(stored.n, 0, "a body cut off by its client's reset must not be carried out");
  });

  it("HTTP/2: a health check whose message stalls is answered 408, and nothing is written past the log", async () => {
    // connect-node, finding the answer already begun, printed a stack trace to stderr for each.
    const printed: unknown[][] = [];
    const print = console.error;
    console.error = (...args: unknown[]) => void printed.push(args);
    const session = http2.connect(s.url);
    session.on("error", () => {});
    try {
      const stream = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", te: "trailers" });
      stream.on("error", () => {});
      stream.resume();
      stream.write(Buffer.from([0, 0, 0, 0, 9, 0x0a])); // a message of 9 bytes, 1 of them sent
      const status = await new Promise<number>((resolve) => stream.on("response", (h) => resolve(Number(h[":status"]))));
      assert.equal(status, 408);
      await Promise.race([new Promise((resolve) => stream.once("close", resolve)), later(EVENTUALLY_MS, "still open")]);
      await until("its line", () => s.logs.map((l) => JSON.parse(l)).some((l) => l.procedure === "/grpc.health.v1.Health/Check"), EVENTUALLY_MS);
      await sleep(200);
      assert.deepEqual(printed, []);
      assert.deepEqual(s.logs.map((l) => JSON.parse(l)).filter((l) => l.procedure === "/grpc.health.v1.Health/Check" || l.level === "error").map((l) => [l.msg, l.code]), [["request", "http_408"]]);
    } finally {
      console.error = print;
      session.close();
    }
  });

  it("HTTP/2: an idle connection is closed with GOAWAY", async () => {
    const session = http2.connect(s.url);
    session.on("error", () => {});
    let goaway = false;
    session.on("goaway", () => (goaway = true));
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", authorization: `Bearer ${s.token}` });
    stream.end("{}");
    const status = await new Promise<number>((resolve) => stream.on("response", (h) => resolve(Number(h[":status"]))));
    assert.equal(status, 200);
    stream.resume();
    assert.notEqual(await Promise.race([closed, later(EVENTUALLY_MS, "still open")]), "still open");
    assert.ok(goaway, "closed without GOAWAY");
  });

  it("clients that are not slow are served as usual", async () => {
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" });
      assert.equal(r.status, 200);
    }
  });
});

describe("slow clients over TLS", () => {
  let dir: string;
  let s: LimitedServer;
  let ca: Buffer;
  before(async () => {
    let cert: string, key: string;
    ({ dir, cert, key } = selfSigned());
    ca = readFileSync(cert);
    // The headers' time is also the TLS handshake's: 1.5 s, well past a handshake on a
    // loaded machine (CI saw one take over 100 ms).
    s = await startLimited({ tls: { certFile: cert, keyFile: key }, headersTimeoutMs: 1500, requestTimeoutMs: 3000, idleTimeoutMs: 1500 });
  });
  after(async () => {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A TLS connection speaking `alpn`; answers what the server sent until it closed the connection. */
  const tlsExchange = (alpn: string, first: string, dripBytes: string) =>
    slowExchange((onConnect) => tls.connect({ port: s.port, host: "127.0.0.1", ca, ALPNProtocols: [alpn] }, onConnect), first, dripBytes);


  it("HTTP/1.1: slow headers are cut off with 408, and a request node cannot parse with 400; both logged", async () => {
    const r = await tlsExchange("http/1.1", "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\n", "X-Slow: a\r\n");
    assert.ok(r.closedByServer);
    assert.match(r.response, /^HTTP\/1\.1 408 /);
    const bad = await tlsExchange("http/1.1", "GET / HTTP/1.1\r\nHost x\r\n\r\n", "");
    assert.match(bad.response, /^HTTP\/1\.1 400 [^]*malformed HTTP\/1\.1 request \(HPE_/);
    const lines = await nodeAnswerLines(s, 2);
    assert.deepEqual(lines.map((l) => l.code), ["http_408", "http_400"]);
  });

  it("HTTP/1.1: an idle keep-alive connection is closed after a request", async () => {
    const request = `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`;
    const r = await tlsExchange("http/1.1", request, "");
    assert.ok(r.closedByServer);
    assert.match(r.response, /^HTTP\/1\.1 200 /);
  });

  it("CONNECT over HTTP/2 and HTTP/1.1 is answered 405, each logged", async () => {
    assert.deepEqual(await http2Connect(http2.connect(`https://127.0.0.1:${s.port}`, { ca })), [405, CONNECT_REFUSED]);
    const r = await tlsExchange("http/1.1", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "");
    assert.match(r.response, /^HTTP\/1\.1 405 /);
    const lines = (await nodeAnswerLines(s, 4)).filter((l) => l.code === "http_405");
    assert.equal(lines.length, 2, JSON.stringify(lines));
  });

  it("HTTP/2: an idle connection is closed", async () => {
    const session = http2.connect(`https://127.0.0.1:${s.port}`, { ca });
    session.on("error", () => {});
    const closed = new Promise<string>((resolve) => session.once("close", () => resolve("closed")));
    const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", authorization: `Bearer ${s.token}` });
    stream.end("{}");
    stream.resume();
    assert.equal(await new Promise<number>((resolve) => stream.on("response", (h) => resolve(Number(h[":status"])))), 200);
    assert.equal(await Promise.race([closed, later(EVENTUALLY_MS, "still open")]), "closed");
  });
});

describe("timeouts from the environment", () => {
  it("HEADERS_TIMEOUT_MS, REQUEST_TIMEOUT_MS and IDLE_TIMEOUT_MS are read and checked", () => {
    const c = loadConfig({ HEADERS_TIMEOUT_MS: "300", REQUEST_TIMEOUT_MS: "900", IDLE_TIMEOUT_MS: "1500" });
    assert.deepEqual([c.headersTimeoutMs, c.requestTimeoutMs, c.idleTimeoutMs], [300, 900, 1500]);
    assert.deepEqual([loadConfig({}).headersTimeoutMs, loadConfig({}).requestTimeoutMs, loadConfig({}).idleTimeoutMs], [10_000, 30_000, 120_000]);
    assert.throws(() => loadConfig({ HEADERS_TIMEOUT_MS: "soon" }), /HEADERS_TIMEOUT_MS/);
    assert.throws(() => loadConfig({ IDLE_TIMEOUT_MS: "0" }), /IDLE_TIMEOUT_MS/);
    assert.throws(() => loadConfig({ HEADERS_TIMEOUT_MS: "5000", REQUEST_TIMEOUT_MS: "1000" }), /REQUEST_TIMEOUT_MS/);
  });

  it("the service started with HEADERS_TIMEOUT_MS=300 cuts off slow headers", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-limits-env-"));
    const dbFile = join(dir, "s.db");
    const env = { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", DATABASE_URL: dbFile, HEADERS_TIMEOUT_MS: "300", REQUEST_TIMEOUT_MS: "600" };
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        child.once("exit", (code) => reject(new Error(`the service exited with ${code}: ${out}`)));
        const poll = setInterval(() => {
          const m = /"msg":"listening","address":"[^"]*:(\d+)"/.exec(out);
          if (m) {
            clearInterval(poll);
            resolve(Number(m[1]));
          }
        }, 20);
      });
      const sock = net.connect(port, "127.0.0.1", () => sock.write("POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\n"));
      const drip = setInterval(() => sock.write("X-Slow: a\r\n"), 100);
      let response = "";
      sock.on("data", (d) => (response += d.toString("latin1")));
      sock.on("error", () => {});
      const closed = new Promise<string>((resolve) => sock.once("close", () => resolve("closed")));
      const outcome = await Promise.race([closed, later(EVENTUALLY_MS, "still open")]);
      clearInterval(drip);
      sock.destroy();
      assert.equal(outcome, "closed");
      assert.match(response, /^HTTP\/1\.1 408 /);
    } finally {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
    try {
      // The slow request carried no token; the one the first start made must be nowhere but its message.
      const watch = new SecretWatch();
      const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(out)?.[0];
      assert.ok(token, "the first start prints an API token");
      watch.noteToken(token);
      watch.finish(dbFile, [...logLines(out), err]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// HEADERS_TIMEOUT_MS bounds how long an HTTP/2 connection may go
// without opening a stream, even one that keeps itself busy (PINGs) so it is never idle.
it("HTTP/2: a connection that only pings, never opening a stream, is closed at the headers timeout, not the idle one", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-limits-"));
  const db = openDatabase(join(dir, "t.db"));
  createOrganization(db, "acme");
  createApiToken(db, "acme");
  const app = createApp(db, createLogger("silent", () => {}), { publicUrl: PUBLIC_URL });
  const server = await listen(app.handler, 0, "127.0.0.1", { ...app.listenOptions, headersTimeoutMs: 300, requestTimeoutMs: 600, idleTimeoutMs: 20_000 });
  const session = http2.connect(`http://127.0.0.1:${server.address.port}`);
  session.on("error", () => {});
  const pinger = setInterval(() => {
    if (!session.closed && !session.destroyed) session.ping(() => {});
  }, 100);
  try {
    const closed = new Promise<string>((resolve) => session.once("close", () => resolve("closed")));
    const outcome = await Promise.race([closed, new Promise<string>((r) => setTimeout(() => r("still open"), 5000))]);
    assert.equal(outcome, "closed");
  } finally {
    clearInterval(pinger);
    session.destroy();
    await server.shutdown(1000);
    await app.close();
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("first bytes, and connections held past their limits", () => {
  let s: LimitedServer;
  before(async () => (s = await startLimited({ headersTimeoutMs: 400, requestTimeoutMs: 800, idleTimeoutMs: 800 })));
  after(() => s.close());

  it("HTTP/1.1: a request whose first packet is one byte (a prefix of the HTTP/2 preface) is still taken as HTTP/1.1", async () => {
    const { sock, closed, received } = await rawConnection(s.port);
    // "P" is where "POST" and "PRI * HTTP/2.0" agree: the sniffer must wait for more.
    sock.write("P");
    await sleep(100);
    sock.write(`OST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
    assert.equal(await Promise.race([closed.then(() => "closed"), later(EVENTUALLY_MS, "still open")]), "closed");
    assert.match(received(), /^HTTP\/1\.1 200 OK\r\n/, received());
  });

  it("HTTP/2: a stream answered before its body came (no token), whose body then drips on, is reset at the request timeout", async () => {
    const session = http2.connect(s.url);
    session.on("error", () => {});
    try {
      const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json" });
      let status = 0;
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("error", () => {});
      stream.resume();
      stream.write("{");
      const timer = setInterval(() => stream.write(" "), 100);
      const closed = new Promise<void>((resolve) => stream.once("close", () => resolve()));
      const outcome = await Promise.race([closed.then(() => "closed"), later(EVENTUALLY_MS, "still open")]);
      clearInterval(timer);
      assert.equal(outcome, "closed", "a client dripping its body held the stream open past REQUEST_TIMEOUT_MS");
      assert.equal(status, 401);
      assert.equal(stream.rstCode, http2.constants.NGHTTP2_CANCEL);
    } finally {
      session.close();
    }
  });

  it("HTTP/1.1: a malformed request pipelined behind a call, with bytes still coming after it, has one line, not one a read", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    const { release } = holdWriteLockOf(s.file);
    try {
      const body = JSON.stringify({ name: "before-garbage", provider: "RUNNER_PROVIDER_AWS_EC2" });
      const create = `POST /gitpod.v1.RunnerService/CreateRunner HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: before-garbage\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      const { sock, closed, received } = await rawConnection(s.port);
      sock.write(`${create}GE\u0001T / HTTP/1.1\r\nHost: x\r\n\r\n`);
      await sleep(100);
      // Each read after the fault is reported by node's parser again.
      for (let i = 0; i < 3; i++) {
        sock.write("more bytes\r\n");
        await sleep(50);
      }
      release();
      await Promise.race([closed, later(EVENTUALLY_MS, undefined)]);
      assert.deepEqual(received().match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 200"], received());
      await sleep(200);
      const lines = (await nodeAnswerLines(s, before + 1)).slice(before);
      assert.deepEqual(lines.map((l) => [l.code, l.http_status]), [["canceled", null]], JSON.stringify(lines));
    } finally {
      release();
    }
  });

  it("HTTP/2: an idle connection is closed though a stream on it is open and silent, without waiting for the request timeout", async () => {
    const quiet = await startLimited({ headersTimeoutMs: 300, requestTimeoutMs: 30_000, idleTimeoutMs: 300 });
    const session = http2.connect(quiet.url);
    session.on("error", () => {});
    try {
      const closed = new Promise<string>((resolve) => session.once("close", () => resolve("closed")));
      // Headers without END_STREAM, and then nothing: no frame either way.
      const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", authorization: `Bearer ${quiet.token}` });
      stream.on("error", () => {});
      assert.equal(await Promise.race([closed, later(5000, "still open")]), "closed");
    } finally {
      session.destroy();
      await quiet.close();
    }
  });
});

describe("the HTTP/1.1 side's own limits, served by a bare handler", () => {
  it("HTTP/1.1: a body past the request timeout whose answer has begun is cut off, not followed by a 408", async () => {
    const server = await listen(
      (_req, res) => {
        // Answers at once, without reading the body, and keeps the answer open.
        const answer = res as http.ServerResponse;
        answer.writeHead(200, { "content-type": "text/plain" });
        answer.write("begun\n");
      },
      0,
      "127.0.0.1",
      { headersTimeoutMs: 200, requestTimeoutMs: 400 },
    );
    try {
      const r = await slowExchange((onConnect) => net.connect(server.address.port, "127.0.0.1", onConnect), "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", " ");
      assert.ok(r.closedByServer);
      assert.match(r.response, /^HTTP\/1\.1 200 OK\r\n/);
      assert.equal((r.response.match(/HTTP\/1\.1 \d{3}/g) ?? []).length, 1, r.response);
      assert.doesNotMatch(r.response, /408/);
    } finally {
      await server.shutdown(100);
    }
  });

  it("shutdown returns once the calls in flight are done, not at its timeout", async () => {
    const server = await listen((req, res) => {
      req.resume();
      req.on("end", () => setTimeout(() => res.end("done\n"), 300));
    }, 0, "127.0.0.1");
    try {
      const answered = fetch(`http://127.0.0.1:${server.address.port}/slow`).then((r) => r.text());
      await until("the call taken", () => server.inFlight() === 1);
      const stopped = server.shutdown(60_000);
      assert.equal(await answered, "done\n");
      assert.equal(await Promise.race([stopped, later(5000, "still draining")]), 0);
    } finally {
      await server.shutdown(100);
    }
  });

  it("HTTP/1.1, Expect: 100-continue: a body announced at exactly the limit is asked for, one byte more is not", async () => {
    const server = await listen((req, res) => {
      req.resume();
      req.on("end", () => res.end("read\n"));
    }, 0, "127.0.0.1");
    const first = (length: number) =>
      new Promise<string>((resolve) => {
        const sock = net.connect(server.address.port, "127.0.0.1");
        sock.on("error", () => {});
        sock.once("data", (d) => {
          resolve(d.toString("latin1"));
          sock.destroy();
        });
        sock.on("close", () => resolve(""));
        sock.write(`POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${length}\r\n\r\n`);
      });
    try {
      assert.match(await first(MAX_REQUEST_BYTES), /^HTTP\/1\.1 100 Continue\r\n/);
      assert.doesNotMatch(await first(MAX_REQUEST_BYTES + 1), /^HTTP\/1\.1 100 /);
    } finally {
      await server.shutdown(100);
    }
  });
});
