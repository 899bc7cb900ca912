import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import {
  CreateSCMIntegrationRequestSchema,
  CreateSCMIntegrationResponseSchema,
  GetSCMIntegrationRequestSchema,
  GetSCMIntegrationResponseSchema,
} from "../gen/gitpod/v1/runner_configurations_pb.js";
import { ListRunnersRequestSchema, ListRunnersResponseSchema, RunnerKind } from "../gen/gitpod/v1/runners_pb.js";
import { withoutMismatchedWireTypes } from "../src/transport/wire-types.js";
import { envelope, parseEnvelopes } from "./corpus/wire.js";
import { createRunner, startServer, type TestServer } from "./harness.js";

// A field sent with a wire type its type cannot have is set aside as unknown (and so dropped),
// as protobuf's C++, Java and Go decoders do, instead of read as its schema's type.

const numberOf = (desc: DescMessage, localName: string) => desc.fields.find((f) => f.localName === localName)!.number;
const tag = (n: number, wireType: number) => varint(n * 8 + wireType);
function varint(n: number): Buffer {
  const out: number[] = [];
  for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n % 128) | 0x80);
  out.push(n);
  return Buffer.from(out);
}
const lengthDelimited = (n: number, payload: Buffer) => Buffer.concat([tag(n, 2), varint(payload.length), payload]);

type Answer = { code: string; body: Buffer };

/** A Connect binary call over HTTP/1.1; the code "ok" or the Connect error code. */
async function connectProto(s: TestServer, path: string, body: Buffer): Promise<Answer> {
  const r = await fetch(`${s.url}/${path}`, { method: "POST", headers: { "content-type": "application/proto", authorization: `Bearer ${s.token}` }, body });
  const bytes = Buffer.from(await r.arrayBuffer());
  return r.status === 200 ? { code: "ok", body: bytes } : { code: (JSON.parse(bytes.toString()) as { code: string }).code, body: bytes };
}

/** A gRPC call over h2c; the code "ok" or grpc-status by Connect's name for it. */
function grpc(s: TestServer, path: string, message: Buffer, flags = 0): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(s.url);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": `/${path}`, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${s.token}` });
    const chunks: Buffer[] = [];
    let status: string | undefined;
    req.on("response", (h) => (status = h["grpc-status"] as string | undefined ?? status));
    req.on("trailers", (t) => (status = t["grpc-status"] as string | undefined));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      session.close();
      const frames = parseEnvelopes(Buffer.concat(chunks)) ?? [];
      resolve({ code: status === "0" ? "ok" : status === "3" ? "invalid_argument" : `grpc_${status}`, body: frames[0]?.data ?? Buffer.alloc(0) });
    });
    req.end(envelope(message, flags));
  });
}

const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";

