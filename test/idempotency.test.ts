import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Gitpod } from "@gitpod/sdk";
import { create as create_, toBinary } from "@bufbuild/protobuf";
import { createHmac } from "node:crypto";
import { CreateSCMIntegrationRequestSchema, RunnerConfigurationService } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { ConfigError, loadConfig } from "../src/config.js";
import { createApiToken } from "../src/services/accounts.js";
import { SWEEP_LIMIT } from "../src/services/idempotency.js";
import { createRunner, signUp, startServer, type TestServer } from "./harness.js";

const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";

/** Makes `key` hold what earlier versions stored for `request`: the HMAC of it as sent (the secret marked). */
function storeFingerprintAsSent(s: TestServer, key: string, request: object): void {
  storeFingerprintOf(s, key, { ...request, oauthPlaintextClientSecret: "given" });
}

/** Makes `key` hold the HMAC of `message` encoded, as some version stored it. */
function storeFingerprintOf(s: TestServer, key: string, message: object): void {
  const hmacKey = (s.db.$client.prepare("SELECT value FROM service_secrets WHERE name = 'idempotency_key'").get() as { value: Buffer }).value;
  const encoded = toBinary(CreateSCMIntegrationRequestSchema, create_(CreateSCMIntegrationRequestSchema, message));
  const earlier = createHmac("sha256", hmacKey).update(CreateSCMIntegrationRequestSchema.typeName).update("\0").update(encoded).digest();
  assert.equal(s.db.$client.prepare("UPDATE idempotency_keys SET fingerprint = ? WHERE key = ?").run(earlier, key).changes, 1);
}

async function create(s: TestServer, body: object, key: string | null, token = s.token) {
  const headers: Record<string, string> = { "content-type": "application/json", authorization: `Bearer ${token}` };
  if (key !== null) headers["idempotency-key"] = key;
  const res = await fetch(`${s.url}/${CREATE}`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as { id?: string; code?: string; message?: string } };
}

function integrationCount(s: TestServer): number {
  return (s.db.$client.prepare("SELECT count(*) AS n FROM scm_integrations").get() as { n: number }).n;
}

