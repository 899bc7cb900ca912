import { Code, ConnectError } from "@connectrpc/connect";
import http from "node:http";
import http2 from "node:http2";
import type { Readable } from "node:stream";
import type { DescMessage } from "@bufbuild/protobuf";
import { closeLingering } from "./linger.js";
import { codingOf, inflate, type InflateFailure } from "./inflate.js";
import { withoutMismatchedWireTypes } from "./wire-types.js";

// Request bodies as this server lets connect-node read them: counted against a size limit and
// a budget shared by all requests, charged to their caller, inflated here when compressed,
// and thrown away unread when a call is answered without them.

const { NGHTTP2_NO_ERROR, NGHTTP2_STREAM_STATE_OPEN, NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL } = http2.constants;

/** What limitBody set for one request's body: the size limit and its share of the budget. */
interface BodyLimit {
  maxBytes: number;
  /** Whether the size limit is counted here (not when node or connect-node enforce it). */
  checkSize: boolean;
  /** Marks the answer as final once the body passed the size limit. */
  refuse(): void;
  /** The request's part of the body budget. */
  share: BodyShare;
  /** What connect-node reads instead of the body, once the request is answered without it (see withoutBody). */
  standIn?: Buffer;
  /** Reads what is left of the body and throws it away (HTTP/1.1; see limitBody). */
  discard(): void;
  /** Charges what connect-node parses to the caller, as it is about to parse it (see chargeBody). */
  charge?: ((bytes: number) => void) | undefined;
  /** How the body is read here, when it is read whole, by message or inflated (see chargeBody). */
  reading?: Reading | undefined;
  /** The pieces the body came in so far, their bytes, and whether they were too many (see notePiece). */
  pieces: number;
  pieceBytes: number;
  choppy: boolean;
}

/** Pieces a body may come in for nothing, and the bytes each piece past those must bring on average. */
const FREE_PIECES = 1024;
const BYTES_PER_PIECE = 64;
/** What a piece costs against the token's byte limit at the least (see chargeBody). */
const PIECE_CHARGE_BYTES = 256;

/**
 * Counts a piece of a body as node hands it over (a chunk of a chunked HTTP/1.1 body, an
 * HTTP/2 DATA frame, or what one read of the socket brought). Each costs the event loop a few
 * µs whatever its size, so a body sent in one-byte pieces cost 100 to 200 times as much a byte
 * as one sent in large ones: 960 KB of them took 3 s of CPU, and a stream refused without a
 * token took as long to read past. Past FREE_PIECES, a body that brings less than
 * BYTES_PER_PIECE a piece on average is marked choppy: connect-node is not given more of it
 * (the call is `resource_exhausted`), and what the answer leaves of it is not read past (an
 * HTTP/1.1 connection closes after the answer, an HTTP/2 stream is reset). So one body costs
 * a few ms at most; what a token's bodies cost over time is bounded by charging each piece at
 * least PIECE_CHARGE_BYTES against its byte limit. Clients that write in small pieces stay
 * well inside: 200 writes of 50 bytes, a 1 MiB body in TCP segments of 536 bytes (about 2,000
 * pieces, some split in two at HTTP/2 frame ends).
 */
function notePiece(limit: BodyLimit, bytes: number): void {
  limit.pieces += 1;
  limit.pieceBytes += bytes;
  if (limit.pieces > FREE_PIECES && (limit.pieces - FREE_PIECES) * BYTES_PER_PIECE > limit.pieceBytes) limit.choppy = true;
}

const choppy = (limit: BodyLimit) =>
  new ConnectError(`the request body came in ${limit.pieces} pieces for ${limit.pieceBytes} bytes; send it in larger writes`, Code.ResourceExhausted);

/** A body read here for connect-node rather than passed as it comes. */
interface Reading {
  /** gRPC and gRPC-Web: messages in frames; else the Connect protocol's one message. */
  framed: boolean;
  /** gRPC-Web, whose frames with the trailer flag (0x80) connect-node skips. */
  web: boolean;
  /** The coding compressed messages are inflated from here, if it is one inflated here. */
  coding: string | undefined;
  /** For binary messages: their type, whose fields are checked for wire types they cannot have (see wire-types.ts). */
  binary?: DescMessage | undefined;
  /** Frames only checked for flags gRPC defines, and passed as they come (calls without a token, see checkFrameFlags). */
  flagsOnly?: boolean;
}

