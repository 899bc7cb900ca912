import { readFileSync } from "node:fs";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { AddressInfo } from "node:net";
import type { Readable } from "node:stream";
import { codingOf, inflateBody, type Coding } from "./inflate.js";

export type NodeHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/**
 * Whether a client error is final. connect-node answers some requests itself, before any
 * interceptor runs (undecodable JSON, a deadline over the limit, a wrong content type),
 * without `x-should-retry`; the official SDK reads that header before the status. Every
 * 4xx but a timeout (408) and a rate limit (429) gets it here, once per response, unless
 * the answer already says.
 */
function markFinal(res: { hasHeader(name: string): boolean; setHeader(name: string, value: string): unknown }, status: number): void {
  if (status >= 400 && status < 500 && status !== 408 && status !== 429 && !res.hasHeader("x-should-retry")) {
    res.setHeader("x-should-retry", "false");
  }
}

class Http1Response extends http.ServerResponse<Http1Request> {
  override writeHead(status: number, ...rest: any[]): this {
    if (!this.headersSent) markFinal(this, status);
    return super.writeHead(status, ...rest);
  }
}

class Http2Response extends http2.Http2ServerResponse<Http2Request> {
  override writeHead(status: number, ...rest: any[]): this {
    if (!this.headersSent) markFinal(this, status);
    return (super.writeHead as (...args: unknown[]) => this)(status, ...rest);
  }
}

/** What limitBody set for one request's body: the size limit and its share of the budget. */
interface BodyLimit {
  maxBytes: number;
  /** Whether the size limit is counted here (not when node or connect-node enforce it). */
  checkSize: boolean;
  /** Marks the answer as final once the body passed the size limit. */
  refuse(): void;
  take(bytes: number): boolean;
  /** What connect-node reads instead of the body, once the request is answered without it (see withoutBody). */
  standIn?: Buffer;
  /** Reads what is left of the body and throws it away (HTTP/1.1; see limitBody). */
  discard(): void;
  /** Charges each byte read (of a compressed body, what it inflates to) to the caller (see chargeBody). */
  charge?: ((bytes: number) => void) | undefined;
  /** The body's coding, when it is inflated here (see inflate.ts). */
  coding?: Coding | undefined;
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
        if (r.done || limit === null) return r;
        seen += r.value.length;
        if (limit.checkSize && seen > limit.maxBytes) limit.refuse();
        limit.charge?.(r.value.length);
        if (seen <= limit.maxBytes && !limit.take(r.value.length)) throw busy();
        return r;
      }),
    return: (value?: unknown) => chunks.return?.(value) ?? Promise.resolve({ done: true as const, value: undefined }),
    [Symbol.asyncIterator]: () => counted,
  };
  return limit?.coding ? inflatedChunks(counted, limit, limit.coding) : counted;
}

/**
 * A compressed body read whole from `wire`, then inflated (see inflate.ts) and given as one
 * chunk. What it inflates to beyond what was sent is charged as well, and held in the budget.
 */
