import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RunnerConfigurationService } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { RunnerInteractionService } from "../gen/gitpod/v1/runner_interactions_pb.js";
import { RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import { runners, scmIntegrations } from "../src/store/schema.js";
import { call, createRunner, signUp, startServer, type TestServer } from "./harness.js";

const CFG = "gitpod.v1.RunnerConfigurationService";
const RUNNERS = "gitpod.v1.RunnerService";
const RUNNER_SIDE = "gitpod.v1.RunnerInteractionService";

describe("who may call what", () => {
  let s: TestServer;
  let runnerId: string;
  let runnerToken: string;
  let integrationId: string;
  let otherRunnerToken: string;
  let otherRunnerId: string;

  before(async () => {
    s = await startServer();
    ({ runnerId, runnerToken } = await createRunner(s));
    await signUp(s, runnerToken);
    integrationId = (await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host: "github.com", pat: true })).body.id;
    ({ runnerId: otherRunnerId, runnerToken: otherRunnerToken } = await createRunner(s, s.token, "second-runner"));
  });
  after(() => s.close());

  /** A well-formed request aimed at acme's runner and integration, for each admin RPC. */
  const adminRequests = (): Record<string, object> => ({
    [`${RUNNERS}/CreateRunner`]: { name: "r-new", kind: 2, provider: 2 },
    [`${RUNNERS}/GetRunner`]: { runnerId },
    [`${RUNNERS}/ListRunners`]: {},
    [`${RUNNERS}/UpdateRunner`]: { runnerId, name: "taken over" },
    [`${RUNNERS}/DeleteRunner`]: { runnerId },
    [`${RUNNERS}/CreateRunnerToken`]: { runnerId },
    [`${CFG}/GetRunnerConfigurationSchema`]: { runnerId },
    [`${CFG}/CreateSCMIntegration`]: { runnerId, scmId: "gitlab", host: "gitlab.com", pat: true },
    [`${CFG}/GetSCMIntegration`]: { id: integrationId },
    [`${CFG}/ListSCMIntegrations`]: { filter: { runnerIds: [runnerId] } },
    [`${CFG}/UpdateSCMIntegration`]: { id: integrationId, pat: false, oauthClientId: "x", oauthPlaintextClientSecret: "y" },
    [`${CFG}/DeleteSCMIntegration`]: { id: integrationId },
  });

  it("covers every RPC of the admin services", () => {
    const all = [RunnerService, RunnerConfigurationService].flatMap((svc) => svc.methods.map((m) => `${svc.typeName}/${m.name}`));
    assert.deepEqual(Object.keys(adminRequests()).sort(), all.sort());
  });

  it("another organization's token gets not_found for everything of acme, and changes nothing", async () => {
    const before = [s.db.select().from(runners).all(), s.db.select().from(scmIntegrations).all()];
    for (const [path, body] of Object.entries(adminRequests())) {
      if (path.endsWith("/CreateRunner") || path.endsWith("/ListRunners")) continue;
      const r = await call(s, path, body, s.otherToken);
      assert.equal(r.body.code, "not_found", `${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.status, 404);
    }
    // UpdateRunner with nothing to change still says whether the runner is the caller's.
    for (const [who, runner] of [["another organization's", runnerId], ["an unknown", "0190a0a0-0000-7000-8000-00000000abcd"]]) {
      const bare = await call(s, `${RUNNERS}/UpdateRunner`, { runnerId: runner }, s.otherToken);
      assert.equal(bare.body.code, "not_found", `UpdateRunner without a name, ${who} runner: ${JSON.stringify(bare.body)}`);
    }
    const listed = await call(s, `${RUNNERS}/ListRunners`, {}, s.otherToken);
    assert.deepEqual(listed.body.runners ?? [], [], "ListRunners shows only the caller's organization");
    assert.deepEqual([s.db.select().from(runners).all(), s.db.select().from(scmIntegrations).all()], before);
  });

  it("not_found names the runner asked for, and reads the same for another organization's runner as for one that never was", async () => {
    const unknown = "0190a0a0-0000-7000-8000-00000000abcd";
    const other = await call(s, `${RUNNERS}/GetRunner`, { runnerId }, s.otherToken);
    const never = await call(s, `${RUNNERS}/GetRunner`, { runnerId: unknown }, s.otherToken);
    assert.deepEqual([other.status, other.body], [404, { code: "not_found", message: `runner ${runnerId} not found` }]);
    assert.deepEqual([never.status, never.body], [404, { code: "not_found", message: `runner ${unknown} not found` }]);
  });

  it("a runner token on an admin service is permission_denied", async () => {
    for (const [path, body] of Object.entries(adminRequests())) {
      const r = await call(s, path, body, runnerToken);
      assert.equal(r.body.code, "permission_denied", path);
      assert.match(r.body.message, /needs an API token/);
    }
  });

  it("an API token on a runner call is permission_denied", async () => {
    const calls: Record<string, object> = {
      Signup: { publicKey: Buffer.alloc(32, 9).toString("base64") },
      UpdateRunnerConfigurationSchema: { runnerId, configSchema: { version: "1", scm: [] } },
      ListRunnerSCMIntegrations: { runnerId },
    };
    assert.deepEqual(Object.keys(calls).sort(), RunnerInteractionService.methods.map((m) => m.name).sort());
    for (const [method, body] of Object.entries(calls)) {
      const r = await call(s, `${RUNNER_SIDE}/${method}`, body, s.token);
      assert.equal(r.body.code, "permission_denied", method);
      assert.match(r.body.message, /runner's own access token/);
    }
  });

  it("a runner token naming another runner is permission_denied", async () => {
    for (const [method, body] of Object.entries({
      UpdateRunnerConfigurationSchema: { runnerId, configSchema: { version: "hijack", scm: [] } },
      // Even an invalid schema: the runner id is checked first.
      InvalidSchemaForAnother: { runnerId, configSchema: { version: "hijack", scm: [{ scmId: "Bad Id" }] } },
      ListRunnerSCMIntegrations: { runnerId },
    })) {
      const path = method === "InvalidSchemaForAnother" ? "UpdateRunnerConfigurationSchema" : method;
      const r = await call(s, `${RUNNER_SIDE}/${path}`, body, otherRunnerToken);
      assert.equal(r.body.code, "permission_denied", method);
      // The token's own runner first, then the one it named.
      assert.equal(r.body.message, `runner_id: this access token belongs to runner ${otherRunnerId}, not ${runnerId}`, method);
    }
    const schema = (await call(s, `${CFG}/GetRunnerConfigurationSchema`, { runnerId })).body.schema;
    assert.notEqual(schema.version, "hijack");
    // Its own runner works.
    assert.equal((await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId }, runnerToken)).body.scmIntegrations.length, 1);
  });

  it("the runner's list is paginated and filtered by integration ids", async () => {
    const ids = [integrationId];
    for (let i = 0; i < 4; i++) {
      ids.push((await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "gitlab", host: `gl${i}.example.com`, pat: true })).body.id);
    }
    const seen: string[] = [];
    let token = "";
    do {
      const page = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId, pagination: { pageSize: 2, token } }, runnerToken);
      seen.push(...page.body.scmIntegrations.map((i: any) => i.id));
      token = page.body.pagination.nextToken ?? "";
    } while (token);
    assert.deepEqual(seen, ids);
    const some = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId, filter: { scmIntegrationIds: [ids[3], ids[1]] } }, runnerToken);
    assert.deepEqual(some.body.scmIntegrations.map((i: any) => i.id), [ids[1], ids[3]]);
    const bad = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId, filter: { scmIntegrationIds: ["x"] } }, runnerToken);
    assert.match(bad.body.message, /^filter\.scm_integration_ids\[0\]: must be a uuid/);
    const missing = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, {}, runnerToken);
    assert.match(missing.body.message, /^runner_id: is required/);
    // Every problem at once, as the other methods report them.
    const all = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId: "x", filter: { scmIntegrationIds: ["y"] }, pagination: { pageSize: 101 } }, runnerToken);
    assert.deepEqual([...all.body.message.matchAll(/(?:^|; )([a-z_.\[\]0-9]+):/g)].map((m: RegExpMatchArray) => m[1]), ["runner_id", "filter.scm_integration_ids[0]", "pagination.page_size"]);
  });
});

describe("ids in upper case", () => {
  // RFC 9562 reads a uuid's hex digits without regard to case, and some platforms write
  // them in upper case; answers always carry the lower case the ids were issued in.
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("are the same ids as in lower case, on every call that takes one", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    await signUp(s, runnerToken);
    const upper = runnerId.toUpperCase();
    assert.notEqual(upper, runnerId);
    const created = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId: upper, scmId: "github", host: "github.com", pat: true });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const id: string = created.body.id;
    const got = await call(s, `${CFG}/GetSCMIntegration`, { id: id.toUpperCase() });
    assert.equal(got.body.integration.id, id);
    assert.equal(got.body.integration.runnerId, runnerId);
    const listed = await call(s, `${CFG}/ListSCMIntegrations`, { filter: { runnerIds: [upper, runnerId] } });
    assert.deepEqual(listed.body.integrations.map((i: any) => i.id), [id], "one runner, named twice");
    assert.equal((await call(s, `${RUNNERS}/GetRunner`, { runnerId: upper })).body.runner.runnerId, runnerId);
    assert.equal((await call(s, `${RUNNERS}/UpdateRunner`, { runnerId: upper })).status, 200);
    assert.equal((await call(s, `${CFG}/GetRunnerConfigurationSchema`, { runnerId: upper })).status, 200);
    const own = await call(s, `${RUNNER_SIDE}/ListRunnerSCMIntegrations`, { runnerId: upper, filter: { scmIntegrationIds: [id.toUpperCase()] } }, runnerToken);
    assert.deepEqual(own.body.scmIntegrations.map((i: any) => i.id), [id], JSON.stringify(own.body));
    assert.equal((await call(s, `${CFG}/UpdateSCMIntegration`, { id: id.toUpperCase(), pat: false, oauthClientId: "c", oauthPlaintextClientSecret: "s" })).status, 200);
    assert.equal((await call(s, `${CFG}/DeleteSCMIntegration`, { id: id.toUpperCase() })).status, 200);
    assert.equal((await call(s, `${CFG}/GetSCMIntegration`, { id })).body.code, "not_found");
    assert.equal(s.db.select().from(scmIntegrations).all().length, 0);
  });
});
