import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import http from "node:http";
import http2 from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import { brotliCompressSync, gzipSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { Gitpod } from "@gitpod/sdk";
import { ConfigError, loadConfig, type Config } from "../src/config.js";
import { hashToken } from "../src/crypto/tokens.js";
import { RateLimiter } from "../src/services/rate-limit.js";
import { bodyCharge } from "../src/transport/interceptors.js";
import { call, createRunner, startServer, type TestServer } from "./harness.js";

const LIST_RUNNERS = "gitpod.v1.RunnerService/ListRunners";
const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";

describe("per-token rate limit", () => {
  let s: TestServer;
  // A slow refill, so a burst's end is reached long before the bucket could fill again.
  before(async () => (s = await startServer({ rateLimit: { perSecond: 1, burst: 5 } })));
  after(() => s.close());

  it("past the burst a token gets resource_exhausted with retry-after; other tokens are unaffected", async () => {
    const answers = [];
    for (let i = 0; i < 12; i++) answers.push(await call(s, LIST_RUNNERS, {}));
    assert.deepEqual(answers.slice(0, 5).map((a) => a.status), [200, 200, 200, 200, 200], "the burst passes");
    const ok = answers.filter((a) => a.status === 200).length;
    const limited = answers.filter((a) => a.status === 429);
    assert.ok(limited.length >= 1, "twelve calls in a row outrun one call per second");
    assert.equal(ok + limited.length, 12);
    for (const a of limited) {
      assert.equal(a.body.code, "resource_exhausted");
      assert.match(a.body.message, /rate limit/);
      const ms = Number(a.headers.get("retry-after-ms"));
      assert.ok(ms > 0 && ms <= 1000, `retry-after-ms ${a.headers.get("retry-after-ms")}`);
      assert.equal(a.headers.get("retry-after"), "1");
      assert.notEqual(a.headers.get("x-should-retry"), "false");
    }
    // Another organization's token has its own bucket.
    assert.equal((await call(s, LIST_RUNNERS, {}, s.otherToken)).status, 200);
    // A runner's token too, even though acme's API token is spent.
    const { runnerToken } = await createRunner(s, s.otherToken, "other-runner");
    const signup = await call(s, "gitpod.v1.RunnerInteractionService/Signup", { publicKey: Buffer.alloc(32, 3).toString("base64") }, runnerToken);
    assert.equal(signup.status, 200, JSON.stringify(signup.body));
    // Refusals are logged with their code, and whose token it was (its row id, never the token).
    const refused = s.logs.filter((l) => l.includes('"msg":"request"') && l.includes('"code":"resource_exhausted"')).map((l) => JSON.parse(l));
    assert.ok(refused.length >= 1);
    const tokenId = s.db.$client.prepare("SELECT id FROM api_tokens WHERE token_hash = ?").pluck().get(hashToken(s.token));
    assert.ok(refused.every((l) => l.token_id === tokenId && typeof l.org_id === "string"), JSON.stringify(refused[0]));
  });

  it("a runner's access tokens share its bucket: one from CreateRunnerToken goes on with its predecessor's", async () => {
    // A refill so slow that no call here waits long enough for it, however slow the machine.
    const fresh = await startServer({ rateLimit: { perSecond: 0.001, burst: 2 } });
    try {
      const { runnerId, runnerToken } = await createRunner(fresh, fresh.otherToken, "rotating");
      const signup = (token: string) => call(fresh, "gitpod.v1.RunnerInteractionService/Signup", { publicKey: Buffer.alloc(32, 5).toString("base64") }, token);
      assert.deepEqual([(await signup(runnerToken)).status, (await signup(runnerToken)).status], [200, 200], "the burst");
      const rotated = await call(fresh, "gitpod.v1.RunnerService/CreateRunnerToken", { runnerId }, fresh.otherToken);
      assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
      const next = await signup(rotated.body.accessToken);
      assert.equal(next.status, 429, "the new token finds the runner's bucket spent");
      assert.equal(next.body.code, "resource_exhausted");
    } finally {
      await fresh.close();
    }
  });

  it("paths that are no call of this service (404, 501, odd names) take nothing from the limit", async () => {
    const fresh = await startServer({ rateLimit: { perSecond: 0.001, burst: 2 } }); // no refill, however slow the machine
    try {
      for (const path of ["gitpod.v1.RunnerService/ParseContextURL", "gitpod.v1.RunnerService/NoSuchMethod", "constructor/X", "__proto__/X", "toString/X", `${LIST_RUNNERS}/extra`]) {
        const r = await fetch(`${fresh.url}/${path}`, { method: "POST", headers: { authorization: `Bearer ${fresh.token}`, "content-type": "application/json" }, body: "{}" });
        assert.ok(r.status === 404 || r.status === 501, `${path}: ${r.status}`);
      }
      // A query string does not hide a call: it is counted (and admitted) like any other.
      assert.equal((await fetch(`${fresh.url}/${LIST_RUNNERS}?x=1`, { method: "POST", headers: { authorization: `Bearer ${fresh.token}`, "content-type": "application/json" }, body: "{}" })).status, 200);
      assert.equal((await call(fresh, LIST_RUNNERS, {})).status, 200, "the burst of two was left whole by the paths above");
      assert.equal((await call(fresh, LIST_RUNNERS, {})).status, 429);
    } finally {
      await fresh.close();
    }
  });

  it("calls refused for the wrong kind of token count against the token too", async () => {
    const { runnerToken } = await createRunner(s, s.otherToken, "wrong-kind");
    const codes = [];
    for (let i = 0; i < 12; i++) codes.push((await call(s, LIST_RUNNERS, {}, runnerToken)).body.code);
    assert.deepEqual(codes.slice(0, 5), Array(5).fill("permission_denied"));
    assert.ok(codes.includes("resource_exhausted"), codes.join(", "));
  });
});

describe("per-token limit on request body bytes", () => {
  // 64 KiB at once, then 1 KiB a second: a body that runs a token into debt keeps its next
  // calls out for minutes, which no test waits for.
  const LIMIT = { perSecond: 1024, burst: 64 * 1024 };
  /** A ListRunners request with `size` bytes of an unknown field, which JSON readers ignore. */
  const padded = (size: number) => Buffer.from(JSON.stringify({ pagination: { pageSize: 1 }, padding: "x".repeat(size) }));
  const post = async (s: TestServer, body: Buffer, headers: Record<string, string> = {}, token = s.token) => {
    const res = await fetch(`${s.url}/${LIST_RUNNERS}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}`, ...headers }, body });
    return { status: res.status, body: (await res.json()) as { code?: string; message?: string }, retryAfterMs: Number(res.headers.get("retry-after-ms")) };
  };

  it("a body is charged as it inflates: a small compressed one can run its token into debt, and the next call waits it out", async () => {
    for (const [coding, compress] of [["gzip", gzipSync], ["br", brotliCompressSync]] as const) {
      const s = await startServer({ bodyRateLimit: LIMIT });
      try {
        const inflated = padded(200 * 1024);
        const sent = compress(inflated);
        assert.ok(sent.length < 2048, `${coding}: ${sent.length} bytes on the wire`);
        const first = await post(s, sent, { "content-encoding": coding });
        assert.equal(first.status, 200, `${coding}: the bucket owed nothing, so the call passes: ${JSON.stringify(first.body)}`);
        const second = await post(s, padded(10), {});
        assert.equal(second.status, 429, coding);
        assert.equal(second.body.code, "resource_exhausted");
        assert.match(second.body.message!, /byte rate limit/);
        // Owed: what it inflated to less the 64 KiB burst, at 1 KiB a second.
        const owed = ((inflated.length - LIMIT.burst) * 1000) / LIMIT.perSecond;
        assert.ok(Math.abs(second.retryAfterMs - owed) < 2000, `${coding}: retry-after-ms ${second.retryAfterMs}, about ${owed} expected`);
        // Other tokens have buckets of their own.
        assert.equal((await post(s, padded(10), {}, s.otherToken)).status, 200);
      } finally {
        await s.close();
      }
    }
  });

  it("a compressed body that fails to inflate is charged for what came out of it: up to the size limit, nothing much for one that is no such stream", async () => {
    // Before, a refused inflation was never charged: 27 bytes of brotli inflating past 1 MiB
    // cost the service milliseconds of CPU each, as often as the call limit allowed.
    const inflated = padded(100 * 1024);
    const broken = gzipSync(inflated);
    broken[broken.length - 8]! ^= 1; // its CRC, checked once all of it has come out
    const cases = [
      // [what, body, coding, code, bytes owed at least, at most]
      ["too large", brotliCompressSync(padded(2 * 1024 * 1024)), "br", "resource_exhausted", 1024 * 1024, 1024 * 1024 + 64 * 1024],
      // (Less its last piece, at most 16 KiB, which the failing check at the end keeps back.)
      ["broken at its end", broken, "gzip", "invalid_argument", inflated.length - 16 * 1024, inflated.length],
    ] as const;
    for (const [what, body, coding, code, least, most] of cases) {
      const s = await startServer({ bodyRateLimit: LIMIT });
      try {
        const first = await post(s, body, { "content-encoding": coding });
        assert.equal(first.body.code, code, `${what}: ${JSON.stringify(first.body)}`);
        assert.doesNotMatch(first.body.message!, /byte rate limit/, what);
        const second = await post(s, padded(10), {});
        assert.equal(second.status, 429, `${what}: the token owes what came out, less its burst`);
        assert.match(second.body.message!, /byte rate limit/);
        const owed = (bytes: number) => ((bytes - LIMIT.burst) * 1000) / LIMIT.perSecond;
        assert.ok(second.retryAfterMs > owed(least) - 2000 && second.retryAfterMs < owed(most) + 2000, `${what}: retry-after-ms ${second.retryAfterMs}, ${owed(least)} to ${owed(most)} expected`);
      } finally {
        await s.close();
      }
    }
    // A body that is no gzip stream at all produced nothing: a client's mistake costs it no wait.
    const s = await startServer({ bodyRateLimit: LIMIT });
    try {
      for (let i = 0; i < 3; i++) assert.equal((await post(s, Buffer.from("{}"), { "content-encoding": "gzip" })).body.code, "invalid_argument");
      assert.equal((await post(s, padded(10), {})).status, 200);
    } finally {
      await s.close();
    }
  });

  it("a body in many small pieces is charged at least 256 bytes a piece", async () => {
    const body = padded(10 * 1024);
    /** POSTs `body` over HTTP/1.1 chunked, `size` bytes a write; answers the status. */
    const inPieces = (s: TestServer, size: number) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(`${s.url}/${LIST_RUNNERS}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}`, "transfer-encoding": "chunked" }, agent: false }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode!));
        });
        req.on("error", reject);
        for (let at = 0; at < body.length; at += size) req.write(body.subarray(at, at + size));
        req.end();
      });
    const s = await startServer({ bodyRateLimit: LIMIT });
    try {
      // About 520 pieces of 20 bytes: charged about 133,000 bytes, past the 64 KiB burst.
      assert.equal(await inPieces(s, 20), 200);
      const refused = await post(s, padded(10));
      assert.equal(refused.status, 429);
      const owed = ((Math.ceil(body.length / 20) * 256 - LIMIT.burst) * 1000) / LIMIT.perSecond;
      assert.ok(Math.abs(refused.retryAfterMs - owed) < 3000, `retry-after-ms ${refused.retryAfterMs}, about ${owed} expected`);
    } finally {
      await s.close();
    }
    // The same body in pieces of 1 KiB is charged its bytes: room is left.
    const t = await startServer({ bodyRateLimit: LIMIT });
    try {
      assert.equal(await inPieces(t, 1024), 200);
      assert.equal((await post(t, padded(10))).status, 200);
    } finally {
      await t.close();
    }
  });

  it("gRPC-Web: what a body's pieces cost past their bytes is charged once, however many frames it is charged in", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    try {
      // A ListRunners message padded to about 10 KB, then an empty trailer frame, charged on its own;
      // written chunked in 50-byte pieces, about 200 of them: about 51,000 bytes charged, within the 64 KiB burst.
      const padding = 10_000;
      const message = Buffer.concat([Buffer.from([0x9a, 0x06]), varint(padding), Buffer.alloc(padding, 0x61)]);
      const body = Buffer.concat([frame(message, 0), frame(Buffer.alloc(0), 0x80)]);
      const status = await new Promise<string | undefined>((resolve, reject) => {
        const req = http.request(`${s.url}/${LIST_RUNNERS}`, { method: "POST", agent: false, headers: { "content-type": "application/grpc-web+proto", authorization: `Bearer ${s.token}`, "transfer-encoding": "chunked" } }, (res) => {
          let text = "";
          res.on("data", (d: Buffer) => (text += d.toString("latin1")));
          res.on("end", () => resolve((res.headers["grpc-status"] as string | undefined) ?? /grpc-status:\s*(\d+)/.exec(text)?.[1]));
        });
        req.on("error", reject);
        for (let at = 0; at < body.length; at += 50) req.write(body.subarray(at, at + 50));
        req.end();
      });
      assert.equal(status, "0");
      // Charged the pieces' cost twice (once with the message, again with the trailer frame), the token would owe.
      const next = await post(s, padded(10));
      assert.equal(next.status, 200, `the token was charged about ${Math.ceil(body.length / 50) * 256} bytes: ${JSON.stringify(next.body)}`);
    } finally {
      await s.close();
    }
  });

  it("uncompressed bodies are charged once they have all come, sized or streamed", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    try {
      // Streamed in chunks with no Content-Length, as connect-es sends bodies.
      const body = padded(100 * 1024);
      const streamed = new ReadableStream({
        start(c) {
          for (let at = 0; at < body.length; at += 16 * 1024) c.enqueue(body.subarray(at, at + 16 * 1024));
          c.close();
        },
      });
      const res = await fetch(`${s.url}/${LIST_RUNNERS}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: streamed, duplex: "half" } as RequestInit);
      assert.equal(res.status, 200, await res.text());
      const refused = await post(s, padded(10));
      assert.equal(refused.body.code, "resource_exhausted");
      assert.ok(refused.retryAfterMs > 30_000, `retry-after-ms ${refused.retryAfterMs}`);
    } finally {
      await s.close();
    }
    // Bodies within the burst pass one after another.
    const t = await startServer({ bodyRateLimit: LIMIT });
    try {
      for (let i = 0; i < 5; i++) assert.equal((await post(t, padded(8 * 1024))).status, 200, `call ${i}`);
    } finally {
      await t.close();
    }
  });

  it("a body of exactly the size limit is read, and charged in full, sized or streamed", async () => {
    // 1 MiB to the byte: with its Content-Length, and in 64 KiB chunks without one, as connect-es streams a body.
    const body = Buffer.from(`{"padding":"${"p".repeat(1024 * 1024 - '{"padding":""}'.length)}"}`);
    assert.equal(body.length, 1024 * 1024);
    const streamed = () =>
      new ReadableStream({
        start(c) {
          for (let at = 0; at < body.length; at += 64 * 1024) c.enqueue(body.subarray(at, at + 64 * 1024));
          c.close();
        },
      });
    for (const [how, init] of [
      ["sized", { body }],
      ["streamed", { body: streamed(), duplex: "half" }],
    ] as const) {
      const s = await startServer({ bodyRateLimit: LIMIT });
      try {
        const res = await fetch(`${s.url}/${LIST_RUNNERS}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, ...init } as RequestInit);
        assert.equal(res.status, 200, `${how}: ${await res.text()}`);
        const refused = await post(s, padded(10));
        assert.equal(refused.status, 429, `${how}: the token owes what the body held past its burst`);
        assert.match(refused.body.message!, /byte rate limit/);
        const owed = ((body.length - LIMIT.burst) * 1000) / LIMIT.perSecond;
        assert.ok(Math.abs(refused.retryAfterMs - owed) < 3000, `${how}: retry-after-ms ${refused.retryAfterMs}, about ${owed} expected`);
      } finally {
        await s.close();
      }
    }
  });

  it("an organization's runners share a byte bucket, for what their bodies hold past 4 KiB: runners minted by one token do not multiply its bytes", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    try {
      // ListRunnerSCMIntegrations with `size` bytes of an unknown field, for a runner.
      const listOwn = (runnerId: string, runnerToken: string, size: number) =>
        fetch(`${s.url}/gitpod.v1.RunnerInteractionService/ListRunnerSCMIntegrations`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${runnerToken}` },
          body: JSON.stringify({ runnerId, padding: "x".repeat(size) }),
        }).then(async (res) => ({ status: res.status, body: (await res.json()) as { code?: string; message?: string } }));
      const runners = [];
      for (let i = 0; i < 3; i++) runners.push(await createRunner(s, s.token, `runner-${i}`));
      // Each runner's own bucket holds the 64 KiB burst; the first runner's 40 KiB and the
      // second's 40 KiB (36 KiB each past the free 4) run the shared one into debt (the body
      // that does so still passes).
      assert.equal((await listOwn(runners[0]!.runnerId, runners[0]!.runnerToken, 40 * 1024)).status, 200);
      assert.equal((await listOwn(runners[1]!.runnerId, runners[1]!.runnerToken, 40 * 1024)).status, 200);
      // The third runner owes nothing of its own: its small calls pass, as a fleet's do, and a
      // large body is held off by what they share.
      assert.equal((await listOwn(runners[2]!.runnerId, runners[2]!.runnerToken, 10)).status, 200);
      const third = await listOwn(runners[2]!.runnerId, runners[2]!.runnerToken, 8 * 1024);
      assert.equal(third.status, 429, JSON.stringify(third.body));
      assert.match(third.body.message!, /^the request bodies of this organization's runners are over the byte rate limit they share; retry in \d+ ms$/);
      // API tokens are not in it, and neither are another organization's runners.
      assert.equal((await post(s, padded(10))).status, 200);
      const other = await createRunner(s, s.otherToken, "other-org-runner");
      assert.equal((await listOwn(other.runnerId, other.runnerToken, 10)).status, 200);
    } finally {
      await s.close();
    }
  });

  it("gRPC: compressed messages are inflated before connect-node reads them, and charged as inflated", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    const session = http2.connect(s.url);
    try {
      const { runnerId, runnerToken } = await createRunner(s, s.token, "grpc-bytes");
      const grpc = (message: Buffer, compressed: boolean) => grpcCall(session, "/gitpod.v1.RunnerInteractionService/ListRunnerSCMIntegrations", runnerToken, "gzip", frame(message, compressed ? 1 : 0));
      // runner_id (field 2), then field 99 as length-delimited bytes: unknown to the request, skipped by the reader.
      const runner = Buffer.concat([Buffer.from([0x12, runnerId.length]), Buffer.from(runnerId)]);
      const request = (padding: number) => Buffer.concat([runner, Buffer.from([0x9a, 0x06]), varint(padding), Buffer.alloc(padding, 0x61)]);
      const first = await grpc(gzipSync(request(100 * 1024)), true);
      assert.equal(first.status, "0", `a compressed message is read as sent: ${first.message}`);
      const second = await grpc(request(0), false);
      assert.equal(second.status, "8", `resource_exhausted: ${second.message}`);
      assert.match(second.message, /byte rate limit/);
    } finally {
      session.close();
      await s.close();
    }
  });

  it("bodies sent side by side on admissions made together: only the one that runs the token into debt is read on", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    const session = http2.connect(s.url);
    try {
      // Ten calls admitted at once (their headers first), then their bodies, each over the burst.
      const streams = Array.from({ length: 10 }, () => {
        const req = session.request({ ":method": "POST", ":path": `/${LIST_RUNNERS}`, "content-type": "application/json", authorization: `Bearer ${s.token}` });
        const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
          let status = 0;
          let body = "";
          req.on("response", (h) => (status = Number(h[":status"])));
          req.on("data", (d) => (body += d));
          req.on("end", () => resolve({ status, body }));
          req.on("error", reject);
        });
        return { req, answer };
      });
      await sleep(200);
      for (const { req } of streams) req.end(padded(200 * 1024));
      const answers = await Promise.all(streams.map((st) => st.answer));
      const statuses = answers.map((a) => a.status).sort();
      assert.deepEqual(statuses, [200, ...Array(9).fill(429)], JSON.stringify(answers.map((a) => a.body.slice(0, 120))));
      for (const a of answers.filter((x) => x.status === 429)) assert.match(JSON.parse(a.body).message, /byte rate limit/);
    } finally {
      session.close();
      await s.close();
    }
  });

  it("bodies paid for slowly side by side are charged as they are parsed, not as they came: only one goes on", async () => {
    // 16 KiB at once, 64 KiB a second. Five bodies of 30 KiB come in 2 KiB pieces, 40 KiB a
    // second in all: charged as they came, the bucket would never have run dry, and all five
    // would have been parsed together once their last bytes came.
    const s = await startServer({ bodyRateLimit: { perSecond: 64 * 1024, burst: 16 * 1024 } });
    const session = http2.connect(s.url);
    try {
      const body = padded(30 * 1024);
      const streams = Array.from({ length: 5 }, () => {
        const req = session.request({ ":method": "POST", ":path": `/${LIST_RUNNERS}`, "content-type": "application/json", authorization: `Bearer ${s.token}` });
        const answer = new Promise<number>((resolve, reject) => {
          let status = 0;
          req.on("response", (h) => (status = Number(h[":status"])));
          req.on("end", () => resolve(status));
          req.on("error", reject);
          req.resume();
        });
        return { req, answer };
      });
      for (let at = 0; at < body.length - 1; at += 2048) {
        for (const { req } of streams) req.write(body.subarray(at, Math.min(at + 2048, body.length - 1)));
        await sleep(250);
      }
      for (const { req } of streams) req.end(body.subarray(body.length - 1));
      const statuses = (await Promise.all(streams.map((st) => st.answer))).sort();
      assert.deepEqual(statuses, [200, 429, 429, 429, 429]);
    } finally {
      session.close();
      await s.close();
    }
  });

  it("gRPC-Web: frames with the trailer flag are skipped, never inflated but charged, and the messages after them read as sent", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    try {
      const { runnerId, runnerToken } = await createRunner(s, s.token, "web-trailers");
      const request = Buffer.concat([Buffer.from([0x12, runnerId.length]), Buffer.from(runnerId)]);
      const web = async (body: Buffer) => {
        const res = await fetch(`${s.url}/gitpod.v1.RunnerInteractionService/ListRunnerSCMIntegrations`, {
          method: "POST",
          headers: { "content-type": "application/grpc-web+proto", "grpc-encoding": "br", authorization: `Bearer ${runnerToken}` },
          body,
        });
        const text = Buffer.from(await res.arrayBuffer()).toString("latin1");
        return res.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(text)?.[1];
      };
      // Two empty trailer frames, then the message, compressed.
      assert.equal(await web(Buffer.concat([frame(Buffer.alloc(0), 0x80), frame(Buffer.alloc(0), 0x80), frame(brotliCompressSync(request), 1)])), "0");
      // Two hundred compressed trailer frames of 1 MiB each, inflated, then the message: none
      // is inflated (200 MiB held or charged would have refused the call), and the call reads.
      const bomb = brotliCompressSync(Buffer.alloc(1024 * 1024));
      assert.equal(await web(Buffer.concat([...Array.from({ length: 200 }, () => frame(bomb, 0x81)), frame(request, 0)])), "0");
      assert.equal(await web(frame(request, 0)), "0", "the runner's token was charged only for what came (a few KiB): it owes nothing");
      // Twenty thousand empty trailer frames, 100 KB, then the message: read in one pass (each
      // frame's length checked once), and charged as they came: the token owes now.
      assert.equal(await web(Buffer.concat([...Array.from({ length: 20_000 }, () => frame(Buffer.alloc(0), 0x80)), frame(request, 0)])), "0");
      assert.equal(await web(frame(request, 0)), "8", "resource_exhausted: the trailer frames were charged");
    } finally {
      await s.close();
    }
  });

  it("gRPC-Web: a compressed trailer frame is skipped unread, though it is no stream of its coding or would inflate past the limit", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    try {
      const web = async (body: Buffer) => {
        const res = await fetch(`${s.url}/${LIST_RUNNERS}`, {
          method: "POST",
          headers: { "content-type": "application/grpc-web+proto", "grpc-encoding": "br", authorization: `Bearer ${s.token}` },
          body,
        });
        const text = Buffer.from(await res.arrayBuffer()).toString("latin1");
        return { status: res.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(text)?.[1], message: /grpc-message:\s*([^\r]*)/.exec(text)?.[1] };
      };
      const message = frame(Buffer.alloc(0), 0);
      for (const [what, trailer] of [
        ["no brotli at all", Buffer.from("not brotli")],
        ["2 MiB once inflated", brotliCompressSync(Buffer.alloc(2 * 1024 * 1024))],
      ] as const) {
        const answer = await web(Buffer.concat([frame(trailer, 0x81), message]));
        assert.equal(answer.status, "0", `${what}: ${answer.message}`);
      }
    } finally {
      await s.close();
    }
  });

  it("gRPC: a message of exactly the size limit is read, and charged", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    const session = http2.connect(s.url);
    try {
      // ListRunners with field 99 as length-delimited bytes (unknown, skipped): 1 MiB to the byte.
      const padding = 1024 * 1024 - 5;
      const message = Buffer.concat([Buffer.from([0x9a, 0x06]), varint(padding), Buffer.alloc(padding, 0x61)]);
      assert.equal(message.length, 1024 * 1024);
      const answer = await grpcCall(session, `/${LIST_RUNNERS}`, s.token, "identity", frame(message, 0));
      assert.equal(answer.status, "0", answer.message);
      const next = await grpcCall(session, `/${LIST_RUNNERS}`, s.token, "identity", frame(Buffer.alloc(0), 0));
      assert.equal(next.status, "8", `the 1 MiB message was charged: ${next.message}`);
      assert.match(next.message, /byte rate limit/);
    } finally {
      session.close();
      await s.close();
    }
  });

  it("gRPC-Web: trailer frames of exactly the size limit in all are skipped and the message after them read; one byte more is refused", async () => {
    const s = await startServer();
    const session = http2.connect(s.url);
    try {
      // Over HTTP/2 a gRPC-Web body is not counted against the size limit as it comes: only its frames are.
      const web = (body: Buffer) =>
        new Promise<string | undefined>((resolve, reject) => {
          const req = session.request({ ":method": "POST", ":path": `/${LIST_RUNNERS}`, "content-type": "application/grpc-web+proto", authorization: `Bearer ${s.token}` });
          let status: string | undefined;
          let text = "";
          req.on("response", (h) => (status = h["grpc-status"] as string | undefined));
          req.on("data", (d: Buffer) => (text += d.toString("latin1")));
          req.on("end", () => resolve(status ?? /grpc-status:\s*(\d+)/.exec(text)?.[1]));
          req.on("error", reject);
          req.end(body);
        });
      // Sixteen trailer frames of 64 KiB each, prefix included: 1 MiB to the byte, then an empty message.
      const trailers = (extra: number) => Buffer.concat(Array.from({ length: 16 }, (_, i) => frame(Buffer.alloc(64 * 1024 - 5 + (i === 15 ? extra : 0)), 0x80)));
      assert.equal(trailers(0).length, 1024 * 1024);
      assert.equal(await web(Buffer.concat([trailers(0), frame(Buffer.alloc(0), 0)])), "0");
      assert.equal(await web(Buffer.concat([trailers(1), frame(Buffer.alloc(0), 0)])), "8");
    } finally {
      session.close();
      await s.close();
    }
  });

  it("gRPC-Web announcing a length over the limit: its compressed message is still charged as inflated", async () => {
    const s = await startServer({ bodyRateLimit: LIMIT });
    try {
      const message = gzipSync(Buffer.concat([Buffer.from([0x9a, 0x06]), varint(200 * 1024), Buffer.alloc(200 * 1024, 0x61)]));
      const frames = Buffer.concat([frame(message, 1), frame(Buffer.alloc(0), 0)]);
      // The rest of the announced length never comes; the answer comes without it.
      const answer = await new Promise<{ status: string | undefined }>((resolve, reject) => {
        const req = http.request(`${s.url}/gitpod.v1.RunnerService/ListRunners`, {
          method: "POST",
          headers: { "content-type": "application/grpc-web+proto", "grpc-encoding": "gzip", "content-length": String(1024 * 1024 + 1), authorization: `Bearer ${s.token}` },
        });
        req.on("response", (res) => {
          let body = Buffer.alloc(0);
          res.on("data", (d: Buffer) => (body = Buffer.concat([body, d])));
          res.on("end", () => {
            req.destroy();
            resolve({ status: (res.headers["grpc-status"] as string | undefined) ?? /grpc-status:\s*(\d+)/.exec(body.toString("latin1"))?.[1] });
          });
        });
        req.on("error", reject);
        req.write(frames);
      });
      assert.equal(answer.status, "3", "a second message in a unary call");
      const next = await post(s, padded(10));
      assert.equal(next.body.code, "resource_exhausted", "the first message, 200 KiB inflated, was charged");
    } finally {
      await s.close();
    }
  });

  it("gRPC: compressed messages after the second are not inflated (a unary call reads two at most)", async () => {
    const s = await startServer();
    const session = http2.connect(s.url);
    try {
      // Fifty brotli messages of 30-odd bytes, each 1 MiB inflated: 50 MiB to hold had they been inflated.
      const bomb = brotliCompressSync(Buffer.concat([Buffer.from([0x9a, 0x06]), varint(1024 * 1024 - 8), Buffer.alloc(1024 * 1024 - 8)]));
      const body = Buffer.concat(Array.from({ length: 50 }, () => frame(bomb, 1)));
      const answer = await grpcCall(session, "/gitpod.v1.RunnerService/ListRunners", s.token, "br", body);
      assert.equal(answer.status, "3", answer.message);
      assert.match(answer.message, /extra input message/);
    } finally {
      session.close();
      await s.close();
    }
  });

  it("gRPC: compressed messages split across chunks at any byte read as sent", async () => {
    const s = await startServer();
    const session = http2.connect(s.url);
    try {
      const { runnerId, runnerToken } = await createRunner(s, s.token, "grpc-split");
      const request = Buffer.concat([Buffer.from([0x12, runnerId.length]), Buffer.from(runnerId)]);
      const path = "/gitpod.v1.RunnerInteractionService/ListRunnerSCMIntegrations";
      // Each body is sent once split in two at every byte (a body of many tiny pieces is refused
      // as such, see notePiece in request-body.ts), and once one byte at a time where it is short enough.
      const sendSplit = async (body: Buffer) => {
        const outcomes = [];
        for (let at = 1; at < body.length; at++) outcomes.push(await grpcCall(session, path, runnerToken, "gzip", body, [at]));
        return outcomes;
      };
      const sendWhole = (body: Buffer) => grpcCall(session, path, runnerToken, "gzip", body);
      const one = frame(gzipSync(request), 1);
      assert.ok(one.length <= 64);
      assert.equal((await grpcCall(session, path, runnerToken, "gzip", one, Array.from({ length: one.length - 1 }, (_, i) => i + 1))).status, "0");
      for (const r of await sendSplit(one)) assert.equal(r.status, "0");
      // Two messages, then a third compressed one that is never inflated: the second is refused once read.
      for (const three of await sendSplit(Buffer.concat([one, frame(gzipSync(request), 1), frame(Buffer.from("not gzip"), 1)]))) {
        assert.equal(three.status, "3");
        assert.match(three.message, /extra input message/);
      }
      // A prefix announcing more than the limit, after a broken first message, in one chunk:
      // refused by its length, as connect-node checks every prefix of a chunk before any message.
      const announced = Buffer.alloc(5);
      announced.writeUInt32BE(2 * 1024 * 1024, 1);
      const oversized = await sendWhole(Buffer.concat([frame(Buffer.from("not gzip"), 1), announced]));
      assert.equal(oversized.status, "8", oversized.message);
    } finally {
      session.close();
      await s.close();
    }
  });

  it("without a byte limit, compressed bodies still read as before: inflated, broken or too large", async () => {
    const s = await startServer();
    try {
      assert.equal((await post(s, gzipSync(padded(10)), { "content-encoding": "gzip" })).status, 200);
      const broken = await post(s, Buffer.from("not gzip at all"), { "content-encoding": "gzip" });
      assert.equal(broken.status, 400);
      assert.equal(broken.body.code, "invalid_argument");
      const truncated = gzipSync(padded(1000));
      const cut = await post(s, truncated.subarray(0, truncated.length - 10), { "content-encoding": "gzip" });
      assert.equal(cut.body.code, "invalid_argument", JSON.stringify(cut.body));
      const big = await post(s, gzipSync(padded(1024 * 1024)), { "content-encoding": "gzip" });
      assert.equal(big.status, 429);
      assert.equal(big.body.code, "resource_exhausted");
      assert.match(big.body.message!, /readMaxBytes/);
      // As without a coding: an empty body is no JSON.
      for (const empty of [Buffer.alloc(0), gzipSync(Buffer.alloc(0))]) {
        const answer = await post(s, empty, { "content-encoding": "gzip" });
        assert.deepEqual([answer.status, answer.body.code], [400, "invalid_argument"]);
        assert.match(answer.body.message!, /Unexpected end of JSON input/);
      }
    } finally {
      await s.close();
    }
  });
});

/**
 * A unary gRPC call over `session` with a body of frames as given; answers its status and
 * message (from the trailers, or the headers of a trailers-only answer). `byteAtATime` sends
 * each byte as a DATA frame of its own.
 */
/** A gRPC call with `body` sent whole, or in pieces cut at `cuts` (offsets, ascending), each written once the one before has gone. */
function grpcCall(session: http2.ClientHttp2Session, path: string, token: string, encoding: string, body: Buffer, cuts: number[] = []) {
  return new Promise<{ status: string | undefined; message: string }>((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", "grpc-encoding": encoding, te: "trailers", authorization: `Bearer ${token}` });
    const done = (h: http2.IncomingHttpHeaders) => resolve({ status: h["grpc-status"] as string | undefined, message: decodeURIComponent(String(h["grpc-message"] ?? "")) });
    req.on("trailers", done);
    req.on("response", (h) => h["grpc-status"] !== undefined && done(h));
    req.on("error", reject);
    req.resume();
    const bounds = [0, ...cuts, body.length];
    const write = (i: number): void => {
      if (i === bounds.length - 1) return void req.end();
      req.write(body.subarray(bounds[i], bounds[i + 1]), () => write(i + 1));
    };
    write(0);
  });
}

/** A gRPC frame: flags, length, message. */
function frame(message: Buffer, flags: number): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = flags;
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

/** A protobuf varint. */
function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

describe("the official SDK against the rate limit", () => {
  it("waits as long as the server's hint says, and its one retry gets through", async () => {
    // One call every two seconds, no burst: right after one call the next waits about 2000
    // ms, four times the SDK's own first backoff (375-500 ms), so a retry on that would be
    // refused, with room for a slow machine between the two calls.
    const s = await startServer({ rateLimit: { perSecond: 0.5, burst: 1 } });
    try {
      // What each of the SDK's attempts was answered, as the server sent it.
      const answers: { status: number; requestId: string; retryAfterMs: number }[] = [];
      const recording = async (input: string | URL | Request, init?: RequestInit) => {
        const res = await fetch(input, init);
        answers.push({ status: res.status, requestId: res.headers.get("x-request-id")!, retryAfterMs: Number(res.headers.get("retry-after-ms")) });
        return res;
      };
      const client = new Gitpod({ bearerToken: s.token, baseURL: s.url, maxRetries: 3, fetch: recording });
      assert.equal((await call(s, LIST_RUNNERS, {})).status, 200);
      const page = await client.runners.list({});
      assert.ok(Array.isArray(page.runners));

      assert.deepEqual(answers.map((a) => a.status), [429, 200], "one refusal, then the retry passed");
      const hint = answers[0]!.retryAfterMs;
      assert.ok(hint > 500, `the hint (${hint} ms) must be longer than the SDK's own backoff to tell them apart`);
      const [refused, retry] = await Promise.all(answers.map((a) => requestLogged(s, a.requestId)));
      assert.equal(refused!.code, "resource_exhausted");
      assert.equal(retry!.code, "ok");
      assert.equal(s.logs.filter((l) => l.includes('"code":"resource_exhausted"')).length, 1, "the server refused one call in all");
      // Timestamps have whole milliseconds, hence the 1 ms.
      const waited = retry!.arrivedAt - refused!.arrivedAt;
      assert.ok(waited >= hint - 1, `the retry arrived ${waited} ms after the refused call, before the ${hint} ms hinted`);
    } finally {
      await s.close();
    }
  });
});

