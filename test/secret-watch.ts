import assert from "node:assert/strict";
import { appendFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import zlib from "node:zlib";
import { fromBinary, type DescMessage } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { RunnerConfigurationService } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { RunnerInteractionService } from "../gen/gitpod/v1/runner_interactions_pb.js";
import { RunnerService } from "../gen/gitpod/v1/runners_pb.js";
import type { NodeHandler } from "../src/transport/http-server.js";
import { MAX_REQUEST_BYTES } from "../src/transport/request-body.js";

/**
 * Watches one test server for leaks. It learns every bearer token clients send, every
 * plaintext client secret in a request body (read on the wire, so requests that auth or
 * the rate limit refuse count too) and every issued access token, records every response,
 * and at the end looks for those values in the database files, the log lines and the
 * responses. Every server the tests start is watched, so the whole test run is covered:
 * in-process ones through wrap() and interceptor(), child processes through noteSent(),
 * noteReceived() or fetch() for what the test sends and gets.
 */
export class SecretWatch {
  private readonly tokens = new Set<string>();
  /** Tokens a response handed out: each may appear in that one response. */
  private readonly issued = new Set<string>();
  private readonly secrets = new Set<string>();
  /** Secrets too short or too common to search for without false alarms. */
  private readonly skipped = new Set<string>();
  private readonly responses: Captured[] = [];
  /** Requests whose bodies are still to be read for secrets (their answers are not done yet). */
  private readonly pending = new Set<() => void>();
  /** Set by the tests that plant a leak on purpose to prove the watch finds it. */
  planted = false;

  /** Wraps the HTTP handler: notes bearer tokens and request bodies, keeps a copy of each response. */
  wrap(handler: NodeHandler): NodeHandler {
    return (req, res) => {
      const body = tap(req);
      // By the time the answer is done the server has read all of the body it ever will.
      const settle = () => {
        this.pending.delete(settle);
        this.noteSent(req.url ?? "", req.headers, body.bytes());
      };
      this.pending.add(settle);
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
      res.once("close", () => {
        Object.assign(captured.headers, res.getHeaders?.() ?? {});
        settle();
      });
      handler(req, res);
    };
  }

  /** An interceptor that notes secrets in requests and tokens in responses. */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      if (!req.stream) this.noteRequest(req.message);
      const res = await next(req);
      if (!res.stream) this.noteIssued(res.message);
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

  /**
   * Notes the bearer token and the client secrets of a request as it goes over the wire, in
   * any protocol the server speaks. A body that cannot be made sense of is left out: the
   * server cannot read a secret out of it either.
   */
  noteSent(path: string, headers: HeaderMap, body: string | Uint8Array): void {
    const bearer = /^Bearer\s+(\S+)/i.exec(header(headers, "authorization"))?.[1];
    if (bearer !== undefined && TOKEN_SHAPE.test(bearer)) this.tokens.add(bearer);
    try {
      for (const message of requestMessages(path, headers, Buffer.from(body))) this.noteRequest(message);
    } catch {
      // Malformed on purpose (the fuzzer, the limit tests): refused before anything is stored.
    }
  }

  /**
   * Keeps a response a test received from a server this watch does not wrap, as the client
   * read it (already decompressed), and notes the token it may have issued.
   */
  noteReceived(headers: HeaderMap, body: string | Uint8Array): void {
    const bytes = Buffer.from(body);
    this.responses.push({ headers: { ...headers }, chunks: [bytes], decoded: true });
    try {
      this.noteIssued(JSON.parse(bytes.toString("utf8")));
    } catch {
      // Not JSON, so not an answer that issues a token.
    }
  }

  /** fetch, with what is sent and received noted: for a server this watch does not wrap. */
  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = Object.fromEntries(new Headers(init.headers));
    this.noteSent(new URL(url).pathname, headers, typeof init.body === "string" ? init.body : "");
    const res = await fetch(url, init);
    const body = Buffer.from(await res.arrayBuffer());
    this.noteReceived(Object.fromEntries(res.headers), body);
    return new Response(body.length > 0 ? body : null, { status: res.status, statusText: res.statusText, headers: res.headers });
  }

  private noteIssued(message: unknown): void {
    const token = (message as { accessToken?: unknown } | null)?.accessToken;
    if (typeof token === "string" && TOKEN_SHAPE.test(token)) {
      this.tokens.add(token);
      this.issued.add(token);
    }
  }

  /** Notes the secret of a request message, decoded or as parsed JSON (either field spelling). */
  private noteRequest(message: object): void {
    const fields = Object.entries(message);
    const isSecret = (k: string) => k === "oauthPlaintextClientSecret" || k === "oauth_plaintext_client_secret";
    // A short value, or one the request also sends in a field that is stored as is
    // (fuzzed requests do that), would be found for reasons that are no leak.
    const others = fields.filter(([k, v]) => !isSecret(k) && typeof v === "string").map(([, v]) => v as string);
    for (const [k, secret] of fields) {
      if (!isSecret(k) || typeof secret !== "string" || secret === "") continue;
      if (secret.length < 6 || others.some((v) => v.includes(secret))) this.skipped.add(secret);
      else this.secrets.add(secret);
    }
  }

  /**
   * Looks for every noted value in `files` (read now; missing ones are skipped), in the
   * log lines and in the responses; answers where each was found.
   */
  scan(files: string[], logs: readonly string[]): ScanResult {
    for (const settle of [...this.pending]) settle();
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
      // A value skipped in one request but searched for another one is searched.
      skipped: [...this.skipped].filter((s) => !this.secrets.has(s)).length,
      bytes: places.reduce((n, [, b]) => n + b.length, 0) + responses.reduce((n, b) => n + b.length, 0),
      responses: this.responses.length,
      leaks,
    };
  }

  /**
   * Ends the watch of a server on the SQLite file `dbFile`: scans it with its -wal and -shm
   * and the log, adds the figures to $SECRET_SCAN_REPORT and fails on any leak. `closeDb`,
   * for a database this process holds open, runs before a second scan of the main file
   * alone, since closing folds the WAL into it.
   */
  finish(dbFile: string, logs: readonly string[], closeDb?: () => void): ScanResult {
    const open = this.scan([dbFile, `${dbFile}-wal`, `${dbFile}-shm`], logs);
    const leaks = [...open.leaks];
    if (closeDb) {
      closeDb();
      leaks.push(...this.scan([dbFile], []).leaks);
    }
    report(open, this.planted);
    assert.deepEqual(leaks, [], "tokens or client secrets leaked");
    return open;
  }
}

