import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { brotliCompressSync, gzipSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { RunnerConfigurationService, type SCMIntegration } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { CreateRunnerRequestSchema, RunnerKind, RunnerProvider, RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { open } from "../src/crypto/sealed-box.js";
import { envelope, protocolHeaders, WireClient } from "./corpus/wire.js";
import { call, createRunner, signUp, startServer, until, type TestServer } from "./harness.js";

describe("every protocol reaches the same port", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  const transports: Array<[string, (url: string, token: string) => Transport]> = [
    ["Connect binary (HTTP/1.1)", (baseUrl, t) => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors: [bearer(t)] })],
    ["Connect JSON (h2c)", (baseUrl, t) => createConnectTransport({ baseUrl, httpVersion: "2", interceptors: [bearer(t)] })],
    ["gRPC-Web (HTTP/1.1)", (baseUrl, t) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer(t)] })],
    ["gRPC (h2c)", (baseUrl, t) => createGrpcTransport({ baseUrl, interceptors: [bearer(t)] })],
  ];

  for (const [name, make] of transports) {
    it(`${name}: creates a runner and an integration, and maps errors to codes`, async () => {
      const transport = make(s.url, s.token);
      const runners = createClient(RunnerService, transport);
      const configs = createClient(RunnerConfigurationService, transport);
      const { runner } = await runners.createRunner({ name: `runner ${name}`, kind: RunnerKind.REMOTE, provider: RunnerProvider.LINUX_HOST });
      const { id } = await configs.createSCMIntegration({ runnerId: runner!.runnerId, scmId: "bitbucket", host: "bitbucket.org", pat: true });
      assert.match(id, /^[0-9a-f-]{36}$/);
      await assert.rejects(
        configs.createSCMIntegration({ runnerId: runner!.runnerId, scmId: "bitbucket", host: "bitbucket.org", pat: true }),
        (e) => ConnectError.from(e).code === Code.AlreadyExists,
      );
      // The error's id, as the client sees it (headers and trailers merged): one id, not two.
      const refused = await configs.getSCMIntegration({ id: "0190a0a0-0000-7000-8000-000000000000" }).catch((e: unknown) => ConnectError.from(e));
      assert.ok(refused instanceof ConnectError && refused.code === Code.NotFound);
      assert.match(refused.metadata.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
      const healthClient = createClient(Health, transport);
      assert.equal((await healthClient.check({})).status, HealthCheckResponse_ServingStatus.SERVING);
      for (const service of ["gitpod.v1.RunnerConfigurationService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]) {
        assert.equal((await healthClient.check({ service })).status, HealthCheckResponse_ServingStatus.SERVING, service);
      }
      // The health protocol answers a service it does not know NOT_FOUND.
      for (const service of ["gitpod.v1.Nonsense", "bogus"]) {
        await assert.rejects(healthClient.check({ service }), (e) => ConnectError.from(e).code === Code.NotFound && ConnectError.from(e).rawMessage.startsWith(`unknown service "${service}"`));
      }
    });
  }

  // Integrations become API messages as plain objects (transport/converters.ts); every codec
  // must find in them each field that is set, and no field that is not.
  it("Get and List show every field that was set, and only those, in JSON and binary alike", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const keys = await signUp(s, runnerToken);
    const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";
    const made = [
      { runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", pat: false, oauthClientId: "client-1", oauthPlaintextClientSecret: "s3cret-1", issuerUrl: "https://login.microsoftonline.com/t/v2.0" },
      { runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "/tfs" },
      { runnerId, scmId: "github", host: "github.com", pat: true },
    ];
    const ids: string[] = [];
    for (const body of made) {
      const r = await call(s, CREATE, body);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      ids.push(r.body.id);
    }
    const expected = made.map((m, i) => ({
      id: ids[i]!, runnerId, scmId: m.scmId, host: m.host, pat: m.pat,
      oauth: m.oauthClientId ? { clientId: m.oauthClientId, secret: m.oauthPlaintextClientSecret, issuerUrl: m.issuerUrl ?? "" } : undefined,
      virtualDirectory: m.virtualDirectory,
    }));
    const seen = (i: SCMIntegration) => ({
      id: i.id, runnerId: i.runnerId, scmId: i.scmId, host: i.host, pat: i.pat,
      oauth: i.oauth ? { clientId: i.oauth.clientId, secret: open(Buffer.from(i.oauth.encryptedClientSecret), keys.publicKey, keys.secretKey), issuerUrl: i.oauth.issuerUrl } : undefined,
      virtualDirectory: i.virtualDirectory,
    });
    const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);
    const codecs: Array<[string, Transport]> = [
      ["Connect JSON", createConnectTransport({ baseUrl: s.url, httpVersion: "1.1", interceptors: [bearer(s.token)] })],
      ["Connect binary", createConnectTransport({ baseUrl: s.url, httpVersion: "1.1", useBinaryFormat: true, interceptors: [bearer(s.token)] })],
      ["gRPC", createGrpcTransport({ baseUrl: s.url, interceptors: [bearer(s.token)] })],
    ];
    for (const [name, transport] of codecs) {
      const configs = createClient(RunnerConfigurationService, transport);
      for (const [i, id] of ids.entries()) {
        const { integration } = await configs.getSCMIntegration({ id });
        assert.deepEqual(seen(integration!), expected[i], `${name}: Get ${made[i]!.scmId}`);
      }
      const page = await configs.listSCMIntegrations({ filter: { runnerIds: [runnerId] } });
      assert.deepEqual(page.integrations.map(seen).sort(byId), [...expected].sort(byId), `${name}: List`);
      assert.equal(page.pagination?.nextToken, "", `${name}: one page`);
    }
    // Over JSON, fields that are not set are left out, as protobuf's JSON mapping has it.
    const raw = await call(s, "gitpod.v1.RunnerConfigurationService/GetSCMIntegration", { id: ids[2] });
    assert.deepEqual(Object.keys(raw.body.integration).sort(), ["host", "id", "pat", "runnerId", "scmId"]);
  });
});