/**
 * The chunks of a request body as connect-node reads them (through the request's async
 * iterator), counted against its limit. The request is not destroyed when the reader stops
 * early (the default), so the connection lives long enough for the answer to get out. A
 * plain iterator, not an async generator, which cost every call several promise turns.
 */
function countedChunks(req: { iterator(o: { destroyOnReturn: boolean }): AsyncIterable<Buffer> }, limit: BodyLimit | null): AsyncIterableIterator<Buffer> {
  if (limit?.standIn) return standInChunks(limit.standIn);
  const chunks = req.iterator({ destroyOnReturn: false })[Symbol.asyncIterator]();
  let seen = 0;
  const counted: AsyncIterableIterator<Buffer> = {
    next: () =>
      chunks.next().then((r) => {
        if (limit === null) return r;
        if (limit.choppy) {
          limit.refuse();
          throw choppy(limit);
        }
        if (r.done) {
          // A Connect body read as it came is parsed once it has all come (connect-node reads
          // to the end, a Content-Length or not): charged now, once.
          if (limit.charge && !limit.reading) {
            const charge = limit.charge;
            limit.charge = undefined;
            if (seen <= limit.maxBytes) charge(seen);
          }
          return r;
        }
        seen += r.value.length;
        if (limit.checkSize && seen > limit.maxBytes) limit.refuse();
        const refused = seen <= limit.maxBytes ? limit.share.take(r.value.length) : undefined;
        if (refused) throw refused;
        return r;
      }),
    return: (value?: unknown) => chunks.return?.(value) ?? Promise.resolve({ done: true as const, value: undefined }),
    [Symbol.asyncIterator]: () => counted,
  };
  const reading = limit?.reading;
  if (!reading) return counted;
  if (reading.flagsOnly) return flagsChecked(counted, reading.web);
  return reading.framed ? firstMessages(counted, limit!, reading) : wholeBody(counted, limit!, reading);
}

/**
 * Connect: the body read whole and given as one chunk, inflated first when compressed (its
 * coding dropped; see chargeBody), and a binary one checked for wire types. A plain iterator,
 * as countedChunks is: every binary body comes this way.
 */
function wholeBody(wire: AsyncIterableIterator<Buffer>, limit: BodyLimit, { coding, binary }: Reading): AsyncIterableIterator<Buffer> {
  let read = false;
  const finished = { done: true as const, value: undefined };
  const all = async (): Promise<IteratorResult<Buffer>> => {
    const parts: Buffer[] = [];
    let size = 0;
    try {
      for (let r = await wire.next(); !r.done; r = await wire.next()) {
        size += r.value.length;
        if (size > limit.maxBytes) throw new ConnectError(`message size is larger than configured readMaxBytes ${limit.maxBytes}`, Code.ResourceExhausted);
        parts.push(r.value);
      }
    } catch (err) {
      await wire.return?.();
      throw err;
    }
    const whole = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
    const body = coding ? await inflatedHeld(coding, whole, limit) : whole;
    limit.charge?.(Math.max(size, body.length));
    if (body.length === 0) return finished;
    return { done: false, value: binary ? withoutMismatchedWireTypes(binary, body) : body };
  };
  const it: AsyncIterableIterator<Buffer> = {
    next: () => {
      if (read) return Promise.resolve(finished);
      read = true;
      return all();
    },
    return: async () => {
      read = true;
      await wire.return?.();
      return finished;
    },
    [Symbol.asyncIterator]: () => it,
  };
  return it;
}

/**
 * gRPC and gRPC-Web: the messages connect-node parses, each charged as it is handed over, and
 * inflated here first when compressed (their flag cleared). Every method here is unary:
 * connect-node parses a first message and, if there is one, a second, which it then refuses.
 * gRPC-Web frames with the trailer flag are skipped by connect-node (after inflating them, which
 * it no longer gets to do: their compressed flag is cleared, so none is inflated here or
 * there); they are charged as they came, since connect-node splits each off. Frames after
 * the second message pass as they come with only their compressed flags cleared: nothing
 * reads them, and a 30-byte brotli frame inflates to 1 MiB. A message announced over the
 * size limit, or cut short, passes as it came, for connect-node to refuse as it would have.
 */
