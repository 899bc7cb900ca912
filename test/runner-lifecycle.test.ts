import type { Interceptor } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { eq } from "drizzle-orm";
import { newKeyPair, open } from "../src/crypto/sealed-box.js";
import { hashToken } from "../src/crypto/tokens.js";
import { httpsUrlProblem } from "../src/domain/checks.js";
import { sealsRequested } from "../src/crypto/seal-worker.js";
import { createApiToken, revokeApiToken } from "../src/services/accounts.js";
import { deleteRunner, signup } from "../src/services/runners.js";
import { dropSomeStaleSecrets, setRunnerPublicKey, type SecretsWalk } from "../src/store/runners.js";
import { createScmIntegration } from "../src/services/scm-integrations.js";
import { runners, scmIntegrations } from "../src/store/schema.js";
import { call, createRunner, PUBLIC_URL, signUp, startServer, type TestServer } from "./harness.js";

const CFG = "gitpod.v1.RunnerConfigurationService";
const RUNNERS = "gitpod.v1.RunnerService";
const RUNNER_SIDE = "gitpod.v1.RunnerInteractionService";

const SCHEMA = {
  version: "runner-2.4",
  scm: [
    { scmId: "github", name: "GitHub", defaultHosts: ["github.com"], oauth: {}, pat: {} },
    {
      scmId: "gitea", name: "Gitea", defaultHosts: ["Gitea.Acme.dev"],
      pat: { description: "An access token with repository scope.", docsLink: "https://docs.gitea.com/development/api-usage" },
      // A runner cannot choose the callback; the service derives it.
      oauth: { callbackUrl: "https://evil.example/steal" },
    },
  ],
};

/** What the runner itself sees of its integrations, by its own token. */
/**
 * Writes 1,200 copies of the integration `id`, on hosts h1 to h1200, directly: through the API
 * they would take a while. `salt` keeps their ids apart from other copies'.
 */
