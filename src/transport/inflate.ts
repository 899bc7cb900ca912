import { Code, ConnectError } from "@connectrpc/connect";
import type http from "node:http";
import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip } from "node:zlib";

/**
 * Compressed request bodies are inflated here rather than by connect-node, so that what a
 * call costs to parse is known, and charged to its token, before anything parses it: a 1 KB
 * gzip body inflates to 1 MiB of JSON that takes JSON.parse a quarter of a second (see
 * `bodyRateLimit` in server.ts). connect-node then reads the body as if sent uncompressed
 * (see chargeBody in request-body.ts), with the outcomes it had: the same codes and
 * messages, the same size limit.
 */

/** The codings inflated here: the ones connect-node accepts. Others are left for it to refuse. */
const INFLATERS: Record<string, () => Transform> = {
  gzip: createGunzip,
  br: createBrotliDecompress,
};

/**
 * The coding a body's messages are compressed in, if it is one inflated here: gRPC and gRPC-Web
 * (`framed`) name it in grpc-encoding, the Connect protocol's unary calls in Content-Encoding.
 * Connect streaming names it elsewhere, but no method here streams, so connect-node refuses
 * such calls whatever their coding.
 */
export function codingOf(headers: http.IncomingHttpHeaders, type: string, framed: boolean): string | undefined {
  if (type.startsWith("application/connect+")) return undefined;
  const name = headers[framed ? "grpc-encoding" : "content-encoding"];
  return typeof name === "string" && Object.hasOwn(INFLATERS, name) ? name : undefined;
}

/**
 * Inflates off the event loop (libuv's thread pool), stopping past `maxBytes`. Failures are
 * connect-node's own errors, worded and coded as its decompression words them, so that an
 * answer does not depend on who inflated (its `internal` ones are then corrected in
 * framework-errors.ts), and say how much had come out (InflateFailure.inflated): what
 * inflating cost is charged to the caller whether or not it ends well.
 */
export function inflate(name: string, data: Buffer, maxBytes: number): Promise<Buffer> {
  // An empty body is no stream of this coding, but connect-node reads it as an empty message.
  if (data.length === 0) return Promise.resolve(data);
  return new Promise((resolve, reject) => {
    const inflater = INFLATERS[name]!();
    const parts: Buffer[] = [];
    let inflated = 0;
    const fail = (err: ConnectError) => {
      inflater.destroy();
      reject(Object.assign(err, { inflated }));
    };
    inflater.on("data", (chunk: Buffer) => {
      inflated += chunk.length;
      if (inflated > maxBytes) fail(new ConnectError(`message is larger than configured readMaxBytes ${maxBytes} after decompression`, Code.ResourceExhausted));
      else parts.push(chunk);
    });
    inflater.on("error", (err) => fail(inflateError(err)));
    inflater.on("end", () => resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, inflated)));
    inflater.end(data);
  });
}

/** A failed inflation, and how many bytes it had produced by then. */
export type InflateFailure = ConnectError & { inflated: number };

function inflateError(err: Error): ConnectError {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  const malformed = code === "Z_DATA_ERROR" || code === "ERR_PADDING_2" || code.startsWith("ERR__ERROR_FORMAT_");
  return new ConnectError("decompression failed", malformed ? Code.InvalidArgument : Code.Internal);
}
