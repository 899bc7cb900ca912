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
 * every string goes through JSON.stringify, as there.
 */
export const JSON_WRITERS: ReadonlyMap<string, (message: never) => string> = new Map<string, (message: never) => string>([
  ["gitpod.v1.GetSCMIntegrationResponse", (m: GetSCMIntegrationResponse) => object(m.integration === undefined ? "" : `,"integration":${integration(m.integration)}`)],
  ["gitpod.v1.ListSCMIntegrationsResponse", (m: ListSCMIntegrationsResponse) => object(pagination(m.pagination) + list("integrations", m.integrations))],
  ["gitpod.v1.ListRunnerSCMIntegrationsResponse", (m: ListRunnerSCMIntegrationsResponse) => object(pagination(m.pagination) + list("scmIntegrations", m.scmIntegrations))],
]);

/** `{...}` around members each written with a leading comma. */
const object = (members: string) => (members === "" ? "{}" : `{${members.slice(1)}}`);

const str = (key: string, value: string | undefined) => (value === "" || value === undefined ? "" : `,"${key}":${JSON.stringify(value)}`);

function pagination(p: PaginationResponse | undefined): string {
  return p === undefined ? "" : `,"pagination":${object(str("nextToken", p.nextToken))}`;
}

function list(key: string, items: SCMIntegration[]): string {
  if (items === undefined || items.length === 0) return "";
  let out = "";
  for (const item of items) out += `,${integration(item)}`;
  return `,"${key}":[${out.slice(1)}]`;
}

function integration(m: SCMIntegration): string {
  let out = str("id", m.id) + str("scmId", m.scmId) + str("host", m.host);
  const o = m.oauth;
  if (o !== undefined) {
    const secret = o.encryptedClientSecret;
    const base64 = secret === undefined || secret.length === 0 ? "" : `,"encryptedClientSecret":"${Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength).toString("base64")}"`;
    out += `,"oauth":${object(str("clientId", o.clientId) + base64 + str("issuerUrl", o.issuerUrl))}`;
  }
  if (m.pat) out += `,"pat":true`;
  out += str("runnerId", m.runnerId);
  // Optional: written when set, also when empty.
  if (m.virtualDirectory !== undefined) out += `,"virtualDirectory":${JSON.stringify(m.virtualDirectory)}`;
  return object(out);
}
