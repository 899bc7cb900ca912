import { existsSync, statSync, type Stats } from "node:fs";
import { isIP } from "node:net";
import { isDotSegment } from "./domain/host.js";
import { organizationNameProblem, plainUrlProblem } from "./domain/checks.js";
import { editDistance } from "./domain/text.js";

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

/** Everything the service reads from its environment, checked once at start. */
export interface Config {
  host: string;
  port: number;
  /** Path of the SQLite database file. */
  databaseFile: string;
  logLevel: LogLevel;
  /** With both set, the service speaks HTTPS (h2 and http/1.1 by ALPN). */
  tlsCertFile: string | undefined;
  tlsKeyFile: string | undefined;
  /** How often the certificate files are looked at for a renewal; 0 never. */
  tlsReloadCheckMs: number;
  /** Web origins whose pages may call the service from a browser (CORS); none when empty. */
  corsOrigins: readonly string[] | "*";
  /** The address clients use to reach this service; used in printed examples and callback URLs. */
  publicUrl: string;
  /** Whether PUBLIC_URL set it; else it is made from HOST and PORT (see `publicUrlOn`). */
  publicUrlGiven: boolean;
  /** How long a shutdown waits for in-flight requests. */
  shutdownTimeoutMs: number;
  /** Name of the organization created on the first start. */
  bootstrapOrgName: string;
  /** Worker processes sharing the port and the database; 1 serves from the main process. */
  workers: number;
  /** Calls per second each token may make, with bursts up to `rateLimitBurst`; 0 turns the limit off. */
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  /** Bytes of request body per second each token may send (a compressed body counted inflated), with bursts up to `rateLimitBytesBurst` (and one body past it); 0 turns it off. */
  rateLimitBytesPerSecond: number;
  rateLimitBytesBurst: number;
  /** How long a create's Idempotency-Key is remembered. */
  idempotencyTtlMs: number;
  /** How long a client may take over a request's headers (HTTP/1.1) or to open its first HTTP/2 stream. */
  headersTimeoutMs: number;
  /** How long a client may take to send a whole request (HTTP/1.1, and each HTTP/2 stream). */
  requestTimeoutMs: number;
  /** An HTTP/2 connection without any traffic for this long is closed. */
  idleTimeoutMs: number;
  /** Where `GET /metrics` is served, on a listener of its own; null: not served. */
  metrics: { host: string; port: number } | null;
}

/** A configuration problem; main prints its message and exits without starting. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error", "silent"];

/** Every variable the service reads (see README, "Configuration"). */
export const SETTINGS = [
  "PORT", "HOST", "DATABASE_URL", "LOG_LEVEL", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_RELOAD_CHECK_MS", "CORS_ALLOWED_ORIGINS",
  "PUBLIC_URL", "SHUTDOWN_TIMEOUT_MS", "BOOTSTRAP_ORG_NAME", "WORKERS", "RATE_LIMIT_PER_SECOND", "RATE_LIMIT_BURST",
  "RATE_LIMIT_BYTES_PER_SECOND", "RATE_LIMIT_BYTES_BURST", "IDEMPOTENCY_TTL_SECONDS", "HEADERS_TIMEOUT_MS", "REQUEST_TIMEOUT_MS",
  "IDLE_TIMEOUT_MS", "METRICS_PORT", "METRICS_HOST",
] as const;

/**
 * Variables set that are not settings but read like a misspelling of one (`DATABSE_URL`,
 * `DATABASE_PATH`, `LOGLEVEL`, `IDLE_TIMEOUT`, `WORKER`, `HOTS`), each with the setting it likely meant. Nothing reads them:
 * a typo in DATABASE_URL would otherwise start a new empty database without a word. A near
 * name must begin as the setting does (OpenSSL's SSL_CERT_FILE is not TLS_CERT_FILE), and one
 * near a short setting must be nearer (HOME is not HOST).
 */
