import { Code, ConnectError } from "@connectrpc/connect";
import type http from "node:http";
import { brotliDecompress, gunzip, type InputType, type ZlibOptions } from "node:zlib";

/**
 * Compressed request bodies are inflated here rather than by connect-node, so that what a
 * call costs to parse is known, and charged to its token, before anything parses it: a 1 KB
 * gzip body inflates to 1 MiB of JSON that takes JSON.parse a quarter of a second (see
 * `bodyRateLimit` in server.ts). connect-node then reads the body as sent uncompressed: the
 * Connect protocol's Content-Encoding is dropped, and each compressed gRPC or gRPC-Web
 * message is replaced by its inflated bytes with the compressed flag cleared. The outcomes
 * are connect-node's own: the same codes and messages, the same size limit.
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

/** The body as connect-node is to read it: inflated, within `maxBytes` a message. */
export async function inflateBody(coding: Coding, body: Buffer, maxBytes: number): Promise<Buffer> {
  return coding.framed ? inflateFrames(coding.name, body, maxBytes) : inflate(coding.name, body, maxBytes);
}

/**
 * Each compressed frame inflated, its flag cleared. Framing that does not parse is passed on
 * from where it stops, as it came, for connect-node to refuse as it would have: only frames
 * already read are inflated, so nothing compressed reaches it.
 */
async function inflateFrames(name: string, body: Buffer, maxBytes: number): Promise<Buffer> {
  const out: Buffer[] = [];
  let at = 0;
  while (body.length - at >= 5) {
    const length = body.readUInt32BE(at + 1);
    if (body.length - at - 5 < length) break;
    const flags = body[at]!;
    let message = body.subarray(at + 5, at + 5 + length);
    if (flags & 1) message = await inflate(name, message, maxBytes);
    const prefix = Buffer.alloc(5);
    prefix[0] = flags & ~1;
    prefix.writeUInt32BE(message.length, 1);
    out.push(prefix, message);
    at += 5 + length;
  }
  if (at === 0) return body;
  out.push(body.subarray(at));
  return Buffer.concat(out);
}

/** Inflates off the event loop (libuv's thread pool), stopping at `maxBytes`. */
function inflate(name: string, data: Buffer, maxBytes: number): Promise<Buffer> {
  // An empty body is no message of this coding, but connect-node reads it as an empty one.
  if (data.length === 0) return Promise.resolve(data);
  return new Promise((resolve, reject) => {
    INFLATERS[name]!(data, { maxOutputLength: maxBytes }, (err, out) => {
      if (!err) return resolve(out);
      // Worded as connect-node words both, so that an answer does not depend on who inflated.
      if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
        reject(new ConnectError(`message is larger than configured readMaxBytes ${maxBytes} after decompression`, Code.ResourceExhausted));
      } else {
        reject(new ConnectError("request could not be decoded: decompression failed", Code.InvalidArgument));
      }
    });
  });
}
