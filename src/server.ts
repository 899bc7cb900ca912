// First: protobuf-es looks for the native base64 encoder when it is imported (see runtime/base64.ts).
import "./runtime/base64.js";
import { randomUUID } from "node:crypto";
import type http from "node:http";
import http2 from "node:http2";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { createContextValues, type ConnectRouter, type Interceptor, type MethodImpl, type ServiceImpl } from "@connectrpc/connect";
import { RunnerConfigurationService } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { RunnerInteractionService } from "../gen/gitpod/v1/runner_interactions_pb.js";
import { RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import type { Logger } from "./log.js";
import { Idempotency } from "./services/idempotency.js";
import { Pager } from "./services/pagination.js";
import { RateLimiter, type RateLimit } from "./services/rate-limit.js";
import type { Db } from "./store/database.js";
import { startCheckpointer } from "./store/checkpointer.js";
import { serviceSecret } from "./store/service-secrets.js";
import { requestRecordKey, type RequestRecord } from "./transport/context.js";
import { answerCors, type CorsOrigins } from "./transport/cors.js";
import type { Deps } from "./transport/handlers/deps.js";
import { healthService } from "./transport/handlers/health.js";
import { REFLECTION_SERVICES, reflectionServices } from "./transport/handlers/reflection.js";
import { runnerConfigurationService } from "./transport/handlers/runner-configurations.js";
import { runnerInteractionService } from "./transport/handlers/runner-interactions.js";
import { runnerService } from "./transport/handlers/runners.js";
import { sentConnectCode, sentGrpcStatus } from "./transport/framework-errors.js";
import { answeredByNode, hasTokenShape, loggedUrl, whenSocketCloses, type HttpServerOptions, type NodeAnswer, type NodeHandler } from "./transport/http-server.js";
import { nodeAdapter } from "./transport/node-adapter.js";
import { admitter, authInterceptor, codeName, durabilityInterceptor, errorInterceptor, bodyCharge, TOKEN_POLICY, type Admission } from "./transport/interceptors.js";
import { jsonOptions, jsonOptionsFor } from "./transport/json-options.js";
import { RequestMetrics, single, type Family } from "./metrics/exposition.js";
import { chargeBody, checkFrameFlags, MAX_REQUEST_BYTES, withoutBody } from "./transport/request-body.js";
import { canonicalContentType, MAX_TIMEOUT_MS, protocolOf, refuseAuthority, repeatsAuthorization, shortenDeadline, unservedGrpc, validAuthority } from "./transport/request-head.js";
import { notServed } from "./transport/not-served.js";

/**
 * The code a request's log line shows: what the client was told. An answer node's HTTP/1.1
 * server wrote in its place shows its status (see answeredByNode). A response that never began
 * was not answered (the client left, or shutdown cut it off); a gRPC status sent covers the
 * errors connect-node answers before any interceptor runs. Otherwise the interceptors' record,
 * then the code of a Connect error body connect-node wrote itself, then the HTTP status.
 */
function loggedCode(res: http.ServerResponse | http2.Http2ServerResponse, record: RequestRecord, nodeStatus: number | undefined): string {
  if (nodeStatus !== undefined) return `http_${nodeStatus}`;
  if (!res.writableEnded && !headBytesSent(res)) return "canceled";
  // In trailers, or in the headers of a trailers-only answer (a method not served, say).
  const grpc = sentGrpcStatus(res) ?? res.getHeader("grpc-status")?.toString();
  // An answer whose head went out and whose body never ended was cut off (its client reset the
  // stream or left, or a time limit here cut it), except a trailers-only gRPC answer sent
  // through the HTTP/2 stream (notServed), which ends the stream but not `res`.
  if (!res.writableEnded && (!("stream" in res) || grpc === undefined)) return "canceled";
  // Ended, but cut off before all of it went out (a client that stopped reading).
  if (res.writableEnded && !res.writableFinished) return "canceled";
  if (grpc !== undefined) {
    // A gRPC status set for a stream its client reset or left, which never carried it.
    if ("stream" in res && !grpcStatusWentOut(res)) return "canceled";
    return grpc === "0" ? "ok" : codeName(Number(grpc));
  }
  return record.code ?? sentConnectCode(res) ?? (res.statusCode < 400 ? "ok" : `http_${res.statusCode}`);
}

/** Whether an HTTP/2 gRPC answer's status went out, in its trailers or in trailers-only headers (gRPC-Web's is in the body). */
function grpcStatusWentOut(res: http2.Http2ServerResponse): boolean {
  const type = String(res.getHeader("content-type") ?? "");
  if (!type.startsWith("application/grpc") || type.startsWith("application/grpc-web")) return true;
  return res.stream.sentTrailers?.["grpc-status"] !== undefined || res.stream.sentHeaders?.["grpc-status"] !== undefined;
}

/**
 * Whether the response's head went out. Over HTTP/1.1 node's `headersSent` is true as soon as
 * writeHead() ran, before any byte was written; `_headerSent` is what node itself goes by.
 */
function headBytesSent(res: http.ServerResponse | http2.Http2ServerResponse): boolean {
  return "stream" in res ? res.headersSent : (res as http.ServerResponse & { _headerSent?: boolean })._headerSent === true;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export interface App {
  handler: NodeHandler;
  /** Makes health checks answer NOT_SERVING, for shutdown. */
  beginShutdown(): void;
  /** Stops background work (the checkpointer); call once requests have drained. */
  close(): Promise<void>;
  /** This process's figures for the metrics page: its requests (with AppOptions.metrics) and its database. */
  metrics(): Family[];
  /**
   * What listen() is to be given for this app, by the service and tests alike: how requests
   * the HTTP server answers before the handler sees them are logged and counted, and the paths
   * of the calls that need a token, whose bodies are read only once it is good.
   */
  listenOptions: Required<Pick<HttpServerOptions, "onNodeAnswer" | "tokenPaths">>;
}

export interface AppOptions {
  /**
   * This service's public base URL (PUBLIC_URL), used for OAuth callback URLs; a function
   * when it is known only once the server listens (PORT=0).
   */
  publicUrl: string | (() => string);
  /** Calls per token (RATE_LIMIT_PER_SECOND / RATE_LIMIT_BURST); absent or null: no limit. */
  rateLimit?: RateLimit | null;
  /**
   * Bytes of request body per token, counted as parsed: a compressed body for what it
   * inflates to (RATE_LIMIT_BYTES_PER_SECOND / RATE_LIMIT_BYTES_BURST); absent or null: no limit.
   */
  bodyRateLimit?: RateLimit | null;
  /** How long an Idempotency-Key is remembered (IDEMPOTENCY_TTL_SECONDS); a day if absent. */
  idempotencyTtlMs?: number;
  /** Web origins whose pages may call from a browser (CORS_ALLOWED_ORIGINS); absent or empty: none. */
  corsOrigins?: CorsOrigins;
  /** Extra interceptors, run innermost (after auth); tests use them to watch the traffic. */
  interceptors?: Interceptor[];
  /** Whether requests are counted for the metrics page (METRICS_PORT set). */
  metrics?: boolean;
  /**
   * Whether Connect unary calls of the token services are served by connect-unary.ts (the
   * default); false sends them through connect-node, for tests that compare the two.
   */
  ownUnary?: boolean;
}

/** The services that take a token (which kind, each: TOKEN_POLICY in interceptors.ts). */
const TOKEN_SERVICES = [RunnerService, RunnerConfigurationService, RunnerInteractionService];
/** Every service served: what health checks know by name and reflection describes. */
const SERVED = [...TOKEN_SERVICES, Health, ...REFLECTION_SERVICES];
// A service whose calls are admitted by token, with no kind of token named for it, would
// reach its handlers without a caller.
for (const s of TOKEN_SERVICES) if (!Object.hasOwn(TOKEN_POLICY, s.typeName)) throw new Error(`${s.typeName} has no kind of token in TOKEN_POLICY`);

/** Registers every service, each with its options. */
function routes(deps: Deps, isHealthy: () => boolean) {
  return (router: ConnectRouter) => {
    serve(router, RunnerService, runnerService(deps));
    serve(router, RunnerConfigurationService, runnerConfigurationService(deps));
    serve(router, RunnerInteractionService, runnerInteractionService(deps));
    // Health takes no token, so anyone's body is read: no compression (a few bytes inflated
    // to 1 MiB of nesting or of unknown fields cost 150 to 250 ms of CPU each) and 1 KiB at
    // most (its request is one service name), so that it holds next to nothing of the body budget.
    router.service(Health, healthService(isHealthy, SERVED.map((d) => d.typeName)), { readMaxBytes: HEALTH_MAX_BYTES, acceptCompression: [] });
    // Reflection takes no token either, and its questions are a name each: the same care, and
    // a bound on each stream's questions (reflection.ts) and on its life (REFLECTION_STREAM_MS).
    const [v1, v1alpha] = reflectionServices(SERVED);
    router.service(REFLECTION_SERVICES[0], v1, { readMaxBytes: REFLECTION_MAX_BYTES, acceptCompression: [] });
    router.service(REFLECTION_SERVICES[1], v1alpha, { readMaxBytes: REFLECTION_MAX_BYTES, acceptCompression: [] });
  };
}

/** The most a health check's request may be. */
const HEALTH_MAX_BYTES = 1024;
/** The most one reflection question may be (a file or symbol name). */
const REFLECTION_MAX_BYTES = 1024;
/**
 * How long a reflection stream may last, whatever its client does: one that half-closed and
 * stopped reading its answers would otherwise hold its part of the body budget for as long as
 * its connection lives (REQUEST_TIMEOUT_MS counts only while the client still sends). A tool's
 * stream takes milliseconds.
 */
const REFLECTION_STREAM_MS = 10_000;
const REFLECTION_PATHS = new Set(REFLECTION_SERVICES.map((s) => `/${s.typeName}/ServerReflectionInfo`));

/** Registers a service, each method with the JSON options its request needs (see json-options.ts). */
function serve<S extends DescService>(router: ConnectRouter, service: S, impl: ServiceImpl<S>): void {
  const options = service.methods.map(jsonOptionsFor);
  if (options.every((o) => o === undefined)) {
    router.service(service, impl);
    return;
  }
  const fns = impl as unknown as Record<string, ((...args: never[]) => unknown) | undefined>;
  for (const [i, method] of service.methods.entries()) {
    const fn = fns[method.localName]!.bind(impl) as unknown as MethodImpl<typeof method>; // ServiceImpl has every method
    const json = options[i];
    router.rpc(method, fn, json ? { jsonOptions: json } : undefined);
  }
}

/**
 * Builds the request handler without listening. Every request gets an id (taken from
 * a well-formed incoming `x-request-id`, else new), echoed in `x-request-id` and
 * written in its one log line. Interceptors run in this order: errors (outermost,
 * so it sees auth failures too), durability (answers wait for what they show to be on
 * disk), then auth, then the handler.
 */
export function createApp(db: Db, log: Logger, options: AppOptions): App {
  const records = new WeakMap<object, RequestRecord>();
  const shutdown = new AbortController();
  const isHealthy = () => !shutdown.signal.aborted && db.$client.open && db.haltedBy() === null;
  // Read (or made) while the connection still waits patiently for a lock: a worker
  // started while the others write must not fail its start on a busy database.
  const pageTokenKey = serviceSecret(db, "page_token_key");
  const idempotencyKey = serviceSecret(db, "idempotency_key");
  // Serving, a lock held by another process must not stall the event loop: waits are
  // short here, and the group commit retries its BEGIN asynchronously instead.
  db.$client.pragma("busy_timeout = 2");
  const checkpointer = startCheckpointer(db, log);
  const deps: Deps = {
    db,
    pager: new Pager(pageTokenKey),
    publicUrl: () => (typeof options.publicUrl === "string" ? options.publicUrl : options.publicUrl()).replace(/\/+$/, ""),
    idempotency: new Idempotency(db, idempotencyKey, options.idempotencyTtlMs ?? 86_400_000),
  };
  const limiter = options.rateLimit ? new RateLimiter(options.rateLimit) : null;
  // What a call costs grows with its body: 1 MiB of nested JSON takes JSON.parse about a
  // quarter of a second, so a limit on calls alone let one token ask for many cores' worth.
  const bodyLimiter = options.bodyRateLimit ? new RateLimiter(options.bodyRateLimit) : null;
  const admit = admitter(db, limiter, bodyLimiter);
  const corsOrigins = options.corsOrigins === undefined || options.corsOrigins.length === 0 ? null : options.corsOrigins;
  const requests = options.metrics ? new RequestMetrics() : null;

  const adapter = nodeAdapter({
    routes: routes(deps, isHealthy),
    interceptors: [errorInterceptor(log, db), durabilityInterceptor(db), authInterceptor(log, admit), ...(options.interceptors ?? [])],
    contextValues: (req) => createContextValues().set(requestRecordKey, records.get(req) ?? { id: randomUUID(), code: undefined }),
    readMaxBytes: MAX_REQUEST_BYTES,
    // Unknown fields are dropped as they are read, not kept: kept, each became an object of its
    // own, and 1 MiB of them (from a 1 KB gzip message) took about 75 MB; a hundred such calls
    // at once ran the process out of memory. Nothing here reads unknown fields.
    binaryOptions: { readUnknownFields: false },
    maxTimeoutMs: MAX_TIMEOUT_MS,
    jsonOptions,
    // Connect calls of the token services' methods: the commonest calls, served without
    // connect-node's conversions (connect-unary.ts), unless a test compares the two.
    servesUnary: (method) => options.ownUnary !== false && TOKEN_SERVICES.some((s) => s.typeName === method.parent.typeName),
    // connect-node's response type is a union of the HTTP/1 and HTTP/2 shapes; both take these calls.
    fallback: (req, res) => notServed(req, res as unknown as http.ServerResponse, records.get(req), TOKEN_METHODS.keys()),
    onWriteFailure: (req, reason) =>
      log.error("answer could not be written", {
        request_id: records.get(req)?.id,
        procedure: loggedUrl((req.url ?? "").split("?", 1)[0]!),
        error: reason instanceof Error ? reason.name : typeof reason,
        detail: reason instanceof Error ? reason.message : undefined,
      }),
  });

  const handler: NodeHandler = (req, res) => {
    const incoming = req.headers["x-request-id"];
    // A client's own id, unless it looks like a token (sent there by mistake, it would be logged).
    const id = typeof incoming === "string" && REQUEST_ID.test(incoming) && !hasTokenShape(incoming) ? incoming : randomUUID();
    const record: RequestRecord = { id, code: undefined };
    if (repeatsAuthorization(req.rawHeaders)) record.repeatedAuthorization = true;
    records.set(req, record);
    res.setHeader("x-request-id", id);
    const started = process.hrtime.bigint();
    // Read now: a socket that has closed by the time the line is written no longer knows it.
    const client = req.socket.remoteAddress;
    // The end of the answer, which may come well before the request's close: a stream whose
    // client keeps its side open past the answer (reflection at its deadline) closes later.
    let answered: bigint | undefined;
    // (HTTP/2's compatibility response says "finish" only at the close; its stream's own
    // writable side finishes with the answer.)
    ("stream" in res ? res.stream : res).once("finish", () => (answered = process.hrtime.bigint()));
    let logged = false;
    // `queued`: an HTTP/1.1 answer whose connection closed before it was its turn; none of it went out.
    const logLine = (queued = false) => {
      if (logged) return;
      logged = true;
      // What node's HTTP/1.1 server wrote in place of this response (past REQUEST_TIMEOUT_MS, say).
      const nodeStatus = answeredByNode(res);
      const path = (req.url ?? "").split("?")[0]!;
      const code = queued ? "canceled" : loggedCode(res, record, nodeStatus);
      const ms = Number((answered ?? process.hrtime.bigint()) - started) / 1e6;
      log.info("request", {
        request_id: id,
        procedure: loggedUrl(path),
        code,
        // null when nothing was answered (the client went, or shutdown cut the call off).
        http_status: queued ? null : (nodeStatus ?? (headBytesSent(res) ? res.statusCode : null)),
        protocol: protocolOf(req.headers["content-type"]),
        duration_ms: ms,
        // Who asked: the peer's address, and the token's organization and id (an API token's
        // row id, or the runner whose token it is), never the token.
        client,
        ...callerFields(record?.admission),
      });
      requests?.record(procedureLabel(req.method, path), code, ms / 1000);
    };
    // ("close" passes no arguments: `queued` stays false.)
    res.once("close", logLine);
    // An HTTP/1.1 answer queued behind an unfinished one of the same connection (pipelining)
    // has no socket yet: if the connection goes before its turn, only the socket says so.
    // (Once it has the socket, its own close follows the socket's.)
    if (!("stream" in req) && !(res as http.ServerResponse).socket) {
      const unwatch = whenSocketCloses(req.socket, () => {
        if (!(res as http.ServerResponse).socket) logLine(true);
      });
      res.once("close", unwatch);
    }
    // HTTP/1.1 requires Host (RFC 9112), health checks too; an HTTP/1.0 one (a load balancer's) may go without.
    if (!("stream" in req) && req.httpVersion === "1.1" && req.headers.host === undefined) return refuseAuthority(res);
    if (corsOrigins !== null && answerCors(corsOrigins, req, res)) return;
    if (req.url === "/healthz" || req.url?.startsWith("/healthz?")) {
      // A query (a load balancer's cache buster) changes nothing; other methods are told which to use.
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD", "x-should-retry": "false" });
        res.end("method not allowed: /healthz answers GET and HEAD\n");
        return;
      }
      const ok = isHealthy();
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain; charset=utf-8" });
      res.end(ok ? "ok\n" : shutdown.signal.aborted ? "shutting down\n" : "unavailable: the database cannot be used (see the log); restart the service\n");
      return;
    }
    // connect-node builds a URL from the Host header (or :authority) before any of our
    // code runs, and throws out of the handler when it is missing or malformed.
    if (!validAuthority(req)) return refuseAuthority(res);
    // Every method served takes POST (none is marked free of side effects for Connect's GET):
    // RFC 9110 wants a 405 to say which methods the resource takes, which connect-node's does not.
    if (req.method !== "POST" && LABELLED_PROCEDURES.has((req.url ?? "").split("?", 1)[0]!)) {
      res.writeHead(405, { "content-type": "text/plain; charset=utf-8", allow: "POST", "x-should-retry": "false" });
      res.end(`method not allowed: ${req.method} ${(req.url ?? "").split("?", 1)[0]} takes POST\n`);
      return;
    }
    const contentType = req.headers["content-type"];
    if (contentType?.includes(";")) {
      const canonical = canonicalContentType(contentType);
      if (canonical !== undefined) req.headers["content-type"] = canonical;
    }
    const unserved = unservedGrpc(req.headers["content-type"]);
    if (unserved !== undefined) {
      res.writeHead(415, { "content-type": "text/plain; charset=utf-8", "x-should-retry": "false" });
      res.end(unserved);
      return;
    }
    if ("stream" in req && req.url?.startsWith("/grpc.reflection.") && REFLECTION_PATHS.has(req.url.split("?", 1)[0]!)) {
      const stream = req.stream;
      const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), REFLECTION_STREAM_MS);
      res.once("close", () => clearTimeout(timer));
    }
    shortenDeadline(req.headers);
    // Content codings are case-insensitive (RFC 9110, 8.4.1); connect-node matches them as written.
    const coding = req.headers["content-encoding"];
    if (coding !== undefined && coding !== coding.toLowerCase()) req.headers["content-encoding"] = coding.toLowerCase();
    // Runs inside a promise callback too, where a throw would be an unhandled rejection
    // (which stops node): whatever goes wrong is answered here.
    const dispatch = (decided?: Admission) => {
      try {
        if (decided) {
          record.admission = decided;
          if ("refusal" in decided) withoutBody(req);
          else chargeBody(req, bodyCharge(bodyLimiter, decided.caller), `org:${decided.caller.orgId}`, method?.input);
        } else checkFrameFlags(req);
        // connect-node's handler type is a union of the HTTP/1 and HTTP/2 shapes.
        adapter(req as never, res as never);
      } catch (err) {
        log.error("request could not be handled", { request_id: id, error: err instanceof Error ? err.name : typeof err });
        if (!res.headersSent) res.writeHead(400, { "content-type": "text/plain; charset=utf-8" });
        res.end();
      }
    };
    // The token is checked before connect-node reads the body: a call refused here costs
    // no decompression or parsing and holds none of the body budget, whatever it sends.
    // The admissions of one event-loop turn are read together, and the calls then go on
    // into connect-node one after another, which also costs less CPU per call (BENCHMARKS.md).
    // Only calls of a method served here, routed as connect-node routes them (by the path
    // without its query): a path it answers 404 or 501 is no call, and takes no rate limit.
    const method = req.method === "POST" ? TOKEN_METHODS.get((req.url ?? "").split("?", 1)[0]!) : undefined;
    const admission = method === undefined ? undefined : admit.admit(method.parent.typeName, req.headers.authorization ?? null, record.repeatedAuthorization === true);
    if (admission === undefined) dispatch();
    else void admission.then(dispatch);
  };

  const metrics = (): Family[] => {
    const commits = db.commitStats();
    return [
      ...(requests?.families() ?? []),
      single("scm_database_usable", "1 while the database can be used; 0 after a failed sync to disk, or once it read as damaged, until a restart.", "gauge", db.$client.open && db.haltedBy() === null ? 1 : 0),
      single("scm_commits_total", "Transactions committed by the group commit (each holds one or more writes).", "counter", commits.commits),
      single("scm_commit_writes_total", "Writes committed by the group commit.", "counter", commits.writes),
      single("scm_wal_syncs_total", "Syncs of the write-ahead log to disk that finished; a failed one too, which also turns scm_database_usable to 0.", "counter", commits.syncs),
    ];
  };
  // The same line as any request's, with what was wrong; no duration (node does not say when it began).
  const nodeAnswered = (answer: NodeAnswer) => {
    log.info("request", {
      request_id: answer.requestId,
      procedure: answer.path,
      code: answer.code,
      http_status: answer.status,
      protocol: null,
      duration_ms: null,
      reason: answer.reason,
    });
    requests?.record(procedureLabel(answer.method ?? undefined, answer.path ?? ""), answer.code, null);
  };
  return {
    handler,
    beginShutdown: () => shutdown.abort(),
    close: () => checkpointer.stop(),
    metrics,
    listenOptions: { onNodeAnswer: nodeAnswered, tokenPaths: TOKEN_PATHS },
  };
}

