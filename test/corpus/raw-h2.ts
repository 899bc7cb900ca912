// A raw HTTP/2 client that sends whatever frames it is told to, for what node's own client
// will not send (headers twice, frames out of order, settings never acknowledged).
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

const EVENTUALLY_MS = 10_000;
const later = <T>(ms: number, value: T) => new Promise<T>((r) => setTimeout(() => r(value), ms).unref());

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, GOAWAY: 7, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;
export const REFUSED_STREAM = 7;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK integer with an n-bit prefix (RFC 7541, 5.1). */
export function hpackInt(value: number, prefixBits: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([value]);
  const out = [max];
  for (value -= max; value >= 128; value >>= 7) out.push((value & 127) | 128);
  out.push(value);
  return Buffer.from(out);
}

/** A header as an HPACK literal without indexing, new name, no Huffman coding. */
export function literal(name: string, value: string): Buffer {
  const n = Buffer.from(name);
  const v = Buffer.from(value);
  return Buffer.concat([Buffer.from([0]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v]);
}

/** A header block as one HEADERS frame and as many CONTINUATION frames as the default frame size needs. */
export function headerFrames(streamId: number, block: Buffer): Buffer {
  const MAX_FRAME = 16_384;
  const frames: Buffer[] = [];
  for (let at = 0; at < block.length || at === 0; at += MAX_FRAME) {
    const last = at + MAX_FRAME >= block.length;
    frames.push(frame(at === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, last ? FLAG.END_HEADERS : 0, streamId, block.subarray(at, at + MAX_FRAME)));
  }
  return Buffer.concat(frames);
}

export function requestBlock(path: string, token: string): Buffer {
  return Buffer.concat([
    literal(":method", "POST"),
    literal(":scheme", "http"),
    literal(":path", path),
    literal(":authority", "127.0.0.1"),
    literal("content-type", "application/json"),
    literal("authorization", `Bearer ${token}`),
  ]);
}

export class RawH2 {
  /** Streams the server answered (a HEADERS frame came back). */
  readonly answered = new Set<number>();
  /** What the DATA frames of each stream brought. */
  readonly data = new Map<number, Buffer>();
  /** Streams the server reset, with the code. */
  readonly resets = new Map<number, number>();
  goaway: number | undefined;
  closed = false;
  /** The server's SETTINGS arrived (and, if asked to, were acknowledged). */
  settled = false;
  private buf = Buffer.alloc(0);
  private readonly closing: Promise<void>;

  private constructor(
    private readonly sock: net.Socket,
    private readonly ackSettings: boolean,
  ) {
    this.closing = new Promise((resolve) => sock.once("close", () => resolve()));
    sock.on("close", () => (this.closed = true));
    sock.on("error", () => {});
    sock.on("data", (d: Buffer) => this.read(d));
  }

  static async connect(port: number, options: { ackSettings?: boolean } = {}): Promise<RawH2> {
    const sock = net.connect(port, "127.0.0.1");
    await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
    const raw = new RawH2(sock, options.ackSettings ?? true);
    sock.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), frame(FRAME.SETTINGS, 0, 0)]));
    await raw.until(() => raw.settled);
    return raw;
  }

  send(bytes: Buffer): void {
    if (!this.sock.destroyed) this.sock.write(bytes);
  }

  async until(done: () => boolean): Promise<void> {
    const deadline = Date.now() + EVENTUALLY_MS;
    while (!done() && !this.closed && Date.now() < deadline) await sleep(20);
  }

  async closedWithin(ms: number): Promise<boolean> {
    return Promise.race([this.closing.then(() => true), later(ms, false)]);
  }

  destroy(): void {
    this.sock.destroy();
  }

  private read(data: Buffer): void {
    this.buf = Buffer.concat([this.buf, data]);
    while (this.buf.length >= 9) {
      const length = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + length) return;
      const type = this.buf[3]!;
      const flags = this.buf[4]!;
      const id = this.buf.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buf.subarray(9, 9 + length);
      this.buf = this.buf.subarray(9 + length);
      if (type === FRAME.SETTINGS && !(flags & FLAG.ACK)) {
        if (this.ackSettings) this.send(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        this.settled = true;
      }
      if (type === FRAME.HEADERS) this.answered.add(id);
      if (type === FRAME.DATA) this.data.set(id, Buffer.concat([this.data.get(id) ?? Buffer.alloc(0), payload]));
      if (type === FRAME.RST_STREAM) this.resets.set(id, payload.readUInt32BE(0));
      if (type === FRAME.GOAWAY) this.goaway = payload.readUInt32BE(4);
    }
  }
}
