import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Principal, SubjectSchema } from "../../gen/gitpod/v1/subject_pb.js";
import { RunnerPhase, RunnerSchema, RunnerStatusSchema, type Runner } from "../../gen/gitpod/v1/runners_pb.js";
import {
  RunnerConfigurationSchema_SCMConfigSchemaSchema,
  RunnerConfigurationSchemaSchema,
  type RunnerConfigurationSchema,
  type SCMIntegration,
} from "../../gen/gitpod/v1/runner_configurations_pb.js";
import type { PublishedSchema, SchemaDescription } from "../services/configuration-schemas.js";
import type { RunnerView } from "../store/runners.js";
import type { IntegrationView } from "../store/scm-integrations.js";

/** A stored runner as the API shows it; the access-token hash never leaves the store. */
export function runnerToProto(row: RunnerView): Runner {
  return create(RunnerSchema, {
    runnerId: row.id,
    createdAt: timestampFromMs(row.createdAt),
    updatedAt: timestampFromMs(row.updatedAt),
    name: row.name,
    kind: row.kind,
    provider: row.provider,
    creator: create(SubjectSchema, { id: row.creatorId, principal: Principal.SERVICE_ACCOUNT }),
    status: create(RunnerStatusSchema, {
      updatedAt: timestampFromMs(row.statusUpdatedAt ?? row.createdAt),
      phase: row.publicKey ? RunnerPhase.ACTIVE : RunnerPhase.CREATED,
      publicKey: row.publicKey ? new Uint8Array(row.publicKey) : new Uint8Array(0),
    }),
  });
}

/**
 * A stored integration as the API shows it. `oauth` is present whenever a client id is
 * configured; its secret is empty when the runner signed up with a new key after it
 * was sealed, and must be entered again (see the README).
 *
 * Built as plain message objects (protobuf-es messages are plain objects; the types
 * make every field be named) rather than with create(), which fills each message by
 * walking its schema: for a page of 25 that walk cost 12 µs in a loop, the literals 0.4.
 */
export function scmIntegrationToProto(row: IntegrationView): SCMIntegration {
  return {
    $typeName: "gitpod.v1.SCMIntegration",
    id: row.id,
    scmId: row.scmId,
    host: row.host,
    runnerId: row.runnerId,
    pat: row.pat,
    oauth:
      row.oauthClientId === null
        ? undefined
        : {
            $typeName: "gitpod.v1.SCMIntegrationOAuthConfig",
            clientId: row.oauthClientId,
            // A Buffer is a Uint8Array: no copy per row.
            encryptedClientSecret: row.oauthEncryptedSecret ?? new Uint8Array(0),
            issuerUrl: row.issuerUrl ?? "",
          },
    virtualDirectory: row.virtualDirectory ?? undefined,
  };
}

export function schemaToProto(s: SchemaDescription): RunnerConfigurationSchema {
  return create(RunnerConfigurationSchemaSchema, {
    version: s.version,
    scm: s.scm.map((e) =>
      create(RunnerConfigurationSchema_SCMConfigSchemaSchema, {
        scmId: e.scmId,
        name: e.name,
        defaultHosts: e.defaultHosts,
        oauth: e.oauthCallbackUrl === null ? undefined : { callbackUrl: e.oauthCallbackUrl },
        pat: e.pat ?? undefined,
      }),
    ),
  });
}

/** A schema message from a runner, in the shape the service checks. */
export function publishedSchemaFromProto(s: RunnerConfigurationSchema): PublishedSchema {
  return {
    version: s.version,
    scm: s.scm.map((e) => ({
      scmId: e.scmId,
      name: e.name,
      defaultHosts: e.defaultHosts,
      oauth: e.oauth !== undefined,
      pat: e.pat !== undefined,
      patDescription: e.pat?.description ?? "",
      patDocsLink: e.pat?.docsLink ?? "",
    })),
  };
}