describe("fields with a wire type their type cannot have", () => {
  let s: TestServer;
  let runnerId: string;
  before(async () => {
    s = await startServer();
    ({ runnerId } = await createRunner(s));
  });
  after(() => s.close());

  for (const [protocol, send] of [["Connect binary", connectProto], ["gRPC", grpc]] as const) {
    it(`${protocol}: a string field sent as a varint is set aside; the rest of the message is read`, async () => {
      const host = `${protocol === "gRPC" ? "g" : "c"}.wire.example.com`;
      const good = Buffer.from(toBinary(CreateSCMIntegrationRequestSchema, create(CreateSCMIntegrationRequestSchema, { runnerId, scmId: "github", host, pat: true })));
      // virtual_directory as the varint 5: protobuf-es would read 5 bytes of text past the end.
      const body = Buffer.concat([good, tag(numberOf(CreateSCMIntegrationRequestSchema, "virtualDirectory"), 0), varint(5)]);
      const created = await send(s, CREATE, body);
      assert.equal(created.code, "ok");
      const id = fromBinary(CreateSCMIntegrationResponseSchema, created.body).id;
      const got = await send(s, "gitpod.v1.RunnerConfigurationService/GetSCMIntegration", Buffer.from(toBinary(GetSCMIntegrationRequestSchema, create(GetSCMIntegrationRequestSchema, { id }))));
      const integration = fromBinary(GetSCMIntegrationResponseSchema, got.body).integration!;
      assert.deepEqual([integration.host, integration.pat, integration.virtualDirectory], [host, true, undefined]);
    });

    it(`${protocol}: a bool sent length-delimited is set aside, not read as true`, async () => {
      const good = Buffer.from(toBinary(CreateSCMIntegrationRequestSchema, create(CreateSCMIntegrationRequestSchema, { runnerId, scmId: "github", host: `${protocol.length}.pat.example.com` })));
      // pat length-delimited, 3 bytes that are an unknown field 99 = 1: protobuf-es read the
      // length as the bool (true), then the payload as that field, and created a PAT integration.
      const body = Buffer.concat([good, lengthDelimited(numberOf(CreateSCMIntegrationRequestSchema, "pat"), Buffer.concat([tag(99, 0), varint(1)]))]);
      const refused = await send(s, CREATE, body);
      assert.equal(refused.code, "invalid_argument", "neither OAuth nor PAT: nothing to create");
      const rows = s.db.$client.prepare("SELECT count(*) AS n FROM scm_integrations WHERE host = ?").get(`${protocol.length}.pat.example.com`) as { n: number };
      assert.equal(rows.n, 0);
    });
  }

  it("inside a nested message too: a page size sent as 32 bits is set aside, and the default page size holds", async () => {
    for (let i = 0; i < 27; i++) await createRunner(s, s.token, `wire-${i}`);
    // pagination { page_size as fixed32 100 }: protobuf-es read a varint 100, then three zero bytes as a field 0.
    const pagination = Buffer.concat([tag(numberOf(ListRunnersRequestSchema.fields.find((f) => f.localName === "pagination")!.message!, "pageSize"), 5), Buffer.from([100, 0, 0, 0])]);
    const body = lengthDelimited(numberOf(ListRunnersRequestSchema, "pagination"), pagination);
    for (const send of [connectProto, grpc]) {
      const listed = await send(s, "gitpod.v1.RunnerService/ListRunners", body);
      assert.equal(listed.code, "ok");
      assert.equal(fromBinary(ListRunnersResponseSchema, listed.body).runners.length, 25);
    }
  });

  it("repeated enums come packed or one by one, both read", async () => {
    const kinds = numberOf(ListRunnersRequestSchema.fields.find((f) => f.localName === "filter")!.message!, "kinds");
    const filterField = numberOf(ListRunnersRequestSchema, "filter");
    const packed = lengthDelimited(filterField, lengthDelimited(kinds, Buffer.from([RunnerKind.REMOTE, RunnerKind.LOCAL])));
    const unpacked = lengthDelimited(filterField, Buffer.concat([tag(kinds, 0), varint(RunnerKind.REMOTE), tag(kinds, 0), varint(RunnerKind.LOCAL)]));
    // As 32 bits, the kinds are set aside: the filter is then empty, and every runner listed.
    const fixed = lengthDelimited(filterField, Buffer.concat([tag(kinds, 5), Buffer.from([RunnerKind.LOCAL, 0, 0, 0])]));
    const count = async (body: Buffer) => {
      const r = await connectProto(s, "gitpod.v1.RunnerService/ListRunners", Buffer.concat([body, lengthDelimited(numberOf(ListRunnersRequestSchema, "pagination"), Buffer.concat([tag(1, 0), varint(100)]))]));
      assert.equal(r.code, "ok");
      return fromBinary(ListRunnersResponseSchema, r.body).runners.length;
    };
    const all = await count(Buffer.alloc(0));
    assert.ok(all >= 28);
    assert.equal(await count(packed), all, "every runner here is remote");
    assert.equal(await count(unpacked), all);
    assert.equal(await count(fixed), all);
    const localOnly = lengthDelimited(filterField, Buffer.concat([tag(kinds, 0), varint(RunnerKind.LOCAL)]));
    assert.equal(await count(localOnly), 0);
  });

  it("bytes protobuf-es would take but are not protobuf are refused, and what follows a skipped group is still checked", async () => {
    const good = Buffer.from(toBinary(CreateSCMIntegrationRequestSchema, create(CreateSCMIntegrationRequestSchema, { runnerId, scmId: "github", host: "lenient.example.com" })));
    const patAsLen = lengthDelimited(numberOf(CreateSCMIntegrationRequestSchema, "pat"), Buffer.concat([tag(99, 0), varint(1)]));
    const refused: [string, Buffer][] = [
      ["a length of 2^32", Buffer.concat([tag(15, 2), varint(2 ** 32), patAsLen])],
      ["a varint of 11 bytes", Buffer.concat([tag(15, 0), Buffer.alloc(10, 0x80), Buffer.from([0]), patAsLen])],
      ["a group never closed", Buffer.concat([tag(99, 3), tag(1, 0), varint(1)])],
      ["a group closed as another field", Buffer.concat([tag(99, 3), tag(98, 4)])],
      ["wire type 6", Buffer.concat([tag(15, 6), varint(1)])],
      ["a string as a varint, then bytes that are no field", Buffer.concat([tag(numberOf(CreateSCMIntegrationRequestSchema, "host"), 0), varint(5), Buffer.from("abcde")])],
    ];
    for (const [what, suffix] of refused) {
      for (const send of [connectProto, grpc]) {
        const r = await send(s, CREATE, Buffer.concat([good, suffix]));
        assert.equal(r.code, "invalid_argument", `${what}: ${r.body.toString()}`);
      }
    }
    // An unknown group is skipped whole, and a mismatched field after it is still set aside.
    const afterGroup = Buffer.concat([good, tag(99, 3), tag(1, 0), varint(1), tag(99, 4), patAsLen]);
    assert.equal((await connectProto(s, CREATE, afterGroup)).code, "invalid_argument", "pat set aside: neither OAuth nor PAT");
    const stored = s.db.$client.prepare("SELECT count(*) AS n FROM scm_integrations WHERE host = 'lenient.example.com'").get() as { n: number };
    assert.equal(stored.n, 0);
    const packedPast = lengthDelimited(numberOf(ListRunnersRequestSchema, "filter"), Buffer.concat([
      lengthDelimited(numberOf(ListRunnersRequestSchema.fields.find((f) => f.localName === "filter")!.message!, "kinds"), Buffer.from([0x82])),
      tag(1, 0), varint(3),
    ]));
    assert.equal((await connectProto(s, "gitpod.v1.RunnerService/ListRunners", packedPast)).code, "invalid_argument", "a packed varint running past its list");
    const message = JSON.parse((await connectProto(s, CREATE, Buffer.concat([good, tag(15, 6)]))).body.toString()) as { message: string };
    assert.equal(message.message, "request could not be decoded: binary gitpod.v1.CreateSCMIntegrationRequest: field 15: wire type 6 does not exist");
    // A frame whose flags gRPC does not define carries no message: not read as one.
    const flagged = Buffer.from(toBinary(CreateSCMIntegrationRequestSchema, create(CreateSCMIntegrationRequestSchema, { runnerId, scmId: "github", host: "flagged.example.com", pat: true })));
    for (const flags of [0x80, 0x02]) assert.equal((await grpc(s, CREATE, flagged, flags)).code, "invalid_argument", `flags ${flags}`);
    assert.equal((s.db.$client.prepare("SELECT count(*) AS n FROM scm_integrations WHERE host = 'flagged.example.com'").get() as { n: number }).n, 0);
    assert.equal((await grpc(s, CREATE, flagged)).code, "ok", "the same message in a plain frame");
    // So for the calls that take no token (health, reflection), whose bodies are not read here.
    const reflection = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    const listServices = Buffer.from([0x3a, 0]); // list_services: ""
    for (const [path, message] of [["grpc.health.v1.Health/Check", Buffer.alloc(0)], [reflection, listServices]] as const) {
      for (const flags of [0x80, 0x02]) assert.equal((await grpc(s, path, message, flags)).code, "invalid_argument", `${path}, flags ${flags}`);
      assert.equal((await grpc(s, path, message)).code, "ok", `${path} in a plain frame`);
    }
    // A string that is not UTF-8 is named, as JSON names it (protobuf-es's own error names nothing), inside a list too.
    const badHost = Buffer.concat([good, lengthDelimited(numberOf(CreateSCMIntegrationRequestSchema, "host"), Buffer.from([0x61, 0xff, 0x62]))]);
    for (const send of [connectProto, grpc]) {
      const r = await send(s, CREATE, badHost);
      assert.equal(r.code, "invalid_argument");
    }
    assert.equal(JSON.parse((await connectProto(s, CREATE, badHost)).body.toString()).message, `request could not be decoded: binary gitpod.v1.CreateSCMIntegrationRequest: field ${numberOf(CreateSCMIntegrationRequestSchema, "host")} (host) is not valid UTF-8`);
    const filter = ListRunnersRequestSchema.fields.find((f) => f.localName === "filter")!.message!;
    const badCreator = lengthDelimited(numberOf(ListRunnersRequestSchema, "filter"), lengthDelimited(numberOf(filter, "creatorIds"), Buffer.from([0xc3, 0x28])));
    assert.equal(JSON.parse((await connectProto(s, "gitpod.v1.RunnerService/ListRunners", badCreator)).body.toString()).message, `request could not be decoded: binary gitpod.v1.ListRunnersRequest.Filter: field ${numberOf(filter, "creatorIds")} (creator_ids) is not valid UTF-8`);
  });

  it("a Connect binary body in a coding not served keeps its headers, and is unimplemented", async () => {
    const body = Buffer.from(toBinary(ListRunnersRequestSchema, create(ListRunnersRequestSchema, {})));
    for (const coding of ["deflate", "zstd"]) {
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/proto", "content-encoding": coding, authorization: `Bearer ${s.token}` }, body });
      assert.equal(r.status, 501, coding);
      assert.equal(((await r.json()) as { code: string }).code, "unimplemented");
    }
  });

  it("a message needing no change is handed on as it came; a changed one is the same message without the fields set aside", () => {
    const good = Buffer.from(toBinary(CreateSCMIntegrationRequestSchema, create(CreateSCMIntegrationRequestSchema, { runnerId: "r", scmId: "github", host: "h", pat: true, oauthClientId: "c" })));
    assert.equal(withoutMismatchedWireTypes(CreateSCMIntegrationRequestSchema, good), good, "the same buffer");
    // Unknown fields stay (the decoder drops them); known ones of the wrong type go.
    const mixed = Buffer.concat([tag(99, 0), varint(7), tag(numberOf(CreateSCMIntegrationRequestSchema, "host"), 5), Buffer.alloc(4), good]);
    assert.deepEqual(withoutMismatchedWireTypes(CreateSCMIntegrationRequestSchema, mixed), Buffer.concat([tag(99, 0), varint(7), good]));
    // Nested: the length in front of a shrunk message is written anew, in fewer bytes where it needs fewer.
    const filter = ListRunnersRequestSchema.fields.find((f) => f.localName === "filter")!.message!;
    const inner = Buffer.concat([tag(numberOf(filter, "kinds"), 5), Buffer.alloc(4), lengthDelimited(numberOf(filter, "creatorIds"), Buffer.alloc(122, 0x61))]);
    const nested = lengthDelimited(numberOf(ListRunnersRequestSchema, "filter"), inner);
    const out = withoutMismatchedWireTypes(ListRunnersRequestSchema, nested);
    assert.deepEqual(out, lengthDelimited(numberOf(ListRunnersRequestSchema, "filter"), lengthDelimited(numberOf(filter, "creatorIds"), Buffer.alloc(122, 0x61))));
    assert.equal(out.length, nested.length - 5 - 1, "five bytes of field, and one of length");
  });
});

