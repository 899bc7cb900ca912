import type http from "node:http";
import type http2 from "node:http2";
import type { DescMethod, DescMethodUnary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouterOptions, type ContextValues, type HandlerContext, type MethodImplSpec } from "@connectrpc/connect";
import { compressionNegotiate, createMethodSerializationLookup, invokeUnaryImplementation, readAllBytes, validateUniversalHandlerOptions } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes, parseContentType, parseTimeout, trailerMux } from "@connectrpc/connect/protocol-connect";
import { JSON_WRITERS } from "./json-writers.js";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** A unary method as registered with the router, with the options it was registered with. */
export interface UnaryRoute {
  method: DescMethodUnary;
  impl: Extract<MethodImplSpec, { kind: "unary" }>["impl"];
  options: ConnectRouterOptions | undefined;
}

/** How one call ended for the adapter: answered, or a failure to write its answer. */
export type UnaryOutcome = { written: true } | { written: false; reason: unknown };

/**
 * Connect's unary protocol over POST, served here rather than through connect-node's
 * conversions of node's requests and responses (see nodeAdapter, which sends every other
 * call there). The protocol's own pieces are connect's: content types, timeouts, compression
 * negotiation, (de)serialization with the method's options, interceptors, error bodies and
 * status codes, trailers in headers; what is left out is what a call here never needed and
 * paid for on every call. connect-node builds an AbortController per request and aborts it at
 * every close, a second linked one aborted at every answer, and a third for the deadline,
 * each abort with a DOMException (a stack trace) and an event; three fetch `Headers` copies;
 * a URL; and async iterators around the body and the answer. Together those were about a
 * quarter of the CPU of a List (BENCHMARKS.md). Here a call's signal aborts only when it can
 * matter: its client went while it ran, or its deadline passed.
 */
