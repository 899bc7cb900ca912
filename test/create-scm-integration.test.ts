import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { eq } from "drizzle-orm";
import { open } from "../src/crypto/sealed-box.js";
import { createApiToken, revokeApiToken } from "../src/services/accounts.js";
import { scmIntegrations } from "../src/store/schema.js";
import { call, createRunner, signUp, startServer, type TestServer } from "./harness.js";

const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";

describe("CreateSCMIntegration over Connect JSON", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("seals the OAuth secret to the runner's key; only the runner's private key opens it", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const keys = await signUp(s, runnerToken);
    const r = await call(s, CREATE, {
      runnerId, scmId: "github", host: "GitHub.com", oauthClientId: "client-1",
      oauthPlaintextClientSecret: "s3cret-value", pat: true,
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.body.id, /^[0-9a-f-]{36}$/);
    const row = s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, r.body.id)).get()!;
    assert.equal(row.host, "github.com");
    assert.equal(row.oauthClientId, "client-1");
    assert.ok(!row.oauthEncryptedSecret!.includes(Buffer.from("s3cret-value")));
    assert.equal(open(row.oauthEncryptedSecret!, keys.publicKey, keys.secretKey), "s3cret-value");
    assert.ok(!s.logs.join("").includes("s3cret-value"));
    // That it was answered only once on disk is group-commit.test.ts's (syncs held and failed there).
  });

  it("accepts Azure DevOps with Entra ID OAuth and its issuer, and IPv6 hosts with a port", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    await signUp(s, runnerToken);
    const entra = await call(s, CREATE, {
      runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/Acme", oauthClientId: "c",
      oauthPlaintextClientSecret: "x", issuerUrl: "https://login.microsoftonline.com/tenant/v2.0",
    });
    assert.equal(entra.status, 200, JSON.stringify(entra.body));
    const v6 = await call(s, CREATE, { runnerId, scmId: "gitlab", host: "[2001:DB8:0:0:0:0:0:1]:8443", pat: true });
    assert.equal(v6.status, 200, JSON.stringify(v6.body));
    const hosts = s.db.select().from(scmIntegrations).where(eq(scmIntegrations.runnerId, runnerId)).all().map((r) => r.host).sort();
    assert.deepEqual(hosts, ["[2001:db8::1]:8443", "dev.azure.com/acme"], "an IPv6 address is kept in its shortest form");
    const again = await call(s, CREATE, { runnerId, scmId: "gitlab", host: "[2001:db8:0::1]:8443", pat: true });
    assert.equal(again.body.code, "already_exists", "the same address spelled otherwise is the same host");
  });

  it("answers already_exists for a second integration on the same host, telling the SDK not to retry", async () => {
    const { runnerId } = await createRunner(s);
    const body = { runnerId, scmId: "gitlab", host: "gitlab.com", pat: true };
    const results = await Promise.all([call(s, CREATE, body), call(s, CREATE, { ...body, host: "GITLAB.com" })]);
    const codes = results.map((r) => r.body.code ?? "ok").sort();
    assert.deepEqual(codes, ["already_exists", "ok"]);
    const dup = results.find((r) => r.status !== 200)!;
    assert.equal(dup.status, 409);
    assert.equal(dup.headers.get("x-should-retry"), "false");
  });

  it("refuses a secret of the wrong JSON type without repeating it", async () => {
    const { runnerId } = await createRunner(s);
    for (const [secret, kind] of [[12345678, "a number"], [true, "a boolean"], [[1234], "an array"]] as const) {
      const r = await call(s, CREATE, { runnerId, scmId: "github", host: "github.com", oauthClientId: "c", oauthPlaintextClientSecret: secret });
      assert.equal(r.body.code, "invalid_argument");
      assert.equal(r.body.message, `cannot decode field gitpod.v1.CreateSCMIntegrationRequest.oauth_plaintext_client_secret from JSON: expected string, got ${kind} (the value is not shown)`);
    }
    const update = await call(s, "gitpod.v1.RunnerConfigurationService/UpdateSCMIntegration", { id: "0190a0a0-0000-7000-8000-000000000000", oauth_plaintext_client_secret: 987654 });
    assert.equal(update.body.code, "invalid_argument");
    assert.doesNotMatch(update.body.message, /987654/);
    // A key spelled with escapes is the same key.
    const escaped = await fetch(`${s.url}/${CREATE}`, {
      method: "POST", headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json" },
      body: `{"runnerId":"${runnerId}","scmId":"github","host":"github.com","oauthClientId":"c","oauth\\u0050laintextClientSecret":24681357}`,
    });
    assert.doesNotMatch(await escaped.text(), /24681357/);
    // Nor is a secret sent without quotes, which makes the body no JSON at all.
    for (const [body, position] of [[`{"runnerId":"${runnerId}","oauthPlaintextClientSecret":TOPSECRET123}`, ""], [`{"oauthPlaintextClientSecret":"TOP\\qSECRET"}`, " \\(at position 35[^)]*\\)"]]) {
      const r = await fetch(`${s.url}/${CREATE}`, { method: "POST", headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json" }, body });
      const answer = (await r.json()) as { code: string; message: string };
      assert.equal(answer.code, "invalid_argument");
      // (Newer V8 adds the line and column to the position.)
      assert.match(answer.message, new RegExp(`^cannot decode message gitpod\\.v1\\.CreateSCMIntegrationRequest from JSON: the body is not valid JSON${position}; the text there is not repeated, as it may be a secret$`));
      assert.doesNotMatch(answer.message, /SECRET/);
    }
  });

  it("refuses OAuth for a runner without a public key with failed_precondition", async () => {
    const { runnerId } = await createRunner(s);
    const r = await call(s, CREATE, { runnerId, scmId: "github", host: "github.com", oauthClientId: "c", oauthPlaintextClientSecret: "x" });
    assert.equal(r.body.code, "failed_precondition");
    assert.match(r.body.message, /^runner_id: runner does not have a public key/);
  });

  it("rejects bad input with invalid_argument naming each field, and writes nothing", async () => {
    const { runnerId } = await createRunner(s);
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ runnerId: "nope", scmId: "github", host: "github.com", pat: true }, "runner_id"],
      [{ runnerId, scmId: "svn", host: "github.com", pat: true }, "scm_id"],
      [{ runnerId, scmId: "github", host: "https://github.com", pat: true }, "host"],
      [{ runnerId, scmId: "github", host: "user@github.com", pat: true }, "host"],
      [{ runnerId, scmId: "github", host: "github.com?x=1", pat: true }, "host"],
      [{ runnerId, scmId: "github", host: "git hub.com", pat: true }, "host"],
      [{ runnerId, scmId: "github", host: "0x7f.1", pat: true }, "host"], // 127.0.0.1 to URL parsers
      [{ runnerId, scmId: "github", host: "git.example.42", pat: true }, "host"],
      [{ runnerId, scmId: "github", host: "", pat: true }, "host"],
      [{ runnerId, scmId: "github", host: "github.com" }, "pat"],
      [{ runnerId, scmId: "github", host: "github.com", oauthClientId: "c" }, "oauth_plaintext_client_secret"],
      [{ runnerId, scmId: "github", host: "github.com", oauthPlaintextClientSecret: "x" }, "oauth_client_id"],
      [{ runnerId, scmId: "github", host: "github.com", pat: true, issuerUrl: "https://a.example" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https:login.microsoftonline.com/t/v2.0" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https:///login.microsoftonline.com/t/v2.0" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https://login.microsoftonline.com\\t\\v2.0" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "HTTP://login.microsoftonline.com/t/v2.0" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https://login.microsoftonline%2Ecom/t/v2.0" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https://0x7f.1/t/v2.0" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https://@login.microsoftonline.com/t/v2.0" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https://login.microsoftonline.com/t/v2.0#" }, "issuer_url"],
      [{ runnerId, scmId: "github", host: "github.com", pat: true, virtualDirectory: "/tfs" }, "virtual_directory"],
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true }, "virtual_directory"],
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "tfs" }, "virtual_directory"],
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "/tfs/../x" }, "virtual_directory"],
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "/tfs/.%2E/x" }, "virtual_directory"],
      // Escapes must be well formed, as in a host's path: a runner's URL would not parse.
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "/tfs%zz" }, "virtual_directory"],
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "/tfs%" }, "virtual_directory"],
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "/tfs//x" }, "virtual_directory"],
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "/" }, "virtual_directory"],
      [{ runnerId, scmId: "github", host: "git.example.com/a/%2e%2e", pat: true }, "host"],
      [{ runnerId, scmId: "github", host: "github.com.", pat: true }, "host"],
      // An OpenID issuer has no query.
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https://login.microsoftonline.com/t/v2.0?x=1" }, "issuer_url"],
    ];
    for (const [body, field] of cases) {
      const r = await call(s, CREATE, body);
      assert.equal(r.body.code, "invalid_argument", `${JSON.stringify(body)} → ${JSON.stringify(r.body)}`);
      assert.match(r.body.message, new RegExp(`\\b${field}\\b`));
      const detail = r.body.details?.find((d: { type: string }) => d.type === "buf.validate.Violations");
      assert.ok(detail, "carries buf.validate.Violations");
      assert.ok(detail.debug.violations.some((v: any) => v.field.elements[0].fieldName === field));
    }
    // A lone surrogate (JSON's "\ud800" escape, unpaired) is no text UTF-8 can hold: stored or
    // sealed, it would become U+FFFD, and the runner would get another client or secret.
    // protobuf-es refuses it as it reads the field, naming it, before any check of ours.
    const unpaired: Array<[Record<string, unknown>, string]> = [
      [{ runnerId, scmId: "github", host: "github.com", oauthClientId: "client\ud800", oauthPlaintextClientSecret: "x" }, "oauth_client_id"],
      [{ runnerId, scmId: "github", host: "github.com", oauthClientId: "c", oauthPlaintextClientSecret: "s3cret\udc00" }, "oauth_plaintext_client_secret"],
      [{ runnerId, scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "c", oauthPlaintextClientSecret: "x", issuerUrl: "https://login.microsoftonline.com/t\ud83d/v2.0" }, "issuer_url"],
      [{ runnerId, scmId: "azuredevops_server", host: "tfs.example.com", pat: true, virtualDirectory: "/tfs\udfff" }, "virtual_directory"],
      [{ runnerId, scmId: "github", host: "git\ud800hub.com", pat: true }, "host"],
    ];
    for (const [body, field] of unpaired) {
      const r = await call(s, CREATE, body);
      assert.equal(r.body.code, "invalid_argument", `${JSON.stringify(body)} → ${JSON.stringify(r.body)}`);
      assert.equal(r.body.message, `cannot decode field gitpod.v1.CreateSCMIntegrationRequest.${field} from JSON: expected string: invalid UTF8`);
    }
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.runnerId, runnerId)).all().length, 0);
    // A missing host is `required`, as every other missing field is; a bad one `host.valid`.
    const ruleOf = async (host: string) => (await call(s, CREATE, { runnerId, scmId: "github", host, pat: true })).body.details[0].debug.violations[0].ruleId;
    assert.deepEqual([await ruleOf(""), await ruleOf("github.com.")], ["required", "host.valid"]);
    // An invisible character is named as such, not taken for part of an international name.
    const hidden = await call(s, CREATE, { runnerId, scmId: "github", host: "git\u200bhub.com", pat: true });
    assert.equal(hidden.body.message, "host: must not contain whitespace, control characters or invisible formatting (zero-width spaces, direction marks)");
    const ok = await call(s, CREATE, { runnerId, scmId: "azuredevops_server", host: "tfs.example.com:8443/collection", pat: true, virtualDirectory: "/tfs" });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    // A virtual directory keeps its case and escapes, and loses a trailing slash, on
    // create and on update alike.
    const slashed = await call(s, CREATE, { runnerId, scmId: "azuredevops_server", host: "ado.example.com", pat: true, virtualDirectory: "/TFS%2fA/" });
    assert.equal(slashed.status, 200, JSON.stringify(slashed.body));
    const shown = async (id: string) => (await call(s, "gitpod.v1.RunnerConfigurationService/GetSCMIntegration", { id })).body.integration.virtualDirectory;
    assert.equal(await shown(slashed.body.id), "/TFS%2fA");
    assert.equal((await call(s, "gitpod.v1.RunnerConfigurationService/UpdateSCMIntegration", { id: ok.body.id, virtualDirectory: "/tfs/" })).status, 200);
    assert.equal(await shown(ok.body.id), "/tfs");
  });

  it("keeps organizations apart: another organization's runner is not_found", async () => {
    const { runnerId } = await createRunner(s);
    const r = await call(s, CREATE, { runnerId, scmId: "github", host: "github.com", pat: true }, s.otherToken);
    assert.equal(r.body.code, "not_found");
    const missing = await call(s, CREATE, { runnerId: "01a211f2-0000-7000-8000-000000000000", scmId: "github", host: "github.com", pat: true });
    assert.equal(missing.body.code, "not_found");
  });

  it("checks tokens: missing, malformed and unknown are unauthenticated; wrong kinds are permission_denied", async () => {
    const body = { runnerId: "01a211f2-0000-7000-8000-000000000000", scmId: "github", host: "github.com", pat: true };
    assert.equal((await call(s, CREATE, body, null)).body.code, "unauthenticated");
    assert.equal((await call(s, CREATE, body, "garbage")).body.code, "unauthenticated");
    assert.equal((await call(s, CREATE, body, "scmapi_" + "A".repeat(43))).body.code, "unauthenticated");
    const { runnerToken } = await createRunner(s);
    assert.equal((await call(s, CREATE, body, runnerToken)).body.code, "permission_denied");
    const signupWithApi = await call(s, "gitpod.v1.RunnerInteractionService/Signup", { publicKey: Buffer.alloc(32, 9).toString("base64") });
    assert.equal(signupWithApi.body.code, "permission_denied");
  });

  it("a revoked API token fails on its next request", async () => {
    const { id, token } = createApiToken(s.db, "acme");
    assert.equal((await call(s, "gitpod.v1.RunnerService/CreateRunner", { name: "abc", kind: 1, provider: 1 }, token)).status, 200);
    revokeApiToken(s.db, id);
    const r = await call(s, "gitpod.v1.RunnerService/CreateRunner", { name: "abc", kind: 1, provider: 1 }, token);
    assert.equal(r.body.code, "unauthenticated");
    assert.ok(!s.logs.join("").includes(token), "tokens never reach the log");
  });

  it("refuses Signup keys that are not 32 bytes or of low order", async () => {
    const { runnerToken } = await createRunner(s);
    for (const key of [Buffer.alloc(31, 7), Buffer.alloc(32, 0), Buffer.from([1, ...Array(31).fill(0)])]) {
      const r = await call(s, "gitpod.v1.RunnerInteractionService/Signup", { publicKey: key.toString("base64") }, runnerToken);
      assert.equal(r.body.code, "invalid_argument");
      assert.match(r.body.message, /public_key/);
    }
  });

  it("says which is wrong with a Signup key: its length, or its order", async () => {
    const { runnerToken } = await createRunner(s);
    const cases: [Buffer, string][] = [
      [Buffer.alloc(31, 7), "public_key: must be exactly 32 bytes, got 31"],
      [Buffer.alloc(33, 7), "public_key: must be exactly 32 bytes, got 33"],
      [Buffer.alloc(0), "public_key: must be exactly 32 bytes, got 0"],
      [Buffer.alloc(32, 0), "public_key: is a low-order X25519 point (such as all zeros); send the runner's real public key"],
    ];
    for (const [key, message] of cases) {
      const r = await call(s, "gitpod.v1.RunnerInteractionService/Signup", { publicKey: key.toString("base64") }, runnerToken);
      assert.equal(r.body.code, "invalid_argument", JSON.stringify(r.body));
      assert.equal(r.body.message, message);
    }
  });
});

describe("unexpected failures", () => {
  it("answer an opaque internal error with the request id, never driver text", async () => {
    const s = await startServer();
    try {
      const { runnerId } = await createRunner(s);
      // Breaks the store underneath the service: the insert now fails inside the driver.
      s.db.$client.exec("DROP TABLE scm_integrations");
      const r = await call(s, CREATE, { runnerId, scmId: "github", host: "github.com", pat: true });
      assert.equal(r.status, 500);
      assert.equal(r.body.code, "internal");
      const requestId = r.headers.get("x-request-id")!;
      assert.ok(r.body.message.includes(requestId));
      assert.doesNotMatch(r.body.message, /scm_integrations|SQL|table/i);
      // The operator's log has what the client does not: the driver's error, by name, code and text.
      const logged = s.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "unexpected error");
      assert.deepEqual(
        logged.map(({ time: _, ...rest }) => rest),
        [{ level: "error", msg: "unexpected error", request_id: requestId, procedure: `/${CREATE}`, error: "SqliteError", driver_code: "SQLITE_ERROR", detail: "no such table: scm_integrations" }],
      );
    } finally {
      await s.close();
    }
  });
});