/**
 * The log lines of a child process's stdout: its JSON lines. The first-start message,
 * which shows the new API token once on purpose, is not one.
 */
export function logLines(stdout: string): string[] {
  return stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => `${l}\n`);
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
  /** Kept as a client read it: already decompressed. */
  decoded?: boolean;
}

/** Request or response headers, as node or fetch give them. */
export type HeaderMap = Record<string, unknown>;

function header(headers: HeaderMap, name: string): string {
  const value = headers[name];
  return Array.isArray(value) ? String(value[0] ?? "") : String(value ?? "");
}

/** Each procedure's request type, to read binary bodies as the server will. */
const INPUTS = new Map<string, DescMessage>(
  [RunnerService, RunnerConfigurationService, RunnerInteractionService].flatMap((s) =>
    s.methods.map((m) => [`/${s.typeName}/${m.name}`, m.input] as [string, DescMessage]),
  ),
);

/**
 * Copies a request body as the server reads it: every chunk read goes through "data",
 * whether the stream flows or is read by its iterator, so watching there changes nothing
 * about how or whether it is read. Bodies past the server's limit are refused unread: no
 * need to keep them.
 */
function tap(req: Parameters<NodeHandler>[0]): { bytes(): Buffer } {
  const chunks: Buffer[] = [];
  let size = 0;
  const stream = req as unknown as { emit(event: string | symbol, ...args: unknown[]): boolean };
  const emit = stream.emit.bind(req);
  stream.emit = (event, ...args) => {
    const chunk = args[0];
    if (event === "data" && size <= MAX_REQUEST_BYTES && (chunk instanceof Uint8Array || typeof chunk === "string")) {
      const copy = Buffer.from(chunk);
      chunks.push(copy);
      size += copy.length;
    }
    return emit(event, ...args);
  };
  return { bytes: () => (size > MAX_REQUEST_BYTES ? Buffer.alloc(0) : Buffer.concat(chunks)) };
}

/**
 * The messages of a request body: Connect unary (possibly compressed), or enveloped for
 * gRPC, gRPC-Web and Connect streaming; JSON parsed, binary decoded as the procedure's
 * request type. Connect GET, with the message in the URL, is not served here: no method
 * is marked free of side effects.
 */
function requestMessages(path: string, headers: HeaderMap, body: Buffer): object[] {
  if (body.length === 0) return [];
  const type = header(headers, "content-type").toLowerCase();
  const messages = /^application\/(grpc|connect\+)/.test(type)
    ? envelopes(body, header(headers, "grpc-encoding") || header(headers, "connect-content-encoding"))[0]
    : [decompress(body, header(headers, "content-encoding"))];
  const schema = INPUTS.get(path.split("?")[0]!);
  const out: object[] = [];
  for (const m of messages) {
    const message: unknown = type.includes("json") ? JSON.parse(m.toString("utf8")) : schema && fromBinary(schema, m);
    if (message && typeof message === "object") out.push(message);
  }
  return out;
}

const TOKEN_SHAPE = /^scm(api|run)_[A-Za-z0-9_-]{43}$/;

/** A response as a reader would see it: headers, and the body with compression undone. */
function readable(r: Captured): Buffer[] {
  let body: Buffer = Buffer.concat(r.chunks);
  if (r.decoded) return [Buffer.from(JSON.stringify(r.headers)), body];
  try {
    body = decompress(body, header(r.headers, "content-encoding"));
    if (header(r.headers, "content-type").startsWith("application/grpc")) body = Buffer.concat(envelopes(body, header(r.headers, "grpc-encoding")).flat());
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

/** The messages of an enveloped body, each undone from its own compression, and what is left after the last whole one. */
function envelopes(body: Buffer, encoding: string): [Buffer[], Buffer] {
  const out: Buffer[] = [];
  let at = 0;
  while (at + 5 <= body.length) {
    const compressed = (body[at]! & 1) === 1;
    const length = body.readUInt32BE(at + 1);
    const message = body.subarray(at + 5, at + 5 + length);
    out.push(compressed ? decompress(message, encoding) : message);
    at += 5 + length;
  }
  return [out, body.subarray(at)];
}

/**
 * The forms a careless store or log might write a value in, raw first, each once: raw,
 * base64, hex, and as a JSON string holds it (escaped as JSON.stringify does, and with
 * all non-ASCII as \u escapes, as ASCII-only encoders do).
 */
function encodings(value: string): Buffer[] {
  const raw = Buffer.from(value);
  const escaped = JSON.stringify(value).slice(1, -1);
  const ascii = escaped.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  const forms = [raw.toString(), raw.toString("base64"), raw.toString("base64url"), raw.toString("hex"), escaped, ascii];
  return [...new Set(forms)].map((f) => Buffer.from(f));
}

function mask(value: string): string {
  return `${value.slice(0, 4)}…(${value.length} chars)`;
}
