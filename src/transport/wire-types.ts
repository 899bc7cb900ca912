import { isUtf8 } from "node:buffer";
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

// Binary protobuf messages as this service reads them, before connect-node hands them to
// protobuf-es. protobuf-es reads a field as its schema's type whatever wire type its tag
// names, so `pat` sent length-delimited read as true, and a string sent as a varint took the
// bytes after it for its text; and it takes some bytes no other decoder does (a length of
// 2^32 or more cut to 32 bits, a varint of any length when skipping). Here, as protobuf's
// C++, Java and Go decoders do:
// - a field of the schema that comes with a wire type its type cannot have is set aside as
//   an unknown field (unknown fields are dropped as they are read, see server.ts);
// - a message that does not parse as protobuf is refused, `invalid_argument`.

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

/** What is known of a field number in one message type. */
interface Expected {
  /** The wire types it may come as. */
  wireTypes: readonly number[];
  /** A length-delimited payload that is a message (or a map entry), checked in turn. */
  inner?: Walk;
  /** A length-delimited payload that is packed numbers of this wire type. */
  packed?: number;
  /** A string field's name: its payload must be UTF-8, which protobuf-es checks without naming the field. */
  text?: string;
}
interface Walk {
  typeName: string;
  field(number: number): Expected | undefined;
}

const walks = new WeakMap<DescMessage, Walk>();

/** The expectations of a message type, worked out once per type. */
function walkOf(desc: DescMessage): Walk {
  let walk = walks.get(desc);
  if (walk === undefined) {
    const byNumber = new Map<number, Expected>();
    walk = { typeName: desc.typeName, field: (n) => byNumber.get(n) };
    walks.set(desc, walk);
    for (const field of desc.fields) byNumber.set(field.number, expected(field));
  }
  return walk;
}

function expected(field: DescField): Expected {
  switch (field.fieldKind) {
    case "scalar":
      return { wireTypes: [scalarWireType(field.scalar)], text: field.scalar === ScalarType.STRING ? field.name : undefined };
    case "enum":
      return { wireTypes: [VARINT] };
    case "message":
      // A message field may be group-encoded (delimited) in editions: such a group is skipped whole.
      return field.delimitedEncoding ? { wireTypes: [SGROUP] } : { wireTypes: [LEN], inner: walkOf(field.message) };
    case "list": {
      if (field.listKind === "message") return field.delimitedEncoding ? { wireTypes: [SGROUP] } : { wireTypes: [LEN], inner: walkOf(field.message) };
      // Numbers and enums packed or not, whatever the schema says: parsers take both.
      const one = field.listKind === "enum" ? VARINT : scalarWireType(field.scalar);
      return one === LEN ? { wireTypes: [LEN], text: field.scalar === ScalarType.STRING ? field.name : undefined } : { wireTypes: [one, LEN], packed: one };
    }
    case "map": {
      const key: Expected = { wireTypes: [scalarWireType(field.mapKey)], text: field.mapKey === ScalarType.STRING ? `${field.name} key` : undefined };
      const value: Expected =
        field.mapKind === "message"
          ? { wireTypes: [LEN], inner: walkOf(field.message) }
          : field.mapKind === "enum"
            ? { wireTypes: [VARINT] }
            : { wireTypes: [scalarWireType(field.scalar)], text: field.scalar === ScalarType.STRING ? field.name : undefined };
      return { wireTypes: [LEN], inner: { typeName: `${field.parent.typeName}.${field.name} entry`, field: (n) => (n === 1 ? key : n === 2 ? value : undefined) } };
    }
  }
}

/**
 * `bytes` (one message of type `desc`) without the fields whose wire type their type cannot
 * have, inside nested messages too: the same buffer when there are none, as for every message
 * a generated encoder writes. Throws `invalid_argument` for bytes that are not protobuf.
 */
export function withoutMismatchedWireTypes(desc: DescMessage, bytes: Buffer): Buffer {
  const walk = walkOf(desc);
  // Every change makes the message shorter: a first pass only checks and measures.
  if (measure(walk, bytes, 0, bytes.length, 0, null) === bytes.length) return bytes;
  // The second notes the new size of each nested message that shrinks, at where its payload
  // starts (plus one, so that 0 means unchanged), for the lengths written in front of them.
  const resized = new Uint32Array(bytes.length + 1);
  const size = measure(walk, bytes, 0, bytes.length, 0, resized);
  const out = Buffer.allocUnsafe(size);
  const written = write(walk, bytes, 0, bytes.length, out, 0, resized);
  if (written !== size) throw new Error(`wire types: wrote ${written} bytes of ${size}`); // cannot happen: both passes read alike
  return out;
}

/** Nested messages deeper than this are refused, as protobuf-es refuses them. */
const MAX_DEPTH = 100;

/** One field as it lies in the bytes. */
interface Field {
  start: number;
  /** Where the tag ends (the payload's length, for LEN, follows). */
  tagEnd: number;
  number: number;
  wireType: number;
  /** Where a LEN payload starts; -1 for other wire types. */
  payload: number;
  end: number;
}

function refuse(walk: Walk, what: string): never {
  throw new ConnectError(`request could not be decoded: binary ${walk.typeName}: ${what}`, Code.InvalidArgument);
}