async function* firstMessages(wire: AsyncIterableIterator<Buffer>, limit: BodyLimit, reading: Reading): AsyncGenerator<Buffer> {
  // What has come of the frames being read. Chunks wait in `more` and are joined only once
  // enough has come for the prefix, then for the whole message: joined at every chunk, a body
  // sent in tiny chunks would be copied over and over.
  let pending: Buffer = Buffer.alloc(0);
  const more: Buffer[] = [];
  let size = 0;
  const join = () => {
    if (more.length > 0) pending = Buffer.concat([pending, ...more.splice(0)], size);
  };
  // Where in `pending` the frame lengths checked so far end (see framesEnd): each is checked once.
  let checked = 0;
  let trailerBytes = 0;
  const advance = (by: number) => {
    pending = pending.subarray(by);
    size = pending.length;
    checked = Math.max(0, checked - by);
  };
  try {
    for (let messages = 0; messages < 2; ) {
      let ended = false;
      let need = 5;
      for (;;) {
        if (need === 5 && size >= 5) {
          join();
          const length = pending.readUInt32BE(1);
          if (length <= limit.maxBytes) need = 5 + length;
        }
        if (size >= need) break;
        const r = await wire.next();
        if (r.done) {
          ended = true;
          break;
        }
        more.push(r.value);
        size += r.value.length;
      }
      join();
      if (size >= 5) checked = framesEnd(pending, checked, limit.maxBytes);
      if (size < 5 || checked < 0 || size < 5 + pending.readUInt32BE(1)) {
        // Cut short, or a length over the limit (connect-node checks the length of every frame
        // in a chunk before it reads any of them): passed as it came, and connect-node reads no
        // further than the length it refuses.
        if (pending.length > 0) yield pending;
        if (!ended) for (let r = await wire.next(); !r.done; r = await wire.next()) yield r.value;
        return;
      }
      if (reading.web && pending[0]! & 0x80) {
        // Trailer frames, which connect-node splits off and skips: every whole one here passes
        // at once, never inflated (their compressed flag cleared), charged as they came.
        let at = 0;
        for (; at + 5 <= size && pending[at]! & 0x80 && at + 5 + pending.readUInt32BE(at + 1) <= size; at += 5 + pending.readUInt32BE(at + 1)) {
          if (reading.coding) pending[at] = pending[at]! & ~1;
        }
        // No message among them: a body of trailer frames alone must not pass the size limit.
        trailerBytes += at;
        if (trailerBytes > limit.maxBytes) {
          limit.refuse();
          throw new ConnectError(`message size is larger than configured readMaxBytes ${limit.maxBytes}`, Code.ResourceExhausted);
        }
        limit.charge?.(at);
        yield pending.subarray(0, at);
        advance(at);
        continue;
      }
      const end = 5 + pending.readUInt32BE(1);
      const flags = pending[0]!;
      // A message frame's flags are 0, or 1 when compressed (gRPC-Web's trailer bit is handled
      // above): any other bit is no message gRPC defines, and is not read as one.
      if (flags > 1) throw undefinedFlags(flags);
      let message: Buffer = pending.subarray(5, end);
      if (flags & 1 && reading.coding) message = await inflatedHeld(reading.coding, message, limit);
      limit.charge?.(Math.max(end - 5, message.length));
      // (A message still compressed is connect-node's to inflate, and goes unchecked.)
      if (reading.binary && !(flags & 1 && !reading.coding)) message = withoutMismatchedWireTypes(reading.binary, message);
      messages++;
      const prefix = Buffer.alloc(5);
      prefix[0] = reading.coding ? flags & ~1 : flags;
      prefix.writeUInt32BE(message.length, 1);
      yield Buffer.concat([prefix, message]);
      advance(end);
    }
    const flags = new FrameFlags((f) => f & ~1);
    if (pending.length > 0) yield flags.pass(Buffer.from(pending));
    for (let r = await wire.next(); !r.done; r = await wire.next()) yield flags.pass(r.value);
  } finally {
    await wire.return?.();
  }
}

/**
 * Walks the frame prefixes of `data` from `at` (a frame's start) to the first one not wholly
 * there: where that is, or -1 if a prefix on the way announces a message over `maxBytes`.
 */
function framesEnd(data: Buffer, at: number, maxBytes: number): number {
  for (; at + 5 <= data.length; at += 5 + data.readUInt32BE(at + 1)) if (data.readUInt32BE(at + 1) > maxBytes) return -1;
  return at;
}

