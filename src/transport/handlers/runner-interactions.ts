import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  RunnerInteractionService,
  SignupResponseSchema,
} from "../../../gen/gitpod/v1/runner_interactions_pb.js";
import { signup } from "../../services/runners.js";
import type { Db } from "../../store/database.js";
import { notYet } from "./not-yet.js";
import { runnerCaller } from "./caller.js";

export function runnerInteractionService(db: Db): ServiceImpl<typeof RunnerInteractionService> {
  return {
    signup(req, ctx) {
      return create(SignupResponseSchema, { runnerId: signup(db, runnerCaller(ctx), req.publicKey) });
    },
    updateRunnerConfigurationSchema: notYet,
    listRunnerSCMIntegrations: notYet,
  };
}
