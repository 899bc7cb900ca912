/**
 * Shutdown's drain (pipelined answers all go out, idle connections are closed, a request cut
 * off at the timeout is logged) and connections closed once their answers are out.
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { describe, it } from "node:test";
import { listen } from "../src/transport/http-server.js";
import { until } from "./harness.js";
import { MIB, EVENTUALLY_MS, startLimited, selfSigned, holdWriteLockOf, rawConnection, sleep, later, headerOf, type LogLine } from "./limited-server.js";

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