function bearer(token: string) {
  return (next: any) => async (req: any) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

describe("raw HTTP the framework would choke on", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  /** Sends bytes on a fresh connection and answers the status line that came back. */
  function raw(bytes: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const u = new URL(s.url);
      const sock = net.connect(Number(u.port), u.hostname, () => sock.end(bytes));
      let got = "";
      sock.on("data", (d) => (got += d));
      sock.on("error", reject);
      sock.on("close", () => resolve(got.split("\r\n")[0] ?? ""));
    });
  }

  it("a missing or malformed Host is a 400, and the server keeps answering", async () => {
    const body = "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    assert.match(await raw(`POST /gitpod.v1.RunnerService/ListRunners HTTP/1.0\r\n${body}`), /^HTTP\/1\.1 400/);
    assert.match(await raw(`POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: [bad\r\n${body}`), /^HTTP\/1\.1 400/);
    const alive = await fetch(`${s.url}/healthz`);
    assert.equal(alive.status, 200);
  });

  it("what connect-node refuses by itself is final too (x-should-retry: false), over HTTP/1.1 and HTTP/2", async () => {
    const path = "gitpod.v1.RunnerService/ListRunners";
    const headers = { authorization: `Bearer ${s.token}`, "content-type": "application/json" };
    const cases: [Record<string, string>, string, number, string][] = [
      [headers, "{not json", 400, "invalid_argument"],
      [{ ...headers, "connect-timeout-ms": "soon" }, "{}", 400, "invalid_argument"],
      [{ ...headers, "content-type": "text/plain" }, "{}", 415, ""],
      [{ ...headers, "content-type": "text/plain; charset=utf-8" }, "{}", 415, ""],
      [{ ...headers, "content-type": "application/json; charset=latin1" }, "{}", 415, ""],
      [{ ...headers, "content-type": "application/grpc+json" }, "{}", 415, ""],
      [{ ...headers, "content-type": "application/grpc-web-text" }, "AAAAAAA=", 415, ""],
      [{ ...headers, "content-type": "application/grpc+xml" }, "", 415, ""],
      [{ ...headers, "content-type": "application/grpc-web+thrift" }, "", 415, ""],
      [{ ...headers, "content-type": "application/grpc; charset=utf-8" }, "", 415, ""],
    ];
    for (const [h, body, status, code] of cases) {
      const r = await fetch(`${s.url}/${path}`, { method: "POST", headers: h, body });
      const text = await r.text();
      assert.equal(r.status, status, text);
      if (code) assert.equal(JSON.parse(text).code, code);
      if (/grpc-web-text/.test(h["content-type"]!)) assert.match(text, /binary mode only/, "says what is served instead");
      // Other gRPC codecs and parameters, which connect-node answered with a bare 415.
      if (/^application\/grpc/.test(h["content-type"]!) && /xml|thrift|charset=utf-8/.test(h["content-type"]!)) {
        const says = `unsupported media type: Content-Type "${h["content-type"]}"; gRPC is sent as application/grpc (or application/grpc+proto), gRPC-Web as application/grpc-web (or application/grpc-web+proto)\n`;
        assert.equal(text, says);
        assert.equal((await http2Post(s.url, `/${path}`, h, body)).body, says);
      }
      if (r.status === 415 && !/grpc/.test(h["content-type"]!)) {
        // connect-node's own 415 is bare; it says what to send, over both HTTP versions.
        const says = /^unsupported media type: Content-Type "(text\/plain|text\/plain; charset=utf-8|application\/json; charset=latin1)"; calls are sent as application\/json \(Connect JSON\), application\/proto \(Connect binary\), application\/grpc \(gRPC\) or application\/grpc-web \(gRPC-Web\)\n$/;
        assert.match(text, says);
        assert.match((await http2Post(s.url, `/${path}`, h, body)).body, says);
      }
      assert.equal(r.headers.get("x-should-retry"), "false", `${status} ${text}`);
      const h2 = await http2Post(s.url, `/${path}`, h, body);
      assert.equal(h2.status, status, h2.body);
      assert.equal(h2.headers["x-should-retry"], "false", `HTTP/2 ${status} ${h2.body}`);
      for (const id of [r.headers.get("x-request-id"), h2.headers["x-request-id"]]) assert.match(String(id), /^[0-9a-f-]{36}$/, `${h["content-type"]}: carries its request id`);
    }
    // gRPC over HTTP/2 answers a method it does not serve in headers alone, with the id too.
    const unserved = await http2Post(s.url, "/gitpod.v1.RunnerService/CheckAuthenticationForHost", { ...headers, "content-type": "application/grpc" }, "");
    assert.equal(unserved.headers["grpc-status"], "12");
    assert.match(String(unserved.headers["x-request-id"]), /^[0-9a-f-]{36}$/);
    const ok = await fetch(`${s.url}/${path}`, { method: "POST", headers, body: "{}" });
    assert.equal(ok.status, 200);
    // The other ways RFC 9110 lets a client write the same media type are taken.
    for (const type of ['application/json; charset="utf-8"', "application/json ; charset=UTF-8", "application/json;", "application/json;charset=utf8"]) {
      const r = await fetch(`${s.url}/${path}`, { method: "POST", headers: { ...headers, "content-type": type }, body: "{}" });
      assert.equal(r.status, 200, `${type}: ${await r.text()}`);
    }
    const binary = await fetch(`${s.url}/${path}`, { method: "POST", headers: { ...headers, "content-type": "application/proto; charset=utf-8" }, body: new Uint8Array(0) });
    assert.equal(binary.status, 200, "a charset on a binary type says nothing, and goes");
    assert.equal(ok.headers.get("x-should-retry"), null, "a success says nothing about retries");
    const missing = await call(s, "gitpod.v1.RunnerService/GetRunner", { runnerId: "01a23a85-70c0-7000-8000-000000000000" });
    assert.equal(missing.body.code, "not_found");
    assert.equal(missing.headers.get("x-should-retry"), "false", "set by the service's own error mapping, once");
  });
});

