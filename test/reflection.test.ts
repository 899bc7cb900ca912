import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { it } from "node:test";
import http2 from "node:http2";
import { create, createFileRegistry, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { MAX_QUESTIONS } from "../src/transport/handlers/reflection.js";
import { envelope } from "./corpus/wire.js";
import { startServer, until } from "./harness.js";

type Question = MessageInitShape<typeof v1.ServerReflectionRequestSchema>;

/** A question as one gRPC frame, for streams driven over raw HTTP/2. */
const question = (q: Question) => envelope(toBinary(v1.ServerReflectionRequestSchema, create(v1.ServerReflectionRequestSchema, q)));

/** Asks `questions` on one stream (no token) and answers what came back, in order. */
async function ask(url: string, questions: Question[]): Promise<v1.ServerReflectionResponse[]> {
  const client = createClient(v1.ServerReflection, createGrpcTransport({ baseUrl: url }));
  const out: v1.ServerReflectionResponse[] = [];
  for await (const r of client.serverReflectionInfo((async function* () {
    for (const q of questions) yield create(v1.ServerReflectionRequestSchema, q);
  })())) out.push(r);
  return out;
}

const files = (r: v1.ServerReflectionResponse): FileDescriptorProto[] => {
  assert.equal(r.messageResponse.case, "fileDescriptorResponse", JSON.stringify(r.messageResponse.value));
  return (r.messageResponse.value as v1.FileDescriptorResponse).fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
};

const error = (r: v1.ServerReflectionResponse) => {
  assert.equal(r.messageResponse.case, "errorResponse");
  return r.messageResponse.value as v1.ErrorResponse;
};

it("reflection lists the services and gives each file with its imports once per stream, enough to build every method's types; unknown names are not_found", async () => {
  const s = await startServer();
  try {
    const answers = await ask(s.url, [
      { host: "h", messageRequest: { case: "listServices", value: "" } },
      { messageRequest: { case: "fileContainingSymbol", value: "gitpod.v1.RunnerService.CreateRunner" } },
      { messageRequest: { case: "fileByFilename", value: "gitpod/v1/runner_configurations.proto" } },
      // A field, with the leading dot descriptors write; its file and imports were all sent already.
      { messageRequest: { case: "fileContainingSymbol", value: ".gitpod.v1.SCMIntegration.host" } },
      { messageRequest: { case: "fileContainingSymbol", value: "gitpod.v1.NoSuchThing" } },
      { messageRequest: { case: "fileByFilename", value: "../../etc/passwd" } },
      { messageRequest: { case: "fileContainingExtension", value: { containingType: "gitpod.v1.Runner", extensionNumber: 1000 } } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "gitpod.v1.Runner" } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "gitpod.v1.Nope" } },
      { messageRequest: { case: undefined } },
    ]);
    assert.equal(answers.length, 10, "one answer a question");
    answers.forEach((a, i) => assert.equal(a.originalRequest?.messageRequest.case, [
      "listServices", "fileContainingSymbol", "fileByFilename", "fileContainingSymbol", "fileContainingSymbol", "fileByFilename",
      "fileContainingExtension", "allExtensionNumbersOfType", "allExtensionNumbersOfType", undefined,
    ][i], "each answer names its question"));
    assert.equal(answers[0]!.validHost, "h");

    const services = (answers[0]!.messageResponse.value as v1.ListServiceResponse).service.map((x) => x.name);
    assert.deepEqual(services.sort(), [
      "gitpod.v1.RunnerConfigurationService", "gitpod.v1.RunnerInteractionService", "gitpod.v1.RunnerService",
      "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
    ]);

    // The runners file first, then what it imports; the second file only with what was not sent.
    const first = files(answers[1]!);
    assert.equal(first[0]!.name, "gitpod/v1/runners.proto");
    assert.ok(first.some((f) => f.name === "google/protobuf/timestamp.proto"), first.map((f) => f.name).join());
    const second = files(answers[2]!);
    assert.equal(second[0]!.name, "gitpod/v1/runner_configurations.proto");
    const names = [...first, ...second].map((f) => f.name);
    assert.equal(new Set(names).size, names.length, `no file twice on one stream: ${names}`);
    assert.deepEqual(files(answers[3]!).map((f) => f.name), ["gitpod/v1/runner_configurations.proto"], "the file asked for, always; its imports were sent");

    // What the client now holds resolves every method of both services, as a tool builds them.
    const held = new Map([...first, ...second].map((f) => [f.name, f]));
    const registry = createFileRegistry(
      ...[first[0]!, second[0]!].map((root) => createFileRegistry(root, (name) => held.get(name))),
    );
    const createRunner = registry.getService("gitpod.v1.RunnerService")!.methods.find((m) => m.name === "CreateRunner")!;
    assert.deepEqual(createRunner.input.fields.map((f) => [f.name, f.number]), [["name", 1], ["kind", 2], ["provider", 4]]);
    assert.deepEqual(createRunner.output.fields.map((f) => [f.name, f.number]), [["runner", 1], ["access_token", 2]]);
    assert.equal(createRunner.output.field.runner!.message!.field.createdAt!.message!.typeName, "google.protobuf.Timestamp", "imports resolved");
    assert.deepEqual(registry.getService("gitpod.v1.RunnerConfigurationService")!.methods.map((m) => m.name).sort(), [
      "CreateSCMIntegration", "DeleteSCMIntegration", "GetRunnerConfigurationSchema", "GetSCMIntegration", "ListSCMIntegrations", "UpdateSCMIntegration",
    ]);
    assert.equal(registry.getMessage("gitpod.v1.SCMIntegration")!.field.host!.number, 3);

    assert.deepEqual([error(answers[4]!).errorCode, error(answers[5]!).errorCode, error(answers[6]!).errorCode], [Code.NotFound, Code.NotFound, Code.NotFound]);
    assert.match(error(answers[4]!).errorMessage, /^no symbol "gitpod\.v1\.NoSuchThing" in this service's schema$/);
    assert.match(error(answers[5]!).errorMessage, /^no file named "\.\.\/\.\.\/etc\/passwd"/);
    assert.deepEqual(answers[7]!.messageResponse.value, create(v1.ExtensionNumberResponseSchema, { baseTypeName: "gitpod.v1.Runner", extensionNumber: [] }));
    assert.equal(error(answers[8]!).errorCode, Code.NotFound);
    assert.equal(error(answers[9]!).errorCode, Code.InvalidArgument);

    // Enum values (in their enum's scope, nested too) and the synthetic oneof of an optional field.
    const symbols = await ask(s.url, ["gitpod.v1.RUNNER_PHASE_CREATED", "grpc.health.v1.HealthCheckResponse.SERVING", "gitpod.v1.SCMIntegration._oauth"].map(
      (value): Question => ({ messageRequest: { case: "fileContainingSymbol", value } }),
    ));
    assert.deepEqual(symbols.map((r) => files(r)[0]!.name), ["gitpod/v1/runners.proto", "grpc/health/v1/health.proto", "gitpod/v1/runner_configurations.proto"]);

    // The older package name answers the same.
    const old = createClient(v1alpha.ServerReflection, createGrpcTransport({ baseUrl: s.url }));
    const oldAnswers: v1alpha.ServerReflectionResponse[] = [];
    for await (const r of old.serverReflectionInfo((async function* () {
      yield create(v1alpha.ServerReflectionRequestSchema, { messageRequest: { case: "fileByFilename", value: "grpc/health/v1/health.proto" } });
    })())) oldAnswers.push(r);
    assert.equal(oldAnswers.length, 1);
    assert.equal(oldAnswers[0]!.messageResponse.case, "fileDescriptorResponse");
    assert.equal(fromBinary(FileDescriptorProtoSchema, (oldAnswers[0]!.messageResponse.value as v1alpha.FileDescriptorResponse).fileDescriptorProto[0]!).package, "grpc.health.v1");

    // A stream takes MAX_QUESTIONS questions; the next is refused, after the answers to those.
    const many: v1.ServerReflectionResponse[] = [];
    const more = createClient(v1.ServerReflection, createGrpcTransport({ baseUrl: s.url }));
    await assert.rejects(
      (async () => {
        for await (const r of more.serverReflectionInfo((async function* () {
          for (let i = 0; i <= MAX_QUESTIONS; i++) yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
        })())) many.push(r);
      })(),
      (e) => ConnectError.from(e).code === Code.ResourceExhausted && /at most 32 questions a stream/.test(ConnectError.from(e).rawMessage),
    );
    assert.equal(many.length, MAX_QUESTIONS);

    // A question is a name: one past 1 KiB is refused, and so is a compressed one. Its log
    // line says so over the Connect protocol too, whose stream ends with the error.
    const tooLong: Question = { messageRequest: { case: "fileContainingSymbol", value: "x".repeat(1100) } };
    await assert.rejects(ask(s.url, [tooLong]), (e) => ConnectError.from(e).code === Code.ResourceExhausted);
    const overConnect = createClient(v1.ServerReflection, createConnectTransport({ baseUrl: s.url, httpVersion: "2" }));
    await assert.rejects(
      (async () => {
        for await (const _ of overConnect.serverReflectionInfo((async function* () {
          yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
          yield create(v1.ServerReflectionRequestSchema, tooLong);
        })()));
      })(),
      (e) => ConnectError.from(e).code === Code.ResourceExhausted,
    );
    // (A line is written as its answer closes, a moment after the client has it.)
    const logged = () => s.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "request" && l.procedure === "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
    await until("the Connect stream's line", () => logged().some((l) => l.protocol === "connect-stream"));
    assert.deepEqual(logged().slice(-2).map((l) => [l.protocol, l.code]), [["grpc", "resource_exhausted"], ["connect-stream", "resource_exhausted"]]);
    const gzip = createClient(v1.ServerReflection, createGrpcTransport({ baseUrl: s.url, sendCompression: compressionGzip, compressMinBytes: 0 }));
    await assert.rejects(
      (async () => {
        for await (const _ of gzip.serverReflectionInfo((async function* () {
          yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
        })()));
      })(),
      (e) => ConnectError.from(e).code === Code.Unimplemented,
    );
  } finally {
    await s.close();
  }
});

