import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";

// Binary protobuf messages as this service reads them: a field of the schema that arrives with
// a wire type its type cannot have is set aside as an unknown field, as protobuf's C++, Java and
// Go decoders do. protobuf-es, which connect-node decodes with, reads a field as its schema's
// type whatever wire type its tag names, so `pat` sent length-delimited read as true, and a
// string sent as a varint took the bytes after it for its text. Unknown fields are dropped as
// they are read (see server.ts), so a field set aside here is as good as absent.

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;

/** The wire type a scalar is written with, unpacked. */
function scalarWireType(t: ScalarType): number {
  switch (t) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return I64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return I32;
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return LEN;
    default:
      return VARINT;
  }
}

/** What is known of a field number in one message type: the wire types it may come as, and the type its payload holds (a message, or a map entry). */
interface Expected {
  wireTypes: readonly number[];
  /** A length-delimited payload to check in turn. */
  inner?: Walk;
}
type Walk = (number: number) => Expected | undefined;

const walks = new Map<string, Walk>();

/** The expectations of a message type, worked out once per type. */
function walkOf(desc: DescMessage): Walk {
  let walk = walks.get(desc.typeName);
  if (walk === undefined) {
    const byNumber = new Map<number, Expected>();
    walk = (n) => byNumber.get(n);
    walks.set(desc.typeName, walk);
    for (const field of desc.fields) byNumber.set(field.number, expected(field));
  }
  return walk;
}

function expected(field: DescField): Expected {
  switch (field.fieldKind) {
    case "scalar":
      return { wireTypes: [scalarWireType(field.scalar)] };
    case "enum":
      return { wireTypes: [VARINT] };
    case "message":
      // A message field may be group-encoded (delimited) in editions; such a group is left to protobuf-es.
      return field.delimitedEncoding ? { wireTypes: [SGROUP] } : { wireTypes: [LEN], inner: walkOf(field.message) };
    case "list":
      if (field.listKind === "message") return field.delimitedEncoding ? { wireTypes: [SGROUP] } : { wireTypes: [LEN], inner: walkOf(field.message) };
      // Packed or not, whatever the schema says: parsers take both.
      if (field.listKind === "enum") return { wireTypes: [VARINT, LEN] };
      return { wireTypes: field.scalar === ScalarType.STRING || field.scalar === ScalarType.BYTES ? [LEN] : [scalarWireType(field.scalar), LEN] };
    case "map": {
      const key: Expected = { wireTypes: [scalarWireType(field.mapKey)] };
      const value: Expected =
        field.mapKind === "message" ? { wireTypes: [LEN], inner: walkOf(field.message) } : field.mapKind === "enum" ? { wireTypes: [VARINT] } : { wireTypes: [scalarWireType(field.scalar)] };
      return { wireTypes: [LEN], inner: (n) => (n === 1 ? key : n === 2 ? value : undefined) };
    }
  }
}

/**
 * `bytes` (one message of type `desc`) without the fields whose wire type their type cannot
 * have, inside nested messages too; the same array when there are none, as for every message
 * a generated encoder writes. Bytes that do not parse as protobuf at all are returned as they
 * are, for the decoder to refuse.
 */
export function withoutMismatchedWireTypes(desc: DescMessage, bytes: Buffer): Buffer {
  return conform(walkOf(desc), bytes, 0) ?? bytes;
}

/** Nested messages deeper than this are left as they are (protobuf-es refuses past 100). */
const MAX_DEPTH = 100;

/** The message rewritten, or null when it needs no change or does not parse. */
function conform(walk: Walk, bytes: Buffer, depth: number): Buffer | null {
  // Pieces of the result, only once a change is found: [start, end) ranges of `bytes` or new arrays.
  let pieces: (Uint8Array | [number, number])[] | null = null;
  let kept = 0; // where the part of `bytes` not yet in `pieces` starts
  let at = 0;
  while (at < bytes.length) {
    const start = at;
    const tag = readVarint(bytes, at);
    if (tag === null) return null;
    at = tag.end;
    const number = Math.floor(tag.value / 8);
    const wireType = tag.value % 8;
    if (number < 1) return null;
    let end: number;
    let payload = -1;
    switch (wireType) {
      case VARINT: {
        const v = readVarint(bytes, at);
        if (v === null) return null;
        end = v.end;
        break;
      }
      case I64:
        end = at + 8;
        break;
      case I32:
        end = at + 4;
        break;
      case LEN: {
        const len = readVarint(bytes, at);
        if (len === null) return null;
        payload = len.end;
        end = len.end + len.value;
        break;
      }
      default:
        // Groups and what is no wire type: left to the decoder.
        return null;
    }
    if (end > bytes.length) return null;
    at = end;
    const want = walk(number);
    if (want === undefined) continue; // unknown: the decoder drops it
    let replacement: Uint8Array | undefined;
    if (!want.wireTypes.includes(wireType)) {
      replacement = EMPTY;
    } else if (want.inner && wireType === LEN && depth < MAX_DEPTH) {
      const inner = conform(want.inner, bytes.subarray(payload, end), depth + 1);
      if (inner !== null) replacement = Buffer.concat([bytes.subarray(start, tag.end), varintBytes(inner.length), inner]);
    }
    if (replacement === undefined) continue;
    pieces ??= [];
    pieces.push([kept, start], replacement);
    kept = end;
  }
  if (pieces === null) return null;
  pieces.push([kept, bytes.length]);
  return Buffer.concat(pieces.map((p) => (p instanceof Uint8Array ? p : bytes.subarray(p[0], p[1]))));
}

const EMPTY = new Uint8Array(0);

/** A base-128 varint of at most 10 bytes, as a number (lengths and tags fit; larger values only need skipping). */
function readVarint(bytes: Buffer, at: number): { value: number; end: number } | null {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (at + i >= bytes.length) return null;
    const b = bytes[at + i]!;
    value += (b & 0x7f) * scale;
    scale *= 128;
    if (b < 0x80) return { value, end: at + i + 1 };
  }
  return null;
}

function varintBytes(n: number): Uint8Array {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Uint8Array.from(out);
}
