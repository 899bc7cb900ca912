import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import fsp from "node:fs/promises";
import http2 from "node:http2";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import https from "node:https";
import type { Socket } from "node:net";
import tls from "node:tls";
import { join } from "node:path";
import { it } from "node:test";
import Database from "better-sqlite3";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { createLogger } from "../src/log.js";
import { createApp } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { listen } from "../src/transport/http-server.js";
import { currentVersion, describeTlsFailure, failedForContent, readTlsFiles, rereadable, watchTlsFiles } from "../src/transport/tls-files.js";
import { childrenRunning, hasOpen, lines, metricsPort, scrapeMetrics, startService, until, type Service } from "./harness.js";
import { SecretWatch } from "./secret-watch.js";

/** A fresh folder holding a self-signed certificate for 127.0.0.1 and its key. */
function selfSigned(): { dir: string; cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "scm-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "pipe" });
  return { dir, cert, key };
}

it("with a certificate and key it serves HTTPS, HTTP/1.1 and h2 chosen by ALPN", async () => {
  const { dir, cert, key } = selfSigned();
  const file = join(dir, "t.db");
  const db = openDatabase(file);
  const logs: string[] = [];
  const watch = new SecretWatch();
  const app = createApp(db, createLogger("info", (l) => logs.push(l)), { publicUrl: "https://scm.example.test", interceptors: [watch.interceptor()] });
  const server = await listen(watch.wrap(app.handler), 0, "127.0.0.1", { tls: { certFile: cert, keyFile: key }, ...app.listenOptions });
  try {
    const baseUrl = `https://127.0.0.1:${server.address.port}`;
    const ca = readFileSync(cert);
    for (const transport of [
      createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { ca } }),
      createConnectTransport({ baseUrl, httpVersion: "2", nodeOptions: { ca } }),
      createGrpcTransport({ baseUrl, nodeOptions: { ca } }),
    ]) {
      const res = await createClient(Health, transport).check({});
      assert.equal(res.status, HealthCheckResponse_ServingStatus.SERVING);
    }
    // An http:// URL by mistake is told what is wrong, not closed on without a word, and
    // its connection is closed after the answer: none is held (a descriptor each).
    const descriptors = () => readdirSync("/proc/self/fd").length;
    const before = descriptors();
    for (let i = 0; i < 40; i++) {
      const plain = await fetch(`http://127.0.0.1:${server.address.port}/healthz`);
      assert.equal(plain.status, 400);
      assert.equal(await plain.text(), "this port serves HTTPS: use an https:// URL\n");
      // With its request id, which its log line carries too.
      const id = plain.headers.get("x-request-id");
      if (i === 0) {
        const line = logs.map((l) => JSON.parse(l)).find((l) => l.request_id === id);
        assert.deepEqual([line?.msg, line?.code, line?.http_status, line?.procedure, line?.reason], ["request", "http_400", 400, "/healthz", "plain HTTP on the port that serves HTTPS"]);
      }
    }
    await until("their connections are closed", () => descriptors() < before + 10);
  } finally {
    await server.shutdown(500);
    await app.close();
    try {
      watch.finish(file, logs, () => db.$client.close());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

it("over TLS, HTTP/1.1 times out as over plain HTTP: a slow answer outlasts the idle timeout, an idle keep-alive connection closes after 5 s", async () => {
  const { dir, cert, key } = selfSigned();
  const ca = readFileSync(cert);
  // Answers after 600 ms of saying nothing on the connection.
  const slow = (_req: unknown, res: { end(body: string): void }) => void setTimeout(() => res.end("done"), 600);
  const started = await Promise.all([200, 60_000].map((idleTimeoutMs) => listen(slow as never, 0, "127.0.0.1", { tls: { certFile: cert, keyFile: key }, idleTimeoutMs })));
  const agent = new https.Agent({ keepAlive: true, ca });
  try {
    for (const server of started) {
      const { body, socket } = await new Promise<{ body: string; socket: Socket }>((resolve, reject) => {
        const req = https.get({ host: "127.0.0.1", port: server.address.port, agent }, (res) => {
          let body = "";
          res.on("data", (c) => (body += c)).on("end", () => resolve({ body, socket: req.socket! })).on("error", reject);
        });
        req.on("error", reject);
      });
      assert.equal(body, "done", "answered, though the connection was quiet for longer than an idle timeout of 200 ms");
      // Kept alive, then closed by the server, as node's HTTP/1.1 server does after 5 s,
      // not after the 60 s of IDLE_TIMEOUT_MS (which is for HTTP/2 connections).
      const closed = await new Promise<boolean>((resolve) => {
        const giveUp = setTimeout(() => resolve(false), 20_000);
        socket.once("close", () => (clearTimeout(giveUp), resolve(true)));
      });
      assert.ok(closed, "the idle keep-alive connection was closed");
    }
  } finally {
    agent.destroy();
    await Promise.all(started.map((s) => s.shutdown(500)));
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Makes a self-signed certificate for 127.0.0.1 (an EC key: quick to make) at these paths. */
function certificate(cert: string, key: string, name: string): void {
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
    "-days", "1", "-subj", `/CN=${name}`, "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "pipe" });
}

/** A self-signed certificate valid only from `start` to `end` (as openssl's ca writes them: YYYYMMDDHHMMSSZ). */
function certificateValidBetween(cert: string, key: string, name: string, start: string, end: string): void {
  const ca = mkdtempSync(join(tmpdir(), "scm-tls-ca-"));
  try {
    writeFileSync(join(ca, "index.txt"), "");
    writeFileSync(join(ca, "ca.cnf"), `[ca]\ndefault_ca = d\n[d]\ndatabase = ${join(ca, "index.txt")}\nnew_certs_dir = ${ca}\nserial = ${join(ca, "serial")}\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n`);
    execFileSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", join(ca, "r.csr"), "-subj", `/CN=${name}`], { stdio: "pipe" });
    execFileSync("openssl", ["ca", "-batch", "-config", join(ca, "ca.cnf"), "-selfsign", "-keyfile", key, "-in", join(ca, "r.csr"), "-out", cert, "-startdate", start, "-enddate", end, "-create_serial", "-notext"], { stdio: "pipe" });
  } finally {
    rmSync(ca, { recursive: true, force: true });
  }
}

const fingerprintOf = (pem: string) => new X509Certificate(readFileSync(pem)).fingerprint256;

/** The certificate a new connection is shown, and the protocol ALPN chose. */
function handshake(port: number): Promise<{ fingerprint: string; alpn: string | false | null }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false, ALPNProtocols: ["h2", "http/1.1"] }, () => {
      resolve({ fingerprint: socket.getPeerX509Certificate()!.fingerprint256, alpn: socket.alpnProtocol });
      socket.end();
    });
    socket.once("error", reject);
  });
}

