import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { randomUUID } from "node:crypto";
import type { AddressInfo } from "node:net";
import { correctFrameworkErrors, noteErrorBody, noteErrorHead } from "./framework-errors.js";
import { BodyBudget, Http1Request, Http2Request, limitBody, MAX_BUFFERED_BYTES, MAX_HELD_BYTES_PER_ORG, MAX_OPEN_BUFFERED_BYTES, MAX_REQUEST_BYTES, OPEN_FREE_BYTES } from "./request-body.js";
import { closeLingering, takesNoMoreRequests, lingerWhenNodeCloses, stopTakingRequests } from "./linger.js";
import { readTlsFiles, rereadTlsFiles, type TlsCredentials, type TlsFiles } from "./tls-files.js";
import { truncate } from "../domain/text.js";
import { PREFIX_PATTERN } from "../crypto/tokens.js";

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

/** What both response classes do on the way out, whatever their protocol. */
interface Outgoing {
  headersSent: boolean;
  statusCode: number;
  hasHeader(name: string): boolean;
  setHeader(name: string, value: string): unknown;
  getHeader(name: string): unknown;
  writeHead(...args: any[]): unknown;
  write(...args: any[]): boolean;
  end(...args: any[]): unknown;
}
function answering<B extends new (...args: any[]) => Outgoing>(Base: B) {
  return class extends Base {
    // Final 4xx get x-should-retry: false; a Connect error's head and body are noted for its code.
    override writeHead(status: number, ...rest: any[]): this {
      if (!this.headersSent) {
        markFinal(this, status);
        noteErrorHead(this, status, rest);
      }
      return (super.writeHead as (...args: unknown[]) => this)(status, ...rest);
    }

    override write(chunk: any, ...rest: any[]): boolean {
      if (this.statusCode >= 400) noteErrorBody(this, chunk);
      return (super.write as (...args: unknown[]) => boolean)(chunk, ...rest);
    }

    override end(...args: any[]): this {
      if (this.statusCode >= 400) noteErrorBody(this, args[0]);
      return (super.end as (...a: unknown[]) => this)(...args);
    }
  };
}

const Http1Response = answering(http.ServerResponse<Http1Request>);
const Http2Response = answering(http2.Http2ServerResponse<Http2Request>);

export interface HttpServerOptions {
  tls?: TlsFiles | undefined;
  /** Concurrent HTTP/2 streams per connection; more are refused with REFUSED_STREAM. */
  maxConcurrentStreams?: number;
  /** The most body bytes all requests in flight may hold at once; past it new ones are refused as busy. */
  maxBufferedBytes?: number;
  /** The most of those the calls of one organization may hold (see MAX_HELD_BYTES_PER_ORG). */
  maxHeldBytesPerOrg?: number;
  /**
   * The paths of calls that need a token. When given, only their bodies draw on
   * `maxBufferedBytes`; every other request's (health checks, reflection: anyone may send
   * them) draws on `maxOpenBufferedBytes`, so that clients without a token cannot spend the
   * budget the calls with one need. Without it, every request draws on the one budget.
   */
  tokenPaths?: ReadonlySet<string>;
  /** The budget of the requests outside `tokenPaths`. */
  maxOpenBufferedBytes?: number;
  /**
   * How long a client may take to send a request's headers (HTTP/1.1), or to open its first
   * stream (HTTP/2), counted from the moment it connected.
   */
  headersTimeoutMs?: number;
  /** How long a client may take to send a whole request, headers and body (HTTP/1.1 and each HTTP/2 stream). */
  requestTimeoutMs?: number;
  /** An HTTP/2 connection with no frame in either direction for this long is closed. */
  idleTimeoutMs?: number;
  /** Told of each request answered here before the handler saw it (see NodeAnswer). */
  onNodeAnswer?: (answer: NodeAnswer) => void;
}

/**
 * A request answered before it reached the handler, so that it can be logged and counted
 * as the others are: an HTTP/1.1 request node's parser refused (malformed, headers over
 * 16 KiB, headers too slow to come), or an HTTP/2 stream whose header list was too large.
 */