export function misspelledSettings(env: NodeJS.ProcessEnv = process.env): { given: string; meant: string }[] {
  const known = new Set<string>(SETTINGS);
  const squash = (name: string) => name.toUpperCase().replaceAll("_", "");
  const found: { given: string; meant: string }[] = [];
  for (const given of Object.keys(env)) {
    if (known.has(given) || given.length < 3) continue;
    const upper = given.toUpperCase();
    const meant =
      // The database's file by another name (DATABASE_PATH, DB_URL), most costly to get wrong.
      (/^(?:DATABASE|DB)(?:_|$)/.test(upper) ? "DATABASE_URL" : undefined) ??
      SETTINGS.find(
        (s) =>
          squash(s) === squash(given) ||
          // A setting without its unit or kind (IDLE_TIMEOUT, TLS_CERT).
          ["_MS", "_URL", "_FILE", "_SECONDS"].some((suffix) => squash(s) === squash(given + suffix)) ||
          (s[0] === upper[0] && editDistance(s, upper, 3) <= (s.length <= 4 ? 1 : 2)),
      );
    if (meant) found.push({ given, meant });
  }
  return found;
}

/** DATABASE_URL alone, as loadConfig reads it: all the admin CLI needs. */
export const loadDatabaseFile = (env: NodeJS.ProcessEnv = process.env): string => databasePath(env.DATABASE_URL);

/** Reads and validates the configuration; throws ConfigError naming the variable on a bad value. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = integer(env, "PORT", 8080, 0, 65535);
  const host = env.HOST?.trim() || "0.0.0.0";
  const databaseFile = databasePath(env.DATABASE_URL);
  const logLevel = (env.LOG_LEVEL?.trim().toLowerCase() || "info") as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got "${env.LOG_LEVEL}"`);
  }
  const workers = integer(env, "WORKERS", 1, 1, 64);
  const tlsCertFile = env.TLS_CERT_FILE?.trim() || undefined;
  const tlsKeyFile = env.TLS_KEY_FILE?.trim() || undefined;
  if (Boolean(tlsCertFile) !== Boolean(tlsKeyFile)) {
    throw new ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together");
  }
  for (const [name, file] of [["TLS_CERT_FILE", tlsCertFile], ["TLS_KEY_FILE", tlsKeyFile]] as const) {
    if (!file) continue;
    let found: Stats | undefined;
    try {
      found = statSync(file, { throwIfNoEntry: false });
    } catch (err) {
      throw new ConfigError(`${name}: cannot look up ${file} (${(err as NodeJS.ErrnoException).code})`);
    }
    // A pipe (a process substitution, a secrets tool) is fine; a folder is not.
    if (!found) throw new ConfigError(`${name}: no file at ${file}`);
    if (found.isDirectory()) throw new ConfigError(`${name}: ${file} is a folder, not a file`);
    // Each worker reads the files itself, and a pipe gives its contents to one reader only.
    if (!found.isFile() && workers > 1) throw new ConfigError(`${name}: ${file} is not a regular file, and with WORKERS above 1 every worker reads it`);
  }
  const scheme = tlsCertFile ? "https" : "http";
  const given = env.PUBLIC_URL?.trim();
  if (!given && host.includes(":") && host.includes("%")) {
    // URLs cannot carry an IPv6 zone (WHATWG), so no address made from such a HOST works.
    throw new ConfigError(`HOST "${host}" has an IPv6 zone, which a URL cannot carry: set PUBLIC_URL to the address clients use`);
  }
  const publicUrl = given ? checkedPublicUrl(given) : defaultUrl(scheme, host, port);
  // With PUBLIC_URL set, HOST need not make a URL (an IPv6 zone may be in it), but it must
  // still be a name or an address.
  if ((given ? isIP(host) === 0 : true) && notAHost(host)) throw new ConfigError(`HOST ${shownHost(host)} is not a host name or IP address`);
  const shutdownTimeoutMs = integer(env, "SHUTDOWN_TIMEOUT_MS", 10_000, 0, 600_000);
  const bootstrapOrgName = env.BOOTSTRAP_ORG_NAME?.trim() || "default";
  // Checked on every start, not only the first that uses it: a bad value is found when it is set.
  const orgNameProblem = organizationNameProblem(bootstrapOrgName);
  if (orgNameProblem) throw new ConfigError(`BOOTSTRAP_ORG_NAME "${bootstrapOrgName}" ${orgNameProblem}`);
  const rateLimitPerSecond = integer(env, "RATE_LIMIT_PER_SECOND", 100, 0, 1_000_000);
  // The defaults stay inside the ranges a value set by hand must keep to.
  const rateLimitBurst = integer(env, "RATE_LIMIT_BURST", Math.min(1_000_000, Math.max(1, 2 * rateLimitPerSecond)), 1, 1_000_000);
  const rateLimitBytesPerSecond = integer(env, "RATE_LIMIT_BYTES_PER_SECOND", 256 * 1024, 0, 1 << 30);
  const rateLimitBytesBurst = integer(env, "RATE_LIMIT_BYTES_BURST", Math.min(1 << 30, Math.max(1, 4 * rateLimitBytesPerSecond)), 1, 1 << 30);
  const idempotencyTtlMs = integer(env, "IDEMPOTENCY_TTL_SECONDS", 86_400, 1, 30 * 86_400) * 1000;
  const headersTimeoutMs = integer(env, "HEADERS_TIMEOUT_MS", 10_000, 100, 600_000);
  const requestTimeoutMs = integer(env, "REQUEST_TIMEOUT_MS", Math.max(30_000, headersTimeoutMs), 100, 3_600_000);
  if (requestTimeoutMs < headersTimeoutMs) {
    throw new ConfigError(`REQUEST_TIMEOUT_MS (${requestTimeoutMs}) must not be shorter than HEADERS_TIMEOUT_MS (${headersTimeoutMs})`);
  }
  const idleTimeoutMs = integer(env, "IDLE_TIMEOUT_MS", 120_000, 100, 3_600_000);
  const tlsReloadCheckMs = integer(env, "TLS_RELOAD_CHECK_MS", 60_000, 0, 86_400_000);
  if (tlsReloadCheckMs > 0 && tlsReloadCheckMs < 100) throw new ConfigError(`TLS_RELOAD_CHECK_MS must be 0 (off) or at least 100, got ${tlsReloadCheckMs}`);
  const corsOrigins = allowedOrigins(env.CORS_ALLOWED_ORIGINS);
  const metrics = metricsAddress(env, port, host);
  return {
    host,
    port,
    databaseFile,
    logLevel,
    tlsCertFile,
    tlsKeyFile,
    tlsReloadCheckMs,
    corsOrigins,
    publicUrl,
    publicUrlGiven: Boolean(given),
    shutdownTimeoutMs,
    bootstrapOrgName,
    workers,
    rateLimitPerSecond,
    rateLimitBurst,
    rateLimitBytesPerSecond,
    rateLimitBytesBurst,
    idempotencyTtlMs,
    headersTimeoutMs,
    requestTimeoutMs,
    idleTimeoutMs,
    metrics,
  };
}

/**
 * METRICS_PORT turns the metrics page on (0: any free port, as PORT=0); METRICS_HOST is where
 * it listens, loopback unless told: the page takes no token.
 */
