import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Principal, SubjectSchema } from "../../gen/gitpod/v1/subject_pb.js";
import { RunnerPhase, RunnerSchema, RunnerStatusSchema, type Runner } from "../../gen/gitpod/v1/runners_pb.js";
import type { RunnerRow } from "../store/schema.js";

/** A stored runner as the API shows it; the access-token hash never leaves the store. */
export function runnerToProto(row: RunnerRow): Runner {
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
