/**
 * Requests node answers itself before the handler sees them (unparseable requests, oversized
 * headers, CONNECT, an unknown Expect, plain HTTP on the HTTPS port), each answered and logged,
 * and answers cut off while they are being sent.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { after, before, describe, it } from "node:test";
import { call, createRunner, signUp, startServer, until } from "./harness.js";
import { EVENTUALLY_MS, type LimitedServer, startLimited, selfSigned, rawConnection, portOf, sleep, later, slowExchange, headerOf, type LogLine, CONNECT_REFUSED, http2Connect, nodeAnswerLines, sendOnAfterAnswer, quietAfterAnswer, MIB } from "./limited-server.js";

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

describe("answers node's parser or a refusal close the connection with, while the client sends on", () => {
  // Closed at once, the connection would be reset under a client still sending, which then
  // might never read its answer. It is read on for a while instead (src/transport/linger.ts).
  let s: LimitedServer;
  before(async () => (s = await startLimited({})));
  after(() => s.close());
  const connect = () => net.connect({ port: s.port, host: "127.0.0.1", allowHalfOpen: true });
  const junk = Buffer.alloc(MIB, 0x61);

  it("a request node cannot parse: 400, and what follows is read and dropped until the client ends", async () => {
    const r = await sendOnAfterAnswer(connect, "GE\u0001T / HTTP/1.1\r\nHost: x\r\n\r\n", /\r\n\r\n[^]*\n$/, junk);
    assert.match(r.response, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
  });

  it("headers over 16 KiB still coming: 431", async () => {
    const r = await sendOnAfterAnswer(connect, `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nX-Padding: ${"a".repeat(20_000)}`, /\r\n\r\n[^]*\n$/, junk);
    assert.match(r.response, /^HTTP\/1\.1 431 /);
    assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
  });

  it("CONNECT: 405", async () => {
    const r = await sendOnAfterAnswer(connect, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", /\r\n\r\n[^]*\n$/, junk);
    assert.match(r.response, /^HTTP\/1\.1 405 /);
    assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
  });

  it("a malformed request pipelined behind calls: their answers, then the end", async () => {
    const listRunners = `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`;
    const r = await sendOnAfterAnswer(connect, listRunners + listRunners + "GE\u0001T / HTTP/1.1\r\nHost: x\r\n\r\n", /HTTP\/1\.1 200[^]*HTTP\/1\.1 200[^]*\r\n\r\n\{[^]*\}$/, junk);
    assert.deepEqual(r.response.match(/HTTP\/1\.1 \d{3}/g), ["HTTP/1.1 200", "HTTP/1.1 200"], r.response);
    assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
  });

  it("read on for a while only: a client that goes quiet after its 400, its side open, is cut off", async () => {
    assert.match(await quietAfterAnswer(connect, "GE\u0001T / HTTP/1.1\r\nHost: x\r\n\r\n"), /^(EPIPE|ECONNRESET)$/);
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

  it("is told what is wrong also while it sends on: what follows the answer is read and dropped until it ends", async () => {
    const connect = () => net.connect({ port: s.port, host: "127.0.0.1", allowHalfOpen: true });
    const r = await sendOnAfterAnswer(connect, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n", /\r\n\r\n[^]*\n$/, Buffer.alloc(MIB, 0x61));
    assert.match(r.response, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
  });

  it("over TLS as over plain HTTP, a body refused over the limit is read on after its 429 until the client ends", async () => {
    // node's TLS sockets take allowHalfOpen as its plain ones do; its types leave it out.
    const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = { port: s.port, host: "127.0.0.1", rejectUnauthorized: false, ALPNProtocols: ["http/1.1"], allowHalfOpen: true };
    const connect = () => tls.connect(options);
    const head = `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: ${2 * MIB}\r\n\r\n`;
    const r = await sendOnAfterAnswer(connect, head, /\r\n\r\n[^]*\}/, Buffer.alloc(2 * MIB, 0x61));
    assert.match(r.response, /^HTTP\/1\.1 429 /);
    assert.deepEqual([r.failure, r.end], [undefined, "ended"]);
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
