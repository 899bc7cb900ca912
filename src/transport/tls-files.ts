import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync, statSync, type Stats } from "node:fs";
import { stat } from "node:fs/promises";

/** TLS_CERT_FILE and TLS_KEY_FILE. */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

/** A certificate and its key, read together, with what the log says of them. */
export interface TlsCredentials {
  cert: Buffer;
  key: Buffer;
  subject: string;
  /** When the certificate expires, as an ISO 8601 time. */
  notAfter: string;
  /** From when it is valid, as an ISO 8601 time. */
  notBefore: string;
  /** SHA-256 of the certificate, as openssl and browsers show it. */
  fingerprint: string;
  /** The files as they were just before they were read (see watchTlsFiles). */
  version: string;
}

/**
 * Reads the certificate and its key and checks that they belong together. OpenSSL itself
 * catches only a key of the same type that does not match: with a key of another type (RSA
 * beside an EC certificate) the server started and failed every handshake, and an X25519
 * key crashed it.
 */
export function readTlsFiles(files: TlsFiles): TlsCredentials {
  const version = versionOf(files, (f) => attributed(f === files.certFile ? "TLS_CERT_FILE" : "TLS_KEY_FILE", () => statSync(f)));
  const cert = attributed("TLS_CERT_FILE", () => readFileSync(files.certFile));
  const key = attributed("TLS_KEY_FILE", () => readFileSync(files.keyFile));
  const x509 = attributed("TLS_CERT_FILE", () => new X509Certificate(cert));
  const privateKey = attributed("TLS_KEY_FILE", () => createPrivateKey(key));
  if (!x509.checkPrivateKey(privateKey)) {
    throw Object.assign(new Error("the key is not the certificate's"), { code: "ERR_TLS_KEY_NOT_CERTIFICATES" });
  }
  return {
    cert, key, subject: x509.subject.replaceAll("\n", ", "), notAfter: new Date(x509.validTo).toISOString(), notBefore: new Date(x509.validFrom).toISOString(),
    fingerprint: x509.fingerprint256, version,
  };
}

/** Why a certificate is not valid now (expired, or not yet valid), or null when it is. */
export function outsideValidity(c: Pick<TlsCredentials, "notAfter" | "notBefore">, now = Date.now()): { expired: boolean; reason: string } | null {
  if (Date.parse(c.notAfter) < now) return { expired: true, reason: `it expired at ${c.notAfter}` };
  if (Date.parse(c.notBefore) > now) return { expired: false, reason: `it is valid only from ${c.notBefore}` };
  return null;
}

/** Runs `parse`, marking an error from it (the file's system's, or OpenSSL's) as the named file's. */
function attributed<T>(setting: "TLS_CERT_FILE" | "TLS_KEY_FILE", parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw Object.assign(err as Error, { setting });
  }
}

/**
 * Reads them again for a server that already serves. Unlike a start, only regular files:
 * a pipe (a process substitution) gives its contents once, and a second read would wait
 * on the event loop for a writer that never comes.
 */
export function rereadTlsFiles(files: TlsFiles): TlsCredentials {
  for (const [name, file] of [["TLS_CERT_FILE", files.certFile], ["TLS_KEY_FILE", files.keyFile]] as const) {
    const found = attributed(name, () => statSync(file));
    if (found.isDirectory()) throw Object.assign(new Error(`${name} is a folder`), { code: "EISDIR", setting: name });
    if (!found.isFile()) {
      throw Object.assign(new Error(`${name} is not a regular file; it was read once, at start`), { code: "ERR_TLS_NOT_REREADABLE", setting: name });
    }
  }
  const read = readTlsFiles(files);
  // OpenSSL reads a chain up to a block that has not begun (a BEGIN line cut short), so a
  // chain being written in place would be served without its intermediates. A start reads
  // what it is given; a renewal caught half-written waits for its next change.
  if (!endsWithWholeBlock(read.cert)) {
    throw Object.assign(new Error("TLS_CERT_FILE ends inside a PEM block"), { code: "ERR_TLS_CUT_SHORT", setting: "TLS_CERT_FILE" });
  }
  // A certificate clients will refuse does not take the place of one they take. One not valid
  // yet is tried again at every look (see failedForContent): time alone makes it good.
  const invalid = outsideValidity(read);
  if (invalid) {
    const code = invalid.expired ? "ERR_TLS_CERT_EXPIRED" : "ERR_TLS_CERT_NOT_YET_VALID";
    throw Object.assign(new Error(`TLS_CERT_FILE: ${invalid.reason}`), { code, setting: "TLS_CERT_FILE", reason: invalid.reason });
  }
  return read;
}

/** Whether PEM text ends with an END line, after which there is only white space. */
function endsWithWholeBlock(pem: Buffer): boolean {
  const text = pem.toString("latin1");
  const lastEnd = text.lastIndexOf("-----END ");
  if (lastEnd < 0) return false;
  const close = text.indexOf("-----", lastEnd + 9);
  return close >= 0 && text.slice(close + 5).trim() === "";
}

/**
 * Why certificate files could not be used, as one line naming the setting, or null when
 * the error is not about them. Recognised by codes, never by message text; OpenSSL's codes
 * name no key material.
 */
