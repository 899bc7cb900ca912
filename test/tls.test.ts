import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
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

it("with a certificate and key it serves HTTPS, HTTP/1.1 and h2 chosen by ALPN", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "pipe" });
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