// protobuf-es refuses these tags too, but as "parse binary: illegal tag: varint overflows uint32",
// naming neither the message nor the problem; wire-types.ts refuses them first, and says which.
describe("tags no protobuf decoder takes", () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.close());

  const LIST = "gitpod.v1.RunnerService/ListRunners";
  const empty = Buffer.from(toBinary(ListRunnersRequestSchema, create(ListRunnersRequestSchema, {})));

  it("a tag written in more than 5 bytes is refused as too long, naming the message", async () => {
    // Unknown field 99 as the varint 1: its tag in 2 bytes, then the same tag padded to 6.
    const canonical = Buffer.concat([empty, tag(99, 0), varint(1)]);
    const padded = Buffer.concat([empty, Buffer.from([0x98, 0x86, 0x80, 0x80, 0x80, 0x00]), varint(1)]);
    assert.deepEqual(tag(99, 0), Buffer.from([0x98, 0x06]));
    for (const send of [connectProto, grpc]) {
      assert.equal((await send(s, LIST, canonical)).code, "ok", "the unknown field written plainly is skipped");
      assert.equal((await send(s, LIST, padded)).code, "invalid_argument", "the same tag in 6 bytes");
    }
    const message = JSON.parse((await connectProto(s, LIST, padded)).body.toString()) as { message: string };
    assert.equal(message.message, "request could not be decoded: binary gitpod.v1.ListRunnersRequest: a field's tag is cut short or too long");
  });

  it("a field number past 2^29 - 1 is refused as out of range, naming the message and the number", async () => {
    // (2^29 + 99) << 3 needs 33 bits: a tag of 5 bytes, as long as a tag may be.
    const tooLarge = Buffer.concat([empty, tag(2 ** 29 + 99, 0), varint(1)]);
    assert.equal(tag(2 ** 29 + 99, 0).length, 5);
    for (const send of [connectProto, grpc]) assert.equal((await send(s, LIST, tooLarge)).code, "invalid_argument");
    const message = JSON.parse((await connectProto(s, LIST, tooLarge)).body.toString()) as { message: string };
    assert.equal(message.message, `request could not be decoded: binary gitpod.v1.ListRunnersRequest: field number ${2 ** 29 + 99} is out of range`);
    // The largest field number there is, unknown here, is skipped.
    assert.equal((await connectProto(s, LIST, Buffer.concat([empty, tag(2 ** 29 - 1, 0), varint(1)]))).code, "ok");
  });
});