/** One request over a fresh HTTP/2 (h2c) connection. */
function http2Post(url: string, path: string, headers: Record<string, string>, body: string): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": path, ...headers });
    let status = 0;
    let got: http2.IncomingHttpHeaders = {};
    let text = "";
    req.on("response", (h) => ((status = Number(h[":status"])), (got = h)));
    req.on("data", (d) => (text += d));
    req.on("end", () => {
      session.close();
      resolve({ status, headers: got, body: text });
    });
    req.on("error", reject);
    req.end(body);
  });
}

it("a served method asked with another method than POST is 405 saying Allow: POST, Connect's GET form too", async () => {
  const s = await startServer();
  try {
    const path = "/gitpod.v1.RunnerService/ListRunners";
    for (const [method, query] of [["GET", ""], ["GET", `?connect=v1&encoding=json&message=${encodeURIComponent("{}")}`], ["PUT", ""], ["DELETE", ""]] as const) {
      const r = await fetch(`${s.url}${path}${query}`, { method, headers: { authorization: `Bearer ${s.token}` } });
      assert.equal(r.status, 405, `${method}${query}`);
      assert.equal(r.headers.get("allow"), "POST");
      assert.equal(r.headers.get("x-should-retry"), "false");
      assert.equal(await r.text(), `method not allowed: ${method} ${path} takes POST\n`);
    }
    // Paths that are no method stay not found.
    assert.equal((await fetch(`${s.url}/gitpod.v1.RunnerService/Nothing`)).status, 404);
  } finally {
    await s.close();
  }
});

