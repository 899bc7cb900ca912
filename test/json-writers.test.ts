/**
 * The hand-written Connect JSON of the answers that carry integrations
 * (src/transport/json-writers.ts) is, byte for byte, what protobuf-es writes for them with
 * the service's options, for generated messages of every shape: fields empty or not, optional
 * ones unset, set empty or set, secrets of any length, and text with quotes, control
 * characters, line separators and lone surrogates.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { create, toJsonString, type DescMessage } from "@bufbuild/protobuf";
import {
  GetSCMIntegrationResponseSchema,
  ListSCMIntegrationsResponseSchema,
  SCMIntegrationSchema,
  type SCMIntegration,
} from "../gen/gitpod/v1/runner_configurations_pb.js";
import { ListRunnerSCMIntegrationsResponseSchema } from "../gen/gitpod/v1/runner_interactions_pb.js";
import { JSON_WRITERS } from "../src/transport/json-writers.js";

const text = fc.oneof(
  fc.constant(""),
  fc.string(),
  fc.string({ unit: "binary" }),
  fc.constantFrom('"quoted"', "back\\slash", "line\nbreak", "\u2028\u2029", "\ud800 alone", "\u0000\u001f", "ünïcødé 🙂"),
);

const integration: fc.Arbitrary<SCMIntegration> = fc
  .record({
    id: text,
    scmId: text,
    host: text,
    runnerId: text,
    pat: fc.boolean(),
    oauth: fc.option(fc.record({ clientId: text, encryptedClientSecret: fc.uint8Array({ maxLength: 120 }), issuerUrl: text }), { nil: undefined }),
    virtualDirectory: fc.option(text, { nil: undefined }),
  })
  .map((init) => create(SCMIntegrationSchema, init));

const pagination = fc.option(fc.record({ nextToken: text }), { nil: undefined });
const page = fc.array(integration, { maxLength: 30 });

const cases: [DescMessage, fc.Arbitrary<unknown>][] = [
  [GetSCMIntegrationResponseSchema, fc.option(integration, { nil: undefined }).map((i) => create(GetSCMIntegrationResponseSchema, { integration: i }))],
  [ListSCMIntegrationsResponseSchema, fc.tuple(pagination, page).map(([p, items]) => create(ListSCMIntegrationsResponseSchema, { pagination: p, integrations: items }))],
  [ListRunnerSCMIntegrationsResponseSchema, fc.tuple(pagination, page).map(([p, items]) => create(ListRunnerSCMIntegrationsResponseSchema, { pagination: p, scmIntegrations: items }))],
];

describe("hand-written JSON of the integration answers", () => {
  it("has a writer for each answer that carries integrations, and no other", () => {
    assert.deepEqual([...JSON_WRITERS.keys()].sort(), cases.map(([d]) => d.typeName).sort());
  });

  for (const [desc, messages] of cases) {
    it(`writes ${desc.typeName} exactly as protobuf-es does`, () => {
      const write = JSON_WRITERS.get(desc.typeName) as (m: unknown) => string;
      fc.assert(
        fc.property(messages, (m) => {
          assert.equal(write(m), toJsonString(desc, m as never));
        }),
        { numRuns: 500 },
      );
    });
  }

  it("writes a secret held in part of a larger buffer as that part alone", () => {
    const pool = Buffer.from("0123456789abcdef0123456789abcdef");
    const secret = pool.subarray(5, 17);
    const m = create(GetSCMIntegrationResponseSchema, { integration: { id: "i", oauth: { clientId: "c", encryptedClientSecret: secret } } });
    const write = JSON_WRITERS.get(GetSCMIntegrationResponseSchema.typeName) as (m: unknown) => string;
    assert.equal(write(m), toJsonString(GetSCMIntegrationResponseSchema, m));
    assert.match(write(m), new RegExp(`"encryptedClientSecret":"${secret.toString("base64")}"`));
  });
});
