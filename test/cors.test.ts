import assert from "node:assert/strict";
import http2 from "node:http2";
import { it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import { loadConfig } from "../src/config.js";
import { startServer } from "./harness.js";

const APP = "https://app.example.test";

/** A preflight as a browser sends it before a cross-origin call with a token. */
const preflight = (url: string, origin: string) =>
  fetch(`${url}/gitpod.v1.RunnerService/ListRunners`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type, connect-protocol-version" },
  });

it("with CORS_ALLOWED_ORIGINS, pages of those origins may call from a browser: preflights are answered, answers and errors carry what the browser needs", async () => {
  const s = await startServer({ corsOrigins: [APP], rateLimit: { perSecond: 0.001, burst: 3 } });
  try {
    const pre = await preflight(s.url, APP);
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), APP);
    assert.equal(pre.headers.get("access-control-allow-methods"), "POST", "no method here takes the Connect protocol's GET");
    const allowed = (pre.headers.get("access-control-allow-headers") ?? "").toLowerCase().split(/,\s*/);
    for (const h of ["authorization", "content-type", "connect-protocol-version", "idempotency-key", "x-grpc-web", "grpc-timeout"]) assert.ok(allowed.includes(h), h);
    assert.equal(pre.headers.get("access-control-max-age"), "7200");
    // Whatever else the page's client sends is allowed too: the official SDK sends its
    // X-Stainless-* headers on every call.
    const sdk = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, {
      method: "OPTIONS",
      headers: { origin: APP, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type,x-stainless-retry-count,x-stainless-timeout,traceparent" },
    });
    const sdkAllowed = (sdk.headers.get("access-control-allow-headers") ?? "").toLowerCase().split(/,\s*/);
    for (const h of ["x-stainless-retry-count", "x-stainless-timeout", "traceparent", "idempotency-key"]) assert.ok(sdkAllowed.includes(h), h);
    assert.equal(pre.headers.get("access-control-allow-credentials"), null, "tokens are headers, not cookies");
    assert.match(pre.headers.get("vary") ?? "", /Origin/);

    // A gRPC-Web call, as a web app makes it, and what its answer shows the page.
    const transport = createGrpcWebTransport({ baseUrl: s.url, httpVersion: "1.1" });
    const client = createClient(RunnerService, transport);
    const seen: Headers[] = [];
    const onHeader = (h: Headers) => seen.push(h);
    await client.listRunners({}, { headers: { origin: APP, authorization: `Bearer ${s.token}` }, onHeader });
    assert.equal(seen[0]!.get("access-control-allow-origin"), APP);
    const exposed = (seen[0]!.get("access-control-expose-headers") ?? "").toLowerCase().split(/,\s*/);
    for (const h of ["grpc-status", "grpc-message", "retry-after-ms", "x-request-id", "x-should-retry"]) assert.ok(exposed.includes(h), h);
    assert.equal(seen[0]!.get("vary"), "Origin");
    // Refusals too, or the page sees a network error instead of the code: a token refused,
    // and the rate limit with the wait the page must read.
    for (const [headers, code] of [
      [{ origin: APP, authorization: "Bearer scmapi_not-a-token" }, Code.Unauthenticated],
      [{ origin: APP, authorization: `Bearer ${s.token}` }, Code.ResourceExhausted],
    ] as const) {
      let refused: unknown;
      for (let i = 0; i < 5 && refused === undefined; i++) {
        await client.listRunners({}, { headers }).catch((err) => (refused = err));
      }
      const err = ConnectError.from(refused);
      assert.equal(err.code, code);
      // An error's metadata holds the answer's headers.
      assert.equal(err.metadata.get("access-control-allow-origin"), APP, Code[code]);
    }
    const limited = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, {
      method: "POST",
      headers: { origin: APP, authorization: `Bearer ${s.token}`, "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get("access-control-allow-origin"), APP);
    assert.ok(limited.headers.get("retry-after-ms"));

    // gRPC-Web over HTTP/2 (as browsers speak to an HTTPS service) for a method not served:
    // answered in headers alone, which carry what the page needs too.
    const h2 = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      const session = http2.connect(s.url);
      session.on("error", reject);
      const req = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunner", origin: APP, "content-type": "application/grpc-web+proto" });
      req.on("response", (h) => resolve(h));
      req.on("error", reject);
      req.on("close", () => session.close());
      req.end(Buffer.alloc(5));
      req.resume();
    });
    assert.equal(h2["grpc-status"], "12");
    assert.equal(h2["access-control-allow-origin"], APP);
    assert.match(String(h2["access-control-expose-headers"]), /Grpc-Status/i);
    assert.match(String(h2["x-request-id"]), /^[0-9a-f-]{36}$/);

    // Another origin gets nothing that would let a browser hand it the answer.
    const other = await preflight(s.url, "https://evil.example.test");
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    const direct = await fetch(`${s.url}/healthz`, { headers: { origin: "https://evil.example.test" } });
    assert.equal(direct.headers.get("access-control-allow-origin"), null);
    assert.ok(s.logs.some((l) => l.includes('"http_status":204')), "preflights are logged as requests");
  } finally {
    await s.close();
  }
});

