// The service's runtime, so both sides encode alike (see src/runtime/base64.ts).
import "../src/runtime/base64.js";
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  CreateSCMIntegrationResponseSchema,
  GetSCMIntegrationResponseSchema,
  ListSCMIntegrationsResponseSchema,
  RunnerConfigurationService,
} from "../gen/gitpod/v1/runner_configurations_pb.js";
import { listen } from "../src/transport/http-server.js";

/**
 * The yardstick: the same three methods as no-ops on bare connect-node, served by the
 * same HTTP server setup as the service, with no interceptors, auth or database.
 * Prints its port on stdout.
 */
const routes = (router: ConnectRouter) =>
  router.service(RunnerConfigurationService, {
    createSCMIntegration: () => create(CreateSCMIntegrationResponseSchema, { id: "0190a0a0-0000-7000-8000-000000000000" }),
    getSCMIntegration: () => create(GetSCMIntegrationResponseSchema),
    listSCMIntegrations: () => create(ListSCMIntegrationsResponseSchema),
  });

const adapter = connectNodeAdapter({ routes });
const server = await listen((req, res) => adapter(req as never, res as never), Number(process.env.PORT ?? 0), "127.0.0.1");
process.stdout.write(`${server.address.port}\n`);
process.on("SIGTERM", () => void server.shutdown(1000).then(() => process.exit(0)));