export interface NodeAnswer {
  /** The HTTP status sent, or null for an HTTP/2 stream reset without one. */
  status: number | null;
  /** As a request's log line has it: `http_431`, or for a reset stream gRPC's reading of it. */
  code: string;
  /** The request's method and path, where it got as far as saying them (cut to LOGGED_URL_CHARS). */
  method: string | null;
  path: string | null;
  /** What was wrong, in words of this server's own (never the request's bytes). */
  reason: string;
  /** The id its log line carries, and the answer's `x-request-id` header where there was an answer. */
  requestId: string;
}

/**
 * The most of a request's URL (or path) a log line shows: it may be most of 16 KiB of
 * headers, and anyone may send one, many times a second.
 */
export const LOGGED_URL_CHARS = 200;

/**
 * A URL (or path, or authority) as log lines show it: every token-shaped run hidden, since
 * a client may put its token there by mistake and tokens are never logged, then cut to
 * LOGGED_URL_CHARS.
 */
export function loggedUrl(url: string): string {
  return truncate(unescapedIfToken(url).replace(TOKEN_LIKE, "$1[hidden]"), LOGGED_URL_CHARS);
}

/** `url` percent-decoded (three times at most, for escapes of escapes) where that spells a token's prefix its escapes hid; else as it is. */
function unescapedIfToken(url: string): string {
  let shown = url;
  for (let i = 0; i < 3 && shown.includes("%"); i++) {
    try {
      shown = decodeURIComponent(shown);
    } catch {
      return url;
    }
    if (TOKEN_SHAPE.test(shown)) return shown;
  }
  return url;
}

/** Whether `s` holds something shaped like a token (a client's request id may not be logged then). */
export const hasTokenShape = (s: string): boolean => TOKEN_SHAPE.test(s);

// A token's prefix, in any case, its `_` perhaps percent-encoded, and whatever follows it in
// the characters a token is made of (crypto/tokens.ts) or percent escapes.
const TOKEN_LIKE = new RegExp(`(${PREFIX_PATTERN}(?:_|%5f))(?:[A-Za-z0-9_-]|%[0-9a-f]{2})*`, "gi");
const TOKEN_SHAPE = new RegExp(`${PREFIX_PATTERN}(?:_|%5f)`, "i");

/** Slow clients get these unless told otherwise: the defaults of HEADERS_TIMEOUT_MS, REQUEST_TIMEOUT_MS and IDLE_TIMEOUT_MS (config.ts), for servers made without a config (tests). */
const DEFAULT_TIMEOUTS = { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, idleTimeoutMs: 120_000 } as const;

export interface RunningServer {
  address: AddressInfo;
  /** How many requests are being served right now. */
  inFlight(): number;
  /** Bytes of request bodies held right now, counted against the body budget. */
  bodyBytesHeld(): number;
  /** The same for the requests outside `tokenPaths`, against their own budget. */
  openBodyBytesHeld(): number;
  /**
   * Stops accepting connections, lets in-flight requests finish for up to
   * `timeoutMs`, then closes every connection that is left; answers how many requests
   * were still running then, and so were cut off.
   */
  shutdown(timeoutMs: number): Promise<number>;
  /** With TLS: the certificate served to new connections. */
  certificate?(): TlsCredentials;
  /**
   * With TLS: reads the certificate and key files again and serves them to connections made
   * from now on; connections already open keep theirs. Throws, changing nothing, when the
   * files cannot be read or do not belong together.
   */
  reloadCertificate?(): TlsCredentials;
}

// Every HTTP/2 connection without TLS starts with this preface (RFC 9113, 3.4).
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const { NGHTTP2_STREAM_STATE_OPEN, NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL } = http2.constants;

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
 * MAX_REQUEST_BYTES are refused without being read, and connections that dawdle over their
 * headers or body are answered 408 (HTTP/1.1) or reset (HTTP/2 streams) and closed.
 */