function metricsAddress(env: NodeJS.ProcessEnv, apiPort: number, apiHost: string): Config["metrics"] {
  const given = env.METRICS_HOST?.trim() ?? "";
  if (!env.METRICS_PORT?.trim()) {
    if (given) throw new ConfigError("METRICS_HOST is set but METRICS_PORT is not: set METRICS_PORT to serve the metrics page");
    return null;
  }
  // An IPv6 address may come as a URL writes it, in brackets; listen takes it without.
  const bracketed = /^\[(.*)\]$/.exec(given)?.[1];
  if (bracketed !== undefined && isIP(bracketed) !== 6) throw new ConfigError(`METRICS_HOST ${shownHost(given)}: only an IPv6 address goes in brackets`);
  const host = bracketed ?? (given || "127.0.0.1");
  const port = integer(env, "METRICS_PORT", 0, 0, 65535);
  // One port number serves both only on two addresses that are plainly not the same: IP
  // literals, neither of them every address. A name (localhost) may resolve to the other.
  const [a, b] = [canonicalIp(host), canonicalIp(apiHost)];
  const apart = a !== null && b !== null && a !== b && !WILDCARDS.has(a) && !WILDCARDS.has(b);
  if (port !== 0 && port === apiPort && !apart) {
    throw new ConfigError(`METRICS_PORT must differ from PORT (both ${port}) unless METRICS_HOST and HOST are two distinct IP addresses, neither 0.0.0.0 nor ::: the metrics page has a listener of its own`);
  }
  // An address with an IPv6 zone (fe80::1%eth0) is no URL host, but listen takes it.
  if (isIP(host) === 0 && notAHost(host)) throw new ConfigError(`METRICS_HOST ${shownHost(host)} is not a host name or IP address`);
  return { host, port };
}

