import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "../../../gen/grpc/health/v1/health_pb.js";
import { truncate } from "../../domain/text.js";

/**
 * gRPC health: SERVING while `isHealthy` says so (the database answers, not shutting down),
 * for the server as a whole ("") and for each service in `services` by its full name. Any
 * other name is NOT_FOUND, as the health protocol answers a service it does not know.
 */
export function healthService(isHealthy: () => boolean, services: readonly string[]): ServiceImpl<typeof Health> {
  const known = new Set(["", ...services]);
  return {
    check(req) {
      if (!known.has(req.service)) throw new ConnectError(`unknown service "${truncate(req.service, 200)}": this server reports on "" (the server) and ${services.join(", ")}`, Code.NotFound);
      return create(HealthCheckResponseSchema, { status: isHealthy() ? Status.SERVING : Status.NOT_SERVING });
    },
  };
}