export function listen(handler: NodeHandler, port: number, host: string, options: HttpServerOptions = {}): Promise<RunningServer> {
  // Header lists as large as HTTP/1.1 takes (node's 16 KiB), not nghttp2's 64 KiB.
  const settings = { maxConcurrentStreams: options.maxConcurrentStreams ?? 100, maxHeaderListSize: MAX_HEADER_LIST_BYTES };
  // connect-node's readMaxBytes is the same (server.ts): the two limits are one.
  const maxRequestBytes = MAX_REQUEST_BYTES;
  const budget = new BodyBudget(options.maxBufferedBytes ?? MAX_BUFFERED_BYTES, options.maxHeldBytesPerOrg ?? MAX_HELD_BYTES_PER_ORG);
  const tokenPaths = options.tokenPaths;
  const openBudget = new BodyBudget(options.maxOpenBufferedBytes ?? MAX_OPEN_BUFFERED_BYTES);
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
  // HTTP/1.1 sockets with a request being answered (or queued behind one): the TLS server's
  // idle timeout spares them, and so does shutdown until their answers have gone out.
  const busy = new Map<net.Socket, number>();

  const onNodeAnswer = options.onNodeAnswer;
  // A header list over the limit: gRPC clients read ENHANCE_YOUR_CALM as resource_exhausted.
  const refusedHeaderList = (req: http2.Http2ServerRequest): boolean => {
    if (!headerListTooLarge(req)) return false;
    // The path may be most of those bytes: it is cut for the log line.
    const url = loggedUrl(req.url ?? "");
    onNodeAnswer?.({ status: null, code: "resource_exhausted", method: req.method ?? null, path: url.split("?", 1)[0]!, reason: `header list over ${MAX_HEADER_LIST_BYTES} bytes`, requestId: randomUUID() });
    return true;
  };

  const counted: NodeHandler = (req, res) => {
    if ("stream" in req && refusedHeaderList(req)) return;
    inFlight++;
    const h1Socket = "stream" in req ? null : req.socket;
    if (h1Socket) {
      busy.set(h1Socket, (busy.get(h1Socket) ?? 0) + 1);
      // An answer that ends the connection while the body still comes (a refused body, a client's
      // `Connection: close`, shutdown) is not to be lost to a reset.
      lingerWhenNodeCloses(h1Socket);
    }
    const body = tokenPaths === undefined || tokenPaths.has((req.url ?? "").split("?", 1)[0]!) ? budget.forRequest() : openBudget.forRequest(OPEN_FREE_BYTES);
    // A response closes when it is done or its connection goes, except on HTTP/1.1 a response
    // queued behind an unfinished one of the same connection (pipelining), which has no
    // socket yet: if the connection goes first, only the socket says so.
    const socket = "stream" in req || (res as http.ServerResponse).socket ? null : req.socket;
    const h1 = "stream" in req ? null : (req as Http1Request);
    let done = false;
    let unwatch: (() => void) | undefined;
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
      unwatch?.();
      // An HTTP/1.1 answer that went out before its body had all come: node reads the rest
      // only of a body no one began to read, so when connect-node stopped part-way, read
      // past it here (limitBody's discard, with its grace) or the connection stalls.
      if (h1 && !h1.complete && (res as http.ServerResponse).writableFinished) h1.bodyLimit?.discard();
    };
    res.once("close", finish);
    if (socket) unwatch = whenSocketCloses(socket, finish);
    // During shutdown HTTP/1.1 clients are told not to reuse the connection.
    if (closing && req.httpVersionMajor === 1) (res as http.ServerResponse).setHeader("connection", "close");
    limitBody(req, res, maxRequestBytes, body);
    if ("stream" in req) limitStreamTime(req, res as http2.Http2ServerResponse, requestTimeoutMs);
    correctFrameworkErrors(req, res);
    handler(req, res);
  };

  // Expect: 100-continue. node would send "100 Continue" to every such request, also to one
  // whose announced length is already over the limit, which then starts sending it.
  const continueOrRefuse = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    if ("stream" in req && refusedHeaderList(req)) return;
    if (!(Number(req.headers["content-length"] ?? 0) > maxRequestBytes)) res.writeContinue();
    counted(req, res);
  };

  let server: net.Server;
  let h1: http.Server | undefined;
  let secureServer: http2.Http2SecureServer | undefined;
  let tls: Pick<RunningServer, "certificate" | "reloadCertificate"> = {};
  if (options.tls) {
    const files = options.tls;
    let serving = readTlsFiles(files);
    const secure = http2.createSecureServer(
      {
        cert: serving.cert,
        key: serving.key,
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
    secure.on("checkExpectation", (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => refuseExpectation(req, res, onNodeAnswer));
    // Its HTTP/1.1 side (allowHTTP1) reports parser errors here, as the plain server does.
    secure.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => answerClientError(err, socket, requestTimeoutMs, onNodeAnswer));
    // CONNECT comes here from both sides: an HTTP/1.1 socket, or an HTTP/2 stream and its response.
    secure.on("connect", (req: http.IncomingMessage | http2.Http2ServerRequest, to: net.Socket | http2.Http2ServerResponse) =>
      "stream" in req ? refuseStreamConnect(req, to as http2.Http2ServerResponse, onNodeAnswer) : refuseConnect(req, to as net.Socket, requestTimeoutMs, onNodeAnswer),
    );
    // Connections come through a plain listener that looks at the first byte: a TLS handshake
    // goes on to the secure server, plain HTTP (an http:// URL by mistake) is told what is
    // wrong instead of seeing the connection closed without a word.
    secureServer = secure;
    const route = tlsRoute(secure, onNodeAnswer);
    server = net.createServer((socket) => sniff(socket, headersTimeoutMs, route));
    tls = {
      certificate: () => serving,
      reloadCertificate() {
        const next = rereadTlsFiles(files);
        // Only the credentials change: ALPN and the other server options stay as they are.
        secure.setSecureContext({ cert: next.cert, key: next.key });
        return (serving = next);
      },
    };
  } else {
    // A request without Host goes to the handler, which answers it 400 with a log line (node's own 400 has none).
    h1 = http.createServer({ ...h1Timeouts, requireHostHeader: false, IncomingMessage: Http1Request, ServerResponse: Http1Response }, counted);
    const h2 = http2.createServer({ settings, Http2ServerRequest: Http2Request, Http2ServerResponse: Http2Response }, counted);
    h2.setTimeout(idleTimeoutMs);
    h2.on("timeout", closeIdleSession);
    h2.on("session", (s) => trackSession(s));
    h1.on("checkContinue", continueOrRefuse);
    h2.on("checkContinue", continueOrRefuse);
    h1.on("checkExpectation", (req: http.IncomingMessage, res: http.ServerResponse) => refuseExpectation(req, res, onNodeAnswer));
    h2.on("checkExpectation", (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => refuseExpectation(req, res, onNodeAnswer));
    h1.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => answerClientError(err, socket, requestTimeoutMs, onNodeAnswer));
    h1.on("connect", (req: http.IncomingMessage, socket: net.Socket) => refuseConnect(req, socket, requestTimeoutMs, onNodeAnswer));
    h2.on("connect", (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => refuseStreamConnect(req, res, onNodeAnswer));
    const route = cleartextRoute(h1, h2);
    server = net.createServer((socket) => sniff(socket, headersTimeoutMs, route));
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
      // The HTTP/1.1 and secure servers only receive sockets handed over by a sniffer and never
      // listen themselves; "listening" is what starts node's tracking of their HTTP/1.1
      // connections, which the headers and request timeouts and closeIdleConnections() rely on.
      h1?.emit("listening");
      secureServer?.emit("listening");
      resolve({
        address: server.address() as AddressInfo,
        inFlight: () => inFlight,
        bodyBytesHeld: () => budget.held,
        openBodyBytesHeld: () => openBudget.held,
        ...tls,
        async shutdown(timeoutMs) {
          closing = true;
          server.close();
          // HTTP/2: GOAWAY, then the session closes once its streams are done.
          for (const s of sessions) s.close();
          // HTTP/1.1: keep-alive connections with nothing to answer are closed as they become
          // so; the rest are answered first (with "Connection: close" if they came from now on).
          const h1Side = h1 ?? secureServer!;
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            closeIdleHttp1(h1Side, busy);
            if (inFlight === 0 || Date.now() >= deadline) break;
            await new Promise((r) => setTimeout(r, 20));
          }
          const cutOff = inFlight;
          // Stops the HTTP/1.1 connection checks (whose headers and request timeouts ran
          // through the drain).
          h1?.close();
          secureServer?.close();
          for (const socket of sockets) socket.destroy();
          // A socket's close, in which the answers it cut off end and are logged, comes a turn
          // of the event loop later: the process must not exit before it.
          for (const until = Date.now() + 1000; sockets.size > 0 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 5));
          return cutOff;
        },
      });
    });
  });
}

