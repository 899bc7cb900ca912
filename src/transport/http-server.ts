import { readFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { AddressInfo } from "node:net";

export type NodeHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

export interface HttpServerOptions {
  tls?: { certFile: string; keyFile: string } | undefined;
  /** Concurrent HTTP/2 streams per connection. */
  maxConcurrentStreams?: number;
}

export interface RunningServer {
  address: AddressInfo;
  /** How many requests are being served right now. */
  inFlight(): number;
  /**
   * Stops accepting connections, lets in-flight requests finish for up to
   * `timeoutMs`, then closes every connection that is left.
   */
  shutdown(timeoutMs: number): Promise<void>;
}

// Every HTTP/2 connection without TLS starts with this preface (RFC 9113, 3.4).
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * Serves `handler` on one port. Without TLS the first bytes of each connection decide
 * between HTTP/1.1 and cleartext HTTP/2 (prior knowledge, as gRPC clients use), so
 * curl, fetch and gRPC all reach the same address. With TLS, ALPN chooses.
 */
export function listen(handler: NodeHandler, port: number, host: string, options: HttpServerOptions = {}): Promise<RunningServer> {
  const settings = { maxConcurrentStreams: options.maxConcurrentStreams ?? 100 };
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  let inFlight = 0;
  let closing = false;

  const counted: NodeHandler = (req, res) => {
    inFlight++;
    res.once("close", () => inFlight--);
    // During shutdown HTTP/1.1 clients are told not to reuse the connection.
    if (closing && req.httpVersionMajor === 1) (res as http.ServerResponse).setHeader("connection", "close");
    handler(req, res);
  };

  let server: net.Server;
  let h1: http.Server | undefined;
  if (options.tls) {
    const secure = http2.createSecureServer(
      {
        cert: readFileSync(options.tls.certFile),
        key: readFileSync(options.tls.keyFile),
        allowHTTP1: true,
        settings,
      },
      counted,
    );
    secure.on("session", (s) => trackSession(s));
    server = secure;
  } else {
    h1 = http.createServer(counted);
    const h2 = http2.createServer({ settings }, counted);
    h2.on("session", (s) => trackSession(s));
    server = net.createServer((socket) => {
      sniff(socket, (isH2) => (isH2 ? h2 : h1!).emit("connection", socket));
    });
  }
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  function trackSession(session: http2.Http2Session): void {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (closing) session.close();
  }

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve({
        address: server.address() as AddressInfo,
        inFlight: () => inFlight,
        async shutdown(timeoutMs) {
          closing = true;
          server.close();
          // HTTP/2: GOAWAY, then the session closes once its streams are done.
          for (const s of sessions) s.close();
          const deadline = Date.now() + timeoutMs;
          while (inFlight > 0 && Date.now() < deadline) {
            h1?.closeIdleConnections();
            await new Promise((r) => setTimeout(r, 20));
          }
          for (const socket of sockets) socket.destroy();
        },
      });
    });
  });
}

/** Reads just enough of a new connection to tell the HTTP/2 preface apart, then puts it back. */
function sniff(socket: net.Socket, route: (isH2: boolean) => void): void {
  let seen = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    seen = Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, H2_PREFACE.length);
    const matches = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && seen.length < H2_PREFACE.length) return; // need more bytes to be sure
    socket.off("data", onData);
    socket.pause();
    socket.unshift(seen);
    route(matches);
    // The HTTP/2 session reads the socket itself; HTTP/1.1 needs the stream flowing.
    if (!matches) socket.resume();
  };
  socket.on("data", onData);
  socket.once("error", () => socket.destroy());
}