function inflatedChunks(wire: AsyncIterableIterator<Buffer>, limit: BodyLimit, coding: Coding): AsyncIterableIterator<Buffer> {
  let read = false;
  const readWhole = async (): Promise<IteratorResult<Buffer>> => {
    const parts: Buffer[] = [];
    let size = 0;
    for (let r = await wire.next(); !r.done; r = await wire.next()) {
      size += r.value.length;
      if (size > limit.maxBytes) {
        limit.refuse();
        throw new ConnectError(`message size is larger than configured readMaxBytes ${limit.maxBytes}`, Code.ResourceExhausted);
      }
      parts.push(r.value);
    }
    const sent = Buffer.concat(parts, size);
    const body = await inflateBody(coding, sent, limit.maxBytes);
    if (body !== sent) {
      if (body.length > size) limit.charge?.(body.length - size);
      if (!limit.take(body.length)) throw busy();
    }
    return body.length === 0 ? { done: true, value: undefined } : { done: false, value: body };
  };
  const it: AsyncIterableIterator<Buffer> = {
    next: () => {
      if (read) return Promise.resolve({ done: true as const, value: undefined });
      read = true;
      return readWhole();
    },
    return: (value?: unknown) => wire.return?.(value) ?? Promise.resolve({ done: true as const, value: undefined }),
    [Symbol.asyncIterator]: () => it,
  };
  return it;
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
 * For a call admitted with a token, before connect-node sees it: each byte of its body is
 * charged to `charge` as it is read, and a compressed body is inflated here (see inflate.ts)
 * and charged for what it inflates to, before anything parses it. A body announced over the
 * size limit is left to connect-node, which refuses it unread.
 */
export function chargeBody(req: http.IncomingMessage | http2.Http2ServerRequest, charge: ((bytes: number) => void) | null): void {
  const limit = (req as Http1Request | Http2Request).bodyLimit;
  if (!limit || limit.standIn) return;
  if (charge) limit.charge = charge;
  const coding = codingOf(req.headers);
  if (!coding || Number(req.headers["content-length"] ?? 0) > limit.maxBytes) return;
  limit.coding = coding;
  // What connect-node reads is the inflated body: uncompressed, of a length no header gave.
  if (!coding.framed) {
    delete req.headers["content-encoding"];
    delete req.headers["content-length"];
  }
}

const EMPTY_FRAME = Buffer.alloc(5);
const EMPTY_JSON = Buffer.from("{}");
const EMPTY = Buffer.alloc(0);

// The request classes the servers make: the body's iterator is a method of the class, set
// up per request through a field every instance has, because an iterator assigned to each
// request object gave every one a shape of its own (the no-op baseline's CPU per Get rose by
// a tenth), and node's HTTP code then ran on requests of many shapes.
class Http1Request extends http.IncomingMessage {
  bodyLimit: BodyLimit | null = null;
  override [Symbol.asyncIterator](): AsyncIterableIterator<any> {
    return countedChunks(this, this.bodyLimit);
  }
}

class Http2Request extends http2.Http2ServerRequest {
  bodyLimit: BodyLimit | null = null;
  override [Symbol.asyncIterator](): AsyncIterableIterator<any> {
    return countedChunks(this, this.bodyLimit);
  }
}

/** How long the rest of a body is read after its answer went out (HTTP/1.1; see limitBody). */
const DISCARD_GRACE_MS = 2000;

/** Requests larger than this are refused before they are read in full (here and in connect-node). */
export const MAX_REQUEST_BYTES = 1024 * 1024;

/** The most request-body bytes all requests in flight may hold at once (see BodyBudget). */
const MAX_BUFFERED_BYTES = 32 * 1024 * 1024;

export interface HttpServerOptions {
  tls?: { certFile: string; keyFile: string } | undefined;
  /** Concurrent HTTP/2 streams per connection; more are refused with REFUSED_STREAM. */
  maxConcurrentStreams?: number;
  /** The largest request body; a larger one is refused without being read. */
  maxRequestBytes?: number;
  /** The most body bytes all requests in flight may hold at once; past it new ones are refused as busy. */
  maxBufferedBytes?: number;
  /**
   * How long a client may take to send a request's headers (HTTP/1.1), or to open its first
   * stream (HTTP/2), counted from the moment it connected.
   */
  headersTimeoutMs?: number;
  /** How long a client may take to send a whole request, headers and body (HTTP/1.1 and each HTTP/2 stream). */
  requestTimeoutMs?: number;
  /** An HTTP/2 connection with no frame in either direction for this long is closed. */
  idleTimeoutMs?: number;
}

/** Slow clients get these unless told otherwise (HEADERS_TIMEOUT_MS, REQUEST_TIMEOUT_MS, IDLE_TIMEOUT_MS). */
const DEFAULT_TIMEOUTS = { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, idleTimeoutMs: 120_000 } as const;

export interface RunningServer {
  address: AddressInfo;
  /** How many requests are being served right now. */
  inFlight(): number;
  /** Bytes of request bodies held right now, counted against the body budget. */
  bodyBytesHeld(): number;
  /**
   * Stops accepting connections, lets in-flight requests finish for up to
   * `timeoutMs`, then closes every connection that is left.
   */
  shutdown(timeoutMs: number): Promise<void>;
}

// Every HTTP/2 connection without TLS starts with this preface (RFC 9113, 3.4).
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const { NGHTTP2_NO_ERROR, NGHTTP2_STREAM_STATE_OPEN, NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL } = http2.constants;

/** The header list an HTTP/2 request may send, as HTTP/1.1 headers may take (node's 16 KiB). */
const MAX_HEADER_LIST_BYTES = 16 * 1024;

/**
 * Refuses an HTTP/2 stream whose header list is over MAX_HEADER_LIST_BYTES, as nghttp2 does
 * (ENHANCE_YOUR_CALM), and says whether it did. nghttp2 holds a client to the size we
 * advertise only once the client has acknowledged our SETTINGS: a request sent before that
 * (curl's first one, or any from a client that never acknowledges) would be held to 64 KiB.
 * Counted as the setting counts (RFC 9113, 6.5.2): name, value and 32 bytes a field.
 */
function headerListTooLarge(req: http2.Http2ServerRequest): boolean {
  const raw = req.rawHeaders;
  let bytes = 16 * raw.length; // 32 a field, two entries a field
  // node reads HTTP/2 header bytes as latin1: a string's length is its size on the wire.
  for (const s of raw) bytes += s.length;
  if (bytes <= MAX_HEADER_LIST_BYTES) return false;
  req.stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  return true;
}

/**
 * Serves `handler` on one port. Without TLS the first bytes of each connection decide
 * between HTTP/1.1 and cleartext HTTP/2 (prior knowledge, as gRPC clients use), so
 * curl, fetch and gRPC all reach the same address. With TLS, ALPN chooses.
 *
 * Slow or oversized clients are cut off here (see HttpServerOptions): request bodies over
 * `maxRequestBytes` are refused without being read, and connections that dawdle over their
 * headers or body are answered 408 (HTTP/1.1) or reset (HTTP/2 streams) and closed.
 */
export function listen(handler: NodeHandler, port: number, host: string, options: HttpServerOptions = {}): Promise<RunningServer> {
  // Header lists as large as HTTP/1.1 takes (node's 16 KiB), not nghttp2's 64 KiB.
  const settings = { maxConcurrentStreams: options.maxConcurrentStreams ?? 100, maxHeaderListSize: MAX_HEADER_LIST_BYTES };
  const maxRequestBytes = options.maxRequestBytes ?? MAX_REQUEST_BYTES;
  const budget = new BodyBudget(options.maxBufferedBytes ?? MAX_BUFFERED_BYTES);
  const headersTimeoutMs = options.headersTimeoutMs ?? DEFAULT_TIMEOUTS.headersTimeoutMs;
  // Node refuses a headers timeout longer than the request timeout.
  const requestTimeoutMs = Math.max(options.requestTimeoutMs ?? DEFAULT_TIMEOUTS.requestTimeoutMs, headersTimeoutMs);
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_TIMEOUTS.idleTimeoutMs;
  // Node looks for HTTP/1.1 connections past their deadline on this interval (30 s by default).
  const checkEveryMs = Math.max(25, Math.min(1000, Math.floor(headersTimeoutMs / 4)));
  // keepAliveTimeout is node's default, set for the HTTP/1.1 side of the TLS server, which has none.
  const h1Timeouts = { headersTimeout: headersTimeoutMs, requestTimeout: requestTimeoutMs, connectionsCheckingInterval: checkEveryMs, keepAliveTimeout: 5_000 };

  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  let inFlight = 0;
  let closing = false;
  // HTTP/1.1 sockets of the TLS server with a request being answered, which its idle timeout spares.
  const busy = new Map<net.Socket, number>();

  const counted: NodeHandler = (req, res) => {
    if ("stream" in req && headerListTooLarge(req)) return;
    inFlight++;
    const h1Socket = options.tls && !("stream" in req) ? req.socket : null;
    if (h1Socket) busy.set(h1Socket, (busy.get(h1Socket) ?? 0) + 1);
    const body = budget.forRequest();
    // A response closes when it is done or its connection goes, except on HTTP/1.1 a response
    // queued behind an unfinished one of the same connection (pipelining), which has no
    // socket yet: if the connection goes first, only the socket says so.
    const socket = "stream" in req || (res as http.ServerResponse).socket ? null : req.socket;
    const h1 = "stream" in req ? null : (req as Http1Request);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      inFlight--;
      if (h1Socket) {
        const left = busy.get(h1Socket)! - 1;
        if (left === 0) busy.delete(h1Socket);
        else busy.set(h1Socket, left);
      }
      body.release();
      socket?.off("close", finish);
      // An HTTP/1.1 answer that went out before its body had all come: node reads the rest
      // only of a body no one began to read, so when connect-node stopped part-way, read
      // past it here (limitBody's discard, with its grace) or the connection stalls.
      if (h1 && !h1.complete && (res as http.ServerResponse).writableFinished) h1.bodyLimit?.discard();
    };
    res.once("close", finish);
    socket?.once("close", finish);
    // During shutdown HTTP/1.1 clients are told not to reuse the connection.
    if (closing && req.httpVersionMajor === 1) (res as http.ServerResponse).setHeader("connection", "close");
    limitBody(req, res, maxRequestBytes, body.take);
    if ("stream" in req) limitStreamTime(req, res as http2.Http2ServerResponse, requestTimeoutMs);
    correctFrameworkErrors(req, res);
    handler(req, res);
  };

  // Expect: 100-continue. node would send "100 Continue" to every such request, also to one
  // whose announced length is already over the limit, which then starts sending it.
  const continueOrRefuse = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    if ("stream" in req && headerListTooLarge(req)) return;
    if (!(Number(req.headers["content-length"] ?? 0) > maxRequestBytes)) res.writeContinue();
    counted(req, res);
  };

  let server: net.Server;
  let h1: http.Server | undefined;
  if (options.tls) {
    const cert = readFileSync(options.tls.certFile);
    const key = readFileSync(options.tls.keyFile);
    requireKeyOfCertificate(cert, key);
    const secure = http2.createSecureServer(
      {
        cert,
        key,
        allowHTTP1: true,
        settings,
        handshakeTimeout: headersTimeoutMs,
        Http1IncomingMessage: Http1Request,
        Http1ServerResponse: Http1Response,
        Http2ServerRequest: Http2Request,
        Http2ServerResponse: Http2Response,
      },
      counted,
    );
    // The HTTP/1.1 side of a secure HTTP/2 server takes its HTTP/1.1 timeouts from here.
    Object.assign(secure, h1Timeouts);
    secure.setTimeout(idleTimeoutMs);
    // HTTP/2 sessions and, through allowHTTP1, HTTP/1.1 sockets time out here; a socket quiet
    // while its request is worked on is not idle (the plain HTTP/1.1 server has no such timeout).
    secure.on("timeout", (idle: http2.Http2Session | net.Socket) => {
      if (!(idle instanceof net.Socket)) closeIdleSession(idle);
      else if (!busy.has(idle)) idle.destroy();
    });
    secure.on("session", (s) => trackSession(s));
    secure.on("checkContinue", continueOrRefuse);
    server = secure;
  } else {
    h1 = http.createServer({ ...h1Timeouts, IncomingMessage: Http1Request, ServerResponse: Http1Response }, counted);
    const h2 = http2.createServer({ settings, Http2ServerRequest: Http2Request, Http2ServerResponse: Http2Response }, counted);
    h2.setTimeout(idleTimeoutMs);
    h2.on("timeout", closeIdleSession);
    h2.on("session", (s) => trackSession(s));
    h1.on("checkContinue", continueOrRefuse);
    h2.on("checkContinue", continueOrRefuse);
    server = net.createServer((socket) => {
      sniff(socket, headersTimeoutMs, (isH2) => (isH2 ? h2 : h1!).emit("connection", socket));
    });
  }
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  function trackSession(session: http2.Http2Session): void {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (closing) session.close();
    // A connection must get to its first request in the time one is given for headers.
    const firstStream = setTimeout(() => closeIdleSession(session), headersTimeoutMs);
    firstStream.unref();
    session.once("stream", () => clearTimeout(firstStream));
    session.once("close", () => clearTimeout(firstStream));
  }

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      // The HTTP/1.1 server only receives sockets handed over by the sniffer and never listens
      // itself; "listening" is what starts node's tracking of its connections, which the
      // headers and request timeouts and closeIdleConnections() rely on.
      h1?.emit("listening");
      resolve({
        address: server.address() as AddressInfo,
        inFlight: () => inFlight,
        bodyBytesHeld: () => budget.held,
        async shutdown(timeoutMs) {
          closing = true;
          server.close();
          // HTTP/2: GOAWAY, then the session closes once its streams are done.
          for (const s of sessions) s.close();
          const deadline = Date.now() + timeoutMs;
          while (inFlight > 0 && Date.now() < deadline) {
            h1?.closeIdleConnections();
            await new Promise((r) => setTimeout(r, 20));
          }
          // Stops the HTTP/1.1 connection checks and closes what is idle.
          h1?.close();
          for (const socket of sockets) socket.destroy();
        },
      });
    });
  });
}