/** An IP address as the URL parser writes it, an IPv4-mapped IPv6 one as IPv4; null for a name or an address with a zone. */
function canonicalIp(host: string): string | null {
  if (isIP(host) === 0 || host.includes("%")) return null;
  const written = new URL(`http://${host.includes(":") ? `[${host}]` : host}/`).hostname;
  const mapped = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(written);
  if (!mapped) return written;
  const [hi, lo] = [parseInt(mapped[1]!, 16), parseInt(mapped[2]!, 16)];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Addresses (as canonicalIp writes them) that listen on every address of the machine. */
const WILDCARDS = new Set(["0.0.0.0", "[::]"]);

/**
 * PUBLIC_URL as services and callbacks will show it. The OAuth callback URL is this plus a
 * path, so it must be a URL written plainly (see plainUrlProblem: nothing a parser would
 * repair or read its own way, no credentials or fragment), and without a query or a . or
 * .. segment, which would end up in the middle of it or be dropped. A value holding an '@'
 * is not echoed: the message goes to logs, and it may be a password.
 */
function checkedPublicUrl(given: string): string {
  const shown = given.includes("@") ? "(not shown: it holds an '@')" : `"${given}"`;
  const problem =
    plainUrlProblem(given, ["http", "https"], "https://scm.example.com") ??
    (given.includes("?") ? "must not include a query" : null) ??
    // (Past plainUrlProblem there is no fragment, and past the line above no query.)
    (given.split("/").slice(3).some(isDotSegment) ? "must not include . or .. path segments" : null);
  if (problem) throw new ConfigError(`PUBLIC_URL ${shown} ${problem}`);
  // As the parser wrote it (host in lower case, default port left out), without the trailing slash.
  return new URL(given).href.replace(/\/+$/, "");
}

/**
 * CORS_ALLOWED_ORIGINS: `*`, or origins separated by commas, each as a browser sends it in
 * `Origin` (scheme, host in lower case, the port unless it is the scheme's own): given
 * otherwise (`HTTPS://App.Example.com:443`) it is written that way, so that it matches.
 */
function allowedOrigins(raw: string | undefined): readonly string[] | "*" {
  const given = (raw ?? "").split(",").map((o) => o.trim()).filter((o) => o !== "");
  if (given.length === 1 && given[0] === "*") return "*";
  return given.map((o) => {
    const url = URL.canParse(o) ? new URL(o) : null;
    const plain = url !== null && (url.protocol === "https:" || url.protocol === "http:") && !url.username && !url.password && url.pathname === "/" && !url.search && !url.hash && !o.endsWith("/");
    if (!plain) throw new ConfigError(`CORS_ALLOWED_ORIGINS: ${o.includes("@") ? "a value holding an '@'" : `"${o}"`} is not an origin: write scheme://host[:port], such as https://app.example.com, or * alone`);
    return url.origin;
  });
}

/** Whether `host` is no name or address: a URL made from it would read '@', '/', '?', '#' as more than a host. */
const notAHost = (host: string) => /[@/?#\\\s]/.test(host) || !URL.canParse(defaultUrl("http", host, 1));

/** A host as an error shows it: not echoed with an '@', which may hold a password. */
const shownHost = (host: string) => (host.includes("@") ? "(not shown: it holds an '@')" : `"${host}"`);

function defaultUrl(scheme: string, host: string, port: number): string {
  const shown = host === "0.0.0.0" || host === "::" ? "localhost" : host.includes(":") ? `[${host}]` : host;
  const url = `${scheme}://${shown}:${port}`;
  // As the URL parser writes it, as a PUBLIC_URL given is: HOST=LOCALHOST is localhost.
  return URL.canParse(url) ? new URL(url).origin : url;
}

/** Whether `config.publicUrl` is final before listening: not with PORT=0 and no PUBLIC_URL. */
export const publicUrlKnown = (config: Config) => config.publicUrlGiven || config.port !== 0;

/**
 * The public URL once the service listens on `port`. Only with PORT=0 and no PUBLIC_URL
 * does it differ from `config.publicUrl`: the system picks the port at listen.
 */
export function publicUrlOn(config: Config, port: number): string {
  if (publicUrlKnown(config)) return config.publicUrl;
  return defaultUrl(config.tlsCertFile ? "https" : "http", config.host, port);
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, in decimal digits, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/**
 * DATABASE_URL is a file path, optionally written as a `file:` URL (`file:///abs`,
 * `file:rel`). Whatever SQLite would open as something other than one durable file
 * (`:memory:`, an empty name, URI parameters such as `?mode=memory`) is refused: each
 * worker would get a database of its own, and every write would be gone at exit.
 */
function databasePath(raw: string | undefined): string {
  let value = raw?.trim();
  if (!value) return "./data/scm-integrations.db";
  let path = value;
  // A URL's scheme is read in any case (RFC 3986). Before 2026-12-06 only `file:` was, and
  // `FILE:x.db` named a file of that very name: one kept so is not swapped for a new one.
  if (/^file:/i.test(value) && !value.startsWith("file:")) {
    if (existsSync(value)) throw new ConfigError(`DATABASE_URL: "${value}" is read as a file: URL now (its scheme in any case), while a file of that very name holds a database: set DATABASE_URL=./${value} to keep using it`);
    value = `file:${value.slice("file:".length)}`;
  }
  if (value.startsWith("file://")) {
    if (!URL.canParse(value)) throw new ConfigError(`DATABASE_URL is not a well-formed file: URL, got "${value}"`);
    const url = new URL(value);
    if (url.host !== "" && url.host !== "localhost") throw new ConfigError(`DATABASE_URL must name a file on this machine, got host "${url.host}"`);
    if (url.search || url.hash) throw new ConfigError("DATABASE_URL must be a plain file path, without URI parameters");
    path = percentDecoded(url.pathname);
  } else if (value.startsWith("file:")) {
    const asWritten = value.slice("file:".length);
    if (/[?#]/.test(asWritten)) throw new ConfigError("DATABASE_URL must be a plain file path, without URI parameters");
    path = percentDecoded(asWritten);
    // Before 2026-12-04 this form was taken as written: a database kept under that name is
    // not silently swapped for a new, empty one under the decoded name.
    if (path !== asWritten && !existsSync(path) && existsSync(asWritten)) {
      throw new ConfigError(
        `DATABASE_URL: file: URLs are percent-decoded now, so "${value}" names ${path}, where there is no database, while ${asWritten} holds one: set DATABASE_URL=${asWritten} to keep using it`,
      );
    }
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    throw new ConfigError(`DATABASE_URL must be a SQLite file path or file: URL, got a ${value.split(":")[0]} URL`);
  }
  if (path === "" || path === ":memory:" || path.endsWith("/") || isFolder(path)) {
    throw new ConfigError(`DATABASE_URL must name a database file, got "${value}"`);
  }
  return path;
}

function isFolder(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isDirectory() === true;
  } catch {
    return false; // opening it will say what is wrong
  }
}

/** A `file:` URL's path is percent-encoded (`%20` is a space), in both of its forms. */
function percentDecoded(path: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    throw new ConfigError(`DATABASE_URL has a '%' that is not followed by two hex digits; write a literal '%' as %25`);
  }
  // SQLite would end the name at the NUL and open another file than the one named.
  if (decoded.includes("\0")) throw new ConfigError("DATABASE_URL must not hold %00");
  // An escaped slash is part of a name in a URL, and no file name holds one: it would become
  // a folder no one asked for.
  if (/%2f/i.test(path)) throw new ConfigError("DATABASE_URL must not hold %2F: write a slash as it is");
  return decoded;
}