it("buf curl finds the methods by reflection and calls them with nothing but the service's address", async () => {
  const s = await startServer();
  const buf = (...args: string[]) => promisify(execFile)("node_modules/.bin/buf", ["curl", "--http2-prior-knowledge", ...args], { timeout: 60_000 });
  try {
    const listed = (await buf("--list-methods", s.url)).stdout.trim().split("\n");
    assert.ok(listed.includes("gitpod.v1.RunnerConfigurationService/CreateSCMIntegration"), listed.join());
    assert.ok(listed.includes("gitpod.v1.RunnerService/CreateRunner"));
    // A call over each protocol: buf curl builds the request from the reflected schema (an
    // enum by name), and reads the answer with it.
    for (const protocol of ["connect", "grpc", "grpcweb"]) {
      const { stdout } = await buf("--protocol", protocol, "-H", `Authorization: Bearer ${s.token}`, "-d", JSON.stringify({ name: `by-${protocol}`, provider: "RUNNER_PROVIDER_GCP" }), `${s.url}/gitpod.v1.RunnerService/CreateRunner`);
      const runner = JSON.parse(stdout).runner;
      assert.equal(runner.name, `by-${protocol}`);
      assert.equal(runner.provider, "RUNNER_PROVIDER_GCP");
      assert.equal(runner.status.phase, "RUNNER_PHASE_CREATED");
      s.watch.noteToken(JSON.parse(stdout).accessToken);
    }
    // With buf curl's defaults (Connect, no flag; it takes HTTP/2 for the reflection stream itself).
    const { stdout } = await promisify(execFile)("node_modules/.bin/buf", ["curl", "-H", `Authorization: Bearer ${s.token}`, "-d", "{}", `${s.url}/gitpod.v1.RunnerService/ListRunners`], { timeout: 60_000 });
    assert.deepEqual(JSON.parse(stdout).runners.map((r: { name: string }) => r.name).sort(), ["by-connect", "by-grpc", "by-grpcweb"]);
  } finally {
    await s.close();
  }
});

