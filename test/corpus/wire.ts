/**
 * Low-level clients for the fuzz and limit tests: they send exactly the bytes and headers
 * they are given (no client-side validation, no retries) over HTTP/1.1, cleartext HTTP/2
 * or a bare TCP socket, and judge what came back by the rules of each protocol.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { brotliDecompressSync, gunzipSync } from "node:zlib";

export type Protocol = "connect-json" | "connect-proto" | "grpc" | "grpc-web";
export const PROTOCOLS: readonly Protocol[] = ["connect-json", "connect-proto", "grpc", "grpc-web"];

export interface WireRequest {
  path: string;
  /** Header names in lower case; values are sent as given. */
  headers: Record<string, string>;
  body: Uint8Array;
  http2: boolean;
}

/** What the server did with a request: an HTTP answer, or the connection/stream went away without one. */
export type Answer =
  | {
      kind: "answer";
      status: number;
      headers: Record<string, string>;
      body: Buffer;
      trailers: Record<string, string>;
      /** HTTP/2 only: the RST_STREAM code the stream ended with (0 = NO_ERROR). */
      rstCode?: number;
    }
  | { kind: "dropped"; error: string };


const GRPC_CODE_NAMES = [
  "ok",
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
];

/** The codes a bad request may be answered with: all of them say "your request", none "our fault". */
export const CLIENT_CODES: ReadonlySet<string> = new Set(
  GRPC_CODE_NAMES.filter((c) => !["ok", "unknown", "deadline_exceeded", "internal", "unavailable", "data_loss"].includes(c)),
);

/** How a protocol's answer reads: success, a coded error, or something that breaks the contract. */
export interface Verdict {
  ok: boolean;
  /** The error code (Connect spelling), or `http_<status>` for a bare HTTP error, or undefined on success. */
  code?: string;
  /** Set when the answer is not acceptable for a bad request: a crash, a server error, a broken frame. */
  problem?: string;
}

/** The deadline `headers` ask `protocol` for, in ms, if they ask for a well-formed one. */
export function deadlineAsked(protocol: Protocol, headers: Readonly<Record<string, string | undefined>>): number | undefined {
  if (protocol === "connect-json" || protocol === "connect-proto") {
    const ms = /^\d{1,10}$/.exec(headers["connect-timeout-ms"] ?? "");
    return ms ? Number(ms[0]) : undefined;
  }
  const m = /^(\d{1,8})([HMSmun])$/.exec(headers["grpc-timeout"] ?? "");
  return m ? Number(m[1]) * { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as "H"] : undefined;
}

/** What was sent, for what the client asked: its headers, and how long its answer took to come. */
export interface Sent {
  headers: Readonly<Record<string, string | undefined>>;
  tookMs: number;
}

/**
 * Decides whether `a` is a well-formed answer of `protocol` with a client-side (4xx-class)
 * outcome. With `sent`, deadline_exceeded (HTTP 504 over Connect) is the client's doing if
 * the deadline it asked for had passed by the time the answer came.
 */
