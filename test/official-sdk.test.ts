import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import Gitpod, { ConflictError, PermissionDeniedError } from "@gitpod/sdk";
import { startServer, type TestServer } from "./harness.js";

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