it("without CORS_ALLOWED_ORIGINS no browser page of another origin may call; with * any may", async () => {
  const off = await startServer();
  try {
    const pre = await preflight(off.url, APP);
    assert.notEqual(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), null);
    const res = await fetch(`${off.url}/gitpod.v1.RunnerService/ListRunners`, {
      method: "POST",
      headers: { origin: APP, authorization: `Bearer ${off.token}`, "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
  } finally {
    await off.close();
  }
  const any = await startServer({ corsOrigins: "*" });
  try {
    const pre = await preflight(any.url, "http://localhost:5173");
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), "*");
  } finally {
    await any.close();
  }
});

it("CORS_ALLOWED_ORIGINS takes origins as browsers send them, or * alone", () => {
  assert.equal(loadConfig({}).corsOrigins.length, 0);
  assert.equal(loadConfig({ CORS_ALLOWED_ORIGINS: " * " }).corsOrigins, "*");
  assert.deepEqual(loadConfig({ CORS_ALLOWED_ORIGINS: "HTTPS://App.Example.com:443, http://localhost:5173," }).corsOrigins, ["https://app.example.com", "http://localhost:5173"]);
  for (const bad of ["app.example.com", "https://app.example.com/", "https://app.example.com/x", "ftp://app.example.com", "*,https://a.example", "https://a.example?x=1"]) {
    assert.throws(() => loadConfig({ CORS_ALLOWED_ORIGINS: bad }), /^ConfigError: CORS_ALLOWED_ORIGINS: ".*" is not an origin: write scheme:\/\/host\[:port\]/, bad);
  }
  assert.throws(() => loadConfig({ CORS_ALLOWED_ORIGINS: "https://user:pw@a.example" }), (e: Error) => e.message.includes("a value holding an '@'") && !e.message.includes("pw"));
});

// What a preflight asks for is echoed only when it is a short list of header names.
it("a preflight asking for malformed or overlong header names is answered with the service's own list", async () => {
  const s = await startServer({ corsOrigins: [APP] });
  try {
    const preflight = (asked?: string) =>
      fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, {
        method: "OPTIONS",
        headers: { origin: APP, "access-control-request-method": "POST", ...(asked === undefined ? {} : { "access-control-request-headers": asked }) },
      });
    const own = (await preflight()).headers.get("access-control-allow-headers");
    assert.ok(own?.includes("Authorization"), `the service's own list: ${own}`);
    for (const asked of ["authorization;x=1", "authorization, (x)", `x-${"a".repeat(2100)}`]) {
      const r = await preflight(asked);
      assert.equal(r.status, 204);
      assert.equal(r.headers.get("access-control-allow-headers"), own, asked.slice(0, 40));
    }
    const fine = await preflight("x-custom-one, x-custom-two");
    assert.equal(fine.headers.get("access-control-allow-headers"), `${own}, x-custom-one, x-custom-two`);
  } finally {
    await s.close();
  }
});
