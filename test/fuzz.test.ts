/**
 * Bad input against every RPC of the three gitpod.v1 services over every protocol: first a
 * checked-in corpus of hand-written cases (test/corpus/cases.ts), each with the code it must
 * get, then a property-based fuzzer (fast-check) that sends random valid-shaped messages,
 * mutated encodings, JSON and binary junk, broken gRPC frames and bad headers.
 *
 * Every answer must be a proper Connect/gRPC answer: success, or an error with a client-side
 * code (never internal/unknown, never HTTP 5xx, never a dropped connection). The server must
 * keep answering after every batch, and at the end the database must hold exactly the rows
 * whose creation an OK answer acknowledged.
 *
 * FUZZ_SEED=<n> replays a run; FUZZ_RUNS=<n> sets the generated inputs per protocol.
 */
import assert from "node:assert/strict";
import { isUtf8 } from "node:buffer";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import {
  create,
  fromBinary,
  fromJson,
  toBinary,
  toJson,
  type DescField,
  type DescMessage,
  type DescMethod,
} from "@bufbuild/protobuf";
import { RunnerConfigurationService } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { RunnerInteractionService } from "../gen/gitpod/v1/runner_interactions_pb.js";
import { RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import { CORPUS, corpusRequest, RAW_HTTP1, type CorpusContext, type CorpusTokens } from "./corpus/cases.js";
import {
  PROTOCOLS,
  WireClient,
  envelope,
  decompress,
  judge,
  parseEnvelopes,
  protocolHeaders,
  protocolOf,
  rawExchange,
  successPayload,
  type Answer,
  type Protocol,
  type WireRequest,
} from "./corpus/wire.js";
import { call, createRunner, signUp, startServer, type TestServer } from "./harness.js";

const SEED = Number(process.env.FUZZ_SEED ?? 20261125);
const RUNS_PER_PROTOCOL = Number(process.env.FUZZ_RUNS ?? 2000);

const SERVICES = [RunnerService, RunnerConfigurationService, RunnerInteractionService];
const METHODS: DescMethod[] = SERVICES.flatMap((s) => s.methods);
/** Methods that would take the fuzzer's own runner token away if aimed at its runner. */
const DESTRUCTIVE = new Set(["DeleteRunner", "CreateRunnerToken"]);

const pathOf = (m: DescMethod) => `/${m.parent.typeName}/${m.name}`;
const tokenKindOf = (m: DescMethod): "api" | "runner" => (m.parent.typeName === RunnerInteractionService.typeName ? "runner" : "api");

// ---------------------------------------------------------------------------------------
// What the database should hold: only what an OK answer acknowledged.

interface Model {
  runners: Map<string, { org: "acme" | "other" }>;
  integrations: Map<string, { runnerId: string; scmId: string }>;
  /** The runner whose access token the fuzzer holds; never deleted or re-tokened. */
  ownRunner: string;
  foreignRunner: string;
  /** How many creates and deletes OK answers acknowledged. */
  acked: { runners: number; integrations: number; deletes: number };
}

/** A reference to an id that exists when the request is sent, resolved then (the set changes as the fuzz runs). */
class Ref {
  constructor(
    readonly kind: "runner" | "own-runner" | "foreign-runner" | "integration",
    readonly pick: number,
  ) {}
  toString() {
    return `Ref(${this.kind}#${this.pick})`;
  }
}

function resolve(value: unknown, model: Model, destructive: boolean): unknown {
  if (value instanceof Ref) {
    const pickFrom = (ids: string[]) => ids[value.pick % Math.max(ids.length, 1)] ?? "0190b6a0-0000-7000-8000-000000000000";
    switch (value.kind) {
      case "own-runner":
        return destructive ? pickFrom([...model.runners.keys()].filter((id) => id !== model.ownRunner)) : model.ownRunner;
      case "foreign-runner":
        return model.foreignRunner;
      case "runner":
        return pickFrom([...model.runners.keys()].filter((id) => !destructive || id !== model.ownRunner));
      case "integration":
        return pickFrom([...model.integrations.keys()]);
    }
  }
  if (value instanceof Long) return value.value;
  if (Array.isArray(value)) return value.map((v) => resolve(v, model, destructive));
  if (value && typeof value === "object" && !(value instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolve(v, model, destructive)]));
  }
  return value;
}

// ---------------------------------------------------------------------------------------
// Arbitraries: field values chosen by what the field means, so that some requests pass
// validation and reach the database, and most probe an edge.