/** Reads just enough of a new connection to tell the HTTP/2 preface apart, then puts it back. */
function sniff(socket: net.Socket, timeoutMs: number, route: (isH2: boolean) => void): void {
  let seen = Buffer.alloc(0);
  // A client that connects and then says too little to tell its protocol is not waited for.
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  timer.unref();
  const onData = (chunk: Buffer) => {
    seen = Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, H2_PREFACE.length);
    const matches = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && seen.length < H2_PREFACE.length) return; // need more bytes to be sure
    clearTimeout(timer);
    socket.off("data", onData);
    socket.pause();
    socket.unshift(seen);
    route(matches);
    // The HTTP/2 session reads the socket itself; HTTP/1.1 needs the stream flowing.
    if (!matches) socket.resume();
  };
  socket.on("data", onData);
  socket.once("close", () => clearTimeout(timer));
  socket.once("error", () => socket.destroy());
}

/** Asks an HTTP/2 connection to wind down (GOAWAY), and ends it if its streams do not finish soon. */
function closeIdleSession(session: http2.Http2Session): void {
  if (session.closed || session.destroyed) return;
  session.close();
  const hard = setTimeout(() => session.destroy(), 1000);
  hard.unref();
  session.once("close", () => clearTimeout(hard));
}

/**
 * What request bodies hold in memory, all requests together. connect-node reads a whole
 * body before any interceptor runs; the token is checked before that (server.ts), but a
 * client with a token could still keep 1 MiB on each of 100 streams of as many connections
 * as it likes, for the whole request timeout. Each chunk is taken from the budget as it is
 * read, and all of a request's is given back once it is answered (or its connection gone).
 * What is counted is what arrived, not what a request announces: announcing costs a client
 * nothing, so a few headers could otherwise hold the whole budget.
 */