/**
 * Closes the HTTP/1.1 connections of `server` that have nothing left to answer: none of their
 * requests is still being answered or queued (`busy`), and node's parser is not in the middle
 * of a new one. node's own closeIdleConnections() also closes a connection whose answer has
 * ended but is still being sent (a large one to a client that reads slowly), and with it the
 * answers pipelined behind it. Its list of connections has no public name; without it (another
 * node) nothing is closed here, and shutdown closes every connection once the drain is over.
 */
function closeIdleHttp1(server: http.Server | http2.Http2SecureServer, busy: ReadonlyMap<net.Socket, number>): void {
  const key = Object.getOwnPropertySymbols(server).find((k) => k.description === "http.server.connections");
  const list = key === undefined ? undefined : (server as unknown as Record<symbol, { idle?: () => { socket?: net.Socket }[] }>)[key];
  if (typeof list?.idle !== "function") return;
  for (const { socket } of list.idle()) {
    if (socket && !busy.has(socket)) socket.destroy();
  }
}

/** What waits for each socket's close on behalf of answers queued on it (see whenSocketCloses). */
const closeWatchers = new WeakMap<net.Socket, Set<() => void>>();

/**
 * Calls `fn` when the socket closes; answers a function that stops the watch. One listener a
 * socket whatever the number of watches: a client may queue hundreds of pipelined requests on
 * one connection, and a listener each made node warn of a leak past ten.
 */
