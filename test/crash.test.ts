import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import Database from "better-sqlite3";
import { newKeyPair, open } from "../src/crypto/sealed-box.js";
import { crashMidWrite, seededRandom, startService, type Service } from "./harness.js";
import { logLines, SecretWatch } from "./secret-watch.js";

// Crash test: the real service as a child process under concurrent creates is killed
// with SIGKILL (no chance to flush or close anything), restarted on the same database
// file, and what it acknowledged before dying is checked against what it serves now.

const KILLS = 6;
/** Creates in flight at any moment. */
const CONCURRENCY = 24;
const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";
const LIST = "gitpod.v1.RunnerConfigurationService/ListSCMIntegrations";
/** Every request and answer of the one test here goes through this, for the leak scan at the end. */
const watch = new SecretWatch();

interface Sent {
  host: string;
  oauthClientId?: string;
  oauthPlaintextClientSecret?: string;
  pat: boolean;
}

/** One Connect JSON call over HTTP/1.1; rejects when no whole response arrives. */
function post(port: number, path: string, token: string, body: unknown, agent?: http.Agent): Promise<{ status: number; body: any }> {
  const data = JSON.stringify(body);
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json", "content-length": Buffer.byteLength(data) };
  watch.noteSent(`/${path}`, headers, data);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, method: "POST", path: `/${path}`, agent, headers },
      (res) => {
        const chunks: Buffer[] = [];
        let ended = false;
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          ended = true;
          watch.noteReceived(res.headers, Buffer.concat(chunks));
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
          } catch (err) {
            reject(err);
          }
        });
        res.on("error", reject);
        res.on("close", () => ended || reject(new Error("response cut off")));
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

