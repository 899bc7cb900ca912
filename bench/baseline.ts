// The service's runtime, so both sides encode alike (see src/runtime/base64.ts).
import "../src/runtime/base64.js";
import { fdatasync, fdatasyncSync, openSync, writeSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  CreateSCMIntegrationResponseSchema,
  GetSCMIntegrationResponseSchema,
  ListSCMIntegrationsResponseSchema,
  RunnerConfigurationService,
} from "../gen/gitpod/v1/runner_configurations_pb.js";
import { listen } from "../src/transport/http-server.js";
import { nodeAdapter } from "../src/transport/node-adapter.js";

/**
 * The yardstick: the same three methods as no-ops on bare connect-node, served by the
 * same HTTP server setup as the service, with no interceptors, auth or database.
 * Prints its port on stdout.
 *
 * With DURABLE_FILE set it is the durable no-op instead: a create is answered only once
 * what a create adds to the service's WAL is on disk in that file (see durableWrites).
 * Nothing else changes, so the two differ by what durability alone costs on this disk.
 * With OWN_UNARY set, Connect calls take the service's own unary path (see below).
 */
const durable = process.env.DURABLE_FILE ? durableWrites(process.env.DURABLE_FILE) : null;
const id = "0190a0a0-0000-7000-8000-000000000000";

const routes = (router: ConnectRouter) =>
  router.service(RunnerConfigurationService, {
    createSCMIntegration: durable
      ? () => durable().then(() => create(CreateSCMIntegrationResponseSchema, { id }))
      : () => create(CreateSCMIntegrationResponseSchema, { id }),
    getSCMIntegration: () => create(GetSCMIntegrationResponseSchema),
    listSCMIntegrations: () => create(ListSCMIntegrationsResponseSchema),
  });

/**
 * The durable part of a create without SQLite, sealing or checkpoints: each call adds the
 * bytes a create writes to the service's WAL on the 1M-row table (about 6 pages of 2 KiB,
 * each with its 24-byte frame header) and settles after an fdatasync that began after
 * they were written. The calls of one event-loop turn share one write and one sync, and
 * syncs may overlap, as the service's group commit does. The file is written in a ring
 * over 32 MiB set aside at start, as the WAL is reused after a restart, so a sync never
 * has a file size to record.
 */
function durableWrites(file: string): () => Promise<void> {
  const RING = 32 * 1024 * 1024;
  const PER_CREATE = 6 * (24 + 2048);
  const fd = openSync(file, "w+");
  writeSync(fd, Buffer.alloc(RING), 0, RING, 0);
  fdatasyncSync(fd);
  let offset = 0;
  let waiting: (() => void)[] = [];
  const flush = () => {
    const batch = waiting;
    waiting = [];
    const bytes = Buffer.alloc(PER_CREATE * batch.length, 1);
    if (offset + bytes.length > RING) offset = 0;
    writeSync(fd, bytes, 0, bytes.length, offset);
    offset += bytes.length;
    fdatasync(fd, (err) => {
      if (err) throw err; // a yardstick that cannot sync has nothing to say
      for (const done of batch) done();
    });
  };
  return () =>
    new Promise<void>((resolve) => {
      if (waiting.push(resolve) === 1) setImmediate(flush);
    });
}

// OWN_UNARY=1: the same no-ops served the way the service serves Connect unary calls
// (src/transport/connect-unary.ts), not by connect-node: what that path costs by itself.
const adapter = process.env.OWN_UNARY
  ? nodeAdapter({
      routes,
      servesUnary: () => true,
      contextValues: () => createContextValues(),
      fallback: (_req, res) => res.writeHead(404).end(),
      onWriteFailure: () => {},
    })
  : connectNodeAdapter({ routes });
const server = await listen((req, res) => adapter(req as never, res as never), Number(process.env.PORT ?? 0), "127.0.0.1");
process.stdout.write(`${server.address.port}\n`);
process.on("SIGTERM", () => void server.shutdown(1000).then(() => process.exit(0)));