describe("Idempotency-Key on CreateSCMIntegration", () => {
  let s: TestServer;
  let runnerId: string;
  before(async () => {
    s = await startServer();
    const r = await createRunner(s);
    runnerId = r.runnerId;
    await signUp(s, r.runnerToken);
  });
  after(() => s.close());

  const body = (host: string, clientId = "app-1") => ({
    runnerId,
    scmId: "github",
    host,
    oauthClientId: clientId,
    oauthPlaintextClientSecret: "idem-secret-value",
  });

  it("a retry with the same key and body gets the first id; without a key it is already_exists", async () => {
    const first = await create(s, body("github.com"), "key-1");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const again = await create(s, body("github.com"), "key-1");
    assert.deepEqual(again, first);
    const keyless = await create(s, body("github.com"), null);
    assert.equal(keyless.body.code, "already_exists");
    assert.equal(integrationCount(s), 1);
  });

  it("the same key with a different body is invalid_argument and writes nothing", async () => {
    const n = integrationCount(s);
    const other = await create(s, body("github.com", "app-2"), "key-1");
    assert.equal(other.status, 400);
    assert.equal(other.body.code, "invalid_argument");
    assert.match(other.body.message!, /Idempotency-Key/);
    const otherHost = await create(s, body("gitlab.example.com"), "key-1");
    assert.equal(otherHost.body.code, "invalid_argument");
    assert.equal(integrationCount(s), n);
  });

  it("the key is the caller's own: another token's same key is a new request", async () => {
    const second = createApiToken(s.db, "acme");
    s.watch.noteToken(second.token);
    const r = await create(s, body("github.com"), "key-1", second.token);
    assert.equal(r.body.code, "already_exists", "not a replay of the other token's create");
  });

  it("JSON, binary and gRPC forms of one request are one request", async () => {
    const first = await create(s, body("git.example.org"), "key-forms");
    assert.equal(first.status, 200);
    const headers = { "idempotency-key": "key-forms", authorization: `Bearer ${s.token}` };
    for (const transport of [
      createConnectTransport({ baseUrl: s.url, httpVersion: "1.1", useBinaryFormat: true }),
      createGrpcTransport({ baseUrl: s.url }),
    ]) {
      const client = createClient(RunnerConfigurationService, transport);
      const res = await client.createSCMIntegration(body("git.example.org"), { headers });
      assert.equal(res.id, first.body.id);
    }
  });

  it("concurrent retries of one create all get the one id, and one row is written", async () => {
    const n = integrationCount(s);
    const answers = await Promise.all(Array.from({ length: 20 }, () => create(s, body("concurrent.example.com"), "key-burst")));
    const ids = new Set(answers.map((a) => a.body.id));
    assert.equal(ids.size, 1, JSON.stringify(answers.map((a) => a.body)));
    assert.ok(answers.every((a) => a.status === 200));
    assert.equal(integrationCount(s), n + 1);
  });

  it("the official SDK's Idempotency-Key header is honoured", async () => {
    const client = new Gitpod({ bearerToken: s.token, baseURL: s.url, maxRetries: 0 });
    const params = { runnerId, scmId: "github", host: "sdk.example.com", pat: true };
    const a = await client.runners.configurations.scmIntegrations.create(params, { headers: { "Idempotency-Key": "sdk-key" } });
    const b = await client.runners.configurations.scmIntegrations.create(params, { headers: { "Idempotency-Key": "sdk-key" } });
    assert.equal(b.id, a.id);
  });

  it("a malformed key is invalid_argument and nothing is written", async () => {
    const n = integrationCount(s);
    for (const key of ["", "x".repeat(256), "has space", "tab\tkey"]) {
      const r = await create(s, body(`bad-key-${key.length}.example.com`), key);
      assert.equal(r.body.code, "invalid_argument", JSON.stringify(key));
      assert.match(r.body.message!, /Idempotency-Key header/);
    }
    assert.equal(integrationCount(s), n);
  });

  it("stores an HMAC of the request, never the request or its secret", async () => {
    const r = await create(s, { ...body("hmac-only.example.com"), oauthPlaintextClientSecret: "idem-secret-value" }, "key-for-the-hmac-test");
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const rows = s.db.$client.prepare("SELECT * FROM idempotency_keys").all() as Array<Record<string, unknown>>;
    assert.ok(rows.length >= 1);
    for (const row of rows) {
      assert.equal((row.fingerprint as Buffer).length, 32);
      // Every column as text and as bytes: a BLOB would not show in JSON.
      for (const value of Object.values(row)) {
        const bytes = Buffer.isBuffer(value) ? value : Buffer.from(String(value));
        assert.ok(!bytes.includes(Buffer.from("idem-secret-value")) && !bytes.includes(Buffer.from("hmac-only")), JSON.stringify(Object.keys(row)));
      }
    }
  });

  it("leaves the secret out of the fingerprint: the database alone cannot tell a right guess of it", async () => {
    const request = { ...body("guess.example.com"), oauthPlaintextClientSecret: "hunter2" };
    const first = await create(s, request, "key-guess");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    // What a copy of the file holds: the fingerprint, its key, and every other field in the row.
    const stored = (s.db.$client.prepare("SELECT fingerprint FROM idempotency_keys WHERE key = 'key-guess'").get() as { fingerprint: Buffer }).fingerprint;
    const key = (s.db.$client.prepare("SELECT value FROM service_secrets WHERE name = 'idempotency_key'").get() as { value: Buffer }).value;
    const guess = (secret: string) =>
      createHmac("sha256", key)
        .update(CreateSCMIntegrationRequestSchema.typeName)
        .update("\0")
        .update(toBinary(CreateSCMIntegrationRequestSchema, create_(CreateSCMIntegrationRequestSchema, { ...request, oauthPlaintextClientSecret: secret })))
        .digest();
    for (const secret of ["hunter2", "letmein", ""]) assert.notDeepEqual(guess(secret), stored, secret);
    // So a retry that changes only the secret is the same request, as is one that writes the
    // runner id in upper case, or the host in another spelling the create would store alike.
    const retried = await create(s, { ...request, oauthPlaintextClientSecret: "other" }, "key-guess");
    assert.deepEqual(retried, first);
    const upper = await create(s, { ...request, runnerId: runnerId.toUpperCase() }, "key-guess");
    assert.deepEqual(upper, first);
    const host = await create(s, { ...request, host: `${request.host.toUpperCase()}/` }, "key-guess");
    assert.deepEqual(host, first);
    const other = await create(s, { ...request, host: `other-${request.host}` }, "key-guess");
    assert.equal(other.body.code, "invalid_argument", "another host is another request");
  });

  it("a retry across the upgrade that began comparing hosts as stored still matches what the earlier version kept", async () => {
    const request = { runnerId, scmId: "github", host: "Upgrade.Example.com", pat: true };
    const first = await create(s, request, "key-upgrade");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    // What a version before it stored: the HMAC of the request with the host as sent.
    storeFingerprintAsSent(s, "key-upgrade", request);
    assert.deepEqual(await create(s, request, "key-upgrade"), first);
    const other = await create(s, { ...request, host: "other.example.com" }, "key-upgrade");
    assert.equal(other.body.code, "invalid_argument", "the earlier encoding matches only the same request");
  });

  it("a retry across an upgrade from any earlier version matches what that version stored, and only the same request", async () => {
    const pat = { runnerId: runnerId.toUpperCase(), scmId: "github", host: "Old.Example.com", pat: true };
    const oauth = { ...pat, host: "old-oauth.example.com", oauthClientId: "app", oauthPlaintextClientSecret: "old-secret" };
    const forms: [string, object, object][] = [
      // 2026-12-04, 10:22 to 11:52: no marker without a secret, the runner id in lower case, the host as sent.
      ["key-old-c", pat, { ...pat, runnerId }],
      // 2026-12-03, 18:07 to 2026-12-04, 10:22: the request as sent, its secret marked.
      ["key-old-b", { ...pat, host: "Old-B.Example.com" }, { ...pat, host: "Old-B.Example.com", oauthPlaintextClientSecret: "given" }],
      // Before: the request as sent, its secret included.
      ["key-old-a", oauth, oauth],
    ];
    for (const [key, request, stored] of forms) {
      const first = await create(s, request, key);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      storeFingerprintOf(s, key, stored);
      assert.deepEqual(await create(s, request, key), first, key);
    }
    // A key stored with the secret itself matches that secret only.
    const another = await create(s, { ...oauth, oauthPlaintextClientSecret: "another-secret" }, "key-old-a");
    assert.equal(another.body.code, "invalid_argument");
  });

  it("a retry after the integration was deleted still answers its id; other methods ignore the header", async () => {
    const request = body("deleted-since.example.com");
    const first = await create(s, request, "key-deleted-since");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const headers = { "content-type": "application/json", authorization: `Bearer ${s.token}`, "idempotency-key": "key-other-methods" };
    const post = async (method: string, payload: object) => {
      const res = await fetch(`${s.url}/gitpod.v1.${method}`, { method: "POST", headers, body: JSON.stringify(payload) });
      return { status: res.status, body: (await res.json()) as Record<string, any> };
    };
    assert.equal((await post("RunnerConfigurationService/DeleteSCMIntegration", { id: first.body.id })).status, 200);
    // The first call's answer, though that integration is gone (README: a retry is told what
    // the first call was told); nothing is created again.
    assert.deepEqual(await create(s, request, "key-deleted-since"), first);
    assert.equal(s.db.$client.prepare("SELECT count(*) FROM scm_integrations WHERE host = 'deleted-since.example.com'").pluck().get(), 0);
    // Delete again with the same key: not_found, as without one (no answer replayed).
    assert.equal((await post("RunnerConfigurationService/DeleteSCMIntegration", { id: first.body.id })).body.code, "not_found");
    // CreateRunner twice with one key: two runners, each with its own access token.
    const runners = [await post("RunnerService/CreateRunner", { name: "keyed twice", provider: "RUNNER_PROVIDER_GCP" }), await post("RunnerService/CreateRunner", { name: "keyed twice", provider: "RUNNER_PROVIDER_GCP" })];
    assert.deepEqual(runners.map((r) => r.status), [200, 200]);
    assert.notEqual(runners[0]!.body.runner.runnerId, runners[1]!.body.runner.runnerId);
    assert.equal(s.db.$client.prepare("SELECT count(*) FROM idempotency_keys WHERE key = 'key-other-methods'").pluck().get(), 0, "nothing recorded for them");
  });

  it("a virtual directory is compared as stored, also against what the version before stored", async () => {
    const request = { runnerId, scmId: "azuredevops_server", host: "tfs.upgrade.example", pat: true, virtualDirectory: "/tfs/" };
    const first = await create(s, request, "key-directory");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual(await create(s, { ...request, virtualDirectory: "/tfs" }, "key-directory"), first, "one directory, two spellings");
    // The version before fingerprinted the directory as sent (and the host as stored).
    storeFingerprintAsSent(s, "key-directory", request);
    assert.deepEqual(await create(s, request, "key-directory"), first);
    const other = await create(s, { ...request, virtualDirectory: "/collections" }, "key-directory");
    assert.equal(other.body.code, "invalid_argument", "another directory is another request");
  });

  it("an empty optional string is the same request as the field left out, as Create reads it", async () => {
    const request = { runnerId, scmId: "github", host: "empty.example.com", pat: true };
    const first = await create(s, request, "key-empty");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const empties = { oauthClientId: "", oauthPlaintextClientSecret: "", issuerUrl: "", virtualDirectory: "" };
    assert.deepEqual(await create(s, { ...request, ...empties }, "key-empty"), first);
    // The fingerprint is the one earlier versions stored for such a request (the secret
    // marked "given" whether or not one came), so keys saved before an upgrade still match.
    const stored = (s.db.$client.prepare("SELECT fingerprint FROM idempotency_keys WHERE key = 'key-empty'").get() as { fingerprint: Buffer }).fingerprint;
    const key = (s.db.$client.prepare("SELECT value FROM service_secrets WHERE name = 'idempotency_key'").get() as { value: Buffer }).value;
    const earlier = createHmac("sha256", key)
      .update(CreateSCMIntegrationRequestSchema.typeName)
      .update("\0")
      .update(toBinary(CreateSCMIntegrationRequestSchema, create_(CreateSCMIntegrationRequestSchema, { ...request, oauthPlaintextClientSecret: "given" })))
      .digest();
    assert.deepEqual(stored, earlier);
    const other = await create(s, { ...request, ...empties, host: "other.example.com" }, "key-empty");
    assert.match(other.body.message!, /Idempotency-Key/, "a field with a value is still told apart");
  });
});