/** Puts the files at `from` in the place of those at `to`, each by a rename, as certbot and secret volumes do. */
function replaceFiles(from: { cert: string; key: string }, to: { cert: string; key: string }): void {
  // Both copied first, then renamed one right after the other, as a renewal does: a look of
  // a watch between the two renames sees a half-replaced pair (a change of its own), so the
  // time between them is kept to one system call.
  for (const k of ["cert", "key"] as const) copyFileSync(from[k], `${to[k]}.new`);
  for (const k of ["cert", "key"] as const) renameSync(`${to[k]}.new`, to[k]);
}

it("over TLS, shutdown closes idle keep-alive connections at once while a request in flight finishes", async () => {
  const { dir, cert, key } = selfSigned();
  let slowArrived!: () => void;
  const arrived = new Promise<void>((r) => (slowArrived = r));
  const handler = (req: { url?: string }, res: { end(body: string): void }) => {
    if (req.url === "/slow") {
      slowArrived();
      setTimeout(() => res.end("slow"), 800);
    } else res.end("fast");
  };
  const server = await listen(handler as never, 0, "127.0.0.1", { tls: { certFile: cert, keyFile: key } });
  // Two agents: one would reuse the idle connection for the slow request.
  const [agent, other] = [0, 1].map(() => new https.Agent({ keepAlive: true, ca: readFileSync(cert) })) as [https.Agent, https.Agent];
  const get = (path: string, via = agent) =>
    new Promise<{ body: string; socket: Socket }>((resolve, reject) => {
      const req = https.get({ host: "127.0.0.1", port: server.address.port, path, agent: via }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c)).on("end", () => resolve({ body, socket: req.socket! })).on("error", reject);
      });
      req.on("error", reject);
    });
  try {
    const idle = (await get("/fast")).socket;
    let idleClosedFirst: boolean | undefined;
    let slowDone = false;
    idle.once("close", () => (idleClosedFirst ??= !slowDone));
    const slow = get("/slow", other).then((r) => ((slowDone = true), r));
    await arrived; // in flight: its handshake can take longer than any fixed wait
    const stopped = server.shutdown(5000);
    assert.equal((await slow).body, "slow", "the request in flight finishes");
    await stopped;
    assert.equal(idleClosedFirst, true, "the idle connection was closed before the drain ended");
  } finally {
    agent.destroy();
    other.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a renewed certificate is served to new connections without a restart, open ones keep theirs, and files that cannot be used change nothing", async () => {
  const { dir, cert, key } = selfSigned();
  const first = fingerprintOf(cert);
  const renewed = { cert: join(dir, "renewed-cert.pem"), key: join(dir, "renewed-key.pem") };
  certificate(renewed.cert, renewed.key, "renewed");
  const server = await listen(((_req: unknown, res: { end(b: string): void }) => res.end("ok")) as never, 0, "127.0.0.1", { tls: { certFile: cert, keyFile: key } });
  const port = server.address.port;
  // An HTTP/2 connection opened before the renewal.
  const open = http2.connect(`https://127.0.0.1:${port}`, { ca: readFileSync(cert) });
  const get = () =>
    new Promise<string>((resolve, reject) => {
      let body = "";
      open.request({ ":path": "/" }).on("data", (c) => (body += c)).on("end", () => resolve(body)).on("error", reject).end();
    });
  try {
    assert.equal(await get(), "ok");
    assert.deepEqual(await handshake(port), { fingerprint: first, alpn: "h2" });
    assert.equal(server.certificate!().fingerprint, first);

    replaceFiles(renewed, { cert, key });
    const loaded = server.reloadCertificate!();
    assert.equal(loaded.fingerprint, fingerprintOf(renewed.cert));
    assert.equal(loaded.subject, "CN=renewed");
    assert.deepEqual(await handshake(port), { fingerprint: loaded.fingerprint, alpn: "h2" }, "new connections get the renewed one, h2 still offered");
    assert.equal(await get(), "ok", "the connection made before goes on");

    // Each of these is refused with a line naming the setting; the renewed certificate stays.
    const other = { cert: join(dir, "other-cert.pem"), key: join(dir, "other-key.pem") };
    certificate(other.cert, other.key, "other");
    const broken: [string, () => void, RegExp][] = [
      ["not PEM", () => writeFileSync(cert, "not a certificate\n"), /^TLS_CERT_FILE does not hold a PEM certificate this service can use \(ERR_OSSL/],
      ["a certificate for a key", () => copyFileSync(renewed.cert, key), /^TLS_KEY_FILE does not hold a PEM private key this service can use \(ERR_OSSL/],
      ["another certificate's key", () => replaceFiles({ cert: renewed.cert, key: other.key }, { cert, key }), /^TLS_KEY_FILE: the key does not belong to the certificate in TLS_CERT_FILE$/],
      ["a missing key", () => rmSync(key), /^TLS_KEY_FILE cannot be read \(ENOENT\)$/],
      ["a folder", () => (rmSync(key), mkdirSync(key)), /^TLS_KEY_FILE cannot be read \(EISDIR\)$/],
      // Links that lead nowhere a change of the link would not mend: said, and left until they change.
      ["a link to itself", () => (rmSync(key), symlinkSync(key, key)), /^TLS_KEY_FILE cannot be read \(ELOOP\)$/],
      ["a link through a file", () => (rmSync(key), symlinkSync(join(renewed.key, "x"), key)), /^TLS_KEY_FILE cannot be read \(ENOTDIR\)$/],
      ["a key with a passphrase", () => execFileSync("openssl", ["pkey", "-in", renewed.key, "-out", key, "-aes256", "-passout", "pass:secret"]), /^TLS_KEY_FILE holds a key protected by a passphrase; give the service the key without one$/],
      // A chain caught being written: the leaf whole, the intermediate's BEGIN line cut short.
      ["a chain cut short", () => writeFileSync(cert, `${readFileSync(renewed.cert, "utf8")}-----BEG`), /^TLS_CERT_FILE ends inside a PEM block \(still being written\?\)/],
      // Clients would refuse it: an expired certificate, and one not valid yet.
      ["an expired certificate", () => certificateValidBetween(cert, key, "expired", "20200101000000Z", "20200201000000Z"), /^TLS_CERT_FILE holds a certificate clients would refuse: it expired at 2020-02-01T00:00:00\.000Z$/],
      ["a certificate not valid yet", () => certificateValidBetween(cert, key, "later", "20990101000000Z", "20990201000000Z"), /^TLS_CERT_FILE holds a certificate clients would refuse: it is valid only from 2099-01-01T00:00:00\.000Z; the watch tries it again until it is$/],
    ];
    for (const [what, breakIt, says] of broken) {
      rmSync(key, { recursive: true, force: true });
      replaceFiles(renewed, { cert, key });
      breakIt();
      assert.throws(() => server.reloadCertificate!(), (err) => says.test(describeTlsFailure(err, true) ?? String(err)) && failedForContent(err) === (what !== "a certificate not valid yet"), what);
      assert.equal(server.certificate!().fingerprint, loaded.fingerprint, what);
      assert.equal((await handshake(port)).fingerprint, loaded.fingerprint, `${what}: still the renewed certificate`);
    }
  } finally {
    open.close();
    await server.shutdown(500);
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a certificate file read from a pipe is not read again, and says why", async () => {
  const { dir, cert, key } = selfSigned();
  const fifo = join(dir, "cert.fifo");
  execFileSync("mkfifo", [fifo]);
  // Something writes the certificate into the pipe once, as a process substitution does.
  const writer = spawn("sh", ["-c", `cat "${cert}" > "${fifo}"`]);
  const server = await listen((() => {}) as never, 0, "127.0.0.1", { tls: { certFile: fifo, keyFile: key } });
  try {
    assert.equal((await handshake(server.address.port)).fingerprint, fingerprintOf(cert));
    assert.equal(rereadable({ certFile: fifo, keyFile: key }), false, "not watched");
    // Read again, the pipe would wait for a writer that never comes, and the event loop with it.
    assert.throws(() => server.reloadCertificate!(), (err) => /^TLS_CERT_FILE is not a regular file: it was read once, at start/.test(describeTlsFailure(err) ?? ""));
  } finally {
    writer.kill();
    await server.shutdown(500);
    rmSync(dir, { recursive: true, force: true });
  }
});

it("the watch on the certificate files reports each change once, a rewrite in place as well as a rename, and again only what it could not settle", async () => {
  const { dir, cert, key } = selfSigned();
  const files = { certFile: cert, keyFile: key };
  const changes: number[] = [];
  let settles = true;
  const watch = watchTlsFiles(files, readTlsFiles(files).version, 20, () => changes.push(Date.now()) > 0 && settles);
  const settle = () => new Promise((r) => setTimeout(r, 150));
  // A change is awaited (the watch's looks run on the thread pool, slower on a loaded
  // machine); that nothing more comes is seen after a pause.
  const reported = async (n: number, what: string) => {
    await until(what, () => changes.length >= n, 5000);
    await settle();
    assert.equal(changes.length, n, what);
  };
  try {
    await settle();
    assert.equal(changes.length, 0, "nothing changed");
    const renewed = { cert: join(dir, "renewed-cert.pem"), key: join(dir, "renewed-key.pem") };
    certificate(renewed.cert, renewed.key, "renewed");
    replaceFiles(renewed, { cert, key });
    await reported(1, "renamed into place");
    // The same bytes, written in place in one write: truncated first (writeFileSync's "w"), a
    // look of the watch could come between the two and see an empty file, a change of its own.
    writeFileSync(key, readFileSync(renewed.key), { flag: "r+" });
    await reported(2, "rewritten in place");
    rmSync(cert);
    await reported(3, "removed");
    await settle();
    assert.equal(changes.length, 3, "and not reported again while it stays away");
    // A change it could not settle (too many open files, say) is reported at every look until it can.
    settles = false;
    copyFileSync(renewed.cert, cert);
    await until("tried again", () => changes.length >= 5, 5000);
    settles = true;
    await settle();
    const after = changes.length;
    await settle();
    assert.equal(changes.length, after, "settled, it is left alone");
    // Files read by other means (a SIGHUP) are not reported again.
    replaceFiles(renewed, { cert, key });
    watch.settled(currentVersion(files));
    await settle();
    assert.equal(changes.length, after, "settled by SIGHUP");
  } finally {
    watch.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a look at the certificate files begun before a settle and answered after it reports nothing: what it saw may be the files half-replaced", async () => {
  const { dir, cert, key } = selfSigned();
  const files = { certFile: cert, keyFile: key };
  const realStat = fsp.stat;
  // The watch's looks are asynchronous; here their answers wait for `answer`, each holding
  // what the files were when the look began.
  let looks = 0;
  let answer!: () => void;
  const answered = new Promise<void>((resolve) => (answer = resolve));
  const useStat = (stat: typeof fsp.stat) => {
    (fsp as { stat: typeof fsp.stat }).stat = stat;
    syncBuiltinESMExports();
  };
  const changes: string[] = [];
  let held = true;
  useStat(((path: string) => {
    looks++;
    const seen = realStat(path);
    return held ? answered.then(() => seen) : seen;
  }) as typeof fsp.stat);
  const watch = watchTlsFiles(files, readTlsFiles(files).version, 10, () => changes.push(currentVersion(files)) > 0);
  try {
    await until("a look has begun", () => looks >= 2, 5000);
    // Meanwhile the files are renewed and read again (as SIGHUP does): the watch is told.
    const renewed = { cert: join(dir, "renewed-cert.pem"), key: join(dir, "renewed-key.pem") };
    certificate(renewed.cert, renewed.key, "renewed");
    replaceFiles(renewed, { cert, key });
    watch.settled(readTlsFiles(files).version);
    // The look answers with the files as they were before: not a change.
    held = false;
    answer();
    await until("looks after it", () => looks >= 4, 5000);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(changes, [], "the look begun before the settle reported a change");
    // Still watching: the next change is reported.
    certificate(renewed.cert, renewed.key, "renewed-again");
    replaceFiles(renewed, { cert, key });
    await until("the next change", () => changes.length === 1, 5000);
  } finally {
    useStat(realStat);
    watch.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a start with a certificate clients would refuse serves, and warns", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-tls-expired-"));
  const [cert, key] = [join(dir, "cert.pem"), join(dir, "key.pem")];
  certificateValidBetween(cert, key, "expired", "20200101000000Z", "20200201000000Z");
  const service = await startService(join(dir, "e.db"), { TLS_CERT_FILE: cert, TLS_KEY_FILE: key });
  t.after(() => service.child.kill("SIGKILL"));
  try {
    const warned = () => lines(service, "the TLS certificate is not valid now: clients will refuse it until TLS_CERT_FILE holds a valid one");
    await until("the warning", () => warned().length === 1);
    const [warning] = warned();
    assert.deepEqual([warning?.level, warning?.reason], ["warn", "it expired at 2020-02-01T00:00:00.000Z"]);
    assert.equal((await handshake(service.port)).fingerprint, fingerprintOf(cert));
  } finally {
    service.child.kill("SIGTERM");
    await service.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a renewal not valid yet is refused, and served once it is, with no change to the files", async (t) => {
  const { dir, cert, key } = selfSigned();
  const service = await startService(join(dir, "s.db"), { TLS_CERT_FILE: cert, TLS_KEY_FILE: key, TLS_RELOAD_CHECK_MS: "100" });
  t.after(() => service.child.kill("SIGKILL"));
  try {
    // Valid from six seconds on, as a CA whose clock runs ahead might issue it: time for
    // openssl and the watch to find it still in the future on a loaded machine.
    const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z";
    const renewed = { cert: join(dir, "renewed-cert.pem"), key: join(dir, "renewed-key.pem") };
    certificateValidBetween(renewed.cert, renewed.key, "soon", stamp(Date.now() + 6000), stamp(Date.now() + 86_400_000));
    replaceFiles(renewed, { cert, key });
    await until("refused while not valid yet", () => lines(service, "tls certificate not reloaded; still serving the previous one").length >= 1);
    assert.match(lines(service, "tls certificate not reloaded; still serving the previous one")[0]!.reason, /it is valid only from .*; the watch tries it again until it is$/);
    await until("served once valid", () => lines(service, "tls certificate reloaded").length === 1, 20_000);
    assert.equal((await handshake(service.port)).fingerprint, fingerprintOf(cert));
  } finally {
    service.child.kill("SIGTERM");
    await service.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

it("the service reloads its certificate on SIGHUP and when the files change, in every worker, and keeps the previous one when they cannot be used", async (t) => {
  const { dir, cert, key } = selfSigned();
  const renewed = { cert: join(dir, "renewed-cert.pem"), key: join(dir, "renewed-key.pem") };
  certificate(renewed.cert, renewed.key, "renewed");
  const started: Service[] = [];
  t.after(() => started.forEach((s) => s.child.kill("SIGKILL")));
  try {
    // Two workers, watching the files every 100 ms.
    const workers = await startService(join(dir, "w.db"), { WORKERS: "2", TLS_CERT_FILE: cert, TLS_KEY_FILE: key, TLS_RELOAD_CHECK_MS: "100" });
    started.push(workers);
    await until("both workers listen", () => lines(workers, "listening").length === 2, 30_000);
    assert.ok(lines(workers, "listening").every((l) => l.tls_not_after === new Date(new X509Certificate(readFileSync(cert)).validTo).toISOString()));
    replaceFiles(renewed, { cert, key });
    await until("both workers reload", () => lines(workers, "tls certificate reloaded").length === 2);
    const reloaded = lines(workers, "tls certificate reloaded");
    assert.deepEqual(new Set(reloaded.map((l) => l.worker)).size, 2);
    assert.ok(reloaded.every((l) => l.trigger === "files changed" && l.sha256 === fingerprintOf(renewed.cert) && l.subject === "CN=renewed"));
    for (let i = 0; i < 6; i++) assert.equal((await handshake(workers.port)).fingerprint, fingerprintOf(renewed.cert));

    // Half a renewal: a new certificate whose key has not come yet. Logged by each worker,
    // without key material, and the renewed certificate stays.
    const next = { cert: join(dir, "next-cert.pem"), key: join(dir, "next-key.pem") };
    certificate(next.cert, next.key, "next");
    const refusal = "tls certificate not reloaded; still serving the previous one";
    // Counted from here: a look between the renames of the step before may have refused a half-replaced pair.
    const earlier = lines(workers, refusal).length;
    const refusals = () => lines(workers, refusal).slice(earlier);
    replaceFiles({ cert: next.cert, key: renewed.key }, { cert, key });
    // A look between the two renames sees the new certificate before the key file is renamed
    // over: then the rename is a change of its own, refused alike, so a worker may refuse twice.
    await until("both workers refuse it", () => new Set(refusals().map((l) => l.worker)).size === 2);
    await new Promise((r) => setTimeout(r, 300));
    const refused = refusals().length;
    assert.ok(refused <= 4, `at most twice a worker, got ${refused}`);
    for (const l of refusals()) {
      assert.equal(l.reason, "TLS_KEY_FILE: the key does not belong to the certificate in TLS_CERT_FILE");
      assert.equal(l.level, "error");
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(refusals().length, refused, "refused for what the files hold: not tried again until they change");
    for (let i = 0; i < 4; i++) assert.equal((await handshake(workers.port)).fingerprint, fingerprintOf(renewed.cert));
    // A worker that dies now cannot start on these files: the other serves on, and the
    // primary starts another later instead of stopping the service.
    process.kill(childrenRunning(workers.child.pid!, "src/main.ts")[0]!, "SIGKILL");
    // (A worker's start takes seconds where tsx has not compiled the sources yet.)
    await until("the replacement could not start", () => lines(workers, "a worker could not start; the others serve on, and another is started later").length >= 1, 30_000);
    for (let i = 0; i < 4; i++) assert.equal((await handshake(workers.port)).fingerprint, fingerprintOf(renewed.cert), "the other worker serves on");
    // Its key arrives: now it is served, by the worker that was serving and by a new one.
    replaceFiles(next, { cert, key });
    await until("the serving worker takes the whole renewal", () => lines(workers, "tls certificate reloaded").length === 3);
    await until("a new worker starts", () => lines(workers, "listening").length === 3, 30_000);
    for (let i = 0; i < 6; i++) assert.equal((await handshake(workers.port)).fingerprint, fingerprintOf(next.cert));
    assert.ok(!workers.out.text.includes(readFileSync(next.key, "utf8").split("\n")[1]!), "no key material in the log");

    // SIGHUP reaches every worker through the primary, each once; the watch, which sees the
    // same change, does not read the files again after it.
    replaceFiles(renewed, { cert, key });
    workers.child.kill("SIGHUP");
    const byHup = () => lines(workers, "tls certificate reloaded").filter((l) => l.trigger === "SIGHUP");
    await until("both workers reload on SIGHUP", () => byHup().length === 2);
    assert.equal(new Set(byHup().map((l) => l.worker)).size, 2, "each worker once");
    await new Promise((r) => setTimeout(r, 400));
    const all = lines(workers, "tls certificate reloaded");
    for (const hup of byHup()) {
      const later = all.slice(all.findIndex((l) => l.time === hup.time && l.worker === hup.worker) + 1);
      assert.ok(!later.some((l) => l.worker === hup.worker && l.sha256 === hup.sha256), "no second reload of the same files");
    }
    assert.equal((await handshake(workers.port)).fingerprint, fingerprintOf(renewed.cert));

    // One process, no watch: only SIGHUP reads the files again.
    // Its metrics page shows the certificate's expiry and counts the reloads, which a monitor can alert on.
    const one = await startService(join(dir, "o.db"), { TLS_CERT_FILE: cert, TLS_KEY_FILE: key, TLS_RELOAD_CHECK_MS: "0", METRICS_PORT: "0" });
    started.push(one);
    const expiry = (file: string) => Date.parse(new X509Certificate(readFileSync(file)).validTo) / 1000;
    const tlsFigures = async () => {
      const page = await scrapeMetrics(metricsPort(one));
      return [page.get("scm_tls_certificate_expiry_seconds"), page.get('scm_tls_reloads_total{result="ok"}'), page.get('scm_tls_reloads_total{result="failed"}')];
    };
    assert.deepEqual(await tlsFigures(), [expiry(renewed.cert), 0, 0]);
    replaceFiles(next, { cert, key });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await handshake(one.port)).fingerprint, fingerprintOf(renewed.cert), "not watched");
    one.child.kill("SIGHUP");
    await until("reloaded on SIGHUP", () => lines(one, "tls certificate reloaded").length === 1);
    assert.equal((await handshake(one.port)).fingerprint, fingerprintOf(next.cert));
    assert.deepEqual(await tlsFigures(), [expiry(next.cert), 1, 0]);
    // Half a renewal, read on SIGHUP: refused, counted, and the expiry stays the served one's.
    replaceFiles({ cert: renewed.cert, key: next.key }, { cert, key });
    one.child.kill("SIGHUP");
    await until("refused on SIGHUP", () => lines(one, "tls certificate not reloaded; still serving the previous one").length === 1);
    assert.deepEqual(await tlsFigures(), [expiry(next.cert), 1, 1]);

    // Without TLS, SIGHUP does not stop the service.
    const plain = await startService(join(dir, "p.db"));
    started.push(plain);
    plain.child.kill("SIGHUP");
    await until("says so", () => lines(plain, "SIGHUP: no TLS certificate to reload").length === 1);
    assert.equal(await (await fetch(`http://127.0.0.1:${plain.port}/healthz`)).text(), "ok\n");

    for (const s of started) {
      s.child.kill("SIGTERM");
      assert.equal((await s.exited).code, 0);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a SIGHUP while the service starts is held, and in a terminal SIGHUP is the hangup: the service stops as on SIGTERM", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-hup-"));
  const dbFile = join(dir, "s.db");
  // Another process holds the write lock of an empty database: the start waits in its migrations.
  const other = new Database(dbFile);
  other.pragma("journal_mode = WAL");
  other.exec("BEGIN IMMEDIATE");
  const env = { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: dbFile, RATE_LIMIT_PER_SECOND: "0" };
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { env, stdio: ["ignore", "pipe", "pipe"] });
  t.after(() => child.kill("SIGKILL"));
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  try {
    while (child.exitCode === null && !hasOpen(child.pid!, dbFile)) await new Promise((r) => setTimeout(r, 20));
    child.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 200));
    other.exec("COMMIT");
    await until("it listens", () => out.includes('"msg":"listening"'), 10_000);
    assert.equal(child.exitCode, null, "still running");
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
    assert.equal(child.exitCode, 0);
  } finally {
    if (other.inTransaction) other.exec("ROLLBACK");
    other.close();
  }

  // With workers, SIGHUPs sent all through their start (from the moment the primary holds
  // the signal) end none: the primary passes it only to workers that hold it themselves.
  const { cert, key, dir: certDir } = selfSigned();
  t.after(() => rmSync(certDir, { recursive: true, force: true }));
  const workers = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    env: { ...env, DATABASE_URL: join(dir, "w.db"), WORKERS: "2", TLS_CERT_FILE: cert, TLS_KEY_FILE: key },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => workers.kill("SIGKILL"));
  let workersOut = "";
  workers.stdout.on("data", (d) => (workersOut += d));
  const catchesSighup = () => {
    try {
      const caught = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${workers.pid}/status`, "utf8"))?.[1];
      return caught !== undefined && (BigInt(`0x${caught}`) & 1n) === 1n; // SIGHUP is signal 1
    } catch {
      return false;
    }
  };
  await until("the primary holds SIGHUP", catchesSighup, 15_000);
  let sent = 0;
  const barrage = setInterval(() => (workers.kill("SIGHUP"), sent++), 10);
  try {
    await until("both workers listen", () => (workersOut.match(/"msg":"listening"/g) ?? []).length === 2, 30_000);
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    clearInterval(barrage);
  }
  assert.ok(sent > 10, `${sent} SIGHUPs sent`);
  assert.doesNotMatch(workersOut, /a worker died while starting|could not start/, "no worker ended by a SIGHUP");
  assert.equal(workers.exitCode, null);
  workers.kill("SIGTERM");
  await new Promise((r) => workers.once("exit", r));
  assert.equal(workers.exitCode, 0);

  // In a terminal (a pseudo-terminal, as python's pty gives): the hangup stops it cleanly.
  const inPty = spawn("/usr/bin/python3", ["-c", "import pty, sys; pty.spawn(sys.argv[1:])", process.execPath, "--import", "tsx", "src/main.ts"], {
    env: { ...env, DATABASE_URL: join(dir, "t.db") },
    stdio: ["pipe", "pipe", "pipe"],
  });
  t.after(() => inPty.kill("SIGKILL"));
  let tty = "";
  inPty.stdout.on("data", (d) => (tty += d));
  try {
    await until("it listens in a terminal", () => tty.includes('"msg":"listening"'), 15_000);
    const service = childrenRunning(inPty.pid!, "src/main.ts")[0]!;
    // Should it not stop, killing python would leave it running, orphaned.
    t.after(() => {
      try {
        process.kill(service, "SIGKILL");
      } catch {
        // stopped, as it should
      }
    });
    process.kill(service, "SIGHUP");
    await until("it stops", () => tty.includes('"msg":"stopped"'), 10_000);
    assert.match(tty, /"msg":"shutting down","signal":"SIGHUP"/);
  } finally {
    inPty.stdin.end();
    rmSync(dir, { recursive: true, force: true });
  }
});
