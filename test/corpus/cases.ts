/**
 * Hand-written bad requests, most with the answer they must get (the rest must get any
 * answer of the client's own making, never a crash or a 500). The fuzz test replays all of
 * them before the generated inputs. `$TOKEN`, `$RUNNER_TOKEN`, `$OTHER_TOKEN` in header
 * values and the fields of `CorpusContext` are filled in from the test's setup.
 */
import { create, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { gzipSync } from "node:zlib";
import {
  CreateSCMIntegrationRequestSchema,
  DeleteSCMIntegrationRequestSchema,
  GetSCMIntegrationRequestSchema,
  ListSCMIntegrationsRequestSchema,
} from "../../gen/gitpod/v1/runner_configurations_pb.js";
import { SignupRequestSchema, UpdateRunnerConfigurationSchemaRequestSchema } from "../../gen/gitpod/v1/runner_interactions_pb.js";
import { CreateRunnerRequestSchema, GetRunnerRequestSchema, ListRunnersRequestSchema } from "../../gen/gitpod/v1/runners_pb.js";
import { envelope, protocolHeaders, type Protocol, type WireRequest } from "./wire.js";

export interface CorpusContext {
  /** A runner of organization "acme" that signed up; its token is $RUNNER_TOKEN. */
  runnerId: string;
  /** A runner of the other organization. */
  otherRunnerId: string;
  /** An integration of `runnerId`. */
  integrationId: string;
}

/** The tokens a case's `auth` and `$TOKEN`-style header values name. */
export interface CorpusTokens {
  api: string;
  runner: string;
  other: string;
}

/** A case as it goes on the wire, with the setup's tokens and ids filled in. */
export function corpusRequest(c: CorpusCase, tokens: CorpusTokens, ctx: CorpusContext): WireRequest {
  const [service, name] = c.method.startsWith("/") ? [undefined, undefined] : c.method.split("/");
  const path = c.method.startsWith("/") ? c.method : `/gitpod.v1.${service}/${name}`;
  const kind = path.includes("RunnerInteractionService") ? "runner" : "api";
  const auth = c.auth ?? "right";
  const token = auth === "none" ? null : auth === "right" ? tokens[kind] : tokens[auth];
  const headers = protocolHeaders(c.protocol, token);
  for (const [k, v] of Object.entries(c.headers ?? {})) {
    if (v === null) delete headers[k];
    else headers[k] = v.replaceAll("$TOKEN", tokens.api).replaceAll("$RUNNER_TOKEN", tokens.runner).replaceAll("$OTHER_TOKEN", tokens.other);
  }
  const raw = typeof c.body === "function" ? c.body(ctx) : c.body;
  const body = typeof raw === "string" ? Buffer.from(raw) : raw;
  return { path, headers, body, http2: c.http2 ?? c.protocol === "grpc" };
}

export type Body = string | Uint8Array | ((ctx: CorpusContext) => string | Uint8Array);

export interface CorpusCase {
  name: string;
  protocol: Protocol;
  /** `Service/Method` of gitpod.v1, or a whole path starting with "/". */
  method: string;
  /** Which token goes in `Authorization: Bearer`: the right kind for the service unless said otherwise. */
  auth?: "right" | "none" | "api" | "runner" | "other";
  /** Added to (or, with null, removed from) the protocol's usual headers. */
  headers?: Record<string, string | null> & { expect?: never }; // `expect` belongs to the case, not here
  body: Body;
  http2?: boolean;
  /**
   * The code it must be answered with (Connect spelling), `http_<status>` for a bare HTTP
   * error, or "ok". Absent: any client-side code will do (the point is "no crash").
   */
  expect?: string;
}

/** A request sent as raw bytes on its own HTTP/1.1 connection; it must get a 4xx status line. */
export interface RawCase {
  name: string;
  bytes: string | ((port: number) => string);
  /** The status the server must answer with. */
  expectStatus: number;
}

const pb = <D extends DescMessage>(schema: D, init: MessageInitShape<D>) => toBinary(schema, create(schema, init));
const mib = 1024 * 1024;

// Hand-made protobuf wire bytes: tag = field number << 3 | wire type.
const WIRE = {
  /** Field 1 as a varint with 11 continuation bytes (a varint is at most 10). */
  overlongVarint: Buffer.from([0x08, ...Array(11).fill(0xff), 0x01]),
  /** Field 1 (a string) declared 2^31 bytes long with 3 bytes present. */
  hugeLength: Buffer.from([0x0a, 0x80, 0x80, 0x80, 0x80, 0x08, 0x61, 0x62, 0x63]),
  /** Field number 0, which no message may use. */
  fieldZero: Buffer.from([0x00, 0x01]),
  /** Wire type 7 does not exist. */
  wireType7: Buffer.from([0x0f, 0x01]),
  /** Field 1 (a string) holding bytes that are not UTF-8. */
  badUtf8String: Buffer.from([0x0a, 0x04, 0xff, 0xfe, 0xc0, 0x80]),
  /** Field 1 (a string) sent as a varint: the wrong wire type. */
  stringAsVarint: Buffer.from([0x08, 0x05]),
  /** Field 1 (a string) tagged as a varint, then bytes protobuf-es would read as the string "abc" and that are no field (refused before it sees them). */
  stringTaggedVarint: Buffer.from([0x08, 0x03, 0x61, 0x62, 0x63]),
  /** An unknown group opened 200,000 times and never closed. */
  nestedGroups: Buffer.alloc(200_000, 0x1b),
  /** An end-group tag with no group open. */
  strayEndGroup: Buffer.from([0x0c]),
  /** Unknown field 99 with a 1 KiB payload: legal, and must be skipped. */
  unknownField: Buffer.concat([Buffer.from([0x9a, 0x06, 0x80, 0x08]), Buffer.alloc(1024, 0x41)]),
};

const SCHEMA_ENTRY = { scmId: "github", name: "GitHub", defaultHosts: ["github.com"], oauth: {}, pat: {} };

export const CORPUS: CorpusCase[] = [
  // ---- Connect JSON: the body ----
  { name: "empty body", protocol: "connect-json", method: "RunnerService/ListRunners", body: "", expect: "invalid_argument" },
  { name: "truncated object", protocol: "connect-json", method: "RunnerService/CreateRunner", body: '{"name":"abc","kind":"RUNNER_KI', expect: "invalid_argument" },
  { name: "unterminated string", protocol: "connect-json", method: "RunnerService/GetRunner", body: '{"runnerId":"', expect: "invalid_argument" },
  { name: "trailing garbage after the object", protocol: "connect-json", method: "RunnerService/ListRunners", body: "{}}", expect: "invalid_argument" },
  { name: "two objects", protocol: "connect-json", method: "RunnerService/ListRunners", body: "{}{}", expect: "invalid_argument" },
  { name: "JSON null", protocol: "connect-json", method: "RunnerService/ListRunners", body: "null", expect: "invalid_argument" },
  { name: "JSON array", protocol: "connect-json", method: "RunnerService/ListRunners", body: "[]", expect: "invalid_argument" },
  { name: "JSON string", protocol: "connect-json", method: "RunnerService/ListRunners", body: '"hello"', expect: "invalid_argument" },
  { name: "JSON number", protocol: "connect-json", method: "RunnerService/ListRunners", body: "42", expect: "invalid_argument" },
  { name: "single quotes", protocol: "connect-json", method: "RunnerService/ListRunners", body: "{'pagination':{}}", expect: "invalid_argument" },
  { name: "comments", protocol: "connect-json", method: "RunnerService/ListRunners", body: "{/* hi */}", expect: "invalid_argument" },
  { name: "NaN literal", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":NaN}}', expect: "invalid_argument" },
  { name: "BOM before the object", protocol: "connect-json", method: "RunnerService/ListRunners", body: "\ufeff{}", expect: "ok" },
  { name: "NUL bytes", protocol: "connect-json", method: "RunnerService/ListRunners", body: "{\u0000}", expect: "invalid_argument" },
  { name: "unknown fields only", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"bogus":1,"more":{"x":[1,2]}}', expect: "ok" },
  { name: "unknown nested field", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":1,"cursor":"x"}}', expect: "ok" },
  // wrong types
  { name: "name is a number", protocol: "connect-json", method: "RunnerService/CreateRunner", body: '{"name":5,"kind":"RUNNER_KIND_REMOTE","provider":"RUNNER_PROVIDER_LINUX_HOST"}', expect: "invalid_argument" },
  { name: "name is an object", protocol: "connect-json", method: "RunnerService/CreateRunner", body: '{"name":{"a":1}}', expect: "invalid_argument" },
  { name: "name is an array", protocol: "connect-json", method: "RunnerService/CreateRunner", body: '{"name":["abc"]}', expect: "invalid_argument" },
  { name: "pagination is a string", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":"x"}', expect: "invalid_argument" },
  { name: "pageSize is a float", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":1.5}}', expect: "invalid_argument" },
  { name: "pageSize overflows int32", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":2147483648}}', expect: "invalid_argument" },
  { name: "pageSize 1e40", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":1e40}}', expect: "invalid_argument" },
  { name: "pageSize negative", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":-1}}', expect: "invalid_argument" },
  { name: "pageSize as a quoted number (legal JSON mapping)", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":"3"}}', expect: "ok" },
  { name: "pageSize as a quoted number with an exponent (a JSON number)", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":"1e1"}}', expect: "ok" },
  // Number() reads these; the JSON mapping allows only a JSON number in the string.
  { name: "pageSize as quoted hex", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":"0x10"}}', expect: "invalid_argument" },
  { name: "pageSize as quoted binary", protocol: "connect-json", method: "RunnerConfigurationService/ListSCMIntegrations", body: '{"pagination":{"pageSize":"0b11"}}', expect: "invalid_argument" },
  { name: "pageSize quoted with a plus", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":"+3"}}', expect: "invalid_argument" },
  { name: "pageSize as quoted hex spelled with an escape", protocol: "connect-json", method: "RunnerConfigurationService/ListSCMIntegrations", body: '{"pagination":{"pageSize":"\\u0030x10"}}', expect: "invalid_argument" },
  { name: "pageSize quoted with a trailing dot", protocol: "connect-json", method: "RunnerService/ListRunners", body: '{"pagination":{"pageSize":"3."}}', expect: "invalid_argument" },
  { name: "pat is a string", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => `{"runnerId":"${c.runnerId}","scmId":"github","host":"x.example","pat":"yes"}`, expect: "invalid_argument" },
  { name: "pat is null (means default)", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => `{"runnerId":"${c.runnerId}","scmId":"github","host":"null-pat.example","pat":null}`, expect: "invalid_argument" },
  { name: "unknown enum name", protocol: "connect-json", method: "RunnerService/CreateRunner", body: '{"name":"enum-test","kind":"RUNNER_KIND_NOPE","provider":"RUNNER_PROVIDER_LINUX_HOST"}', expect: "invalid_argument" },
  { name: "enum out of range as a number", protocol: "connect-json", method: "RunnerService/CreateRunner", body: '{"name":"enum-test","kind":99,"provider":2}', expect: "invalid_argument" },
  { name: "runnerIds is an object", protocol: "connect-json", method: "RunnerConfigurationService/ListSCMIntegrations", body: '{"filter":{"runnerIds":{"0":"x"}}}', expect: "invalid_argument" },
  { name: "runnerIds holds numbers", protocol: "connect-json", method: "RunnerConfigurationService/ListSCMIntegrations", body: '{"filter":{"runnerIds":[1,2]}}', expect: "invalid_argument" },
  { name: "publicKey is not base64", protocol: "connect-json", method: "RunnerInteractionService/Signup", body: '{"publicKey":"!!!not base64!!!"}', expect: "invalid_argument" },
  { name: "publicKey is 31 bytes", protocol: "connect-json", method: "RunnerInteractionService/Signup", body: `{"publicKey":"${Buffer.alloc(31, 7).toString("base64")}"}`, expect: "invalid_argument" },
  { name: "publicKey is all zeros", protocol: "connect-json", method: "RunnerInteractionService/Signup", body: `{"publicKey":"${Buffer.alloc(32).toString("base64")}"}`, expect: "invalid_argument" },
  { name: "publicKey is 512 KiB", protocol: "connect-json", method: "RunnerInteractionService/Signup", body: `{"publicKey":"${Buffer.alloc(512 * 1024, 9).toString("base64")}"}`, expect: "invalid_argument" },
  // invalid UTF-8 and odd characters
  { name: "invalid UTF-8 in a string", protocol: "connect-json", method: "RunnerService/GetRunner", body: Buffer.concat([Buffer.from('{"runnerId":"'), Buffer.from([0xff, 0xfe, 0xc0, 0xaf]), Buffer.from('"}')]), expect: "invalid_argument" },
  { name: "invalid UTF-8 in a runner name", protocol: "connect-json", method: "RunnerService/CreateRunner", body: Buffer.concat([Buffer.from('{"name":"ab'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('c","kind":"RUNNER_KIND_REMOTE","provider":"RUNNER_PROVIDER_LINUX_HOST"}')]), expect: "invalid_argument" },
  { name: "lone surrogate escape", protocol: "connect-json", method: "RunnerService/GetRunner", body: '{"runnerId":"\\ud800"}', expect: "invalid_argument" },
  { name: "control characters in a host", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => `{"runnerId":"${c.runnerId}","scmId":"github","host":"git\\u0000hub.com","pat":true}`, expect: "invalid_argument" },
  { name: "right-to-left override in a runner name", protocol: "connect-json", method: "RunnerService/CreateRunner", body: '{"name":"abc\\u202edef","kind":"RUNNER_KIND_REMOTE","provider":"RUNNER_PROVIDER_LINUX_HOST"}', expect: "invalid_argument" },
  // deep nesting and huge values
  { name: "arrays nested 100,000 deep in an unknown field", protocol: "connect-json", method: "RunnerService/ListRunners", body: `{"x":${"[".repeat(100_000)}${"]".repeat(100_000)}}`, expect: "ok" },
  { name: "objects nested 50,000 deep in a known field", protocol: "connect-json", method: "RunnerService/ListRunners", body: `{"pagination":${'{"a":'.repeat(50_000)}1${"}".repeat(50_000)}}`, expect: "ok" },
  { name: "objects nested deep in a string field", protocol: "connect-json", method: "RunnerService/GetRunner", body: `{"runnerId":${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}}`, expect: "invalid_argument" },
  { name: "900 KiB runner name", protocol: "connect-json", method: "RunnerService/CreateRunner", body: `{"name":"${"n".repeat(900 * 1024)}","kind":"RUNNER_KIND_REMOTE","provider":"RUNNER_PROVIDER_LINUX_HOST"}`, expect: "invalid_argument" },
  { name: "900 KiB host", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => `{"runnerId":"${c.runnerId}","scmId":"github","host":"${"h".repeat(900 * 1024)}","pat":true}`, expect: "invalid_argument" },
  { name: "900 KiB page token", protocol: "connect-json", method: "RunnerService/ListRunners", body: `{"pagination":{"token":"${"t".repeat(900 * 1024)}"}}`, expect: "invalid_argument" },
  { name: "100,000 runner ids", protocol: "connect-json", method: "RunnerConfigurationService/ListSCMIntegrations", body: `{"filter":{"runnerIds":[${Array(100_000).fill('"x"').join(",")}]}}`, expect: "invalid_argument" },
  { name: "20,000 integration ids", protocol: "connect-json", method: "RunnerInteractionService/ListRunnerSCMIntegrations", body: (c) => `{"runnerId":"${c.runnerId}","filter":{"scmIntegrationIds":[${Array(20_000).fill(`"${c.integrationId}"`).join(",")}]}}`, expect: "invalid_argument" },
  { name: "schema with 10,000 scm entries", protocol: "connect-json", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", body: (c) => JSON.stringify({ runnerId: c.runnerId, configSchema: { scm: Array(10_000).fill(SCHEMA_ENTRY) } }), expect: "invalid_argument" },
  { name: "schema entry with 60,000 default hosts", protocol: "connect-json", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", body: (c) => JSON.stringify({ runnerId: c.runnerId, configSchema: { scm: [{ ...SCHEMA_ENTRY, defaultHosts: Array(60_000).fill("a.example") }] } }), expect: "invalid_argument" },
  // Refused, not read one way or the other: a proxy in front may have checked the first.
  { name: "duplicate keys", protocol: "connect-json", method: "RunnerService/GetRunner", body: (c) => `{"runnerId":"nonsense","runnerId":"${c.runnerId}"}`, expect: "invalid_argument" },
  { name: "another organization's runner", protocol: "connect-json", method: "RunnerService/GetRunner", body: (c) => `{"runnerId":"${c.otherRunnerId}"}`, expect: "not_found" },
  { name: "another runner's id on the runner API", protocol: "connect-json", method: "RunnerInteractionService/ListRunnerSCMIntegrations", body: (c) => `{"runnerId":"${c.otherRunnerId}"}`, expect: "permission_denied" },
  { name: "scheme in the host", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => JSON.stringify({ runnerId: c.runnerId, scmId: "github", host: "https://github.com", pat: true }), expect: "invalid_argument" },
  { name: "300-character client id", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => JSON.stringify({ runnerId: c.runnerId, scmId: "gitlab", host: "long-client.example", oauthClientId: "c".repeat(300), oauthPlaintextClientSecret: "s", pat: true }), expect: "invalid_argument" },
  { name: "5 KiB client secret", protocol: "connect-json", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => JSON.stringify({ runnerId: c.runnerId, scmId: "gitlab", host: "long-secret.example", oauthClientId: "c", oauthPlaintextClientSecret: "s".repeat(5000), pat: true }), expect: "invalid_argument" },

  // ---- Connect: headers ----
  { name: "no content type", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-type": null }, body: "{}", expect: "http_415" },
  { name: "text/plain", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-type": "text/plain" }, body: "{}", expect: "http_415" },
  { name: "form encoded", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=b", expect: "http_415" },
  { name: "JSON with a UTF-16 charset", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-type": "application/json; charset=utf-16" }, body: "{}", expect: "http_415" },
  { name: "JSON with a UTF-8 charset", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-type": "application/json; charset=utf-8" }, body: "{}", expect: "ok" },
  { name: "streaming content type on a unary method", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-type": "application/connect+json" }, body: "{}", expect: "http_415" },
  { name: "JSON body sent as application/proto", protocol: "connect-proto", method: "RunnerService/GetRunner", body: '{"runnerId":"x"}', expect: "invalid_argument" },
  // connect-node takes any version header (connect-go would refuse these).
  { name: "connect-protocol-version 2", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "connect-protocol-version": "2" }, body: "{}", expect: "ok" },
  { name: "connect-protocol-version garbage", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "connect-protocol-version": "\u00ff\u00fe" }, body: "{}", expect: "ok" },
  { name: "connect-timeout-ms garbage", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "connect-timeout-ms": "soon" }, body: "{}", expect: "invalid_argument" },
  { name: "connect-timeout-ms negative", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "connect-timeout-ms": "-5" }, body: "{}", expect: "invalid_argument" },
  // Deadlines over 60 s are shortened to it, not refused (a gRPC client rounds its deadline up).
  { name: "connect-timeout-ms enormous", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "connect-timeout-ms": "9999999999" }, body: "{}", expect: "ok" },
  { name: "connect-timeout-ms of 60.1 s", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "connect-timeout-ms": "60100" }, body: "{}", expect: "ok" },
  { name: "connect-timeout-ms 40 digits", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "connect-timeout-ms": "9".repeat(40) }, body: "{}", expect: "invalid_argument" },
  // A deadline already passed: a call is refused if something checks its signal before it ends, else served; either will do, not a crash.
  // A deadline passed as the call arrives: the call is not made.
  { name: "connect-timeout-ms zero", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "connect-timeout-ms": "0" }, body: "{}", expect: "deadline_exceeded" },
  { name: "content-encoding gzip, body not gzip", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-encoding": "gzip" }, body: "{}", expect: "invalid_argument" },
  { name: "content-encoding gzip, truncated gzip", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-encoding": "gzip" }, body: gzipSync(Buffer.from("{}")).subarray(0, 12), expect: "invalid_argument" },
  { name: "content-encoding gzip, correct", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-encoding": "gzip" }, body: gzipSync(Buffer.from("{}")), expect: "ok" },
  { name: "gzip bomb (64 MiB of zeros)", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-encoding": "gzip" }, body: () => gzipSync(Buffer.alloc(64 * mib, 0x20)), expect: "resource_exhausted" },
  { name: "content-encoding br, body not brotli", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-encoding": "br" }, body: "{}", expect: "invalid_argument" },
  { name: "content-encoding unknown", protocol: "connect-json", method: "RunnerService/ListRunners", headers: { "content-encoding": "lzma" }, body: "{}", expect: "unimplemented" },
  // A gitpod.v1 method not served here is unimplemented, not 404 (which the SDK reads as not found).
  { name: "unknown method", protocol: "connect-json", method: "RunnerService/DropAllTables", body: "{}", expect: "unimplemented" },
  { name: "unknown service", protocol: "connect-json", method: "/gitpod.v1.AdminService/Everything", body: "{}", expect: "unimplemented" },
  { name: "another package", protocol: "connect-json", method: "/other.v1.AdminService/Everything", body: "{}", expect: "http_404" },
  { name: "path traversal", protocol: "connect-json", method: "/gitpod.v1.RunnerService/../RunnerService/ListRunners", body: "{}", expect: "http_404" },
  { name: "query string on a List call", protocol: "connect-json", method: "/gitpod.v1.RunnerService/ListRunners?pageSize=abc&token=%00", body: "{}", expect: "invalid_argument" },
  { name: "huge pageSize in the query", protocol: "connect-json", method: "/gitpod.v1.RunnerService/ListRunners?pageSize=99999999999999999999", body: "{}", expect: "invalid_argument" },

  // ---- authorization ----
  { name: "no token", protocol: "connect-json", method: "RunnerService/ListRunners", auth: "none", body: "{}", expect: "unauthenticated" },
  { name: "Basic scheme", protocol: "connect-json", method: "RunnerService/ListRunners", auth: "none", headers: { authorization: "Basic $TOKEN" }, body: "{}", expect: "unauthenticated" },
  { name: "token without a scheme", protocol: "connect-json", method: "RunnerService/ListRunners", auth: "none", headers: { authorization: "$TOKEN" }, body: "{}", expect: "unauthenticated" },
  { name: "Bearer and nothing else", protocol: "connect-json", method: "RunnerService/ListRunners", auth: "none", headers: { authorization: "Bearer " }, body: "{}", expect: "unauthenticated" },
  { name: "8 KiB token", protocol: "connect-json", method: "RunnerService/ListRunners", auth: "none", headers: { authorization: `Bearer ${"a".repeat(8192)}` }, body: "{}", expect: "unauthenticated" },
  { name: "token with a Latin-1 byte", protocol: "connect-json", method: "RunnerService/ListRunners", auth: "none", headers: { authorization: "Bearer \u00e9\u00ff" }, body: "{}", expect: "unauthenticated" },
  { name: "runner token on the admin API", protocol: "connect-json", method: "RunnerService/ListRunners", auth: "runner", body: "{}", expect: "permission_denied" },
  { name: "API token on the runner API", protocol: "connect-json", method: "RunnerInteractionService/Signup", auth: "api", body: "{}", expect: "permission_denied" },
  // The token is checked before the body is read: a body no one reads cannot be the reason.
  { name: "no token and a broken body", protocol: "connect-json", method: "RunnerService/CreateRunner", auth: "none", body: "{", expect: "unauthenticated" },
  { name: "no token and a broken gRPC frame", protocol: "grpc", method: "RunnerService/CreateRunner", auth: "none", body: new Uint8Array([0x61, 0x61, 0x61, 0x61, 0x61]), expect: "unauthenticated" },

  // ---- Connect binary ----
  { name: "empty body is an empty message", protocol: "connect-proto", method: "RunnerService/ListRunners", body: new Uint8Array(0), expect: "ok" },
  { name: "overlong varint", protocol: "connect-proto", method: "RunnerService/ListRunners", body: WIRE.overlongVarint, expect: "invalid_argument" },
  { name: "length beyond the body", protocol: "connect-proto", method: "RunnerService/GetRunner", body: WIRE.hugeLength, expect: "invalid_argument" },
  { name: "field number 0", protocol: "connect-proto", method: "RunnerService/GetRunner", body: WIRE.fieldZero, expect: "invalid_argument" },
  { name: "wire type 7", protocol: "connect-proto", method: "RunnerService/GetRunner", body: WIRE.wireType7, expect: "invalid_argument" },
  { name: "string field that is not UTF-8", protocol: "connect-proto", method: "RunnerService/GetRunner", body: WIRE.badUtf8String, expect: "invalid_argument" },
  { name: "string field sent as a varint", protocol: "connect-proto", method: "RunnerService/GetRunner", body: WIRE.stringAsVarint, expect: "invalid_argument" },
  { name: "string field tagged as a varint, then bytes that are no field", protocol: "connect-proto", method: "RunnerService/GetRunner", body: WIRE.stringTaggedVarint, expect: "invalid_argument" },
  { name: "200,000 nested groups", protocol: "connect-proto", method: "RunnerService/ListRunners", body: WIRE.nestedGroups, expect: "invalid_argument" },
  { name: "stray end-group", protocol: "connect-proto", method: "RunnerService/ListRunners", body: WIRE.strayEndGroup, expect: "invalid_argument" },
  { name: "unknown field is skipped", protocol: "connect-proto", method: "RunnerService/ListRunners", body: WIRE.unknownField, expect: "ok" },
  { name: "random bytes", protocol: "connect-proto", method: "RunnerConfigurationService/CreateSCMIntegration", body: Buffer.from("d41d8cd98f00b204e9800998ecf8427e5ab3c0ffee", "hex"), expect: "invalid_argument" },
  { name: "valid message then garbage", protocol: "connect-proto", method: "RunnerService/GetRunner", body: (c) => Buffer.concat([pb(GetRunnerRequestSchema, { runnerId: c.runnerId }), Buffer.from([0xff])]), expect: "invalid_argument" },
  { name: "a runner id too long", protocol: "connect-proto", method: "RunnerService/GetRunner", body: pb(GetRunnerRequestSchema, { runnerId: "r".repeat(100_000) }), expect: "invalid_argument" },
  { name: "negative page size", protocol: "connect-proto", method: "RunnerService/ListRunners", body: pb(ListRunnersRequestSchema, { pagination: { pageSize: -2147483648 } }), expect: "invalid_argument" },
  { name: "undefined enum values", protocol: "connect-proto", method: "RunnerService/CreateRunner", body: pb(CreateRunnerRequestSchema, { name: "enum-binary", kind: 1234 as never, provider: -7 as never }), expect: "invalid_argument" },
  { name: "public key of 33 bytes", protocol: "connect-proto", method: "RunnerInteractionService/Signup", body: pb(SignupRequestSchema, { publicKey: new Uint8Array(33).fill(5) }), expect: "invalid_argument" },
  { name: "delete an id that is not a uuid", protocol: "connect-proto", method: "RunnerConfigurationService/DeleteSCMIntegration", body: pb(DeleteSCMIntegrationRequestSchema, { id: "'; DROP TABLE scm_integrations; --" }), expect: "invalid_argument" },
  { name: "get an unknown uuid", protocol: "connect-proto", method: "RunnerConfigurationService/GetSCMIntegration", body: pb(GetSCMIntegrationRequestSchema, { id: "00000000-0000-7000-8000-000000000000" }), expect: "not_found" },
  { name: "100 filter ids", protocol: "connect-proto", method: "RunnerConfigurationService/ListSCMIntegrations", body: pb(ListSCMIntegrationsRequestSchema, { filter: { runnerIds: Array(100).fill("00000000-0000-7000-8000-000000000000") } }), expect: "invalid_argument" },
  { name: "schema without entries for another runner", protocol: "connect-proto", method: "RunnerInteractionService/UpdateRunnerConfigurationSchema", body: (c) => pb(UpdateRunnerConfigurationSchemaRequestSchema, { runnerId: c.otherRunnerId, configSchema: {} }), expect: "permission_denied" },
  { name: "create on a foreign runner", protocol: "connect-proto", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => pb(CreateSCMIntegrationRequestSchema, { runnerId: c.otherRunnerId, scmId: "github", host: "foreign.example", pat: true }), expect: "not_found" },
  { name: "create with an unknown scm_id", protocol: "connect-proto", method: "RunnerConfigurationService/CreateSCMIntegration", body: (c) => pb(CreateSCMIntegrationRequestSchema, { runnerId: c.runnerId, scmId: "sourceforge", host: "sf.example", pat: true }), expect: "invalid_argument" },

  // ---- gRPC (HTTP/2) ----
  { name: "no message at all", protocol: "grpc", method: "RunnerService/ListRunners", body: new Uint8Array(0), expect: "invalid_argument" },
  { name: "two messages on a unary method", protocol: "grpc", method: "RunnerService/ListRunners", body: Buffer.concat([envelope(new Uint8Array(0)), envelope(new Uint8Array(0))]), expect: "invalid_argument" },
  { name: "truncated frame header", protocol: "grpc", method: "RunnerService/ListRunners", body: Buffer.from([0, 0, 0]), expect: "invalid_argument" },
  { name: "length prefix longer than the data", protocol: "grpc", method: "RunnerService/GetRunner", body: envelope(Buffer.from([0x0a, 0x01, 0x61]), 0, 100), expect: "invalid_argument" },
  { name: "length prefix shorter than the data", protocol: "grpc", method: "RunnerService/GetRunner", body: envelope(Buffer.from([0x0a, 0x01, 0x61]), 0, 1), expect: "invalid_argument" },
  { name: "length prefix of 4 GiB", protocol: "grpc", method: "RunnerService/ListRunners", body: envelope(new Uint8Array(0), 0, 0xffffffff), expect: "resource_exhausted" },
  { name: "compressed flag without grpc-encoding", protocol: "grpc", method: "RunnerService/ListRunners", body: envelope(Buffer.from([1, 2, 3]), 1), expect: "invalid_argument" },
  { name: "compressed flag with identity encoding", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-encoding": "identity" }, body: envelope(new Uint8Array(0), 1), expect: "invalid_argument" },
  { name: "gzip encoding, message not gzip", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-encoding": "gzip" }, body: envelope(Buffer.from("not gzip"), 1), expect: "invalid_argument" },
  { name: "gzip encoding, truncated gzip", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-encoding": "gzip" }, body: envelope(gzipSync(Buffer.alloc(100)).subarray(0, 15), 1), expect: "invalid_argument" },
  { name: "unknown grpc-encoding", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-encoding": "snappy" }, body: envelope(new Uint8Array(0), 1), expect: "unimplemented" },
  { name: "reserved flag bits", protocol: "grpc", method: "RunnerService/ListRunners", body: envelope(new Uint8Array(0), 0x7e), expect: "invalid_argument" },
  { name: "end-of-stream flag on a request", protocol: "grpc", method: "RunnerService/ListRunners", body: envelope(new Uint8Array(0), 0x80), expect: "invalid_argument" },
  { name: "garbage protobuf", protocol: "grpc", method: "RunnerService/GetRunner", body: envelope(WIRE.overlongVarint), expect: "invalid_argument" },
  { name: "nested groups", protocol: "grpc", method: "RunnerService/ListRunners", body: envelope(WIRE.nestedGroups), expect: "invalid_argument" },
  // connect-node could not answer a JSON syntax error over gRPC (see UNSERVED_GRPC in src/server.ts).
  { name: "JSON codec is not served", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "content-type": "application/grpc+json" }, body: envelope(Buffer.from("{}")), expect: "http_415" },
  { name: "JSON codec, broken JSON quoting a character outside the BMP", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "content-type": "application/grpc+json" }, body: envelope(Buffer.from(`\n\u{1f984}\u{1f984}\u{1f984}\u{1f984}\u{1f984}`)), expect: "http_415" },
  { name: "a quoted filter id cut in the middle of a surrogate pair", protocol: "grpc", method: "RunnerConfigurationService/ListSCMIntegrations", body: envelope(pb(ListSCMIntegrationsRequestSchema, { filter: { runnerIds: [`a${"\u{1f984}".repeat(40)}`] } })), expect: "invalid_argument" },
  { name: "an invalid uuid cut in the middle of a surrogate pair", protocol: "grpc", method: "RunnerService/GetRunner", body: envelope(pb(GetRunnerRequestSchema, { runnerId: `a${"\u{1f984}".repeat(40)}` })), expect: "invalid_argument" },
  { name: "unknown codec", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "content-type": "application/grpc+thrift" }, body: envelope(new Uint8Array(0)), expect: "http_415" },
  // gRPC asks clients to send it (to detect proxies that drop trailers); a call without it is served, as grpc-go does.
  { name: "gRPC without te: trailers", protocol: "grpc", method: "RunnerService/ListRunners", headers: { te: null }, body: envelope(new Uint8Array(0)), expect: "ok" },
  { name: "grpc-timeout garbage", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-timeout": "soon" }, body: envelope(new Uint8Array(0)), expect: "invalid_argument" },
  { name: "grpc-timeout without a unit", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-timeout": "100" }, body: envelope(new Uint8Array(0)), expect: "invalid_argument" },
  { name: "grpc-timeout of 99999999 hours", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-timeout": "99999999H" }, body: envelope(new Uint8Array(0)), expect: "ok" },
  { name: "grpc-timeout of 60100 ms (Python's 60 s)", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-timeout": "60100m" }, body: envelope(new Uint8Array(0)), expect: "ok" },
  { name: "gRPC-Web text mode", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "content-type": "application/grpc-web-text" }, body: envelope(new Uint8Array(0)), expect: "http_415" },
  // Whether these calls end before their deadline is a race; any answer but a crash will do.
  { name: "grpc-timeout of one nanosecond", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-timeout": "1n" }, body: envelope(new Uint8Array(0)) },
  { name: "grpc-timeout with 9 digits", protocol: "grpc", method: "RunnerService/ListRunners", headers: { "grpc-timeout": "123456789m" }, body: envelope(new Uint8Array(0)), expect: "invalid_argument" },
  { name: "no token (gRPC)", protocol: "grpc", method: "RunnerConfigurationService/ListSCMIntegrations", auth: "none", body: envelope(new Uint8Array(0)), expect: "unauthenticated" },
  { name: "unknown method (gRPC)", protocol: "grpc", method: "RunnerService/Nope", body: envelope(new Uint8Array(0)), expect: "unimplemented" },
  { name: "another organization's token", protocol: "grpc", method: "RunnerService/GetRunner", auth: "other", body: (c) => envelope(pb(GetRunnerRequestSchema, { runnerId: c.runnerId })), expect: "not_found" },

  // ---- gRPC-Web ----
  { name: "no message at all (gRPC-Web)", protocol: "grpc-web", method: "RunnerService/ListRunners", body: new Uint8Array(0), expect: "invalid_argument" },
  { name: "truncated frame (gRPC-Web)", protocol: "grpc-web", method: "RunnerService/GetRunner", body: envelope(Buffer.from([0x0a, 0x05]), 0, 7), expect: "invalid_argument" },
  { name: "length prefix of 4 GiB (gRPC-Web)", protocol: "grpc-web", method: "RunnerService/ListRunners", body: envelope(new Uint8Array(0), 0, 0xffffffff), expect: "resource_exhausted" },
  { name: "compressed flag without encoding (gRPC-Web)", protocol: "grpc-web", method: "RunnerService/ListRunners", body: envelope(Buffer.from([9, 9]), 1), expect: "invalid_argument" },
  { name: "garbage protobuf (gRPC-Web)", protocol: "grpc-web", method: "RunnerService/GetRunner", body: envelope(WIRE.wireType7), expect: "invalid_argument" },
  { name: "text encoding (base64 body) is not served", protocol: "grpc-web", method: "RunnerService/ListRunners", headers: { "content-type": "application/grpc-web-text" }, body: envelope(new Uint8Array(0)).toString("base64"), expect: "http_415" },
  { name: "gRPC-Web JSON is not served", protocol: "grpc-web", method: "RunnerService/ListRunners", headers: { "content-type": "application/grpc-web+json" }, body: envelope(Buffer.from("{}")), expect: "http_415" },
  { name: "a quoted value cut in the middle of a surrogate pair (gRPC-Web)", protocol: "grpc-web", method: "RunnerService/DeleteRunner", body: envelope(pb(GetRunnerRequestSchema, { runnerId: `b${"\u{1f984}".repeat(40)}` })), expect: "invalid_argument" },
  { name: "gRPC-Web over HTTP/2", protocol: "grpc-web", method: "RunnerService/GetRunner", http2: true, body: envelope(WIRE.fieldZero), expect: "invalid_argument" },
  { name: "grpc-timeout garbage (gRPC-Web)", protocol: "grpc-web", method: "RunnerService/ListRunners", headers: { "grpc-timeout": "-1S" }, body: envelope(new Uint8Array(0)), expect: "invalid_argument" },
  { name: "runner token on the admin API (gRPC-Web)", protocol: "grpc-web", method: "RunnerConfigurationService/ListSCMIntegrations", auth: "runner", body: envelope(new Uint8Array(0)), expect: "permission_denied" },
];

/** Requests broken below the RPC layer; each goes on its own connection. */
export const RAW_HTTP1: RawCase[] = [
  { name: "binary garbage instead of a request line", bytes: "\u0000\u0001\u0002\u0003\u00ff\r\n\r\n", expectStatus: 400 },
  { name: "request line without a version", bytes: "POST /gitpod.v1.RunnerService/ListRunners\r\n\r\n", expectStatus: 400 },
  { name: "header without a colon", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n", expectStatus: 400 },
  { name: "NUL in a header value", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\nContent-Length: 0\r\n\r\n", expectStatus: 400 },
  { name: "64 KiB of headers", bytes: `POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(64 * 1024)}\r\n\r\n`, expectStatus: 431 },
  { name: "Content-Length and Transfer-Encoding together", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", expectStatus: 400 },
  { name: "two different Content-Lengths", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", expectStatus: 400 },
  { name: "negative Content-Length", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", expectStatus: 400 },
  { name: "Content-Length that is not a number", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", expectStatus: 400 },
  { name: "broken chunk size", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", expectStatus: 400 },
  { name: "unknown transfer coding", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", expectStatus: 400 },
  { name: "HTTP/1.1 without Host", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", expectStatus: 400 },
  { name: "malformed Host", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: [::1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", expectStatus: 400 },
  { name: "absolute-form target", bytes: "POST http://evil.example/gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", expectStatus: 404 },
  { name: "GET on an RPC", bytes: "GET /gitpod.v1.RunnerService/ListRunners HTTP/1.1\r\nHost: x\r\n\r\n", expectStatus: 405 },
  { name: "HTTP/2 preface followed by garbage", bytes: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\u0000\u0000\u0004\u00ff\u00ff\u00ff\u00ff\u00ff\u00ffgarbage", expectStatus: 0 },
  { name: "HTTP/3 version", bytes: "POST /gitpod.v1.RunnerService/ListRunners HTTP/3.0\r\nHost: x\r\n\r\n", expectStatus: 400 },
];
