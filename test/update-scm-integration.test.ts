import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { eq } from "drizzle-orm";
import { open } from "../src/crypto/sealed-box.js";
import { hashToken } from "../src/crypto/tokens.js";
import { updateScmIntegration } from "../src/services/scm-integrations.js";
import { scmIntegrations } from "../src/store/schema.js";
import { call, createRunner, signUp, startServer, type TestServer } from "./harness.js";

const CFG = "gitpod.v1.RunnerConfigurationService";

function stored(s: TestServer, id: string) {
  return s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, id)).get()!;
}

describe("UpdateSCMIntegration, GetSCMIntegration, DeleteSCMIntegration", () => {
  let s: TestServer;
  let runnerId: string;
  let keys: Awaited<ReturnType<typeof signUp>>;
  let patOnly: string;
  let github: string;
  let server: string;
  let entra: string;

  async function create(body: object): Promise<string> {
    const r = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, ...body });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.id;
  }

  before(async () => {
    s = await startServer();
    const runner = await createRunner(s);
    runnerId = runner.runnerId;
    keys = await signUp(s, runner.runnerToken);
    patOnly = await create({ scmId: "gitlab", host: "gitlab.com", pat: true });
    github = await create({ scmId: "github", host: "github.com", oauthClientId: "gh-1", oauthPlaintextClientSecret: "gh-secret", pat: false });
    server = await create({ scmId: "azuredevops_server", host: "tfs.acme.example", pat: true, virtualDirectory: "/tfs" });
    entra = await create({
      scmId: "azuredevops_entra", host: "dev.azure.com/acme", oauthClientId: "e-1", oauthPlaintextClientSecret: "e-secret",
      issuerUrl: "https://login.microsoftonline.com/t/v2.0",
    });
  });
  after(() => s.close());

  it("refuses every update that breaks a rule, naming the field, and changes nothing", async () => {
    const cases: [string, () => object, string][] = [
      ["id", () => ({ id: "not-a-uuid", pat: true }), "id"],
      ["new client id without its secret", () => ({ id: github, oauthClientId: "gh-2" }), "oauth_plaintext_client_secret"],
      ["client id alone does not turn OAuth on", () => ({ id: patOnly, oauthClientId: "gl-1" }), "oauth_plaintext_client_secret"],
      ["a secret alone does not turn OAuth on", () => ({ id: patOnly, oauthPlaintextClientSecret: "gl-secret" }), "oauth_client_id"],
      ["no method left", () => ({ id: patOnly, pat: false }), "pat"],
      ["no method left after removing OAuth", () => ({ id: github, oauthClientId: "" }), "pat"],
      ["issuer without OAuth", () => ({ id: patOnly, issuerUrl: "https://issuer.example" }), "issuer_url"],
      ["issuer not https", () => ({ id: github, issuerUrl: "http://issuer.example" }), "issuer_url"],
      ["virtual directory outside Azure DevOps Server", () => ({ id: github, virtualDirectory: "/tfs" }), "virtual_directory"],
      ["Azure DevOps Server needs its virtual directory", () => ({ id: server, virtualDirectory: "" }), "virtual_directory"],
      ["Azure DevOps Server is PAT only", () => ({ id: server, oauthClientId: "c", oauthPlaintextClientSecret: "s" }), "oauth_client_id"],
      ["Entra OAuth needs its issuer", () => ({ id: entra, issuerUrl: "" }), "issuer_url"],
      ["client id with whitespace", () => ({ id: github, oauthClientId: "a b", oauthPlaintextClientSecret: "s" }), "oauth_client_id"],
      ["client id with a no-break space", () => ({ id: github, oauthClientId: "Iv1\u00a0new", oauthPlaintextClientSecret: "s" }), "oauth_client_id"],
      ["client id with a zero-width space", () => ({ id: github, oauthClientId: "Iv1abc\u200b", oauthPlaintextClientSecret: "s" }), "oauth_client_id"],
      ["client id with a direction mark", () => ({ id: github, oauthClientId: "\u202eIv1abc", oauthPlaintextClientSecret: "s" }), "oauth_client_id"],
      ["issuer with an ideographic space", () => ({ id: entra, issuerUrl: "https://login.example.com/t\u3000/v2.0" }), "issuer_url"],
      ["secret too large", () => ({ id: github, oauthPlaintextClientSecret: "x".repeat(5000) }), "oauth_plaintext_client_secret"],
    ];
    const before = s.db.select().from(scmIntegrations).all();
    for (const [name, body, field] of cases) {
      const r = await call(s, `${CFG}/UpdateSCMIntegration`, body());
      assert.equal(r.body.code, "invalid_argument", `${name}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.message, new RegExp(`^${field}: `), name);
      assert.equal(r.headers.get("x-should-retry"), "false");
    }
    assert.deepEqual(s.db.select().from(scmIntegrations).all(), before, "no row changed");
  });

  it("unknown ids are not_found for Get, Update and Delete", async () => {
    const unknown = "0190a0a0-0000-7000-8000-000000000000";
    for (const method of ["GetSCMIntegration", "UpdateSCMIntegration", "DeleteSCMIntegration"]) {
      const r = await call(s, `${CFG}/${method}`, { id: unknown, pat: true });
      assert.equal(r.status, 404, method);
      assert.equal(r.body.code, "not_found");
      assert.match(r.body.message, new RegExp(unknown));
    }
  });

  it("Get shows oauth only when configured, with the sealed secret and issuer", async () => {
    const pat = (await call(s, `${CFG}/GetSCMIntegration`, { id: patOnly })).body.integration;
    assert.deepEqual(pat, { id: patOnly, scmId: "gitlab", host: "gitlab.com", pat: true, runnerId });
    const e = (await call(s, `${CFG}/GetSCMIntegration`, { id: entra })).body.integration;
    assert.equal(e.oauth.clientId, "e-1");
    assert.equal(e.oauth.issuerUrl, "https://login.microsoftonline.com/t/v2.0");
    assert.equal(open(Buffer.from(e.oauth.encryptedClientSecret, "base64"), keys.publicKey, keys.secretKey), "e-secret");
    const tfs = (await call(s, `${CFG}/GetSCMIntegration`, { id: server })).body.integration;
    assert.equal(tfs.virtualDirectory, "/tfs");
    assert.equal(tfs.oauth, undefined);
  });

  it("applies updates by field presence", async () => {
    // Toggling PAT with the client id unchanged keeps the very same ciphertext.
    const sealed = stored(s, github).oauthEncryptedSecret!;
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id: github, oauthClientId: "gh-1", pat: true })).status, 200);
    assert.deepEqual(stored(s, github).oauthEncryptedSecret, sealed);
    assert.equal(stored(s, github).pat, true);

    // A new client id with its secret: both replaced, sealed to the runner's key.
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id: github, oauthClientId: "gh-2", oauthPlaintextClientSecret: "gh-secret-2" })).status, 200);
    const row = stored(s, github);
    assert.equal(row.oauthClientId, "gh-2");
    assert.equal(open(row.oauthEncryptedSecret!, keys.publicKey, keys.secretKey), "gh-secret-2");
    assert.deepEqual(row.oauthSealedTo, keys.publicKey);

    // Turning OAuth on for a PAT-only integration.
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id: patOnly, oauthClientId: "gl-1", oauthPlaintextClientSecret: "gl-secret" })).status, 200);
    assert.equal(open(stored(s, patOnly).oauthEncryptedSecret!, keys.publicKey, keys.secretKey), "gl-secret");

    // Removing OAuth from Entra takes the secret and the issuer with it; PAT keeps it usable.
    // A secret sent along changes nothing: "" removes OAuth regardless, as the public API has it.
    const removed = await call(s, `${CFG}/UpdateSCMIntegration`, { id: entra, oauthClientId: "", oauthPlaintextClientSecret: "ignored", pat: true });
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    const plain = stored(s, entra);
    assert.deepEqual([plain.oauthClientId, plain.oauthEncryptedSecret, plain.oauthSealedTo, plain.issuerUrl, plain.pat], [null, null, null, null, true]);

    // Azure DevOps Server: the virtual directory can move but not go. An update stamps the row
    // (set far back first, so that a stamp left alone shows).
    s.db.update(scmIntegrations).set({ updatedAt: 1 }).where(eq(scmIntegrations.id, server)).run();
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id: server, virtualDirectory: "/collections" })).status, 200);
    assert.equal(stored(s, server).virtualDirectory, "/collections");
    assert.ok(stored(s, server).updatedAt >= stored(s, server).createdAt);
  });

  it("an OAuth secret for a runner that never signed up is failed_precondition", async () => {
    const { runnerId: bare } = await createRunner(s, s.token, "no-key-runner");
    const r0 = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId: bare, scmId: "github", host: "github.com", pat: true });
    const r = await call(s, `${CFG}/UpdateSCMIntegration`, { id: r0.body.id, oauthClientId: "c", oauthPlaintextClientSecret: "s" });
    assert.equal(r.body.code, "failed_precondition");
    // Named by a field the Update request has (it has no runner_id).
    assert.match(r.body.message, /^oauth_plaintext_client_secret: runner does not have a public key/);
    assert.equal(stored(s, r0.body.id).oauthClientId, null);
  });

  it("Delete removes the integration and its sealed secret", async () => {
    const id = await create({ scmId: "github", host: "delete-me.example", oauthClientId: "d", oauthPlaintextClientSecret: "gone" });
    assert.equal((await call(s, `${CFG}/DeleteSCMIntegration`, { id })).status, 200);
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, id)).get(), undefined);
    assert.equal((await call(s, `${CFG}/GetSCMIntegration`, { id })).body.code, "not_found");
    // The host is free again.
    await create({ scmId: "github", host: "delete-me.example", pat: true });
  });
});

describe("an Update run again by the group commit", () => {
  it("judges the row afresh: a refusal is not repeated once per run", async () => {
    const s = await startServer();
    try {
      const { runnerId } = await createRunner(s);
      const made = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", { runnerId, scmId: "gitlab", host: "gitlab.com", pat: true });
      assert.equal(made.status, 200, JSON.stringify(made.body));
      const sqlite = s.db.$client;
      sqlite.exec("CREATE TABLE blobs (v BLOB)");
      // No page more than the file has: the big write in the same batch makes SQLite give
      // the transaction up, and the Update, refused in it, runs again in the next batch.
      sqlite.pragma(`max_page_count = ${sqlite.pragma("page_count", { simple: true }) as number}`);
      const orgId = s.db.select({ orgId: scmIntegrations.orgId }).from(scmIntegrations).where(eq(scmIntegrations.id, made.body.id)).get()!.orgId;
      const tokenId = sqlite.prepare("SELECT id FROM api_tokens WHERE token_hash = ?").pluck().get(hashToken(s.token)) as string;
      const update = updateScmIntegration(s.db, { kind: "api", orgId, tokenId }, { id: made.body.id, oauthClientId: "new-client" });
      const big = s.db.write(() => sqlite.prepare("INSERT INTO blobs VALUES (?)").run(Buffer.alloc(64 * 1024)));
      await assert.rejects(big, (err: Error & { code?: string }) => err.code === "SQLITE_FULL");
      await assert.rejects(update, (err: Error) => {
        assert.equal(err.message.match(/oauth_plaintext_client_secret:/g)?.length, 1, err.message);
        return true;
      });
    } finally {
      await s.close();
    }
  });
});