function copyIntegration(s: TestServer, id: string, salt: number): void {
  s.db.$client
    .prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
       INSERT INTO scm_integrations (id, org_id, runner_id, scm_id, host, pat, oauth_client_id, oauth_encrypted_secret, oauth_sealed_to, issuer_url, virtual_directory, created_at, updated_at)
       SELECT printf('%08x-0000-7000-8000-%012x', i, i + ?), org_id, runner_id, scm_id, 'h' || i || '.example.com', pat,
         oauth_client_id, oauth_encrypted_secret, oauth_sealed_to, issuer_url, virtual_directory, created_at, updated_at
       FROM scm_integrations, n WHERE id = ?`,
    )
    .run(salt, id);
}

async function runnerList(s: TestServer, runnerId: string, runnerToken: string, extra: object = {}) {
  const r = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId, ...extra }, runnerToken);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.scmIntegrations as any[];
}

/**
 * A server that runs `act` on every call after authentication, just before the handler
 * writes: what another call committed in that moment would do.
 */
async function startActingBeforeWrites(act: (method: string, self: TestServer) => Promise<void> | void): Promise<TestServer> {
  let self: TestServer | undefined;
  const interceptor: Interceptor = (next) => async (req) => {
    await act(req.method.name, self!);
    return next(req);
  };
  self = await startServer({ interceptors: [interceptor] });
  return self;
}

describe("a runner's whole life", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("publishes its schema, gets an OAuth integration, opens the secret, and opens it again after a rotation", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const keys = await signUp(s, runnerToken);
    const published = await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: SCHEMA }, runnerToken);
    assert.equal(published.status, 200, JSON.stringify(published.body));

    const schema = (await call(s, `${CFG}/GetRunnerConfigurationSchema`, { runnerId })).body.schema;
    assert.equal(schema.version, "runner-2.4");
    assert.deepEqual(schema.scm.map((e: any) => e.scmId), ["github", "gitea"]);
    const gitea = schema.scm[1];
    assert.deepEqual(gitea.defaultHosts, ["gitea.acme.dev"]);
    assert.equal(gitea.oauth.callbackUrl, `${PUBLIC_URL}/auth/oauth2/callback`);
    assert.equal(gitea.pat.description, "An access token with repository scope.");
    // GitHub sent no PAT help: the built-in text for github fills in.
    assert.match(schema.scm[0].pat.description, /token/);
    assert.match(schema.scm[0].pat.docsLink, /^https:\/\/docs\.github\.com\//);

    // Create now checks scm_id against the published schema.
    const gitlab = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitlab", host: "gitlab.com", pat: true });
    assert.equal(gitlab.status, 400);
    assert.match(gitlab.body.message, /^scm_id: .*allowed: github, gitea/);

    const created = await call(s, `${CFG}/CreateSCMIntegration`, {
      runnerId, scmId: "gitea", host: "gitea.acme.dev", oauthClientId: "gitea-app", oauthPlaintextClientSecret: "gitea-secret-1",
    });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const id = created.body.id;

    const [mine] = await runnerList(s, runnerId, runnerToken);
    assert.equal(mine.id, id);
    assert.equal(mine.oauth.clientId, "gitea-app");
    assert.equal(open(Buffer.from(mine.oauth.encryptedClientSecret, "base64"), keys.publicKey, keys.secretKey), "gitea-secret-1");

    const rotated = await call(s, `${CFG}/UpdateSCMIntegration`, { id, oauthPlaintextClientSecret: "gitea-secret-2" });
    assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
    const [after] = await runnerList(s, runnerId, runnerToken, { filter: { scmIntegrationIds: [id] } });
    assert.equal(open(Buffer.from(after.oauth.encryptedClientSecret, "base64"), keys.publicKey, keys.secretKey), "gitea-secret-2");

    // A runner may publish an empty schema; a create is then told so, not handed an empty list.
    assert.equal((await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: {} }, runnerToken)).status, 200);
    const none = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "github.com", pat: true });
    assert.equal(none.body.code, "invalid_argument");
    assert.match(none.body.message, /^scm_id: "github" is not in the runner's configuration schema, which lists no SCM at all: the runner published an empty one/);
  });

  it("after a Signup with a new key, old secrets read as empty until an Update seals a new one", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const oldKeys = await signUp(s, runnerToken);
    const { body } = await call(s, `${CFG}/CreateSCMIntegration`, {
      runnerId, scmId: "github", host: "github.com", oauthClientId: "gh-app", oauthPlaintextClientSecret: "before-rotation", pat: true,
    });
    const id = body.id;
    // Signing up again with the same key changes nothing.
    const again = await call(s, `${RUNNER_SIDE}/Signup`, { publicKey: oldKeys.publicKey.toString("base64") }, runnerToken);
    assert.equal(again.status, 200);
    assert.equal((await runnerList(s, runnerId, runnerToken))[0].oauth.encryptedClientSecret.length > 0, true);

    // A PAT-only integration has no secret to drop, and is not rewritten (marked to tell).
    const patOnly = (await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitlab", host: "gitlab.com", pat: true })).body.id;
    s.db.update(scmIntegrations).set({ updatedAt: 1 }).where(eq(scmIntegrations.runnerId, runnerId)).run();
    const newKeys = await signUp(s, runnerToken);
    const updatedAt = (which: string) => s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, which)).get()!.updatedAt;
    assert.equal(updatedAt(patOnly), 1, "left as it was");
    assert.notEqual(updatedAt(id), 1, "its secret dropped");
    const [stale] = (await runnerList(s, runnerId, runnerToken)).filter((i: { id: string }) => i.id === id);
    assert.equal(stale.oauth.clientId, "gh-app", "the OAuth configuration stays");
    assert.equal(stale.oauth.encryptedClientSecret ?? "", "", "no ciphertext the runner cannot open");
    const adminView = (await call(s, `${CFG}/GetSCMIntegration`, { id })).body.integration;
    assert.equal(adminView.oauth.encryptedClientSecret ?? "", "");
    const row = s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, id)).get()!;
    assert.equal(row.oauthEncryptedSecret, null, "the old ciphertext is gone from storage too");

    // Turning PAT off now would leave no usable method.
    const noMethod = await call(s, `${CFG}/UpdateSCMIntegration`, { id, pat: false });
    assert.equal(noMethod.body.code, "invalid_argument");
    assert.match(noMethod.body.message, /^pat: would leave no usable authentication method/);
    // Changes that do not touch the secret keep it marked as missing.
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id, oauthClientId: "gh-app", pat: true })).status, 200);
    assert.equal((await runnerList(s, runnerId, runnerToken))[0].oauth.encryptedClientSecret ?? "", "");

    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id, oauthPlaintextClientSecret: "after-rotation" })).status, 200);
    const [fresh] = await runnerList(s, runnerId, runnerToken);
    assert.equal(open(Buffer.from(fresh.oauth.encryptedClientSecret, "base64"), newKeys.publicKey, newKeys.secretKey), "after-rotation");
    assert.equal(open(Buffer.from(fresh.oauth.encryptedClientSecret, "base64"), oldKeys.publicKey, oldKeys.secretKey), null);

    // Should the key ever change another way than Signup, reads still hide what the
    // runner cannot open, because each secret records the key it was sealed to.
    s.db.update(runners).set({ publicKey: oldKeys.publicKey }).where(eq(runners.id, runnerId)).run();
    assert.equal((await runnerList(s, runnerId, runnerToken))[0].oauth.encryptedClientSecret ?? "", "");
    assert.equal((await call(s, `${CFG}/GetSCMIntegration`, { id })).body.integration.oauth.encryptedClientSecret ?? "", "");
  });

  it("an OAuth-only integration whose secret a new key dropped takes Updates that leave it no worse, and still refuses losing OAuth", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    await signUp(s, runnerToken);
    const { body } = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "oauth-only.example.com", oauthClientId: "c", oauthPlaintextClientSecret: "s" });
    const id = body.id;
    await signUp(s, runnerToken);
    // Sent again as they are (as Terraform does), or with nothing but the id: before, each was
    // refused as leaving "no usable method", naming pat, which none of them sent.
    for (const update of [{ id }, { id, pat: false }, { id, oauthClientId: "c" }]) {
      const r = await call(s, `${CFG}/UpdateSCMIntegration`, update);
      assert.equal(r.status, 200, `${JSON.stringify(update)}: ${JSON.stringify(r.body)}`);
    }
    const still = (await call(s, `${CFG}/GetSCMIntegration`, { id })).body.integration;
    assert.deepEqual([still.oauth.clientId, still.oauth.encryptedClientSecret ?? "", still.pat ?? false], ["c", "", false]);
    const removed = await call(s, `${CFG}/UpdateSCMIntegration`, { id, oauthClientId: "" });
    assert.equal(removed.body.code, "invalid_argument");
    assert.match(removed.body.message, /^pat: at least one authentication method is required/);
  });

  it("integrations whose scm_id leaves the schema stay readable and deletable, and cannot gain anything", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const { body } = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "bitbucket", host: "bitbucket.org", pat: true });
    const id = body.id;
    const onlyGithub = { version: "2", scm: [{ scmId: "github", name: "GitHub", defaultHosts: ["github.com"], oauth: {}, pat: {} }] };
    assert.equal((await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: onlyGithub }, runnerToken)).status, 200);

    assert.equal((await call(s, `${CFG}/GetSCMIntegration`, { id })).body.integration.scmId, "bitbucket");
    assert.equal((await runnerList(s, runnerId, runnerToken)).length, 1);
    const update = await call(s, `${CFG}/UpdateSCMIntegration`, { id, oauthClientId: "new-app", oauthPlaintextClientSecret: "s" });
    assert.equal(update.body.code, "failed_precondition");
    assert.match(update.body.message, /bitbucket.*no longer in runner.*nothing can be added/);
    // Changes that add nothing are still allowed.
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id, pat: true })).status, 200);
    assert.equal((await call(s, `${CFG}/DeleteSCMIntegration`, { id })).status, 200);
    assert.equal((await call(s, `${CFG}/GetSCMIntegration`, { id })).body.code, "not_found");
  });

  it("an entry offers only the methods it carries: oauth, pat or both", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const keys = await signUp(s, runnerToken);
    const publish = (scm: object[]) => call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: { version: "3", scm } }, runnerToken);

    // An entry that offers nothing, and Azure DevOps Server without PAT, are refused.
    const none = await publish([{ scmId: "gitea", name: "Gitea" }, { scmId: "azuredevops_server", oauth: {} }]);
    assert.equal(none.status, 400);
    assert.equal(none.body.message, "config_schema.scm[0]: must offer at least one authentication method: send oauth, pat or both; config_schema.scm[1].pat: is required: azuredevops_server takes personal access tokens only");

    const published = await publish([
      { scmId: "gitea", name: "Gitea", pat: {} },
      { scmId: "forgejo", name: "Forgejo", oauth: {} },
      { scmId: "github", name: "GitHub", oauth: {}, pat: {} },
      { scmId: "azuredevops_server", oauth: {}, pat: {} },
    ]);
    assert.equal(published.status, 200, JSON.stringify(published.body));
    const shown = (await call(s, `${CFG}/GetRunnerConfigurationSchema`, { runnerId })).body.schema.scm;
    assert.deepEqual(
      shown.map((e: any) => [e.scmId, e.oauth !== undefined, e.pat !== undefined]),
      [["gitea", false, true], ["forgejo", true, false], ["github", true, true], ["azuredevops_server", false, true]],
    );

    const oauth = { oauthClientId: "app", oauthPlaintextClientSecret: "s3cret" };
    const seals = sealsRequested();
    const refusedOAuth = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitea", host: "gitea.example", ...oauth });
    assert.equal(refusedOAuth.status, 400);
    assert.equal(refusedOAuth.body.message, "oauth_client_id: the runner takes personal access tokens only for gitea; remove the OAuth settings");
    const refusedPat = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "forgejo", host: "forgejo.example", pat: true, ...oauth });
    assert.equal(refusedPat.status, 400);
    assert.equal(refusedPat.body.message, "pat: the runner takes OAuth only for forgejo; set pat to false");
    assert.equal(sealsRequested(), seals + 1, "the secret refused with its entry was not sealed; the one refused for PAT was, ahead");
    const listed = async () => {
      const r = await call(s, `${CFG}/ListSCMIntegrations`, { filter: { runnerIds: [runnerId] } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body.integrations ?? []).map((i: any) => i.host).sort();
    };
    assert.deepEqual(await listed(), [], "nothing was created");

    const gitea = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitea", host: "gitea.example", pat: true });
    const forgejo = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "forgejo", host: "forgejo.example", ...oauth });
    const github = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "github.com", pat: true, ...oauth });
    for (const r of [gitea, forgejo, github]) assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(await listed(), ["forgejo.example", "gitea.example", "github.com"]);

    // Update may not add what the entry does not offer either.
    const addOAuth = await call(s, `${CFG}/UpdateSCMIntegration`, { id: gitea.body.id, ...oauth });
    assert.match(addOAuth.body.message, /^oauth_client_id: the runner takes personal access tokens only for gitea/);
    const addPat = await call(s, `${CFG}/UpdateSCMIntegration`, { id: forgejo.body.id, pat: true });
    assert.match(addPat.body.message, /^pat: the runner takes OAuth only for forgejo/);

    // The runner stops offering PAT for github: the integration keeps what it has and may
    // change its OAuth app, but PAT once off cannot come back.
    assert.equal((await publish([{ scmId: "github", name: "GitHub", oauth: {} }])).status, 200);
    const id = github.body.id;
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id, oauthClientId: "app-2", oauthPlaintextClientSecret: "s2" })).status, 200);
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id, pat: false })).status, 200);
    assert.match((await call(s, `${CFG}/UpdateSCMIntegration`, { id, pat: true })).body.message, /^pat: the runner takes OAuth only for github/);
    const kept = (await call(s, `${CFG}/GetSCMIntegration`, { id })).body.integration;
    assert.equal(kept.oauth.clientId, "app-2");
    assert.equal(kept.pat ?? false, false);

    // Remembered without OAuth for gitea, the runner is looked up again once its schema offers it.
    assert.equal((await publish([{ scmId: "gitea", name: "Gitea", oauth: {}, pat: {} }])).status, 200);
    for (const [host, secret] of [["gitea-2.example", "first"], ["gitea-3.example", "second"]]) {
      const before = sealsRequested();
      const r = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitea", host, oauthClientId: "app", oauthPlaintextClientSecret: secret });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const shown = (await runnerList(s, runnerId, runnerToken, { filter: { scmIntegrationIds: [r.body.id] } }))[0];
      assert.equal(open(Buffer.from(shown.oauth.encryptedClientSecret, "base64"), keys.publicKey, keys.secretKey), secret);
      // The first is sealed by its write (what was remembered said no OAuth), the second ahead.
      assert.equal(sealsRequested(), before + (secret === "first" ? 0 : 1), host);
    }
  });

  it("a create that finds what was remembered of its runner's schema out of date has it read again", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    await signUp(s, runnerToken);
    const publish = (scm: object[]) => call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: { version: "4", scm } }, runnerToken);
    const create = async (host: string) => {
      const before = sealsRequested();
      const r = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host, oauthClientId: "app", oauthPlaintextClientSecret: "s3cret" });
      return { r, sealed: sealsRequested() - before };
    };
    assert.equal((await publish([{ scmId: "github", name: "GitHub", oauth: {}, pat: {} }])).status, 200);
    const first = await create("one.example");
    assert.equal(first.r.status, 200, JSON.stringify(first.r.body));
    assert.equal(first.sealed, 1, "sealed ahead; the runner's key and schema are remembered");
    // The runner withdraws OAuth for github: the next create still seals ahead (what was
    // remembered says OAuth), is refused, and has the runner forgotten; the one after reads
    // the new schema and seals nothing.
    assert.equal((await publish([{ scmId: "github", name: "GitHub", pat: {} }])).status, 200);
    for (const [host, sealed] of [["two.example", 1], ["three.example", 0]] as const) {
      const { r, sealed: n } = await create(host);
      assert.match(r.body.message, /^oauth_client_id: the runner takes personal access tokens only for github/);
      assert.equal(n, sealed, host);
    }
  });

  it("a schema stored before entries recorded their methods reads as offering both", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    await signUp(s, runnerToken);
    const earlier = { version: "old", scm: [{ scmId: "gitea", name: "Gitea", defaultHosts: [], patDescription: "", patDocsLink: "" }] };
    s.db.update(runners).set({ configSchema: JSON.stringify(earlier) }).where(eq(runners.id, runnerId)).run();
    const [entry] = (await call(s, `${CFG}/GetRunnerConfigurationSchema`, { runnerId })).body.schema.scm;
    assert.equal(entry.oauth.callbackUrl, `${PUBLIC_URL}/auth/oauth2/callback`);
    assert.match(entry.pat.description, /Gitea/);
    const r = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitea", host: "gitea.example", pat: true, oauthClientId: "a", oauthPlaintextClientSecret: "b" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  });

  it("refuses a malformed schema naming each field, and keeps the previous one", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const bad = {
      version: "v\u0000",
      scm: [
        { scmId: "github", name: "GitHub", defaultHosts: ["github.com", "https://x.example"], pat: {} },
        { scmId: "github", name: "Again", pat: {} },
        { scmId: "Git Hub", name: "Spaces", oauth: {} },
        { scmId: "", name: "Empty", pat: { docsLink: "http://insecure.example" } },
        // What the WHATWG parser alone would take, repaired, and others would not.
        { scmId: "gitea", name: "Gitea", pat: { docsLink: "https:docs.gitea.com" } },
        // Text shown to admins, in terminals too: no escape sequences, C1 controls or NULs.
        { scmId: "forgejo", name: "Forge\u009bjo", pat: { description: "ok\u0000\u001b[2J\u0007 text" } },
      ],
    };
    const r = await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: bad }, runnerToken);
    assert.equal(r.status, 400);
    const fields = [...r.body.message.matchAll(/(?:^|; )(config_schema[^:]*):/g)].map((m) => m[1]);
    // Nor text that reads as something else: direction overrides, invisible characters, a
    // carriage return that would write one line over another.
    const hidden = {
      version: "1\u202e2",
      scm: [
        { scmId: "gitea", name: "Gi\u200btea", pat: { description: "Use a read token\r\rUse an ADMIN token" } },
        { scmId: "forgejo", name: "Forgejo", pat: { description: "fine\u2067 isolate" } },
        // Every other format character too (tag characters spell invisible text, behind a flag
        // too), separators, and a joiner where no writing needs one.
        { scmId: "gitea2", name: "Gi\u{e0041}tea", pat: { description: "one\u2028two" } },
        { scmId: "gitea3", name: "Soft\u00adhyphen" },
        // What writing needs is fine: an emoji's joiner, Persian's non-joiner, England's flag.
        { scmId: "gitlab", name: "\u{1f469}\u200d\u{1f4bb} GitLab \u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}", pat: { description: "line\r\nline \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645" } },
      ],
    };
    const hiddenRefused = await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: hidden }, runnerToken);
    assert.equal(hiddenRefused.status, 400);
    assert.deepEqual(
      hiddenRefused.body.details[0].debug.violations.map((x: any) => [x.field.elements.map((e: any) => e.fieldName + (e.index === undefined ? "" : `[${e.index}]`)).join("."), x.message]),
      [
        ["config_schema.version", "must not contain control characters or invisible formatting (direction overrides or marks, zero-width spaces)"],
        ["config_schema.scm[0].name", "must not contain control characters or invisible formatting (direction overrides or marks, zero-width spaces)"],
        ["config_schema.scm[0].pat.description", "must not contain control characters or invisible formatting (direction overrides or marks, zero-width spaces) other than line breaks (\\n or \\r\\n) and tabs"],
        ["config_schema.scm[1].pat.description", "must not contain control characters or invisible formatting (direction overrides or marks, zero-width spaces) other than line breaks (\\n or \\r\\n) and tabs"],
        ["config_schema.scm[2].name", "must not contain control characters or invisible formatting (direction overrides or marks, zero-width spaces)"],
        ["config_schema.scm[2].pat.description", "must not contain control characters or invisible formatting (direction overrides or marks, zero-width spaces) other than line breaks (\\n or \\r\\n) and tabs"],
        ["config_schema.scm[3].name", "must not contain control characters or invisible formatting (direction overrides or marks, zero-width spaces)"],
        ["config_schema.scm[3]", "must offer at least one authentication method: send oauth, pat or both"],
      ],
    );
    // Tags spelling text behind a flag, and a joiner between Latin letters, where no writing needs one.
    const smuggled = { version: "4", scm: [{ scmId: "gitea", name: `GitHub\u{1f3f4}${[..."Ignore this"].map((c) => String.fromCodePoint(0xe0000 + c.charCodeAt(0))).join("")}\u{e007f}`, pat: { description: "Git\u200cHub" } }] };
    const smuggledRefused = await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: smuggled }, runnerToken);
    assert.deepEqual(smuggledRefused.body.details?.[0]?.debug.violations.map((x: any) => x.field.elements.map((e: any) => e.fieldName).join(".")), ["config_schema.scm.name", "config_schema.scm.pat.description"]);
    // Names and versions that show nothing, or pad themselves with selectors that draw
    // nothing; a selector after the emoji it picks the look of is fine.
    const blank = {
      version: "\u2800 ",
      scm: [
        { scmId: "gitea", name: "\u3000\u0301", pat: {} },
        { scmId: "forgejo", name: "Forgejo\ufe0f\ufe0f", pat: {} },
        { scmId: "gitlab", name: "\ufe0fGitLab", pat: {} },
        { scmId: "github", name: "GitHub \u2764\ufe0f", pat: {} },
        { scmId: "bitbucket", name: "", pat: {} },
        // One selector after a Latin letter draws nothing: "prod" twice, to the eye.
        { scmId: "prod1", name: "prod\ufe00", pat: {} },
        { scmId: "prod2", name: "prod\u{e0100}", pat: {} },
        // Where a sequence is defined, it is taken: a keycap, an ideograph's variant.
        { scmId: "keycap", name: "1\ufe0f\u20e3 \u845b\u{e0100}", pat: {} },
      ],
    };
    const blankRefused = await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: blank }, runnerToken);
    assert.deepEqual(
      blankRefused.body.details?.[0]?.debug.violations.map((x: any) => [x.field.elements.map((e: any) => e.fieldName + (e.index === undefined ? "" : `[${e.index}]`)).join("."), x.ruleId]),
      [
        ["config_schema.version", "string.not_blank"],
        ["config_schema.scm[0].name", "string.not_blank"],
        ["config_schema.scm[1].name", "string.printable"],
        ["config_schema.scm[2].name", "string.printable"],
        ["config_schema.scm[5].name", "string.printable"],
        ["config_schema.scm[6].name", "string.printable"],
      ],
    );
    assert.deepEqual(fields, [
      "config_schema.version",
      "config_schema.scm[0].default_hosts[1]",
      "config_schema.scm[1].scm_id",
      "config_schema.scm[2].scm_id",
      "config_schema.scm[3].scm_id",
      "config_schema.scm[3].pat.docs_link",
      "config_schema.scm[4].pat.docs_link",
      "config_schema.scm[5].name",
      "config_schema.scm[5].pat.description",
    ]);
    const missing = await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId }, runnerToken);
    assert.match(missing.body.message, /^config_schema: is required/);
    const notAnEntry = await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: { version: "2", scm: [{ scmId: "github", name: "GitHub" }, "gitlab"] } }, runnerToken);
    assert.equal(notAnEntry.body.code, "invalid_argument");
    assert.equal(notAnEntry.body.message, 'cannot decode field gitpod.v1.RunnerConfigurationSchema.scm from JSON: list item #2: expected object, got "gitlab"');
    const schema = (await call(s, `${CFG}/GetRunnerConfigurationSchema`, { runnerId })).body.schema;
    assert.equal(schema.version, "builtin-1", "still the built-in default");
    assert.deepEqual(schema.scm.map((e: any) => e.scmId), ["github", "gitlab", "bitbucket", "azuredevops_entra", "azuredevops_server"]);
    assert.equal(schema.scm[4].oauth, undefined, "Azure DevOps Server takes personal access tokens only");

    // A description may lay itself out with line breaks and tabs, and counts characters,
    // not UTF-16 units: 1024 emoji are 2048 units.
    for (const description of ["Line one.\n\tLine two.", "Windows line one.\r\nLine two.", "\u{1f511}".repeat(1024)]) {
      const laidOut = { version: "3", scm: [{ scmId: "gitea", name: "Gitea", pat: { description } }] };
      const ok = await call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: laidOut }, runnerToken);
      assert.equal(ok.status, 200, JSON.stringify(ok.body).slice(0, 300));
      const shown = (await call(s, `${CFG}/GetRunnerConfigurationSchema`, { runnerId })).body.schema;
      assert.equal(shown.scm[0].pat.description, description);
    }
  });

  it("CreateRunner takes the provider alone (the kind deduced where the API documents it) or the kind alone", async () => {
    const create = (body: object) => call(s, `${RUNNERS}/CreateRunner`, { name: "kind-test", ...body });
    const cases: [object, string, string][] = [
      [{ provider: "RUNNER_PROVIDER_AWS_EC2" }, "RUNNER_KIND_REMOTE", "RUNNER_PROVIDER_AWS_EC2"],
      [{ provider: "RUNNER_PROVIDER_GCP" }, "RUNNER_KIND_REMOTE", "RUNNER_PROVIDER_GCP"],
      [{ provider: "RUNNER_PROVIDER_DESKTOP_MAC" }, "RUNNER_KIND_LOCAL", "RUNNER_PROVIDER_DESKTOP_MAC"],
      // The official SDK's example of "a new local runner on Linux" sends this provider alone.
      [{ provider: "RUNNER_PROVIDER_LINUX_HOST" }, "RUNNER_KIND_LOCAL", "RUNNER_PROVIDER_LINUX_HOST"],
      // A kind sent wins over the deduced one; a kind alone leaves the provider unspecified.
      [{ kind: "RUNNER_KIND_LOCAL_CONFIGURATION", provider: "RUNNER_PROVIDER_AWS_EC2" }, "RUNNER_KIND_LOCAL_CONFIGURATION", "RUNNER_PROVIDER_AWS_EC2"],
      [{ kind: "RUNNER_KIND_REMOTE" }, "RUNNER_KIND_REMOTE", "RUNNER_PROVIDER_UNSPECIFIED"],
      // Fields of the full public API this slice leaves out are ignored.
      [{ provider: "RUNNER_PROVIDER_GCP", spec: { desiredPhase: "RUNNER_PHASE_ACTIVE" }, runnerManagerId: "x" }, "RUNNER_KIND_REMOTE", "RUNNER_PROVIDER_GCP"],
    ];
    for (const [body, kind, provider] of cases) {
      const r = await create(body);
      assert.equal(r.status, 200, `${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
      const stored = (await call(s, `${RUNNERS}/GetRunner`, { runnerId: r.body.runner.runnerId })).body.runner;
      // JSON leaves out an enum at its zero value.
      assert.deepEqual([stored.kind, stored.provider ?? "RUNNER_PROVIDER_UNSPECIFIED"], [kind, provider], JSON.stringify(body));
    }
    const refused: [object, RegExp][] = [
      [{}, /^provider: is required \(or kind/],
      [{ provider: "RUNNER_PROVIDER_MANAGED" }, /^kind: is required with provider RUNNER_PROVIDER_MANAGED/],
      // A name is shown in lists: one that reads as another runner's, or as nothing, is refused.
      [{ name: "\u202eeno-rennur", provider: "RUNNER_PROVIDER_GCP" }, /^name: must not contain control characters or invisible formatting/],
      [{ name: "run\u200bner", provider: "RUNNER_PROVIDER_GCP" }, /^name: must not contain control characters or invisible formatting/],
      [{ name: "\u00a0 \u3000", provider: "RUNNER_PROVIDER_GCP" }, /^name: must not be blank \(it needs a letter/],
      [{ name: "\u2800\u2800\u2800", provider: "RUNNER_PROVIDER_GCP" }, /^name: must not be blank \(it needs a letter/],
      [{ name: "\u0301\u0301\u0301", provider: "RUNNER_PROVIDER_GCP" }, /^name: must not be blank \(it needs a letter/],
      [{ name: "run\ufe0f\ufe0fner", provider: "RUNNER_PROVIDER_GCP" }, /^name: must not contain control characters or invisible formatting/],
      [{ provider: "RUNNER_PROVIDER_DEV_AGENT" }, /^kind: is required with provider RUNNER_PROVIDER_DEV_AGENT/],
      [{ provider: 99 }, /^provider: must be one of/],
      [{ kind: 7, provider: "RUNNER_PROVIDER_GCP" }, /^kind: must be one of/],
      // An enum name the API does not define is refused like an unknown number, not
      // read as absent (which would leave a kind alone to create the runner).
      [{ kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_AWS_EC" }, /^provider: must be one of RUNNER_PROVIDER_/],
      [{ kind: "REMOTE", provider: "RUNNER_PROVIDER_GCP" }, /^kind: must be one of RUNNER_KIND_/],
      // Neither a name nor a whole number: refused naming the field, not only the enum type.
      [{ provider: true }, /^cannot decode field gitpod\.v1\.CreateRunnerRequest\.provider from JSON: expected an enum name or number, got true$/],
      [{ provider: 1.5 }, /^cannot decode field gitpod\.v1\.CreateRunnerRequest\.provider from JSON: expected an enum name or number, got 1\.5$/],
      [{ kind: {}, provider: 2 }, /^cannot decode field gitpod\.v1\.CreateRunnerRequest\.kind from JSON: expected an enum name or number, got an object$/],
    ];
    const before = (await call(s, `${RUNNERS}/ListRunners`, { pagination: { pageSize: 100 } })).body.runners.length;
    for (const [body, message] of refused) {
      const r = await create(body);
      assert.equal(r.body.code, "invalid_argument", JSON.stringify(r.body));
      assert.match(r.body.message, message);
    }
    assert.equal((await call(s, `${RUNNERS}/ListRunners`, { pagination: { pageSize: 100 } })).body.runners.length, before, "nothing was created");
    const listed = await call(s, `${RUNNERS}/ListRunners`, { filter: { kinds: [1, "RUNNER_KIND_REMOTE", [2]] } });
    assert.equal(listed.body.message, "cannot decode field gitpod.v1.ListRunnersRequest.Filter.kinds from JSON: list item #3: expected an enum name or number, got Array(1)");
    // An unknown name is refused where an unknown number is: after authentication, with
    // the field in a Violations detail.
    const unknownName = { name: "kind-test", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_AWS_EC" };
    assert.equal((await call(s, `${RUNNERS}/CreateRunner`, unknownName, null)).body.code, "unauthenticated");
    const refusedName = await create(unknownName);
    assert.equal(refusedName.body.details?.[0]?.type, "buf.validate.Violations", JSON.stringify(refusedName.body));
  });

  it("CreateRunner's refusals of its kind and provider name each problem once, and no other", async () => {
    const create = (body: object) => call(s, `${RUNNERS}/CreateRunner`, { name: "kind-test", ...body });
    const providers = "RUNNER_PROVIDER_AWS_EC2, RUNNER_PROVIDER_LINUX_HOST, RUNNER_PROVIDER_DESKTOP_MAC, RUNNER_PROVIDER_MANAGED, RUNNER_PROVIDER_GCP, RUNNER_PROVIDER_DEV_AGENT";
    const cases: [object, string][] = [
      // Neither sent: the provider is asked for, not a kind "whose provider's kind cannot be deduced".
      [{}, "provider: is required (or kind, which older clients send instead)"],
      // An unknown provider with no kind: that provider is what is wrong, and nothing else.
      [{ provider: 99 }, `provider: must be one of ${providers}`],
      [{ provider: "RUNNER_PROVIDER_MANAGED" }, "kind: is required with provider RUNNER_PROVIDER_MANAGED, whose kind cannot be deduced"],
    ];
    for (const [body, message] of cases) {
      const r = await create(body);
      assert.equal(r.body.code, "invalid_argument", JSON.stringify(r.body));
      assert.equal(r.body.message, message, JSON.stringify(body));
      assert.equal(r.body.details?.[0]?.debug?.violations?.length, 1, JSON.stringify(r.body));
    }
  });

  it("a runner deleted between the check of its token and its Signup's write: not_found, nothing written", async () => {
    // Deletes the runner after authentication, just before the handler writes, as a
    // DeleteRunner committed in that moment would.
    let victim = "";
    const racing = await startActingBeforeWrites(async (method, self) => {
      if (method === "Signup" && victim) await call(self, `${RUNNERS}/DeleteRunner`, { runnerId: victim });
    });
    try {
      const { runnerId, runnerToken } = await createRunner(racing);
      victim = runnerId;
      const r = await call(racing, `${RUNNER_SIDE}/Signup`, { publicKey: Buffer.alloc(32, 9).toString("base64") }, runnerToken);
      assert.equal(r.body.code, "not_found", JSON.stringify(r.body));
      assert.equal(racing.db.select().from(runners).all().length, 0);
    } finally {
      await racing.close();
    }
  });

  it("a token replaced or revoked between the check of a call and its write: unauthenticated, nothing written", async () => {
    // Acts after authentication, just before the handler writes: a CreateRunnerToken
    // answered in that moment, or the admin CLI revoking the API token.
    let rotate = "";
    let revoke = "";
    const racing = await startActingBeforeWrites(async (method, self) => {
      if (method === "Signup" && rotate) {
        const replaced = await call(self, `${RUNNERS}/CreateRunnerToken`, { runnerId: rotate });
        assert.equal(replaced.status, 200, JSON.stringify(replaced.body));
      }
      if (method === "CreateSCMIntegration" && revoke) revokeApiToken(self.db, revoke);
    });
    try {
      const { runnerId, runnerToken } = await createRunner(racing);
      rotate = runnerId;
      const signup = await call(racing, `${RUNNER_SIDE}/Signup`, { publicKey: Buffer.alloc(32, 9).toString("base64") }, runnerToken);
      assert.equal(signup.body.code, "unauthenticated", JSON.stringify(signup.body));
      assert.match(signup.body.message, /access token was replaced/);
      assert.equal(racing.db.select().from(runners).where(eq(runners.id, runnerId)).get()!.publicKey, null, "the old token installed no key");
      rotate = "";

      const doomed = createApiToken(racing.db, "acme");
      // It writes once first: found live in that transaction, it must be looked up again in the next.
      const earlier = await call(racing, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "before.example.com", pat: true }, doomed.token);
      assert.equal(earlier.status, 200, JSON.stringify(earlier.body));
      revoke = doomed.id;
      const create = await call(racing, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "revoked.example.com", pat: true }, doomed.token);
      assert.equal(create.body.code, "unauthenticated", JSON.stringify(create.body));
      assert.match(create.body.message, /revoked/);
      // Logged as every refused credential is, with the reason and never the token.
      const refusals = racing.logs.filter((l) => l.includes('"authentication refused"'));
      assert.ok(refusals.some((l) => /access token was replaced/.test(l)) && refusals.some((l) => /was revoked while/.test(l)), refusals.join("\n"));
      assert.ok(!racing.logs.some((l) => l.includes(doomed.token)));
      assert.deepEqual(racing.db.select({ host: scmIntegrations.host }).from(scmIntegrations).where(eq(scmIntegrations.runnerId, runnerId)).all(), [{ host: "before.example.com" }]);
      revoke = "";
      // The organization's other token still writes.
      const ok = await call(racing, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "revoked.example.com", pat: true });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
    } finally {
      await racing.close();
    }
  });

  it("ListRunners takes 25 kinds or providers, repeats among them counting as one: a page token goes on with the same values repeated", async () => {
    for (const provider of ["RUNNER_PROVIDER_AWS_EC2", "RUNNER_PROVIDER_GCP", "RUNNER_PROVIDER_AWS_EC2"]) {
      assert.equal((await call(s, `${RUNNERS}/CreateRunner`, { name: "repeated-filter", provider })).status, 200);
    }
    const list = async (body: object) => {
      const r = await call(s, `${RUNNERS}/ListRunners`, body);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body;
    };
    const all = (await list({ filter: { kinds: ["RUNNER_KIND_REMOTE"] }, pagination: { pageSize: 100 } })).runners.map((r: any) => r.runnerId);
    assert.ok(all.length >= 3);
    // At the limit, every item the same.
    const full = await list({ filter: { kinds: Array(25).fill("RUNNER_KIND_REMOTE"), providers: Array(25).fill("RUNNER_PROVIDER_GCP") }, pagination: { pageSize: 100 } });
    assert.ok(full.runners.length >= 1 && full.runners.every((r: any) => r.provider === "RUNNER_PROVIDER_GCP"), JSON.stringify(full));
    // A token made for kinds [REMOTE] is good for kinds [REMOTE, REMOTE], the same filter.
    const first = await list({ filter: { kinds: ["RUNNER_KIND_REMOTE"] }, pagination: { pageSize: 1 } });
    const next = await list({ filter: { kinds: ["RUNNER_KIND_REMOTE", "RUNNER_KIND_REMOTE"] }, pagination: { pageSize: 100, token: first.pagination.nextToken } });
    assert.deepEqual([...first.runners, ...next.runners].map((r: any) => r.runnerId), all);
  });

  it("ListRunners narrows by the filter's creator ids, kinds and providers, page by page", async () => {
    for (const [kind, provider] of [["RUNNER_KIND_REMOTE", "RUNNER_PROVIDER_AWS_EC2"], ["RUNNER_KIND_REMOTE", "RUNNER_PROVIDER_GCP"], ["RUNNER_KIND_LOCAL", "RUNNER_PROVIDER_DESKTOP_MAC"], ["RUNNER_KIND_REMOTE", undefined], ["RUNNER_KIND_LOCAL_CONFIGURATION", "RUNNER_PROVIDER_AWS_EC2"]]) {
      assert.equal((await call(s, `${RUNNERS}/CreateRunner`, { name: "filtered", kind, provider })).status, 200);
    }
    const list = async (body: object) => {
      const r = await call(s, `${RUNNERS}/ListRunners`, body);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body;
    };
    const everyone: any[] = (await list({ pagination: { pageSize: 100 } })).runners;
    const creator = everyone[0].creator.id;
    const ids = (runners: any[]) => runners.map((r) => r.runnerId);
    const cases: [object, (r: any) => boolean][] = [
      [{ providers: ["RUNNER_PROVIDER_AWS_EC2"] }, (r) => r.provider === "RUNNER_PROVIDER_AWS_EC2"],
      [{ kinds: ["RUNNER_KIND_LOCAL", "RUNNER_KIND_LOCAL_CONFIGURATION"] }, (r) => r.kind !== "RUNNER_KIND_REMOTE"],
      [{ kinds: ["RUNNER_KIND_REMOTE"], providers: ["RUNNER_PROVIDER_GCP", "RUNNER_PROVIDER_AWS_EC2"] }, (r) => r.kind === "RUNNER_KIND_REMOTE" && ["RUNNER_PROVIDER_GCP", "RUNNER_PROVIDER_AWS_EC2"].includes(r.provider)],
      // JSON leaves out a provider at zero: these runners were created with their kind alone.
      [{ providers: ["RUNNER_PROVIDER_UNSPECIFIED"] }, (r) => r.provider === undefined],
      [{ creatorIds: [creator] }, (r) => r.creator.id === creator],
      [{ creatorIds: ["0190a0a0-0000-7000-8000-000000000000"] }, () => false],
    ];
    for (const [filter, matches] of cases) {
      const expected = ids(everyone.filter(matches));
      assert.deepEqual(ids((await list({ filter, pagination: { pageSize: 100 } })).runners ?? []), expected, JSON.stringify(filter));
      // Page by page, two at a time, the same runners in the same order.
      const paged: string[] = [];
      let token: string | undefined;
      do {
        const page = await list({ filter, pagination: { pageSize: 2, token } });
        paged.push(...ids(page.runners ?? []));
        token = page.pagination?.nextToken || undefined;
      } while (token);
      assert.deepEqual(paged, expected, `paged ${JSON.stringify(filter)}`);
    }
    assert.ok(cases.slice(0, 3).every(([filter, matches]) => everyone.some(matches) && !everyone.every(matches)), "each filter narrows");

    // A token made for one filter is not good for another.
    const first = await list({ filter: { kinds: ["RUNNER_KIND_REMOTE"] }, pagination: { pageSize: 1 } });
    const other = await call(s, `${RUNNERS}/ListRunners`, { filter: { kinds: ["RUNNER_KIND_LOCAL"] }, pagination: { pageSize: 1, token: first.pagination.nextToken } });
    assert.equal(other.body.code, "invalid_argument");
    assert.match(other.body.message, /^pagination\.token: /);

    const refused: [object, RegExp][] = [
      [{ kinds: [9] }, /^filter\.kinds\[0\]: must be one of RUNNER_KIND_UNSPECIFIED, RUNNER_KIND_LOCAL/],
      [{ providers: ["RUNNER_PROVIDER_AWS_EC2", "RUNNER_PROVIDER_NOPE"] }, /^filter\.providers\[1\]: must be one of/],
      [{ creatorIds: ["me"] }, /^filter\.creator_ids\[0\]: must be a uuid/],
      [{ kinds: Array(26).fill("RUNNER_KIND_REMOTE") }, /^filter\.kinds: must have at most 25 items, got 26/],
    ];
    for (const [filter, message] of refused) {
      const r = await call(s, `${RUNNERS}/ListRunners`, { filter });
      assert.equal(r.body.code, "invalid_argument", JSON.stringify(filter));
      assert.match(r.body.message, message);
    }
  });

  it("the registry: get, list, rename, new token, delete with everything hanging on it", async () => {
    const { runnerId, runnerToken } = await createRunner(s, s.token, "registry-runner");
    const before = (await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.runner;
    assert.equal(before.status.publicKey, undefined, "no key before Signup");
    assert.equal(before.status.phase, "RUNNER_PHASE_CREATED");
    const keys = await signUp(s, runnerToken);
    const signed = (await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.runner;
    assert.equal(signed.status.publicKey, keys.publicKey.toString("base64"));
    assert.equal(signed.status.phase, "RUNNER_PHASE_ACTIVE");

    const rename = await call(s, `${RUNNERS}/UpdateRunner`, { runnerId, name: "renamed runner" });
    assert.equal(rename.status, 200);
    assert.equal((await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.runner.name, "renamed runner");
    const badName = await call(s, `${RUNNERS}/UpdateRunner`, { runnerId, name: "x" });
    assert.match(badName.body.message, /^name: must be 3 to 127 characters/);
    // Length is the contract's only rule for a name: spaces around it are kept as given, and
    // characters count as code points (127 emoji are 254 UTF-16 units).
    for (const name of ["  padded name  ", "\u{1F680}".repeat(127)]) {
      const renamed = await call(s, `${RUNNERS}/UpdateRunner`, { runnerId, name });
      assert.equal(renamed.status, 200, JSON.stringify(renamed.body));
      assert.equal((await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.runner.name, name);
    }
    const spaced = await call(s, `${RUNNERS}/CreateRunner`, { name: " spaced ", kind: 2, provider: 2 });
    assert.equal(spaced.body.runner.name, " spaced ", JSON.stringify(spaced.body));
    assert.equal((await call(s, `${RUNNERS}/UpdateRunner`, { runnerId, name: "renamed runner" })).status, 200);
    assert.equal((await call(s, `${RUNNERS}/UpdateRunner`, { runnerId })).status, 200, "no fields, no change");

    const listed = await call(s, `${RUNNERS}/ListRunners`, { pagination: { pageSize: 100 } });
    assert.ok(listed.body.runners.some((r: any) => r.runnerId === runnerId && r.name === "renamed runner"));
    assert.ok(!("accessToken" in listed.body.runners[0]));

    const fresh = await call(s, `${RUNNERS}/CreateRunnerToken`, { runnerId });
    assert.match(fresh.body.accessToken, /^scmrun_/);
    const old = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId }, runnerToken);
    assert.equal(old.body.code, "unauthenticated", "the previous token stops working");
    assert.equal((await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId }, fresh.body.accessToken)).status, 200);

    await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "github.com", oauthClientId: "a", oauthPlaintextClientSecret: "b" });
    await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitlab", host: "gitlab.com", pat: true });
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.runnerId, runnerId)).all().length, 2);

    assert.equal((await call(s, `${RUNNERS}/DeleteRunner`, { runnerId, force: true })).status, 200);
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.runnerId, runnerId)).all().length, 0, "nothing dangles");
    assert.equal((await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.code, "not_found");
    assert.equal((await call(s, `${RUNNERS}/DeleteRunner`, { runnerId })).body.code, "not_found");
    const gone = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId }, fresh.body.accessToken);
    assert.equal(gone.body.code, "unauthenticated");
  });

  it("a Signup with a new key drops the old secrets a bounded number a write; one the service stopped during goes on at the next Signup", async () => {
    const { runnerId, runnerToken } = await createRunner(s, s.token, "many-secrets");
    const oldKeys = await signUp(s, runnerToken);
    const first = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "h0.example.com", oauthClientId: "app", oauthPlaintextClientSecret: "old-secret" });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    // 1,200 more sealed to the old key, copies of the first written directly.
    copyIntegration(s, first.body.id, 7);
    const sealed = () => s.db.$client.prepare("SELECT count(*) FROM scm_integrations WHERE runner_id = ? AND oauth_encrypted_secret IS NOT NULL").pluck().get(runnerId);
    const marked = () => s.db.$client.prepare("SELECT secrets_walk FROM runners WHERE id = ?").pluck().get(runnerId);
    assert.equal(sealed(), 1201);
    const commits = s.db.commitStats().commits;
    await signUp(s, runnerToken);
    assert.equal(sealed(), 0, "every old ciphertext is gone from storage once Signup answers");
    assert.equal(marked(), 0);
    // The key, then 500, 500 and the last 201 (which unmarks the runner): four writes.
    assert.equal(s.db.commitStats().commits - commits, 4);

    // As a service stopped between those writes leaves it: the runner marked, some old
    // ciphertexts left. No read shows them, and the next Signup, with the same key, goes on.
    const keys = await signUp(s, runnerToken);
    // The hosts before 'h2', a page's worth and more in host order.
    s.db.$client.prepare("UPDATE scm_integrations SET oauth_encrypted_secret = x'00', oauth_sealed_to = ? WHERE runner_id = ? AND host < 'h2'").run(oldKeys.publicKey, runnerId);
    s.db.$client.prepare("UPDATE runners SET secrets_walk = 7 WHERE id = ?").run(runnerId);
    const left = sealed() as number;
    assert.ok(left > 0);
    const shown = await runnerList(s, runnerId, runnerToken, { pagination: { pageSize: 100 } });
    assert.equal(shown.length, 100);
    assert.ok(shown.every((i: any) => (i.oauth.encryptedClientSecret ?? "") === ""), "none is shown");
    // An update that keeps the secret keeps none: the old one cannot be opened.
    const staleId = s.db.$client.prepare("SELECT id FROM scm_integrations WHERE runner_id = ? AND oauth_encrypted_secret IS NOT NULL LIMIT 1").pluck().get(runnerId) as string;
    const kept = await call(s, `${CFG}/UpdateSCMIntegration`, { id: staleId, oauthClientId: "app" });
    assert.equal(kept.status, 200, JSON.stringify(kept.body));
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, staleId)).get()!.oauthEncryptedSecret, null);
    const again = await call(s, `${RUNNER_SIDE}/Signup`, { publicKey: keys.publicKey.toString("base64") }, runnerToken);
    assert.equal(again.status, 200);
    assert.equal(sealed(), 0);
    assert.equal(marked(), 0);

    // A walk begun before another Signup changed the key does not unmark the runner when it
    // ends, even when that Signup went back to the key the walk began with (A, B, then A):
    // the latest walk began again from the start, and the mark is that one's.
    const walks: SecretsWalk[] = [];
    for (const k of [oldKeys, keys, oldKeys]) walks.push((await s.db.write(() => setRunnerPublicKey(s.db, runnerId, k.publicKey, Date.now())))!);
    assert.deepEqual(walks.map((w) => w.walk - walks[0]!.walk), [0, 1, 2], "each change of key numbers a walk of its own");
    assert.equal(walks[0]!.lastHost, "h999.example.com", "each ends at the runner's last host");
    const past = "h9999"; // after every host: a walk's last write
    for (const earlier of walks.slice(0, 2)) {
      assert.equal(await s.db.write(() => dropSomeStaleSecrets(s.db, runnerId, earlier, past, Date.now())), null);
      assert.equal(marked(), walks[2]!.walk, "marked still");
    }
    assert.equal(await s.db.write(() => dropSomeStaleSecrets(s.db, runnerId, walks[2]!, past, Date.now())), null);
    assert.equal(marked(), 0);
  });

  it("a Signup that walks nothing is one write: the same key again (as at every runner start), or a new key with no integrations", async () => {
    const { runnerId, runnerToken } = await createRunner(s, s.token, "signs-up-again");
    const keys = await signUp(s, runnerToken);
    const made = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "github.com", oauthClientId: "a", oauthPlaintextClientSecret: "b" });
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const sealed = () => s.db.select({ v: scmIntegrations.oauthEncryptedSecret }).from(scmIntegrations).where(eq(scmIntegrations.id, made.body.id)).get()!.v;
    const before = sealed();
    assert.ok(before && before.length > 0);
    // The same key: nothing sealed to it is stale, and no walk over the integrations is begun.
    let commits = s.db.commitStats().commits;
    assert.equal((await call(s, `${RUNNER_SIDE}/Signup`, { publicKey: keys.publicKey.toString("base64") }, runnerToken)).status, 200);
    assert.equal(s.db.commitStats().commits - commits, 1, "one write");
    assert.deepEqual(sealed(), before, "the secret stays as sealed");
    assert.equal(open(sealed()!, keys.publicKey, keys.secretKey), "b");

    // A new key for a runner with no integrations: nothing to walk either.
    const bare = await createRunner(s, s.token, "no-integrations");
    await signUp(s, bare.runnerToken);
    commits = s.db.commitStats().commits;
    await signUp(s, bare.runnerToken);
    assert.equal(s.db.commitStats().commits - commits, 1, "one write");
  });

  it("a runner with many integrations is deleted a bounded number of them a write, with nothing left behind", async () => {
    const { runnerId } = await createRunner(s, s.token, "many-integrations");
    const first = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitlab", host: "h0.example.com", pat: true });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    // 1,200 more, copies of the first on other hosts, written directly: the API would take a while.
    copyIntegration(s, first.body.id, 0);
    const count = () => s.db.select().from(scmIntegrations).where(eq(scmIntegrations.runnerId, runnerId)).all().length;
    assert.equal(count(), 1201);
    // A first key has no secrets sealed to an earlier one to drop: one write, no walk.
    const unused = await createRunner(s, s.token, "never signed up");
    s.db.$client.prepare("UPDATE scm_integrations SET runner_id = ? WHERE runner_id = ? AND host = 'h1.example.com'").run(unused.runnerId, runnerId);
    const runnerToken = unused.runnerToken;
    const signing = s.db.commitStats().commits;
    await signUp(s, runnerToken);
    assert.equal(s.db.commitStats().commits - signing, 1);
    assert.equal(count(), 1200);
    const commits = s.db.commitStats().commits;
    assert.equal((await call(s, `${RUNNERS}/DeleteRunner`, { runnerId })).status, 200);
    assert.equal(count(), 0, "nothing dangles");
    assert.equal((await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.code, "not_found");
    // 500, 500, then the last 200 with the runner: three writes, each holding the write lock briefly.
    assert.equal(s.db.commitStats().commits - commits, 3);

    // Two deletes of one runner at once: both began, so both are done, whichever deleted the last.
    const other = await createRunner(s, s.token, "deleted-twice");
    const seed = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId: other.runnerId, scmId: "gitlab", host: "h0.example.com", pat: true });
    copyIntegration(s, seed.body.id, 3);
    const orgId = s.db.select({ orgId: runners.orgId }).from(runners).where(eq(runners.id, other.runnerId)).get()!.orgId;
    const tokenId = s.db.$client.prepare("SELECT id FROM api_tokens WHERE token_hash = ?").pluck().get(hashToken(s.token)) as string;
    const caller = { kind: "api" as const, orgId, tokenId };
    // A runner being deleted takes no new integration, so that the steps come to an end
    // however many creates come meanwhile.
    const deleting = [deleteRunner(s.db, caller, other.runnerId), deleteRunner(s.db, caller, other.runnerId)];
    const during = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId: other.runnerId, scmId: "gitlab", host: "late.example.com", pat: true });
    assert.equal(during.body.code, "failed_precondition", JSON.stringify(during.body));
    assert.match(during.body.message, /^runner_id: runner \S+ is being deleted, and takes no new integrations$/);
    await Promise.all(deleting);
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.runnerId, other.runnerId)).all().length, 0);
    await assert.rejects(deleteRunner(s.db, caller, other.runnerId), { reason: "not_found" }, "a delete that finds no runner is not_found");

    // A stop of the service during one leaves the runner marked, with part of its integrations
    // (as here: marked, 700 of 1,201 gone): it still takes none, and DeleteRunner again finishes it.
    const left = await createRunner(s, s.token, "left-by-a-stop");
    const leftSeed = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId: left.runnerId, scmId: "gitlab", host: "h0.example.com", pat: true });
    copyIntegration(s, leftSeed.body.id, 5);
    s.db.$client.prepare("UPDATE runners SET deleting = 1 WHERE id = ?").run(left.runnerId);
    s.db.$client.prepare("DELETE FROM scm_integrations WHERE id IN (SELECT id FROM scm_integrations WHERE runner_id = ? ORDER BY host LIMIT 700)").run(left.runnerId);
    const refused = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId: left.runnerId, scmId: "gitlab", host: "after-the-stop.example.com", pat: true });
    assert.match(refused.body.message ?? "", /is being deleted, and takes no new integrations$/);
    assert.equal((await call(s, `${RUNNERS}/DeleteRunner`, { runnerId: left.runnerId })).status, 200);
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.runnerId, left.runnerId)).all().length, 0);
    assert.equal((await call(s, `${RUNNERS}/GetRunner`, { runnerId: left.runnerId })).body.code, "not_found");
  });
});