const undefinedFlags = (flags: number) =>
  new ConnectError(`request could not be decoded: a message frame's flags are 0x${flags.toString(16)}, where gRPC defines only 0, and 1 for a compressed message`, Code.InvalidArgument);

/**
 * The frames of a call without a token (health, reflection), passed as they come once each
 * frame's flags are known to be ones gRPC defines: 0 or 1 (compressed), and for gRPC-Web the
 * trailer bit besides. connect-node would read any other as a message.
 */
async function* flagsChecked(wire: AsyncIterableIterator<Buffer>, web: boolean): AsyncGenerator<Buffer> {
  const allowed = web ? 0x81 : 0x01;
  const frames = new FrameFlags((flags) => {
    if ((flags & ~allowed) !== 0) throw undefinedFlags(flags);
    return flags;
  });
  try {
    for (let r = await wire.next(); !r.done; r = await wire.next()) yield frames.pass(r.value);
  } finally {
    await wire.return?.();
  }
}

/** Sets each gRPC frame's flag byte to what `each` makes of it (or throws), in a stream of chunks, whatever their bounds. */
class FrameFlags {
  /** How much of the current frame's 5-byte prefix has passed, and of its message is still to pass. */
  private prefixAt = 0;
  private readonly header = Buffer.alloc(5);
  private messageLeft = 0;

  constructor(private readonly each: (flags: number) => number) {}

  pass(chunk: Buffer): Buffer {
    for (let i = 0; i < chunk.length; ) {
      if (this.messageLeft > 0) {
        const n = Math.min(this.messageLeft, chunk.length - i);
        this.messageLeft -= n;
        i += n;
        continue;
      }
      if (this.prefixAt === 0) chunk[i] = this.each(chunk[i]!);
      this.header[this.prefixAt++] = chunk[i++]!;
      if (this.prefixAt === 5) {
        this.messageLeft = this.header.readUInt32BE(1);
        this.prefixAt = 0;
      }
    }
    return chunk;
  }
}

/** `data` inflated, and held in the budget. */
async function inflatedHeld(name: string, data: Buffer, limit: BodyLimit): Promise<Buffer> {
  let out: Buffer;
  try {
    out = await inflate(name, data, limit.maxBytes);
  } catch (err) {
    // Charged for what came out before it failed (up to the size limit, for a body that
    // inflates past it or breaks at its very end): uncharged, a token could have 27 bytes
    // inflated to 1 MiB over and over, never counted against its byte limit.
    limit.charge?.(Math.max(data.length, (err as Partial<InflateFailure>).inflated ?? 0));
    throw err;
  }
  const refused = out !== data ? limit.share.take(out.length) : undefined;
  if (refused) throw refused;
  return out;
}

/** One chunk, then the end: the body connect-node reads for a request answered without its own. */
function standInChunks(chunk: Buffer): AsyncIterableIterator<Buffer> {
  let given = false;
  const it: AsyncIterableIterator<Buffer> = {
    next: () => {
      if (given || chunk.length === 0) return Promise.resolve({ done: true as const, value: undefined });
      given = true;
      return Promise.resolve({ done: false as const, value: chunk });
    },
    return: () => Promise.resolve({ done: true as const, value: undefined }),
    [Symbol.asyncIterator]: () => it,
  };
  return it;
}

/**
 * Lets a request be answered without its body being read: connect-node reads an empty
 * message in the request's own format instead (gRPC and gRPC-Web an empty uncompressed
 * frame, Connect JSON `{}`, Connect binary nothing), and the body itself is thrown away
 * as it arrives, never held, decompressed or parsed: up to the size limit, past which the
 * connection closes after the answer (HTTP/1.1, see limitBody) or gets GOAWAY (HTTP/2, see
 * endUnreadRequest). For calls refused before their body (see server.ts); call it before
 * connect-node sees the request.
 */
export function withoutBody(req: http.IncomingMessage | http2.Http2ServerRequest): void {
  const limit = (req as Http1Request | Http2Request).bodyLimit;
  if (!limit) return;
  const type = (req.headers["content-type"] ?? "").toLowerCase();
  limit.standIn = type.startsWith("application/grpc") ? EMPTY_FRAME : type.startsWith("application/json") ? EMPTY_JSON : EMPTY;
  // The stand-in is not compressed (a gRPC frame says so itself, in its flag byte), and
  // connect-node checks a body against its announced length.
  delete req.headers["content-encoding"];
  if (req.headers["content-length"] !== undefined) req.headers["content-length"] = String(limit.standIn.length);
  limit.discard();
}