const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 24 });
const odd = fc.constantFrom(
  "",
  " ",
  "\u0000",
  "\t\n",
  "\u202e",
  "\ufeff",
  "🦄",
  "a\u0301",
  "null",
  "undefined",
  "../..",
  "%00",
  "' OR 1=1 --",
  "\ud800",
  "0190b6a0-0000-7000-8000-00000000000Z",
  "00000000-0000-0000-0000-000000000000",
  "https://",
  "[::1]",
);
/** A long run of one character, spelled out only when the request is built (and short in a failure report). */
class Long {
  constructor(
    readonly char: string,
    readonly length: number,
    readonly prefix = "",
  ) {}
  get value(): string {
    return this.prefix + this.char.repeat(this.length);
  }
  [fc.toStringMethod]() {
    return `${JSON.stringify(this.prefix)} + "${this.char}".repeat(${this.length})`;
  }
}
const anyString: fc.Arbitrary<string | Long> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 32 }) },
  { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 16 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 16 }) },
  { weight: 2, arbitrary: odd },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom("x", "é", "🦄", "/"), fc.integer({ min: 200, max: 200_000 })).map(([c, n]) => new Long(c, n)) },
);
const idValue: fc.Arbitrary<string | Ref | Long> = fc.oneof(
  { weight: 3, arbitrary: fc.nat().map((n) => new Ref("runner", n)) },
  { weight: 2, arbitrary: fc.nat().map((n) => new Ref("own-runner", n)) },
  { weight: 1, arbitrary: fc.nat().map((n) => new Ref("foreign-runner", n)) },
  { weight: 3, arbitrary: fc.nat().map((n) => new Ref("integration", n)) },
  { weight: 1, arbitrary: fc.uuid() },
  { weight: 2, arbitrary: anyString },
);
const SCM_IDS = ["github", "gitlab", "bitbucket", "azuredevops_entra", "azuredevops_server"];
const hostValue = fc.oneof(
  { weight: 3, arbitrary: fc.domain() },
  { weight: 1, arbitrary: fc.constantFrom("github.com", "gitlab.com", "dev.azure.com/acme", "[::1]:8443", "10.0.0.1:443/git") },
  // Near-IPv6 addresses, where a check and the URL parser could disagree.
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF:.".split(""), "::", "1.2.3.4"), maxLength: 12 }).map((b) => `[${b}]`) },
  { weight: 2, arbitrary: anyString },
);
// Client secrets are made unique so that the leak watch of the test server (test/secret-watch.ts),
// which looks for every secret sent in the database files and responses, finds only real leaks.
const secretValue = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.uuid(), fc.string({ maxLength: 24 })).map(([u, rest]) => `s3cr3t-${u}-${rest}`) },
  { weight: 1, arbitrary: fc.tuple(fc.uuid(), fc.string({ unit: "grapheme", maxLength: 8 })).map(([u, rest]) => `s3cr3t-${u}-\u0000${rest}`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 5 }) },
  { weight: 1, arbitrary: fc.tuple(fc.uuid(), fc.integer({ min: 4000, max: 9000 })).map(([u, n]) => new Long("y", n, `s3cr3t-${u}-`)) },
);
const urlValue = fc.oneof(fc.webUrl(), fc.constant("https://login.microsoftonline.com/tenant/v2.0"), anyString);

function stringValue(f: DescField): fc.Arbitrary<unknown> {
  switch (f.name) {
    case "runner_id":
    case "id":
    case "runner_ids":
    case "scm_integration_ids":
      return idValue;
    case "scm_id":
      return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...SCM_IDS) }, { weight: 1, arbitrary: anyString });
    case "host":
    case "default_hosts":
      return hostValue;
    case "issuer_url":
    case "docs_link":
    case "callback_url":
      return urlValue;
    case "oauth_plaintext_client_secret":
      return secretValue;
    case "virtual_directory":
      return fc.oneof(fc.constantFrom("/tfs", "/", "tfs", "/a/../b"), anyString);
    case "name":
      return fc.oneof(fc.string({ minLength: 3, maxLength: 30 }), anyString);
    case "token":
      return fc.oneof(fc.constant(""), anyString, fc.base64String({ minLength: 44, maxLength: 44 }));
    default:
      return anyString;
  }
}

const int32 = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: -3, max: 120 }) },
  { weight: 1, arbitrary: fc.integer({ min: -2147483648, max: 2147483647 }) },
);
const bytesValue = fc.oneof(
  fc.uint8Array({ maxLength: 48 }),
  fc.uint8Array({ minLength: 32, maxLength: 32 }),
  fc.constant(new Uint8Array(32)),
);

