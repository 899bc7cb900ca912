import type http from "node:http";
import type http2 from "node:http2";
import { cors } from "@connectrpc/connect";

/** Which web origins may call the service from a browser: a list, or any ("*"). */
export type CorsOrigins = readonly string[] | "*";

// Besides what the protocols need (connect-es's lists): what the service reads and writes itself.
const ALLOW_HEADERS = [...cors.allowedHeaders, "Authorization", "Idempotency-Key", "X-Request-Id", "Content-Encoding"].join(", ");
const EXPOSE_HEADERS = [...cors.exposedHeaders, "Retry-After", "Retry-After-Ms", "X-Request-Id", "X-Should-Retry"].join(", ");
const ALLOW_METHODS = cors.allowedMethods.join(", ");
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
      "access-control-allow-headers": ALLOW_HEADERS,
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