/**
 * For a call admitted with a token, before connect-node sees it: what connect-node parses of
 * its body is charged to `charge` as it is about to parse it (the Connect protocol's body once
 * it has all come, each gRPC message once its frame has), which throws to refuse the call;
 * and a compressed body is inflated here (see inflate.ts) and charged for what it inflates to.
 * Charged on arrival instead, bodies paid for slowly side by side could all be parsed at once.
 */
export function chargeBody(req: http.IncomingMessage | http2.Http2ServerRequest, charge: ((bytes: number) => void) | null, holder: string, input?: DescMessage): void {
  const limit = (req as Http1Request | Http2Request).bodyLimit;
  if (!limit || limit.standIn) return;
  limit.share.holdFor(holder);
  if (charge) {
    // Each charge adds what the pieces that came so far cost beyond their bytes (see notePiece).
    let piecesCharged = 0;
    limit.charge = (bytes) => {
      const extra = Math.max(0, limit.pieces * PIECE_CHARGE_BYTES - limit.pieceBytes - piecesCharged);
      piecesCharged += extra;
      charge(bytes + extra);
    };
  }
  const type = (req.headers["content-type"] ?? "").toLowerCase();
  const framed = type.startsWith("application/grpc");
  const coding = codingOf(req.headers, type, framed);
  // Bodies reach connect-node here in as few chunks as they can: its readers are quadratic in
  // the chunks of one message (the gRPC one sums all it holds at each new chunk, the Connect
  // one takes them off an array from the front), and 60 KB sent as one-byte chunks held the
  // event loop for 3 s. A gRPC message is handed over whole, and so is a Connect body no
  // Content-Length gave the size of (with one, connect-node copies each chunk into place).
  // Binary messages (gRPC's are, JSON codecs being refused earlier) are read whole here anyway
  // to check their wire types; a Connect body in a coding not inflated here is left as it is,
  // for connect-node to refuse (`unimplemented`) with its headers as they came.
  const encoding = req.headers["content-encoding"];
  const plainOrOurs = coding !== undefined || encoding === undefined || encoding === "identity";
  const binary = framed || (type.startsWith("application/proto") && plainOrOurs) ? input : undefined;
  if (framed) {
    limit.reading = { framed, web: type.startsWith("application/grpc-web"), coding, binary };
    return;
  }
  const announced = req.headers["content-length"];
  // connect-node refuses a Connect body announced over the limit before reading it.
  if ((!coding && !binary && announced !== undefined) || Number(announced ?? 0) > limit.maxBytes) return;
  limit.reading = { framed, web: false, coding, binary };
  if (!coding && !binary) return;
  // What connect-node reads is the inflated body, or one without fields of wrong wire types:
  // uncompressed, of a length no header gave.
  // Set to undefined rather than deleted, which would turn the headers object into a slow
  // dictionary for everything that reads it later (connect-node skips undefined headers).
  req.headers["content-encoding"] = undefined;
  req.headers["content-length"] = undefined;
}

/**
 * A gRPC or gRPC-Web call that takes no token (health, reflection; see chargeBody for the
 * others): its frames reach connect-node only with flags gRPC defines.
 */
export function checkFrameFlags(req: http.IncomingMessage | http2.Http2ServerRequest): void {
  const limit = (req as Http1Request | Http2Request).bodyLimit;
  const type = (req.headers["content-type"] ?? "").toLowerCase();
  if (!limit || limit.standIn || limit.reading || !type.startsWith("application/grpc")) return;
  limit.reading = { framed: true, web: type.startsWith("application/grpc-web"), coding: undefined, flagsOnly: true };
}

const EMPTY_FRAME = Buffer.alloc(5);
const EMPTY_JSON = Buffer.from("{}");
const EMPTY = Buffer.alloc(0);

// The request classes the servers make: the body's iterator is a method of the class, set
// up per request through a field every instance has, because an iterator assigned to each
// request object gave every one a shape of its own (the no-op baseline's CPU per Get rose by
// a tenth), and node's HTTP code then ran on requests of many shapes.
// node hands each piece of a body to push(), which counts it (see notePiece).
export class Http1Request extends http.IncomingMessage {
  bodyLimit: BodyLimit | null = null;
  override [Symbol.asyncIterator](): AsyncIterableIterator<any> {
    return countedChunks(this, this.bodyLimit);
  }
  override push(chunk: any, encoding?: BufferEncoding): boolean {
    if (chunk !== null && this.bodyLimit !== null) notePiece(this.bodyLimit, chunk.length);
    return super.push(chunk, encoding);
  }
}

