import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CreateSCMIntegrationResponseSchema,
  RunnerConfigurationService,
} from "../../../gen/gitpod/v1/runner_configurations_pb.js";
import { createScmIntegration } from "../../services/scm-integrations.js";
import type { Db } from "../../store/database.js";
import { notYet } from "./not-yet.js";
import { apiCaller } from "./caller.js";

export function runnerConfigurationService(db: Db): ServiceImpl<typeof RunnerConfigurationService> {
  return {
    createSCMIntegration(req, ctx) {
      const id = createScmIntegration(db, apiCaller(ctx), {
        runnerId: req.runnerId,
        scmId: req.scmId,
        host: req.host,
        oauthClientId: req.oauthClientId,
        oauthClientSecret: req.oauthPlaintextClientSecret,
        pat: req.pat,
        issuerUrl: req.issuerUrl,
        virtualDirectory: req.virtualDirectory,
      });
      return create(CreateSCMIntegrationResponseSchema, { id });
    },
    getRunnerConfigurationSchema: notYet,
    getSCMIntegration: notYet,
    listSCMIntegrations: notYet,
    updateSCMIntegration: notYet,
    deleteSCMIntegration: notYet,
  };
}