class BodyBudget {
  private bytes = 0;
  constructor(private readonly max: number) {}

  /** Bytes held now; only requests change it, through forRequest. */
  get held(): number {
    return this.bytes;
  }

  forRequest(): { take(bytes: number): boolean; release(): void } {
    let taken = 0;
    return {
      take: (bytes) => {
        if (this.bytes + bytes > this.max) return false;
        this.bytes += bytes;
        taken += bytes;
        return true;
      },
      release: () => {
        this.bytes -= taken;
        taken = 0;
      },
    };
  }
}

/** Thrown from the body a request is read through when the budget is spent; connect-node answers it in the call's protocol. */
const busy = () => new ConnectError("the server holds as many request bodies as it takes; retry shortly", Code.Unavailable);

/**
 * Enforces the body limit at the connection, where connect-node cannot:
 * - a body announced (Content-Length) or found (counted while read) to be over the limit
 *   is answered by connect-node's `resource_exhausted`, to which this adds
 *   `x-should-retry: false` (resending it cannot help) and, on HTTP/1.1, `connection: close`
 *   so that node does not read the rest of the body just to reuse the connection;
 * - every chunk read is taken from the body budget (`take`; see BodyBudget);
 * - any answer sent before the request was received in full reads the rest of the body and
 *   throws it away (`discard`, and endUnreadRequest on HTTP/2), so the connection serves on;
 *   a body over the limit closes the connection after the answer (HTTP/1.1) or gets it
 *   GOAWAY (HTTP/2).
 */
