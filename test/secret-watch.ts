import { appendFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import zlib from "node:zlib";
import type { Message } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import type { NodeHandler } from "../src/transport/http-server.js";

/**
 * Watches one test server for leaks. It learns every bearer token clients send and
 * every plaintext client secret and issued access token that passes through the API,
 * records every response, and at the end looks for those values in the database files,
 * the log lines and the responses. The harness runs it for every test server, so the
 * whole test run is covered.
 */
export class SecretWatch {
  private readonly tokens = new Set<string>();
  /** Tokens a response handed out: each may appear in that one response. */
  private readonly issued = new Set<string>();
  private readonly secrets = new Set<string>();
  /** Secrets too short or too common to search for without false alarms. */
  private skipped = 0;
  private readonly responses: Captured[] = [];
  /** Set by the tests that plant a leak on purpose to prove the watch finds it. */
  planted = false;

  /** Wraps the HTTP handler: notes bearer tokens and keeps a copy of each response. */
  wrap(handler: NodeHandler): NodeHandler {
    return (req, res) => {
      const auth = req.headers.authorization;
      const bearer = typeof auth === "string" ? /^Bearer\s+(\S+)/i.exec(auth)?.[1] : undefined;
      if (bearer !== undefined && TOKEN_SHAPE.test(bearer)) this.tokens.add(bearer);
      const captured: Captured = { headers: {}, chunks: [] };
      this.responses.push(captured);
      const r = res as unknown as Record<string, (...args: unknown[]) => unknown>;
      const keep = (chunk: unknown) => {
        if (typeof chunk === "string") captured.chunks.push(Buffer.from(chunk));
        else if (chunk instanceof Uint8Array) captured.chunks.push(Buffer.from(chunk));
      };
      for (const name of ["write", "end"] as const) {
        const original = r[name]!.bind(res);
        r[name] = (chunk?: unknown, ...rest: unknown[]) => {
          if (typeof chunk !== "function") keep(chunk);
          return original(chunk, ...rest);
        };
      }
      const writeHead = r.writeHead!.bind(res);
      r.writeHead = (status: unknown, ...rest: unknown[]) => {
        for (const arg of rest) if (arg && typeof arg === "object") Object.assign(captured.headers, arg);
        return writeHead(status, ...rest);
      };
      const addTrailers = r.addTrailers?.bind(res);
      if (addTrailers) {
        r.addTrailers = (trailers: unknown) => {
          captured.chunks.push(Buffer.from(JSON.stringify(trailers)));
          return addTrailers(trailers);
        };
      }
      res.once("close", () => Object.assign(captured.headers, res.getHeaders?.() ?? {}));
      handler(req, res);
    };
  }

  /** An interceptor that notes secrets in requests and tokens in responses. */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      if (!req.stream) this.noteRequest(req.message);
      const res = await next(req);
      if (!res.stream) {
        const token = (res.message as { accessToken?: unknown }).accessToken;
        if (typeof token === "string" && TOKEN_SHAPE.test(token)) {
          this.tokens.add(token);
          this.issued.add(token);
        }
      }
      return res;
    };
  }

  /** Notes a token a test made without the API (e.g. straight in the database). */
  noteToken(token: string): void {
    this.tokens.add(token);
  }

  /** Notes a client secret sent to a server this watch does not wrap (e.g. a child process). */
  noteSecret(secret: string): void {
    this.secrets.add(secret);
  }

  private noteRequest(message: Message): void {
    const secret = (message as { oauthPlaintextClientSecret?: unknown }).oauthPlaintextClientSecret;
    if (typeof secret !== "string" || secret === "") return;
    // A short value, or one the request also sends in a field that is stored as is
    // (fuzzed requests do that), would be found for reasons that are no leak.
    const others = Object.entries(message).filter(([k, v]) => k !== "oauthPlaintextClientSecret" && typeof v === "string");
    if (secret.length < 6 || others.some(([, v]) => (v as string).includes(secret))) {
      this.skipped++;
      return;
    }
    this.secrets.add(secret);
  }

  /**
   * Looks for every noted value in `files` (read now; missing ones are skipped), in the
   * log lines and in the responses; answers where each was found.
   */
  scan(files: string[], logs: readonly string[]): ScanResult {
    const places: [string, Buffer][] = [];
    for (const file of files) if (existsSync(file)) places.push([file.split("/").pop()!, readFileSync(file)]);
    places.push(["logs", Buffer.from(logs.join(""))]);
    const responses = this.responses.map((r) => Buffer.concat(readable(r)));
    const leaks: string[] = [];
    const values: [string, string][] = [
      ...[...this.tokens].map((t) => ["token", t] as [string, string]),
      ...[...this.secrets].map((s) => ["client secret", s] as [string, string]),
    ];
    for (const [kind, value] of values) {
      for (const [i, form] of encodings(value).entries()) {
        for (const [where, bytes] of places) {
          if (bytes.includes(form)) leaks.push(`${kind} ${mask(value)} found in ${where}`);
        }
        const inResponses = responses.filter((body) => body.includes(form)).length;
        const allowed = kind === "token" && this.issued.has(value) && i === 0 ? 1 : 0;
        if (inResponses > allowed) leaks.push(`${kind} ${mask(value)} found in ${inResponses} responses (allowed: ${allowed})`);
      }
    }
    return {
      tokens: this.tokens.size,
      secrets: this.secrets.size,
      skipped: this.skipped,
      bytes: places.reduce((n, [, b]) => n + b.length, 0) + responses.reduce((n, b) => n + b.length, 0),
      responses: this.responses.length,
      leaks,
    };
  }
}

