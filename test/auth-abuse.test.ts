import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import { newId } from "../src/crypto/ids.js";
import { hashToken } from "../src/crypto/tokens.js";
import { createApiToken, revokeApiToken } from "../src/services/accounts.js";
import { call, createRunner, signUp, startServer, type TestServer } from "./harness.js";
import { FLAG, FRAME, frame, headerFrames, literal, RawH2 } from "./corpus/raw-h2.js";

const LIST_RUNNERS = "gitpod.v1.RunnerService/ListRunners";
const SIGNUP = "gitpod.v1.RunnerInteractionService/Signup";

/** A Connect JSON call with the Authorization header exactly as given (or none). */
async function rawAuth(s: TestServer, path: string, authorization: string | null, body: unknown = {}) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (authorization !== null) headers.authorization = authorization;
  const res = await fetch(`${s.url}/${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as { code?: string; message?: string } };
}

/** The same, over HTTP/1.1 by node:http, which sends the header's bytes as given (fetch trims them). */
function http1Auth(s: TestServer, path: string, authorization: string | string[]): Promise<{ status: number; code?: string; reason?: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(s.url);
    const req = http.request(
      { host: url.hostname, port: url.port, method: "POST", path: `/${path}`, headers: ["host", url.host, "content-type", "application/json", ...[authorization].flat().flatMap((a) => ["authorization", a])] },
      (res) => answer(res, Number(res.statusCode), res.headers["x-request-id"] as string, s, resolve),
    );
    req.on("error", reject);
    req.end("{}");
  });
}

/** The same, on a cleartext HTTP/2 session by node:http2, which also sends the bytes as given. */
function http2Auth(s: TestServer, session: http2.ClientHttp2Session, path: string, authorization: string | string[]): Promise<{ status: number; code?: string; reason?: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": "POST", ":path": `/${path}`, "content-type": "application/json", authorization } as unknown as http2.OutgoingHttpHeaders);
    stream.on("response", (headers) => answer(stream, Number(headers[":status"]), headers["x-request-id"] as string, s, resolve));
    stream.on("error", reject);
    stream.end("{}");
  });
}

/**
 * The same on a raw HTTP/2 connection, which sends the fields exactly as given (node's own
 * client will not send one twice); the status is read from the request's log line.
 */
async function rawH2Auth(s: TestServer, raw: RawH2, streamId: number, path: string, authorization: string[]): Promise<{ status: number; code?: string; reason?: string }> {
  const requestId = `raw-h2-${streamId}`;
  const block = Buffer.concat([
    literal(":method", "POST"),
    literal(":scheme", "http"),
    literal(":path", `/${path}`),
    literal(":authority", "127.0.0.1"),
    literal("content-type", "application/json"),
    literal("x-request-id", requestId),
    ...authorization.map((a) => literal("authorization", a)),
  ]);
  raw.send(headerFrames(streamId, block));
  raw.send(frame(FRAME.DATA, FLAG.END_STREAM, streamId, Buffer.from("{}")));
  const logged = (msg: string) => s.logs.find((l) => l.includes(`"msg":"${msg}"`) && l.includes(`"request_id":"${requestId}"`));
  await raw.until(() => raw.data.has(streamId) && logged("request") !== undefined);
  const line = logged("authentication refused");
  return {
    status: (JSON.parse(logged("request")!) as { http_status: number }).http_status,
    code: (JSON.parse(raw.data.get(streamId)!.toString()) as { code?: string }).code,
    reason: line && (JSON.parse(line) as { reason: string }).reason,
  };
}

/** Reads a Connect JSON answer; for a refusal, adds the reason the server logged for it. */
function answer(
  body: NodeJS.ReadableStream,
  status: number,
  requestId: string,
  s: TestServer,
  resolve: (a: { status: number; code?: string; reason?: string }) => void,
): void {
  let text = "";
  body.on("data", (d) => (text += d));
  body.on("end", () => {
    const line = s.logs.find((l) => l.includes('"msg":"authentication refused"') && l.includes(`"request_id":"${requestId}"`));
    resolve({ status, code: (JSON.parse(text) as { code?: string }).code, reason: line && (JSON.parse(line) as { reason: string }).reason });
  });
}

describe("abuse of authentication", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("refuses malformed, foreign-scheme, padded, oversized and unknown credentials as unauthenticated, logging no token", async () => {
    const real = s.token;
    const cases: [string, string | null][] = [
      ["no header", null],
      ["empty", ""],
      ["scheme only", "Bearer"],
      ["Basic scheme", `Basic ${Buffer.from(`user:${real}`).toString("base64")}`],
      ["Token scheme", `Token ${real}`],
      ["no scheme", real],
      ["two spaces", `Bearer  ${real}`],
      ["space inside the token", `Bearer ${real.slice(0, 20)} ${real.slice(20)}`],
      ["tab instead of space", `Bearer\t${real}`],
      ["token with a suffix", `Bearer ${real}x`],
      ["token cut short", `Bearer ${real.slice(0, -1)}`],
      ["one character changed", `Bearer ${real.slice(0, -1)}${real.endsWith("A") ? "B" : "A"}`],
      ["garbage", "Bearer %%%%\u00ff\u00fe"],
      ["well-formed but never issued", `Bearer scmapi_${"A".repeat(43)}`],
      ["oversized", `Bearer ${"a".repeat(4096)}`],
    ];
    for (const [name, header] of cases) {
      const r = await rawAuth(s, LIST_RUNNERS, header);
      assert.equal(r.status, 401, `${name}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, "unauthenticated", name);
      assert.ok(!(r.body.message ?? "").includes(real), `${name}: the message repeats the token`);
    }
    // 512 characters are looked at; one more is refused for its length before anything else.
    const at = async (length: number) => (await rawAuth(s, LIST_RUNNERS, `Bearer ${"a".repeat(length - 7)}`)).body.message;
    assert.equal(await at(512), "the bearer token is malformed");
    assert.equal(await at(513), "Authorization header is too long");
    const refusals = s.logs.filter((l) => l.includes('"msg":"authentication refused"'));
    assert.ok(refusals.length >= cases.length - 1, `one log line per refusal, got ${refusals.length}`);
    for (const line of refusals) {
      assert.ok(!line.includes(real.slice(7)), "a refusal log line carries the token");
      assert.match(line, /"reason":"[^"]+"/);
    }
    // Past Node's 16 KiB header limit the HTTP layer refuses before any of our code runs.
    const huge = await fetch(`${s.url}/${LIST_RUNNERS}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${"a".repeat(64 * 1024)}` },
      body: "{}",
    });
    assert.equal(huge.status, 431);
    // The real token still works after all that.
    assert.equal((await call(s, LIST_RUNNERS, {})).status, 200);
  });

  it("a header left empty is told what to send, as a missing one is, on both protocols", async () => {
    const missing = "missing Authorization header; send Authorization: Bearer <token>";
    for (const header of [null, ""]) {
      const r = await rawAuth(s, LIST_RUNNERS, header);
      assert.deepEqual([r.status, r.body.code, r.body.message], [401, "unauthenticated", missing], JSON.stringify(header));
    }
    assert.deepEqual(await http1Auth(s, LIST_RUNNERS, ""), { status: 401, code: "unauthenticated", reason: missing });
  });

  it("whitespace in the header: inside is refused on every protocol; around it is not part of the value", async () => {
    const real = s.token;
    const inside: [string, string][] = [
      ["two spaces", `Bearer  ${real}`],
      ["tab instead of space", `Bearer\t${real}`],
      ["space and tab", `Bearer \t${real}`],
      ["space inside the token", `Bearer ${real.slice(0, 20)} ${real.slice(20)}`],
      ["tab inside the token", `Bearer ${real.slice(0, 20)}\t${real.slice(20)}`],
    ];
    const around: [string, string][] = [
      ["leading space", ` Bearer ${real}`],
      ["trailing space", `Bearer ${real} `],
      ["leading and trailing tabs", `\tBearer ${real}\t`],
      ["spaces and tabs around", ` \t Bearer ${real} \t `],
    ];
    const connectH2 = createClient(RunnerService, createConnectTransport({ baseUrl: s.url, httpVersion: "2" }));
    // The error code, or null if the call passed.
    const viaConnect = async (authorization: string): Promise<Code | null> => {
      try {
        await connectH2.listRunners({}, { headers: { authorization } });
        return null;
      } catch (err) {
        return ConnectError.from(err).code;
      }
    };
    const session = http2.connect(s.url);
    try {
      for (const [name, header] of inside) {
        for (const r of [await http1Auth(s, LIST_RUNNERS, header), await http2Auth(s, session, LIST_RUNNERS, header)]) {
          assert.equal(r.status, 401, name);
          assert.equal(r.code, "unauthenticated", name);
          assert.equal(r.reason, "Authorization header must have the form: Bearer <token>", name);
        }
        assert.equal(await viaConnect(header), Code.Unauthenticated, `${name}, by connect-node over HTTP/2`);
      }
      for (const [name, header] of around) {
        // RFC 9110 5.5: whitespace around a field value is not part of it. Node's HTTP/1.1
        // parser drops it, and fetch-style clients (connect-node, the official SDK) never
        // send it, on either protocol.
        assert.equal((await http1Auth(s, LIST_RUNNERS, header)).status, 200, `${name} over HTTP/1.1`);
        assert.equal(await viaConnect(header), null, `${name}, by connect-node over HTTP/2`);
        // A client that does send it over HTTP/2 sends a malformed field (RFC 9113 8.2.1):
        // node's HTTP/2 layer discards the field before our code runs, so the call arrives
        // without credentials. Node 20 has no option to keep it (strictFieldWhitespaceValidation
        // came in later versions); should this start to pass, it must pass as on HTTP/1.1.
        const h2 = await http2Auth(s, session, LIST_RUNNERS, header);
        assert.deepEqual(h2, { status: 401, code: "unauthenticated", reason: "missing Authorization header; send Authorization: Bearer <token>" }, `${name} over HTTP/2`);
      }
    } finally {
      session.close();
    }
    for (const line of s.logs.filter((l) => l.includes('"msg":"authentication refused"'))) {
      assert.ok(!line.includes(real.slice("scmapi_".length)), "a refusal log line carries the token");
    }
  });

  it("the scheme is taken in any case, the token only as issued", async () => {
    // RFC 9110 11.1: an authentication scheme is case-insensitive.
    for (const scheme of ["bearer", "BEARER", "bEaReR"]) {
      const r = await rawAuth(s, LIST_RUNNERS, `${scheme} ${s.token}`);
      assert.equal(r.status, 200, `${scheme}: ${JSON.stringify(r.body)}`);
    }
    const upper = await rawAuth(s, LIST_RUNNERS, `Bearer ${s.token.toUpperCase()}`);
    assert.equal(upper.body.code, "unauthenticated");
  });

  it("more than one Authorization header is refused, whichever comes first", async () => {
    const other = createApiToken(s.db, "other").token;
    const raw = await RawH2.connect(Number(new URL(s.url).port));
    try {
      let streamId = 1;
      for (const pair of [[`Bearer ${s.token}`, `Bearer ${other}`], [`Bearer ${s.token}`, `Bearer ${s.token}`], [`Bearer ${s.token}`, "Basic eDp5"]]) {
        const answers = [await http1Auth(s, LIST_RUNNERS, pair), await rawH2Auth(s, raw, streamId, LIST_RUNNERS, pair)];
        streamId += 2;
        for (const r of answers) assert.deepEqual(r, { status: 401, code: "unauthenticated", reason: "more than one Authorization header; send exactly one" });
      }
      assert.deepEqual(await rawH2Auth(s, raw, streamId, LIST_RUNNERS, [`Bearer ${s.token}`]), { status: 200, code: undefined, reason: undefined }, "one field passes over HTTP/2");
    } finally {
      raw.destroy();
    }
    assert.equal((await http1Auth(s, LIST_RUNNERS, `Bearer ${s.token}`)).status, 200, "one header passes");
  });

  it("a revoked API token is refused at once; another token of the organization keeps working", async () => {
    const second = createApiToken(s.db, "acme");
    s.watch.noteToken(second.token);
    assert.equal((await call(s, LIST_RUNNERS, {}, second.token)).status, 200);
    revokeApiToken(s.db, second.id);
    const r = await call(s, LIST_RUNNERS, {}, second.token);
    assert.equal(r.status, 401);
    assert.equal(r.body.code, "unauthenticated");
    assert.equal((await call(s, LIST_RUNNERS, {})).status, 200);
  });

  it("a token revoked while a call's body is still coming is refused once the body is in", async () => {
    // The call is admitted when its headers arrive; a body that takes longer than a moment
    // has its token looked up again before the call goes on.
    const third = createApiToken(s.db, "acme");
    s.watch.noteToken(third.token);
    const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(`${s.url}/${LIST_RUNNERS}`, { method: "POST", headers: { authorization: `Bearer ${third.token}`, "content-type": "application/json" } }, (res) => {
        let text = "";
        res.on("data", (d) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode!, text }));
      });
      req.on("error", reject);
      req.write("{");
      setTimeout(() => {
        revokeApiToken(s.db, third.id);
        req.end("}");
      }, 2500); // well past the 1 s after which an admitted call's token is looked up again
    });
    const r = await answer;
    assert.equal(r.status, 401, r.text);
    assert.equal(JSON.parse(r.text).code, "unauthenticated");
  });

  it("a rotated runner token is refused; the new one works; neither works on admin calls", async () => {
    const { runnerId, runnerToken } = await createRunner(s, s.token, "rotating");
    await signUp(s, runnerToken);
    const rotated = await call(s, "gitpod.v1.RunnerService/CreateRunnerToken", { runnerId });
    assert.equal(rotated.status, 200);
    const fresh = rotated.body.accessToken as string;
    const old = await call(s, SIGNUP, { publicKey: Buffer.alloc(32, 7).toString("base64") }, runnerToken);
    assert.equal(old.body.code, "unauthenticated");
    await signUp(s, fresh);
    // On an admin call the replaced token is unknown; the live one is the wrong kind.
    assert.equal((await call(s, LIST_RUNNERS, {}, runnerToken)).body.code, "unauthenticated");
    const runnerOnAdmin = await call(s, LIST_RUNNERS, {}, fresh);
    assert.equal(runnerOnAdmin.body.code, "permission_denied");
    // And an API token is no runner.
    const apiOnRunner = await call(s, SIGNUP, { publicKey: Buffer.alloc(32, 9).toString("base64") });
    assert.equal(apiOnRunner.body.code, "permission_denied");
    // Both refusals are logged like any other, with the reason and without the token.
    for (const [r, token, procedure, reason] of [
      [runnerOnAdmin, fresh, `/${LIST_RUNNERS}`, /needs an API token/],
      [apiOnRunner, s.token, `/${SIGNUP}`, /needs the runner's own access token/],
    ] as const) {
      const id = r.headers.get("x-request-id")!;
      const lines = s.logs.filter((l) => l.includes(`"request_id":"${id}"`) && l.includes('"msg":"authentication refused"'));
      assert.equal(lines.length, 1, `one refusal line for ${procedure}`);
      const entry = JSON.parse(lines[0]!) as { level: string; procedure: string; reason: string };
      assert.equal(entry.level, "warn");
      assert.equal(entry.procedure, procedure);
      assert.match(entry.reason, reason);
      assert.ok(!lines[0]!.includes(token.slice(token.indexOf("_") + 1)), `the refusal of ${procedure} logs the token`);
    }
  });

  it("another organization's token sees nothing of acme's runners", async () => {
    const { runnerId } = await createRunner(s, s.token, "acme-only");
    const r = await call(s, "gitpod.v1.RunnerService/GetRunner", { runnerId }, s.otherToken);
    assert.equal(r.body.code, "not_found");
    const list = await call(s, LIST_RUNNERS, {}, s.otherToken);
    assert.ok(!JSON.stringify(list.body).includes(runnerId));
  });
});