describe("Idempotency-Key expiry", () => {
  it("after the configured time a key is forgotten and the create runs again", async () => {
    // Long enough that a create and its replay fall inside it on a loaded machine.
    const s = await startServer({ idempotencyTtlMs: 1500 });
    try {
      const { runnerId } = await createRunner(s);
      const params = { runnerId, scmId: "github", host: "github.com", pat: true };
      const first = await create(s, params, "short-lived");
      assert.equal(first.status, 200);
      assert.equal((await create(s, { ...params, host: "gitlab.com", scmId: "gitlab" }, "swept")).status, 200);
      await sleep(1800);
      const late = await create(s, params, "short-lived");
      assert.equal(late.body.code, "already_exists", "the key was forgotten, so this is a second create of the host");
      // Delete the integration: the expired key is reused for a new create, with a new answer.
      const del = await fetch(`${s.url}/gitpod.v1.RunnerConfigurationService/DeleteSCMIntegration`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` },
        body: JSON.stringify({ id: first.body.id }),
      });
      assert.equal(del.status, 200);
      const fresh = await create(s, params, "short-lived");
      assert.equal(fresh.status, 200);
      assert.notEqual(fresh.body.id, first.body.id);
      assert.deepEqual(await create(s, params, "short-lived"), fresh, "and the key now names the new create");
      // Expired keys are also swept from the table, not only ignored.
      const keys = s.db.$client.prepare("SELECT key FROM idempotency_keys ORDER BY key").all() as Array<{ key: string }>;
      assert.deepEqual(keys.map((k) => k.key), ["short-lived"]);
    } finally {
      await s.close();
    }
  });
});

describe("sweeping expired keys", () => {
  it("takes at most SWEEP_LIMIT a time, the oldest first, in a write of its own, and keeps going at each keyed create while more are left", async () => {
    const s = await startServer({ idempotencyTtlMs: 60_000 });
    try {
      const { runnerId } = await createRunner(s);
      // 1,200 entries long expired, and one that is not.
      const insert = s.db.$client.prepare("INSERT INTO idempotency_keys (scope, key, fingerprint, result_id, created_at) VALUES ('api:old', ?, x'00', 'r', ?)");
      s.db.$client.transaction(() => {
        for (let i = 0; i < 1200; i++) insert.run(`old-${i}`, 1_000 + i);
        insert.run("recent", Date.now());
      })();
      const left = () => (s.db.$client.prepare("SELECT count(*) AS n FROM idempotency_keys WHERE scope = 'api:old' AND key != 'recent'").get() as { n: number }).n;
      const oldestLeft = () => (s.db.$client.prepare("SELECT min(created_at) AS t FROM idempotency_keys WHERE scope = 'api:old'").get() as { t: number }).t;
      const counts: number[] = [];
      for (let i = 0; i < 4; i++) {
        assert.equal((await create(s, { runnerId, scmId: "github", host: `sweep${i}.example.com`, pat: true }, `sweep-${i}`)).status, 200);
        // The sweep is a write of its own, queued by the create: one queued after it commits after it.
        await s.db.write(() => undefined);
        counts.push(left());
        if (i === 0) assert.equal(oldestLeft(), 1_000 + SWEEP_LIMIT, "the oldest went first");
      }
      assert.deepEqual(counts, [1200 - SWEEP_LIMIT, 1200 - 2 * SWEEP_LIMIT, 0, 0]);
      assert.equal((s.db.$client.prepare("SELECT count(*) AS n FROM idempotency_keys WHERE key = 'recent'").get() as { n: number }).n, 1, "a live key stays");
      assert.equal((s.db.$client.prepare("SELECT count(*) AS n FROM idempotency_keys WHERE key LIKE 'sweep-%'").get() as { n: number }).n, 4);
    } finally {
      await s.close();
    }
  });
});

describe("IDEMPOTENCY_TTL_SECONDS", () => {
  // That the running service uses it is checked in rate-limit.test.ts, with the rate
  // limit settings, on one started process.
  it("is read in seconds, a day unless set", () => {
    assert.equal(loadConfig({ IDEMPOTENCY_TTL_SECONDS: "90" }).idempotencyTtlMs, 90_000);
    assert.equal(loadConfig({ IDEMPOTENCY_TTL_SECONDS: "" }).idempotencyTtlMs, 86_400_000);
    assert.equal(loadConfig({}).idempotencyTtlMs, 86_400_000);
  });

  it("a value that is not 1 s to 30 days stops the start, naming the variable", () => {
    for (const value of ["0", "-5", "1.5", "1h", String(30 * 86_400 + 1)]) {
      assert.throws(
        () => loadConfig({ IDEMPOTENCY_TTL_SECONDS: value }),
        (err: Error) => err instanceof ConfigError && err.message.startsWith("IDEMPOTENCY_TTL_SECONDS"),
        value,
      );
    }
    assert.equal(loadConfig({ IDEMPOTENCY_TTL_SECONDS: String(30 * 86_400) }).idempotencyTtlMs, 30 * 86_400_000);
  });
});
