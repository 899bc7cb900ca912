import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CreateRunnerResponseSchema,
  CreateRunnerTokenResponseSchema,
  DeleteRunnerResponseSchema,
  GetRunnerResponseSchema,
  ListRunnersResponseSchema,
  RunnerService,
  UpdateRunnerResponseSchema,
} from "../../../gen/gitpod/v1/runners_pb.js";
import * as runners from "../../services/runners.js";
import { runnerToProto } from "../converters.js";
import { pageRequest, pageResponse } from "../pagination.js";
import { apiCaller } from "./caller.js";
import type { Deps } from "./deps.js";

export function runnerService({ db, pager }: Deps): ServiceImpl<typeof RunnerService> {
  return {
    async createRunner(req, ctx) {
      const { runner, accessToken } = await runners.createRunner(db, apiCaller(ctx), {
        name: req.name,
        kind: req.kind,
        provider: req.provider,
      });
      return create(CreateRunnerResponseSchema, { runner: runnerToProto(runner), accessToken });
    },
    async getRunner(req, ctx) {
      return create(GetRunnerResponseSchema, { runner: runnerToProto(await runners.getRunner(db, apiCaller(ctx), req.runnerId)) });
    },
    async listRunners(req, ctx) {
      const page = await runners.listRunners(db, pager, apiCaller(ctx), {
        filter: { creatorIds: req.filter?.creatorIds ?? [], kinds: req.filter?.kinds ?? [], providers: req.filter?.providers ?? [] },
        page: pageRequest(req.pagination, ctx),
      });
      return create(ListRunnersResponseSchema, {
        pagination: pageResponse(page.nextToken),
        runners: page.items.map(runnerToProto),
      });
    },
    async updateRunner(req, ctx) {
      await runners.updateRunner(db, apiCaller(ctx), { runnerId: req.runnerId, name: req.name });
      return create(UpdateRunnerResponseSchema);
    },
    async deleteRunner(req, ctx) {
      await runners.deleteRunner(db, apiCaller(ctx), req.runnerId);
      return create(DeleteRunnerResponseSchema);
    },
    async createRunnerToken(req, ctx) {
      return create(CreateRunnerTokenResponseSchema, {
        accessToken: await runners.createRunnerToken(db, apiCaller(ctx), req.runnerId),
      });
    },
  };
}