export function judge(protocol: Protocol, a: Answer, sent?: Sent): Verdict {
  if (a.kind === "dropped") return { ok: false, problem: `no answer: ${a.error}` };
  const asked = sent === undefined ? undefined : deadlineAsked(protocol, sent.headers);
  const noTime = asked !== undefined && asked <= sent!.tookMs;
  const clientSide = (code: string) => CLIENT_CODES.has(code) || (noTime && code === "deadline_exceeded");
  if (a.status >= 500 && a.status !== 501 && !(noTime && a.status === 504)) {
    return { ok: false, code: `http_${a.status}`, problem: `HTTP ${a.status}: ${a.body.toString("utf8").slice(0, 300)}` };
  }
  if (a.rstCode !== undefined && a.rstCode !== 0) {
    return { ok: false, problem: `stream reset with code ${a.rstCode} after HTTP ${a.status}` };
  }
  if (protocol === "connect-json" || protocol === "connect-proto") {
    if (a.status === 200) return { ok: true };
    if (a.status < 400) return { ok: false, problem: `unexpected HTTP ${a.status}` };
    const contentType = a.headers["content-type"] ?? "";
    if (contentType.startsWith("application/json")) {
      let parsed: { code?: unknown; message?: unknown };
      try {
        parsed = JSON.parse(a.body.toString("utf8"));
      } catch {
        return { ok: false, problem: `HTTP ${a.status} with a JSON content type but no JSON body` };
      }
      const code = String(parsed.code);
      // The Connect protocol answers unimplemented (e.g. an unsupported compression) with
      // HTTP 501; acceptable only if it tells the official SDK not to retry.
      if (code === "unimplemented" && a.status === 501 && a.headers["x-should-retry"] !== "false") {
        return { ok: false, code, problem: "HTTP 501 without x-should-retry: false, which the SDK retries" };
      }
      if (!clientSide(code)) return { ok: false, code, problem: `code ${code}: ${String(parsed.message)}` };
      return { ok: false, code };
    }
    // Connect answers some protocol errors (unsupported media type, unknown path) with a bare status.
    if (a.status >= 500) return { ok: false, code: `http_${a.status}`, problem: `HTTP ${a.status} without a Connect error` };
    return { ok: false, code: `http_${a.status}` };
  }
  // gRPC and gRPC-Web: HTTP 200 with grpc-status in the trailers (or, trailers-only, in the headers).
  if (a.status !== 200) {
    if (a.status >= 400 && a.status < 500) return { ok: false, code: `http_${a.status}` };
    return { ok: false, problem: `unexpected HTTP ${a.status}` };
  }
  let status = a.trailers["grpc-status"] ?? a.headers["grpc-status"];
  let message = a.trailers["grpc-message"] ?? a.headers["grpc-message"];
  if (protocol === "grpc-web" && status === undefined) {
    const frames = parseEnvelopes(a.body);
    if (frames === null) return { ok: false, problem: "gRPC-Web body is not a sequence of frames" };
    const trailer = frames.find((f) => (f.flags & 0x80) !== 0);
    if (!trailer) return { ok: false, problem: "gRPC-Web answer without a trailer frame" };
    let block = trailer.data;
    try {
      if (trailer.flags & 1) block = decompress(a.headers["grpc-encoding"], block);
    } catch {
      return { ok: false, problem: "gRPC-Web trailer frame that does not decompress" };
    }
    const fields = parseTrailerBlock(block);
    status = fields["grpc-status"];
    message = fields["grpc-message"];
  }
  if (status === undefined) return { ok: false, problem: "gRPC answer without grpc-status" };
  const code = GRPC_CODE_NAMES[Number(status)] ?? `grpc_${status}`;
  if (code === "ok") return { ok: true };
  if (!clientSide(code)) return { ok: false, code, problem: `code ${code}: ${decodeURIComponent(message ?? "")}` };
  return { ok: false, code };
}

/** The message payload of a successful answer (the first data frame for the enveloped protocols). */
export function successPayload(protocol: Protocol, a: Answer): Uint8Array | null {
  if (a.kind !== "answer") return null;
  if (protocol === "connect-json" || protocol === "connect-proto") return decompress(a.headers["content-encoding"], a.body);
  const frame = parseEnvelopes(a.body)?.find((f) => (f.flags & 0x80) === 0);
  if (!frame) return null;
  return frame.flags & 1 ? decompress(a.headers["grpc-encoding"], frame.data) : frame.data;
}

export function decompress(encoding: string | undefined, data: Buffer): Buffer {
  // An empty body is empty whatever its encoding claims (connect-node does not decompress it).
  if (data.length === 0) return data;
  if (encoding === "gzip") return gunzipSync(data);
  if (encoding === "br") return brotliDecompressSync(data);
  return data;
}

/** A length-prefixed message: flags byte, 4-byte big-endian length, data. `length` may lie on purpose. */
export function envelope(data: Uint8Array, flags = 0, length = data.length): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(length >>> 0, 1);
  return Buffer.concat([head, data]);
}

export function parseEnvelopes(buf: Uint8Array): Array<{ flags: number; data: Buffer }> | null {
  const b = Buffer.from(buf);
  const out: Array<{ flags: number; data: Buffer }> = [];
  let at = 0;
  while (at < b.length) {
    if (b.length - at < 5) return null;
    const len = b.readUInt32BE(at + 1);
    if (b.length - at - 5 < len) return null;
    out.push({ flags: b[at]!, data: b.subarray(at + 5, at + 5 + len) });
    at += 5 + len;
  }
  return out;
}