function scalarValue(f: DescField): fc.Arbitrary<unknown> {
  switch (f.scalar) {
    case 9: // string
      return stringValue(f);
    case 8: // bool
      return fc.boolean();
    case 12: // bytes
      return bytesValue;
    case 5: // int32
    case 17: // sint32
    case 15: // sfixed32
      return int32;
    default:
      return fc.constant(undefined);
  }
}

function enumValue(f: DescField): fc.Arbitrary<number> {
  const defined = f.enum?.values.map((v) => v.number) ?? [0];
  return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...defined) }, { weight: 1, arbitrary: fc.integer({ min: -3, max: 40 }) });
}

function singleValue(f: DescField, depth: number): fc.Arbitrary<unknown> {
  if (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) {
    return depth > 4 ? fc.constant({}) : messageValue(f.message!, depth + 1);
  }
  if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum")) return enumValue(f);
  return scalarValue(f);
}

const messageCache = new Map<string, fc.Arbitrary<Record<string, unknown>>>();
function messageValue(desc: DescMessage, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const key = `${desc.typeName}@${depth}`;
  let arb = messageCache.get(key);
  if (!arb) {
    const fields: Record<string, fc.Arbitrary<unknown>> = {};
    for (const f of desc.fields) {
      if (f.oneof || f.fieldKind === "map") continue;
      const one = singleValue(f, depth);
      fields[f.localName] =
        f.fieldKind === "list"
          ? fc.oneof({ weight: 5, arbitrary: fc.array(one, { maxLength: 4 }) }, { weight: 1, arbitrary: fc.array(one, { minLength: 20, maxLength: 80 }) })
          : one;
    }
    arb = fc.record(fields, { requiredKeys: [] });
    messageCache.set(key, arb);
  }
  return arb;
}

/** Byte-level damage to an encoding. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) }),
  fc.record({ kind: fc.constant("double" as const) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  const b = Buffer.from(bytes);
  switch (m.kind) {
    case "truncate":
      return b.subarray(0, m.at % (b.length + 1));
    case "flip": {
      if (b.length === 0) return Buffer.from([m.value]);
      const c = Buffer.from(b);
      c[m.at % c.length] = m.value;
      return c;
    }
    case "insert": {
      const at = m.at % (b.length + 1);
      return Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
    }
    case "double":
      return Buffer.concat([b, b]);
  }
}

/** How the request body is made. */
type BodyPlan =
  | { kind: "message"; value: Record<string, unknown>; protoNames: boolean }
  | { kind: "mutated"; value: Record<string, unknown>; mutation: Mutation }
  | { kind: "json-junk"; text: string }
  | { kind: "json-bad-utf8"; value: Record<string, unknown>; at: number; bytes: Uint8Array }
  | { kind: "garbage"; bytes: Uint8Array }
  | { kind: "bad-envelope"; value: Record<string, unknown>; flags: number; lengthDelta: number; frames: number };

function jsonNames(desc: DescMessage): string[] {
  return desc.fields.flatMap((f) => [f.jsonName, f.name]);
}

/**
 * Requests that are valid or nearly so, per method: without them few writes would get past
 * validation, and the database check at the end would have little to check.
 */
