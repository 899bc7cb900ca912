import type http from "node:http";
import type http2 from "node:http2";
import { gunzipSync } from "node:zlib";
import { truncate } from "../domain/text.js";

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

/** The Connect JSON content types as clients send them (lower-cased). */
const PLAIN_JSON = new Set(["application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"]);

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

/** Records a gRPC status sent past `res` (a trailers-only answer through the HTTP/2 stream itself). */
export function noteGrpcStatus(res: object, status: string): void {
  grpcStatuses.set(res, status);
}

/** The code each Connect error body said, for its log line, where no interceptor recorded one. */
const connectCodes = new WeakMap<object, string>();
/**
 * Responses whose head said a Connect error (a status over 399, a JSON body) and whose body is
 * still to come, with the coding connect-node compressed it in (it gzips bodies of 1 KiB or more
 * for a client that takes gzip).
 */
const errorBodies = new WeakMap<object, string | undefined>();

const CONNECT_CODES = new Set([
  "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists", "permission_denied", "resource_exhausted",
  "failed_precondition", "aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated",
]);

/**
 * The Connect code `res` sent in an error body: connect-node answers some errors before any
 * interceptor runs (a body it cannot decode, one over the size limit, a rate limit charged
 * while it reads the body), and only the body says which code it is.
 */
export function sentConnectCode(res: object): string | undefined {
  return connectCodes.get(res);
}

/** For the response classes' writeHead: notes a Connect error head, whose body noteErrorBody then reads. */
export function noteErrorHead(res: { getHeader(name: string): unknown }, status: number, args: unknown[]): void {
  if (status < 400) return;
  const headers = args.find((a) => a !== null && typeof a === "object") as Record<string, unknown> | undefined;
  const header = (name: string) => headers?.[name] ?? res.getHeader(name);
  if (header("content-type") === "application/json") errorBodies.set(res, header("content-encoding") as string | undefined);
}

/** For the response classes' write and end: the code of a Connect error body (one small JSON chunk). */
export function noteErrorBody(res: object, chunk: unknown): void {
  if (!errorBodies.has(res)) return;
  const coding = errorBodies.get(res);
  errorBodies.delete(res);
  if (!(chunk instanceof Uint8Array || typeof chunk === "string") || chunk.length > 65536 || (coding !== undefined && coding !== "gzip")) return;
  try {
    let bytes = typeof chunk === "string" ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    // An error message is a few KiB at most; whatever inflates past 64 KiB is not read.
    if (coding === "gzip") bytes = gunzipSync(bytes, { maxOutputLength: 65536 });
    const code = (JSON.parse(bytes.toString("utf8")) as { code?: unknown }).code;
    if (typeof code === "string" && CONNECT_CODES.has(code)) connectCodes.set(res, code);
  } catch {
    // Not a Connect error after all.
  }
}

export function correctFrameworkErrors(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void {
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
  } else if (!PLAIN_JSON.has(contentType) || req.headers["content-encoding"] !== undefined) {
    // Connect unary: the error is a JSON body after writeHead(status); an `internal` one is
    // held back until its body shows what it is. Plain uncompressed JSON, the common case,
    // is skipped: connect-node already answers its decoding errors `invalid_argument`. (Only
    // as clients write it: `application/json; charset=latin1` is a 415, which is explained.)
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
    // connect-node answers a content type it does not serve with a bare 415; curl's -d
    // without -H 'Content-Type: ...' sends a form type, and an empty answer says nothing.
    let unsupported = false;
    r.writeHead = function (this: http.ServerResponse, status: number, ...rest: unknown[]) {
      if ((status === 500 || status === 429) && held === undefined) {
        held = [status, ...rest];
        return this;
      }
      if (status === 501 && !this.hasHeader("x-should-retry")) this.setHeader("x-should-retry", "false");
      if (status === 415 && !this.hasHeader("content-type")) {
        unsupported = true;
        this.setHeader("content-type", "text/plain; charset=utf-8");
      }
      return writeHead.call(this, status, ...rest);
    };
    r.write = function (this: unknown, chunk: unknown, ...rest: unknown[]) {
      return write.call(this, held ? release(this, chunk) : chunk, ...rest);
    };
    r.end = function (this: unknown, chunk?: unknown, ...rest: unknown[]) {
      if (held) chunk = release(this, typeof chunk === "function" ? undefined : chunk) ?? chunk;
      if (unsupported && (chunk === undefined || typeof chunk === "function")) {
        if (typeof chunk === "function") rest.unshift(chunk);
        chunk = unsupportedMediaType(req.headers["content-type"]);
      }
      return end.call(this, chunk, ...rest);
    };
  }
}

/** A content type as a 415's line repeats it: header bytes arrive as latin1, so anything but printable ASCII is shown as "?". */
export function shownContentType(given: string | undefined): string {
  return given === undefined ? "no Content-Type" : `Content-Type "${truncate(given.replace(/[^\x20-\x7e]/g, "?"))}"`;
}

/** What a 415 says: the content type sent, and the ones each protocol sends. */
function unsupportedMediaType(given: string | undefined): string {
  return `unsupported media type: ${shownContentType(given)}; calls are sent as application/json (Connect JSON), application/proto (Connect binary), application/grpc (gRPC) or application/grpc-web (gRPC-Web)\n`;
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

/**
 * Percent-escapes `%` and every UTF-8 byte outside printable ASCII, and nothing else (the
 * gRPC spec's form), but for spaces at either end: HTTP/2 allows no header value to begin or
 * end with one, and node's client drops such a trailer (connect-node's message for an empty
 * grpc-timeout ends with the empty value, after a space).
 */
function escapeGrpcMessage(message: string): string {
  return encodeURIComponent(message)
    .replace(/%([0-9A-F]{2})/g, (escape, hex: string) => {
      const byte = parseInt(hex, 16);
      return byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : escape;
    })
    .replace(/^ +| +$/g, (spaces) => "%20".repeat(spaces.length));
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