it("a gRPC message is escaped so that no space begins or ends it: node's client keeps the trailer (an empty grpc-timeout)", async () => {
  const s = await startServer();
  const client = new WireClient(s.url);
  try {
    const a = await client.send({ path: "/gitpod.v1.RunnerService/ListRunners", headers: { ...protocolHeaders("grpc", s.token), "grpc-timeout": "" }, body: envelope(new Uint8Array(0)), http2: true });
    assert.equal(a.kind, "answer");
    const status = a.kind === "answer" ? { ...a.headers, ...a.trailers } : {};
    assert.equal(status["grpc-status"], "3");
    assert.match(String(status["grpc-message"]), /^protocol error: invalid grpc timeout value:%20$/);
  } finally {
    client.close();
    await s.close();
  }
});

it("a method name a slip away from a served one is answered unimplemented with the one meant", async () => {
  const s = await startServer();
  try {
    const said = async (method: string) => {
      const r = await call(s, method, {});
      assert.equal(r.status, 501);
      assert.equal(r.body.code, "unimplemented");
      return r.body.message as string;
    };
    const meant = "; did you mean gitpod.v1.RunnerService/ListRunners?";
    for (const slip of ["gitpod.v1.RunnerService/ListRunner", "gitpod.v1.RunnerService/listRunners", "gitpod.v1.RunnerService/ListRunnesr"]) {
      assert.equal(await said(slip), `${slip} is not implemented by this service, which serves the SCM-integration part of the gitpod.v1 API${meant}`, slip);
    }
    // A method of the public API this service does not serve: nothing near it is offered.
    assert.equal(await said("gitpod.v1.RunnerService/ParseContextURL"), "gitpod.v1.RunnerService/ParseContextURL is not implemented by this service, which serves the SCM-integration part of the gitpod.v1 API");
    // A path of 10,000 characters is logged cut to 200: anyone may send such paths, often.
    const long = await fetch(`${s.url}/${"p".repeat(10_000)}`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    assert.equal(long.status, 404);
    await until("its line", () => s.logs.some((l) => l.includes('"http_status":404')));
    const line = JSON.parse(s.logs.find((l) => l.includes('"http_status":404'))!);
    assert.equal(line.procedure, `/${"p".repeat(199)}…`);
    // A token put in the path by mistake is hidden, whole or cut (node's own refusals: node-answers.test.ts).
    const tokens = [s.token, s.token.replace("scmapi_", "scmrun_"), s.token.slice(0, 20)];
    const written = [...tokens, s.token.replace("_", "%5F"), s.token.replace("scmapi", "SCMAPI"), s.token.replace("s", "%73"), s.token.replace("_", "%255F")];
    for (const token of written) assert.equal((await fetch(`${s.url}/v1/${token}/x?a=${token}`, { method: "POST", body: "{}" })).status, 404);
    await until("their lines", () => s.logs.filter((l) => /\/v1\/(scm|%73)/i.test(l)).length === 7);
    assert.deepEqual(s.logs.filter((l) => /\/v1\/(scm|%73)/i.test(l)).map((l) => JSON.parse(l).procedure), ["/v1/scmapi_[hidden]/x", "/v1/scmrun_[hidden]/x", "/v1/scmapi_[hidden]/x", "/v1/scmapi_[hidden]/x", "/v1/SCMAPI_[hidden]/x", "/v1/scmapi_[hidden]/x", "/v1/scmapi%5F[hidden]/x"]);
    // Nor as a request id, which a client may choose (and would otherwise be logged as sent).
    const asId = await fetch(`${s.url}/healthz`, { headers: { "x-request-id": s.token } });
    assert.notEqual(asId.headers.get("x-request-id"), s.token);
    assert.equal((await fetch(`${s.url}/healthz`, { headers: { "x-request-id": "client-chosen.1" } })).headers.get("x-request-id"), "client-chosen.1");
    const secretPart = (t: string) => t.slice("scmapi_".length);
    await until("the health lines", () => s.logs.filter((l) => l.includes('"procedure":"/healthz"')).length >= 2);
    assert.ok(!s.logs.some((l) => written.some((t) => l.includes(secretPart(t).slice(0, 12)))), "no token, or its secret part, in any line");
  } finally {
    await s.close();
  }
});

it("a content coding is read in any case (GZIP is gzip), over HTTP/1.1 and HTTP/2", async () => {
  const s = await startServer();
  try {
    const body = gzipSync(Buffer.from("{}"));
    const headers = { "content-type": "application/json", "content-encoding": "GZIP", authorization: `Bearer ${s.token}` };
    const one = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers, body });
    assert.equal(one.status, 200, await one.clone().text());
    assert.deepEqual(await one.json(), { pagination: {} });
    const session = http2.connect(s.url);
    try {
      const two = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", ...headers, "content-encoding": "Gzip" });
        let text = "";
        let status = 0;
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("data", (d) => (text += d));
        req.on("end", () => resolve({ status, text }));
        req.on("error", reject);
        req.end(body);
      });
      assert.equal(two.status, 200, two.text);
    } finally {
      session.close();
    }
  } finally {
    await s.close();
  }
});

