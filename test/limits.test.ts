/**
 * The limits that protect the service from oversized and slow clients: the request body
 * limit (refused without being read), field lengths (invalid_argument naming the field,
 * nothing written), timeouts for slow headers and bodies over HTTP/1.1 and HTTP/2, and the
 * bound on concurrent HTTP/2 streams.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import Gitpod, { RateLimitError } from "@gitpod/sdk";
import Database from "better-sqlite3";
import { create, create as newMessage, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RunnerInteractionService } from "../gen/gitpod/v1/runner_interactions_pb.js";
import { ListRunnersRequestSchema } from "../gen/gitpod/v1/runners_pb.js";
import { invalidArgument, MAX_REPORTED_VIOLATIONS } from "../src/domain/errors.js";
import { ServerReflectionRequestSchema } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { HealthCheckRequestSchema } from "../gen/grpc/health/v1/health_pb.js";
import { loadConfig } from "../src/config.js";
import { createLogger } from "../src/log.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { createApp } from "../src/server.js";
import { openDatabase, type Db } from "../src/store/database.js";
import { listen, type HttpServerOptions, type RunningServer } from "../src/transport/http-server.js";
import { BodyBudget, chargeBody, MAX_REQUEST_BYTES, OPEN_FREE_BYTES } from "../src/transport/request-body.js";
import { envelope, protocolHeaders, WireClient } from "./corpus/wire.js";
import { FLAG, FRAME, frame, headerFrames, literal, RawH2, REFUSED_STREAM, requestBlock } from "./corpus/raw-h2.js";
import { call, createRunner, PUBLIC_URL, signUp, startServer, until, type TestServer } from "./harness.js";
import { logLines, SecretWatch } from "./secret-watch.js";

const MIB = 1024 * 1024;
/** How long any "eventually" below may take; generous, for a slow machine. */
const EVENTUALLY_MS = 10_000;

interface LimitedServer {
  url: string;
  port: number;
  token: string;
  db: Db;
  /** The database file, for a second connection that holds its write lock. */
  file: string;
  server: RunningServer;
  /** The service's log lines so far. */
  logs: string[];
  close(): Promise<void>;
}

/** A server built as the harness builds one (leak watch included), but with these HTTP server options. */
async function startLimited(options: HttpServerOptions): Promise<LimitedServer> {
  const dir = mkdtempSync(join(tmpdir(), "scm-limits-"));
  const file = join(dir, "test.db");
  const db = openDatabase(file);
  createOrganization(db, "acme");
  const token = createApiToken(db, "acme").token;
  const logs: string[] = [];
  const watch = new SecretWatch();
  watch.noteToken(token);
  const app = createApp(db, createLogger("info", (l) => logs.push(l)), { publicUrl: PUBLIC_URL, interceptors: [watch.interceptor()] });
  const server = await listen(watch.wrap(app.handler), 0, "127.0.0.1", { ...app.listenOptions, ...options });
  return {
    url: `http://127.0.0.1:${server.address.port}`,
    port: server.address.port,
    token,
    db,
    file,
    server,
    logs,
    async close() {
      await server.shutdown(500);
      await app.close();
      try {
        watch.finish(file, logs, () => db.$client.close());
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** A fresh folder holding a self-signed certificate for 127.0.0.1 and its key. */
function selfSigned(): { dir: string; cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "scm-limits-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "pipe" });
  return { dir, cert, key };
}

/** A write lock on `file` held by another connection, so that a create waits for it; `released` says whether it still is held. */
function holdWriteLockOf(file: string) {
  const holder = new Database(file);
  holder.exec("BEGIN IMMEDIATE");
  const lock = {
    released: false,
    release() {
      if (lock.released) return;
      lock.released = true;
      holder.exec("COMMIT");
      holder.close();
    },
  };
  return lock;
}

/** A raw TCP connection to `port`, once connected: what it received so far, and its close. */
async function rawConnection(port: number) {
  const sock = net.connect(port, "127.0.0.1");
  sock.on("error", () => {});
  let text = "";
  sock.on("data", (d: Buffer) => (text += d.toString("latin1")));
  const closed = new Promise<"closed">((resolve) => sock.once("close", () => resolve("closed")));
  await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
  return { sock, closed, received: () => text };
}

const portOf = (url: string) => Number(new URL(url).port);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves after `ms` without keeping the process alive: the loser of a race with the real outcome. */
const later = <T>(ms: number, value: T) => new Promise<T>((r) => setTimeout(() => r(value), ms).unref());

/**
 * Sends `head` and then `total` bytes of body in 64 KiB chunks, waiting for the socket to
 * drain between chunks, until everything is sent or the server closes the connection.
 * Answers what came back and how much of the body the connection took.
 */
function pushBody(port: number, head: string, total: number, chunked: boolean) {
  return new Promise<{ response: string; sent: number; closedEarly: boolean }>((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    let done = false;
    let response = "";
    const pump = () => {
      while (!done && sent < total) {
        const piece = chunked ? Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]) : chunk;
        sent += chunk.length;
        if (!sock.write(piece)) {
          sock.once("drain", pump);
          return;
        }
      }
    };
    sock.on("connect", () => {
      sock.write(head);
      pump();
    });
    sock.on("data", (d) => (response += d.toString("latin1")));
    sock.on("error", () => {});
    sock.on("close", () => {
      done = true;
      resolve({ response, sent, closedEarly: sent < total });
    });
    setTimeout(() => sock.destroy(), EVENTUALLY_MS).unref();
  });
}


/**
 * Opens a connection with `connect`, writes `first`, then `dripBytes` every 100 ms (none if
 * empty) until the server closes the connection; gives up after EVENTUALLY_MS.
 */
function slowExchange(connect: (onConnect: () => void) => net.Socket, first: string, dripBytes: string) {
  return new Promise<{ response: string; closedByServer: boolean; drips: number }>((resolve) => {
    let response = "";
    let drips = 0;
    // The drips start once the first bytes are written: over TLS the connection is made only
    // after its handshake, and a drip queued before then (a slow handshake on a busy machine)
    // would go out ahead of the request line.
    let timer: ReturnType<typeof setInterval> | undefined;
    const sock = connect(() => {
      sock.write(first);
      timer = setInterval(() => {
        if (dripBytes !== "") {
          drips++;
          sock.write(dripBytes);
        }
      }, 100);
    });
    let gaveUp = false;
    const giveUp = setTimeout(() => {
      gaveUp = true;
      sock.destroy();
    }, EVENTUALLY_MS);
    sock.on("data", (d) => (response += d.toString("latin1")));
    sock.on("error", () => {});
    sock.on("close", () => {
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ response, closedByServer: !gaveUp, drips });
    });
  });
}
function headerOf(response: string, name: string): string | undefined {
  const head = response.split("\r\n\r\n")[0] ?? "";
  const line = head.split("\r\n").find((l) => l.toLowerCase().startsWith(`${name}:`));
  return line?.slice(name.length + 1).trim();
}