export function unaryHandler(route: UnaryRoute, routerOptions: ConnectRouterOptions) {
  // As connect's router merges them: the router's options, then the method's own.
  const opt = validateUniversalHandlerOptions({ ...validateUniversalHandlerOptions(routerOptions), ...route.options });
  // Options this path does not apply: none is set here; one that were would be ignored.
  if (opt.requireConnectProtocolHeader || opt.shutdownSignal !== undefined || opt.writeMaxBytes !== validateUniversalHandlerOptions({}).writeMaxBytes) {
    throw new Error(`${route.method.parent.typeName}/${route.method.name}: requireConnectProtocolHeader, shutdownSignal and writeMaxBytes are not applied by connect-unary.ts`);
  }
  const serialization = createMethodSerializationLookup(route.method, opt.binaryOptions, opt.jsonOptions, opt);
  const spec = { kind: "unary" as const, method: route.method, impl: route.impl };
  const service = route.method.parent;
  // The answers with a writer of their own (json-writers.ts) skip protobuf-es's reflection.
  const writeJson = JSON_WRITERS.get(route.method.output.typeName) as ((message: unknown) => string) | undefined;

  /**
   * Whether this call is one served here (what connect-node would hand its Connect unary
   * handler), and then whether its messages are binary; undefined for the others.
   */
  const takes = (req: NodeRequest): { binary: boolean } | undefined => {
    if (req.method !== "POST") return undefined;
    const type = req.headers["content-type"];
    const parsed = type === undefined || type === "" ? undefined : parseContentType(type);
    return parsed?.stream === false ? parsed : undefined;
  };

  async function serve(req: NodeRequest, res: NodeResponse, values: ContextValues, { binary }: { binary: boolean }): Promise<UnaryOutcome> {
    const header = (name: string): string | null => {
      const v = req.headers[name];
      return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
    };
    const timeout = parseTimeout(header("connect-timeout-ms"), opt.maxTimeoutMs);
    const compression = compressionNegotiate(opt.acceptCompression, header("content-encoding"), header("accept-encoding"), "accept-encoding");

    const controller = new AbortController();
    let settled = false;
    let deadline: NodeJS.Timeout | undefined;
    const timedOut = () => controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    if (timeout.timeoutMs !== undefined) {
      if (timeout.timeoutMs <= 0) timedOut();
      else deadline = setTimeout(timedOut, timeout.timeoutMs);
    }
    // HTTP/2 ends a stream with the request's close; HTTP/1.1 with the response's (the
    // request's comes once its body has been read). Only whether the signal is aborted is read
    // here (errorInterceptor); its reason is this Canceled error, where connect-node's is an
    // AbortError or the code of the HTTP/2 reset.
    ("stream" in req ? req : res).once("close", () => {
      if (!settled) controller.abort(new ConnectError("the client went before the call ended", Code.Canceled));
    });
    const until = timeout.timeoutMs === undefined ? undefined : Date.now() + timeout.timeoutMs;
    const context: HandlerContext & { abort(reason?: unknown): void } = {
      method: route.method as DescMethod,
      service,
      requestMethod: "POST",
      protocolName: "connect",
      url: callUrl(req),
      signal: controller.signal,
      timeoutMs: () => (until === undefined ? undefined : until - Date.now()),
      requestHeader: webHeaders(req.headers),
      responseHeader: new Headers({ "content-type": binary ? "application/proto" : "application/json" }),
      responseTrailer: new Headers(),
      values,
      abort: (reason?: unknown) => controller.abort(reason),
    };

    let status = 200;
    let body: Uint8Array;
    try {
      if (compression.error) throw compression.error;
      if (timeout.error) throw timeout.error;
      let bytes = await readAllBytes(req as AsyncIterable<Uint8Array>, opt.readMaxBytes, header("content-length"));
      if (compression.request) bytes = await compression.request.decompress(bytes, opt.readMaxBytes);
      const input = serialization.getI(binary).parse(bytes);
      const output = await invokeUnaryImplementation(spec, context, input, opt.interceptors);
      body = writeJson !== undefined && !binary ? Buffer.from(writeJson(output)) : serialization.getO(binary).serialize(output);
    } catch (e) {
      const error = e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
      status = codeToHttpStatus(error.code);
      context.responseHeader.set("content-type", "application/json");
      error.metadata.forEach((value, key) => context.responseHeader.set(key, value));
      body = errorToJsonBytes(error, opt.jsonOptions);
    } finally {
      settled = true;
      clearTimeout(deadline);
    }
    if (compression.response && body.byteLength >= opt.compressMinBytes) {
      body = await compression.response.compress(body);
      context.responseHeader.set("content-encoding", compression.response.name);
    }
    const head = trailerMux(context.responseHeader, context.responseTrailer);
    head.set("content-length", String(body.byteLength));
    try {
      res.writeHead(status, nodeHeaders(head));
      res.end(body);
    } catch (reason) {
      return { written: false, reason };
    }
    return { written: true };
  }

  return { takes, serve };
}

/** The call's URL as connect-node gives it to handlers and interceptors. */
function callUrl(req: NodeRequest): string {
  const encrypted = "encrypted" in req.socket && req.socket.encrypted === true;
  const authority = "authority" in req ? req.authority : req.headers.host;
  return new URL(req.url ?? "", `${encrypted ? "https" : "http"}://${authority}`).toString();
}

/** node's request headers as fetch `Headers`, without HTTP/2's pseudo-headers. */
function webHeaders(headers: http.IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const key in headers) {
    if (key.charCodeAt(0) === 58 /* ":" */) continue;
    const v = headers[key];
    if (v === undefined) continue;
    if (typeof v === "string") out.append(key, v);
    else for (const item of v) out.append(key, item);
  }
  return out;
}

/** fetch `Headers` as writeHead takes them, Set-Cookie as a list. */
function nodeHeaders(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  headers.forEach((value, key) => {
    if (key === "set-cookie") out[key] = headers.getSetCookie();
    else out[key] = value;
  });
  return out;
}