describe("compressed Connect requests", () => {
  let s: TestServer;
  before(async () => (s = await startServer({ rateLimit: { perSecond: 0.001, burst: 1 } })));
  after(() => s.close());

  const post = (body: Buffer) =>
    fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, {
      method: "POST",
      headers: { "content-type": "application/json", "content-encoding": "gzip", authorization: `Bearer ${s.token}` },
      body,
    });

  it("one over 1 MiB once decompressed is final (x-should-retry: false); a rate-limited one may be retried", async () => {
    const bomb = await post(gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x20)));
    assert.equal(bomb.status, 429);
    assert.equal(((await bomb.json()) as { code: string }).code, "resource_exhausted");
    assert.equal(bomb.headers.get("x-should-retry"), "false");

    // The token is checked before the body is read, so the bomb took the token's one call.
    const limited = await post(gzipSync(Buffer.from("{}")));
    assert.equal(limited.status, 429);
    assert.equal(((await limited.json()) as { code: string }).code, "resource_exhausted");
    assert.ok(Number(limited.headers.get("retry-after-ms")) > 0);
    assert.equal(limited.headers.get("x-should-retry"), null);
  });
});

it("each request's log line shows the code its client was told, and canceled for a call never answered", async () => {
  const s = await startServer();
  try {
    const logged = async (requestId: string) => {
      for (let i = 0; i < 100; i++) {
        const line = s.logs.find((l) => l.includes('"msg":"request"') && l.includes(`"request_id":"${requestId}"`));
        if (line) return JSON.parse(line) as { code: string; http_status: number | null; protocol: string };
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.fail(`no log line for ${requestId}`);
    };
    const auth = { authorization: `Bearer ${s.token}` };
    // A message that cannot be decoded: connect-node refuses it before any interceptor runs.
    const garbage = Buffer.from([0, 0, 0, 0, 2, 0xff, 0xff]).toString("latin1");
    const grpc = await http2Post(s.url, "/gitpod.v1.RunnerService/ListRunners", { ...auth, "content-type": "application/grpc", te: "trailers", "x-request-id": "log-grpc" }, garbage);
    assert.equal(grpc.status, 200);
    assert.deepEqual([(await logged("log-grpc")).code, (await logged("log-grpc")).http_status], ["invalid_argument", 200]);
    const web = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/grpc-web+proto", "x-request-id": "log-grpc-web" },
      body: Buffer.from([0, 0, 0, 0, 2, 0xff, 0xff]),
    });
    assert.match(Buffer.from(await web.arrayBuffer()).toString("latin1"), /grpc-status: ?3/);
    assert.equal((await logged("log-grpc-web")).code, "invalid_argument");
    // Answered in headers alone (trailers-only).
    const unserved = await http2Post(s.url, "/gitpod.v1.RunnerService/CheckAuthenticationForHost", { ...auth, "content-type": "application/grpc", "x-request-id": "log-unserved" }, "");
    assert.equal(unserved.headers["grpc-status"], "12");
    assert.equal((await logged("log-unserved")).code, "unimplemented");
    // A media type in any case is the same one (connect-node reads it so): not a bare 404.
    const upper = await http2Post(s.url, "/gitpod.v1.RunnerService/CheckAuthenticationForHost", { ...auth, "content-type": "Application/gRPC", "x-request-id": "log-unserved-case" }, "");
    assert.equal(upper.headers["grpc-status"], "12");
    assert.deepEqual([(await logged("log-unserved-case")).code, (await logged("log-unserved-case")).protocol], ["unimplemented", "grpc"]);
    // A method of another package (the health protocol's Watch, not served) is status 12 as
    // well, over gRPC and gRPC-Web, as gRPC servers answer; a path no method has stays 404.
    const watch = await http2Post(s.url, "/grpc.health.v1.Health/Watch", { "content-type": "application/grpc", te: "trailers", "x-request-id": "log-watch" }, "\0\0\0\0\0");
    assert.deepEqual([watch.status, watch.headers["grpc-status"], watch.headers["grpc-message"]], [200, "12", "grpc.health.v1.Health/Watch is not implemented by this service"]);
    assert.equal((await logged("log-watch")).code, "unimplemented");
    const watchWeb = await fetch(`${s.url}/grpc.health.v1.Health/Watch`, { method: "POST", headers: { "content-type": "application/grpc-web+proto" }, body: Buffer.alloc(5) });
    assert.deepEqual([watchWeb.status, watchWeb.headers.get("grpc-status")], [200, "12"]);
    assert.equal((await http2Post(s.url, "/not/a/method", { "content-type": "application/grpc", te: "trailers" }, "")).status, 404);
    // A client that leaves while its body is still coming is never answered.
    const u = new URL(s.url);
    const sock = net.connect(Number(u.port), u.hostname);
    await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
    sock.write(`POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nX-Request-Id: log-left\r\nContent-Length: 100\r\n\r\n{"pagina`);
    await new Promise((r) => setTimeout(r, 100));
    sock.destroy();
    const left = await logged("log-left");
    assert.deepEqual([left.code, left.http_status], ["canceled", null]);
    // And a call that succeeds says so.
    const ok = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { ...auth, "content-type": "application/json", "x-request-id": "log-ok" }, body: "{}" });
    assert.equal(ok.status, 200);
    assert.deepEqual([(await logged("log-ok")).code, (await logged("log-ok")).http_status], ["ok", 200]);
  } finally {
    await s.close();
  }
});

