import { Code, ConnectError, createConnectRouter, type ConnectRouter, type ConnectRouterOptions, type ContextValues } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { NodeHandler } from "./http-server.js";

type NodeRequest = Parameters<NodeHandler>[0];

export interface NodeAdapterOptions extends ConnectRouterOptions {
  routes(router: ConnectRouter): void;
  contextValues(req: NodeRequest): ContextValues;
  /** Answers a request for a path no method is served on. */
  fallback: NodeHandler;
  /** Told of a call whose answer could not be written, for a reason other than its client going or an answer given before. */
  onWriteFailure(req: NodeRequest, reason: unknown): void;
}

/**
 * Serves the routes' methods through connect-node's conversions of node's requests and
 * responses, as its own adapter does, except for what happens when an answer cannot be
 * written. connect-node's adapter prints those to stderr (console.error, with a stack
 * trace, whatever LOG_LEVEL says), and the commonest is no fault: this server already
 * answered the request itself (408 for a body too slow to come), and anyone can cause it
 * without a token. Here that one passes in silence, as a client gone does; any other
 * goes to `onWriteFailure`, and the response is cut off rather than left open.
 */
export function nodeAdapter(options: NodeAdapterOptions): NodeHandler {
  const router = createConnectRouter({ acceptCompression: [compressionGzip, compressionBrotli], ...options });
  options.routes(router);
  const byPath = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    // Matched without the query, as connect-node does.
    const handler = byPath.get((req.url ?? "").split("?", 1)[0]!);
    if (!handler) {
      options.fallback(req, res);
      return;
    }
    handler(universalRequestFromNodeRequest(req, res, undefined, options.contextValues(req)))
      .then((answer) => universalResponseToNodeResponse(answer, res))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted || answeredBefore(reason)) return;
        options.onWriteFailure(req, reason);
        if (!res.writableFinished) res.destroy();
      });
  };
}

/** Whether writing failed because the response had been begun by someone else (see limitStreamTime in http-server.ts). */
function answeredBefore(reason: unknown): boolean {
  const code = (reason as { cause?: { code?: unknown } } | null)?.cause?.code;
  return code === "ERR_HTTP2_HEADERS_SENT" || code === "ERR_HTTP_HEADERS_SENT";
}