export function whenSocketCloses(socket: net.Socket, fn: () => void): () => void {
  let watchers = closeWatchers.get(socket);
  if (watchers === undefined) {
    const all = new Set<() => void>();
    closeWatchers.set(socket, (watchers = all));
    socket.once("close", () => {
      closeWatchers.delete(socket);
      for (const watcher of all) watcher();
    });
  }
  watchers.add(fn);
  return () => watchers.delete(fn);
}

/** node's HTTP/1.1 parser errors that it answers, with what this server answers instead: status, status text, the body's first words. */
const PARSER_ANSWERS: Record<string, [status: number, text: string, says: string]> = {
  HPE_HEADER_OVERFLOW: [431, "Request Header Fields Too Large", "request headers too large"],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, "Payload Too Large", "request too large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "Request Timeout", "request timeout"],
};
const BAD_REQUEST: [number, string, string] = [400, "Bad Request", "bad request"];

/** Responses of the handler that answerClientError wrote over, with the status it wrote (see answeredByNode). */
const writtenOver = new WeakMap<object, number>();

/**
 * The status node's parser errors made this server write in place of this response, if it
 * did: a request timeout, or a malformed body, came before any byte of it went out. The
 * client reads that answer as this request's.
 */
export function answeredByNode(res: object): number | undefined {
  return writtenOver.get(res);
}

type NodeResponse = http.ServerResponse & { _headerSent?: boolean };