function plausible(method: DescMethod): fc.Arbitrary<Record<string, unknown>> | undefined {
  const runner = fc.oneof(
    { weight: 3, arbitrary: fc.nat().map((n) => new Ref("own-runner", n)) },
    { weight: 1, arbitrary: fc.nat().map((n) => new Ref("runner", n)) },
  );
  const integration = fc.nat().map((n) => new Ref("integration", n));
  const clientId = fc.stringMatching(/^[A-Za-z0-9._-]{1,40}$/);
  const secret = fc.tuple(fc.uuid(), fc.string({ maxLength: 24 })).map(([u, rest]) => `s3cr3t-${u}-${rest}`);
  const oauth = fc.option(fc.record({ oauthClientId: clientId, oauthPlaintextClientSecret: secret }), { nil: undefined });
  const host = fc.oneof(fc.domain(), fc.constantFrom("github.com", "gitlab.com", "bitbucket.org"));
  switch (method.name) {
    case "CreateRunner":
      return fc.record({ name: fc.stringMatching(/^[a-z][a-z0-9 -]{2,30}[a-z0-9]$/), kind: fc.integer({ min: 1, max: 3 }), provider: fc.integer({ min: 1, max: 6 }) });
    case "UpdateRunner":
      return fc.record({ runnerId: runner, name: fc.option(fc.stringMatching(/^[a-z][a-z0-9 -]{2,30}[a-z0-9]$/), { nil: undefined }) });
    case "DeleteRunner":
    case "GetRunner":
    case "CreateRunnerToken":
    case "GetRunnerConfigurationSchema":
      return fc.record({ runnerId: runner });
    case "CreateSCMIntegration":
      return fc
        .tuple(fc.record({ runnerId: runner, scmId: fc.constantFrom("github", "gitlab", "bitbucket"), host, pat: fc.boolean() }), oauth)
        .map(([base, o]) => ({ ...base, ...o, pat: base.pat || !o }));
    case "UpdateSCMIntegration":
      return fc.tuple(fc.record({ id: integration, pat: fc.option(fc.boolean(), { nil: undefined }) }), oauth).map(([base, o]) => ({ ...base, ...o }));
    case "GetSCMIntegration":
    case "DeleteSCMIntegration":
      return fc.record({ id: integration });
    case "Signup":
      return fc.record({ publicKey: fc.uint8Array({ minLength: 32, maxLength: 32 }) });
    case "UpdateRunnerConfigurationSchema":
      return fc.record({
        runnerId: fc.nat().map((n) => new Ref("own-runner", n)),
        configSchema: fc.record({
          version: fc.string({ maxLength: 10 }),
          // Each entry offers OAuth, PAT or both, as the message's presence says.
          scm: fc.subarray(SCM_IDS, { minLength: 1 }).chain((ids) =>
            fc.tuple(...ids.map((scmId) =>
              fc.constantFrom({ oauth: {} }, { pat: {} }, { oauth: {}, pat: {} }).map((methods) => ({ scmId, name: scmId, defaultHosts: [], ...methods })),
            )),
          ),
        }),
      });
    default:
      return undefined;
  }
}

function bodyPlan(protocol: Protocol, method: DescMethod): fc.Arbitrary<BodyPlan> {
  const generic = messageValue(method.input);
  const near = plausible(method);
  // A plausible request with, sometimes, one field taken from a random message.
  const value = near
    ? fc.oneof(
        { weight: 2, arbitrary: generic },
        {
          weight: 3,
          arbitrary: fc.tuple(near, generic, fc.boolean()).map(([base, other, perturb]) => {
            const keys = Object.keys(other);
            if (!perturb || keys.length === 0) return base;
            const key = keys[0]!;
            return { ...base, [key]: other[key] };
          }),
        },
      )
    : generic;
  const plans: Array<fc.WeightedArbitrary<BodyPlan>> = [
    { weight: 8, arbitrary: fc.record({ kind: fc.constant("message" as const), value, protoNames: fc.boolean() }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("mutated" as const), value, mutation }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("garbage" as const), bytes: fc.uint8Array({ maxLength: 300 }) }) },
  ];
  if (protocol === "connect-json") {
    const wrongTypes = fc.dictionary(fc.constantFrom(...jsonNames(method.input), "unknownField"), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 });
    const deep = fc.tuple(fc.constantFrom(...jsonNames(method.input)), fc.integer({ min: 50, max: 100_000 }), fc.constantFrom("[", '{"a":'));
    plans.push(
      { weight: 2, arbitrary: fc.record({ kind: fc.constant("json-junk" as const), text: wrongTypes.map((o) => JSON.stringify(o)) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant("json-junk" as const), text: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? "") }) },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant("json-junk" as const),
          text: deep.map(([name, n, open]) => `{"${name}":${open.repeat(n)}${open === "[" ? "]".repeat(n) : `1${"}".repeat(n)}`}}`),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant("json-bad-utf8" as const),
          value,
          at: fc.nat(),
          bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }).map((b) => b.map((x) => 0x80 | x)),
        }),
      },
    );
  }
  if (protocol === "grpc" || protocol === "grpc-web") {
    plans.push({
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant("bad-envelope" as const),
        value,
        flags: fc.constantFrom(0, 1, 2, 0x7f, 0x80, 0x81, 0xff),
        lengthDelta: fc.oneof(fc.integer({ min: -8, max: 8 }), fc.constantFrom(0x7fffffff, 0xfffffff0, 2 * 1024 * 1024)),
        frames: fc.integer({ min: 0, max: 3 }),
      }),
    });
  }
  return fc.oneof(...plans);
}