export function describeTlsFailure(err: unknown, rereading = false): string | null {
  const code = typeof (err as { code?: unknown })?.code === "string" ? (err as { code: string }).code : "";
  // At a start, only these are surely the files' (the start reads other files too); read
  // again, every system error is.
  if (code === "EACCES" || code === "EISDIR" || code === "ENOENT" || code === "EPERM" || (rereading && /^E[A-Z]+$/.test(code))) {
    return `${(err as { setting?: string }).setting ?? "TLS_CERT_FILE / TLS_KEY_FILE"} cannot be read (${code})`;
  }
  if (code === "ERR_TLS_KEY_NOT_CERTIFICATES") return "TLS_KEY_FILE: the key does not belong to the certificate in TLS_CERT_FILE";
  if (code === "ERR_TLS_NOT_REREADABLE") return `${(err as { setting: string }).setting} is not a regular file: it was read once, at start; restart the service to read it again`;
  if (code === "ERR_TLS_CUT_SHORT") return "TLS_CERT_FILE ends inside a PEM block (still being written?); it is read again when it changes";
  if (code === "ERR_TLS_CERT_EXPIRED") return `TLS_CERT_FILE holds a certificate clients would refuse: ${(err as { reason: string }).reason}`;
  if (code === "ERR_TLS_CERT_NOT_YET_VALID") return `TLS_CERT_FILE holds a certificate clients would refuse: ${(err as { reason: string }).reason}; the watch tries it again until it is`;
  // OpenSSL asks for a passphrase, and the service has none to give.
  if (code === "ERR_OSSL_CRYPTO_INTERRUPTED_OR_CANCELLED" && (err as { setting?: string }).setting === "TLS_KEY_FILE") {
    return "TLS_KEY_FILE holds a key protected by a passphrase; give the service the key without one";
  }
  if (code.startsWith("ERR_OSSL")) {
    const setting = (err as { setting?: string }).setting;
    if (setting === "TLS_CERT_FILE") return `TLS_CERT_FILE does not hold a PEM certificate this service can use (${code})`;
    if (setting === "TLS_KEY_FILE") return `TLS_KEY_FILE does not hold a PEM private key this service can use (${code})`;
    return `TLS_CERT_FILE / TLS_KEY_FILE cannot be used as a certificate and its key (${code})`;
  }
  return null;
}

/** A watch on the certificate files (see watchTlsFiles). */
export interface TlsWatch {
  /** The files as now served, read by other means (SIGHUP): not reported as a change. */
  settled(version: string): void;
  stop(): void;
}

/**
 * Calls `changed` when either file is replaced or rewritten, looking every `everyMs`:
 * certbot points its links at new files, a Kubernetes secret volume swaps a symbolic link,
 * and neither sends a signal. `since` is the version the server serves. `changed` answers
 * whether the change is dealt with: served, or refused for what the files hold (looked at
 * again only once they change again, so a pair caught half-written is reported once, and
 * tried again when its other half arrives). Otherwise (too many open files, a failing
 * disk) it is tried again at the next look. Pipes are not watched (see rereadTlsFiles).
 */
export function watchTlsFiles(files: TlsFiles, since: string, everyMs: number, changed: () => boolean): TlsWatch {
  let last = since;
  let looking = false;
  // Bumped by each settle: a look begun before one may have seen the files half-replaced, and
  // reported that as a change the settle had already read.
  let settles = 0;
  const timer = setInterval(() => {
    if (looking) return;
    looking = true;
    const begun = settles;
    // Asynchronous: a file system that hangs (a lost network mount) must not hold the event loop.
    void Promise.all([files.certFile, files.keyFile].map((f) => stat(f).catch((err: NodeJS.ErrnoException) => err)))
      .then(([cert, key]) => {
        if (begun !== settles) return;
        const now = versionOf(files, (f) => (f === files.certFile ? cert : key)!);
        if (now !== last && changed()) last = now;
      })
      .finally(() => (looking = false));
  }, everyMs);
  timer.unref();
  return {
    settled: (version) => {
      last = version;
      settles++;
    },
    stop: () => clearInterval(timer),
  };
}

/** The files' version as it is now (see TlsCredentials.version). */
export function currentVersion(files: TlsFiles): string {
  return versionOf(files, (f) => {
    try {
      return statSync(f);
    } catch (err) {
      return err as NodeJS.ErrnoException;
    }
  });
}

/** Whether a failure to read the files again comes from what they hold, which only a change to them can mend. */
export function failedForContent(err: unknown): boolean {
  const code = String((err as { code?: unknown })?.code ?? "");
  return (code.startsWith("ERR_") && code !== "ERR_TLS_CERT_NOT_YET_VALID") || code === "ENOENT" || code === "EACCES" || code === "EPERM" || code === "EISDIR" || code === "ELOOP" || code === "ENOTDIR";
}

/** Both files' identity, size and times: any replacement or rewrite changes it. */
function versionOf(files: TlsFiles, look: (file: string) => Stats | NodeJS.ErrnoException): string {
  return [files.certFile, files.keyFile]
    .map((f) => {
      const s = look(f);
      if (s instanceof Error) return `missing:${s.code}`;
      return s.isFile() ? `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}` : "not-a-file";
    })
    .join("|");
}

/** Whether both files are regular files, which a watch can follow. */
export function rereadable(files: TlsFiles): boolean {
  try {
    return statSync(files.certFile).isFile() && statSync(files.keyFile).isFile();
  } catch {
    return false;
  }
}