describe("compressed Connect requests, read as connect-node reads them", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  const post = async (body: Buffer | string, coding: string) => {
    const res = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, {
      method: "POST",
      headers: { "content-type": "application/json", "content-encoding": coding, authorization: `Bearer ${s.token}` },
      body,
    });
    const text = await res.text();
    return { status: res.status, text, shouldRetry: res.headers.get("x-should-retry") };
  };
  /** A ListRunners request padded by an unknown field to exactly `size` bytes of JSON. */
  const padded = (size: number) => Buffer.from(`{"padding":"${"p".repeat(size - '{"padding":""}'.length)}"}`);

  it("a body that inflates to exactly 1 MiB is read; one byte more is refused, final", async () => {
    for (const [coding, compress] of [["gzip", gzipSync], ["br", brotliCompressSync]] as const) {
      const exact = await post(compress(padded(1024 * 1024)), coding);
      assert.equal(exact.status, 200, `${coding}: ${exact.text.slice(0, 200)}`);
      const over = await post(compress(padded(1024 * 1024 + 1)), coding);
      assert.equal(over.status, 429, coding);
      assert.deepEqual(JSON.parse(over.text), { code: "resource_exhausted", message: "message is larger than configured readMaxBytes 1048576 after decompression" });
      assert.equal(over.shouldRetry, "false");
    }
  });

  it("a body that is no stream of its coding is invalid_argument, worded as connect-node words it", async () => {
    const broken = gzipSync(Buffer.from("{}"));
    broken[3] = 0xff; // reserved flag bits set: zlib's Z_DATA_ERROR
    for (const [what, body, coding] of [["not gzip", Buffer.from("{}"), "gzip"], ["bad gzip flags", broken, "gzip"], ["not brotli", Buffer.from("not brotli at all"), "br"]] as const) {
      const r = await post(body, coding);
      assert.equal(r.status, 400, `${what}: ${r.text}`);
      assert.deepEqual(JSON.parse(r.text), { code: "invalid_argument", message: "decompression failed" }, what);
    }
  });

  it("a coding not served, whatever its name (an Object property's too), is unimplemented and final, over HTTP/1.1 and HTTP/2", async () => {
    for (const coding of ["deflate", "zstd", "constructor", "toString", "__proto__", "hasOwnProperty"]) {
      const r = await post("{}", coding);
      assert.equal(r.status, 501, `${coding}: ${r.text}`);
      assert.equal(JSON.parse(r.text).code, "unimplemented", coding);
      assert.equal(r.shouldRetry, "false", coding);
      const h2 = await http2Post(s.url, "/gitpod.v1.RunnerService/ListRunners", { "content-type": "application/json", "content-encoding": coding, authorization: `Bearer ${s.token}` }, "{}");
      assert.equal(h2.status, 501, `HTTP/2 ${coding}: ${h2.body}`);
      assert.equal(h2.headers["x-should-retry"], "false", `HTTP/2 ${coding}`);
    }
  });
});

