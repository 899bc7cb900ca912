import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../log.js";
import { CONTENT_TYPE, render, type Family } from "./exposition.js";

/** The metrics listener could not start; its message names the setting to fix. */
export class MetricsListenError extends Error {
  override readonly name = "MetricsListenError";
}

export interface MetricsEndpoint {
  address: AddressInfo;
  close(): void;
}

/**
 * Serves `GET /metrics` on a listener of its own (METRICS_PORT), apart from the API: the page
 * takes no token, so it belongs on an address only the monitoring system reaches, loopback by
 * default. Plain HTTP/1.1; every other path is 404.
 */
export function serveMetrics(host: string, port: number, collect: () => Family[] | Promise<Family[]>, log: Logger): Promise<MetricsEndpoint> {
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => {
    // Whatever a scraper sends is not read; the connection stays usable for the next scrape.
    req.resume();
    const path = (req.url ?? "").split("?", 1)[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end("not found: the metrics are at /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD" });
      res.end("use GET\n");
      return;
    }
    Promise.resolve()
      .then(collect)
      .then(
        (families) => {
          const body = render(families);
          res.writeHead(200, { "content-type": CONTENT_TYPE, "content-length": Buffer.byteLength(body) });
          res.end(req.method === "HEAD" ? undefined : body);
        },
        (err: unknown) => {
          log.error("metrics could not be collected", { error: err instanceof Error ? err.name : typeof err });
          res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
          res.end("metrics could not be collected; see the service's log\n");
        },
      );
  });
  return new Promise((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
      if (err.code === "EADDRINUSE") reject(new MetricsListenError(`METRICS_PORT ${port}: ${where} is already in use`));
      else if (err.code === "EACCES") reject(new MetricsListenError(`METRICS_PORT ${port}: no permission to listen on ${where}`));
      else if (err.code === "EADDRNOTAVAIL") reject(new MetricsListenError(`METRICS_HOST "${host}" is not an address of this machine`));
      else if (err.code === "EINVAL" && host.includes("%")) reject(new MetricsListenError(`METRICS_HOST "${host}": its IPv6 zone names no network interface of this machine`));
      else if (err.code === "ENOTFOUND" || err.code === "EAI_AGAIN") reject(new MetricsListenError(`METRICS_HOST "${host}" does not resolve to an address (${err.code})`));
      else reject(err);
    });
    server.listen(port, host, () => {
      const address = server.address() as AddressInfo;
      log.info("metrics listening", { address: `${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`, path: "/metrics" });
      resolve({
        address,
        close: () => {
          server.close();
          server.closeAllConnections();
        },
      });
    });
  });
}
