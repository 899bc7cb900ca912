import type http from "node:http";
import type http2 from "node:http2";
import { cors } from "@connectrpc/connect";

/** Which web origins may call the service from a browser: a list, or any ("*"). */
export type CorsOrigins = readonly string[] | "*";

// Besides what the protocols need (connect-es's lists): what the service reads and writes itself.
const ALLOW_HEADERS = [...cors.allowedHeaders, "Authorization", "Idempotency-Key", "X-Request-Id"].join(", ");
/** A preflight's list of header names, as the Fetch standard has browsers send it. */
const HEADER_NAMES = /^[!#$%&'*+.^_`|~0-9a-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9a-z-]+)*$/i;
const EXPOSE_HEADERS = [...cors.exposedHeaders, "Retry-After", "Retry-After-Ms", "X-Request-Id", "X-Should-Retry"].join(", ");
// POST alone: connect-es's list has GET too, for the Connect protocol's GET requests, which
// only methods marked free of side effects take, and no method here is.
const ALLOW_METHODS = "POST";
/** How long a browser may keep a preflight's answer (Chromium keeps it at most 2 hours). */
const MAX_AGE_SECONDS = 7200;

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

/**
 * Lets browser pages of the allowed origins call the service (gRPC-Web and Connect from a
 * web app on another origin). Answers a preflight itself and returns true; otherwise adds
 * what a browser needs to hand the answer, errors included, to the page. Calls still need
 * their token: tokens are sent as headers, never as cookies, so no credentials mode.
 * A request without an allowed Origin is left as it is.
 */
export function answerCors(origins: CorsOrigins, req: Req, res: Res): boolean {
  const origin = req.headers.origin;
  if (origin === undefined || (origins !== "*" && !origins.includes(origin))) return false;
  const allowed = origins === "*" ? "*" : origin;
  if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
    res.writeHead(204, {
      "access-control-allow-origin": allowed,
      "access-control-allow-methods": ALLOW_METHODS,
      // And whatever else the page's client sends (the official SDK its X-Stainless-* headers,
      // tracing its traceparent): the origin is trusted, and the token is what guards a call.
      "access-control-allow-headers": requestedHeaders(req) ?? ALLOW_HEADERS,
      "access-control-max-age": String(MAX_AGE_SECONDS),
      vary: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    });
    res.end();
    return true;
  }
  res.setHeader("access-control-allow-origin", allowed);
  res.setHeader("access-control-expose-headers", EXPOSE_HEADERS);
  if (origins !== "*") res.setHeader("vary", "Origin");
  return false;
}

/** ALLOW_HEADERS and the names the preflight asks for, when they are well-formed and few. */
function requestedHeaders(req: Req): string | undefined {
  const asked = req.headers["access-control-request-headers"];
  if (typeof asked !== "string" || asked.length > 2048 || !HEADER_NAMES.test(asked.trim())) return undefined;
  return `${ALLOW_HEADERS}, ${asked.trim()}`;
}