function limitBody(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse, maxBytes: number, take: (bytes: number) => boolean): void {
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
      if (res.headersSent) {
        if (res.writableFinished) req.socket?.destroy();
        else res.once("finish", () => req.socket?.destroy());
      }
    });
  };
  // The servers make every request an Http1Request or Http2Request (see countedChunks).
  (req as Http1Request | Http2Request).bodyLimit = { maxBytes, checkSize, refuse, take, discard };
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
    stream.session?.close();
    resetOnceAnswered(stream);
  });
}

/**
 * Reads what is left of a request body and throws it away, until its end or until more than
 * `maxBytes` have come, when it stops reading and calls `tooMuch`. It reads in paused mode
 * ("readable" and read()), not with a "data" listener: when connect-node stops reading
 * part-way (at a unary call's second message, say), the async iterator it read through keeps
 * its "readable" listener, and while one is attached a "data" listener or resume() never
 * starts the flow. The client then waited for the body to be taken: over HTTP/2 for
 * flow-control credit until the stream timed out, over HTTP/1.1 until the connection was cut
 * under the next call on it.
 */
function throwAway(req: Readable, maxBytes: number, tooMuch: () => void): void {
  let seen = 0;
  const drain = () => {
    for (let chunk: Buffer | null; (chunk = req.read() as Buffer | null) !== null; ) {
      seen += chunk.length;
      if (seen <= maxBytes) continue;
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

/**
 * node's requestTimeout covers HTTP/1.1 only. An HTTP/2 stream whose client has not finished
 * sending within `timeoutMs` is answered 408 (if nothing was answered yet) and reset.
 */
function limitStreamTime(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, timeoutMs: number): void {
  const stream = req.stream;
  const remoteOpen = () => {
    const s = stream.state.state;
    return s === NGHTTP2_STREAM_STATE_OPEN || s === NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL;
  };
  if (stream.destroyed || !remoteOpen()) return;
  const timer = setTimeout(() => {
    if (stream.destroyed || stream.closed || !remoteOpen()) return;
    if (!res.headersSent) {
      // The body reader (connect-node, still waiting for the rest) must fail, or bytes that
      // arrive after the 408 would complete the request and carry it out after all.
      req.destroy(new Error("request timeout"));
      res.writeHead(408, { "content-type": "text/plain; charset=utf-8", "x-should-retry": "false" });
      res.end("request timeout: the request body did not arrive in time\n");
    } else {
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }
  }, timeoutMs);
  timer.unref();
  stream.once("close", () => clearTimeout(timer));
}

// ---- Errors connect-node answers before any of our code runs ----
//
// connect-node decodes the request (envelopes, decompression, protobuf) before the
// interceptors run, so what it answers there never passes src/transport/errors.ts. Two
// things need fixing on the way out:
// - input it cannot decode is answered `internal` (HTTP 500, which clients and the SDK
//   retry), though it is the client's doing: here it becomes `invalid_argument`;
// - its errors carry no `x-should-retry`, so the official SDK would retry the 501 of an
//   unsupported compression, or the 429 of a body over the limit once decompressed:
//   here they get `x-should-retry: false`.
// Anything else `internal` is left as it is, so that a real fault still shows.

/** Messages of connect-node's `internal` errors that are caused by the request's bytes. */
const UNDECODABLE = [/^parse binary: /, /^received compressed envelope, but do not know how to decompress$/, /^decompression failed$/];

/**
 * Messages of connect-node's `unimplemented` errors for a unary gRPC call with no message or
 * more than one: frames that do not make a request, not a method missing here.
 */
const NOT_ONE_MESSAGE = [/^protocol error: missing input message for unary method$/, /^protocol error: received extra input message for unary method$/];

function isUndecodable(code: string | undefined, message: string): boolean {
  if (code === "unimplemented") return NOT_ONE_MESSAGE.some((re) => re.test(message));
  return code === "internal" && UNDECODABLE.some((re) => re.test(message));
}

/** The grpc-status each gRPC or gRPC-Web response sent, for its log line. */
const grpcStatuses = new WeakMap<object, string>();

/**
 * The grpc-status `res` sent in its trailers, if it is a gRPC or gRPC-Web response that got
 * that far. Errors connect-node answers before any interceptor runs are seen only here.
 */
export function sentGrpcStatus(res: object): string | undefined {
  return grpcStatuses.get(res);
}

function correctFrameworkErrors(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void {
  const contentType = (req.headers["content-type"] ?? "").toLowerCase();
  const r = res as unknown as Record<string, (...args: any[]) => any>;
  if (contentType.startsWith("application/grpc-web")) {
    // gRPC-Web: the status is the last body frame (flag 0x80), written on its own.
    const write = r.write!;
    r.write = function (this: unknown, chunk: unknown, ...rest: unknown[]) {
      if (!(chunk instanceof Uint8Array && chunk[0] === 0x80)) return write.call(this, chunk, ...rest);
      const trailer = fixGrpcWebTrailer(chunk);
      if (trailer.status !== undefined) grpcStatuses.set(res, trailer.status);
      return write.call(this, trailer.frame, ...rest);
    };
  } else if (contentType.startsWith("application/grpc")) {
    const addTrailers = r.addTrailers!;
    r.addTrailers = function (this: unknown, trailers: Record<string, string>) {
      const fixed = fixGrpcStatus(trailers);
      if (fixed["grpc-status"] !== undefined) grpcStatuses.set(res, fixed["grpc-status"]);
      return addTrailers.call(this, fixed);
    };
  } else if (!contentType.startsWith("application/json") || req.headers["content-encoding"] !== undefined) {
    // Connect unary: the error is a JSON body after writeHead(status); an `internal` one is
    // held back until its body shows what it is. Plain uncompressed JSON, the common case,
    // is skipped: connect-node already answers its decoding errors `invalid_argument`.
    const writeHead = r.writeHead!;
    const write = r.write!;
    const end = r.end!;
    let held: unknown[] | undefined;
    const release = (self: unknown, chunk: unknown) => {
      const args = held!;
      held = undefined;
      const fixed = chunk instanceof Uint8Array ? fixConnectError(args[0] as number, chunk) : undefined;
      if (!fixed) {
        writeHead.apply(self, args);
        return chunk;
      }
      const headers = { ...(args.find((a) => a && typeof a === "object") as Record<string, string> | undefined) };
      headers["content-length"] = String(fixed.body.length);
      headers["x-should-retry"] = "false";
      writeHead.call(self, fixed.status, headers);
      return fixed.body;
    };
    r.writeHead = function (this: http.ServerResponse, status: number, ...rest: unknown[]) {
      if ((status === 500 || status === 429) && held === undefined) {
        held = [status, ...rest];
        return this;
      }
      if (status === 501 && !this.hasHeader("x-should-retry")) this.setHeader("x-should-retry", "false");
      return writeHead.call(this, status, ...rest);
    };
    r.write = function (this: unknown, chunk: unknown, ...rest: unknown[]) {
      return write.call(this, held ? release(this, chunk) : chunk, ...rest);
    };
    r.end = function (this: unknown, chunk?: unknown, ...rest: unknown[]) {
      if (held) chunk = release(this, typeof chunk === "function" ? undefined : chunk) ?? chunk;
      return end.call(this, chunk, ...rest);
    };
  }
}

/** The corrected answer for a held Connect error, or undefined to send it as it is. */
function fixConnectError(status: number, body: Uint8Array): { status: number; body: Uint8Array } | undefined {
  let error: { code?: string; message?: string };
  try {
    error = JSON.parse(Buffer.from(body).toString("utf8"));
  } catch {
    return undefined;
  }
  const message = error.message ?? "";
  // Our own 429s (rate limit, full disk) pass errors.ts and are worth a retry; only the
  // size limit, which connect-node enforces while decompressing, is final.
  if (status === 429) return error.code === "resource_exhausted" && /readMaxBytes/.test(message) ? { status, body } : undefined;
  if (!isUndecodable(error.code, message)) return undefined;
  return { status: 400, body: Buffer.from(JSON.stringify({ ...error, code: "invalid_argument", message: `request could not be decoded: ${message}` })) };
}

/**
 * The status trailers of a gRPC or gRPC-Web call: a request that could not be decoded is
 * invalid_argument, not internal, and grpc-message is escaped as the gRPC spec writes it.
 * connect-node escapes it with encodeURIComponent, which the spec allows, but
 * @grpc/grpc-js unescapes with decodeURI, which leaves `%3A`, `%2C` and the like in place,
 * so its clients read "id%3A must be a uuid%2C got ...".
 */
function fixGrpcStatus(trailers: Record<string, string>): Record<string, string> {
  const escaped = trailers["grpc-message"];
  if (escaped === undefined) return trailers;
  let message: string;
  try {
    message = decodeURIComponent(escaped);
  } catch {
    return trailers;
  }
  const code = { "12": "unimplemented", "13": "internal" }[trailers["grpc-status"] ?? ""];
  if (isUndecodable(code, message)) {
    return { ...trailers, "grpc-status": "3", "grpc-message": escapeGrpcMessage(`request could not be decoded: ${message}`) };
  }
  const minimal = escapeGrpcMessage(message);
  return minimal === escaped ? trailers : { ...trailers, "grpc-message": minimal };
}

/** Percent-escapes `%` and every UTF-8 byte outside printable ASCII, and nothing else (the gRPC spec's form). */
function escapeGrpcMessage(message: string): string {
  return encodeURIComponent(message).replace(/%([0-9A-F]{2})/g, (escape, hex: string) => {
    const byte = parseInt(hex, 16);
    return byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : escape;
  });
}

/** The gRPC-Web trailer frame to send in place of `frame`, and the status it carries. */
function fixGrpcWebTrailer(frame: Uint8Array): { frame: Uint8Array; status: string | undefined } {
  const buf = Buffer.from(frame);
  if (buf.length < 5 || buf.readUInt32BE(1) !== buf.length - 5) return { frame, status: undefined };
  const fields: Record<string, string> = {};
  const lines = buf.subarray(5).toString("latin1").split("\r\n").filter((l) => l !== "");
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i > 0) fields[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const fixed = fixGrpcStatus(fields);
  const status = fixed["grpc-status"];
  if (fixed === fields) return { frame, status };
  const text = Buffer.from(Object.entries(fixed).map(([k, v]) => `${k}: ${v}\r\n`).join(""), "latin1");
  const head = Buffer.alloc(5);
  head[0] = 0x80;
  head.writeUInt32BE(text.length, 1);
  return { frame: Buffer.concat([head, text]), status };
}

/**
 * Refuses a key that is not the certificate's. OpenSSL itself catches only a key of the
 * same type that does not match: with a key of another type (RSA beside an EC certificate)
 * the server started and failed every handshake, and an X25519 key crashed it.
 */
function requireKeyOfCertificate(cert: Buffer, key: Buffer): void {
  if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) {
    throw Object.assign(new Error("the key is not the certificate's"), { code: "ERR_TLS_KEY_NOT_CERTIFICATES" });
  }
}