describe("a Signup racing a create's sealing", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("the secret, sealed ahead to the old key, is sealed again to the new one", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    await signUp(s, runnerToken);
    const orgId = s.db.select({ orgId: runners.orgId }).from(runners).where(eq(runners.id, runnerId)).get()!.orgId;
    // The create reads the runner's key and hands the secret to the seal worker at once;
    // the Signup's write commits before the create's does.
    // Called as the test's own tokens would: a write checks they are still good.
    const tokenId = s.db.$client.prepare("SELECT id FROM api_tokens WHERE token_hash = ?").pluck().get(hashToken(s.token)) as string;
    const created = createScmIntegration(s.db, { kind: "api", orgId, tokenId }, {
      runnerId, scmId: "github", host: "race.example.com", oauthClientId: "client", oauthClientSecret: "raced-secret", pat: false,
    });
    const fresh = newKeyPair();
    await signup(s.db, { kind: "runner", orgId, runnerId, tokenHash: hashToken(runnerToken) }, fresh.publicKey);
    const id = await created;
    const row = s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, id)).get()!;
    assert.ok(row.oauthSealedTo!.equals(fresh.publicKey), "recorded as sealed to the new key");
    assert.equal(open(row.oauthEncryptedSecret!, fresh.publicKey, fresh.secretKey), "raced-secret");
  });

  it("a create after a Signup with a new key seals to that key, though the one before sealed ahead to the old", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const oldKeys = await signUp(s, runnerToken);
    const create = (host: string) =>
      call(s, `gitpod.v1.RunnerConfigurationService/CreateSCMIntegration`, {
        runnerId, scmId: "github", host, oauthClientId: "client", oauthPlaintextClientSecret: `secret-of-${host}`, pat: false,
      });
    const first = await create("before.example.com");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const newKeys = await signUp(s, runnerToken);
    const second = await create("after.example.com");
    assert.equal(second.status, 200, JSON.stringify(second.body));
    const row = s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, second.body.id)).get()!;
    assert.ok(row.oauthSealedTo!.equals(newKeys.publicKey), "recorded as sealed to the new key");
    assert.equal(open(row.oauthEncryptedSecret!, newKeys.publicKey, newKeys.secretKey), "secret-of-after.example.com");
    assert.equal(open(row.oauthEncryptedSecret!, oldKeys.publicKey, oldKeys.secretKey), null);

    // Once the runner is gone, a create for it is not_found, whatever was sealed to it before.
    assert.equal((await call(s, "gitpod.v1.RunnerService/DeleteRunner", { runnerId })).status, 200);
    const gone = await create("gone.example.com");
    assert.equal(gone.body.code, "not_found", JSON.stringify(gone.body));
  });
});

