// The answer to a call of the public API that this service does not serve.
import type http from "node:http";
import type http2 from "node:http2";
import type { RequestRecord } from "./context.js";
import { noteGrpcStatus } from "./framework-errors.js";
import { protocolOf } from "./request-head.js";
import { editDistance } from "../domain/text.js";

const API_METHOD = /^\/(gitpod\.v1\.[A-Za-z][A-Za-z0-9]{0,99}\/[A-Za-z][A-Za-z0-9]{0,99})$/;
// Any method as gRPC names one: a package-qualified service, then the method.
const GRPC_METHOD = /^\/((?:[A-Za-z_][A-Za-z0-9_]{0,99}\.){0,20}[A-Za-z_][A-Za-z0-9_]{0,99}\/[A-Za-z_][A-Za-z0-9_]{0,99})$/;

/**
 * Calls of the public API that this service does not serve answer `unimplemented`, not a
 * bare 404: the official SDK reads 404 as NotFoundError, and a client that takes
 * not_found on a Delete as "already gone" (the Terraform provider does) would record a
 * deletion that never happened. Connect answers 501 with `x-should-retry: false` (the
 * SDK retries other 5xx), a Connect GET too, gRPC and gRPC-Web status 12. gRPC and gRPC-Web
 * calls of any other method get status 12 as well (`grpc.health.v1.Health/Watch`), as gRPC
 * servers answer a method they do not know; anything else stays 404.
 */
export function notServed(
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse,
  record: RequestRecord | undefined,
  served: Iterable<string>,
): void {
  const [path, query = ""] = (req.url ?? "").split("?");
  // A Connect GET names its protocol in the query (connect=v1), not in a content type.
  const connectGet = req.method === "GET" && new URLSearchParams(query).get("connect") === "v1";
  const protocol = connectGet ? "connect" : protocolOf(req.headers["content-type"]);
  const apiMethod = req.method === "POST" || connectGet ? API_METHOD.exec(path!)?.[1] : undefined;
  const grpc = protocol === "grpc" || protocol === "grpc-web";
  const method = apiMethod ?? (grpc && req.method === "POST" ? GRPC_METHOD.exec(path!)?.[1] : undefined);
  const near = method === undefined ? undefined : nearestServed(method, served);
  const message = apiMethod
    ? `${method} is not implemented by this service, which serves the SCM-integration part of the gitpod.v1 API${near ? `; did you mean ${near}?` : ""}`
    : `${method} is not implemented by this service${near ? `; did you mean ${near}?` : ""}`;
  if (apiMethod && protocol === "connect") {
    if (record) record.code = "unimplemented";
    res.writeHead(501, { "content-type": "application/json", "x-should-retry": "false" });
    res.end(JSON.stringify({ code: "unimplemented", message }));
  } else if (method && grpc) {
    if (record) record.code = "unimplemented";
    // Trailers-only: the status travels in headers that end the stream (node's
    // compatibility layer would end it with an empty DATA frame instead, which gRPC
    // clients read as a call without status). The message is ASCII without '%' (the paths
    // taken are letters, digits, '_', '.' and '/'): no escaping.
    const headers = { "content-type": req.headers["content-type"]!, "grpc-status": "12", "grpc-message": message };
    if ("stream" in req) {
      // respond() skips what was set on `res`: the request id, CORS headers.
      if (!req.stream.destroyed && !req.stream.headersSent) {
        req.stream.respond({ ":status": 200, ...res.getHeaders(), ...headers }, { endStream: true });
        noteGrpcStatus(res, headers["grpc-status"]);
      }
    } else {
      res.writeHead(200, headers);
      res.end();
    }
  } else {
    res.writeHead(404);
    res.end();
  }
}

/** A served method whose name is a slip away from `method` (case, or two letters), to name in the error. */
function nearestServed(method: string, served: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const path of served) {
    const d = editDistance(method.toLowerCase(), path.slice(1).toLowerCase(), bestDistance);
    if (d < bestDistance) [best, bestDistance] = [path.slice(1), d];
  }
  return best;
}
