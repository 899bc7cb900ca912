import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ListRunnerSCMIntegrationsResponseSchema,
  RunnerInteractionService,
  SignupResponseSchema,
  UpdateRunnerConfigurationSchemaResponseSchema,
} from "../../../gen/gitpod/v1/runner_interactions_pb.js";
import { updateRunnerConfigurationSchema } from "../../services/configuration-schemas.js";
import { signup } from "../../services/runners.js";
import { listRunnerScmIntegrations } from "../../services/scm-integrations.js";
import { publishedSchemaFromProto, scmIntegrationToProto } from "../converters.js";
import { pageRequest, pageResponse } from "../pagination.js";
import { runnerCaller } from "./caller.js";
import type { Deps } from "./deps.js";

export function runnerInteractionService({ db, pager }: Deps): ServiceImpl<typeof RunnerInteractionService> {
  return {
    async signup(req, ctx) {
      return create(SignupResponseSchema, { runnerId: await signup(db, runnerCaller(ctx), req.publicKey) });
    },
    async updateRunnerConfigurationSchema(req, ctx) {
      await updateRunnerConfigurationSchema(db, runnerCaller(ctx), {
        runnerId: req.runnerId,
        schema: req.configSchema ? publishedSchemaFromProto(req.configSchema) : undefined,
      });
      return create(UpdateRunnerConfigurationSchemaResponseSchema);
    },
    async listRunnerSCMIntegrations(req, ctx) {
      const page = await listRunnerScmIntegrations(db, pager, runnerCaller(ctx), {
        runnerId: req.runnerId,
        ids: req.filter?.scmIntegrationIds ?? [],
        page: pageRequest(req.pagination, ctx),
      });
      return create(ListRunnerSCMIntegrationsResponseSchema, {
        pagination: pageResponse(page.nextToken),
        scmIntegrations: page.items.map(scmIntegrationToProto),
      });
    },
  };
}
