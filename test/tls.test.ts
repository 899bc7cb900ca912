import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import https from "node:https";
import type { Socket } from "node:net";
import { join } from "node:path";
import { it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { createLogger } from "../src/log.js";
import { createApp } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { listen } from "../src/transport/http-server.js";
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
  const server = await listen(watch.wrap(app.handler), 0, "127.0.0.1", { tls: { certFile: cert, keyFile: key } });
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
