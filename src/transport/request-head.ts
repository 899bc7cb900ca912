// What a request's head says, read as this service reads it before connect-node sees the
// request: its protocol, its content type in a canonical form, its deadline, its authority.
import type http from "node:http";
import type http2 from "node:http2";
import { shownContentType } from "./framework-errors.js";

/** The longest deadline a client may ask for. */
export const MAX_TIMEOUT_MS = 60_000;

/**
 * Kinds of gRPC this service does not serve, refused with 415 (as gRPC answers a content type
 * it does not serve) and a line saying what is served instead:
 * - the JSON codecs of gRPC and gRPC-Web. connect-node 2.1.2 cannot report a JSON syntax
 *   error over them: V8 quotes the input in the message, cut in the middle of a surrogate
 *   pair, and the encodeURIComponent of its grpc-message trailer throws, so the call was
 *   never answered at all;
 * - gRPC-Web's text mode (base64 frames; the default of the `grpc-web` npm client), which
 *   connect-node does not speak: it answered a bare 415.
 */
const UNSERVED_GRPC: [RegExp, string][] = [
  [/^application\/grpc(-web)?\+json/i, "gRPC and gRPC-Web are served with the protobuf codec; for JSON use the Connect protocol (application/json)\n"],
  [/^application\/grpc-web-text/i, "gRPC-Web is served in binary mode only (application/grpc-web+proto; the grpc-web client's mode: \"grpcweb\"), not in text mode\n"],
];

/** What connect-node takes as gRPC or gRPC-Web: the protobuf codec, named or not, and nothing after it. */
const SERVED_GRPC = /^application\/grpc(-web)?(\+proto)?$/i;

/**
 * The line a gRPC content type this service does not serve is refused with, or undefined for
 * one it serves (or no gRPC at all). Besides the kinds above, any other codec or parameter
 * (`application/grpc+xml`, `application/grpc; charset=utf-8`), which connect-node answered
 * with a bare 415.
 */
export function unservedGrpc(contentType: string | undefined): string | undefined {
  if (contentType === undefined || !/^application\/grpc/i.test(contentType) || SERVED_GRPC.test(contentType)) return undefined;
  return (
    UNSERVED_GRPC.find(([type]) => type.test(contentType))?.[1] ??
    `unsupported media type: ${shownContentType(contentType)}; gRPC is sent as application/grpc (or application/grpc+proto), gRPC-Web as application/grpc-web (or application/grpc-web+proto)\n`
  );
}

/**
 * A Connect media type with parameters, written in another of the forms RFC 9110 allows, as
 * connect-node's exact patterns want it: `application/json ; charset="UTF-8"` (or `"utf\-8"`) is
 * `application/json; charset=utf-8`, and a charset of UTF-8 on a binary type, or a `;` with
 * nothing after it, goes. Anything else (another charset, another parameter) is left as it
 * was, for connect-node to refuse.
 */
export function canonicalContentType(value: string): string | undefined {
  const [head, ...params] = value.split(";");
  const type = head!.trim().toLowerCase();
  // Only the Connect protocol's own types: gRPC's take no parameters at all (refused with
  // their own message, see unservedGrpc), and any other is refused quoting it as sent.
  if (!/^application\/(?:connect\+)?(?:json|proto)$/.test(type)) return undefined;
  let utf8 = false;
  for (const param of params) {
    const p = param.trim();
    if (p === "") continue;
    // A quoted value may escape any character with a backslash (RFC 9110's quoted-pair).
    const m = /^charset=(?:"((?:[^"\\]|\\.)*)"|([^"]*))$/i.exec(p);
    const charset = m?.[1]?.replace(/\\(.)/g, "$1") ?? m?.[2];
    if (charset === undefined || !/^utf-?8$/i.test(charset)) return undefined;
    utf8 = true;
  }
  return utf8 && type.endsWith("json") ? `${type}; charset=utf-8` : type;
}

/**
 * Shortens a deadline over MAX_TIMEOUT_MS to it, as gRPC servers do, rather than let
 * connect-node refuse the call: gRPC's C core rounds a deadline up when it writes it, so a
 * Python client asking for exactly 60 s sent 60100 ms and was refused. Malformed values are
 * left for connect-node to refuse.
 */
export function shortenDeadline(headers: http.IncomingHttpHeaders): void {
  const connect = headers["connect-timeout-ms"];
  if (typeof connect === "string" && /^\d{1,10}$/.test(connect) && Number(connect) > MAX_TIMEOUT_MS) {
    headers["connect-timeout-ms"] = String(MAX_TIMEOUT_MS);
  }
  const grpc = headers["grpc-timeout"];
  const m = typeof grpc === "string" ? /^(\d{1,8})([HMSmun])$/.exec(grpc) : null;
  if (m && Number(m[1]) * GRPC_TIMEOUT_UNIT_MS[m[2]!]! > MAX_TIMEOUT_MS) headers["grpc-timeout"] = `${MAX_TIMEOUT_MS}m`;
}

const GRPC_TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** Whether the raw header list (name, value, name, value...) names Authorization more than once. */
export function repeatsAuthorization(raw: string[]): boolean {
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 13 && name.toLowerCase() === "authorization" && ++seen > 1) return true;
  }
  return false;
}

export function refuseAuthority(res: http.ServerResponse | http2.Http2ServerResponse): void {
  res.writeHead(400, { "content-type": "text/plain; charset=utf-8" });
  res.end("missing or malformed Host header\n");
}

export function validAuthority(req: http.IncomingMessage | http2.Http2ServerRequest): boolean {
  const authority = "authority" in req && req.authority ? req.authority : req.headers.host;
  if (typeof authority !== "string" || authority === "") return false;
  return URL.canParse(`http://${authority}/`);
}

/** The protocol a content type names; media types are case-insensitive (RFC 9110), as connect-node reads them. */
export function protocolOf(given: string | undefined): string {
  if (!given) return "none";
  const contentType = given.toLowerCase();
  if (contentType.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  if (contentType.startsWith("application/json") || contentType.startsWith("application/proto")) return "connect";
  // Connect's streams (reflection's, as `buf curl` asks by default).
  if (contentType.startsWith("application/connect+")) return "connect-stream";
  return "other";
}
