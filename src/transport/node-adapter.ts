import { Code, ConnectError, createConnectRouter, type ConnectRouter, type ConnectRouterOptions, type ContextValues } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { DescMethod } from "@bufbuild/protobuf";
import { unaryHandler, type UnaryRoute } from "./connect-unary.js";
import type { NodeHandler } from "./http-server.js";

type NodeRequest = Parameters<NodeHandler>[0];

export interface NodeAdapterOptions extends ConnectRouterOptions {
  routes(router: ConnectRouter): void;
  contextValues(req: NodeRequest): ContextValues;
  /** Answers a request for a path no method is served on. */
  fallback: NodeHandler;
  /** Which unary methods are served by unaryHandler (connect-unary.ts) for Connect calls; connect-node serves the rest. */
  servesUnary?(method: DescMethod): boolean;
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
  const routerOptions: ConnectRouterOptions = { acceptCompression: [compressionGzip, compressionBrotli], ...options };
  const router = createConnectRouter(routerOptions);
  const unary = new Map<string, ReturnType<typeof unaryHandler>>();
  options.routes(recording(router, (route) => {
    if (options.servesUnary?.(route.method) === true) unary.set(`/${route.method.parent.typeName}/${route.method.name}`, unaryHandler(route, routerOptions));
  }));
  const byPath = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const failed = (req: NodeRequest, res: { writableFinished: boolean; destroy(): unknown }, reason: unknown) => {
    if (ConnectError.from(reason).code === Code.Aborted || answeredBefore(reason) || CLIENT_GONE.has(nodeCode(reason) as string)) return;
    options.onWriteFailure(req, reason);
    if (!res.writableFinished) res.destroy();
  };
  return (req, res) => {
    // Matched without the query, as connect-node does.
    const path = (req.url ?? "").split("?", 1)[0]!;
    const own = unary.get(path);
    const type = own?.takes(req);
    if (own && type) {
      own.serve(req, res, options.contextValues(req), type).then(
        (outcome) => outcome.written || failed(req, res, outcome.reason),
        // Nothing inside is known to throw; were it to, the call is cut off, never left open.
        (reason: unknown) => failed(req, res, reason),
      );
      return;
    }
    const handler = byPath.get(path);
    if (!handler) {
      options.fallback(req, res);
      return;
    }
    handler(universalRequestFromNodeRequest(req, res, undefined, options.contextValues(req)))
      .then((answer) => universalResponseToNodeResponse(answer, res))
      .catch((reason: unknown) => failed(req, res, reason));
  };
}

/** The router, telling `add` of each unary method registered with it, with its options. */
function recording(router: ConnectRouter, add: (route: UnaryRoute) => void): ConnectRouter {
  const note = (method: DescMethod, impl: unknown, options: ConnectRouterOptions | undefined) => {
    if (method.methodKind === "unary") add({ method: method as UnaryRoute["method"], impl: impl as UnaryRoute["impl"], options });
  };
  const recorder: ConnectRouter = {
    handlers: router.handlers,
    service(service, impl, options) {
      const fns = impl as Record<string, ((...args: never[]) => unknown) | undefined>;
      for (const method of service.methods) {
        const fn = fns[method.localName];
        if (fn) note(method, fn.bind(impl), options);
      }
      router.service(service, impl, options);
      return recorder;
    },
    rpc(method, impl, options) {
      note(method, impl, options);
      router.rpc(method, impl, options);
      return recorder;
    },
  };
  return recorder;
}

/** Whether writing failed because the response had been begun by someone else (see limitStreamTime in http-server.ts). */
function answeredBefore(reason: unknown): boolean {
  const code = nodeCode(reason);
  return code === "ERR_HTTP2_HEADERS_SENT" || code === "ERR_HTTP_HEADERS_SENT";
}

/**
 * node's errors of a write to a client that went (or a stream already ended), which
 * connect-node turns into `aborted` (its errors reach here so; connect-unary.ts passes node's on).
 */
const CLIENT_GONE = new Set(["ERR_STREAM_WRITE_AFTER_END", "ERR_STREAM_DESTROYED", "ERR_HTTP2_INVALID_STREAM", "ECONNRESET"]);

/** The code of node's error: the reason's own, or that of the node error connect-node wrapped in it. */
function nodeCode(reason: unknown): unknown {
  const error = reason as { code?: unknown; cause?: { code?: unknown } } | null;
  return typeof error?.code === "string" ? error.code : error?.cause?.code;
}
