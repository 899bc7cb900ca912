import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import Gitpod, { BadRequestError, ConflictError, NotFoundError, PermissionDeniedError } from "@gitpod/sdk";
import { open } from "../src/crypto/sealed-box.js";
import { call, signUp, startServer, type TestServer } from "./harness.js";

let s: TestServer;
before(async () => (s = await startServer()));
after(() => s.close());

it("the official SDK creates an integration and gets ConflictError for the duplicate without retrying", async () => {
  // The SDK would retry a 409 twice by default; x-should-retry: false must stop it.
  const client = new Gitpod({ bearerToken: s.token, baseURL: s.url, maxRetries: 2 });
  const { runner } = await client.runners.create({ name: "sdk-runner", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" });
  const params = { runnerId: runner!.runnerId!, scmId: "github", host: "github.com", pat: true };
  const created = await client.runners.configurations.scmIntegrations.create(params);
  assert.match(created.id!, /^[0-9a-f-]{36}$/);

  const before = s.logs.filter((l) => l.includes("CreateSCMIntegration")).length;
  await assert.rejects(client.runners.configurations.scmIntegrations.create(params), ConflictError);
  const attempts = s.logs.filter((l) => l.includes("CreateSCMIntegration")).length - before;
  assert.equal(attempts, 1, "the duplicate was sent exactly once");

  const asOther = new Gitpod({ bearerToken: s.otherToken, baseURL: s.url, maxRetries: 0 });
  await assert.rejects(asOther.runners.configurations.scmIntegrations.create({ ...params, host: "github.example.com" }), (e: unknown) => (e as { status?: number }).status === 404);
  await assert.rejects(
    new Gitpod({ bearerToken: (await client.runners.create({ name: "r2-runner", kind: "RUNNER_KIND_LOCAL", provider: "RUNNER_PROVIDER_DESKTOP_MAC" })).accessToken!, baseURL: s.url, maxRetries: 0 })
      .runners.configurations.scmIntegrations.create({ ...params, host: "x.example.com" }),
    PermissionDeniedError,
  );
});

it("a method of the public API this service does not serve is unimplemented (501, not retried), never NotFoundError", async () => {
  // A client taking not_found on a Delete as "already gone" must not think it deleted something.
  const client = new Gitpod({ bearerToken: s.token, baseURL: s.url, maxRetries: 2 });
  const calls = () => s.logs.filter((l) => l.includes("DeleteHostAuthenticationToken"));
  await assert.rejects(client.runners.configurations.hostAuthenticationTokens.delete({ id: "0190a0a0-0000-7000-8000-000000000000" }), (e: unknown) => {
    assert.ok(!(e instanceof NotFoundError), String(e));
    assert.equal((e as { status?: number }).status, 501);
    assert.match(String(e), /^Error: 501 gitpod\.v1\.RunnerConfigurationService\/DeleteHostAuthenticationToken is not implemented by this service/);
    return true;
  });
  assert.equal(calls().length, 1, "sent once: x-should-retry: false stops the SDK's retry of a 5xx");
  assert.match(calls()[0]!, /"code":"unimplemented"/);

  // A Connect GET says unimplemented too; a GET that is not Connect's stays a bare 404.
  const path = `${s.url}/gitpod.v1.RunnerService/ParseContextURL`;
  const get = await fetch(`${path}?connect=v1&encoding=json&message=${encodeURIComponent("{}")}`, { headers: { authorization: `Bearer ${s.token}` } });
  assert.equal(get.status, 501);
  assert.equal(get.headers.get("x-should-retry"), "false");
  assert.equal(((await get.json()) as { code: string }).code, "unimplemented");
  assert.equal((await fetch(path)).status, 404);
});

it("the official SDK runs the whole lifecycle: create, retrieve, for-await over 60, update, delete", async () => {
  const client = new Gitpod({ bearerToken: s.token, baseURL: s.url, maxRetries: 0 });
  const integrations = client.runners.configurations.scmIntegrations;
  const { runner, accessToken } = await client.runners.create({ name: "lifecycle", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_AWS_EC2" });
  const runnerId = runner!.runnerId!;
  // The SDK has no runner-side calls; the runner signs up as any runner would.
  const keys = await signUp(s, accessToken!);

  const { id } = await integrations.create({ runnerId, scmId: "github", host: "github.com", oauthClientId: "app-1", oauthPlaintextClientSecret: "first-secret" });
  const got = (await integrations.retrieve({ id: id! })).integration!;
  assert.equal(got.host, "github.com");
  assert.equal(got.oauth?.clientId, "app-1");
  assert.equal(open(Buffer.from(got.oauth!.encryptedClientSecret!, "base64"), keys.publicKey, keys.secretKey), "first-secret");

  const created = new Set([id!]);
  for (let i = 1; i < 60; i++) {
    created.add((await integrations.create({ runnerId, scmId: "gitlab", host: `git${i}.example.com`, pat: true })).id!);
  }
  const seen: string[] = [];
  const hosts: string[] = [];
  for await (const item of integrations.list({ filter: { runnerIds: [runnerId] }, pagination: { pageSize: 25 } })) {
    seen.push(item.id!);
    hosts.push(item.host!);
  }
  assert.equal(seen.length, 60);
  assert.deepEqual(new Set(seen), created);
  assert.deepEqual(hosts, [...hosts].sort(), "a runner's integrations, ordered by host");
  const requests = s.logs.filter((l) => l.includes("ListSCMIntegrations")).length;
  assert.equal(requests, 3, "25 + 25 + 10: three pages, then it stops");

  // Secret rotation: the new secret is sealed to the runner's key.
  await integrations.update({ id: id!, oauthPlaintextClientSecret: "second-secret" });
  const rotated = (await integrations.retrieve({ id: id! })).integration!;
  assert.equal(open(Buffer.from(rotated.oauth!.encryptedClientSecret!, "base64"), keys.publicKey, keys.secretKey), "second-secret");
  // Turning PAT on, then removing OAuth, leaves a PAT-only integration.
  await integrations.update({ id: id!, pat: true });
  await integrations.update({ id: id!, oauthClientId: "" });
  const patOnly = (await integrations.retrieve({ id: id! })).integration!;
  assert.equal(patOnly.oauth, undefined);
  assert.equal(patOnly.pat, true);
  // With OAuth gone, turning PAT off would leave no method: refused, nothing changes.
  await assert.rejects(integrations.update({ id: id!, pat: false }), BadRequestError);
  assert.equal((await integrations.retrieve({ id: id! })).integration!.pat, true);

  // Runners page the same way.
  for (let i = 0; i < 3; i++) await client.runners.create({ name: `extra-${i}`, kind: "RUNNER_KIND_LOCAL", provider: "RUNNER_PROVIDER_DESKTOP_MAC" });
  // The SDK's own example names the provider alone; the kind follows from it.
  const byProvider = (await client.runners.create({ name: "extra-3", provider: "RUNNER_PROVIDER_AWS_EC2" })).runner!;
  assert.equal(byProvider.kind, "RUNNER_KIND_REMOTE");
  const runnerIds: string[] = [];
  for await (const r of client.runners.list({ pagination: { pageSize: 2 } })) runnerIds.push(r.runnerId!);
  assert.equal(new Set(runnerIds).size, runnerIds.length);
  assert.ok(runnerIds.includes(runnerId));
  // Every runner of the organization, however many earlier tests made: counted in the database.
  const stored = s.db.$client.prepare("SELECT count(*) FROM runners").pluck().get() as number;
  assert.equal(runnerIds.length, stored);
  assert.ok(stored >= 5, "this one and four extra");
  // The SDK's own list example filters by provider, page by page.
  const aws: string[] = [];
  for await (const r of client.runners.list({ filter: { providers: ["RUNNER_PROVIDER_AWS_EC2"] }, pagination: { pageSize: 1 } })) {
    assert.equal(r.provider, "RUNNER_PROVIDER_AWS_EC2");
    aws.push(r.runnerId!);
  }
  assert.deepEqual(aws.sort(), [runnerId, byProvider.runnerId!].sort());

  await integrations.delete({ id: id! });
  await assert.rejects(integrations.retrieve({ id: id! }), NotFoundError);
  await assert.rejects(integrations.delete({ id: id! }), NotFoundError);
});

it("the official SDK's runner calls: retrieve, update, createRunnerToken, the configuration schema, delete", async () => {
  const client = new Gitpod({ bearerToken: s.token, baseURL: s.url, maxRetries: 0 });
  const { runner, accessToken } = await client.runners.create({ name: "sdk-runner-calls", provider: "RUNNER_PROVIDER_AWS_EC2" });
  const runnerId = runner!.runnerId!;

  const got = (await client.runners.retrieve({ runnerId })).runner!;
  assert.deepEqual([got.runnerId, got.name, got.kind, got.provider, got.status?.phase], [runnerId, "sdk-runner-calls", "RUNNER_KIND_REMOTE", "RUNNER_PROVIDER_AWS_EC2", "RUNNER_PHASE_CREATED"]);

  // The SDK's own update example: a new name and spec settings this service does not keep.
  await client.runners.update({ runnerId, name: "sdk-renamed", spec: { configuration: { autoUpdate: true, releaseChannel: "RUNNER_RELEASE_CHANNEL_LATEST" } } });
  assert.equal((await client.runners.retrieve({ runnerId })).runner!.name, "sdk-renamed");
  await assert.rejects(client.runners.update({ runnerId, name: "x" }), BadRequestError, "a name under 3 characters");
  assert.equal((await client.runners.retrieve({ runnerId })).runner!.name, "sdk-renamed", "nothing changed");

  // A new access token; the one before it stops at once.
  const { accessToken: next } = await client.runners.createRunnerToken({ runnerId });
  assert.ok(next && next !== accessToken);
  const asRunner = (token: string) => call(s, "gitpod.v1.RunnerInteractionService/ListRunnerSCMIntegrations", { runnerId }, token);
  assert.equal((await asRunner(accessToken!)).body.code, "unauthenticated");
  assert.equal((await asRunner(next!)).status, 200);
  await signUp(s, next!);
  assert.equal((await client.runners.retrieve({ runnerId })).runner!.status?.phase, "RUNNER_PHASE_ACTIVE");

  // The schema: the built-in one until the runner publishes its own.
  const builtIn = (await client.runners.configurations.schema.retrieve({ runnerId })).schema!;
  assert.deepEqual(builtIn.scm!.map((e) => e.scmId).sort(), ["azuredevops_entra", "azuredevops_server", "bitbucket", "github", "gitlab"]);
  const github = builtIn.scm!.find((e) => e.scmId === "github")!;
  assert.match(github.oauth!.callbackUrl!, /\/auth\/oauth2\/callback$/);
  const published = await call(s, "gitpod.v1.RunnerInteractionService/UpdateRunnerConfigurationSchema", { runnerId, configSchema: { version: "v2", scm: [{ scmId: "forgejo", name: "Forgejo", defaultHosts: ["codeberg.org"], pat: { description: "a token with repo scope", docsLink: "https://codeberg.org/docs" } }] } }, next!);
  assert.equal(published.status, 200, JSON.stringify(published.body));
  const own = (await client.runners.configurations.schema.retrieve({ runnerId })).schema!;
  assert.equal(own.version, "v2");
  assert.deepEqual(own.scm!.map((e) => [e.scmId, e.name, e.defaultHosts, e.oauth, e.pat?.description, e.pat?.docsLink]), [["forgejo", "Forgejo", ["codeberg.org"], undefined, "a token with repo scope", "https://codeberg.org/docs"]]);
  // Integrations follow it: the new system is taken, one the runner no longer offers is not.
  const integrations = client.runners.configurations.scmIntegrations;
  await integrations.create({ runnerId, scmId: "forgejo", host: "codeberg.org", pat: true });
  await assert.rejects(integrations.create({ runnerId, scmId: "github", host: "github.com", pat: true }), BadRequestError);

  // Deleted with its integrations; the SDK then gets NotFoundError, and the token stops.
  await client.runners.delete({ runnerId });
  await assert.rejects(client.runners.retrieve({ runnerId }), NotFoundError);
  await assert.rejects(client.runners.configurations.schema.retrieve({ runnerId }), NotFoundError);
  // A runner filter naming a runner the organization no longer has is NotFoundError too.
  await assert.rejects(integrations.list({ filter: { runnerIds: [runnerId] } }), NotFoundError);
  const left = s.db.$client.prepare("SELECT count(*) FROM scm_integrations WHERE runner_id = ?").pluck().get(runnerId);
  assert.equal(left, 0, "its integrations went with it");
  assert.equal((await asRunner(next!)).body.code, "unauthenticated");
});