function parseTrailerBlock(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of data.toString("utf8").split("\r\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return out;
}

/** Which protocol a request with this content type speaks, as the server decides it. */
export function protocolOf(contentType: string | undefined): Protocol | undefined {
  const ct = (contentType ?? "").toLowerCase();
  if (ct.startsWith("application/grpc-web")) return "grpc-web";
  if (ct.startsWith("application/grpc")) return "grpc";
  if (ct.startsWith("application/json")) return "connect-json";
  if (ct.startsWith("application/proto")) return "connect-proto";
  return undefined;
}

/** The headers a well-behaved client of `protocol` sends, with the given bearer token (or none). */
export function protocolHeaders(protocol: Protocol, token: string | null): Record<string, string> {
  const h: Record<string, string> = {};
  switch (protocol) {
    case "connect-json":
      h["content-type"] = "application/json";
      h["connect-protocol-version"] = "1";
      break;
    case "connect-proto":
      h["content-type"] = "application/proto";
      h["connect-protocol-version"] = "1";
      break;
    case "grpc":
      h["content-type"] = "application/grpc";
      h.te = "trailers";
      break;
    case "grpc-web":
      h["content-type"] = "application/grpc-web+proto";
      h["x-grpc-web"] = "1";
      break;
  }
  if (token !== null) h.authorization = `Bearer ${token}`;
  return h;
}

/**
 * Sends requests over one kept-alive HTTP/1.1 agent and one HTTP/2 session (reopened if the
 * server closed it, which counts against the request that saw it happen).
 */
export class WireClient {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  private session: http2.ClientHttp2Session | undefined;
  /** Errors of HTTP/2 sessions (GOAWAY with an error, protocol errors): each is a failure. */
  readonly sessionErrors: string[] = [];
  /** The last stream a session's GOAWAY let through, for the sessions that got one. */
  private readonly goawayLast = new WeakMap<http2.ClientHttp2Session, number>();

  constructor(readonly baseUrl: string) {}

  send(req: WireRequest, timeoutMs = 10_000): Promise<Answer> {
    return req.http2 ? this.sendH2(req, timeoutMs) : this.sendH1(req, timeoutMs);
  }

  private sendH1(req: WireRequest, timeoutMs: number): Promise<Answer> {
    const url = new URL(this.baseUrl);
    return new Promise((resolve) => {
      const done = settleOnce(resolve, () => clearTimeout(timer));
      const headers: Record<string, string> = { ...req.headers };
      if (!("content-length" in headers) && !("transfer-encoding" in headers)) headers["content-length"] = String(req.body.length);
      let r: http.ClientRequest;
      try {
        r = http.request({ host: url.hostname, port: url.port, method: "POST", path: req.path, headers, agent: this.agent });
      } catch (err) {
        // The client refused the headers itself (e.g. a control character): nothing was sent.
        resolve({ kind: "answer", status: 499, headers: {}, body: Buffer.from(`client refused: ${String(err)}`), trailers: {} });
        return;
      }
      const timer = setTimeout(() => {
        r.destroy();
        done({ kind: "dropped", error: `no answer within ${timeoutMs} ms` });
      }, timeoutMs);
      r.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          done({
            kind: "answer",
            status: res.statusCode ?? 0,
            headers: flatten(res.headers),
            body: Buffer.concat(chunks),
            trailers: flatten(res.trailers),
          }),
        );
        res.on("error", (e) => done({ kind: "dropped", error: `response: ${e.message}` }));
      });
      r.on("error", (e) => done({ kind: "dropped", error: `${(e as NodeJS.ErrnoException).code ?? ""} ${e.message}` }));
      r.end(Buffer.from(req.body));
    });
  }

  private h2(): http2.ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) {
      // node counts the request bodies this client queued against the session's memory
      // (10 MB by default) and frees those of streams the server reset only later; the fuzz
      // sends many large bodies the server rightly does not read, so the client needs room.
      const s = http2.connect(this.baseUrl, { maxSessionMemory: 256 });
      s.on("error", (e) => this.sessionErrors.push(`session error: ${e.message}`));
      s.on("goaway", (code, lastStreamId) => {
        this.goawayLast.set(s, lastStreamId);
        if (code !== http2.constants.NGHTTP2_NO_ERROR) this.sessionErrors.push(`GOAWAY with code ${code}`);
      });
      this.session = s;
    }
    return this.session;
  }

  private sendH2(req: WireRequest, timeoutMs: number): Promise<Answer> {
    return new Promise((resolve) => {
      const done = settleOnce(resolve, () => clearTimeout(timer));
      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.h2().request({ ":method": "POST", ":path": req.path, ...req.headers });
      } catch (err) {
        resolve({ kind: "answer", status: 499, headers: {}, body: Buffer.from(`client refused: ${String(err)}`), trailers: {} });
        return;
      }
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        done({ kind: "dropped", error: `no answer within ${timeoutMs} ms` });
      }, timeoutMs);
      let status = 0;
      let headers: Record<string, string> = {};
      let trailers: Record<string, string> = {};
      const chunks: Buffer[] = [];
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        headers = flatten(h);
      });
      stream.on("trailers", (t) => (trailers = flatten(t)));
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("error", () => {
        /* the close event below reports the reset code */
      });
      const session = this.session;
      stream.on("close", () => {
        // A stream opened while the server's GOAWAY was on its way, past the last one it let
        // through: refused unprocessed, which HTTP/2 clients retry on a new connection.
        const last = session && this.goawayLast.get(session);
        if (status === 0 && stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM && last !== undefined && stream.id !== undefined && stream.id > last) {
          clearTimeout(timer);
          void this.sendH2(req, timeoutMs).then(resolve);
          return;
        }
        if (status === 0) done({ kind: "dropped", error: `stream closed without a response (rst code ${stream.rstCode})` });
        else done({ kind: "answer", status, headers, body: Buffer.concat(chunks), trailers, rstCode: stream.rstCode });
      });
      stream.end(Buffer.from(req.body));
    });
  }

  close(): void {
    this.agent.destroy();
    this.session?.close();
  }
}

