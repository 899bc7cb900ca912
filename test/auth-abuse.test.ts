import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createApiToken, revokeApiToken } from "../src/services/accounts.js";
import { call, createRunner, signUp, startServer, type TestServer } from "./harness.js";

const LIST_RUNNERS = "gitpod.v1.RunnerService/ListRunners";
const SIGNUP = "gitpod.v1.RunnerInteractionService/Signup";

/** A Connect JSON call with the Authorization header exactly as given (or none). */
async function rawAuth(s: TestServer, path: string, authorization: string | null, body: unknown = {}) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (authorization !== null) headers.authorization = authorization;
  const res = await fetch(`${s.url}/${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as { code?: string; message?: string } };
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
    assert.equal((await call(s, LIST_RUNNERS, {}, fresh)).body.code, "permission_denied");
    // And an API token is no runner.
    assert.equal((await call(s, SIGNUP, { publicKey: Buffer.alloc(32, 9).toString("base64") })).body.code, "permission_denied");
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

  it("finds a token written to the log", async () => {
    const s = await startServer();
    s.watch.planted = true;
    s.logs.push(`{"msg":"oops","authorization":"Bearer ${s.token}"}\n`);
    await assert.rejects(s.close(), /leaked/);
  });
});