describe("request size limit", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  const listRunners = "/gitpod.v1.RunnerService/ListRunners";

  it("reads a body of exactly the limit and refuses one byte more with resource_exhausted", async () => {
    // An unknown field pads the body; it is ignored, so the call itself is fine.
    const body = (size: number) => `{"padding":"${"p".repeat(size - '{"padding":""}'.length)}"}`;
    const ok = await fetch(s.url + listRunners, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: body(MAX_REQUEST_BYTES) });
    assert.equal(ok.status, 200, await ok.text());
    const over = await fetch(s.url + listRunners, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: body(MAX_REQUEST_BYTES + 1) });
    assert.equal(over.status, 429);
    assert.equal(((await over.json()) as { code: string }).code, "resource_exhausted");
    assert.equal(over.headers.get("x-should-retry"), "false");
  });

  it("HTTP/1.1: a body of exactly the limit, sized or chunked, is served as any other: not marked final, and its connection serves the next call", async () => {
    // Only a body past the limit is refused: announced past it (Content-Length), or counted past it as it comes (chunked).
    const json = `{"padding":"${"p".repeat(MAX_REQUEST_BYTES - '{"padding":""}'.length)}"}`;
    assert.equal(Buffer.byteLength(json), MAX_REQUEST_BYTES);
    for (const chunked of [false, true]) {
      const how = chunked ? "chunked" : "sized";
      const sock = net.connect(portOf(s.url), "127.0.0.1");
      let text = "";
      sock.on("data", (d) => (text += d.toString("latin1")));
      sock.on("error", () => {});
      const closed = new Promise<void>((resolve) => sock.on("close", resolve));
      try {
        await new Promise((r) => sock.once("connect", r));
        const framing = chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${MAX_REQUEST_BYTES}`;
        sock.write(`POST ${listRunners} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`);
        for (let at = 0; at < json.length; at += 64 * 1024) {
          const piece = json.slice(at, at + 64 * 1024);
          sock.write(chunked ? `${piece.length.toString(16)}\r\n${piece}\r\n` : piece);
        }
        if (chunked) sock.write("0\r\n\r\n");
        for (let i = 0; i < 500 && !/\r\n\r\n[^]*\}/.test(text); i++) await sleep(20);
        const first = text;
        assert.match(first, /^HTTP\/1\.1 200 /, `${how}: ${first.slice(0, 300)}`);
        assert.equal(headerOf(first, "x-should-retry"), undefined, `${how}: a body within the limit says nothing about retries`);
        assert.equal(headerOf(first, "connection"), "keep-alive", how);
        text = "";
        sock.write("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        await Promise.race([closed, later(EVENTUALLY_MS, "still open")]);
        assert.match(text, /^HTTP\/1\.1 200 /, `${how}: the same connection serves the next call`);
      } finally {
        sock.destroy();
      }
    }
  });

  it("HTTP/1.1: a declared 64 MiB body is refused after the headers and the connection closed before the body is through", async () => {
    const head = `POST ${listRunners} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: ${64 * MIB}\r\n\r\n`;
    const r = await pushBody(portOf(s.url), head, 64 * MIB, false);
    assert.match(r.response, /^HTTP\/1\.1 429 /);
    assert.match(r.response, /"code":"resource_exhausted"/);
    assert.equal(headerOf(r.response, "x-should-retry"), "false");
    assert.equal(headerOf(r.response, "connection"), "close");
    assert.ok(r.closedEarly, `the server let the client send all ${r.sent} bytes`);
    assert.ok(r.sent < 32 * MIB, `the connection took ${r.sent} bytes`);
  });

  it("HTTP/1.1, Expect: 100-continue: a body announced over the limit is refused without a 100; one within it is asked for", async () => {
    const exchange = (length: number, body: string) =>
      new Promise<string>((resolve) => {
        const sock = net.connect(portOf(s.url), "127.0.0.1");
        let text = "";
        sock.on("data", (d) => {
          text += d.toString("latin1");
          if (text.startsWith("HTTP/1.1 100 ") && body !== "") {
            sock.write(body);
            body = "";
          }
          if (/\r\n\r\n[^]*\}/.test(text.replace(/^HTTP\/1\.1 100 [^]*?\r\n\r\n/, ""))) sock.end();
        });
        sock.on("error", () => {});
        sock.on("close", () => resolve(text));
        sock.write(`POST ${listRunners} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${length}\r\n\r\n`);
        setTimeout(() => sock.destroy(), EVENTUALLY_MS).unref();
      });
    const big = await exchange(2 * MIB, "");
    assert.match(big, /^HTTP\/1\.1 429 /, "no 100 Continue first");
    const small = await exchange(2, "{}");
    assert.match(small, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
  });

  it("HTTP/1.1: a chunked body without a length is refused once it passes the limit", async () => {
    const head = `POST ${listRunners} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const r = await pushBody(portOf(s.url), head, 64 * MIB, true);
    assert.match(r.response, /^HTTP\/1\.1 429 /);
    assert.equal(headerOf(r.response, "x-should-retry"), "false");
    assert.ok(r.closedEarly, `the server let the client send all ${r.sent} bytes`);
    assert.ok(r.sent < 32 * MIB, `the connection took ${r.sent} bytes`);
  });

  it("gRPC-Web over HTTP/1.1: a chunked body whose message claims 1.6 GB is refused and the connection closed", async () => {
    // pushBody sends "a" bytes: the first five read as flags 0x61 and a length of 0x61616161.
    const head = `POST ${listRunners} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/grpc-web+proto\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const r = await pushBody(portOf(s.url), head, 64 * MIB, true);
    assert.match(r.response, /^HTTP\/1\.1 200 /);
    assert.match(r.response, /grpc-status: 8/);
    // What is left of the body is read on only up to the size limit (see limitBody).
    assert.ok(r.closedEarly, `the server let the client send all ${r.sent} bytes`);
    assert.ok(r.sent < 32 * MIB, `the connection took ${r.sent} bytes`);
  });

  it("ordinary HTTP/1.1 requests keep their connection", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    try {
      for (const [method, path, body] of [
        ["GET", "/healthz", undefined],
        ["POST", listRunners, "{}"],
        ["POST", "/gitpod.v1.RunnerService/NoSuchMethod", "{}"],
        ["POST", listRunners, "{"],
      ] as const) {
        const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
          const req = http.request(s.url + path, { method, agent, headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` } }, resolve);
          req.on("error", reject);
          req.on("socket", (sock) => sockets.add(sock));
          req.end(body);
        });
        res.resume();
        await new Promise((r) => res.on("end", r));
        assert.equal(res.headers.connection, "keep-alive", `${method} ${path} → ${res.statusCode}`);
      }
      assert.equal(sockets.size, 1, "every request went over the same connection");
    } finally {
      agent.destroy();
    }
  });

  it("HTTP/1.1: an answer sent before a chunked body is through (a method not served here) keeps the connection; the body is read past", async () => {
    // connect-es sends every body chunked: closing the connection here made it report write EPIPE instead of the answer.
    const r = await answeredBeforeBody(s.url, s.token, `POST /gitpod.v1.RunnerService/NoSuchMethod HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer ${s.token}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    assert.match(r.first, /^HTTP\/1\.1 501 /);
    assert.equal(headerOf(r.first, "connection"), "keep-alive");
    assert.match(r.next, /^HTTP\/1\.1 200 /);
  });

  it("HTTP/1.1: a body still dripping well after its answer is cut off, without a second answer (408)", async () => {
    const head = `POST /gitpod.v1.RunnerService/NoSuchMethod HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n`;
    const r = await slowExchange((onConnect) => net.connect(portOf(s.url), "127.0.0.1", onConnect), head, "1\r\n \r\n");
    assert.ok(r.closedByServer, "the server closed the connection");
    assert.match(r.response, /^HTTP\/1\.1 501 /);
    assert.equal(r.response.match(/HTTP\/1\.1 \d{3}/g)?.length, 1, r.response);
    assert.ok(r.drips < 60, `it took ${r.drips} drips`);
  });

  it("HTTP/1.1: so is a sized body (Content-Length) still dripping after its answer", async () => {
    const head = `POST /gitpod.v1.RunnerService/ParseContextURL HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{`;
    const r = await slowExchange((onConnect) => net.connect(portOf(s.url), "127.0.0.1", onConnect), head, "   ");
    assert.ok(r.closedByServer, "the server closed the connection");
    assert.match(r.response, /^HTTP\/1\.1 501 /);
    assert.equal(r.response.match(/HTTP\/1\.1 \d{3}/g)?.length, 1, `no 408 after the answer: ${r.response}`);
  });

  it("HTTP/1.1: a sized 48 KB gRPC-Web body refused after its first bytes is read past, and the connection serves the next call", async () => {
    // The compressed flag without a grpc-encoding: connect-node refuses the call once it has
    // read the frame's header, and node reads past only bodies no one began to read.
    const body = Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), Buffer.alloc(47_995)]);
    const sock = net.connect(portOf(s.url), "127.0.0.1");
    let got = "";
    sock.on("data", (d) => (got += d.toString("latin1")));
    sock.on("error", () => {});
    const closed = new Promise<void>((resolve) => sock.on("close", resolve));
    const pause = () => new Promise((r) => setTimeout(r, 50));
    try {
      sock.write(`POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: ${body.length}\r\n\r\n`);
      sock.write(body.subarray(0, 1000));
      for (let i = 0; i < 100 && !got.includes("grpc-status"); i++) await pause();
      assert.match(got, /grpc-status: ?3\r\n/, "refused as undecodable");
      // The rest in pieces, so that it arrives after the answer in more than one read.
      for (let at = 1000; at < body.length; at += 16_000) {
        sock.write(body.subarray(at, at + 16_000));
        await pause();
      }
      sock.write("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      await Promise.race([closed, later(EVENTUALLY_MS, "still open")]);
      assert.deepEqual(got.match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 200", "HTTP/1.1 200"], got);
    } finally {
      sock.destroy();
    }
  });

  /** Opens an HTTP/2 stream and writes `total` body bytes as flow control allows, until the stream ends. */
  function h2Push(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, first: Buffer, total: number) {
    return new Promise<{ status: number; headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: string; sent: number; rstCode: number }>(
      (resolve) => {
        const stream = session.request({ ":method": "POST", ...headers });
        const chunk = Buffer.alloc(64 * 1024, 0x62);
        let sent = first.length;
        let closed = false;
        let got: http2.IncomingHttpHeaders = {};
        let trailers: http2.IncomingHttpHeaders = {};
        let body = "";
        stream.write(first);
        const pump = () => {
          while (!closed && sent < total) {
            sent += chunk.length;
            if (!stream.write(chunk)) {
              stream.once("drain", pump);
              return;
            }
          }
          if (!closed) stream.end();
        };
        pump();
        stream.on("response", (h) => (got = h));
        stream.on("trailers", (t) => (trailers = t));
        stream.on("data", (d: Buffer) => (body += d.toString("latin1")));
        stream.on("error", () => {});
        stream.on("close", () => {
          closed = true;
          resolve({ status: Number(got[":status"]), headers: got, trailers, body, sent, rstCode: stream.rstCode ?? -1 });
        });
      },
    );
  }

  it("HTTP/2: oversized calls whose bodies the client still sends after the answer do not wear out the connection", async () => {
    // Each message claims 64 MiB and is refused at once; the 900 KiB sent after the answer
    // are read and thrown away. Had each stream been reset while its body still came, node
    // would have refused every new stream after some tens of such calls (77 in one try).
    const session = http2.connect(s.url);
    let goaway = false;
    session.on("goaway", () => (goaway = true));
    try {
      // Written at once, as a client with the whole message in hand does.
      const body = Buffer.concat([envelope(Buffer.alloc(0), 0, 64 * MIB), Buffer.alloc(900 * 1024, 0x61)]);
      for (let i = 0; i < 150; i++) {
        const stream = session.request({ ":method": "POST", ":path": listRunners, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${s.token}` });
        const status = new Promise<string | undefined>((resolve) => {
          let found: string | undefined;
          stream.on("trailers", (t) => (found = t["grpc-status"] as string | undefined));
          stream.on("error", () => {});
          stream.on("close", () => resolve(found));
        });
        stream.resume();
        stream.end(body);
        assert.equal(await status, "8", `call ${i}`);
      }
      const next = await h2Push(session, { ":path": listRunners, "content-type": "application/json", authorization: `Bearer ${s.token}` }, Buffer.from("{}"), 2);
      assert.equal(next.status, 200);
      assert.equal(goaway, false);
    } finally {
      session.close();
    }
  });

  it("HTTP/2, gRPC: a unary call sent three 200 KB messages is refused once it has read two, and the client still gets to send the rest", async () => {
    // connect-node stops reading at the second message. The rest (more than the stream's
    // flow-control window) must still be read and thrown away, or the client waits for
    // credit that never comes until the request timeout cancels the stream.
    const session = http2.connect(s.url);
    try {
      // Field 1 of ListRunnersRequest (pagination), empty, over and over: a valid message.
      const message = Buffer.alloc(200 * 1024, Buffer.from([0x0a, 0x00]));
      const body = Buffer.concat([envelope(message), envelope(message), envelope(message)]);
      const stream = session.request({ ":method": "POST", ":path": listRunners, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${s.token}` });
      const outcome = new Promise<{ status: string | undefined; message: string | undefined; rstCode: number | undefined }>((resolve) => {
        let trailers: http2.IncomingHttpHeaders = {};
        stream.on("trailers", (t) => (trailers = t));
        stream.on("error", () => {});
        stream.on("close", () => resolve({ status: trailers["grpc-status"] as string | undefined, message: trailers["grpc-message"] as string | undefined, rstCode: stream.rstCode }));
      });
      stream.resume();
      stream.end(body);
      const got = await outcome;
      assert.equal(got.status, "3", JSON.stringify(got));
      assert.match(decodeURIComponent(got.message ?? ""), /received extra input message/);
      // Not CANCEL: the server did not have to give up on a body that stopped coming.
      assert.equal(got.rstCode, http2.constants.NGHTTP2_NO_ERROR, "the stream ended as usual");
    } finally {
      session.close();
    }
  });

  it("gRPC-Web over HTTP/1.1: the same call, chunked, is refused and its connection then serves the next call", async () => {
    const message = Buffer.alloc(200 * 1024, Buffer.from([0x0a, 0x00]));
    const body = Buffer.concat([envelope(message), envelope(message), envelope(message)]);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const send = (headers: http.OutgoingHttpHeaders, chunks: Buffer[]) =>
      new Promise<{ status: number; text: string; reused: boolean }>((resolve, reject) => {
        const req = http.request(`${s.url}${listRunners}`, { method: "POST", agent, headers: { authorization: `Bearer ${s.token}`, ...headers } }, (res) => {
          const got: Buffer[] = [];
          res.on("data", (c: Buffer) => got.push(c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(got).toString("latin1"), reused: req.reusedSocket }));
        });
        req.on("error", reject);
        for (const c of chunks) req.write(c);
        req.end();
      });
    try {
      const pieces = Array.from({ length: Math.ceil(body.length / 16384) }, (_, i) => body.subarray(i * 16384, (i + 1) * 16384));
      const refused = await send({ "content-type": "application/grpc-web+proto", "transfer-encoding": "chunked" }, pieces);
      assert.match(refused.text, /grpc-status: ?3\r\n/);
      assert.match(refused.text, /received extra input message/);
      // Before the rest of the body was read past, the server cut this connection under the next call.
      const next = await send({ "content-type": "application/json" }, [Buffer.from("{}")]);
      assert.equal(next.status, 200, next.text);
      assert.equal(next.reused, true, "the same connection");
    } finally {
      agent.destroy();
    }
  });

  it("gRPC-Web over HTTP/1.1: a chunked body counted past the limit, in messages each within it, is answered as final and its connection closed", async () => {
    // Two messages of 600 KB: each within the limit, 1.2 MB together, with no Content-Length.
    const message = Buffer.alloc(600 * 1000, Buffer.from([0x0a, 0x00]));
    const body = Buffer.concat([envelope(message), envelope(message)]);
    const answer = await new Promise<{ headers: http.IncomingHttpHeaders; text: string }>((resolve, reject) => {
      const req = http.request(`${s.url}${listRunners}`, { method: "POST", agent: false, headers: { authorization: `Bearer ${s.token}`, "content-type": "application/grpc-web+proto", "transfer-encoding": "chunked" } }, (res) => {
        const got: Buffer[] = [];
        res.on("data", (c: Buffer) => got.push(c));
        res.on("end", () => resolve({ headers: res.headers, text: Buffer.concat(got).toString("latin1") }));
      });
      req.on("error", reject);
      for (let at = 0; at < body.length; at += 64 * 1024) req.write(body.subarray(at, at + 64 * 1024));
      req.end();
    });
    assert.match(answer.text, /grpc-status: ?3\r\n/, "a second message in a unary call");
    assert.equal(answer.headers["x-should-retry"], "false");
    assert.equal(answer.headers.connection, "close");
  });

  it("HTTP/1.1: a chunked body of exactly the limit answered before it came is read past to its end, and the connection serves on", async () => {
    const sock = net.connect(portOf(s.url), "127.0.0.1");
    let text = "";
    sock.on("data", (d) => (text += d.toString("latin1")));
    sock.on("error", () => {});
    const closed = new Promise<void>((resolve) => sock.on("close", resolve));
    const chunk = (data: string) => `${data.length.toString(16)}\r\n${data}\r\n`;
    try {
      await new Promise((r) => sock.once("connect", r));
      sock.write(`POST /gitpod.v1.RunnerService/NoSuchMethod HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer ${s.token}\r\nTransfer-Encoding: chunked\r\n\r\n`);
      sock.write(chunk("{" + " ".repeat(64 * 1024 - 1)));
      for (let i = 0; i < 250 && !/\r\n\r\n[^]*\}/.test(text); i++) await sleep(20);
      assert.match(text, /^HTTP\/1\.1 501 /);
      text = "";
      // The rest, to 1 MiB of body to the byte, then the next call on the same connection.
      for (let sent = 64 * 1024; sent < MAX_REQUEST_BYTES; sent += 64 * 1024) sock.write(chunk(" ".repeat(64 * 1024)));
      sock.write("0\r\n\r\n");
      sock.write("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      await Promise.race([closed, later(EVENTUALLY_MS, "still open")]);
      assert.match(text, /^HTTP\/1\.1 200 /, `the next call is served: ${JSON.stringify(text.slice(0, 200))}`);
    } finally {
      sock.destroy();
    }
  });

  it("HTTP/2, Connect: a declared 64 MiB body is refused; past the limit the connection gets GOAWAY and the next call a new one", async () => {
    const session = http2.connect(s.url);
    let goaway = false;
    session.on("goaway", () => (goaway = true));
    try {
      const r = await h2Push(
        session,
        { ":path": listRunners, "content-type": "application/json", authorization: `Bearer ${s.token}`, "content-length": String(64 * MIB) },
        Buffer.alloc(0),
        64 * MIB,
      );
      assert.equal(r.status, 429);
      assert.equal(r.headers["x-should-retry"], "false");
      assert.match(r.body, /resource_exhausted/);
      assert.ok(r.sent < 32 * MIB, `the stream took ${r.sent} bytes`);
      assert.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR);
      assert.ok(goaway, "the connection was asked to wind down");
    } finally {
      session.close();
    }
    const fresh = http2.connect(s.url);
    try {
      const next = await h2Push(fresh, { ":path": listRunners, "content-type": "application/json", authorization: `Bearer ${s.token}` }, Buffer.from("{}"), 2);
      assert.equal(next.status, 200);
    } finally {
      fresh.close();
    }
  });

  it("HTTP/2, Connect: a body streamed without a length is refused once it passes the limit", async () => {
    const session = http2.connect(s.url);
    try {
      const r = await h2Push(session, { ":path": listRunners, "content-type": "application/json", authorization: `Bearer ${s.token}` }, Buffer.alloc(0), 64 * MIB);
      assert.equal(r.status, 429);
      assert.equal(r.headers["x-should-retry"], "false");
      assert.ok(r.sent < 32 * MIB, `the stream took ${r.sent} bytes`);
    } finally {
      session.close();
    }
  });

  it("gRPC: a message declared 64 MiB long is refused with RESOURCE_EXHAUSTED before it is read", async () => {
    const session = http2.connect(s.url);
    try {
      const head = envelope(Buffer.alloc(0), 0, 64 * MIB);
      const r = await h2Push(
        session,
        { ":path": listRunners, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${s.token}` },
        head,
        64 * MIB + head.length,
      );
      assert.equal(r.status, 200);
      assert.equal(r.trailers["grpc-status"], "8");
      assert.ok(r.sent < 32 * MIB, `the stream took ${r.sent} bytes`);
    } finally {
      session.close();
    }
    // That connection was sent GOAWAY (more than the limit came after the answer); a new one serves.
    const fresh = http2.connect(s.url);
    try {
      const next = await h2Push(fresh, { ":path": listRunners, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${s.token}` }, envelope(Buffer.alloc(0)), 5);
      assert.equal(next.trailers["grpc-status"], "0");
    } finally {
      fresh.close();
    }
  });

  it("the official SDK does not retry a refused oversized request", async () => {
    const client = new Gitpod({ bearerToken: s.token, baseURL: s.url, maxRetries: 2 });
    const before = s.logs.filter((l) => l.includes("/CreateRunner")).length;
    await assert.rejects(
      client.runners.create({ name: "n".repeat(2 * MIB), kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" }),
      RateLimitError,
    );
    assert.equal(s.logs.filter((l) => l.includes("/CreateRunner")).length - before, 1, "sent exactly once");
  });
});

/**
 * Sends `head` and 100 KiB of chunked body, waits for the answer, then sends the rest of the
 * body and, on the same connection, a small call: answers both responses.
 */
async function answeredBeforeBody(url: string, token: string, head: string): Promise<{ first: string; next: string }> {
  const sock = net.connect(portOf(url), "127.0.0.1");
  let text = "";
  sock.on("data", (d) => (text += d.toString("latin1")));
  sock.on("error", () => {});
  try {
    await new Promise((r) => sock.once("connect", r));
    const junk = "x".repeat(100 * 1024);
    sock.write(head);
    sock.write(`${junk.length.toString(16)}\r\n${junk}\r\n`);
    for (let i = 0; i < 250 && !/\r\n\r\n[^]*(\}|\r\n0\r\n\r\n)/.test(text); i++) await sleep(20);
    const first = text;
    text = "";
    sock.write(`${junk.length.toString(16)}\r\n${junk}\r\n0\r\n\r\n`);
    sock.write(`POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer ${token}\r\nContent-Length: 2\r\n\r\n{}`);
    for (let i = 0; i < 250 && !/\r\n\r\n[^]*\}/.test(text); i++) await sleep(20);
    return { first, next: text };
  } finally {
    sock.destroy();
  }
}

describe("request bodies held at once", () => {
  // 160 KiB for all bodies in flight; what counts is what arrived, not what was announced.
  // (The held bodies stay under HTTP/2's first flow-control window, 64 KiB a stream.)
  const KIB = 1024;
  let s: LimitedServer;
  before(async () => (s = await startLimited({ maxBufferedBytes: 160 * KIB, maxOpenBufferedBytes: 5.5 * KIB })));
  after(() => s.close());
  const listRunners = "/gitpod.v1.RunnerService/ListRunners";

  /** A stream that announces `length` bytes and sends `sent` of them, then waits; settles with its answer. */
  function hold(session: http2.ClientHttp2Session, length: number, sent: number, token?: string, query = "") {
    const stream = session.request({ ":method": "POST", ":path": listRunners + query, "content-type": "application/json", "content-length": String(length), ...(token ? { authorization: `Bearer ${token}` } : {}) });
    stream.on("error", () => {});
    if (sent > 0) stream.write(Buffer.concat([Buffer.from("{"), Buffer.alloc(sent - 1, 0x20)]));
    if (sent === length && sent > 0) stream.end();
    const closed = new Promise<{ status: number; body: string }>((resolve) => {
      let status = 0;
      let body = "";
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("data", (d) => (body += d));
      stream.on("close", () => resolve({ status, body }));
    });
    return { stream, closed };
  }
  const small = () => call({ url: s.url, token: s.token } as TestServer, "gitpod.v1.RunnerService/ListRunners", {});

  it("announcing a length holds nothing; bodies that arrived past the budget are answered unavailable (retryable), and the budget comes back", async () => {
    const session = http2.connect(s.url);
    const open: ReturnType<typeof hold>[] = [];
    try {
      // Twenty streams announce 60 KiB each and send nothing: they hold nothing, and a body
      // of 60 KiB that does arrive is taken.
      open.push(...Array.from({ length: 20 }, () => hold(session, 60 * KIB, 0)));
      const arrived = await fetch(`${s.url}${listRunners}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" + " ".repeat(60 * KIB - 2) });
      assert.equal(arrived.status, 200, "announcing costs a client nothing, so it holds nothing");
      // Two that send 60 KiB of 61 hold 120 KiB; a third that sends 60 KiB does not fit.
      const held = [hold(session, 61 * KIB, 60 * KIB, s.token), hold(session, 61 * KIB, 60 * KIB, s.token)];
      open.push(...held);
      // Once both have arrived whole (sent beside them, a third could take the room first and
      // leave one of them refused instead).
      for (let i = 0; i < 250 && s.server.bodyBytesHeld() < 120 * KIB; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(s.server.bodyBytesHeld(), 120 * KIB);
      const refused = await hold(session, 60 * KIB, 60 * KIB, s.token).closed;
      assert.equal(refused.status, 503, refused.body);
      assert.equal(JSON.parse(refused.body).code, "unavailable");
      const h1 = await fetch(`${s.url}${listRunners}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" + " ".repeat(60 * KIB) });
      assert.equal(h1.status, 503, "HTTP/1.1 alike");
      assert.equal(h1.headers.get("x-should-retry"), null, "worth a retry");
      assert.equal((await small()).status, 200, "a small body still fits");
      // The held ones go, and their bytes come back.
      for (const h of open.splice(0)) h.stream.close(http2.constants.NGHTTP2_CANCEL);
      await Promise.all(held.map((h) => h.closed));
      // The resets reach the server a moment after the client has closed its side.
      for (let i = 0; i < 250 && s.server.inFlight() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(s.server.inFlight(), 0);
      assert.equal(s.server.bodyBytesHeld(), 0);
      const big = await fetch(`${s.url}${listRunners}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" + " ".repeat(150 * KIB) });
      assert.equal(big.status, 200, await big.text());
    } finally {
      for (const h of open) h.stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    }
  });

  it("a request's share comes back once, and nothing is taken for it after that", () => {
    // A body still being inflated when its call was cancelled took its share after the
    // release: held for good, until the budget refused every body.
    const budget = new BodyBudget(100);
    const share = budget.forRequest();
    assert.equal(share.take(60), undefined);
    assert.equal(budget.held, 60);
    assert.equal(share.take(50)?.code, Code.Unavailable, "over the budget");
    share.release();
    assert.equal(budget.held, 0);
    assert.equal(share.take(10)?.code, Code.Unavailable, "released: nothing more is taken");
    share.release();
    assert.equal(budget.held, 0);
    assert.equal(budget.forRequest().take(100), undefined, "the whole budget is there for the next");
    // A share with free bytes counts only what is past them, and gives back only what it counted.
    const open = new BodyBudget(100);
    const free = open.forRequest(30);
    assert.equal(free.take(20), undefined);
    assert.equal(open.held, 0);
    assert.equal(free.take(20), undefined);
    assert.equal(open.held, 10);
    assert.ok(free.take(95), "past the budget, free bytes spent");
    assert.equal(open.held, 10);
    free.release();
    assert.equal(open.held, 0);
  });

  it("one holder's requests hold at most their part, counted from when the holder is known; other holders keep the rest", () => {
    const budget = new BodyBudget(100, 40);
    const a1 = budget.forRequest();
    assert.equal(a1.take(30), undefined, "taken before its caller was known");
    a1.holdFor("org:a");
    const a2 = budget.forRequest();
    a2.holdFor("org:a");
    const refused = a2.take(20);
    assert.equal(refused?.code, Code.ResourceExhausted, "30 held already: 50 is past the holder's 40");
    assert.match(refused!.message, /this organization's calls hold as many request bodies at once as one organization may/);
    assert.equal(a2.take(10), undefined);
    const b = budget.forRequest();
    b.holdFor("org:b");
    assert.equal(b.take(40), undefined, "another holder has its own part");
    assert.equal(budget.held, 80);
    a1.release();
    assert.equal(a2.take(30), undefined, "what a1 gave back is the holder's again");
    a2.release();
    b.release();
    assert.equal(budget.held, 0);
    const again = budget.forRequest();
    again.holdFor("org:a");
    assert.equal(again.take(40), undefined, "nothing is left counted against the holder");
  });

  it("one organization's calls hold at most a part of the budget, however many requests: another organization's still fit", async () => {
    const t = await startLimited({ maxBufferedBytes: 160 * KIB, maxHeldBytesPerOrg: 100 * KIB, maxOpenBufferedBytes: 5.5 * KIB });
    const session = http2.connect(t.url);
    const open: ReturnType<typeof hold>[] = [];
    try {
      createOrganization(t.db, "other");
      const otherToken = createApiToken(t.db, "other").token;
      // acme holds 90 KiB in three unfinished bodies; 20 KiB more would pass its 100.
      const held = [0, 1, 2].map(() => hold(session, 31 * KIB, 30 * KIB, t.token));
      open.push(...held);
      for (let i = 0; i < 250 && t.server.bodyBytesHeld() < 90 * KIB; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(t.server.bodyBytesHeld(), 90 * KIB);
      const post = (token: string, size: number) =>
        fetch(`${t.url}${listRunners}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: "{}" + " ".repeat(size - 2) });
      const refused = await post(t.token, 20 * KIB);
      assert.equal(refused.status, 429, "this organization's own limit, not the server's");
      const body = (await refused.json()) as { code: string; message: string };
      assert.equal(body.code, "resource_exhausted");
      assert.match(body.message, /^this organization's calls hold as many request bodies at once as one organization may/);
      assert.equal((await post(otherToken, 60 * KIB)).status, 200, "the other organization's body fits in the 70 KiB left");
      assert.equal((await post(t.token, 5 * KIB)).status, 200, "a body within acme's part still passes");
      for (const h of open.splice(0)) h.stream.close(http2.constants.NGHTTP2_CANCEL);
      await Promise.all(held.map((h) => h.closed));
      for (let i = 0; i < 250 && t.server.inFlight() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(t.server.bodyBytesHeld(), 0);
      assert.equal((await post(t.token, 90 * KIB)).status, 200, "its part comes back with the bodies");
    } finally {
      for (const h of open) h.stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
      await t.close();
    }
  });

  it("a compressed body holds what it inflates to", async () => {
    const post = (inflated: number) =>
      fetch(`${s.url}${listRunners}`, { method: "POST", headers: { "content-type": "application/json", "content-encoding": "gzip", authorization: `Bearer ${s.token}` }, body: gzipSync("{}" + " ".repeat(inflated - 2)) });
    const over = await post(170 * KIB);
    assert.equal(over.status, 503, "a few hundred bytes sent, 170 KiB to hold: more than the 160 KiB budget");
    assert.equal(((await over.json()) as { code: string }).code, "unavailable");
    assert.equal((await post(100 * KIB)).status, 200);
    for (let i = 0; i < 250 && s.server.inFlight() > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(s.server.bodyBytesHeld(), 0, "and gives it back");
  });

  it("health checks and reflection, which take no token, hold a budget of their own: filled, it refuses them and not the calls with a token", async () => {
    const session = http2.connect(s.url);
    const streams: http2.ClientHttp2Stream[] = [];
    try {
      // Reflection streams that each ask a question of about 1000 bytes and stay open: each
      // holds what is past its first 256 bytes (OPEN_FREE_BYTES), and the budget here, 5.5 KiB,
      // holds seven of them; the eighth does not fit.
      const frame = envelope(toBinary(ServerReflectionRequestSchema, create(ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "x".repeat(990) } })));
      // Settles with the status once it comes: a stream whose client has not ended its side
      // stays open after the server's trailers.
      const grpcStatus = (stream: http2.ClientHttp2Stream) =>
        new Promise<string | undefined>((resolve) => {
          const see = (h: http2.IncomingHttpHeaders) => h["grpc-status"] !== undefined && resolve(h["grpc-status"] as string);
          stream.on("response", see);
          stream.on("trailers", see);
          stream.on("close", () => resolve(undefined));
          stream.resume();
        });
      const reflect = () => {
        const stream = session.request({ ":method": "POST", ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "content-type": "application/grpc", te: "trailers" });
        stream.on("error", () => {});
        stream.write(frame);
        streams.push(stream);
        return stream;
      };
      for (let i = 0; i < 7; i++) reflect();
      await until("seven questions held", () => s.server.openBodyBytesHeld() === 7 * (frame.length - OPEN_FREE_BYTES), EVENTUALLY_MS);
      assert.equal(s.server.bodyBytesHeld(), 0, "none of it from the calls' budget");
      assert.equal(await grpcStatus(reflect()), "14", "an eighth stream is refused (unavailable)");
      const health = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", te: "trailers" });
      // A health check naming a service, as orchestrators send it, is within what holds nothing.
      const named = toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: "gitpod.v1.RunnerConfigurationService" }));
      health.end(envelope(named));
      assert.equal(await grpcStatus(health), "0", "a health check passes however full the budget");
      const healthWithBody = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/json" });
      healthWithBody.end(`{"service":"${"x".repeat(900)}"}`);
      let status = 0;
      healthWithBody.on("response", (h) => (status = Number(h[":status"])));
      healthWithBody.resume();
      await new Promise((r) => healthWithBody.once("close", r));
      assert.equal(status, 503, "a health check with a body does not fit");
      // A call with a token and a 60 KiB body is served all the same.
      const big = await fetch(`${s.url}${listRunners}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" + " ".repeat(60 * KIB) });
      assert.equal(big.status, 200, await big.text());
      for (const stream of streams.splice(0)) stream.close(http2.constants.NGHTTP2_CANCEL);
      await until("the open budget comes back", () => s.server.openBodyBytesHeld() === 0, EVENTUALLY_MS);
      const again = reflect();
      again.end();
      assert.equal(await grpcStatus(again), "0", "room again");
    } finally {
      for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    }
  });

  it("a call without a good token holds none of it, whatever it sends, and is answered unauthenticated without its body being read", async () => {
    const session = http2.connect(s.url);
    const open: ReturnType<typeof hold>[] = [];
    try {
      // Four streams with no token and two with a wrong one send 60 KiB of 61 each, far past
      // the budget together; their bodies are not read, so not held.
      const bad = `scmapi_${"A".repeat(43)}`;
      // (Two of them with a query string, which connect-node routes past.)
      open.push(...Array.from({ length: 6 }, (_, i) => hold(session, 61 * KIB, 60 * KIB, i < 4 ? undefined : bad, i % 3 === 0 ? "?x=1" : "")));
      const answers = await Promise.all(open.map((h) => h.closed));
      for (const a of answers) {
        assert.equal(a.status, 401, a.body);
        assert.equal(JSON.parse(a.body).code, "unauthenticated");
      }
      assert.equal(s.server.bodyBytesHeld(), 0);
      assert.equal((await small()).status, 200);
      // gRPC: a frame that could never be read (a 1.6 GB message, compressed without an
      // encoding) is not looked at: the call is unauthenticated.
      const grpc = session.request({ ":method": "POST", ":path": listRunners, "content-type": "application/grpc", te: "trailers" });
      grpc.on("error", () => {});
      grpc.end(Buffer.alloc(64, 0x61));
      const status = await new Promise<string | undefined>((resolve) => {
        let found: string | undefined;
        const see = (h: http2.IncomingHttpHeaders) => (found ??= h["grpc-status"] as string | undefined);
        grpc.on("response", see);
        grpc.on("trailers", see);
        grpc.on("close", () => resolve(found));
        grpc.resume();
      });
      assert.equal(status, "16");
      // Over HTTP/1.1 alike: a chunked body that is not JSON at all, with no token, gets the
      // refusal (not a decoding error), and the connection serves on (its body was read past).
      const h1 = await answeredBeforeBody(s.url, s.token, `POST ${listRunners} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n`);
      assert.match(h1.first, /^HTTP\/1\.1 401 /);
      assert.equal(headerOf(h1.first, "connection"), "keep-alive");
      assert.match(h1.next, /^HTTP\/1\.1 200 /, "the same connection serves the next call");
    } finally {
      for (const h of open) h.stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    }
  });
});

describe("field length limits", () => {
  let s: TestServer;
  let runnerId: string;
  let runnerToken: string;
  let integrationId: string;
  before(async () => {
    s = await startServer();
    ({ runnerId, runnerToken } = await createRunner(s));
    await signUp(s, runnerToken);
    const created = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", { runnerId, scmId: "github", host: "github.com", pat: true });
    assert.equal(created.status, 200);
    integrationId = created.body.id;
  });
  after(() => s.close());

  /** Everything a refused request could have changed. */
  const snapshot = () =>
    JSON.stringify([
      s.db.$client.prepare("SELECT * FROM runners ORDER BY id").all(),
      s.db.$client.prepare("SELECT * FROM scm_integrations ORDER BY id").all(),
    ]);

  const path = (n: number) => Array.from({ length: n }, () => "/abcd").join(""); // 5 characters a segment
  type Case = { name: string; method: string; field: string; body: () => unknown; token?: () => string };
  const create = (extra: Record<string, unknown>) => () => ({ runnerId, scmId: "github", host: "limits.example", pat: true, ...extra });
  const schema = (entry: Record<string, unknown>, top: Record<string, unknown> = {}) => () => ({
    runnerId,
    configSchema: { version: "1", scm: [{ scmId: "github", name: "GitHub", defaultHosts: ["github.com"], oauth: {}, pat: {}, ...entry }], ...top },
  });
  const runnerApi = () => runnerToken;

  const tooLong: Case[] = [
    { name: "runner name of 128 characters", method: "RunnerService/CreateRunner", field: "name", body: () => ({ name: "r".repeat(128), kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" }) },
    { name: "new runner name of 128 characters", method: "RunnerService/UpdateRunner", field: "name", body: () => ({ runnerId, name: "r".repeat(128) }) },
    { name: "runner name of 2 characters", method: "RunnerService/CreateRunner", field: "name", body: () => ({ name: "rr", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" }) },
    { name: "new runner name of 2 characters", method: "RunnerService/UpdateRunner", field: "name", body: () => ({ runnerId, name: "rr" }) },
    // Not a length, but refused alike: an escape sequence would act in a terminal that lists runners.
    { name: "runner name with an escape sequence", method: "RunnerService/CreateRunner", field: "name", body: () => ({ name: "\u001b[2Jrunner", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" }) },
    { name: "new runner name with a NUL", method: "RunnerService/UpdateRunner", field: "name", body: () => ({ runnerId, name: "run\u0000ner" }) },
    { name: "host of 256 characters", method: "RunnerConfigurationService/CreateSCMIntegration", field: "host", body: create({ host: `git.example${path(49)}` }) },
    { name: "scm_id of 65 characters", method: "RunnerConfigurationService/CreateSCMIntegration", field: "scm_id", body: create({ scmId: "g".repeat(65) }) },
    { name: "client id of 256 characters", method: "RunnerConfigurationService/CreateSCMIntegration", field: "oauth_client_id", body: create({ oauthClientId: "c".repeat(256), oauthPlaintextClientSecret: "limit-secret-1" }) },
    { name: "client secret of 4098 bytes in 2049 characters", method: "RunnerConfigurationService/CreateSCMIntegration", field: "oauth_plaintext_client_secret", body: create({ oauthClientId: "c", oauthPlaintextClientSecret: "é".repeat(2049) }) },
    { name: "issuer URL of 2049 characters", method: "RunnerConfigurationService/CreateSCMIntegration", field: "issuer_url", body: create({ oauthClientId: "c", oauthPlaintextClientSecret: "limit-secret-2", issuerUrl: `https://issuer.example/${"i".repeat(2049 - 23)}` }) },
    { name: "virtual directory of 256 characters", method: "RunnerConfigurationService/CreateSCMIntegration", field: "virtual_directory", body: create({ scmId: "azuredevops_server", host: "tfs.example", virtualDirectory: `/${"v".repeat(255)}` }) },
    { name: "client id of 256 emoji", method: "RunnerConfigurationService/CreateSCMIntegration", field: "oauth_client_id", body: create({ host: "emoji.example", oauthClientId: "\u{1F600}".repeat(256), oauthPlaintextClientSecret: "limit-secret-5" }) },
    { name: "new client id of 256 characters", method: "RunnerConfigurationService/UpdateSCMIntegration", field: "oauth_client_id", body: () => ({ id: integrationId, oauthClientId: "c".repeat(256), oauthPlaintextClientSecret: "limit-secret-3" }) },
    { name: "26 runner ids in a filter", method: "RunnerConfigurationService/ListSCMIntegrations", field: "filter.runner_ids", body: () => ({ filter: { runnerIds: Array(26).fill(runnerId) } }) },
    { name: "26 integration ids in a filter", method: "RunnerInteractionService/ListRunnerSCMIntegrations", field: "filter.scm_integration_ids", token: runnerApi, body: () => ({ runnerId, filter: { scmIntegrationIds: Array(26).fill(integrationId) } }) },
    { name: "page size of 101", method: "RunnerService/ListRunners", field: "pagination.page_size", body: () => ({ pagination: { pageSize: 101 } }) },
    { name: "runner id of 37 characters", method: "RunnerService/GetRunner", field: "runner_id", body: () => ({ runnerId: `${runnerId}0` }) },
    { name: "schema version of 65 characters", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", field: "config_schema.version", token: runnerApi, body: schema({}, { version: "v".repeat(65) }) },
    { name: "51 schema entries", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", field: "config_schema.scm", token: runnerApi, body: () => ({ runnerId, configSchema: { scm: Array.from({ length: 51 }, (_, i) => ({ scmId: `scm${i}`, pat: {} })) } }) },
    { name: "schema name of 129 characters", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", field: "config_schema.scm[0].name", token: runnerApi, body: schema({ name: "n".repeat(129) }) },
    { name: "26 default hosts", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", field: "config_schema.scm[0].default_hosts", token: runnerApi, body: schema({ defaultHosts: Array.from({ length: 26 }, (_, i) => `h${i}.example`) }) },
    { name: "PAT description of 1025 characters", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", field: "config_schema.scm[0].pat.description", token: runnerApi, body: schema({ pat: { description: "d".repeat(1025) } }) },
    {
      name: "schema of about 80 KB as stored (each field within its limit)",
      method: "RunnerInteractionService/UpdateRunnerConfigurationSchema",
      field: "config_schema",
      token: runnerApi,
      body: () => ({ runnerId, configSchema: { version: "1", scm: Array.from({ length: 50 }, (_, i) => ({ scmId: `scm${i}`, name: "n", pat: {}, defaultHosts: Array.from({ length: 25 }, (_, j) => `h${i}-${j}-${"x".repeat(50)}.example`) })) } }),
    },
    { name: "PAT docs link of 2049 characters", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", field: "config_schema.scm[0].pat.docs_link", token: runnerApi, body: schema({ pat: { docsLink: `https://docs.example/${"d".repeat(2049 - 21)}` } }) },
  ];

  for (const c of tooLong) {
    it(`${c.name}: invalid_argument naming ${c.field}, nothing written`, async () => {
      const before = snapshot();
      const r = await call(s, `gitpod.v1.${c.method}`, c.body(), c.token?.() ?? s.token);
      assert.equal(r.status, 400, JSON.stringify(r.body).slice(0, 300));
      assert.equal(r.body.code, "invalid_argument");
      assert.match(r.body.message, new RegExp(`(^|; )${c.field.replace(/[.[\]]/g, "\\$&")}: `));
      const violations = r.body.details?.[0]?.debug?.violations ?? [];
      const paths = violations.map((v: any) => v.field.elements.map((e: any) => e.fieldName + (e.index !== undefined ? `[${e.index}]` : "")).join("."));
      assert.ok(paths.includes(c.field), `violations name ${JSON.stringify(paths)}`);
      assert.equal(snapshot(), before, "a refused request changed the database");
    });
  }

  it("accepts each value at its limit", async () => {
    const ok = async (method: string, body: unknown, token = s.token) => {
      const r = await call(s, `gitpod.v1.${method}`, body, token);
      assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
    };
    await ok("RunnerService/UpdateRunner", { runnerId, name: "r".repeat(127) });
    await ok("RunnerService/UpdateRunner", { runnerId, name: "rrr" });
    await ok("RunnerService/CreateRunner", { name: "rrr", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" });
    await ok("RunnerConfigurationService/CreateSCMIntegration", create({ host: `git.example${path(48)}1234` })());
    await ok("RunnerConfigurationService/CreateSCMIntegration", create({ host: "oauth.example", oauthClientId: "c".repeat(255), oauthPlaintextClientSecret: "é".repeat(2048) })());
    // Limits count characters, as protovalidate's max_len does: 255 emoji are 510 UTF-16 units.
    await ok("RunnerConfigurationService/CreateSCMIntegration", create({ host: "emoji.example", oauthClientId: "\u{1F600}".repeat(255), oauthPlaintextClientSecret: "limit-secret-4" })());
    await ok("RunnerConfigurationService/CreateSCMIntegration", create({ scmId: "azuredevops_server", host: "tfs.example", virtualDirectory: `/${"v".repeat(254)}` })());
    await ok("RunnerConfigurationService/ListSCMIntegrations", { filter: { runnerIds: Array(25).fill(runnerId) }, pagination: { pageSize: 100 } });
    await ok("RunnerInteractionService/UpdateRunnerConfigurationSchema", schema({ name: "n".repeat(128), pat: { description: "d".repeat(1024) } }, { version: "v".repeat(64) })(), runnerToken);
  });

  it("a request that breaks a rule in 1,250 places is answered with the first few, as many as gRPC trailers carry, in JSON and over gRPC", async () => {
    const scm = Array.from({ length: 50 }, (_, i) => ({ scmId: `scm${i}`, name: "n", pat: {}, defaultHosts: Array.from({ length: 25 }, (_, j) => `bad host ${i}-${j}${"x".repeat(40)}`) }));
    const body = { runnerId, configSchema: { version: "1", scm } };
    const r = await call(s, "gitpod.v1.RunnerInteractionService/UpdateRunnerConfigurationSchema", body, runnerToken);
    assert.equal(r.body.code, "invalid_argument");
    const shown = r.body.details[0].debug.violations as { field: { elements: unknown[] }; message: string }[];
    const parts = r.body.message.split("; ");
    const more = Number(/^and (\d+) more$/.exec(parts.pop())?.[1]);
    assert.equal(shown.length + more, 1250);
    assert.equal(parts.length, shown.length);
    assert.ok(shown.length >= 1 && shown.length <= MAX_REPORTED_VIOLATIONS);
    assert.match(parts[0], /^config_schema\.scm\[0\]\.default_hosts\[0\]: /);
    const grpc = createClient(RunnerInteractionService, createGrpcTransport({ baseUrl: s.url, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${runnerToken}`), next(req))] }));
    await assert.rejects(grpc.updateRunnerConfigurationSchema(body as never), (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument);

    // Text quoted in each message, ASCII or non-Latin (three bytes a character, and three
    // characters a byte in grpc-message): the trailers stay within gRPC's C core's 8 KiB
    // (counting each as name, value and 32 bytes, as it does), past which it refuses them
    // as resource_exhausted, at random.
    for (const ids of [Array.from({ length: 25 }, (_, i) => `${"\u0800".repeat(64)}${i}`), Array.from({ length: 25 }, (_, i) => `${"x".repeat(60)}${i}`)]) {
      const client = new WireClient(s.url);
      try {
        const body = envelope(toBinary(ListRunnersRequestSchema, newMessage(ListRunnersRequestSchema, { filter: { creatorIds: ids } })));
        const a = await client.send({ path: "/gitpod.v1.RunnerService/ListRunners", headers: protocolHeaders("grpc", s.token), body, http2: true });
        assert.equal(a.kind, "answer");
        const trailers = a.kind === "answer" ? (a.trailers["grpc-status"] !== undefined ? a.trailers : a.headers) : {};
        assert.equal(trailers["grpc-status"], String(Code.InvalidArgument));
        const size = Object.entries(trailers).reduce((n, [k, v]) => n + k.length + v.length + 32, 0);
        assert.ok(size < 8192, `${size} bytes of trailers`);
        assert.match(decodeURIComponent(trailers["grpc-message"]!), /^filter\.creator_ids\[0\]: must be a uuid/);
      } finally {
        client.close();
      }
    }
  });

  it("a rule broken once is answered with exactly its line and nothing after; broken in 25 short places, with the first 20 and '; and 5 more'", async () => {
    const one = await call(s, "gitpod.v1.RunnerService/ListRunners", { filter: { creatorIds: ["x"] } });
    assert.equal(one.status, 400);
    assert.equal(one.body.message, 'filter.creator_ids[0]: must be a uuid, got "x"');
    assert.deepEqual(one.body.details[0].debug.violations, [
      { ruleId: "string.uuid", message: 'must be a uuid, got "x"', field: { elements: [{ fieldNumber: 2, fieldName: "filter" }, { fieldNumber: 1, fieldName: "creator_ids", index: "0" }] } },
    ]);
    const many = await call(s, "gitpod.v1.RunnerService/ListRunners", { filter: { creatorIds: Array.from({ length: 25 }, (_, i) => `${i}`) } });
    assert.equal(many.status, 400);
    const lines = Array.from({ length: 20 }, (_, i) => `filter.creator_ids[${i}]: must be a uuid, got "${i}"`);
    assert.equal(many.body.message, `${lines.join("; ")}; and 5 more`);
    // Each names its element: field numbers resolved through the nested message, and the index, also past one digit.
    assert.deepEqual(
      many.body.details[0].debug.violations.map((v: { field: unknown }) => v.field),
      lines.map((_, i) => ({ elements: [{ fieldNumber: 2, fieldName: "filter" }, { fieldNumber: 1, fieldName: "creator_ids", index: String(i) }] })),
    );
    assert.equal(MAX_REPORTED_VIOLATIONS, 20);
  });

  it("a first violation larger than the trailers' share is still reported, alone, with the count of the rest", () => {
    const huge = { field: "config_schema.scm[0].name", rule: "string.max_len", message: `too long: ${"\u0800".repeat(3000)}` };
    const small = { field: "config_schema.scm[1].name", rule: "string.max_len", message: "too long" };
    const err = invalidArgument([huge, small]);
    assert.equal(err.reason, "invalid_argument");
    assert.deepEqual(err.violations, [huge]);
    assert.equal(err.message, `${huge.field}: ${huge.message}; and 1 more`);
  });
});

type LogLine = { msg?: string; request_id?: string; procedure?: string | null; code?: string; http_status?: number | null; protocol?: string | null; duration_ms?: number | null; reason?: string };

const CONNECT_REFUSED = "method not allowed: this service is not a proxy, and takes no CONNECT\n";

/** Sends an HTTP/2 CONNECT on the session, closes it, and answers the status and body. */
async function http2Connect(session: http2.ClientHttp2Session): Promise<[number, string]> {
  session.on("error", () => {});
  try {
    const stream = session.request({ ":method": "CONNECT", ":authority": "example.com:443" });
    stream.on("error", () => {});
    const status = await new Promise<number>((resolve) => stream.on("response", (h) => resolve(Number(h[":status"]))));
    let text = "";
    stream.on("data", (d: Buffer) => (text += d.toString()));
    await new Promise((resolve) => stream.once("end", resolve));
    return [status, text];
  } finally {
    session.close();
  }
}

/** The log lines of requests answered before the handler saw them (they have a reason), once `count` are there. */
async function nodeAnswerLines(s: LimitedServer, count: number): Promise<LogLine[]> {
  const found = () => s.logs.map((l) => JSON.parse(l) as LogLine).filter((l) => l.msg === "request" && l.reason !== undefined);
  for (const t0 = Date.now(); found().length < count && Date.now() - t0 < EVENTUALLY_MS; ) await sleep(20);
  return found();
}

describe("requests node answers before the handler", () => {
  let s: LimitedServer;
  before(async () => (s = await startLimited({})));
  after(() => s.close());

  it("HTTP/1.1 a request node cannot parse is answered 400 with the parser's reason, logged and final", async () => {
    const r = await slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), "GE\u0001T / HTTP/1.1\r\nHost: x\r\n\r\n", "");
    assert.ok(r.closedByServer);
    assert.match(r.response, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(r.response, /\r\nx-should-retry: false\r\n/i);
    assert.match(r.response, /\r\n\r\nbad request: malformed HTTP\/1\.1 request \(HPE_INVALID_METHOD: [^)]+\)\n$/);
    const [line] = await nodeAnswerLines(s, 1);
    assert.equal(line?.code, "http_400", JSON.stringify(line));
    assert.equal(line?.http_status, 400);
    assert.equal(line?.procedure, null);
    assert.match(line?.reason ?? "", /^malformed HTTP\/1\.1 request \(HPE_INVALID_METHOD/);
    assert.match(line?.request_id ?? "", /^[0-9a-f-]{36}$/);
    // The client is told the id too, to find the line.
    assert.equal(/\r\nx-request-id: ([^\r]+)\r\n/.exec(r.response)?.[1], line?.request_id);
  });

  it("HTTP/1.1 headers over 16 KiB are answered 431, logged; the server serves on", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    const huge = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", "x-padding": "a".repeat(20_000) }, body: "{}" });
    assert.equal(huge.status, 431);
    assert.equal(huge.headers.get("x-should-retry"), "false");
    assert.equal(await huge.text(), "request headers too large: request headers (or trailers) over 16 KiB\n");
    const lines = await nodeAnswerLines(s, before + 1);
    assert.equal(lines.length, before + 1);
    assert.deepEqual([lines.at(-1)?.code, lines.at(-1)?.http_status, lines.at(-1)?.request_id], ["http_431", 431, huge.headers.get("x-request-id")]);
    const ok = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" });
    assert.equal(ok.status, 200);
    // The request answered in full has its own line, without a reason.
    assert.equal((await nodeAnswerLines(s, before + 1)).length, before + 1);
  });

  it("a malformed request pipelined behind calls: their answers go out, then the connection closes; each has its line", async () => {
    const exchange = (text: string) => slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), text, "");
    const lineOf = async (id: string) => {
      let line: LogLine | undefined;
      for (const t0 = Date.now(); !line && Date.now() - t0 < EVENTUALLY_MS; await sleep(20)) {
        line = s.logs.map((l) => JSON.parse(l) as LogLine).find((l) => l.msg === "request" && l.request_id === id);
      }
      return line;
    };
    const malformed = "GE\u0001T / HTTP/1.1\r\nHost: x\r\n\r\n";
    let before = (await nodeAnswerLines(s, 0)).length;
    // The health check is answered as it is read, before the parser gets to the next request.
    const healthz = await exchange(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: piped-healthz\r\n\r\n${malformed}`);
    assert.match(healthz.response, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\n3\r\nok\n\r\n0\r\n\r\n$/);
    assert.equal((await lineOf("piped-healthz"))?.code, "ok");
    before = (await nodeAnswerLines(s, before + 1)).length;
    // Two calls wait for their token's check when the parser meets the malformed request: node
    // would write its 400 in the first one's place. Both are answered instead, in order.
    const call = (id: string) => `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: ${id}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`;
    const piped = await exchange(call("piped-1") + call("piped-2") + malformed);
    assert.ok(piped.closedByServer);
    assert.deepEqual(piped.response.match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 200", "HTTP/1.1 200"], piped.response);
    assert.deepEqual([(await lineOf("piped-1"))?.code, (await lineOf("piped-2"))?.code], ["ok", "ok"]);
    // The malformed request, never answered, has a line of its own saying why.
    const lines = await nodeAnswerLines(s, before + 1);
    assert.equal(lines.length, before + 1);
    assert.deepEqual([lines.at(-1)?.code, lines.at(-1)?.http_status], ["canceled", null]);
    assert.match(lines.at(-1)?.reason ?? "", /^malformed HTTP\/1\.1 request \(HPE_INVALID_METHOD: [^)]*\); pipelined behind calls still being answered/);
  });

  it("CONNECT over HTTP/2 is answered 405 and logged", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    assert.deepEqual(await http2Connect(http2.connect(s.url)), [405, CONNECT_REFUSED]);
    const lines = await nodeAnswerLines(s, before + 1);
    assert.deepEqual([lines.at(-1)?.code, lines.at(-1)?.http_status, lines.at(-1)?.procedure], ["http_405", 405, "example.com:443"]);
  });

  it("an Expect other than 100-continue is answered 417 and logged, over HTTP/1.1 and HTTP/2; a request without Host 400 and logged", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    const r = await slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", "");
    assert.match(r.response, /^HTTP\/1\.1 417 /);
    const session = http2.connect(s.url);
    const h2Status = await new Promise<[number, string]>((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ":path": "/healthz", expect: "something-else" });
      stream.on("response", (h) => resolve([Number(h[":status"]), String(h["x-request-id"])]));
      stream.on("error", reject);
      stream.end();
    });
    session.close();
    assert.equal(h2Status[0], 417);
    const lines = await nodeAnswerLines(s, before + 2);
    assert.deepEqual(lines.slice(-2).map((l) => [l.code, l.http_status, l.procedure, l.reason]), [
      ["http_417", 417, "/gitpod.v1.RunnerService/ListRunners", "an Expect other than 100-continue"],
      ["http_417", 417, "/healthz", "an Expect other than 100-continue"],
    ]);
    assert.equal(headerOf(r.response, "x-request-id"), lines.at(-2)?.request_id);
    assert.equal(h2Status[1], lines.at(-1)?.request_id);

    // HTTP/1.1 without Host: the handler's 400, with its id and line (node's own had neither).
    const noHost = await slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", "");
    assert.match(noHost.response, /^HTTP\/1\.1 400 [^]*\r\n\r\n[^]*missing or malformed Host header\n/);
    const id = headerOf(noHost.response, "x-request-id");
    await until("its line", () => s.logs.some((l) => l.includes(`"request_id":"${id}"`)));
    assert.match(s.logs.find((l) => l.includes(`"request_id":"${id}"`))!, /"http_status":400/);
    // HTTP/1.0 needs none: a load balancer's health check may send none.
    const old = await slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), "GET /healthz HTTP/1.0\r\n\r\n", "");
    assert.match(old.response, /^HTTP\/1\.1 200 [^]*\r\n\r\nok\n$/);
  });

  it("CONNECT is answered 405 and logged", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    // A token in its place by mistake is not logged (nor anywhere in a URL a line shows).
    const r = await slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), `CONNECT ${s.token}.example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`, "");
    assert.ok(r.closedByServer);
    assert.match(r.response, /^HTTP\/1\.1 405 Method Not Allowed\r\n[^]*x-should-retry: false\r\n[^]*\r\n\r\nmethod not allowed: this service is not a proxy, and takes no CONNECT\n$/);
    const lines = await nodeAnswerLines(s, before + 1);
    assert.deepEqual([lines.at(-1)?.code, lines.at(-1)?.http_status, lines.at(-1)?.procedure], ["http_405", 405, "scmapi_[hidden].example.com:443"]);
    assert.equal(/\r\nx-request-id: ([^\r]+)\r\n/.exec(r.response)?.[1], lines.at(-1)?.request_id);
  });

  it("a chunked body node cannot parse is answered 400, on the line of the request it belongs to", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    const head = `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: bad-chunk\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const sock = net.connect(s.port, "127.0.0.1");
    let response = "";
    sock.on("data", (d) => (response += d.toString("latin1")));
    sock.on("error", () => {});
    const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
    sock.write(head + "2\r\n{}\r\n");
    // The call is admitted and its body being read before the bad chunk size comes.
    await sleep(100);
    sock.write("zz\r\n");
    await closed;
    assert.match(response, /^HTTP\/1\.1 400 Bad Request\r\n[^]*malformed HTTP\/1\.1 request \(HPE_INVALID_CHUNK_SIZE/);
    let line: LogLine | undefined;
    for (const t0 = Date.now(); !line && Date.now() - t0 < EVENTUALLY_MS; await sleep(20)) {
      line = s.logs.map((l) => JSON.parse(l) as LogLine).find((l) => l.msg === "request" && l.request_id === "bad-chunk");
    }
    assert.deepEqual([line?.code, line?.http_status], ["http_400", 400]);
    assert.equal((await nodeAnswerLines(s, 0)).length, before, "one line for the request, not two");
  });

  it("a client that closes its side part-way through its headers is logged canceled, and not answered", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    let answered = "";
    const sock = net.connect(s.port, "127.0.0.1");
    sock.on("data", (d) => (answered += d.toString("latin1")));
    sock.on("error", () => {});
    const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
    await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
    // Half-closed: it could still read an answer, and gets none.
    sock.end("POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\n");
    await closed;
    assert.equal(answered, "");
    const lines = await nodeAnswerLines(s, before + 1);
    assert.deepEqual([lines.at(-1)?.code, lines.at(-1)?.http_status], ["canceled", null]);
    assert.match(lines.at(-1)?.reason ?? "", /closed the connection before its request's headers were complete/);
  });

  it("a socket that resets before finishing its headers gets no line", async () => {
    const before = (await nodeAnswerLines(s, 0)).length;
    const sock = net.connect(s.port, "127.0.0.1");
    await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
    sock.write("POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\n");
    await sleep(50);
    const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
    sock.resetAndDestroy();
    await closed;
    // The server has taken in the reset once a request sent after it is answered and logged.
    await sleep(100);
    const later = await fetch(`${s.url}/healthz`, { headers: { "x-request-id": "after-reset" } });
    assert.equal(later.status, 200);
    for (const t0 = Date.now(); !s.logs.some((l) => l.includes('"after-reset"')) && Date.now() - t0 < EVENTUALLY_MS; ) await sleep(20);
    assert.equal((await nodeAnswerLines(s, 0)).length, before);
  });
});

describe("answers cut off while being sent", () => {
  it("HTTP/1.1: of pipelined answers to a client that stops reading and resets, those handed over whole are ok, the one cut off part-way is canceled with its 200, those never begun canceled without a status", async () => {
    const s = await startServer();
    try {
      const { runnerId, runnerToken } = await createRunner(s);
      await signUp(s, runnerToken);
      // Integrations as large as a create takes, so that a page of them is about 350 KB and
      // some 12 pages fill the sockets' buffers.
      for (let i = 0; i < 100; i++) {
        const r = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", {
          runnerId, scmId: "azuredevops_entra", host: `dev.azure.com/${"a".repeat(200)}${i}`, oauthClientId: "\u{1F600}".repeat(255),
          oauthPlaintextClientSecret: "x", issuerUrl: `https://login.microsoftonline.com/${"t".repeat(1900)}/v2.0`,
        });
        assert.equal(r.status, 200, JSON.stringify(r.body));
      }
      const body = JSON.stringify({ pagination: { pageSize: 100 }, filter: { runnerIds: [runnerId] } });
      const list = (id: string) => `POST /gitpod.v1.RunnerConfigurationService/ListSCMIntegrations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: ${id}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      const sock = net.connect(portOf(s.url), "127.0.0.1");
      sock.on("error", () => {});
      await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
      sock.pause();
      const count = 20;
      sock.write(Array.from({ length: count }, (_, i) => list(`fat-${i}`)).join(""));
      const fatLines = () => s.logs.map((l) => JSON.parse(l) as LogLine).filter((l) => l.msg === "request" && String(l.request_id).startsWith("fat-"));
      // The server is stuck once the answers handed over stop coming: the next one is part-way out.
      for (let seen = -1, t0 = Date.now(); Date.now() - t0 < EVENTUALLY_MS; await sleep(300)) {
        const now = fatLines().length;
        if (now > 0 && now === seen) break;
        seen = now;
      }
      sock.resetAndDestroy();
      await until("every call has its line", () => fatLines().length === count, EVENTUALLY_MS);
      const byId = new Map(fatLines().map((l) => [l.request_id, [l.code, l.http_status]]));
      const whole = fatLines().filter((l) => l.code === "ok").length;
      assert.ok(whole > 0 && whole < count - 1, `${whole} answers went out whole`);
      const want = Array.from({ length: count }, (_, i) => (i < whole ? ["ok", 200] : i === whole ? ["canceled", 200] : ["canceled", null]));
      assert.deepEqual(Array.from({ length: count }, (_, i) => byId.get(`fat-${i}`)), want);
    } finally {
      await s.close();
    }
  });
});

/** The HTTP/1.1 answers in `bytes`, each as its status and body length (read by its content-length); what is left over after them. */
function h1Answers(bytes: Buffer): { answers: { status: number; bodyBytes: number }[]; rest: number } {
  const answers: { status: number; bodyBytes: number }[] = [];
  let at = 0;
  for (;;) {
    const headEnd = bytes.indexOf("\r\n\r\n", at);
    if (headEnd < 0) break;
    const head = bytes.subarray(at, headEnd).toString("latin1");
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]);
    if (!Number.isInteger(length) || headEnd + 4 + length > bytes.length) break;
    answers.push({ status: Number(head.slice(9, 12)), bodyBytes: length });
    at = headEnd + 4 + length;
  }
  return { answers, rest: bytes.length - at };
}

describe("shutdown", () => {
  for (const overTls of [false, true]) {
    it(`${overTls ? "TLS" : "cleartext"} HTTP/1.1: answers pipelined on one connection all go out through a drain, the first still being sent to a client that reads slowly`, async () => {
      // Answers larger than the sockets' buffers take, so that the first has ended but is
      // still being sent when shutdown begins, and the second waits behind it.
      const size = 4 * MIB;
      let ended = 0;
      const tlsFiles = overTls ? selfSigned() : undefined;
      const server = await listen(
        (req, res) => {
          req.resume();
          req.on("end", () => {
            res.writeHead(200, { "content-type": "application/octet-stream", "content-length": size });
            res.end(Buffer.alloc(size, 0x61));
            ended++;
          });
        },
        0,
        "127.0.0.1",
        tlsFiles ? { tls: { certFile: tlsFiles.cert, keyFile: tlsFiles.key } } : {},
      );
      try {
        const port = server.address.port;
        const sock = tlsFiles
          ? tls.connect({ port, host: "127.0.0.1", ca: readFileSync(tlsFiles.cert), ALPNProtocols: ["http/1.1"] })
          : net.connect(port, "127.0.0.1");
        sock.on("error", () => {});
        await new Promise<void>((resolve) => sock.once(tlsFiles ? "secureConnect" : "connect", () => resolve()));
        sock.pause();
        sock.write("GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n");
        await until("both answers ended", () => ended === 2);
        assert.equal(server.inFlight(), 2);
        const stopped = server.shutdown(EVENTUALLY_MS);
        const received: Buffer[] = [];
        const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
        sock.on("data", (chunk: Buffer) => received.push(chunk));
        sock.resume();
        assert.equal(await stopped, 0, "nothing cut off");
        await closed;
        assert.deepEqual(h1Answers(Buffer.concat(received)), { answers: [{ status: 200, bodyBytes: size }, { status: 200, bodyBytes: size }], rest: 0 });
      } finally {
        await server.shutdown(100);
        if (tlsFiles) rmSync(tlsFiles.dir, { recursive: true, force: true });
      }
    });
  }

  it("HTTP/1.1: a keep-alive connection with nothing to answer is closed as the drain begins, while another connection's call is let finish", async () => {
    const server = await listen(
      (req, res) => {
        req.resume();
        req.on("end", () => res.end(`answered ${req.url}\n`));
      },
      0,
      "127.0.0.1",
    );
    try {
      const open = () => rawConnection(server.address.port);
      const idle = await open();
      idle.sock.write("GET /quick HTTP/1.1\r\nHost: x\r\n\r\n");
      await until("the first call answered", () => idle.received().endsWith("answered /quick\n"));
      assert.doesNotMatch(idle.received(), /connection: close/i, "kept alive");
      const busy = await open();
      busy.sock.write("POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345");
      await until("the held call taken", () => server.inFlight() === 1);
      const stopped = server.shutdown(EVENTUALLY_MS);
      // Half of node's keep-alive timeout (5 s), which would close it in the end anyway.
      assert.equal(await Promise.race([idle.closed.then(() => "closed"), later(2500, "open")]), "closed", "closed by the drain");
      assert.equal(server.inFlight(), 1, "closed while the other call still runs");
      busy.sock.write("67890");
      await busy.closed;
      assert.match(busy.received(), /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nanswered \/held\n$/);
      assert.equal(await stopped, 0);
    } finally {
      await server.shutdown(100);
    }
  });

  it("a request cut off at the shutdown timeout is logged by the time shutdown returns", async () => {
    const s = await startLimited({});
    try {
      const sock = net.connect(s.port, "127.0.0.1");
      sock.on("error", () => {});
      await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
      sock.write(`POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: held-at-shutdown\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`);
      for (const t0 = Date.now(); s.server.inFlight() === 0 && Date.now() - t0 < EVENTUALLY_MS; ) await sleep(10);
      assert.equal(s.server.inFlight(), 1);
      assert.equal(await s.server.shutdown(100), 1, "one request cut off");
      // No waiting here: a process that exits once shutdown returns must have written the line.
      const line = s.logs.map((l) => JSON.parse(l) as LogLine).find((l) => l.msg === "request" && l.request_id === "held-at-shutdown");
      assert.deepEqual([line?.code, line?.http_status], ["canceled", null]);
    } finally {
      await s.close();
    }
  });
});

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

describe("concurrent HTTP/2 streams", () => {
  it("the default server advertises at most 100 concurrent streams, and header lists of 16 KiB as over HTTP/1.1", async () => {
    const s = await startServer();
    const session = http2.connect(s.url);
    session.on("error", () => {});
    try {
      await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
      assert.equal(session.remoteSettings.maxConcurrentStreams, 100);
      assert.equal(session.remoteSettings.maxHeaderListSize, 16 * 1024);
      // Between our 16 KiB and nghttp2's own 64 KiB, so that only our limit can refuse it.
      const big = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", "x-padding": "a".repeat(30_000) });
      const refused = await new Promise<string>((resolve) => {
        big.on("response", (h) => resolve(`answered ${h[":status"]}`));
        big.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
        big.end("{}");
      });
      assert.equal(refused, "ERR_HTTP2_STREAM_ERROR");
    } finally {
      session.close();
      await s.close();
    }
  });

  it("a header list over 16 KiB is refused also from a client that has not acknowledged the limit, and one under it served", async () => {
    // nghttp2 enforces the advertised size only once the client has acknowledged it; curl's
    // first request goes out before that.
    const s = await startLimited({});
    try {
      const outcome = async (paddingBytes: number, path = "/gitpod.v1.RunnerService/ListRunners") => {
        const raw = await RawH2.connect(s.port, { ackSettings: false });
        try {
          const block = Buffer.concat([requestBlock(path, s.token), literal("x-padding", "a".repeat(paddingBytes))]);
          raw.send(headerFrames(1, block));
          raw.send(frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from("{}")));
          await raw.until(() => raw.answered.has(1) || raw.resets.has(1));
          return raw.resets.has(1) ? `reset ${raw.resets.get(1)}` : raw.answered.has(1) ? "answered" : "nothing";
        } finally {
          raw.destroy();
        }
      };
      assert.equal(await outcome(30_000), `reset ${http2.constants.NGHTTP2_ENHANCE_YOUR_CALM}`);
      assert.equal(await outcome(16 * 1024 - 1024), "answered");
      // The refused stream has a line of its own, with its path and gRPC's reading of the reset.
      const [line] = await nodeAnswerLines(s, 1);
      assert.deepEqual([line?.procedure, line?.code, line?.http_status], ["/gitpod.v1.RunnerService/ListRunners", "resource_exhausted", null]);
      assert.equal(line?.reason, "header list over 16384 bytes");
      // A path that is most of the list is cut for the log line, and counted under no name of its own.
      assert.equal(await outcome(0, `/${"p".repeat(20_000)}`), `reset ${http2.constants.NGHTTP2_ENHANCE_YOUR_CALM}`);
      const long = (await nodeAnswerLines(s, 2))[1];
      assert.equal(long?.procedure, `/${"p".repeat(199)}…`);
    } finally {
      await s.close();
    }
  });

  describe("with a limit of 8", () => {
    const LIMIT = 8;
    let s: LimitedServer;
    before(async () => (s = await startLimited({ maxConcurrentStreams: LIMIT })));
    after(() => s.close());

    it("a client opening 40 streams at once gets them served 8 at a time, all of them", async () => {
      const session = http2.connect(s.url);
      session.on("error", () => {});
      try {
        await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
        assert.equal(session.remoteSettings.maxConcurrentStreams, LIMIT);
        let peak = 0;
        const watch = setInterval(() => (peak = Math.max(peak, s.server.inFlight())), 5);
        const calls = Array.from({ length: 40 }, () => {
          const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", authorization: `Bearer ${s.token}` });
          stream.write("{");
          // The bodies end a little later, so that the streams are open at the same time.
          setTimeout(() => stream.end("}"), 200);
          stream.resume();
          return new Promise<number>((resolve) => {
            let status = 0;
            stream.on("response", (h) => (status = Number(h[":status"])));
            stream.on("error", () => {});
            stream.on("close", () => resolve(status));
          });
        });
        const statuses = await Promise.all(calls);
        clearInterval(watch);
        assert.deepEqual(statuses, Array(40).fill(200));
        assert.ok(peak <= LIMIT, `${peak} requests were served at once`);
        assert.ok(peak > 1, "the streams were not open at the same time");
      } finally {
        session.close();
      }
    });

    it("a client that ignores the limit gets the excess streams refused, and the server serves on", async () => {
      const raw = await RawH2.connect(s.port, { ackSettings: false });
      try {
        const ids = Array.from({ length: 30 }, (_, i) => 1 + 2 * i);
        for (const id of ids) raw.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, requestBlock("/gitpod.v1.RunnerService/ListRunners", s.token)));
        await raw.until(() => raw.resets.size >= ids.length - LIMIT);
        for (const id of ids) raw.send(frame(FRAME.DATA, FLAG.END_STREAM, id, Buffer.from("{}")));
        await raw.until(() => raw.answered.size >= LIMIT);
        assert.equal(raw.answered.size, LIMIT);
        assert.deepEqual([...raw.resets.values()], Array(ids.length - LIMIT).fill(REFUSED_STREAM));
        assert.ok(!raw.closed, "the connection was closed");
      } finally {
        raw.destroy();
      }
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" });
      assert.equal(r.status, 200);
    });

    it("a client that acknowledged the limit and then ignores it loses its connection, and the server serves on", async () => {
      const raw = await RawH2.connect(s.port, { ackSettings: true });
      try {
        for (let i = 0; i < 30; i++) raw.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, requestBlock("/gitpod.v1.RunnerService/ListRunners", s.token)));
        assert.ok(await raw.closedWithin(EVENTUALLY_MS), "the connection stayed open");
        assert.ok(raw.goaway !== undefined && raw.goaway !== 0, `GOAWAY code ${raw.goaway}`);
        assert.equal(raw.answered.size, 0);
      } finally {
        raw.destroy();
      }
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" });
      assert.equal(r.status, 200);
    });
  });
});

describe("bodies read for anyone, and what a body may make the process hold", () => {
  it("a health check, which takes no token, is read only uncompressed and up to 1 KiB", async () => {
    const s = await startServer();
    try {
      const check = (headers: Record<string, string>, body: Buffer | string) =>
        fetch(`${s.url}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
      const plain = await check({}, "{}");
      assert.equal(plain.status, 200);
      assert.deepEqual(await plain.json(), { status: "SERVING" });
      // A few bytes that inflate to 1 MiB of nesting.
      const bomb = gzipSync(Buffer.from("[".repeat(512 * 1024) + "]".repeat(512 * 1024)));
      const compressed = await check({ "content-encoding": "gzip" }, bomb);
      const refusal = (await compressed.json()) as { code: string; message: string };
      assert.equal(compressed.status, 501, JSON.stringify(refusal));
      assert.equal(refusal.code, "unimplemented");
      const large = await check({}, JSON.stringify({ service: "x".repeat(2000) }));
      assert.equal(((await large.json()) as { code: string }).code, "resource_exhausted");
      // gRPC: a compressed message is refused, not inflated.
      const h2 = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const session = http2.connect(s.url);
        session.on("error", reject);
        const frame = Buffer.concat([Buffer.from([1]), Buffer.alloc(4), bomb]);
        frame.writeUInt32BE(bomb.length, 1);
        const req = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", "grpc-encoding": "gzip", te: "trailers" });
        let status: http2.IncomingHttpHeaders = {};
        req.on("response", (h) => (status = h));
        req.on("trailers", (t) => (status = { ...status, ...t }));
        req.on("close", () => {
          session.close();
          resolve(status);
        });
        req.on("error", reject);
        req.resume();
        req.end(frame);
      });
      assert.equal(h2["grpc-status"], "12", JSON.stringify(h2));
    } finally {
      await s.close();
    }
  });

  it("unknown fields of a binary message are dropped as it is read, not kept", async () => {
    let kept: unknown = "not seen";
    const s = await startServer({
      interceptors: [
        (next) => async (req) => {
          if (!req.stream) kept = (req.message as { $unknown?: unknown }).$unknown;
          return next(req);
        },
      ],
    });
    try {
      // ListRunnersRequest with field 99 (a varint), which it does not have.
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, {
        method: "POST",
        headers: { "content-type": "application/proto", authorization: `Bearer ${s.token}` },
        body: Buffer.from([0x98, 0x06, 0x01]),
      });
      assert.equal(r.status, 200);
      assert.equal(kept, undefined);
    } finally {
      await s.close();
    }
  });
});

/**
 * One-byte pieces of a body, each sent on its own with a pause between, so that the server
 * reads them one at a time: connect-node's readers are quadratic in the chunks of one message
 * (60 KB sent so held the event loop for 3 s).
 */
async function sendInPieces(write: (piece: Buffer) => void, body: Buffer): Promise<void> {
  for (let i = 0; i < body.length; i++) {
    write(body.subarray(i, i + 1));
    await sleep(1);
  }
}

/**
 * POSTs `pieces` over HTTP/1.1 chunked (no Content-Length), one write each, back to back or
 * `pauseMs` apart; answers the status, headers and body.
 */
function h1Pieces(url: string, path: string, headers: Record<string, string>, pieces: Buffer[], pauseMs = 0): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { method: "POST", headers: { ...headers, "transfer-encoding": "chunked" }, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
    });
    // A server that refuses the body may close the connection before it is all written.
    req.on("error", () => {});
    req.flushHeaders();
    void (async () => {
      for (const piece of pieces) {
        if (req.destroyed) return;
        req.write(piece);
        if (pauseMs > 0) await sleep(pauseMs);
      }
      req.end();
    })();
    setTimeout(() => reject(new Error("no answer")), EVENTUALLY_MS).unref();
  });
}

/** POSTs `body` over HTTP/1.1 in one-byte pieces 1 ms apart (see sendInPieces). */
const h1InPieces = (url: string, path: string, headers: Record<string, string>, body: Buffer) =>
  h1Pieces(url, path, headers, Array.from(body, (_, i) => body.subarray(i, i + 1)), 1);

/** POSTs `body` over HTTP/2 in one-byte DATA frames (no content-length); answers the headers and trailers, and the body. */
function h2InPieces(url: string, headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ...headers });
    let got: http2.IncomingHttpHeaders = {};
    const parts: Buffer[] = [];
    req.on("response", (h) => (got = h));
    req.on("trailers", (t) => (got = { ...got, ...t }));
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("close", () => {
      session.close();
      resolve({ headers: got, body: Buffer.concat(parts) });
    });
    req.on("error", reject);
    sendInPieces((p) => req.write(p), body).then(() => req.end(), reject);
  });
}