export class Http2Request extends http2.Http2ServerRequest {
  bodyLimit: BodyLimit | null = null;
  override [Symbol.asyncIterator](): AsyncIterableIterator<any> {
    return countedChunks(this, this.bodyLimit);
  }
  override push(chunk: any, encoding?: BufferEncoding): boolean {
    if (chunk !== null && this.bodyLimit !== null) notePiece(this.bodyLimit, chunk.length);
    return super.push(chunk, encoding);
  }
}

/** How long the rest of a body is read after its answer went out (HTTP/1.1; see limitBody). */
const DISCARD_GRACE_MS = 2000;

/** Requests larger than this are refused before they are read in full (here and in connect-node). */
export const MAX_REQUEST_BYTES = 1024 * 1024;

/** The most request-body bytes all requests in flight may hold at once (see BodyBudget). */
export const MAX_BUFFERED_BYTES = 32 * 1024 * 1024;

/**
 * The most of MAX_BUFFERED_BYTES the calls of one organization may hold at once, its API
 * tokens' and its runners' together: a quarter, so that one organization's calls, however
 * many tokens or runners it mints, cannot keep every other organization's refused.
 */
export const MAX_HELD_BYTES_PER_ORG = MAX_BUFFERED_BYTES / 4;

/**
 * The same for the calls anyone may make without a token (health checks, reflection), which
 * hold a budget of their own: 32 reflection streams asking all they may, or a thousand health
 * checks. Within the shared one, a dozen connections of held-open reflection streams kept
 * every call with a token refused.
 */
export const MAX_OPEN_BUFFERED_BYTES = 1024 * 1024;

/**
 * What a request of those may hold without counting: a health check (a service name) and a
 * tool's first reflection questions, so that reflection streams filling that budget cannot
 * keep the health checks an orchestrator relies on refused. Held open, such requests cost the
 * process far more in objects of node's than in these bytes.
 */
export const OPEN_FREE_BYTES = 256;

/**
 * What request bodies hold in memory, all requests together. connect-node reads a whole
 * body before any interceptor runs; the token is checked before that (server.ts), but a
 * client with a token could still keep 1 MiB on each of 100 streams of as many connections
 * as it likes, for the whole request timeout. Each chunk is taken from the budget as it is
 * read, and all of a request's is given back once it is answered (or its connection gone).
 * What is counted is what arrived, not what a request announces: announcing costs a client
 * nothing, so a few headers could otherwise hold the whole budget.
 */
export class BodyBudget {
  private bytes = 0;
  /** Bytes held by each holder that holds any (see holdFor). */
  private readonly byHolder = new Map<string, number>();
  constructor(
    private readonly max: number,
    private readonly perHolder = max,
  ) {}

  /** Bytes held now; only requests change it, through forRequest. */
  get held(): number {
    return this.bytes;
  }

  /** A request's share; its first `free` bytes are not counted (see OPEN_FREE_BYTES). */
  forRequest(free = 0): BodyShare {
    let taken = 0;
    let released = false;
    let freeLeft = free;
    let holder: string | undefined;
    const hold = (key: string, by: number) => {
      const now = (this.byHolder.get(key) ?? 0) + by;
      if (now > 0) this.byHolder.set(key, now);
      else this.byHolder.delete(key);
    };
    return {
      // Nothing once released: a body still being read (or inflated) when its call was
      // answered or cancelled would otherwise hold what nothing will give back.
      take: (given) => {
        if (released) return busy();
        const bytes = given - Math.min(freeLeft, given);
        if (this.bytes + bytes > this.max) return busy();
        if (holder !== undefined && (this.byHolder.get(holder) ?? 0) + bytes > this.perHolder) return holderBusy(this.perHolder);
        freeLeft -= given - bytes;
        this.bytes += bytes;
        taken += bytes;
        if (holder !== undefined) hold(holder, bytes);
        return undefined;
      },
      holdFor: (key) => {
        if (released || holder !== undefined) return;
        holder = key;
        hold(key, taken);
      },
      release: () => {
        released = true;
        this.bytes -= taken;
        if (holder !== undefined) hold(holder, -taken);
        taken = 0;
      },
    };
  }
}

