/**
 * Connect unary calls of the gitpod.v1 methods are served by src/transport/connect-unary.ts,
 * not connect-node's conversions. Here two servers, one each way, get the same requests in
 * the same order (every Connect case of the corpus, over HTTP/1.1 and HTTP/2, and some of
 * the forms real clients send: compressed bodies, compressed answers, deadlines) and must
 * answer each alike: status, the headers that say anything, and the body, once the ids,
 * tokens and sealed secrets that differ between two databases are set aside.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { create, fromBinary, toBinary, toJson, type DescMethod } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { DeleteSCMIntegrationRequestSchema, ListSCMIntegrationsRequestSchema, RunnerConfigurationService } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { RunnerInteractionService } from "../gen/gitpod/v1/runner_interactions_pb.js";
import { RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import { CORPUS, corpusRequest, type CorpusCase, type CorpusContext, type CorpusTokens } from "./corpus/cases.js";
import { decompress, WireClient, type Answer } from "./corpus/wire.js";
import { call, createRunner, signUp, startServer, type TestServer } from "./harness.js";

const METHODS: DescMethod[] = [RunnerService, RunnerConfigurationService, RunnerInteractionService].flatMap((s) => s.methods);

/** Headers whose value is part of the answer (the rest: the date, the request id, keep-alive's timeout). */
const COMPARED_HEADERS = ["content-type", "content-encoding", "x-should-retry", "retry-after", "retry-after-ms", "accept-encoding", "connection", "allow"];