describe("bodies sent in many small pieces", () => {
  it("connect-node is handed a Connect body without a length, and each gRPC message, in one piece", async () => {
    // What this guards: connect-node's readers are quadratic in the pieces of one message.
    // The server the service runs on, with a handler that reads each body as connect-node
    // does (through the request's iterator, after chargeBody) and answers what it was handed.
    const server = await listen(
      (req, res) => {
        chargeBody(req, null, "org:test");
        void (async () => {
          const chunks: number[] = [];
          for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk.length);
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify(chunks));
        })();
      },
      0,
      "127.0.0.1",
    );
    const url = `http://127.0.0.1:${server.address.port}`;
    try {
      const json = Buffer.from(JSON.stringify({ pagination: { pageSize: 5 }, filter: { creatorIds: [] } }));
      const overH1 = await h1InPieces(url, "/gitpod.v1.RunnerService/ListRunners", { "content-type": "application/json" }, json);
      assert.deepEqual(JSON.parse(overH1.body.toString()), [json.length]);
      const overH2 = await h2InPieces(url, { ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json" }, json);
      assert.deepEqual(JSON.parse(overH2.body.toString()), [json.length]);
      // Up to 64 pieces come free (see notePiece in request-body.ts): these bodies stay within them.
      const frame = envelope(Buffer.alloc(50, 0x20));
      const grpc = await h2InPieces(url, { ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/grpc", te: "trailers" }, frame);
      assert.deepEqual(JSON.parse(grpc.body.toString()), [frame.length]);
      const grpcWeb = await h1InPieces(url, "/gitpod.v1.RunnerService/ListRunners", { "content-type": "application/grpc-web+proto" }, frame);
      assert.deepEqual(JSON.parse(grpcWeb.body.toString()), [frame.length]);
    } finally {
      await server.shutdown(500);
    }
  });

  it("the service answers calls whose bodies come in one-byte pieces, over Connect and gRPC", async () => {
    const s = await startServer();
    try {
      const { runnerId } = await createRunner(s);
      const auth = { authorization: `Bearer ${s.token}` };
      const connect = await h1InPieces(s.url, "/gitpod.v1.RunnerService/GetRunner", { "content-type": "application/json", ...auth }, Buffer.from(JSON.stringify({ runnerId })));
      assert.equal(connect.status, 200, connect.body.toString());
      assert.equal(JSON.parse(connect.body.toString()).runner.runnerId, runnerId);
      // GetRunnerRequest { runner_id = 1 }, over gRPC.
      const message = Buffer.concat([Buffer.from([0x0a, runnerId.length]), Buffer.from(runnerId)]);
      const grpc = await h2InPieces(s.url, { ":path": "/gitpod.v1.RunnerService/GetRunner", "content-type": "application/grpc", te: "trailers", ...auth }, envelope(message));
      assert.equal(grpc.headers["grpc-status"], "0", JSON.stringify(grpc.headers));
      assert.ok(grpc.body.includes(Buffer.from(runnerId)), "the answer names the runner");
    } finally {
      await s.close();
    }
  });

  it("a body in very many tiny pieces is refused, and one refused before it is read is not read past", async () => {
    const s = await startServer();
    try {
      const auth = { authorization: `Bearer ${s.token}` };
      // With a token: 1,200 one-byte chunks of one Connect body are resource_exhausted (past
      // 1,024 pieces a body must bring 64 bytes a piece), and the connection is not kept.
      const pieces = [Buffer.from("{"), ...Array.from({ length: 1200 }, () => Buffer.from(" ")), Buffer.from("}")];
      const refused = await h1Pieces(s.url, "/gitpod.v1.RunnerService/ListRunners", { "content-type": "application/json", ...auth }, pieces);
      assert.equal(refused.status, 429, refused.body.toString());
      const error = JSON.parse(refused.body.toString()) as { code: string; message: string };
      assert.equal(error.code, "resource_exhausted");
      assert.match(error.message, /^the request body came in \d+ pieces for \d+ bytes; send it in larger writes$/);
      assert.equal(refused.headers.connection, "close");

      // Without a token, over HTTP/2: the call is answered unauthenticated at once, and its
      // stream is reset once the rest comes in tiny pieces, long before the 3,000 bytes the
      // client would send (a body refused unread is otherwise read past up to 1 MiB). The
      // connection gets no GOAWAY: the next call on it is served.
      const session = http2.connect(s.url);
      session.on("error", () => {});
      let goaway = false;
      session.on("goaway", () => (goaway = true));
      const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json" });
      let status = 0;
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("error", () => {});
      stream.resume();
      let sent = 0;
      for (; sent < 3000 && !stream.destroyed && !stream.closed; sent++) {
        stream.write(" ");
        await sleep(1);
      }
      assert.equal(status, 401);
      assert.ok(sent < 3000, "the stream stayed open for every piece");
      const next = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", ...auth });
      next.end("{}");
      const nextStatus = await new Promise<number>((resolve) => next.on("response", (h) => resolve(Number(h[":status"]))));
      assert.equal(nextStatus, 200);
      assert.equal(goaway, false);
      session.close();

      // Without a token, over HTTP/1.1: the server closes the connection after its answer.
      const h1 = await new Promise<{ status: number; sentBeforeClose: number }>((resolve, reject) => {
        let sentHere = 0;
        let closed = false;
        const req = http.request(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", "transfer-encoding": "chunked" }, agent: false }, (res) => {
          res.resume();
          res.on("end", () => {
            req.socket?.once("close", () => (closed = true));
            void (async () => {
              for (; sentHere < 3000 && !closed && !req.destroyed; sentHere++) {
                req.write(" ");
                await sleep(1);
              }
              resolve({ status: res.statusCode!, sentBeforeClose: sentHere });
              req.destroy();
            })();
          });
        });
        req.on("error", () => {});
        req.flushHeaders();
        req.write("{");
        setTimeout(() => reject(new Error("no answer")), EVENTUALLY_MS).unref();
      });
      assert.equal(h1.status, 401);
      assert.ok(h1.sentBeforeClose < 3000, "the connection stayed open for every piece");
    } finally {
      await s.close();
    }
  });

  it("bodies written in small pieces, as some clients write them, are read as usual", async () => {
    const s = await startServer();
    try {
      const auth = { authorization: `Bearer ${s.token}` };
      // 200 writes of 50 bytes (a generator body), over HTTP/1.1 chunked.
      const head = '{"name":"small-writes","provider":"RUNNER_PROVIDER_AWS_EC2","padding":"';
      const body = Buffer.from(`${head}${"x".repeat(10_000 - head.length - 2)}"}`);
      const pieces = Array.from({ length: body.length / 50 }, (_, i) => body.subarray(i * 50, i * 50 + 50));
      const res = await h1Pieces(s.url, "/gitpod.v1.RunnerService/CreateRunner", { "content-type": "application/json", ...auth }, pieces);
      assert.equal(res.status, 200, res.body.toString());
      assert.equal(JSON.parse(res.body.toString()).runner.name, "small-writes");
    } finally {
      await s.close();
    }
  });

  it("gRPC-Web: a body of trailer frames alone is refused once it passes the size limit, not read to its end", async () => {
    const s = await startServer();
    try {
      // 24 trailer frames (flag 0x80) of 64 KiB, 1.5 MiB in all, in large writes.
      const frame = envelope(Buffer.alloc(64 * 1024, 0x61), 0x80);
      const body = Buffer.concat(Array.from({ length: 24 }, () => frame));
      const r = await h1Pieces(s.url, "/gitpod.v1.RunnerService/ListRunners", { "content-type": "application/grpc-web+proto", authorization: `Bearer ${s.token}` }, [body]);
      const status = r.headers["grpc-status"] ?? /grpc-status: ?(\d+)/i.exec(r.body.toString("latin1"))?.[1];
      assert.equal(status, "8", JSON.stringify(r.headers));
    } finally {
      await s.close();
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

// The 16 KiB header list limit is "at most", as advertised in
// SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 6.5.2): a list of exactly 16384 bytes is served.
it("HTTP/2: a header list of exactly 16 KiB is served, one byte more is refused", async () => {
  const s = await startServer();
  const session = http2.connect(s.url);
  session.on("error", () => {});
  try {
    const outcome = (listBytes: number) =>
      new Promise<string>((resolve) => {
        const headers: Record<string, string> = {
          ":method": "POST",
          ":path": "/gitpod.v1.RunnerService/ListRunners",
          ":scheme": "http",
          ":authority": new URL(s.url).host,
          "content-type": "application/json",
          authorization: `Bearer ${s.token}`,
        };
        // Each field counts its name, its value and 32 bytes.
        const used = Object.entries(headers).reduce((n, [k, v]) => n + k.length + v.length + 32, 0);
        headers["x-padding"] = "a".repeat(listBytes - used - "x-padding".length - 32);
        const req = session.request(headers);
        let status = 0;
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("error", () => {});
        req.resume();
        req.on("close", () => resolve(status === 200 ? "answered" : `status ${status}, rst ${req.rstCode}`));
        req.end("{}");
      });
    assert.equal(await outcome(16 * 1024), "answered");
    assert.equal(await outcome(16 * 1024 + 1), `status 0, rst ${http2.constants.NGHTTP2_ENHANCE_YOUR_CALM}`);
  } finally {
    session.close();
    await s.close();
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

describe("connections closed once their answers are out", () => {
  it("HTTP/1.1: a chunked body node cannot parse, pipelined behind a call being worked on, closes the connection right after that call's answer", async () => {
    // REQUEST_TIMEOUT_MS is the default 30 s: the answer of the request at fault, whose body
    // never came, is not waited for.
    const s = await startLimited({});
    const { release } = holdWriteLockOf(s.file);
    try {
      const body = JSON.stringify({ name: "ahead-of-bad-chunk", provider: "RUNNER_PROVIDER_AWS_EC2" });
      const create = `POST /gitpod.v1.RunnerService/CreateRunner HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: ahead-of-bad-chunk\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      const chunked = `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: bad-chunk-behind\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n`;
      const { sock, closed, received } = await rawConnection(s.port);
      sock.write(create + chunked);
      await sleep(300);
      release();
      assert.equal(await Promise.race([closed, later(5000, "still open")]), "closed");
      assert.deepEqual(received().match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 200"], received());
    } finally {
      release();
      await s.close();
    }
  });

  it("HTTP/1.1: a request taken during the drain, behind one that came before it, is answered with Connection: close", async () => {
    const server = await listen((req, res) => {
      req.resume();
      req.on("end", () => res.end(`answered ${req.url}\n`));
    }, 0, "127.0.0.1");
    try {
      const sock = net.connect(server.address.port, "127.0.0.1");
      sock.on("error", () => {});
      let received = "";
      sock.on("data", (d: Buffer) => (received += d.toString("latin1")));
      const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
      await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
      sock.write("POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345");
      await until("the held call taken", () => server.inFlight() === 1);
      const stopped = server.shutdown(EVENTUALLY_MS);
      sock.write("67890GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
      await Promise.race([closed, later(EVENTUALLY_MS, undefined)]);
      const answers = received.split(/(?=HTTP\/1\.1 )/);
      assert.equal(answers.length, 2, received);
      assert.match(answers[1]!, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nanswered \/next\n$/);
      assert.equal(headerOf(answers[1]!, "connection"), "close", answers[1]);
      assert.equal(await stopped, 0);
    } finally {
      await server.shutdown(100);
    }
  });

  it("HTTP/1.1: a body may take up to REQUEST_TIMEOUT_MS, longer than HEADERS_TIMEOUT_MS", async () => {
    const server = await listen((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => res.end(`read ${body}\n`));
    }, 0, "127.0.0.1", { headersTimeoutMs: 200, requestTimeoutMs: 5000 });
    try {
      // The headers at once, then a byte every 100 ms: about 800 ms, four times the headers' time.
      const sock = net.connect(server.address.port, "127.0.0.1");
      sock.on("error", () => {});
      let response = "";
      sock.on("data", (d: Buffer) => (response += d.toString("latin1")));
      const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
      await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
      sock.write("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nConnection: close\r\n\r\n");
      for (let i = 0; i < 8; i++) {
        await sleep(100);
        if (sock.destroyed) break;
        sock.write("a");
      }
      await Promise.race([closed, later(EVENTUALLY_MS, undefined)]);
      const r = { response };
      assert.match(r.response, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nread aaaaaaaa\n$/, r.response);
    } finally {
      await server.shutdown(100);
    }
  });
});

describe("plain HTTP on the HTTPS port", () => {
  let dir: string;
  let s: LimitedServer;
  before(async () => {
    let cert: string, key: string;
    ({ dir, cert, key } = selfSigned());
    s = await startLimited({ tls: { certFile: cert, keyFile: key }, headersTimeoutMs: 1500, requestTimeoutMs: 3000, idleTimeoutMs: 1500 });
  });
  after(async () => {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("is told what is wrong also when its method comes in a packet of its own, and its line shows the path without the query", async () => {
    const { sock, closed, received } = await rawConnection(s.port);
    sock.write("GET");
    await sleep(100);
    sock.write(" /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    await Promise.race([closed, later(EVENTUALLY_MS, undefined)]);
    assert.match(received(), /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\nthis port serves HTTPS: use an https:\/\/ URL\n$/, received());
    const [line] = await nodeAnswerLines(s, 1);
    assert.deepEqual([line?.code, line?.http_status, line?.procedure, line?.request_id], ["http_400", 400, "/healthz", headerOf(received(), "x-request-id")]);
  });

  it("is told what is wrong also when its request line names an absolute URL, as a request to a proxy does", async () => {
    const r = await slowExchange((onConnect) => net.connect(s.port, "127.0.0.1", onConnect), `GET http://127.0.0.1:${s.port}/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, "");
    assert.ok(r.closedByServer);
    assert.match(r.response, /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\nthis port serves HTTPS: use an https:\/\/ URL\n$/, r.response);
  });
});

describe("an Expect other than 100-continue, with a query", () => {
  it("HTTP/2: answered 417, its line showing the path without the query", async () => {
    const s = await startLimited({});
    try {
      const session = http2.connect(s.url);
      session.on("error", () => {});
      const status = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ":method": "POST", ":path": "/healthz?probe=1", expect: "something-else" });
        stream.on("response", (h) => resolve(Number(h[":status"])));
        stream.on("error", reject);
        stream.end();
      });
      session.close();
      assert.equal(status, 417);
      const [line] = await nodeAnswerLines(s, 1);
      assert.deepEqual([line?.code, line?.http_status, line?.procedure], ["http_417", 417, "/healthz"]);
    } finally {
      await s.close();
    }
  });
});