it("a reflection stream ends at its deadline (grpc-timeout), not at the 10 s limit", async () => {
  const s = await startServer();
  const session = http2.connect(s.url);
  try {
    const frame = question({ messageRequest: { case: "listServices", value: "" } });
    const sent = performance.now();
    const stream = session.request({ ":method": "POST", ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "content-type": "application/grpc", "grpc-timeout": "1S", te: "trailers" });
    stream.on("error", () => {});
    stream.write(frame); // one question, answered, then the stream waits for more
    let answers = 0;
    stream.on("data", () => answers++);
    const status = await new Promise<string | undefined>((resolve) => {
      stream.on("trailers", (t) => resolve(t["grpc-status"] as string | undefined));
      stream.on("close", () => resolve(undefined));
    });
    const trailersAfter = performance.now() - sent;
    // Before, it was reset (CANCEL, no status) at the 10 s limit instead.
    assert.equal(status, "4", "DEADLINE_EXCEEDED");
    assert.ok(answers >= 1, "its question was answered first");
    // The client keeps its side open a while: the line's duration still ends with the
    // answer, which came before the client had its trailers (not with the stream's close).
    await new Promise((r) => setTimeout(r, 1000));
    stream.close();
    await until("its line", () => s.logs.some((l) => l.includes('"code":"deadline_exceeded"')));
    const line = JSON.parse(s.logs.find((l) => l.includes('"code":"deadline_exceeded"'))!);
    assert.ok(line.duration_ms < trailersAfter, `${line.duration_ms} ms logged, trailers had after ${trailersAfter} ms`);
  } finally {
    session.destroy();
    await s.close();
  }
});

