import type { GetSCMIntegrationResponse, ListSCMIntegrationsResponse, SCMIntegration } from "../../gen/gitpod/v1/runner_configurations_pb.js";
import type { ListRunnerSCMIntegrationsResponse } from "../../gen/gitpod/v1/runner_interactions_pb.js";
import type { PaginationResponse } from "../../gen/gitpod/v1/pagination_pb.js";

/**
 * The Connect JSON of the answers that carry integrations, written by hand: the same text,
 * byte for byte, as protobuf-es's toJsonString writes for them with this service's options
 * (test/json-writers.test.ts compares the two on generated messages). toJsonString walks
 * each message's schema field by field through its reflection API and builds a JSON object
 * tree before JSON.stringify; for a page of 25 integrations that was most of a List's
 * encoding (BENCHMARKS.md). Here each field is written in schema order, left out as
 * protobuf-es leaves it out (an implicit field at its zero value, an optional one unset), and
 * every string is written as JSON.stringify writes it, as there.
 */
export const JSON_WRITERS: ReadonlyMap<string, (message: never) => string> = new Map<string, (message: never) => string>([
  ["gitpod.v1.GetSCMIntegrationResponse", (m: GetSCMIntegrationResponse) => (m.integration === undefined ? "{}" : `{"integration":${integration(m.integration)}}`)],
  ["gitpod.v1.ListSCMIntegrationsResponse", (m: ListSCMIntegrationsResponse) => page(m.pagination, "integrations", m.integrations)],
  ["gitpod.v1.ListRunnerSCMIntegrationsResponse", (m: ListRunnerSCMIntegrationsResponse) => page(m.pagination, "scmIntegrations", m.scmIntegrations)],
]);

/**
 * Text that JSON.stringify writes as it is, between quotes: it escapes only quotation marks,
 * backslashes, control characters and (lone) surrogates. Testing for those costs less than
 * calling it, and ids, hosts and most other values have none.
 */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;
const quoted = (text: string) => (NEEDS_ESCAPE.test(text) ? JSON.stringify(text) : `"${text}"`);

// Objects are built as one string from "{": a member goes after a comma unless it is the
// first. (Joining members with a leading comma and cutting it off copied every object again.)

/** `open` (an object begun with "{") with the member `key` added, its value already JSON. */
const member = (open: string, key: string, json: string) => `${open}${open.length > 1 ? "," : ""}"${key}":${json}`;

/** A string field: left out when empty (implicit presence), else added. */
const str = (open: string, key: string, value: string | undefined) => (value === "" || value === undefined ? open : member(open, key, quoted(value)));

function pagination(p: PaginationResponse | undefined): string {
  return p === undefined ? "" : `"pagination":${str("{", "nextToken", p.nextToken)}}`;
}

/** A response of a pagination and a list of integrations. */
function page(p: PaginationResponse | undefined, key: string, items: SCMIntegration[] | undefined): string {
  let out = `{${pagination(p)}`;
  if (items === undefined || items.length === 0) return `${out}}`;
  out = `${out}${out.length > 1 ? "," : ""}"${key}":[`;
  for (let i = 0; i < items.length; i++) out += i === 0 ? integration(items[i]!) : `,${integration(items[i]!)}`;
  return `${out}]}`;
}

function integration(m: SCMIntegration): string {
  let out = str(str(str("{", "id", m.id), "scmId", m.scmId), "host", m.host);
  const o = m.oauth;
  if (o !== undefined) {
    let oauth = str("{", "clientId", o.clientId);
    const secret = o.encryptedClientSecret;
    if (secret !== undefined && secret.length > 0) {
      // Rows bring their secrets as Buffers; a message made elsewhere may hold a plain Uint8Array.
      const bytes = Buffer.isBuffer(secret) ? secret : Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength);
      oauth = member(oauth, "encryptedClientSecret", `"${bytes.toString("base64")}"`);
    }
    out = member(out, "oauth", `${str(oauth, "issuerUrl", o.issuerUrl)}}`);
  }
  if (m.pat) out = member(out, "pat", "true");
  out = str(out, "runnerId", m.runnerId);
  // Optional: written when set, also when empty.
  if (m.virtualDirectory !== undefined) out = member(out, "virtualDirectory", quoted(m.virtualDirectory));
  return `${out}}`;
}