/** The field at `at`, which must end by `to`. */
function fieldAt(walk: Walk, bytes: Buffer, at: number, to: number, depth: number): Field {
  const tag = varintAt(bytes, at, to);
  if (tag === null || tag.end - at > 5) refuse(walk, "a field's tag is cut short or too long");
  const number = Math.floor(tag.value / 8);
  const wireType = tag.value % 8;
  if (number < 1 || number > 536_870_911) refuse(walk, `field number ${number} is out of range`);
  let payload = -1;
  let end: number;
  switch (wireType) {
    case VARINT: {
      const v = varintAt(bytes, tag.end, to);
      if (v === null) refuse(walk, `field ${number}: a varint is cut short or longer than 10 bytes`);
      end = v.end;
      break;
    }
    case I64:
      end = tag.end + 8;
      break;
    case I32:
      end = tag.end + 4;
      break;
    case LEN: {
      const len = varintAt(bytes, tag.end, to);
      if (len === null) refuse(walk, `field ${number}: a length is cut short`);
      payload = len.end;
      end = len.end + len.value;
      break;
    }
    case SGROUP:
      end = groupEnd(walk, bytes, tag.end, to, number, depth + 1);
      break;
    default:
      refuse(walk, `field ${number}: ${wireType === EGROUP ? "a group ends that was never opened" : `wire type ${wireType} does not exist`}`);
  }
  if (end > to) refuse(walk, `field ${number} runs past the end of its message`);
  return { start: at, tagEnd: tag.end, number, wireType, payload, end };
}

/** Where the group of field `number` whose contents start at `at` ends (after its end tag). */
function groupEnd(walk: Walk, bytes: Buffer, at: number, to: number, number: number, depth: number): number {
  if (depth > MAX_DEPTH) refuse(walk, `groups nest deeper than ${MAX_DEPTH}`);
  for (;;) {
    if (at >= to) refuse(walk, `the group of field ${number} is never closed`);
    const tag = varintAt(bytes, at, to);
    if (tag !== null && tag.value % 8 === EGROUP) {
      if (Math.floor(tag.value / 8) !== number) refuse(walk, `the group of field ${number} is closed as field ${Math.floor(tag.value / 8)}`);
      return tag.end;
    }
    // Inside a group fields are not checked against a schema: it is an unknown field, or skipped whole.
    at = fieldAt(walk, bytes, at, to, depth).end;
  }
}

/** Whether a field of this expectation comes as `wireType`; checks a packed payload's shape. */
function fits(walk: Walk, want: Expected, f: Field, bytes: Buffer): boolean {
  if (!want.wireTypes.includes(f.wireType)) return false;
  if (f.wireType === LEN && want.packed !== undefined) {
    const length = f.end - f.payload;
    if (want.packed === I32 || want.packed === I64) {
      if (length % (want.packed === I32 ? 4 : 8) !== 0) refuse(walk, `field ${f.number}: packed numbers of ${want.packed === I32 ? 4 : 8} bytes in ${length} bytes`);
    } else {
      for (let at = f.payload; at < f.end; ) {
        const v = varintAt(bytes, at, f.end);
        if (v === null) refuse(walk, `field ${f.number}: a packed varint runs past its list`);
        at = v.end;
      }
    }
  }
  return true;
}

/** The size of [from, to) once mismatched fields are taken out; notes the new size of each nested message that shrinks. */
function measure(walk: Walk, bytes: Buffer, from: number, to: number, depth: number, resized: Uint32Array | null): number {
  let size = 0;
  for (let at = from; at < to; ) {
    const f = fieldAt(walk, bytes, at, to, depth);
    at = f.end;
    const want = walk.field(f.number);
    if (want === undefined) {
      size += f.end - f.start;
      continue;
    }
    if (!fits(walk, want, f, bytes)) continue; // set aside
    if (want.text !== undefined && !isUtf8(bytes.subarray(f.payload, f.end))) refuse(walk, `field ${f.number} (${want.text}) is not valid UTF-8`);
    if (want.inner && f.wireType === LEN) {
      if (depth + 1 > MAX_DEPTH) refuse(walk, `messages nest deeper than ${MAX_DEPTH}`);
      const inner = measure(want.inner, bytes, f.payload, f.end, depth + 1, resized);
      if (inner !== f.end - f.payload) {
        if (resized) resized[f.payload] = inner + 1;
        size += f.tagEnd - f.start + varintSize(inner) + inner;
        continue;
      }
    }
    size += f.end - f.start;
  }
  return size;
}

/** Writes [from, to) to `out` at `pos` as measure() sized it; answers where it ended. */
function write(walk: Walk, bytes: Buffer, from: number, to: number, out: Buffer, pos: number, resized: Uint32Array): number {
  for (let at = from; at < to; ) {
    const f = fieldAt(walk, bytes, at, to, 0);
    at = f.end;
    const want = walk.field(f.number);
    if (want !== undefined && !fits(walk, want, f, bytes)) continue;
    const inner = want?.inner && f.wireType === LEN ? resized[f.payload]! - 1 : -1;
    if (inner < 0) {
      pos += bytes.copy(out, pos, f.start, f.end);
      continue;
    }
    pos += bytes.copy(out, pos, f.start, f.tagEnd);
    pos = writeVarint(out, pos, inner);
    pos = write(want!.inner!, bytes, f.payload, f.end, out, pos, resized);
  }
  return pos;
}

/** A base-128 varint of at most 10 bytes ending by `to`, as a number (precise enough for tags and lengths; larger values are only skipped). */
function varintAt(bytes: Buffer, at: number, to: number): { value: number; end: number } | null {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10 && at + i < to; i++) {
    const b = bytes[at + i]!;
    value += (b & 0x7f) * scale;
    scale *= 128;
    if (b < 0x80) return { value, end: at + i + 1 };
  }
  return null;
}

function varintSize(n: number): number {
  let size = 1;
  for (; n >= 0x80; n = Math.floor(n / 128)) size++;
  return size;
}

function writeVarint(out: Buffer, pos: number, n: number): number {
  for (; n >= 0x80; n = Math.floor(n / 128)) out[pos++] = (n % 128) | 0x80;
  out[pos++] = n;
  return pos;
}