type HeaderChange = [name: string, value: string | null];
function headerChange(protocol: Protocol): fc.Arbitrary<HeaderChange> {
  const contentTypes = [
    "application/json",
    "application/proto",
    "application/grpc",
    "application/grpc+proto",
    "application/grpc+json",
    "application/grpc-web",
    "application/grpc-web+json",
    "application/grpc-web-text",
    "application/grpc+xml",
    "application/connect+json",
    "application/json; charset=utf-8",
    "application/json; charset=latin1",
    "text/plain",
    "",
  ];
  const grpcTimeout = fc.tuple(fc.integer({ min: 0, max: 999_999_999 }), fc.constantFrom("H", "M", "S", "m", "u", "n", "x", "")).map(([n, u]) => `${n}${u}`);
  const changes: Array<fc.Arbitrary<HeaderChange>> = [
    fc.tuple(fc.constant("content-type"), fc.oneof(fc.constantFrom<string | null>(...contentTypes, null), printable)),
    fc.tuple(fc.constantFrom("content-encoding", "grpc-encoding"), fc.constantFrom("gzip", "br", "identity", "deflate", "zstd", "")),
    fc.tuple(fc.constantFrom("accept-encoding", "grpc-accept-encoding", "connect-accept-encoding", "x-request-id", "x-grpc-web", "user-agent"), printable),
  ];
  if (protocol === "connect-json" || protocol === "connect-proto") {
    changes.push(
      fc.tuple(fc.constant("connect-protocol-version"), fc.oneof(fc.constantFrom<string | null>("1", "2", "0", "", null), printable)),
      fc.tuple(
        fc.constant("connect-timeout-ms"),
        fc.oneof(fc.nat({ max: 120_000 }).map(String), fc.constantFrom("9999999999", "99999999999999999999", "-1", "1.5", "0x10", "0", "1", ""), printable),
      ),
    );
  } else {
    changes.push(fc.tuple(fc.constant("grpc-timeout"), fc.oneof(grpcTimeout, fc.constantFrom("99999999H", "1n", "0S", "-1S", ""), printable)));
  }
  return fc.oneof(...changes);
}

type AuthPlan = "right" | "none" | "wrong-kind" | "other" | "garbage";
const authPlan: fc.Arbitrary<{ plan: AuthPlan; garbage: string }> = fc.record({
  plan: fc.oneof(
    { weight: 10, arbitrary: fc.constant("right" as const) },
    { weight: 1, arbitrary: fc.constantFrom("none" as const, "wrong-kind" as const, "other" as const, "garbage" as const) },
  ),
  garbage: printable,
});

interface FuzzInput {
  method: DescMethod;
  auth: { plan: AuthPlan; garbage: string };
  body: BodyPlan;
  headers: HeaderChange[];
  query: string;
  http2: boolean;
}

function fuzzInput(protocol: Protocol): fc.Arbitrary<FuzzInput> {
  // Creates more often than the rest, so that deletes and updates have rows to work on.
  const methods = METHODS.flatMap((m) => Array<DescMethod>(m.name === "CreateSCMIntegration" ? 4 : m.name.startsWith("Create") ? 2 : 1).fill(m));
  return fc.constantFrom(...methods).chain((method) =>
    fc.record({
      method: fc.constant(method),
      auth: authPlan,
      body: bodyPlan(protocol, method),
      headers: fc.oneof({ weight: 4, arbitrary: fc.constant<HeaderChange[]>([]) }, { weight: 1, arbitrary: fc.array(headerChange(protocol), { minLength: 1, maxLength: 3 }) }),
      query: method.name.startsWith("List")
        ? fc.oneof(
            { weight: 4, arbitrary: fc.constant("") },
            { weight: 1, arbitrary: fc.tuple(fc.constantFrom("pageSize", "token", "message", "encoding"), printable).map(([k, v]) => `?${k}=${encodeURIComponent(v)}`) },
          )
        : fc.constant(""),
      http2: protocol === "grpc" ? fc.constant(true) : fc.boolean(),
    }),
  );
}

// ---------------------------------------------------------------------------------------

type Tokens = CorpusTokens;

function encodeMessage(desc: DescMessage, init: unknown, json: boolean, protoNames = false): Uint8Array {
  const msg = create(desc, init as never);
  if (json) return Buffer.from(JSON.stringify(toJson(desc, msg, { useProtoFieldName: protoNames })));
  return toBinary(desc, msg);
}