describe("what a runner publishes and what names hold, at the edges", () => {
  let s: TestServer;
  let runnerId: string;
  let runnerToken: string;
  before(async () => {
    s = await startServer();
    ({ runnerId, runnerToken } = await createRunner(s));
    await signUp(s, runnerToken);
  });
  after(() => s.close());
  const publish = (scm: object[]) => call(s, `${RUNNER_SIDE}/UpdateRunnerConfigurationSchema`, { runnerId, configSchema: { version: "1", scm } }, runnerToken);

  // The port as written must be the one the URL parser found: runners get the URL as typed.
  it("an https URL whose port is not written plainly is refused; the default port written out is taken", async () => {
    for (const url of ["https://docs.example.com:0443/pat", "https://docs.example.com:08443/pat", "https://docs.example.com:/pat"]) {
      const written = url.slice("https://".length).split("/")[0];
      assert.equal(httpsUrlProblem(url), `must name its host as written plainly (ASCII, punycode for international names), got "${written}"`, url);
    }
    assert.equal(httpsUrlProblem("https://docs.example.com:443/pat"), null);
    assert.equal(httpsUrlProblem("https://docs.example.com:8443/pat"), null);
    const r = await publish([{ scmId: "gitea", name: "Gitea", pat: { docsLink: "https://docs.example.com:0443/pat" } }]);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.message, 'config_schema.scm[0].pat.docs_link: must name its host as written plainly (ASCII, punycode for international names), got "docs.example.com:0443"');
  });

  // Default hosts are told apart as stored, not as sent.
  it("a schema entry's default hosts that normalize to one host are refused as a repeat", async () => {
    const r = await publish([{ scmId: "github", name: "GitHub", defaultHosts: ["GitHub.com", "github.com/"], pat: {} }]);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.message, 'config_schema.scm[0].default_hosts[1]: "github.com" appears more than once');
    assert.equal(r.body.details[0].debug.violations[0].ruleId, "host.unique");
    const schema = (await call(s, `${CFG}/GetRunnerConfigurationSchema`, { runnerId })).body.schema;
    assert.equal(schema.version, "builtin-1", "nothing was stored");
  });

  // The Hangul fillers draw nothing, yet are letters to \p{L}.
  it("names holding a Hangul filler are refused as invisible formatting", async () => {
    for (const filler of ["\u115f", "\u1160", "\u3164", "\uffa0"]) {
      for (const name of [filler.repeat(3), `run${filler}ner`]) {
        const r = await call(s, `${RUNNERS}/CreateRunner`, { name, provider: "RUNNER_PROVIDER_GCP" });
        assert.equal(r.status, 400, `${JSON.stringify(name)}: ${JSON.stringify(r.body)}`);
        assert.match(r.body.message, /^name: must not contain control characters or invisible formatting/);
      }
    }
  });
});

