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
  ["gitpod.v1.GetSCMIntegrationResponse", (m: GetSCMIntegrationResponse) => written((out) => getResponse(out, m))],
  ["gitpod.v1.ListSCMIntegrationsResponse", (m: ListSCMIntegrationsResponse) => written((out) => page(out, m.pagination, INTEGRATIONS, m.integrations))],
  ["gitpod.v1.ListRunnerSCMIntegrationsResponse", (m: ListRunnerSCMIntegrationsResponse) => written((out) => page(out, m.pagination, SCM_INTEGRATIONS, m.scmIntegrations))],
]);

/**
 * The text is collected as pieces and joined once. Built by `+`, it was a tree of several
 * hundred small strings that had to be flattened before it could be encoded, which cost
 * about as much again as writing it. Joining costs by the piece too, so the punctuation
 * between two members of an object goes in as one piece. A page of 25, to bytes, in a
 * loop: 21 µs built by `+`, 15 joined; under load a List's CPU fell from 152 to 141 µs
 * (BENCHMARKS.md).
 */
function written(write: (out: string[]) => void): string {
  const out: string[] = [];
  write(out);
  return out.join("");
}

/**
 * Text that JSON.stringify writes as it is, between quotes: it escapes only quotation marks,
 * backslashes, control characters and (lone) surrogates. Testing for those costs less than
 * calling it, and ids, hosts and most other values have none.
 */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * Where an object's writing is: nothing written yet, after a value, or after a string
 * whose closing quote has not been written (it goes in with what follows).
 */
const EMPTY = 0;
const AFTER_VALUE = 1;
const IN_STRING = 2;
type State = typeof EMPTY | typeof AFTER_VALUE | typeof IN_STRING;
const LEAD = ["{", ",", '",'];

/**
 * A member's name as it is written in each state, before a value and before a string's
 * text (with its opening quote): the punctuation around it made once, here.
 */
type Name = readonly string[];
const name = (key: string): Name => LEAD.flatMap((lead) => [`${lead}"${key}":`, `${lead}"${key}":"`]);

const PAGINATION = name("pagination");
const NEXT_TOKEN = name("nextToken");
const INTEGRATION = name("integration");
const INTEGRATIONS = name("integrations");
const SCM_INTEGRATIONS = name("scmIntegrations");
const ID = name("id");
const SCM_ID = name("scmId");
const HOST = name("host");
const OAUTH = name("oauth");
const CLIENT_ID = name("clientId");
const ENCRYPTED_CLIENT_SECRET = name("encryptedClientSecret");
const ISSUER_URL = name("issuerUrl");
const PAT = name("pat");
const RUNNER_ID = name("runnerId");
const VIRTUAL_DIRECTORY = name("virtualDirectory");
const END = ["{}", "}", '"}'];

/** One object's members, in the order written; `end` closes it. */
class Members {
  private state: State = EMPTY;

  constructor(private readonly out: string[]) {}

  /** A member whose value's JSON the caller writes next. */
  name(n: Name): void {
    this.out.push(n[this.state * 2]!);
    this.state = AFTER_VALUE;
  }

  /** A member whose value is this text, written between quotes as it is. */
  text(n: Name, value: string): void {
    this.out.push(n[this.state * 2 + 1]!, value);
    this.state = IN_STRING;
  }

  /** A string member, as JSON.stringify writes the string. */
  string(n: Name, value: string): void {
    if (!NEEDS_ESCAPE.test(value)) return this.text(n, value);
    this.name(n);
    this.out.push(JSON.stringify(value));
  }

  /** A string field of implicit presence: left out when empty. */
  implicit(n: Name, value: string | undefined): void {
    if (value !== "" && value !== undefined) this.string(n, value);
  }

  end(): void {
    this.out.push(END[this.state]!);
  }
}

function getResponse(out: string[], m: GetSCMIntegrationResponse): void {
  const o = new Members(out);
  if (m.integration !== undefined) {
    o.name(INTEGRATION);
    integration(out, m.integration);
  }
  o.end();
}

/** A response of a pagination and a list of integrations. */
function page(out: string[], p: PaginationResponse | undefined, key: Name, items: SCMIntegration[] | undefined): void {
  const o = new Members(out);
  if (p !== undefined) {
    o.name(PAGINATION);
    const pagination = new Members(out);
    pagination.implicit(NEXT_TOKEN, p.nextToken);
    pagination.end();
  }
  if (items !== undefined && items.length > 0) {
    o.name(key);
    out.push("[");
    for (let i = 0; i < items.length; i++) {
      if (i > 0) out.push(",");
      integration(out, items[i]!);
    }
    out.push("]");
  }
  o.end();
}

function integration(out: string[], m: SCMIntegration): void {
  const o = new Members(out);
  o.implicit(ID, m.id);
  o.implicit(SCM_ID, m.scmId);
  o.implicit(HOST, m.host);
  const oauth = m.oauth;
  if (oauth !== undefined) {
    o.name(OAUTH);
    const a = new Members(out);
    a.implicit(CLIENT_ID, oauth.clientId);
    const secret = oauth.encryptedClientSecret;
    if (secret !== undefined && secret.length > 0) {
      // Rows bring their secrets as Buffers; a message made elsewhere may hold a plain Uint8Array.
      const bytes = Buffer.isBuffer(secret) ? secret : Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength);
      a.text(ENCRYPTED_CLIENT_SECRET, bytes.toString("base64"));
    }
    a.implicit(ISSUER_URL, oauth.issuerUrl);
    a.end();
  }
  if (m.pat) {
    o.name(PAT);
    out.push("true");
  }
  o.implicit(RUNNER_ID, m.runnerId);
  // Optional: written when set, also when empty.
  if (m.virtualDirectory !== undefined) o.string(VIRTUAL_DIRECTORY, m.virtualDirectory);
  o.end();
}