/** Turns a generated input into the exact request to send. */
function buildRequest(protocol: Protocol, input: FuzzInput, model: Model, tokens: Tokens): WireRequest {
  const { method } = input;
  const kind = tokenKindOf(method);
  let token: string | null;
  switch (input.auth.plan) {
    case "right":
      token = tokens[kind];
      break;
    case "wrong-kind":
      token = kind === "api" ? tokens.runner : tokens.api;
      break;
    case "other":
      token = tokens.other;
      break;
    case "none":
      token = null;
      break;
    case "garbage":
      token = input.auth.garbage;
      break;
  }
  const headers = protocolHeaders(protocol, token);
  const jsonCodec = protocol === "connect-json" || /\+json/.test(headers["content-type"] ?? "");
  const destructive = DESTRUCTIVE.has(method.name);
  const value = (v: Record<string, unknown>) => resolve(v, model, destructive);
  let payload: Uint8Array;
  const b = input.body;
  switch (b.kind) {
    case "message":
      payload = encodeMessage(method.input, value(b.value), jsonCodec, b.protoNames);
      break;
    case "mutated":
      payload = mutate(encodeMessage(method.input, value(b.value), jsonCodec), b.mutation);
      break;
    case "json-junk":
      payload = Buffer.from(b.text);
      break;
    case "json-bad-utf8": {
      const text = Buffer.from(encodeMessage(method.input, value(b.value), true));
      // Into a string value when there is one, else anywhere.
      const quotes = [...text.keys()].filter((i) => text[i] === 0x22);
      const at = quotes.length > 0 ? quotes[b.at % quotes.length]! + 1 : b.at % (text.length + 1);
      payload = Buffer.concat([text.subarray(0, at), b.bytes, text.subarray(at)]);
      break;
    }
    case "garbage":
      payload = b.bytes;
      break;
    case "bad-envelope": {
      const data = encodeMessage(method.input, value(b.value), jsonCodec);
      const frames = Array.from({ length: b.frames }, (_, i) =>
        i === b.frames - 1 ? envelope(data, b.flags, Math.max(0, data.length + b.lengthDelta)) : envelope(data),
      );
      payload = Buffer.concat(frames);
      break;
    }
  }
  let body = payload;
  if ((protocol === "grpc" || protocol === "grpc-web") && b.kind !== "bad-envelope" && b.kind !== "garbage") body = envelope(payload);
  for (const [name, v] of input.headers) {
    if (v === null) delete headers[name];
    else headers[name] = v;
  }
  return { path: pathOf(method) + input.query, headers, body, http2: input.http2 };
}

/** Decodes the message of an OK answer; throws if it is not a valid `method.output`. */
function decodeOk(protocol: Protocol, method: DescMethod, a: Answer) {
  const payload = successPayload(protocol, a);
  assert.ok(payload, "an OK answer without a message");
  const contentType = a.kind === "answer" ? (a.headers["content-type"] ?? "") : "";
  if (contentType.includes("json")) return fromJson(method.output, JSON.parse(Buffer.from(payload).toString("utf8")));
  return fromBinary(method.output, payload);
}

/**
 * Decodes a request the way the server did (it answered OK, so it could): the JSON or
 * protobuf message, out of its envelope and compression.
 */
function decodeRequest(protocol: Protocol, method: DescMethod, req: WireRequest): Record<string, any> {
  let data: Buffer = Buffer.from(req.body);
  if (protocol === "grpc" || protocol === "grpc-web") {
    const frame = parseEnvelopes(data)?.[0] ?? { flags: 0, data: Buffer.alloc(0) };
    data = frame.flags & 1 ? decompress(req.headers["grpc-encoding"], frame.data) : frame.data;
  } else {
    data = decompress(req.headers["content-encoding"], data);
  }
  // TextDecoder, as the server uses: it drops a byte order mark.
  if (protocol === "connect-json") return fromJson(method.input, JSON.parse(new TextDecoder().decode(data)), { ignoreUnknownFields: true });
  return fromBinary(method.input, data);
}

/** Brings the model up to date with an OK answer. */
function learn(model: Model, protocol: Protocol, method: DescMethod, org: "acme" | "other", req: WireRequest, a: Answer): void {
  const out = decodeOk(protocol, method, a) as Record<string, any>;
  const sent = decodeRequest(protocol, method, req);
  switch (method.name) {
    case "CreateRunner":
      model.runners.set(out.runner.runnerId, { org });
      model.acked.runners++;
      break;
    case "DeleteRunner":
      model.acked.deletes++;
      model.runners.delete(sent.runnerId);
      for (const [id, row] of model.integrations) if (row.runnerId === sent.runnerId) model.integrations.delete(id);
      break;
    case "CreateSCMIntegration":
      model.integrations.set(out.id, { runnerId: sent.runnerId, scmId: sent.scmId });
      model.acked.integrations++;
      break;
    case "DeleteSCMIntegration":
      model.acked.deletes++;
      model.integrations.delete(sent.id);
      break;
  }
}