/** The path of every method that takes a token (`/package.Service/Method`), to the method. */
const TOKEN_METHODS = new Map<string, DescMethod>(
  TOKEN_SERVICES.flatMap((service) => service.methods.map((m): [string, DescMethod] => [`/${service.typeName}/${m.name}`, m])),
);

const TOKEN_PATHS: ReadonlySet<string> = new Set(TOKEN_METHODS.keys());

/** The procedures the metrics page counts by name; every other path is "other". */
const LABELLED_PROCEDURES = new Set([...TOKEN_METHODS.keys(), `/${Health.typeName}/Check`, ...REFLECTION_PATHS]);

/** A request's procedure as the metrics page shows it: from a short fixed set, never as a client wrote it. */
function procedureLabel(method: string | undefined, path: string): string {
  if (method === "POST" && LABELLED_PROCEDURES.has(path)) return path.slice(1);
  // As the handler answers it (a query changes nothing there).
  if (path === "/healthz" && (method === "GET" || method === "HEAD")) return "healthz";
  return "other";
}

/** What a request's log line says of its caller, when its token was known. */
function callerFields(admission: Admission | undefined): Record<string, string> {
  // A refused call too, when its token was known (rate-limited, the wrong kind of token).
  const c = admission?.caller;
  if (c === undefined) return {};
  return c.kind === "api" ? { org_id: c.orgId, token_id: c.tokenId } : { org_id: c.orgId, runner_id: c.runnerId };
}