export interface ScanResult {
  tokens: number;
  secrets: number;
  skipped: number;
  bytes: number;
  responses: number;
  leaks: string[];
}

/** Appends one server's figures to $SECRET_SCAN_REPORT, which `npm test` sums up at the end. */
export function report(result: ScanResult, planted: boolean): void {
  const file = process.env.SECRET_SCAN_REPORT;
  if (!file) return;
  mkdirSync(dirname(file), { recursive: true });
  appendFileSync(file, JSON.stringify({ ...result, leaks: result.leaks.length, planted }) + "\n");
}

interface Captured {
  headers: Record<string, unknown>;
  chunks: Buffer[];
}

const TOKEN_SHAPE = /^scm(api|run)_[A-Za-z0-9_-]{43}$/;

/** A response as a reader would see it: headers, and the body with compression undone. */
function readable(r: Captured): Buffer[] {
  const header = (name: string) => String(r.headers[name] ?? "");
  let body: Buffer = Buffer.concat(r.chunks);
  try {
    body = decompress(body, header("content-encoding"));
    if (header("content-type").startsWith("application/grpc")) body = grpcMessages(body, header("grpc-encoding"));
  } catch {
    // Not in the shape the headers claim (e.g. a truncated error): searched as it is.
  }
  return [Buffer.from(JSON.stringify(r.headers)), body];
}

function decompress(body: Buffer, encoding: string): Buffer {
  if (encoding === "gzip") return zlib.gunzipSync(body);
  if (encoding === "br") return zlib.brotliDecompressSync(body);
  if (encoding === "deflate") return zlib.inflateSync(body);
  return body;
}

/** The messages of a gRPC body, each undone from its own compression. */
function grpcMessages(body: Buffer, encoding: string): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  while (at + 5 <= body.length) {
    const compressed = (body[at]! & 1) === 1;
    const length = body.readUInt32BE(at + 1);
    const message = body.subarray(at + 5, at + 5 + length);
    out.push(compressed ? decompress(message, encoding) : message);
    at += 5 + length;
  }
  out.push(body.subarray(at));
  return Buffer.concat(out);
}

/** The forms a careless store or log might write a value in. */
function encodings(value: string): Buffer[] {
  const raw = Buffer.from(value);
  return [raw, Buffer.from(raw.toString("base64")), Buffer.from(raw.toString("base64url")), Buffer.from(raw.toString("hex"))];
}

function mask(value: string): string {
  return `${value.slice(0, 4)}…(${value.length} chars)`;
}