describe("bad input: corpus and property-based fuzzing over every protocol", () => {
  let s: TestServer;
  let client: WireClient;
  let model: Model;
  let tokens: Tokens;
  let ctx: CorpusContext;
  const tried: Record<Protocol | "raw-http1", number> = { "connect-json": 0, "connect-proto": 0, grpc: 0, "grpc-web": 0, "raw-http1": 0 };
  const outcomes = new Map<string, number>();

  before(async () => {
    s = await startServer();
    client = new WireClient(s.url);
    const own = await createRunner(s, s.token, "fuzz-own-runner");
    await signUp(s, own.runnerToken);
    const plain = await createRunner(s, s.token, "fuzz-second-runner");
    const foreign = await createRunner(s, s.otherToken, "fuzz-foreign-runner");
    const gh = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", { runnerId: own.runnerId, scmId: "github", host: "github.com", pat: true });
    const gl = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", {
      runnerId: own.runnerId,
      scmId: "gitlab",
      host: "gitlab.com",
      oauthClientId: "client-1",
      oauthPlaintextClientSecret: "secret-1",
      pat: false,
    });
    assert.equal(gh.status, 200);
    assert.equal(gl.status, 200);
    model = {
      runners: new Map([
        [own.runnerId, { org: "acme" }],
        [plain.runnerId, { org: "acme" }],
        [foreign.runnerId, { org: "other" }],
      ]),
      integrations: new Map([
        [gh.body.id, { runnerId: own.runnerId, scmId: "github" }],
        [gl.body.id, { runnerId: own.runnerId, scmId: "gitlab" }],
      ]),
      ownRunner: own.runnerId,
      foreignRunner: foreign.runnerId,
      acked: { runners: 0, integrations: 0, deletes: 0 },
    };
    tokens = { api: s.token, runner: own.runnerToken, other: s.otherToken };
    ctx = { runnerId: own.runnerId, otherRunnerId: foreign.runnerId, integrationId: gh.body.id };
  });

  after(async () => {
    client.close();
    await s.close();
  });

  /** The server answers a health check and a real call after a batch. */
  async function assertStillServing(): Promise<void> {
    const health = await fetch(`${s.url}/healthz`);
    assert.equal(health.status, 200);
    const list = await call(s, "gitpod.v1.RunnerService/ListRunners", {});
    assert.equal(list.status, 200, JSON.stringify(list.body));
    assert.deepEqual(client.sessionErrors, [], "an HTTP/2 session failed");
  }

  it("answers every case of the corpus with its expected code", async () => {
    const wrong: string[] = [];
    for (const c of CORPUS) {
      tried[c.protocol]++;
      const req = corpusRequest(c, tokens, ctx);
      const t0 = performance.now();
      const a = await client.send(req);
      const spoken = protocolOf(req.headers["content-type"]) ?? c.protocol;
      const v = judge(spoken, a, { headers: req.headers, tookMs: performance.now() - t0 });
      const method = METHODS.find((m) => pathOf(m) === req.path.split("?")[0]);
      if (v.ok && method) learn(model, spoken, method, c.auth === "other" ? "other" : "acme", req, a);
      const got = v.ok ? "ok" : (v.code ?? "?");
      if (v.problem) wrong.push(`${c.protocol} "${c.name}": ${v.problem}`);
      else if (c.expect !== undefined && got !== c.expect) wrong.push(`${c.protocol} "${c.name}": expected ${c.expect}, got ${got}`);
    }
    assert.deepEqual(wrong, []);
    await assertStillServing();
  });

  it("answers broken HTTP/1.1 with a 4xx status line, or closes a broken HTTP/2 connection", async () => {
    const port = Number(new URL(s.url).port);
    const wrong: string[] = [];
    for (const c of RAW_HTTP1) {
      tried["raw-http1"]++;
      const bytes = typeof c.bytes === "function" ? c.bytes(port) : c.bytes;
      const r = await rawExchange(port, Buffer.from(bytes, "latin1"));
      const statusLine = r.response.toString("latin1").split("\r\n")[0] ?? "";
      if (c.expectStatus === 0) {
        if (!r.closedByServer) wrong.push(`"${c.name}": the server kept the connection open`);
      } else if (!statusLine.startsWith(`HTTP/1.1 ${c.expectStatus} `)) {
        wrong.push(`"${c.name}": expected ${c.expectStatus}, got ${JSON.stringify(statusLine || r.error || "nothing")}`);
      }
    }
    assert.deepEqual(wrong, []);
    await assertStillServing();
  });

  for (const [index, protocol] of PROTOCOLS.entries()) {
    it(`fuzz ${protocol}: every answer is a success or a client-side error`, async () => {
      await fc.assert(
        fc.asyncProperty(fuzzInput(protocol), async (input) => {
          const req = buildRequest(protocol, input, model, tokens);
          tried[protocol]++;
          const t0 = performance.now();
          const a = await client.send(req);
          // A changed content type may select another protocol; its rules judge the answer.
          const spoken = protocolOf(req.headers["content-type"]) ?? protocol;
          const v = judge(spoken, a, { headers: req.headers, tookMs: performance.now() - t0 });
          const key = `${protocol} ${v.ok ? "ok" : v.code}`;
          outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
          if (v.problem) {
            throw new Error(`${pathOf(input.method)} over ${req.http2 ? "HTTP/2" : "HTTP/1.1"}: ${v.problem}`);
          }
          // Bytes that are not UTF-8 in a JSON body are never taken as text.
          if (v.ok && input.body.kind === "json-bad-utf8" && spoken === "connect-json" && !isUtf8(req.body)) {
            throw new Error(`${pathOf(input.method)}: a JSON body that is not UTF-8 was accepted`);
          }
          if (v.ok) learn(model, spoken, input.method, input.auth.plan === "other" ? "other" : "acme", req, a);
        }),
        { seed: SEED + index, numRuns: RUNS_PER_PROTOCOL, endOnFailure: true, includeErrorInReport: true },
      );
      await assertStillServing();
    });
  }

  it("holds exactly the rows whose creation was acknowledged, all consistent", async () => {
    const sqlite = s.db.$client;
    assert.deepEqual(sqlite.pragma("integrity_check"), [{ integrity_check: "ok" }]);
    assert.deepEqual(sqlite.pragma("foreign_key_check"), []);

    const runners = sqlite.prepare("SELECT r.id, o.name AS org FROM runners r JOIN organizations o ON o.id = r.org_id").all() as Array<{ id: string; org: string }>;
    assert.deepEqual(
      new Map(runners.map((r) => [r.id, r.org])),
      new Map([...model.runners].map(([id, r]) => [id, r.org])),
      "runners in the database differ from those acknowledged",
    );

    const rows = sqlite
      .prepare(
        `SELECT i.id, i.runner_id AS runnerId, i.scm_id AS scmId, i.org_id AS orgId, r.org_id AS runnerOrg,
                i.oauth_client_id AS clientId, i.oauth_encrypted_secret AS secret, i.oauth_sealed_to AS sealedTo, i.issuer_url AS issuer
           FROM scm_integrations i LEFT JOIN runners r ON r.id = i.runner_id`,
      )
      .all() as Array<Record<string, any>>;
    assert.deepEqual(
      new Set(rows.map((r) => r.id)),
      new Set(model.integrations.keys()),
      "integrations in the database differ from those acknowledged",
    );
    for (const r of rows) {
      const expected = model.integrations.get(r.id)!;
      assert.equal(r.runnerId, expected.runnerId, `integration ${r.id} hangs on another runner than requested`);
      assert.equal(r.scmId, expected.scmId, `integration ${r.id} has another scm_id than requested`);
      assert.equal(r.orgId, r.runnerOrg, `integration ${r.id} is in another organization than its runner`);
      if (r.secret !== null) assert.ok(r.clientId !== null && r.sealedTo !== null, `integration ${r.id} has a secret without a client id or key`);
      if (r.issuer !== null) assert.ok(r.clientId !== null, `integration ${r.id} has an issuer URL without OAuth`);
    }

    const errors = s.logs.filter((l) => /"level":"error"/.test(l));
    assert.deepEqual(errors, [], "the server logged errors");

    const total = Object.values(tried).reduce((a, b) => a + b, 0);
    const perProtocol = Object.entries(tried).map(([p, n]) => `${p} ${n}`).join(", ");
    const { acked } = model;
    console.log(
      `fuzz: seed ${SEED}, ${total} inputs (${perProtocol}); acknowledged ${acked.runners} runner and ${acked.integrations} integration creates and ${acked.deletes} deletes; ${runners.length} runners and ${rows.length} integrations at the end`,
    );
    console.log(`fuzz outcomes: ${[...outcomes].sort().map(([k, n]) => `${k}: ${n}`).join("; ")}`);
  });
});
