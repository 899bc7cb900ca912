/**
 * The limits on request bodies: the size limit (refused without being read, over HTTP/1.1,
 * HTTP/2, Connect, gRPC and gRPC-Web), the budget for bodies held at once, field lengths
 * (invalid_argument naming the field, nothing written), what a body sent by anyone may make
 * the process hold, and bodies that come in many small pieces.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import Gitpod, { RateLimitError } from "@gitpod/sdk";
import { create, create as newMessage, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RunnerInteractionService } from "../gen/gitpod/v1/runner_interactions_pb.js";
import { ListRunnersRequestSchema } from "../gen/gitpod/v1/runners_pb.js";
import { invalidArgument, MAX_REPORTED_VIOLATIONS } from "../src/domain/errors.js";
import { ServerReflectionRequestSchema } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { HealthCheckRequestSchema } from "../gen/grpc/health/v1/health_pb.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { listen } from "../src/transport/http-server.js";
import { BodyBudget, chargeBody, MAX_REQUEST_BYTES, OPEN_FREE_BYTES } from "../src/transport/request-body.js";
import { envelope, protocolHeaders, WireClient } from "./corpus/wire.js";
import { call, createRunner, signUp, startServer, until, type TestServer } from "./harness.js";
import { MIB, EVENTUALLY_MS, type LimitedServer, startLimited, portOf, sleep, later, slowExchange, headerOf, sendOnAfterAnswer, quietAfterAnswer } from "./limited-server.js";

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

  describe("HTTP/1.1: a connection closed while its client still sends is read on for a while, so that the client gets its answer rather than a reset", () => {
    const connect = () => net.connect({ port: portOf(s.url), host: "127.0.0.1", allowHalfOpen: true });
    const head = (length: number) => `POST ${listRunners} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;
    const answered = /\r\n\r\n[^]*\}/;

    it("a body refused over the limit: the client sends the rest after reading its 429, and the connection ends cleanly", async () => {
      const r = await sendOnAfterAnswer(connect, head(2 * MIB), answered, Buffer.alloc(2 * MIB, 0x61));
      assert.match(r.response, /^HTTP\/1\.1 429 /);
      assert.equal(headerOf(r.response, "connection"), "close");
      assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
    });

    it("what follows the refused body is dropped, not taken for a request: a call pipelined after it is never made", async () => {
      const before = s.logs.filter((l) => l.includes("/CreateRunner")).length;
      // A valid create: made, it would leave a runner named "piped".
      const piped = JSON.stringify({ name: "piped", provider: "RUNNER_PROVIDER_AWS_EC2" });
      const create = `POST /gitpod.v1.RunnerService/CreateRunner HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: ${piped.length}\r\n\r\n${piped}`;
      const r = await sendOnAfterAnswer(connect, head(MAX_REQUEST_BYTES + 1), answered, Buffer.concat([Buffer.alloc(MAX_REQUEST_BYTES + 1, 0x61), Buffer.from(create)]));
      assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
      assert.deepEqual(r.response.match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 429"], r.response);
      await sleep(200);
      assert.equal(s.logs.filter((l) => l.includes("/CreateRunner")).length, before, "the pipelined call reached the service");
      assert.ok(!(await call(s, "gitpod.v1.RunnerService/ListRunners", {})).body.runners?.some((r: { name?: string }) => r.name === "piped"));
    });

    it("read on up to a bound: a client that sends far more is cut off", async () => {
      const r = await sendOnAfterAnswer(connect, head(96 * MIB), answered, Buffer.alloc(96 * MIB, 0x61));
      assert.match(r.response, /^HTTP\/1\.1 429 /);
      assert.match(r.failure ?? "", /^(EPIPE|ECONNRESET)$/, `the connection took all 96 MiB (${r.end})`);
    });

    it("read on for a while only: a client that stops sending, and keeps its side open, is cut off", async () => {
      assert.match(await quietAfterAnswer(connect, head(2 * MIB)), /^(EPIPE|ECONNRESET)$/);
    });

    it("a client that asked for the connection to close (Connection: close) and is answered before its body is through sends the rest, and the connection ends cleanly", async () => {
      const piece = Buffer.alloc(64 * 1024, 0x62);
      const first = Buffer.concat([Buffer.from(`POST /gitpod.v1.RunnerService/NoSuchMethod HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: ${10 * piece.length}\r\n\r\n`), piece]);
      const r = await sendOnAfterAnswer(connect, first, answered, Buffer.concat(Array<Buffer>(9).fill(piece)));
      assert.match(r.response, /^HTTP\/1\.1 501 [^]*"code":"unimplemented"/);
      assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
    });

    it("an answer sent before a chunked body is through: a client that sends on past the limit gets its answer and a clean end", async () => {
      const piece = Buffer.alloc(64 * 1024, 0x62);
      const chunk = Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n")]);
      const first = Buffer.concat([Buffer.from(`POST /gitpod.v1.RunnerService/NoSuchMethod HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`), chunk]);
      const rest = Buffer.concat([...Array<Buffer>(40).fill(chunk), Buffer.from("0\r\n\r\n")]);
      const r = await sendOnAfterAnswer(connect, first, answered, rest);
      assert.match(r.response, /^HTTP\/1\.1 501 [^]*"code":"unimplemented"/);
      assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
    });
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