describe("the leak watch every test server runs", () => {
  it("finds a client secret that a later request stores in plain text", async () => {
    const s = await startServer();
    s.watch.planted = true;
    const { runnerId, runnerToken } = await createRunner(s);
    await signUp(s, runnerToken);
    const secret = "planted-secret-0123456789";
    const created = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", {
      runnerId,
      scmId: "github",
      host: "github.com",
      oauthClientId: "app",
      oauthPlaintextClientSecret: secret,
    });
    assert.equal(created.status, 200);
    // A rename is stored as given: the secret now sits in the database and in responses.
    assert.equal((await call(s, "gitpod.v1.RunnerService/UpdateRunner", { runnerId, name: secret })).status, 200);
    await assert.rejects(s.close(), (err: Error) => /leaked/.test(err.message) && /client secret plan/.test(String((err as { actual?: unknown }).actual)));
  });

  it("finds, in its JSON-escaped form, a secret sent in a request that auth refused", async () => {
    const s = await startServer();
    s.watch.planted = true;
    const secret = 'planted "refused" secret, caf\u00e9';
    const refused = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", {
      runnerId: "0190a0a0-0000-7000-8000-000000000000", scmId: "github", host: "github.com", oauthClientId: "app", oauthPlaintextClientSecret: secret,
    }, "not-a-real-token");
    assert.equal(refused.body.code, "unauthenticated");
    s.logs.push(`${JSON.stringify({ msg: "oops", detail: secret })}\n`);
    await assert.rejects(s.close(), /leaked/);
  });

  it("finds a token written to the log", async () => {
    const s = await startServer();
    s.watch.planted = true;
    s.logs.push(`{"msg":"oops","authorization":"Bearer ${s.token}"}\n`);
    await assert.rejects(s.close(), /leaked/);
  });
});

