/**
 * What the limits tests share: a server started as the harness starts one but with its own
 * HTTP server options (startLimited), a self-signed certificate, a second connection holding
 * the database's write lock, raw and slow connections, and the reading of the log lines of
 * requests node answers before the handler. Not a test file itself.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { createLogger } from "../src/log.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { createApp } from "../src/server.js";
import { openDatabase, type Db } from "../src/store/database.js";
import { listen, type HttpServerOptions, type RunningServer } from "../src/transport/http-server.js";
import { PUBLIC_URL } from "./harness.js";
import { SecretWatch } from "./secret-watch.js";

export const MIB = 1024 * 1024;
/** How long any "eventually" below may take; generous, for a slow machine. */
export const EVENTUALLY_MS = 10_000;

export interface LimitedServer {
  url: string;
  port: number;
  token: string;
  db: Db;
  /** The database file, for a second connection that holds its write lock. */
  file: string;
  server: RunningServer;
  /** The service's log lines so far. */
  logs: string[];
  close(): Promise<void>;
}

/** A server built as the harness builds one (leak watch included), but with these HTTP server options. */
export async function startLimited(options: HttpServerOptions): Promise<LimitedServer> {
  const dir = mkdtempSync(join(tmpdir(), "scm-limits-"));
  const file = join(dir, "test.db");
  const db = openDatabase(file);
  createOrganization(db, "acme");
  const token = createApiToken(db, "acme").token;
  const logs: string[] = [];
  const watch = new SecretWatch();
  watch.noteToken(token);
  const app = createApp(db, createLogger("info", (l) => logs.push(l)), { publicUrl: PUBLIC_URL, interceptors: [watch.interceptor()] });
  const server = await listen(watch.wrap(app.handler), 0, "127.0.0.1", { ...app.listenOptions, ...options });
  return {
    url: `http://127.0.0.1:${server.address.port}`,
    port: server.address.port,
    token,
    db,
    file,
    server,
    logs,
    async close() {
      await server.shutdown(500);
      await app.close();
      try {
        watch.finish(file, logs, () => db.$client.close());
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** A fresh folder holding a self-signed certificate for 127.0.0.1 and its key. */
export function selfSigned(): { dir: string; cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "scm-limits-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "pipe" });
  return { dir, cert, key };
}

/** A write lock on `file` held by another connection, so that a create waits for it; `released` says whether it still is held. */
export function holdWriteLockOf(file: string) {
  const holder = new Database(file);
  holder.exec("BEGIN IMMEDIATE");
  const lock = {
    released: false,
    release() {
      if (lock.released) return;
      lock.released = true;
      holder.exec("COMMIT");
      holder.close();
    },
  };
  return lock;
}

/** A raw TCP connection to `port`, once connected: what it received so far, and its close. */
export async function rawConnection(port: number) {
  const sock = net.connect(port, "127.0.0.1");
  sock.on("error", () => {});
  let text = "";
  sock.on("data", (d: Buffer) => (text += d.toString("latin1")));
  const closed = new Promise<"closed">((resolve) => sock.once("close", () => resolve("closed")));
  await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
  return { sock, closed, received: () => text };
}

export const portOf = (url: string) => Number(new URL(url).port);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves after `ms` without keeping the process alive: the loser of a race with the real outcome. */
export const later = <T>(ms: number, value: T) => new Promise<T>((r) => setTimeout(() => r(value), ms).unref());

/**
 * Opens a connection with `connect`, writes `first`, then `dripBytes` every 100 ms (none if
 * empty) until the server closes the connection; gives up after EVENTUALLY_MS.
 */
export function slowExchange(connect: (onConnect: () => void) => net.Socket, first: string, dripBytes: string) {
  return new Promise<{ response: string; closedByServer: boolean; drips: number }>((resolve) => {
    let response = "";
    let drips = 0;
    // The drips start once the first bytes are written: over TLS the connection is made only
    // after its handshake, and a drip queued before then (a slow handshake on a busy machine)
    // would go out ahead of the request line.
    let timer: ReturnType<typeof setInterval> | undefined;
    const sock = connect(() => {
      sock.write(first);
      timer = setInterval(() => {
        if (dripBytes !== "") {
          drips++;
          sock.write(dripBytes);
        }
      }, 100);
    });
    let gaveUp = false;
    const giveUp = setTimeout(() => {
      gaveUp = true;
      sock.destroy();
    }, EVENTUALLY_MS);
    sock.on("data", (d) => (response += d.toString("latin1")));
    sock.on("error", () => {});
    sock.on("close", () => {
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ response, closedByServer: !gaveUp, drips });
    });
  });
}
export function headerOf(response: string, name: string): string | undefined {
  const head = response.split("\r\n\r\n")[0] ?? "";
  const line = head.split("\r\n").find((l) => l.toLowerCase().startsWith(`${name}:`));
  return line?.slice(name.length + 1).trim();
}

export type LogLine = { msg?: string; request_id?: string; procedure?: string | null; code?: string; http_status?: number | null; protocol?: string | null; duration_ms?: number | null; reason?: string };

export const CONNECT_REFUSED = "method not allowed: this service is not a proxy, and takes no CONNECT\n";

/** Sends an HTTP/2 CONNECT on the session, closes it, and answers the status and body. */
export async function http2Connect(session: http2.ClientHttp2Session): Promise<[number, string]> {
  session.on("error", () => {});
  try {
    const stream = session.request({ ":method": "CONNECT", ":authority": "example.com:443" });
    stream.on("error", () => {});
    const status = await new Promise<number>((resolve) => stream.on("response", (h) => resolve(Number(h[":status"]))));
    let text = "";
    stream.on("data", (d: Buffer) => (text += d.toString()));
    await new Promise((resolve) => stream.once("end", resolve));
    return [status, text];
  } finally {
    session.close();
  }
}

/** The log lines of requests answered before the handler saw them (they have a reason), once `count` are there. */
export async function nodeAnswerLines(s: LimitedServer, count: number): Promise<LogLine[]> {
  const found = () => s.logs.map((l) => JSON.parse(l) as LogLine).filter((l) => l.msg === "request" && l.reason !== undefined);
  for (const t0 = Date.now(); found().length < count && Date.now() - t0 < EVENTUALLY_MS; ) await sleep(20);
  return found();
}

/** What a client that goes on sending after its answer met (see sendOnAfterAnswer). */
export interface SentOn {
  /** Everything the server sent. */
  response: string;
  /** The error the rest of the sending met (a reset: EPIPE, ECONNRESET), if any. */
  failure: string | undefined;
  /** How the connection ended: "ended" (the server's FIN, then the client's), "closed by an error", or "still open" after EVENTUALLY_MS. */
  end: string;
}

/**
 * Connects (half-open allowed, as HTTP clients are: the server's end of sending does not
 * stop the client's), writes `first`, waits until what came back matches `answered`, then
 * writes `rest` in 64 KiB pieces as the connection takes them, waits for the server to end
 * the connection, and ends it too. A server that closes at once, with the client still
 * sending, resets the connection instead.
 */
export async function sendOnAfterAnswer(connect: () => net.Socket, first: string | Buffer, answered: RegExp, rest: Buffer): Promise<SentOn> {
  const sock = connect();
  let response = "";
  let failure: string | undefined;
  sock.on("data", (d: Buffer) => (response += d.toString("latin1")));
  sock.on("error", (e: NodeJS.ErrnoException) => (failure ??= e.code ?? e.message));
  const ended = new Promise<string>((resolve) => sock.once("end", () => resolve("ended")));
  const closed = new Promise<string>((resolve) => sock.once("close", (hadError: boolean) => resolve(hadError ? "closed by an error" : "closed")));
  try {
    await Promise.race([new Promise((r) => sock.once(sock instanceof tls.TLSSocket ? "secureConnect" : "connect", r)), closed]);
    sock.write(first);
    for (const t0 = Date.now(); !answered.test(response) && !sock.destroyed && Date.now() - t0 < EVENTUALLY_MS; ) await sleep(10);
    for (let at = 0; at < rest.length && !sock.destroyed; at += 64 * 1024) {
      if (!sock.write(rest.subarray(at, at + 64 * 1024))) await Promise.race([new Promise((r) => sock.once("drain", r)), closed]);
    }
    let end = await Promise.race([ended, closed, later(EVENTUALLY_MS, "still open")]);
    if (end === "ended") {
      sock.end();
      const last = await Promise.race([closed, later(EVENTUALLY_MS, "still open")]);
      if (last !== "closed") end = last;
    }
    return { response, failure, end };
  } finally {
    sock.destroy();
  }
}

/**
 * Connects (half-open allowed), writes `first`, waits for the server to end its side, then
 * sends nothing but a byte every 100 ms, keeping its own side open: answers the error that
 * ends the connection (EPIPE, ECONNRESET: the server closed it) or "still open" after EVENTUALLY_MS.
 */
export async function quietAfterAnswer(connect: () => net.Socket, first: string): Promise<string> {
  const sock = connect();
  let failure: string | undefined;
  sock.on("error", (e: NodeJS.ErrnoException) => (failure ??= e.code ?? e.message));
  sock.resume();
  try {
    await new Promise((r) => sock.once("connect", r));
    sock.write(first);
    await Promise.race([new Promise((r) => sock.once("end", r)), later(EVENTUALLY_MS, "")]);
    for (const t0 = Date.now(); failure === undefined && Date.now() - t0 < EVENTUALLY_MS; await sleep(100)) sock.write("a");
    return failure ?? "still open";
  } finally {
    sock.destroy();
  }
}
