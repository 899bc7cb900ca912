import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { RunnerConfigurationService } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { RunnerKind, RunnerProvider, RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { startServer, type TestServer } from "./harness.js";

describe("every protocol reaches the same port", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  const transports: Array<[string, (url: string, token: string) => Transport]> = [
    ["Connect binary (HTTP/1.1)", (baseUrl, t) => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors: [bearer(t)] })],
    ["Connect JSON (h2c)", (baseUrl, t) => createConnectTransport({ baseUrl, httpVersion: "2", interceptors: [bearer(t)] })],
    ["gRPC-Web (HTTP/1.1)", (baseUrl, t) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer(t)] })],
    ["gRPC (h2c)", (baseUrl, t) => createGrpcTransport({ baseUrl, interceptors: [bearer(t)] })],
  ];

  for (const [name, make] of transports) {
    it(`${name}: creates a runner and an integration, and maps errors to codes`, async () => {
      const transport = make(s.url, s.token);
      const runners = createClient(RunnerService, transport);
      const configs = createClient(RunnerConfigurationService, transport);
      const { runner } = await runners.createRunner({ name: `runner ${name}`, kind: RunnerKind.REMOTE, provider: RunnerProvider.LINUX_HOST });
      const { id } = await configs.createSCMIntegration({ runnerId: runner!.runnerId, scmId: "bitbucket", host: "bitbucket.org", pat: true });
      assert.match(id, /^[0-9a-f-]{36}$/);
      await assert.rejects(
        configs.createSCMIntegration({ runnerId: runner!.runnerId, scmId: "bitbucket", host: "bitbucket.org", pat: true }),
        (e) => ConnectError.from(e).code === Code.AlreadyExists,
      );
      const health = await createClient(Health, transport).check({});
      assert.equal(health.status, HealthCheckResponse_ServingStatus.SERVING);
    });
  }
});

function bearer(token: string) {
  return (next: any) => async (req: any) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}
