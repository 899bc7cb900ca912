import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Gitpod } from "@gitpod/sdk";
import { RateLimiter } from "../src/services/rate-limit.js";
import { call, createRunner, startServer, type TestServer } from "./harness.js";

const LIST_RUNNERS = "gitpod.v1.RunnerService/ListRunners";

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
    // Refusals are logged with their code.
    assert.ok(s.logs.some((l) => l.includes('"code":"resource_exhausted"')));
  });

  it("calls refused for the wrong kind of token count against the token too", async () => {
    const { runnerToken } = await createRunner(s, s.otherToken, "wrong-kind");
    const codes = [];
    for (let i = 0; i < 12; i++) codes.push((await call(s, LIST_RUNNERS, {}, runnerToken)).body.code);
    assert.deepEqual(codes.slice(0, 5), Array(5).fill("permission_denied"));
    assert.ok(codes.includes("resource_exhausted"), codes.join(", "));
  });

  it("the official SDK waits as told and its retries get through", async () => {
    const client = new Gitpod({ bearerToken: s.token, baseURL: s.url, maxRetries: 10 });
    // Spend the bucket, then ask through the SDK: it must wait for retry-after-ms.
    while ((await call(s, LIST_RUNNERS, {})).status === 200);
    const before = s.logs.filter((l) => l.includes('"code":"resource_exhausted"')).length;
    const page = await client.runners.list({});
    assert.ok(Array.isArray(page.runners));
    const refusedMeanwhile = s.logs.filter((l) => l.includes('"code":"resource_exhausted"')).length - before;
    assert.ok(refusedMeanwhile >= 1, "the SDK's first attempt was refused and it retried");
  });
});

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
});