/** One request's part of a BodyBudget. */
export interface BodyShare {
  /** Takes `bytes` as they are read: undefined, or the error to refuse the body with. */
  take(bytes: number): ConnectError | undefined;
  /** Counts what the request holds, from now on and so far, against `holder`'s part as well (once its caller is known). */
  holdFor(holder: string): void;
  /** Gives back all it holds, for good. */
  release(): void;
}

/** Thrown from the body a request is read through when the budget is spent; connect-node answers it in the call's protocol. */
const busy = () => new ConnectError("the server holds as many request bodies as it takes; retry shortly", Code.Unavailable);

/** The same when one organization's calls hold all the budget one organization may (see MAX_HELD_BYTES_PER_ORG). */
const holderBusy = (max: number) =>
  new ConnectError(`this organization's calls hold as many request bodies at once as one organization may (${max / (1024 * 1024)} MiB); retry once some are answered`, Code.ResourceExhausted);

/**
 * Enforces the body limit at the connection, where connect-node cannot:
 * - a body announced (Content-Length) or found (counted while read) to be over the limit
 *   is answered by connect-node's `resource_exhausted`, to which this adds
 *   `x-should-retry: false` (resending it cannot help) and, on HTTP/1.1, `connection: close`
 *   so that node does not read the rest of the body just to reuse the connection (what the
 *   client still sends is read and dropped for a while only: see linger.ts);
 * - every chunk read is taken from the body budget (`take`; see BodyBudget);
 * - any answer sent before the request was received in full reads the rest of the body and
 *   throws it away (`discard`, and endUnreadRequest on HTTP/2), so the connection serves on;
 *   a body over the limit closes the connection after the answer (HTTP/1.1) or gets it
 *   GOAWAY (HTTP/2).
 */
export function limitBody(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse, maxBytes: number, share: BodyShare): void {
  const isH2 = "stream" in req;
  let refused = false;
  const refuse = () => {
    if (refused || res.headersSent) return;
    refused = true;
    res.setHeader("x-should-retry", "false");
    if (!isH2) res.setHeader("connection", "close");
  };
  const declared = req.headers["content-length"];
  // Node checks that a body matches its Content-Length, so a declared one needs no counting
  // for the size limit. gRPC over HTTP/2 never sends a length: past the limit connect-node
  // refuses the body, what follows the answer is read on to the limit and then the connection
  // gets GOAWAY (see endUnreadRequest), and gRPC clients do not read x-should-retry, so only
  // the budget counts there.
  if (declared !== undefined && Number(declared) > maxBytes) refuse();
  const checkSize = declared === undefined && (!isH2 || !(req.headers["content-type"] ?? "").startsWith("application/grpc"));
  let discarding = false;
  const discard = () => {
    // HTTP/2 has endUnreadRequest, which does the same for a stream once it is answered.
    if (isH2 || discarding || (req as http.IncomingMessage).complete) return;
    discarding = true;
    // Only for a client finishing an upload already under way: one still sending a while after
    // its answer is cut off, before node's request timeout would write a 408 after that answer.
    const giveUp = () => {
      const timer = setTimeout(() => {
        if (!(req as http.IncomingMessage).complete) req.socket?.destroy();
      }, DISCARD_GRACE_MS);
      timer.unref();
      req.once("end", () => clearTimeout(timer));
    };
    if (res.writableFinished) giveUp();
    else res.once("finish", giveUp);
    throwAway(req, maxBytes, () => {
      // No more than a body may hold: the connection closes once the answer is out.
      refuse();
      if (res.headersSent && req.socket) {
        const socket = req.socket;
        if (res.writableFinished) closeLingering(socket);
        else res.once("finish", () => closeLingering(socket));
      }
    });
  };
  // The servers make every request an Http1Request or Http2Request (see countedChunks).
  (req as Http1Request | Http2Request).bodyLimit = { maxBytes, checkSize, refuse, share, discard, pieces: 0, pieceBytes: 0, choppy: false };
  if (isH2) {
    // The stream's own "finish" (the response's comes only once the stream has closed).
    (req as http2.Http2ServerRequest).stream.once("finish", () => endUnreadRequest(req as http2.Http2ServerRequest, maxBytes));
  } else {
    // node reads an unread body to its end before it reuses the connection. That is fine for
    // a few bytes still in flight (a handler may answer before node has parsed them). A body
    // of unknown or large size is read on only up to the size limit (discard), so that a
    // client still sending it (connect-es sends every body chunked) gets the answer rather
    // than a closed connection; one already over the limit closes the connection instead.
    const largeOrUnknown = req.headers["transfer-encoding"] !== undefined || Number(declared ?? 0) > 64 * 1024;
    // Most requests are small and sized: they keep the plain writeHead (this runs per request).
    if (!largeOrUnknown) return;
    const h1res = res as http.ServerResponse;
    const writeHead = h1res.writeHead;
    h1res.writeHead = function (this: http.ServerResponse, ...args: Parameters<typeof writeHead>) {
      if (!(req as http.IncomingMessage).complete) {
        if (refused) this.setHeader("connection", "close");
        else discard();
      }
      return writeHead.apply(this, args);
    } as typeof writeHead;
  }
}