/** Every integration of the runner as the service lists them, by host. */
async function listAll(port: number, token: string, runnerId: string): Promise<Map<string, any>> {
  const byHost = new Map<string, any>();
  let pageToken = "";
  do {
    const r = await post(port, LIST, token, { filter: { runnerIds: [runnerId] }, pagination: { pageSize: 100, token: pageToken } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    for (const i of r.body.integrations ?? []) {
      assert.ok(!byHost.has(i.host), `host ${i.host} listed twice`);
      byHost.set(i.host, i);
    }
    pageToken = r.body.pagination?.nextToken ?? "";
  } while (pageToken !== "");
  return byHost;
}

it(`SIGKILL under concurrent creates, ${KILLS} times: every acknowledged create survives whole, nothing is half there`, async (t) => {
  // The kill points (the kill's own timing still varies from run to run).
  const random = seededRandom(t);
  const dir = mkdtempSync(join(tmpdir(), "scm-crash-"));
  const dbFile = join(dir, "db", "crash.db");
  let service: Service | undefined;
  /** Every start's output, for the leak scan at the end. */
  const outputs: Array<Service["out"]> = [];
  try {
    service = await startService(dbFile);
    outputs.push(service.out);
    const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(service.out.text)?.[0];
    assert.ok(token, "the first start prints an API token");
    const runner = await post(service.port, "gitpod.v1.RunnerService/CreateRunner", token, { name: "crash", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" });
    assert.equal(runner.status, 200, JSON.stringify(runner.body));
    const runnerId: string = runner.body.runner.runnerId;
    const keys = newKeyPair();
    const signup = await post(service.port, "gitpod.v1.RunnerInteractionService/Signup", runner.body.accessToken, { publicKey: keys.publicKey.toString("base64") });
    assert.equal(signup.status, 200, JSON.stringify(signup.body));

    /** Every create ever sent, by host (hosts are unique). */
    const sent = new Map<string, Sent>();
    /** Acknowledged creates: id → what was sent. */
    const acked = new Map<string, Sent>();
    let seq = 0;
    const totals = { acknowledged: 0, found: 0, lost: 0, extra: 0 };

    /** Checks the restarted service against everything acknowledged so far; answers the extras. */
    const verify = async (svc: Service): Promise<{ found: number; lost: number; extra: number }> => {
      const listed = await listAll(svc.port, token, runnerId);
      let found = 0;
      let lost = 0;
      const ackedHosts = new Set<string>();
      for (const [id, s] of acked) {
        ackedHosts.add(s.host);
        const row = listed.get(s.host);
        if (row?.id !== id) {
          lost++;
          continue;
        }
        found++;
        checkWhole(row, s);
      }
      // Rows nobody was told about: a create whose answer the kill swallowed may have
      // committed. Each must be a request that was really sent, stored whole.
      let extra = 0;
      for (const [host, row] of listed) {
        if (ackedHosts.has(host)) continue;
        const s = sent.get(host);
        assert.ok(s, `a row for host ${host}, which no request named`);
        checkWhole(row, s);
        extra++;
      }
      return { found, lost, extra };
    };
    const checkWhole = (row: any, s: Sent) => {
      assert.equal(row.runnerId, runnerId);
      assert.equal(row.scmId, "github");
      assert.equal(row.host, s.host);
      assert.equal(row.pat ?? false, s.pat, `pat of ${s.host}`);
      if (s.oauthClientId === undefined) {
        assert.equal(row.oauth, undefined, `no oauth for ${s.host}`);
      } else {
        assert.equal(row.oauth?.clientId, s.oauthClientId, `client id of ${s.host}`);
        const sealed = Buffer.from(row.oauth.encryptedClientSecret ?? "", "base64");
        assert.equal(open(sealed, keys.publicKey, keys.secretKey), s.oauthPlaintextClientSecret, `the secret of ${s.host} opens to what was sent`);
      }
    };

    for (let kill = 1; kill <= KILLS; kill++) {
      const svc: Service = service!;
      const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
      // Kill at a different point each round: after 30 to 150 acknowledgements.
      const killAfter = 30 + Math.floor(random() * 121);
      let ackedNow = 0;
      let killed = false;
      const sentBefore = seq;
      const unexpected: string[] = [];
      const worker = async () => {
        while (!killed) {
          const i = seq++;
          const s: Sent =
            i % 3 === 0
              ? { host: `k${kill}-${i}.example.com`, pat: true }
              : {
                  host: `k${kill}-${i}.example.com`,
                  oauthClientId: `client-${i}`,
                  oauthPlaintextClientSecret: `secret-${i}-${randomBytes(6).toString("hex")}`,
                  pat: i % 2 === 0,
                };
          sent.set(s.host, s);
          try {
            const r = await post(svc.port, CREATE, token, { runnerId, scmId: "github", ...s }, agent);
            if (r.status !== 200) unexpected.push(`${r.status} ${JSON.stringify(r.body)}`);
            else {
              acked.set(r.body.id, s);
              if (++ackedNow === killAfter) {
                // The kill lands a moment later, at no particular step of the next batches.
                setTimeout(() => {
                  killed = true;
                  svc.child.kill("SIGKILL");
                }, random() * 10);
              }
            }
          } catch {
            // No whole answer: the kill cut it off (or it came after). Unacknowledged.
          }
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      agent.destroy();
      const { signal } = await svc.exited;
      assert.equal(signal, "SIGKILL");
      assert.deepEqual(unexpected, [], "before the kill every create succeeded");

      service = await startService(dbFile);
      outputs.push(service.out);
      const { found, lost, extra } = await verify(service);
      t.diagnostic(
        `kill ${kill}: sent ${seq - sentBefore}, acknowledged ${ackedNow} (${acked.size} in all); ` +
          `after restart found ${found}, lost ${lost}, committed but unacknowledged ${extra - totals.extra}`,
      );
      assert.equal(lost, 0, "no acknowledged create is lost");
      Object.assign(totals, { acknowledged: acked.size, found, lost, extra });
    }

    // The database file itself is consistent after all those crashes.
    const check = new Database(dbFile, { readonly: true });
    try {
      assert.equal(check.pragma("integrity_check", { simple: true }), "ok");
      assert.deepEqual(check.pragma("foreign_key_check"), []);
      const rows = check.prepare("SELECT host, org_id, created_at, updated_at, oauth_client_id, oauth_encrypted_secret, oauth_sealed_to FROM scm_integrations WHERE runner_id = ?").all(runnerId) as any[];
      assert.equal(rows.length, totals.found + totals.extra);
      for (const r of rows) {
        assert.ok(r.org_id && r.created_at > 0 && r.updated_at === r.created_at, `row of ${r.host} is whole`);
        assert.equal(r.oauth_client_id === null, r.oauth_encrypted_secret === null, `client id and secret of ${r.host} come together`);
        if (r.oauth_sealed_to !== null) assert.ok(keys.publicKey.equals(r.oauth_sealed_to));
      }
    } finally {
      check.close();
    }

    service.child.kill("SIGTERM");
    assert.equal((await service.exited).code, 0);

    // No token or client secret of this run is in the database files, the output of any
    // start or the answers (the first-start message that shows the token once is not a log line).
    const logs = outputs.flatMap((o) => [...logLines(o.text), o.err]).filter((l) => l !== "");
    const scan = watch.finish(dbFile, logs);
    assert.ok(scan.secrets > 0 && logs.length > 0);
    t.diagnostic(`leak scan: ${scan.tokens} tokens, ${scan.secrets} secrets, ${logs.length} log lines, ${scan.responses} answers: ${scan.leaks.length} leaks`);
    t.diagnostic(
      `total over ${KILLS} kills: acknowledged ${totals.acknowledged}, found ${totals.found}, lost ${totals.lost}, committed but unacknowledged ${totals.extra}`,
    );
    console.log(
      `crash test: ${KILLS} kills, acknowledged ${totals.acknowledged}, found ${totals.found}, lost ${totals.lost}, committed but unacknowledged ${totals.extra}`,
    );
  } finally {
    if (service && service.child.exitCode === null && service.child.signalCode === null) service.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a start after a crash empties the long WAL it left (one process), so the -shm grows with it again", async () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-crash-"));
  const dbFile = join(dir, "wal.db");
  let service: Service | undefined;
  try {
    service = await startService(dbFile);
    service.child.kill("SIGTERM");
    assert.equal((await service.exited).code, 0);
    crashMidWrite(dbFile, true);
    assert.ok(statSync(`${dbFile}-wal`).size > 8 << 20, "the WAL was left long");
    service = await startService(dbFile);
    assert.equal(statSync(`${dbFile}-wal`).size, 0, "emptied before serving");
    assert.equal((await fetch(`http://127.0.0.1:${service.port}/healthz`)).status, 200);
    service.child.kill("SIGTERM");
    assert.equal((await service.exited).code, 0);
  } finally {
    if (service && service.child.exitCode === null && service.child.signalCode === null) service.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