/** The server's "request" log line of one request: its code, and when it arrived. */
async function requestLogged(s: TestServer, requestId: string) {
  // The line is written when the response closes, which may be just after the client has it.
  for (let i = 0; i < 100; i++) {
    const line = s.logs.find((l) => l.includes('"msg":"request"') && l.includes(`"request_id":"${requestId}"`));
    if (line) {
      const entry = JSON.parse(line) as { time: string; code: string; duration_ms: number };
      return { code: entry.code, arrivedAt: Date.parse(entry.time) - entry.duration_ms };
    }
    await sleep(10);
  }
  assert.fail(`no request log line for ${requestId}`);
}

describe("rate limit settings from the environment", () => {
  it("RATE_LIMIT_PER_SECOND and RATE_LIMIT_BURST are read, the burst defaulting to twice the rate", () => {
    assert.deepEqual(pick(loadConfig({ RATE_LIMIT_PER_SECOND: "7", RATE_LIMIT_BURST: "3" })), [7, 3]);
    assert.deepEqual(pick(loadConfig({ RATE_LIMIT_PER_SECOND: " 7 " })), [7, 14]);
    assert.deepEqual(pick(loadConfig({})), [100, 200]);
    assert.deepEqual(pick(loadConfig({ RATE_LIMIT_PER_SECOND: "0" })), [0, 1]);
    assert.deepEqual(pick(loadConfig({ RATE_LIMIT_PER_SECOND: "1000000" })), [1_000_000, 1_000_000], "at most the range's top");
  });

  it("RATE_LIMIT_BYTES_PER_SECOND and RATE_LIMIT_BYTES_BURST are read, the burst defaulting to four seconds' worth", () => {
    const bytes = (c: Config) => [c.rateLimitBytesPerSecond, c.rateLimitBytesBurst];
    assert.deepEqual(bytes(loadConfig({})), [256 * 1024, 1024 * 1024]);
    assert.deepEqual(bytes(loadConfig({ RATE_LIMIT_BYTES_PER_SECOND: "1000", RATE_LIMIT_BYTES_BURST: "5" })), [1000, 5]);
    assert.deepEqual(bytes(loadConfig({ RATE_LIMIT_BYTES_PER_SECOND: "0" })), [0, 1]);
    // A default never past the range a value set by hand must keep to.
    assert.deepEqual(bytes(loadConfig({ RATE_LIMIT_BYTES_PER_SECOND: String(2 ** 30) })), [2 ** 30, 2 ** 30]);
    assert.throws(() => loadConfig({ RATE_LIMIT_BYTES_BURST: "0" }), (err: Error) => err instanceof ConfigError && err.message.startsWith("RATE_LIMIT_BYTES_BURST"));
    assert.throws(() => loadConfig({ RATE_LIMIT_BYTES_PER_SECOND: "-5" }), (err: Error) => err instanceof ConfigError && err.message.startsWith("RATE_LIMIT_BYTES_PER_SECOND"));
  });

  it("a bad value stops the start, naming the variable", () => {
    for (const [name, value] of [
      ["RATE_LIMIT_PER_SECOND", "-1"],
      ["RATE_LIMIT_PER_SECOND", "2.5"],
      ["RATE_LIMIT_PER_SECOND", "ten"],
      ["RATE_LIMIT_PER_SECOND", "1000001"],
      ["RATE_LIMIT_BURST", "0"],
    ] as const) {
      assert.throws(() => loadConfig({ [name]: value }), (err: Error) => err instanceof ConfigError && err.message.startsWith(name), `${name}=${value}`);
    }
  });

  it("the running service takes them, and IDEMPOTENCY_TTL_SECONDS, from its environment", async () => {
    const service = await startService({ RATE_LIMIT_PER_SECOND: "1", RATE_LIMIT_BURST: "3", IDEMPOTENCY_TTL_SECONDS: "2" });
    try {
      const post = async (path: string, body: object, headers: Record<string, string> = {}) => {
        const res = await fetch(`${service.url}/${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${service.token}`, ...headers },
          body: JSON.stringify(body),
        });
        return { status: res.status, body: (await res.json()) as any, retryAfterMs: Number(res.headers.get("retry-after-ms")) };
      };
      // The burst of 3 (the default would be 200): a runner, a create and its replay.
      const runner = await post("gitpod.v1.RunnerService/CreateRunner", { name: "env", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" });
      assert.equal(runner.status, 200, JSON.stringify(runner.body));
      const create = () =>
        post(CREATE, { runnerId: runner.body.runner.runnerId, scmId: "github", host: "github.com", pat: true }, { "idempotency-key": "env-key" });
      const first = await create();
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.equal((await create()).body.id, first.body.id, "within the TTL the key replays");
      // Past the burst: the bucket holds at most its 3 calls, so of six more at once at least
      // three are refused, however slowly the calls before them went on a loaded machine.
      const more = await Promise.all(Array.from({ length: 6 }, () => post(LIST_RUNNERS, {})));
      const limited = more.filter((r) => r.status !== 200);
      assert.ok(limited.length >= 3, `refused ${limited.length} of 6 past the burst`);
      for (const r of limited) {
        assert.equal(r.body.code, "resource_exhausted", JSON.stringify(r.body));
        // Up to a second to wait: one call per second. At the default 100 a second it could
        // be 10 ms at most.
        assert.ok(r.retryAfterMs > 10 && r.retryAfterMs <= 1000, `retry-after-ms ${r.retryAfterMs}`);
      }
      // Past the 2 s TTL (the default is a day) the key is forgotten, and the bucket has a call again.
      await sleep(2300);
      const late = await create();
      assert.equal(late.body.code, "already_exists", JSON.stringify(late.body));
    } finally {
      await service.stop();
    }
  });
});