/**
 * What node does by itself with an HTTP/1.1 connection whose request it cannot take (its
 * default when the server has no `clientError` listener), with a line saying why, except
 * where node's answer would be false. Such a request may never have reached the handler,
 * which then has no log line for it: it is reported instead.
 *
 * Whose fault it is: a request whose headers came and whose body has not is the handler's
 * (node's parser holds it as `incoming`, not complete), and the handler logs it; otherwise it
 * is a request still in its headers, which only this function sees.
 *
 * - The request at fault is the one whose answer is due next: it is answered (400, 408, 413,
 *   431), unless a byte of that answer went out already, and the connection is closed.
 * - Answers are due to complete requests ahead of it (HTTP/1.1 pipelining): node would write
 *   its answer in place of the first of them, which the client then takes for that call's
 *   outcome (a 408 it retries, for a call that was carried out), or cut it off. Instead no
 *   further request is taken (what the client still sends is dropped), those answers go out,
 *   and then the connection closes; the request at fault gets no answer.
 * - Nothing is written after the answer to a request whose body is still coming (an early
 *   401, say), where it would read as the answer to a request never sent, nor to a client
 *   that ended the connection part-way through a request.
 * - Errors of the socket itself (a reset, say) are not answered: there is no one to read it.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: net.Socket, waitMs: number, report: ((answer: NodeAnswer) => void) | undefined): void {
  // node's parser reports again on every read, and its request timeout on every check.
  // A connection that takes no more requests (closing) has nothing more to answer.
  if (takesNoMoreRequests(socket)) return;
  const code = err.code ?? "";
  const response = (socket as { _httpMessage?: NodeResponse | null })._httpMessage ?? null;
  const incoming = (socket as { parser?: { incoming?: http.IncomingMessage | null } | null }).parser?.incoming ?? null;
  const inBody = incoming !== null && !incoming.complete;
  const atFaultIsNext = response === null || (inBody && response.req === incoming);
  const fromParser = code.startsWith("HPE_") || code === "ERR_HTTP_REQUEST_TIMEOUT";
  if (!fromParser) {
    socket.destroy(err);
    return;
  }
  const [status, statusText, says] = PARSER_ANSWERS[code] ?? BAD_REQUEST;
  const left = code === "HPE_INVALID_EOF_STATE";
  const reason =
    left ? `the client closed the connection before its request's ${inBody ? "body was" : "headers were"} complete`
    : status === 431 ? "request headers (or trailers) over 16 KiB"
    : status === 413 ? "chunk extensions over 16 KiB"
    : status === 408 ? `the request ${inBody ? "body" : "headers"} did not arrive in time`
    // llhttp's reasons are fixed texts ("Invalid method encountered"); kept to printable ASCII all the same.
    : `malformed HTTP/1.1 request (${code}: ${String((err as { reason?: unknown }).reason ?? "").replace(/[^\x20-\x7e]/g, "").slice(0, 100)})`;
  // A request still in its headers has no line of its own elsewhere; it was not answered (canceled) or answered here.
  const unanswered = (why: string) => {
    if (!inBody) report?.({ status: null, code: "canceled", method: null, path: null, reason: why, requestId: randomUUID() });
  };
  if (!atFaultIsNext) {
    unanswered(`${reason}; pipelined behind calls still being answered, which were let finish before the connection closed`);
    closeOnceAnswered(socket, waitMs);
    return;
  }
  // With a body still coming and no response on the socket, its answer has gone already.
  if (left || !socket.writable || (inBody && response === null) || response?._headerSent === true) {
    if (left) unanswered(reason);
    socket.destroy(err);
    return;
  }
  const body = `${says}: ${reason}\n`;
  // A timeout may be retried; the rest would fail again (as markFinal tells the SDK).
  const final = status === 408 ? "" : "x-should-retry: false\r\n";
  // The handler's request keeps the id its own line has.
  const requestId = String(response?.getHeader("x-request-id") ?? randomUUID());
  socket.write(`HTTP/1.1 ${status} ${statusText}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${body.length}\r\n${final}x-request-id: ${requestId}\r\n\r\n${body}`);
  if (response !== null) writtenOver.set(response, status);
  else report?.({ status, code: `http_${status}`, method: null, path: null, reason, requestId });
  // The client may be sending still (headers past the limit, say): the answer is not to be lost to a reset.
  closeLingering(socket);
}

/**
 * A CONNECT request (a proxy tunnel): node hands it to a `connect` listener, or without one
 * closes the connection without a word. This is no proxy: 405, and the connection closes.
 */