/**
 * Ends a stream whose answer is complete while its request was not read to the end: what
 * is left of the request is read and thrown away, up to the size limit, so that the client
 * finishes sending and the stream closes as usual. node frees a stream only once its
 * readable side has ended, so an abandoned request would otherwise hold its stream, its
 * slot of maxConcurrentStreams and its buffered data for as long as the connection lives.
 *
 * The stream is not reset while its client may still be sending: node counts the data
 * that arrives for a stream after it was reset against the connection's memory and never
 * gives it back, and once about 10 MB have added up it refuses every new stream of the
 * connection with ENHANCE_YOUR_CALM, for good. A client that sends more than the limit
 * after its answer gets GOAWAY instead (its calls in flight finish; new ones take a new
 * connection), and then the stream is reset.
 */
function endUnreadRequest(req: http2.Http2ServerRequest, maxBytes: number): void {
  const stream = req.stream;
  if (stream.destroyed || req.readableEnded) return;
  // A request given up on (timed out, see limitStreamTime) reads nothing more.
  if (req.destroyed) return resetOnceAnswered(stream);
  // The request, not its stream: node's compatibility layer pauses the stream again
  // whenever the request it feeds is full.
  throwAway(req, maxBytes, () => {
    // A choppy body only has its stream reset: a GOAWAY refused the client's next stream,
    // opened as the answer went out, and connect-node does not retry those.
    if (!(req as Http2Request).bodyLimit?.choppy) stream.session?.close();
    resetOnceAnswered(stream);
  });
}

/**
 * Reads what is left of a request body and throws it away, until its end or until more than
 * `maxBytes` have come or it proves choppy (see notePiece), when it stops reading and calls
 * `tooMuch`. It reads in paused mode ("readable" and read()), not with a "data" listener:
 * when connect-node stops reading part-way (at a unary call's second message, say), the async
 * iterator it read through keeps its "readable" listener, and while one is attached a "data" listener or resume() never
 * starts the flow. The client then waited for the body to be taken: over HTTP/2 for
 * flow-control credit until the stream timed out, over HTTP/1.1 until the connection was cut
 * under the next call on it.
 */
function throwAway(req: Readable, maxBytes: number, tooMuch: () => void): void {
  let seen = 0;
  const limit = (req as Http1Request | Http2Request).bodyLimit;
  const drain = () => {
    for (let chunk: Buffer | null; (chunk = req.read() as Buffer | null) !== null; ) {
      seen += chunk.length;
      if (seen <= maxBytes && !limit?.choppy) continue;
      req.off("readable", drain);
      tooMuch();
      return;
    }
  };
  req.on("readable", drain);
  drain();
}

/**
 * Resets a stream with NO_ERROR once its answer has left (the stream is half-closed on our
 * side; a reset sent earlier could overtake the answer's last frames), so the client stops
 * sending (RFC 9113, 8.1).
 */
function resetOnceAnswered(stream: http2.ServerHttp2Stream, attempts = 100): void {
  if (stream.destroyed || stream.closed) return;
  const state = stream.state.state;
  if (state === NGHTTP2_STREAM_STATE_OPEN && attempts > 0) {
    setTimeout(() => resetOnceAnswered(stream, attempts - 1), 10).unref();
    return;
  }
  if (state === NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL) stream.close(NGHTTP2_NO_ERROR);
}
