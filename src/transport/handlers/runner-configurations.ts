import { create, toBinary } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CreateSCMIntegrationRequestSchema,
  CreateSCMIntegrationResponseSchema,
  DeleteSCMIntegrationResponseSchema,
  GetRunnerConfigurationSchemaResponseSchema,
  RunnerConfigurationService,
  UpdateSCMIntegrationResponseSchema,
} from "../../../gen/gitpod/v1/runner_configurations_pb.js";
import { getRunnerConfigurationSchema } from "../../services/configuration-schemas.js";
import * as integrations from "../../services/scm-integrations.js";
import { schemaToProto, scmIntegrationToProto } from "../converters.js";
import { pageRequest, pageResponse } from "../pagination.js";
import { apiCaller } from "./caller.js";
import type { Deps } from "./deps.js";

export function runnerConfigurationService({ db, pager, publicUrl, idempotency }: Deps): ServiceImpl<typeof RunnerConfigurationService> {
  return {
    async createSCMIntegration(req, ctx) {
      const caller = apiCaller(ctx);
      // A retry with the same Idempotency-Key gets the first call's answer (see README). The
      // request is fingerprinted without its plaintext secret: the fingerprint's key lives in
      // the same database, so a copy of the file could otherwise test guesses of the secret.
      // An empty optional string means what an absent one does.
      const fingerprinted = (host: string, virtualDirectory: string | undefined, secret: "given" | null = "given") =>
        toBinary(
          CreateSCMIntegrationRequestSchema,
          {
            ...req,
            // The runner id, host and virtual directory as stored: each is taken in more than
            // one spelling.
            runnerId: req.runnerId.toLowerCase(),
            host,
            oauthClientId: req.oauthClientId || undefined,
            // One marker whether a secret came or not: OAuth needs both client id and secret,
            // so among requests Create takes, the client id already tells them apart.
            oauthPlaintextClientSecret: secret ?? undefined,
            issuerUrl: req.issuerUrl || undefined,
            virtualDirectory: virtualDirectory || undefined,
          },
          { writeUnknownFields: false },
        );
      const asSent = (fields: Partial<typeof req>) => toBinary(CreateSCMIntegrationRequestSchema, { ...req, ...fields }, { writeUnknownFields: false });
      const once = idempotency.call(
        ctx.requestHeader.get("idempotency-key"),
        `api:${caller.tokenId}`,
        CreateSCMIntegrationRequestSchema.typeName,
        () => fingerprinted(integrations.hostAsStored(req.host), integrations.directoryAsStored(req.virtualDirectory)),
        // What earlier versions fingerprinted, so that a retry across an upgrade still matches
        // a key they stored (asked only when the current form does not match):
        () => {
          const host = integrations.hostAsStored(req.host);
          const marker = req.oauthPlaintextClientSecret === "" ? "" : "given";
          return [
            // until 2026-12-05: the virtual directory as sent; until 2026-12-04 (15:54) the host too;
            fingerprinted(host, req.virtualDirectory),
            fingerprinted(req.host, req.virtualDirectory),
            // 2026-12-04, 10:22 to 11:52: no marker without a secret;
            ...(req.oauthPlaintextClientSecret ? [] : [fingerprinted(req.host, req.virtualDirectory, null)]),
            // 2026-12-03 (18:07) to 2026-12-04 (10:22): the request as sent with a marker for
            // the secret, the runner id in either case;
            asSent({ oauthPlaintextClientSecret: marker }),
            asSent({ oauthPlaintextClientSecret: marker, runnerId: req.runnerId.toLowerCase() }),
            // before: the request as sent, its secret included. Only compared, never stored.
            asSent({}),
          ];
        },
      );
      const id = await integrations.createScmIntegration(db, caller, {
        runnerId: req.runnerId,
        scmId: req.scmId,
        host: req.host,
        oauthClientId: req.oauthClientId,
        oauthClientSecret: req.oauthPlaintextClientSecret,
        pat: req.pat,
        issuerUrl: req.issuerUrl,
        virtualDirectory: req.virtualDirectory,
      }, once);
      return create(CreateSCMIntegrationResponseSchema, { id });
    },
    async getSCMIntegration(req, ctx) {
      const row = await integrations.getScmIntegration(db, apiCaller(ctx), req.id);
      return { $typeName: "gitpod.v1.GetSCMIntegrationResponse", integration: scmIntegrationToProto(row) };
    },
    async listSCMIntegrations(req, ctx) {
      const page = await integrations.listScmIntegrations(db, pager, apiCaller(ctx), {
        runnerIds: req.filter?.runnerIds ?? [],
        page: pageRequest(req.pagination, ctx),
      });
      return {
        $typeName: "gitpod.v1.ListSCMIntegrationsResponse",
        pagination: pageResponse(page.nextToken),
        integrations: page.items.map(scmIntegrationToProto),
      };
    },
    async updateSCMIntegration(req, ctx) {
      await integrations.updateScmIntegration(db, apiCaller(ctx), {
        id: req.id,
        oauthClientId: req.oauthClientId,
        oauthClientSecret: req.oauthPlaintextClientSecret,
        pat: req.pat,
        issuerUrl: req.issuerUrl,
        virtualDirectory: req.virtualDirectory,
      });
      return create(UpdateSCMIntegrationResponseSchema);
    },
    async deleteSCMIntegration(req, ctx) {
      await integrations.deleteScmIntegration(db, apiCaller(ctx), req.id);
      return create(DeleteSCMIntegrationResponseSchema);
    },
    async getRunnerConfigurationSchema(req, ctx) {
      const schema = await getRunnerConfigurationSchema(db, apiCaller(ctx), req.runnerId, publicUrl());
      return create(GetRunnerConfigurationSchemaResponseSchema, { schema: schemaToProto(schema) });
    },
  };
}