/** Forms of a call the corpus does not hold (it is made of bad requests). */
const FORMS: CorpusCase[] = [
  { name: "list, gzip answer", protocol: "connect-json", method: "RunnerConfigurationService/ListSCMIntegrations", headers: { "accept-encoding": "gzip" }, body: (c) => JSON.stringify({ filter: { runnerIds: [c.runnerId] } }) },
  { name: "list, br answer", protocol: "connect-json", method: "RunnerConfigurationService/ListSCMIntegrations", headers: { "accept-encoding": "br, gzip" }, body: (c) => JSON.stringify({ filter: { runnerIds: [c.runnerId] } }) },
  { name: "list, binary gzip answer", protocol: "connect-proto", method: "RunnerConfigurationService/ListSCMIntegrations", headers: { "accept-encoding": "gzip" }, body: (c) => toBinary(ListSCMIntegrationsRequestSchema, create(ListSCMIntegrationsRequestSchema, { filter: { runnerIds: [c.runnerId] } })) },
  { name: "list, answer coding unknown", protocol: "connect-json", method: "RunnerConfigurationService/ListSCMIntegrations", headers: { "accept-encoding": "zstd" }, body: "{}" },
  { name: "get, gzip body", protocol: "connect-json", method: "RunnerConfigurationService/GetSCMIntegration", headers: { "content-encoding": "gzip" }, body: (c) => gzipSync(JSON.stringify({ id: c.integrationId })) },
  { name: "get, identity body", protocol: "connect-json", method: "RunnerConfigurationService/GetSCMIntegration", headers: { "content-encoding": "identity" }, body: (c) => JSON.stringify({ id: c.integrationId }) },
  { name: "get, deadline", protocol: "connect-json", method: "RunnerConfigurationService/GetSCMIntegration", headers: { "connect-timeout-ms": "5000" }, body: (c) => JSON.stringify({ id: c.integrationId }) },
  { name: "get, charset", protocol: "connect-json", method: "RunnerConfigurationService/GetSCMIntegration", headers: { "content-type": "application/json; charset=utf-8" }, body: (c) => JSON.stringify({ id: c.integrationId }) },
  { name: "get, upper-case type", protocol: "connect-json", method: "RunnerConfigurationService/GetSCMIntegration", headers: { "content-type": "Application/JSON" }, body: (c) => JSON.stringify({ id: c.integrationId }) },
  { name: "get, no protocol version", protocol: "connect-json", method: "RunnerConfigurationService/GetSCMIntegration", headers: { "connect-protocol-version": null }, body: (c) => JSON.stringify({ id: c.integrationId }) },
  { name: "get, no content type", protocol: "connect-json", method: "RunnerConfigurationService/GetSCMIntegration", headers: { "content-type": null }, body: (c) => JSON.stringify({ id: c.integrationId }) },
  { name: "get, streaming type", protocol: "connect-json", method: "RunnerConfigurationService/GetSCMIntegration", headers: { "content-type": "application/connect+json" }, body: "{}" },
  { name: "create, then the same host", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => JSON.stringify({ runnerId: c.runnerId, scmId: "github", host: "forms.example", pat: true }) },
  { name: "the same host again", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => JSON.stringify({ runnerId: c.runnerId, scmId: "github", host: "forms.example", pat: true }) },
  { name: "create, idempotency key", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", headers: { "idempotency-key": "forms-key-1" }, body: (c) => JSON.stringify({ runnerId: c.runnerId, scmId: "gitlab", host: "keyed.example", oauthClientId: "c", oauthPlaintextClientSecret: "s" }) },
  { name: "create, the key again", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", headers: { "idempotency-key": "forms-key-1" }, body: (c) => JSON.stringify({ runnerId: c.runnerId, scmId: "gitlab", host: "keyed.example", oauthClientId: "c", oauthPlaintextClientSecret: "s" }) },
  { name: "runner's own list", protocol: "connect-json", method: "RunnerInteractionService/ListRunnerSCMIntegrations", body: (c) => JSON.stringify({ runnerId: c.runnerId }) },
  { name: "delete", protocol: "connect-proto", method: "RunnerConfigurationService/DeleteSCMIntegration", body: (c) => toBinary(DeleteSCMIntegrationRequestSchema, create(DeleteSCMIntegrationRequestSchema, { id: c.integrationId })) },
];

/** Every Connect case and form, over HTTP/1.1 and over HTTP/2. */
const CASES: CorpusCase[] = [...CORPUS, ...FORMS]
  .filter((c) => c.protocol === "connect-json" || c.protocol === "connect-proto")
  .flatMap((c) => [{ ...c, http2: false }, { ...c, name: `${c.name} (HTTP/2)`, http2: true }]);

interface Side {
  server: TestServer;
  client: WireClient;
  tokens: CorpusTokens;
  ctx: CorpusContext;
  /** The signal of each call that reached the interceptors, in order. */
  signals: AbortSignal[];
}

/** A server with the corpus's setup: a runner that signed up with integrations enough for a compressed page, another, and one of another organization. */
async function side(ownUnary: boolean): Promise<Side> {
  const signals: AbortSignal[] = [];
  const watch: Interceptor = (next) => (req) => {
    signals.push(req.signal);
    return next(req);
  };
  const server = await startServer({ ownUnary, interceptors: [watch] });
  const own = await createRunner(server, server.token, "unary-own-runner");
  await signUp(server, own.runnerToken);
  await createRunner(server, server.token, "unary-second-runner");
  const foreign = await createRunner(server, server.otherToken, "unary-foreign-runner");
  let first = "";
  for (let i = 0; i < 12; i++) {
    const r = await call(server, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", {
      runnerId: own.runnerId,
      scmId: i % 2 ? "github" : "gitlab",
      host: `git${i}.unary.example`,
      oauthClientId: `client-${i}`,
      oauthPlaintextClientSecret: `secret-${i}`,
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    first ||= r.body.id;
  }
  return {
    server,
    client: new WireClient(server.url),
    tokens: { api: server.token, runner: own.runnerToken, other: server.otherToken },
    ctx: { runnerId: own.runnerId, otherRunnerId: foreign.runnerId, integrationId: first },
    signals,
  };
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/** A JSON value with what differs between two databases set aside: ids, times, tokens, sealed secrets. */
function normalized(value: unknown, key = ""): unknown {
  if (typeof value === "string") {
    if (/token|secret|key$/i.test(key)) return `<${key}>`;
    if (/time$|At$/.test(key)) return "<time>";
    return value.replace(UUID, "<id>").replace(/scmapi_[A-Za-z0-9_-]+|scmrun_[A-Za-z0-9_-]+/g, "<token>");
  }
  if (Array.isArray(value)) return value.map((v) => normalized(v, key));
  if (value !== null && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalized(v, k)]));
  return value;
}

/** What of an answer two servers must agree on. */
function comparable(a: Answer, path: string): unknown {
  if (a.kind !== "answer") return a;
  const headers = Object.fromEntries(COMPARED_HEADERS.filter((h) => a.headers[h] !== undefined).map((h) => [h, a.headers[h]]));
  const body = decompress(a.headers["content-encoding"], a.body);
  const method = METHODS.find((m) => `/${m.parent.typeName}/${m.name}` === path.split("?")[0]);
  let shown: unknown = body.toString("latin1");
  if ((a.headers["content-type"] ?? "").startsWith("application/json")) {
    try {
      shown = JSON.parse(body.toString("utf8"));
    } catch {
      // Compared as text.
    }
  } else if (a.status === 200 && method && a.headers["content-type"] === "application/proto") {
    shown = toJson(method.output, fromBinary(method.output, body));
  }
  return { status: a.status, headers, body: normalized(shown), trailers: a.trailers };
}

describe("Connect unary calls answered as connect-node answers them", () => {
  let own: Side;
  let theirs: Side;

  before(async () => {
    own = await side(true);
    theirs = await side(false);
  });

  after(async () => {
    for (const s of [own, theirs]) {
      s.client.close();
      await s.server.close();
    }
  });

  it("serves the calls of each server the way it was told", async () => {
    // connect-node aborts a call's signal once it has answered; connect-unary.ts only when
    // its client goes first or its deadline passes. This is how the two paths tell apart.
    for (const s of [own, theirs]) {
      const r = await call(s.server, "gitpod.v1.RunnerService/ListRunners", {});
      assert.equal(r.status, 200);
      assert.equal(s.signals.at(-1)!.aborted, s === theirs);
    }
  });

  it("answers every Connect case of the corpus, and the commoner forms, alike", async () => {
    assert.ok(CASES.length > 200, `only ${CASES.length} cases to compare`);
    const differing: string[] = [];
    for (const c of CASES) {
      const answers = [];
      for (const s of [own, theirs]) {
        const req = corpusRequest(c, s.tokens, s.ctx);
        answers.push(comparable(await s.client.send(req), req.path));
      }
      try {
        assert.deepEqual(answers[0], answers[1]);
      } catch {
        differing.push(`${c.protocol} "${c.name}":\n  own:          ${JSON.stringify(answers[0]).slice(0, 600)}\n  connect-node: ${JSON.stringify(answers[1]).slice(0, 600)}`);
      }
    }
    assert.deepEqual(differing, []);
  });
});

describe("Connect unary answers at the compression threshold", () => {
  // connect's compressMinBytes (1024 unless set): an answer of that many bytes is compressed
  // when the client accepts it, as connect-node's Connect handler does (`>=`); one byte fewer is not.
  it("compresses an answer of exactly 1024 bytes, and not one of 1023, on both paths", async () => {
    for (const ownUnary of [true, false]) {
      const server = await startServer({ ownUnary });
      const client = new WireClient(server.url);
      try {
        const { runnerId, runnerToken } = await createRunner(server, server.token, "threshold-runner");
        await signUp(server, runnerToken);
        // Hosts of one length, ids all UUIDs, a sealed secret of one length: the answers differ only by the client id.
        const create = async (host: string, clientId: string) => {
          const r = await call(server, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", { runnerId, scmId: "github", host, oauthClientId: clientId, oauthPlaintextClientSecret: "s".repeat(500) });
          assert.equal(r.status, 200, JSON.stringify(r.body));
          return r.body.id as string;
        };
        const get = async (id: string, acceptEncoding?: string) => {
          const headers: Record<string, string> = { "content-type": "application/json", authorization: `Bearer ${server.token}` };
          if (acceptEncoding !== undefined) headers["accept-encoding"] = acceptEncoding;
          const a = await client.send({ path: "/gitpod.v1.RunnerConfigurationService/GetSCMIntegration", headers, body: Buffer.from(JSON.stringify({ id })), http2: false });
          assert.equal(a.kind, "answer");
          if (a.kind !== "answer") throw new Error("no answer");
          assert.equal(a.status, 200, a.body.toString());
          return a;
        };
        const base = (await get(await create("a.threshold.example", "c"))).body.byteLength;
        assert.ok(base < 1023 && 1024 - base < 200, `a probe answer of ${base} bytes`);
        for (const [size, host] of [[1023, "b.threshold.example"], [1024, "c.threshold.example"]] as const) {
          const id = await create(host, "c".repeat(1 + size - base));
          const plain = await get(id);
          assert.equal(plain.body.byteLength, size, "the answer has the size aimed at");
          assert.equal(plain.headers["content-encoding"], undefined);
          const gz = await get(id, "gzip");
          assert.equal(gz.headers["content-encoding"], size >= 1024 ? "gzip" : undefined, `${ownUnary ? "own" : "connect-node"}: an answer of ${size} bytes`);
        }
      } finally {
        client.close();
        await server.close();
      }
    }
  });
});