function pick(config: Config): [number, number] {
  return [config.rateLimitPerSecond, config.rateLimitBurst];
}

/** src/main.ts as a child process on a fresh database; answers its URL and the first-start token. */
async function startService(env: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), "scm-env-"));
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: join(dir, "s.db"), ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const stop = async () => {
    child.kill("SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 1000 && child.exitCode === null; i++) {
    const port = /"msg":"listening","address":"[^"]*:(\d+)"/.exec(out)?.[1];
    const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(out)?.[0];
    if (port && token) return { url: `http://127.0.0.1:${port}`, token, stop };
    await sleep(20);
  }
  await stop();
  throw new Error(`the service did not start: ${out}`);
}

describe("the token bucket", () => {
  it("refills at the rate, never past the burst, and says how long to wait", () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 3 }, () => now);
    assert.deepEqual([limiter.take("a"), limiter.take("a"), limiter.take("a")], [0, 0, 0]);
    assert.equal(limiter.take("a"), 100);
    now += 50;
    assert.equal(limiter.take("a"), 50);
    now += 50;
    assert.equal(limiter.take("a"), 0);
    now += 10_000;
    assert.deepEqual([limiter.take("a"), limiter.take("a"), limiter.take("a"), limiter.take("a") > 0], [0, 0, 0, true]);
    assert.equal(limiter.take("b"), 0, "each caller has its own bucket");
  });

  it("a runner's body is charged to its own bucket, and past 4 KiB to its organization's runners', both or neither", () => {
    const limiter = new RateLimiter({ perSecond: 1000, burst: 10_000 }, () => 0);
    const runner = (runnerId: string) => ({ kind: "runner" as const, orgId: "org", runnerId, tokenHash: Buffer.alloc(32) });
    // 15,096 bytes in two parts (a compressed body inflating, say): 11,000 past the free 4,096.
    const a = bodyCharge(limiter, runner("a"))!;
    a(3000);
    assert.equal(limiter.debtWait("runners:org"), 0, "nothing shared yet");
    a(12_096);
    assert.equal(limiter.debtWait("runner:a"), 5096, "the body that crosses zero passes, into debt");
    assert.equal(limiter.debtWait("runners:org"), 1000);
    // A small body of another runner passes the shared debt by; a large one is refused by it,
    // is not parsed, and owes nothing.
    bodyCharge(limiter, runner("b"))!(4000);
    assert.throws(() => bodyCharge(limiter, runner("c"))!(5000), /the byte rate limit they share/);
    assert.equal(limiter.debtWait("runner:c"), 0, "nothing taken from c's own bucket");
    assert.equal(limiter.debtWait("runners:org"), 1000, "nor more from the shared one");
    // An API token has its own bucket alone.
    bodyCharge(limiter, { kind: "api", orgId: "org", tokenId: "t" })!(9000);
    assert.equal(limiter.debtWait("runners:org"), 1000);
  });

  it("spends into debt for one use at a time, which later calls wait out, and forgets no caller still owing", () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 100, burst: 50 }, () => now);
    const [first, second, third] = [{}, {}, {}];
    assert.equal(limiter.debtWait("a"), 0, "a caller never seen owes nothing");
    assert.equal(limiter.spend("a", 40, first), 0, "within the burst");
    assert.equal(limiter.spend("a", 5, second), 0);
    assert.equal(limiter.spend("a", 20, second), 0, "the use that crosses zero goes on");
    assert.equal(limiter.debtWait("a"), 150, "15 owed at 100 a second");
    assert.equal(limiter.spend("a", 1, first), 150, "another use is refused while the bucket owes");
    assert.equal(limiter.spend("a", 200, second), 0, "the one in debt goes on");
    assert.equal(limiter.debtWait("a"), 2150);
    now += 2150;
    assert.equal(limiter.debtWait("a"), 0);
    // Paid off: the next use to cross is the one let on, and the one before no longer.
    assert.equal(limiter.spend("a", 10, third), 0);
    assert.equal(limiter.spend("a", 1, second), 100, "its debt was paid off; the bucket now owes for another");
    assert.equal(limiter.spend("a", 5, third), 0);
    for (let i = 0; i < 10_000; i++) limiter.take(`caller-${i}`);
    now += 100; // every other bucket has refilled by now; "a" is still short of full
    limiter.take("new");
    assert.equal(limiter.callers, 2, "the quiet callers were dropped, the one that owed kept");
  });

  it("forgets callers whose bucket has refilled once it holds 10,000, and keeps the others", () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 3 }, () => now);
    for (let i = 0; i < 10_000; i++) limiter.take(`caller-${i}`);
    assert.equal(limiter.callers, 10_000);
    now += 1000; // past the 300 ms a bucket takes to refill
    for (let i = 0; i < 3; i++) limiter.take("busy");
    assert.equal(limiter.callers, 1, "the 10,000 quiet callers were dropped, the busy one kept");
    assert.ok(limiter.take("busy") > 0, "the busy caller's spent bucket was not reset");
  });

  it("a bucket that has refilled to the burst exactly, not past it, is forgotten as well", () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 3 }, () => now);
    for (let i = 0; i < 10_000; i++) limiter.take(`caller-${i}`);
    now += 100; // each bucket took one call, and 100 ms at 10 a second gives exactly one back
    limiter.take("new");
    assert.equal(limiter.callers, 1, "the 10,000 full buckets were dropped");
  });
});