describe("a runner's times", () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.close());

  it("status.updatedAt is when its status last changed (its Signup); a rename moves the runner's updatedAt, not its status's", async () => {
    const tick = () => new Promise((r) => setTimeout(r, 20));
    const get = async (runnerId: string) => (await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.runner;
    const { runnerId, runnerToken } = await createRunner(s, s.token, "timed-runner");
    const created = await get(runnerId);
    assert.equal(created.status.updatedAt, created.createdAt, "before a Signup the status is as old as the runner");
    await tick();
    await signUp(s, runnerToken);
    const signed = await get(runnerId);
    assert.ok(Date.parse(signed.status.updatedAt) > Date.parse(created.createdAt), "the Signup changed the status");
    await tick();
    assert.equal((await call(s, `${RUNNERS}/UpdateRunner`, { runnerId, name: "timed-runner renamed" })).status, 200);
    const renamed = await get(runnerId);
    assert.ok(Date.parse(renamed.updatedAt) > Date.parse(signed.status.updatedAt), "the rename is the runner's latest change");
    assert.equal(renamed.status.updatedAt, signed.status.updatedAt, "a rename is no change of status");
    // ListRunners shows the same times as GetRunner.
    const listed = (await call(s, `${RUNNERS}/ListRunners`, { pagination: { pageSize: 100 } })).body.runners.find((r: { runnerId: string }) => r.runnerId === runnerId);
    assert.deepEqual([listed.updatedAt, listed.status.updatedAt], [renamed.updatedAt, renamed.status.updatedAt]);
  });

  it("a runner renamed before any Signup keeps the status it was created with", async () => {
    const get = async (runnerId: string) => (await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.runner;
    const { runnerId } = await createRunner(s, s.token, "never-signed-up");
    const created = await get(runnerId);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal((await call(s, `${RUNNERS}/UpdateRunner`, { runnerId, name: "never-signed-up renamed" })).status, 200);
    const renamed = await get(runnerId);
    assert.ok(Date.parse(renamed.updatedAt) > Date.parse(created.createdAt), "the rename moved the runner's updatedAt");
    assert.equal(renamed.status.updatedAt, created.createdAt, "its status is still the one it was created with");
    assert.equal(renamed.status.phase, "RUNNER_PHASE_CREATED");
    const listed = (await call(s, `${RUNNERS}/ListRunners`, { pagination: { pageSize: 100 } })).body.runners.find((r: { runnerId: string }) => r.runnerId === runnerId);
    assert.equal(listed.status.updatedAt, created.createdAt);
  });

  it("a runner's creator is the API token that made it, a service account, in GetRunner and ListRunners alike", async () => {
    const { runnerId } = await createRunner(s, s.token, "created-by-token");
    const tokenId = s.db.$client.prepare("SELECT id FROM api_tokens WHERE token_hash = ?").pluck().get(hashToken(s.token)) as string;
    const got = (await call(s, `${RUNNERS}/GetRunner`, { runnerId })).body.runner;
    assert.deepEqual(got.creator, { id: tokenId, principal: "PRINCIPAL_SERVICE_ACCOUNT" });
    const listed = (await call(s, `${RUNNERS}/ListRunners`, { pagination: { pageSize: 100 } })).body.runners.find((r: { runnerId: string }) => r.runnerId === runnerId);
    assert.deepEqual(listed.creator, got.creator);
  });
});