describe("tokens", () => {
  // A token is 43 characters after its prefix, no more.
  it("a token with anything after its 43 characters is malformed, not looked up", async () => {
    const s = await startServer();
    try {
      for (const token of [`${s.token}x`, `${s.token}${s.token.slice(7)}`, `scmapi_${"A".repeat(44)}`]) {
        const r = await call(s, LIST_RUNNERS, {}, token);
        assert.equal(r.status, 401);
        assert.equal(r.body.message, "the bearer token is malformed");
      }
    } finally {
      await s.close();
    }
  });

  // Stored hashes are SHA-256 of the token; a database written by an
  // earlier release (or another process) keeps working only while that stays so.
  it("a token is stored as the SHA-256 of its text: one stored so by another writer authenticates", async () => {
    const token = `scmapi_${"Q".repeat(43)}`;
    const sha256 = createHash("sha256").update(token).digest();
    assert.equal(hashToken(token).toString("hex"), sha256.toString("hex"), "the stored hash is SHA-256");
    assert.equal(hashToken(token).toString("hex"), "b83a5f074e424ea62f5da901390769bb6375a38005b3c4772f1e0e39cf43b1af", "SHA-256, as sha256sum computes it");
    const s = await startServer();
    try {
      const orgId = s.db.$client.prepare("SELECT id FROM organizations WHERE name = 'acme'").pluck().get() as string;
      s.db.$client.prepare("INSERT INTO api_tokens (id, org_id, token_hash, created_at) VALUES (?, ?, ?, ?)").run(newId(Date.now()), orgId, sha256, Date.now());
      s.watch.noteToken(token);
      const r = await call(s, LIST_RUNNERS, {}, token);
      assert.equal(r.status, 200, JSON.stringify(r.body));
    } finally {
      await s.close();
    }
  });
});