// Media types are case-insensitive (RFC 9110), and connect-node
// serves "Application/GRPC"; the byte limit must read such a body as gRPC too, inflating
// and charging its compressed messages, or a gzip bomb passes the limit at its packed size.
it("gRPC with its media type in capitals: compressed messages are charged as inflated all the same", async () => {
  const s = await startServer({ bodyRateLimit: { perSecond: 1024, burst: 64 * 1024 } });
  const session = http2.connect(s.url);
  try {
    const { runnerId, runnerToken } = await createRunner(s, s.token, "grpc-caps");
    const grpc = (message: Buffer, flags: number) =>
      new Promise<{ status: string | undefined; message: string }>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerInteractionService/ListRunnerSCMIntegrations", "content-type": "Application/GRPC", "grpc-encoding": "gzip", te: "trailers", authorization: `Bearer ${runnerToken}` });
        const done = (h: http2.IncomingHttpHeaders) => resolve({ status: h["grpc-status"] as string | undefined, message: decodeURIComponent(String(h["grpc-message"] ?? "")) });
        req.on("trailers", done);
        req.on("response", (h) => h["grpc-status"] !== undefined && done(h));
        req.on("error", reject);
        req.resume();
        const prefix = Buffer.alloc(5);
        prefix[0] = flags;
        prefix.writeUInt32BE(message.length, 1);
        req.end(Buffer.concat([prefix, message]));
      });
    // runner_id (field 2), then 100 KiB in field 99 (length-delimited, unknown: skipped).
    const runner = Buffer.concat([Buffer.from([0x12, runnerId.length]), Buffer.from(runnerId)]);
    const padding = 100 * 1024;
    const request = (pad: number) => Buffer.concat([runner, ...(pad > 0 ? [Buffer.from([0x9a, 0x06, (pad & 0x7f) | 0x80, (pad >>> 7) & 0x7f | 0x80, pad >>> 14])] : []), Buffer.alloc(pad, 0x61)]);
    const first = await grpc(gzipSync(request(padding)), 1);
    assert.equal(first.status, "0", `a compressed message is read as sent: ${first.message}`);
    const second = await grpc(request(0), 0);
    assert.equal(second.status, "8", `resource_exhausted, the token in debt for 100 KiB inflated: ${second.message}`);
    assert.match(second.message, /byte rate limit/);
  } finally {
    session.close();
    await s.close();
  }
});
