import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";
import { startServer, type TestServer } from "./harness.js";

let s: TestServer;
before(async () => (s = await startServer()));
after(() => s.close());

it("@grpc/grpc-js, an independent gRPC implementation, creates a runner and an integration", async () => {
  const definition = loader.loadSync(["gitpod/v1/runners.proto", "gitpod/v1/runner_configurations.proto"], {
    includeDirs: ["proto"],
    keepCase: true,
    enums: String,
  });
  const pkg = grpc.loadPackageDefinition(definition) as any;
  const address = s.url.replace("http://", "");
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${s.token}`);
  const runners = new pkg.gitpod.v1.RunnerService(address, grpc.credentials.createInsecure());
  const configs = new pkg.gitpod.v1.RunnerConfigurationService(address, grpc.credentials.createInsecure());
  const unary = (client: any, method: string, req: object) =>
    new Promise<any>((resolve, reject) => client[method](req, metadata, (err: unknown, res: unknown) => (err ? reject(err) : resolve(res))));
  try {
    const created = await unary(runners, "CreateRunner", { name: "grpc-js runner", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_GCP" });
    const runnerId = created.runner.runner_id;
    const res = await unary(configs, "CreateSCMIntegration", { runner_id: runnerId, scm_id: "gitlab", host: "gitlab.example.com:8443", pat: true });
    assert.match(res.id, /^[0-9a-f-]{36}$/);
    await assert.rejects(unary(configs, "CreateSCMIntegration", { runner_id: runnerId, scm_id: "gitlab", host: "gitlab.example.com:8443", pat: true }), (e: any) => e.code === grpc.status.ALREADY_EXISTS);
    await assert.rejects(unary(configs, "CreateSCMIntegration", { runner_id: "bad", scm_id: "gitlab", host: "h", pat: true }), (e: any) => e.code === grpc.status.INVALID_ARGUMENT && /runner_id/.test(e.details));
    // The message reads as written: grpc-js unescapes only what the gRPC spec has escaped,
    // and non-ASCII text (a host name here) comes through whole.
    await assert.rejects(unary(configs, "GetSCMIntegration", { id: "bad, 100% (or ünïcode?)" }), (e: any) => {
      assert.equal(e.details, 'id: must be a uuid, got "bad, 100% (or ünïcode?)"');
      return e.code === grpc.status.INVALID_ARGUMENT;
    });
  } finally {
    runners.close();
    configs.close();
  }
});

it("a gitpod.v1 method this service does not serve is UNIMPLEMENTED, with a message saying so", async () => {
  const client = new grpc.Client(s.url.replace("http://", ""), grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${s.token}`);
  try {
    const err = await new Promise<any>((resolve) =>
      client.makeUnaryRequest(
        "/gitpod.v1.RunnerService/ParseContextURL",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        metadata,
        (e: unknown) => resolve(e),
      ),
    );
    assert.equal(err?.code, grpc.status.UNIMPLEMENTED, String(err));
    assert.equal(err.details, "gitpod.v1.RunnerService/ParseContextURL is not implemented by this service, which serves the SCM-integration part of the gitpod.v1 API");
  } finally {
    client.close();
  }
});
