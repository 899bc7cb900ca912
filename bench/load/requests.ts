import { create, toBinary } from "@bufbuild/protobuf";
import {
  CreateSCMIntegrationRequestSchema,
  GetSCMIntegrationRequestSchema,
  ListSCMIntegrationsRequestSchema,
} from "../../gen/gitpod/v1/runner_configurations_pb.js";
import type { Scenario } from "../drive.js";

/** Where each scenario's method is served. */
export const PATHS: Record<Scenario, string> = {
  create: "/gitpod.v1.RunnerConfigurationService/CreateSCMIntegration",
  get: "/gitpod.v1.RunnerConfigurationService/GetSCMIntegration",
  list: "/gitpod.v1.RunnerConfigurationService/ListSCMIntegrations",
};

/** What one call of a scenario asks, as wrk.lua builds it too: a unique host to create, an id to get, a runner's first page of 25. */
export interface Ask { runnerId: string; id: string; host: string; secret: string }

/** The request message of `ask`, in protobuf's binary form. */
export function binaryRequest(s: Scenario, ask: Ask): Uint8Array {
  if (s === "create") {
    return toBinary(CreateSCMIntegrationRequestSchema, create(CreateSCMIntegrationRequestSchema, {
      runnerId: ask.runnerId, scmId: "github", host: ask.host, oauthClientId: "bench-client", oauthPlaintextClientSecret: ask.secret,
    }));
  }
  if (s === "get") return toBinary(GetSCMIntegrationRequestSchema, create(GetSCMIntegrationRequestSchema, { id: ask.id }));
  return toBinary(ListSCMIntegrationsRequestSchema, create(ListSCMIntegrationsRequestSchema, {
    pagination: { pageSize: 25 }, filter: { runnerIds: [ask.runnerId] },
  }));
}

/** The same request in Connect JSON. */
export function jsonRequest(s: Scenario, ask: Ask): string {
  if (s === "create") return JSON.stringify({ runnerId: ask.runnerId, scmId: "github", host: ask.host, oauthClientId: "bench-client", oauthPlaintextClientSecret: ask.secret });
  if (s === "get") return JSON.stringify({ id: ask.id });
  return JSON.stringify({ pagination: { pageSize: 25 }, filter: { runnerIds: [ask.runnerId] } });
}

/** A gRPC length-prefixed message, uncompressed. */
export function grpcFrame(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + bytes.length);
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}
