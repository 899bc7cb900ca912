import assert from "node:assert/strict";
import { it } from "node:test";
import { HealthCheckResponse_ServingStatus, Health } from "../gen/grpc/health/v1/health_pb.js";
import { nodeAdapter } from "../src/transport/node-adapter.js";
import { listen, type NodeHandler } from "../src/transport/http-server.js";

/**
 * The adapter's handling of an answer that cannot be written, for a reason other than a client
 * gone: no real write fails that way on demand, so the response's end() here throws the error
 * `code` names, as a broken stream would, once the answer is ready.
 */
async function failingWrite(code: string, ownUnary: boolean) {
  const told: unknown[] = [];
  const adapter = nodeAdapter({
    routes: (router) => router.service(Health, { check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }) }),
    contextValues: () => undefined as never,
    fallback: (_req, res) => res.end(),
    servesUnary: () => ownUnary,
    onWriteFailure: (_req, reason) => told.push(reason),
  });
  const breaking: NodeHandler = (req, res) => {
    res.end = (() => {
      throw Object.assign(new Error(`writing failed (${code})`), { code });
    }) as typeof res.end;
    adapter(req, res);
  };
  const server = await listen(breaking, 0, "127.0.0.1");
  try {
    const answer = fetch(`http://127.0.0.1:${server.address.port}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }).then(
      (res) => `answered ${res.status}`,
      () => "cut off",
    );
    const outcome = await Promise.race([answer, new Promise<string>((r) => setTimeout(() => r("left open"), 3000).unref())]);
    return { told, outcome };
  } finally {
    await server.shutdown(100);
  }
}

for (const ownUnary of [false, true]) {
  const path = ownUnary ? "connect-unary.ts" : "connect-node";
  it(`through ${path}: an answer that cannot be written is told to onWriteFailure and cut off, not left open`, async () => {
    const { told, outcome } = await failingWrite("EFAKE", ownUnary);
    // connect-node hands on node's error inside its own (code 13, the error its cause).
    const codeOf = (r: unknown) => {
      const e = r as { code?: unknown; cause?: { code?: unknown } };
      return typeof e.code === "string" ? e.code : e.cause?.code;
    };
    assert.deepEqual(told.map(codeOf), ["EFAKE"]);
    assert.equal(outcome, "cut off");
  });

  it(`through ${path}: one whose client went (ECONNRESET) passes in silence`, async () => {
    const { told } = await failingWrite("ECONNRESET", ownUnary);
    assert.deepEqual(told, []);
  });
}