function refuseConnect(req: http.IncomingMessage, socket: net.Socket, waitMs: number, report: ((answer: NodeAnswer) => void) | undefined): void {
  const url = loggedUrl(req.url ?? "");
  socket.on("error", () => socket.destroy());
  // Pipelined behind calls still being answered: written now, it would read as the first one's answer.
  if ((socket as { _httpMessage?: unknown })._httpMessage) {
    report?.({ status: null, code: "canceled", method: "CONNECT", path: url, reason: "CONNECT is not served; pipelined behind calls still being answered, which were let finish before the connection closed", requestId: randomUUID() });
    closeOnceAnswered(socket, waitMs);
    return;
  }
  const requestId = randomUUID();
  socket.write(`HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${CONNECT_REFUSED.length}\r\nx-should-retry: false\r\nx-request-id: ${requestId}\r\n\r\n${CONNECT_REFUSED}`);
  closeLingering(socket);
  report?.({ status: 405, code: "http_405", method: "CONNECT", path: url, reason: "CONNECT is not served", requestId });
}

/**
 * A request that expects something other than `100-continue`: 417, as RFC 9110 allows and
 * node would answer by itself, but with a request id, a log line and a count.
 */
function refuseExpectation(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse, report: ((answer: NodeAnswer) => void) | undefined): void {
  const requestId = randomUUID();
  res.writeHead(417, { "content-type": "text/plain; charset=utf-8", "x-should-retry": "false", "x-request-id": requestId });
  res.end(EXPECTATION_REFUSED);
  const url = loggedUrl(req.url ?? "");
  report?.({ status: 417, code: "http_417", method: req.method ?? null, path: url.split("?", 1)[0]!, reason: "an Expect other than 100-continue", requestId });
}

const EXPECTATION_REFUSED = "expectation failed: this service knows only Expect: 100-continue\n";

/** An HTTP/2 CONNECT stream: node hands it to the same event, with a response of its own. */
function refuseStreamConnect(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, report: ((answer: NodeAnswer) => void) | undefined): void {
  const requestId = randomUUID();
  res.writeHead(405, { "content-type": "text/plain; charset=utf-8", "x-should-retry": "false", "x-request-id": requestId });
  res.end(CONNECT_REFUSED);
  const url = loggedUrl(req.headers[":authority"] ?? "");
  report?.({ status: 405, code: "http_405", method: "CONNECT", path: url, reason: "CONNECT is not served", requestId });
}

const CONNECT_REFUSED = "method not allowed: this service is not a proxy, and takes no CONNECT\n";

/**
 * Lets the answers due to complete requests on this connection go out, one after another as
 * node sends them, and then closes it; after `waitMs` (REQUEST_TIMEOUT_MS) it closes anyway. The answer due to a request whose body never came
 * (node's parser stopped at its fault) is not waited for: the connection closes there.
 */
function closeOnceAnswered(socket: net.Socket, waitMs: number): void {
  // No further request is taken, whatever the client sends until the connection closes.
  stopTakingRequests(socket);
  // Not for ever: a client that stops reading would hold the connection until shutdown.
  const limit = setTimeout(() => socket.destroy(), waitMs);
  limit.unref();
  socket.once("close", () => clearTimeout(limit));
  const next = () => {
    if (socket.destroyed) return;
    const due = (socket as { _httpMessage?: NodeResponse | null })._httpMessage ?? null;
    // node hands the socket to the next queued answer as one finishes (its own listener runs first).
    if (due !== null && due.req.complete && !due.writableFinished) due.once("finish", () => setImmediate(next));
    else closeLingering(socket);
  };
  next();
}

