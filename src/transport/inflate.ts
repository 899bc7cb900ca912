import { Code, ConnectError } from "@connectrpc/connect";
import type http from "node:http";
import { brotliDecompress, gunzip, type InputType, type ZlibOptions } from "node:zlib";

/**
 * Compressed request bodies are inflated here rather than by connect-node, so that what a
 * call costs to parse is known, and charged to its token, before anything parses it: a 1 KB
 * gzip body inflates to 1 MiB of JSON that takes JSON.parse a quarter of a second (see
 * `bodyRateLimit` in server.ts). connect-node then reads the body as if sent uncompressed
 * (see inflatedChunks in request-body.ts), with the outcomes it had: the same codes and
 * messages, the same size limit.
 */

/** The codings inflated here: the ones connect-node accepts. Others are left for it to refuse. */
const INFLATERS: Record<string, (data: InputType, options: ZlibOptions, done: (err: Error | null, out: Buffer) => void) => void> = {
  gzip: gunzip,
  br: brotliDecompress,
};

/** How a request's body is compressed, if it is in a coding inflated here. */
export interface Coding {
  name: string;
  /** gRPC and gRPC-Web: messages in frames, each saying whether it is compressed. */
  framed: boolean;
}

/** The coding of `headers`' body if this module inflates it; undefined for a body left as it is. */
export function codingOf(headers: http.IncomingHttpHeaders): Coding | undefined {
  const type = (headers["content-type"] ?? "").toLowerCase();
  const framed = type.startsWith("application/grpc");
  // Connect streaming frames its messages under connect-content-encoding; no method here
  // streams, so connect-node refuses such calls whatever their coding.
  if (type.startsWith("application/connect+")) return undefined;
  const name = headers[framed ? "grpc-encoding" : "content-encoding"];
  return typeof name === "string" && Object.hasOwn(INFLATERS, name) ? { name, framed } : undefined;
}

/**
 * Inflates off the event loop (libuv's thread pool), stopping past `maxBytes`. Failures are
 * connect-node's own errors, worded and coded as its decompression words them, so that an
 * answer does not depend on who inflated (its `internal` ones are then corrected as before,
 * see framework-errors.ts).
 */
export function inflate(name: string, data: Buffer, maxBytes: number): Promise<Buffer> {
  // An empty body is no stream of this coding, but connect-node reads it as an empty message.
  if (data.length === 0) return Promise.resolve(data);
  return new Promise((resolve, reject) => {
    INFLATERS[name]!(data, { maxOutputLength: maxBytes }, (err, out) => (err ? reject(inflateError(err, maxBytes)) : resolve(out)));
  });
}

function inflateError(err: Error, maxBytes: number): ConnectError {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  if (code === "ERR_BUFFER_TOO_LARGE") return new ConnectError(`message is larger than configured readMaxBytes ${maxBytes} after decompression`, Code.ResourceExhausted);
  const malformed = code === "Z_DATA_ERROR" || code === "ERR_PADDING_2" || code.startsWith("ERR__ERROR_FORMAT_");
  return new ConnectError("decompression failed", malformed ? Code.InvalidArgument : Code.Internal);
}