it("each request's log line names the protocol the call was made in", async () => {
  const s = await startServer();
  try {
    const protocolOfLine = async (requestId: string) => {
      for (let i = 0; i < 100; i++) {
        const line = s.logs.find((l) => l.includes('"msg":"request"') && l.includes(`"request_id":"${requestId}"`));
        if (line) return (JSON.parse(line) as { protocol: string }).protocol;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.fail(`no log line for ${requestId}`);
    };
    const path = "/gitpod.v1.RunnerService/ListRunners";
    const cases: [string, string, string | Buffer, string][] = [
      ["log-json", "application/json", "{}", "connect"],
      ["log-proto", "application/proto", Buffer.alloc(0), "connect"],
      ["log-grpc-web", "application/grpc-web+proto", envelope(new Uint8Array(0)), "grpc-web"],
      ["log-grpc-web-caps", "Application/gRPC-Web", envelope(new Uint8Array(0)), "grpc-web"],
      ["log-grpc-web-bare", "application/grpc-web", envelope(new Uint8Array(0)), "grpc-web"],
    ];
    for (const [id, type, body, protocol] of cases) {
      const r = await fetch(`${s.url}${path}`, { method: "POST", headers: { authorization: `Bearer ${s.token}`, "content-type": type, "x-request-id": id }, body });
      assert.equal(r.status, 200, `${type}: ${await r.text()}`);
      assert.equal(await protocolOfLine(id), protocol, type);
    }
    const grpc = await http2Post(s.url, path, { authorization: `Bearer ${s.token}`, "content-type": "application/grpc", te: "trailers", "x-request-id": "log-grpc" }, "\0\0\0\0\0");
    assert.equal(grpc.status, 200);
    assert.equal(await protocolOfLine("log-grpc"), "grpc");
  } finally {
    await s.close();
  }
});

it("a UTF-8 charset written without its dash (utf8), or quoted with escapes (quoted-pairs), is taken in every form RFC 9110 allows, as utf-8 is", async () => {
  const s = await startServer();
  try {
    for (const type of ["application/json ; charset=utf8", 'application/json; charset="UTF8"', "application/json;  charset=Utf8 ;", "application/proto ; charset=utf8", 'application/json; charset="\\u\\t\\f\\-8"']) {
      const binary = type.startsWith("application/proto");
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { authorization: `Bearer ${s.token}`, "content-type": type }, body: binary ? new Uint8Array(0) : "{}" });
      assert.equal(r.status, 200, `${type}: ${await r.text()}`);
    }
    // Another charset is still refused.
    const latin1 = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json ; charset=latin1" }, body: "{}" });
    assert.equal(latin1.status, 415);
    // So is one that only escapes its way to looking like UTF-8, and a quote left open.
    for (const type of ['application/json; charset="utf\\\\-8"', 'application/json; charset="utf-8', "application/json; charset="]) {
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { authorization: `Bearer ${s.token}`, "content-type": type }, body: "{}" });
      assert.equal(r.status, 415, type);
    }
  } finally {
    await s.close();
  }
});

/** The grpc-status of a gRPC call of RunnerService `method` asking for `timeout` (grpc-timeout) on `session`. */
function grpcStatusWithin(session: http2.ClientHttp2Session, token: string, method: string, timeout: string, message: Uint8Array): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": `/gitpod.v1.RunnerService/${method}`, "content-type": "application/grpc", te: "trailers", "grpc-timeout": timeout, authorization: `Bearer ${token}` });
    let status: string | undefined;
    const see = (h: http2.IncomingHttpHeaders) => (status ??= h["grpc-status"] as string | undefined);
    req.on("response", see);
    req.on("trailers", see);
    req.on("close", () => resolve(status));
    req.on("error", reject);
    req.resume();
    req.end(envelope(message));
  });
}

it("a deadline past 60 s is shortened to 60 s and the call served, in every unit gRPC writes one, and over Connect", async () => {
  const s = await startServer();
  const session = http2.connect(s.url);
  try {
    const grpcStatus = (timeout: string) => grpcStatusWithin(session, s.token, "ListRunners", timeout, new Uint8Array(0));
    for (const timeout of ["2H", "2M", "61S", "60001m", "60000001u", "99999999u"]) assert.equal(await grpcStatus(timeout), "0", `grpc-timeout: ${timeout}`);
    for (const timeout of ["60001", "9999999999"]) {
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json", "connect-timeout-ms": timeout }, body: "{}" });
      assert.equal(r.status, 200, `connect-timeout-ms: ${timeout}: ${await r.text()}`);
    }
  } finally {
    session.close();
    await s.close();
  }
});

