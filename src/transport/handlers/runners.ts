import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { CreateRunnerResponseSchema, RunnerService } from "../../../gen/gitpod/v1/runners_pb.js";
import * as runners from "../../services/runners.js";
import type { Db } from "../../store/database.js";
import { notYet } from "./not-yet.js";
import { apiCaller } from "./caller.js";
import { runnerToProto } from "../converters.js";

export function runnerService(db: Db): ServiceImpl<typeof RunnerService> {
  return {
    createRunner(req, ctx: HandlerContext) {
      const { runner, accessToken } = runners.createRunner(db, apiCaller(ctx), {
        name: req.name,
        kind: req.kind,
        provider: req.provider,
      });
      return create(CreateRunnerResponseSchema, { runner: runnerToProto(runner), accessToken });
    },
    getRunner: notYet,
    listRunners: notYet,
    updateRunner: notYet,
    deleteRunner: notYet,
    createRunnerToken: notYet,
  };
}