/**
 * Reads just enough of a new connection to decide where it goes, puts what it read back, and
 * hands it on paused. `decide` answers undefined while it needs more bytes. A client that
 * connects and then says too little to decide is not waited for.
 */
function sniff(socket: net.Socket, timeoutMs: number, decide: (seen: Buffer) => ((socket: net.Socket) => void) | undefined): void {
  let seen: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  timer.unref();
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const next = decide(seen);
    if (next === undefined) return;
    clearTimeout(timer);
    socket.off("data", onData);
    socket.pause();
    socket.unshift(seen);
    next(socket);
  };
  socket.on("data", onData);
  socket.once("close", () => clearTimeout(timer));
  socket.once("error", () => socket.destroy());
}

/** Where a cleartext connection goes: HTTP/2 if it opens with the preface, else HTTP/1.1. */
function cleartextRoute(h1: http.Server, h2: http2.Http2Server) {
  return (seen: Buffer) => {
    const n = Math.min(seen.length, H2_PREFACE.length);
    const matches = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && seen.length < H2_PREFACE.length) return undefined; // need more bytes to be sure
    if (matches) return (socket: net.Socket) => void h2.emit("connection", socket);
    return (socket: net.Socket) => {
      h1.emit("connection", socket);
      socket.resume(); // the HTTP/2 session reads the socket itself; HTTP/1.1 needs it flowing
    };
  };
}

/**
 * Where a connection to the HTTPS port goes: 0x16 opens every TLS handshake record, to the
 * secure server; plain HTTP (a method's capital letters, then a space) is told what is
 * wrong; anything else is dropped.
 */
function tlsRoute(secure: http2.Http2SecureServer, report: ((answer: NodeAnswer) => void) | undefined) {
  return (seen: Buffer) => {
    if (seen[0] === 0x16) return (socket: net.Socket) => void secure.emit("connection", socket);
    const start = seen.subarray(0, 16).toString("latin1");
    if (/^[A-Z]+ /.test(start)) return (socket: net.Socket) => refusePlainHttp(socket, seen, report);
    if (/^[A-Z]+$/.test(start) && start.length < 16) return undefined; // a method still coming
    return (socket: net.Socket) => void socket.destroy();
  };
}

/**
 * Answers plain HTTP on the HTTPS port, and closes the connection once the answer is out.
 * (Left paused, as the sniffer leaves it, a socket never sees its client's end, and stayed
 * open, descriptor and all, until shutdown.)
 */
function refusePlainHttp(socket: net.Socket, seen: Buffer, report: ((answer: NodeAnswer) => void) | undefined): void {
  const requestId = randomUUID();
  socket.write(`HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\nx-request-id: ${requestId}\r\n\r\n${PLAIN_REFUSED}`);
  closeLingering(socket); // what the client sends on is read and dropped
  // The request line, as far as the bytes seen so far hold it.
  const [, method, target] = /^([A-Z]+) ([^ \r\n]*)/.exec(seen.subarray(0, 4096).toString("latin1")) ?? [];
  const url = target === undefined ? null : loggedUrl(target);
  report?.({ status: 400, code: "http_400", method: method ?? null, path: url?.split("?", 1)[0] ?? null, reason: "plain HTTP on the port that serves HTTPS", requestId });
}

const PLAIN_REFUSED = "this port serves HTTPS: use an https:// URL\n";

/** Asks an HTTP/2 connection to wind down (GOAWAY), and ends it if its streams do not finish soon. */
function closeIdleSession(session: http2.Http2Session): void {
  if (session.closed || session.destroyed) return;
  session.close();
  const hard = setTimeout(() => session.destroy(), 1000);
  hard.unref();
  session.once("close", () => clearTimeout(hard));
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
      // Without x-should-retry: false, as node's own 408 over HTTP/1.1: sent again in time, it may succeed.
      res.writeHead(408, { "content-type": "text/plain; charset=utf-8" });
      res.end("request timeout: the request body did not arrive in time\n");
    } else {
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }
  }, timeoutMs);
  timer.unref();
  stream.once("close", () => clearTimeout(timer));
}