it("a deadline passed by the time the call begins (0, or shorter than its body took to come) is deadline_exceeded, and the call is not made, over Connect and gRPC", async () => {
  const s = await startServer();
  const session = http2.connect(s.url);
  try {
    const body = (name: string) => create(CreateRunnerRequestSchema, { name, provider: RunnerProvider.AWS_EC2 });
    const grpcStatus = (timeout: string, name: string) => grpcStatusWithin(session, s.token, "CreateRunner", timeout, toBinary(CreateRunnerRequestSchema, body(name)));
    for (const timeout of ["0m", "0S", "0n"]) assert.equal(await grpcStatus(timeout, `late-grpc-${timeout}`), String(Code.DeadlineExceeded), `grpc-timeout: ${timeout}`);
    const connect = (timeout: string, name: string) =>
      fetch(`${s.url}/gitpod.v1.RunnerService/CreateRunner`, { method: "POST", headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json", "connect-timeout-ms": timeout }, body: JSON.stringify({ name, provider: "RUNNER_PROVIDER_AWS_EC2" }) });
    for (const timeout of ["0", "00"]) {
      const r = await connect(timeout, `late-connect-${timeout}`);
      assert.deepEqual([r.status, ((await r.json()) as { code: string }).code], [504, "deadline_exceeded"], `connect-timeout-ms: ${timeout}`);
    }
    // A deadline that passes while the body is still coming: the call is not begun either.
    const slow = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/CreateRunner", "content-type": "application/json", "connect-timeout-ms": "20", authorization: `Bearer ${s.token}` });
    const slowBody = JSON.stringify({ name: "late-body", provider: "RUNNER_PROVIDER_AWS_EC2" });
    slow.write(slowBody.slice(0, 10));
    await new Promise((r) => setTimeout(r, 200));
    slow.end(slowBody.slice(10));
    const [slowStatus] = await Promise.all([new Promise((r) => slow.once("response", (h) => r(h[":status"]))), slow.resume()]);
    assert.equal(slowStatus, 504);
    // None of them was made; a call within its deadline is served.
    assert.equal((await connect("10000", "in-time")).status, 200);
    const names = ((await call(s, "gitpod.v1.RunnerService/ListRunners", {})).body.runners as { name: string }[]).map((r) => r.name);
    assert.deepEqual(names, ["in-time"]);
    assert.equal(s.logs.filter((l) => l.includes('"code":"deadline_exceeded"')).length, 6);
  } finally {
    session.close();
    await s.close();
  }
});

it("with a deadline of 0, a bad or missing token is still unauthenticated and a rate limit still resource_exhausted with its wait, each logged as before", async () => {
  const s = await startServer({ rateLimit: { perSecond: 0.001, burst: 1 } });
  try {
    const list = (authorization: string | undefined) =>
      fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", "connect-timeout-ms": "0", ...(authorization ? { authorization } : {}) }, body: "{}" });
    for (const authorization of [undefined, "Bearer scmapi_not-a-token"]) {
      const r = await list(authorization);
      assert.deepEqual([r.status, r.headers.get("x-should-retry"), ((await r.json()) as { code: string }).code], [401, "false", "unauthenticated"], String(authorization));
    }
    assert.ok(s.logs.some((l) => l.includes('"msg":"authentication refused"')));
    // The one call the burst allows meets its deadline; the next meets the limit.
    assert.equal((await list(`Bearer ${s.token}`)).status, 504);
    const limited = await list(`Bearer ${s.token}`);
    assert.deepEqual([limited.status, ((await limited.json()) as { code: string }).code], [429, "resource_exhausted"]);
    assert.ok(Number(limited.headers.get("retry-after-ms")) > 0);
  } finally {
    await s.close();
  }
});

it("a slip of two letters is answered with the method meant, one of three is not; a gRPC content type on a GET is no gRPC call (404)", async () => {
  const s = await startServer();
  try {
    const said = async (method: string) => {
      const r = await call(s, method, {});
      assert.equal(r.status, 501);
      return r.body.message as string;
    };
    const api = "is not implemented by this service, which serves the SCM-integration part of the gitpod.v1 API";
    // ListRunners less its "e", and "s" for "z": two edits.
    assert.equal(await said("gitpod.v1.RunnerService/ListRunnrz"), `gitpod.v1.RunnerService/ListRunnrz ${api}; did you mean gitpod.v1.RunnerService/ListRunners?`);
    // Less its "i" as well: three.
    assert.equal(await said("gitpod.v1.RunnerService/LstRunnrz"), `gitpod.v1.RunnerService/LstRunnrz ${api}`);
    // gRPC and gRPC-Web calls are POSTs: any other method on a path no method has stays a bare 404.
    for (const contentType of ["application/grpc-web+proto", "application/grpc"]) {
      const r = await fetch(`${s.url}/grpc.health.v1.Health/Watch`, { headers: { "content-type": contentType } });
      assert.deepEqual([r.status, r.headers.get("grpc-status")], [404, null], contentType);
    }
  } finally {
    await s.close();
  }
});