function flatten(h: http.IncomingHttpHeaders | NodeJS.Dict<string | string[]>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    out[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : String(v);
  }
  return out;
}

/**
 * Writes `bytes` to a fresh TCP connection and collects everything the server sends back
 * until it closes the connection (or `timeoutMs` passes, then the socket is closed here).
 */
export function rawExchange(
  port: number,
  bytes: Uint8Array,
  timeoutMs = 5_000,
): Promise<{ response: Buffer; closedByServer: boolean; error?: string }> {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1", () => sock.write(bytes));
    const chunks: Buffer[] = [];
    let error: string | undefined;
    let closedByServer = true;
    const timer = setTimeout(() => {
      closedByServer = false;
      sock.destroy();
    }, timeoutMs);
    sock.on("data", (d: Buffer) => {
      chunks.push(d);
      // One complete HTTP/1.1 answer is all these exchanges wait for.
      const text = Buffer.concat(chunks).toString("latin1");
      if (answerComplete(text)) {
        closedByServer = true;
        clearTimeout(timer);
        sock.destroy();
      }
    });
    sock.on("error", (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    sock.on("close", () => {
      clearTimeout(timer);
      resolve({ response: Buffer.concat(chunks), closedByServer, ...(error ? { error } : {}) });
    });
  });
}

/** Whether `text` holds a whole HTTP/1.1 response (headers plus a Content-Length or chunked body). */
function answerComplete(text: string): boolean {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const head = text.slice(0, end).toLowerCase();
  const body = text.slice(end + 4);
  const length = /\r\ncontent-length: *(\d+)/.exec(head);
  if (length) return body.length >= Number(length[1]);
  if (/\r\ntransfer-encoding: *chunked/.test(head)) return body.endsWith("0\r\n\r\n");
  return false;
}

/** Resolves with the first answer only, after `cleanup`; later ones are dropped. */
function settleOnce(resolve: (a: Answer) => void, cleanup: () => void): (a: Answer) => void {
  let settled = false;
  return (a) => {
    if (settled) return;
    settled = true;
    cleanup();
    resolve(a);
  };
}
