import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "../../../gen/grpc/health/v1/health_pb.js";

/** gRPC health: SERVING while `isHealthy` says so (the database answers, not shutting down). */
export function healthService(isHealthy: () => boolean): ServiceImpl<typeof Health> {
  return {
    check(req) {
      if (req.service !== "" && !req.service.startsWith("gitpod.v1.")) {
        return create(HealthCheckResponseSchema, { status: Status.SERVICE_UNKNOWN });
      }
      return create(HealthCheckResponseSchema, { status: isHealthy() ? Status.SERVING : Status.NOT_SERVING });
    },
  };
}