it("a reflection stream its client resets, or leaves, after its first answer is logged canceled, not ok", async () => {
  const s = await startServer();
  try {
    const frame = question({ messageRequest: { case: "listServices", value: "" } });
    for (const [how, cut] of [
      ["reset", (session: http2.ClientHttp2Session, stream: http2.ClientHttp2Stream) => stream.close(http2.constants.NGHTTP2_CANCEL)],
      ["left", (session: http2.ClientHttp2Session) => session.destroy()],
    ] as const) {
      const session = http2.connect(s.url);
      session.on("error", () => {});
      const stream = session.request({ ":method": "POST", ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "content-type": "application/grpc", "x-request-id": `cut-${how}`, te: "trailers" });
      stream.on("error", () => {});
      stream.write(frame);
      await new Promise((resolve) => stream.once("data", resolve)); // its first answer
      cut(session, stream);
      session.close();
      await until(`the ${how} stream's line`, () => s.logs.some((l) => l.includes(`"request_id":"cut-${how}"`)));
      const line = JSON.parse(s.logs.find((l) => l.includes(`"request_id":"cut-${how}"`))!);
      assert.equal(line.code, "canceled", `${how}: ${JSON.stringify(line)}`);
    }
    assert.equal(s.logs.filter((l) => l.includes('"level":"error"')).length, 0);
  } finally {
    await s.close();
  }
});

it("a reflection stream whose client half-closed and stopped reading, or never ends its side, is cut off after 10 s, and logged canceled", async () => {
  const s = await startServer();
  try {
    // A window of 0: the client reads nothing of the answers.
    const session = http2.connect(s.url, { settings: { initialWindowSize: 0 } });
    const open = () => session.request({ ":method": "POST", ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "content-type": "application/grpc", te: "trailers" });
    const frame = question({ messageRequest: { case: "fileByFilename", value: "gitpod/v1/runners.proto" } });
    const halfClosed = open();
    halfClosed.end(frame);
    // This one's reader was still waiting for a question when the stream was cut: it was
    // logged as an unexpected error ("Premature close").
    const neverEnded = open();
    neverEnded.write(frame);
    const started = Date.now();
    const closedWith = (stream: http2.ClientHttp2Stream) => new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)));
    const codes = await Promise.all([closedWith(halfClosed), closedWith(neverEnded)]);
    const tookMs = Date.now() - started;
    session.destroy();
    assert.deepEqual(codes, [http2.constants.NGHTTP2_CANCEL, http2.constants.NGHTTP2_CANCEL]);
    assert.ok(tookMs >= 9_000, `held until the limit: ${tookMs} ms`);
    const lines = () => s.logs.map((l) => JSON.parse(l)).filter((l) => l.procedure === "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" || l.level === "error");
    await until("their log lines", () => lines().filter((l) => l.msg === "request").length === 2, 5000);
    assert.deepEqual(lines().map((l) => [l.msg, l.code]), [["request", "canceled"], ["request", "canceled"]]);
  } finally {
    await s.close();
  }
});
