import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import Database from "better-sqlite3";
import { newKeyPair, open } from "../src/crypto/sealed-box.js";
import { createLogger } from "../src/log.js";
import { databaseFamilies } from "../src/metrics/figures.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { createApp } from "../src/server.js";
import { openDatabase, type DatabaseOptions, type Db } from "../src/store/database.js";
import { describeStartupError } from "../src/startup-errors.js";
import { listen } from "../src/transport/http-server.js";
import { call, countInMainFile, crashMidWrite, createRunner, lines, seededRandom, signUp, startServer, startService, type TestServer } from "./harness.js";
import { SecretWatch } from "./secret-watch.js";

// Database trouble (no space, a file that cannot be written, a lock held too long) and
// racing writers, against real servers on real SQLite files.

const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";
const GET = "gitpod.v1.RunnerConfigurationService/GetSCMIntegration";
const UPDATE = "gitpod.v1.RunnerConfigurationService/UpdateSCMIntegration";
const DELETE = "gitpod.v1.RunnerConfigurationService/DeleteSCMIntegration";
const LIST = "gitpod.v1.RunnerConfigurationService/ListSCMIntegrations";

/** What a client may be told: our words, never the driver's (which can carry SQL). */
function assertNoDriverText(message: string): void {
  assert.doesNotMatch(
    message,
    /sqlite|savepoint|\b(select|insert|update|delete|begin|commit|rollback|pragma)\b|constraint|disk i\/o|readonly database|database or disk is full|no such|\bSQL\b/i,
    `driver text in ${JSON.stringify(message)}`,
  );
}

/** A server of our own over `file`, as the harness builds one (leak watch included), but with database options. */
/**
 * Makes the files immutable (chattr +i): as root, permissions stop no writes, and this stops
 * every write from then on, as a read-only disk would. False when this machine cannot, and
 * the test is skipped then; CI runs as root on a machine like ours, where that is a failure.
 */
function makeImmutable(t: { skip(message: string): void }, files: string[]): boolean {
  try {
    execFileSync("chattr", ["+i", ...files], { stdio: "pipe" });
    return true;
  } catch (err) {
    if (process.env.CI === "true") throw err;
    t.skip(`cannot make files immutable here (needs root and chattr on ${tmpdir()}): ${(err as Error).message.split("\n")[0]}`);
    return false;
  }
}

/** Clears what makeImmutable set; quiet where it was never set or is cleared already. */
function clearImmutable(files: string[]): void {
  try {
    execFileSync("chattr", ["-i", ...files], { stdio: "pipe" });
  } catch {
    // not supported here, or already cleared
  }
}

async function serveFile(file: string, options: DatabaseOptions = {}, token?: string) {
  const db = openDatabase(file, options);
  if (token === undefined) {
    createOrganization(db, "acme");
    token = createApiToken(db, "acme").token;
  }
  const logs: string[] = [];
  const watch = new SecretWatch();
  watch.noteToken(token);
  const app = createApp(db, createLogger("info", (l) => logs.push(l)), { publicUrl: "https://scm.example.test", interceptors: [watch.interceptor()] });
  const server = await listen(watch.wrap(app.handler), 0, "127.0.0.1", app.listenOptions);
  const s = { url: `http://127.0.0.1:${server.address.port}`, db, token, logs, otherToken: "", watch } as unknown as TestServer;
  let closed: Promise<void> | undefined;
  return {
    s,
    db,
    logs,
    // Some tests close early and again in `finally`: the leak scan runs once.
    close: () =>
      (closed ??= (async () => {
        await server.shutdown(1000);
        await app.close();
        watch.finish(file, logs, () => {
          if (db.$client.open) db.$client.close();
        });
      })()),
  };
}

/** Creates with a 4 KiB secret each, so every one needs fresh pages. */
function bigCreate(runnerId: string, tag: string) {
  return { runnerId, scmId: "github", host: `${tag}.example.com`, oauthClientId: `client-${tag}`, oauthPlaintextClientSecret: `${tag}-${randomBytes(2000).toString("hex")}` };
}

/** Whether the given host is stored (read straight from the file by a second connection). */
function stored(db: Db, host: string): boolean {
  return db.$client.prepare("SELECT 1 FROM scm_integrations WHERE host = ?").get(host) !== undefined;
}

/**
 * Sends rounds of concurrent big creates until the database refuses some; checks every
 * answer against the file (acknowledged ⇒ stored, refused ⇒ not stored, nothing else)
 * and answers the refusals.
 */
async function createUntilRefused(s: TestServer, runnerId: string, prefix: string, maxRounds: number) {
  const refused: { status: number; body: any }[] = [];
  for (let round = 0; round < maxRounds && refused.length === 0; round++) {
    const bodies = Array.from({ length: 16 }, (_, i) => bigCreate(runnerId, `${prefix}-${round}-${i}`));
    const results = await Promise.all(bodies.map((b) => call(s, CREATE, b)));
    results.forEach((r, i) => {
      if (r.status === 200) assert.ok(stored(s.db, bodies[i]!.host), "an acknowledged create is stored");
      else {
        assert.equal(stored(s.db, bodies[i]!.host), false, "a refused create left nothing behind");
        refused.push(r);
      }
    });
  }
  return refused;
}

/** Reads, health and an existing integration keep answering. */
async function readsStillWork(s: TestServer, runnerId: string, id: string) {
  assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
  assert.equal((await call(s, GET, { id })).status, 200);
  assert.equal((await call(s, "gitpod.v1.RunnerService/GetRunner", { runnerId })).status, 200);
  const list = await call(s, LIST, { filter: { runnerIds: [runnerId] }, pagination: { pageSize: 5 } });
  assert.equal(list.status, 200, JSON.stringify(list.body));
}

describe("disk full, as a page limit on the server's connection", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("creates are resource_exhausted with a clear message, reads work, and creates work again once the limit rises", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const keys = await signUp(s, runnerToken);
    const first = await call(s, CREATE, bigCreate(runnerId, "before-limit"));
    assert.equal(first.status, 200);

    const sqlite = s.db.$client;
    const unlimited = sqlite.pragma("max_page_count", { simple: true }) as number;
    sqlite.pragma(`max_page_count = ${sqlite.pragma("page_count", { simple: true }) as number}`);
    try {
      const refused = await createUntilRefused(s, runnerId, "limited", 10);
      assert.ok(refused.length > 0, "the page limit was reached");
      for (const r of refused) {
        // A write that hits the limit makes SQLite roll back the whole shared transaction:
        // every write of that batch is refused for the same reason, none as `internal`.
        assert.equal(r.body.code, "resource_exhausted", JSON.stringify(r.body));
        assert.match(r.body.message, /^the database is out of storage space: writes are refused until space is freed, reads still work; request id \S+$/);
        assertNoDriverText(r.body.message);
      }
      await readsStillWork(s, runnerId, first.body.id);
    } finally {
      sqlite.pragma(`max_page_count = ${unlimited}`);
    }
    const again = await Promise.all(Array.from({ length: 8 }, (_, i) => call(s, CREATE, bigCreate(runnerId, `after-limit-${i}`))));
    assert.deepEqual(again.map((r) => r.status), Array(8).fill(200));
    const got = await call(s, GET, { id: again[0]!.body.id });
    assert.ok(open(Buffer.from(got.body.integration.oauth.encryptedClientSecret, "base64"), keys.publicKey, keys.secretKey)?.startsWith("after-limit-0-"));
    assert.equal(sqlite.pragma("integrity_check", { simple: true }), "ok");
  });
});

/** A fresh tmpfs of `size` (e.g. "3m"); null, with the test skipped, where mounting takes a capability this user lacks. */
function tinyFilesystem(t: TestContext, size: string): string | null {
  const dir = mkdtempSync(join(tmpdir(), "scm-full-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { stdio: "pipe" });
    return dir;
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    // CI runs as root on a machine like ours: there a missing capability is a failure.
    if (process.env.CI === "true") throw err;
    t.skip(`cannot mount a tmpfs here (needs root): ${(err as Error).message.split("\n")[0]}`);
    return null;
  }
}

function removeFilesystem(dir: string): void {
  try {
    execFileSync("umount", [dir], { stdio: "pipe" });
  } catch {
    execFileSync("umount", ["-l", dir], { stdio: "pipe" });
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Writes to a new file in `dir` until the filesystem is full, as some other program would. */
function fillUp(dir: string): void {
  const fd = openSync(join(dir, "filler"), "w");
  try {
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, "ENOSPC");
  } finally {
    closeSync(fd);
  }
}

describe("disk full, on a tiny filesystem", () => {
  it("creates are resource_exhausted, reads work, nothing half-written, and creates work again once space is freed", async (t) => {
    const dir = tinyFilesystem(t, "3m");
    if (!dir) return;
    let server: Awaited<ReturnType<typeof serveFile>> | undefined;
    try {
      server = await serveFile(join(dir, "full.db"));
      const { s } = server;
      const { runnerId, runnerToken } = await createRunner(s);
      await signUp(s, runnerToken);
      const first = await call(s, CREATE, bigCreate(runnerId, "before-full"));
      assert.equal(first.status, 200);

      fillUp(dir);

      const refused = await createUntilRefused(s, runnerId, "full", 30);
      assert.ok(refused.length > 0, "the filesystem filled up");
      for (const r of refused) {
        assert.equal(r.body.code, "resource_exhausted", JSON.stringify(r.body));
        assert.match(r.body.message, /out of storage space/);
        assertNoDriverText(r.body.message);
      }
      await readsStillWork(s, runnerId, first.body.id);

      rmSync(join(dir, "filler"));
      const again = await Promise.all(Array.from({ length: 8 }, (_, i) => call(s, CREATE, bigCreate(runnerId, `after-full-${i}`))));
      assert.deepEqual(again.map((r) => r.status), Array(8).fill(200));
      assert.equal(s.db.$client.pragma("integrity_check", { simple: true }), "ok");
      const checkpointTrouble = server.logs.filter((l) => l.includes("checkpoint failed")).length;
      t.diagnostic(`${refused.length} creates refused while full; checkpointer reported trouble ${checkpointTrouble} time(s)`);
      await server.close();
      server = undefined;
    } finally {
      await server?.close();
      removeFilesystem(dir);
    }
  });

  it("the service started (one process) on a full disk after a crash serves reads, though it cannot empty the WAL", async (t) => {
    const dir = tinyFilesystem(t, "24m");
    if (!dir) return;
    const file = join(dir, "start.db");
    let service: Awaited<ReturnType<typeof startService>> | undefined;
    try {
      service = await startService(file);
      const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(service.out.text)?.[0];
      assert.ok(token);
      service.child.kill("SIGTERM");
      await service.exited;
      crashMidWrite(file, true); // committed: copying it back into the file needs room
      fillUp(dir);
      service = await startService(file);
      assert.match(service.out.text, /could not empty the WAL at start/);
      const listed = await fetch(`http://127.0.0.1:${service.port}/gitpod.v1.RunnerService/ListRunners`, {
        method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: "{}",
      });
      assert.equal(listed.status, 200, await listed.text());
      service.child.kill("SIGTERM");
      assert.equal((await service.exited).code, 0);
    } finally {
      if (service && service.child.exitCode === null && service.child.signalCode === null) service.child.kill("SIGKILL");
      removeFilesystem(dir);
    }
  });

  it("with the WAL reusing the length a crashed process left it, a commit whose -shm cannot grow is of unknown outcome", async (t) => {
    const dir = tinyFilesystem(t, "32m");
    if (!dir) return;
    const file = join(dir, "shm.db");
    let server: Awaited<ReturnType<typeof serveFile>> | undefined;
    try {
      const made = await serveFile(file);
      await made.close();
      // The WAL is left long, all of it free to reuse, and the next open starts a -shm that
      // covers 4096 frames. Past those the -shm must grow while the WAL need not.
      crashMidWrite(file, false);
      server = await serveFile(file, {}, made.s.token);
      const { s } = server;
      const { runnerId, runnerToken } = await createRunner(s);
      await signUp(s, runnerToken);
      fillUp(dir);
      const refused = await createUntilRefused(s, runnerId, "shm", 200);
      assert.ok(refused.length > 0, "the WAL came to need a larger -shm");
      assert.ok(server.logs.some((l) => l.includes("SQLITE_IOERR_SHMSIZE")), `it was the -shm that could not grow: ${server.logs.filter((l) => !l.includes('"msg":"request"')).slice(0, 3).join("")}`);
      // All its frames went into the reused WAL before the -shm failed to grow, so recovery
      // at the next start may replay it: it is neither done nor refused.
      for (const r of refused) {
        assert.equal(r.body.code, "unknown", JSON.stringify(r.body));
        assert.match(r.body.message, /^this write's outcome is unknown: the disk was full as it was committed/);
        assertNoDriverText(r.body.message);
      }
    } finally {
      await server?.close();
      removeFilesystem(dir);
    }
  });
});

describe("database file not writable", () => {
  const gatherStats = (db: Db) => JSON.parse(db.$client.prepare("SELECT wal_gather_stats()").pluck().get() as string) as { gathered: number; through: number };
  // The refused commits' frames either grow the WAL (written straight through) or reuse
  // its length after it started over (gathered by wal-gather.c, written out with the
  // commit's last frame). CI found the second stopping the process.
  for (const wal of ["growing", "reused"] as const) {
    it(`while the files are immutable creates are unavailable, reads work; once writable again creates work (WAL ${wal})`, async (t) => {
      const dir = mkdtempSync(join(tmpdir(), "scm-ro-"));
      const file = join(dir, "ro.db");
      const server = await serveFile(file);
      // The database and its WAL, where writes go. Not the -shm index: SQLite writes it
      // through a memory mapping, and a store to a mapped page of an immutable file is a
      // SIGBUS in any program. A real read-only condition cannot do that: Linux refuses to
      // remount a filesystem read-only while files on it are open for writing.
      const files = [file, `${file}-wal`];
      const reader = new Database(file, { readonly: true });
      try {
        const { s } = server;
        const { runnerId } = await createRunner(s);
        // Everything copied back into the main file; the service's own checkpointer may hold
        // the checkpoint lock at that moment, and then it is tried again.
        const checkpoint = async (mode: string) => {
          for (let i = 0; i < 500; i++) {
            const [r] = s.db.$client.pragma(`wal_checkpoint(${mode})`) as { busy: number; log: number; checkpointed: number }[];
            if (r!.busy === 0 && r!.log === r!.checkpointed) return;
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
          assert.fail(`wal_checkpoint(${mode}) found the WAL busy for 5 s`);
        };
        if (wal === "growing") await checkpoint("TRUNCATE");
        else {
          const made = await Promise.all(Array.from({ length: 10 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `long-${i}.example.com`, pat: true })));
          assert.deepEqual(made.map((r) => r.status), Array(10).fill(200));
          await checkpoint("PASSIVE");
        }
        // Everything is copied back, so this snapshot reads the main file alone, and while
        // it is open nothing more is: the next commit starts the WAL over at its head, and
        // the ones after it follow on, inside the length the WAL had (reused) or past it.
        reader.exec("BEGIN; SELECT count(*) FROM runners;");
        const first = await call(s, CREATE, { runnerId, scmId: "github", host: "before.example.com", pat: true });
        assert.equal(first.status, 200);
        if (!makeImmutable(t, files)) return;
        const before = gatherStats(s.db);
        try {
          const results = await Promise.all(
            Array.from({ length: 6 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `ro-${i}.example.com`, pat: true })),
          );
          for (const r of results) {
            assert.equal(r.body.code, "unavailable", JSON.stringify(r.body));
            assert.match(r.body.message, /^the database file cannot be written or read at the moment \(the storage refused it\); try again once the storage is back; request id \S+$/);
            assertNoDriverText(r.body.message);
          }
          await readsStillWork(s, runnerId, first.body.id);
        } finally {
          clearImmutable(files);
        }
        const during = gatherStats(s.db);
        if (wal === "growing") assert.ok(during.through > before.through, "the refused commits' frames grew the WAL");
        else assert.ok(during.gathered > before.gathered && during.through === before.through, `the refused commits' frames were gathered: ${JSON.stringify({ before, during })}`);
        reader.exec("COMMIT");
        const again = await Promise.all(
          Array.from({ length: 6 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `ro-${i}.example.com`, pat: true })),
        );
        assert.deepEqual(again.map((r) => r.status), Array(6).fill(200));
        assert.equal(s.db.$client.pragma("integrity_check", { simple: true }), "ok");
      } finally {
        clearImmutable(files);
        reader.close();
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

describe("main database file alone not writable", () => {
  it("writes go on into the WAL, checkpoints fail and are retried, and resume once it is writable", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "scm-ckpt-"));
    const file = join(dir, "ckpt.db");
    const server = await serveFile(file);
    const waitForLog = async (text: string) => {
      for (let i = 0; i < 200 && !server.logs.some((l) => l.includes(text)); i++) await new Promise((r) => setTimeout(r, 25));
      return server.logs.some((l) => l.includes(text));
    };
    try {
      const { s } = server;
      const { runnerId } = await createRunner(s);
      if (!makeImmutable(t, [file])) return;
      try {
        // Commits only append to the WAL; copying them into the main file is the
        // checkpointer's job, and that now fails.
        const made = await Promise.all(Array.from({ length: 10 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `ck-${i}.example.com`, pat: true })));
        assert.deepEqual(made.map((r) => r.status), Array(10).fill(200));
        assert.ok(await waitForLog('"msg":"checkpoint failed; trying again"'), "the checkpointer reports the failure");
        const more = await call(s, CREATE, { runnerId, scmId: "github", host: "ck-more.example.com", pat: true });
        assert.equal(more.status, 200);
      } finally {
        clearImmutable([file]);
      }
      assert.ok(await waitForLog('"msg":"checkpoints work again"'), `the checkpointer recovers by itself: ${server.logs.filter((l) => !l.includes('"msg":"request"')).join("")}`);
      assert.ok(!server.logs.some((l) => l.includes("checkpointer failed")), "the checkpointer thread never died");
      // Once checkpointed, the main file alone holds the rows: a copy of it without its WAL
      // has all eleven (checkpoints run every 50 ms, so this may take a few rounds).
      const found = await countInMainFile(file, "SELECT count(*) FROM scm_integrations WHERE host LIKE 'ck-%'", 11);
      assert.equal(found, 11, "the main file alone holds every row once the checkpointer recovered");
    } finally {
      clearImmutable([file]);
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("main database file alone not writable for a while", () => {
  it("the checkpointer reports the failure once, not at every retry, and its recovery once", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "scm-ckpt-once-"));
    const file = join(dir, "ckpt.db");
    const server = await serveFile(file);
    const count = (text: string) => server.logs.filter((l) => l.includes(text)).length;
    const waitForLog = async (text: string) => {
      for (let i = 0; i < 200 && count(text) === 0; i++) await new Promise((r) => setTimeout(r, 25));
      return count(text) > 0;
    };
    try {
      const { s } = server;
      const { runnerId } = await createRunner(s);
      if (!makeImmutable(t, [file])) return;
      try {
        const made = await call(s, CREATE, { runnerId, scmId: "github", host: "once.example.com", pat: true });
        assert.equal(made.status, 200);
        assert.ok(await waitForLog('"msg":"checkpoint failed; trying again"'), "the checkpointer reports the failure");
        // Retried every 50 ms, on a fresh connection each time, and failing the same way each time.
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(count('"msg":"checkpoint failed; trying again"'), 1, `reported once: ${server.logs.filter((l) => !l.includes('"msg":"request"')).join("")}`);
      } finally {
        clearImmutable([file]);
      }
      const cleared = performance.now();
      assert.ok(await waitForLog('"msg":"checkpoints work again"'), "the checkpointer recovers by itself");
      // Only after a second of successes (a lower bound the thread keeps, so not a race): a
      // checkpoint that succeeds between failures would otherwise be reported as a recovery.
      assert.ok(performance.now() - cleared >= 1000, `recovery reported ${Math.round(performance.now() - cleared)} ms after the file became writable`);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(count('"msg":"checkpoints work again"'), 1, "recovery is reported once");
      assert.equal(count('"msg":"checkpoint failed; trying again"'), 1, "and no failure after it");
    } finally {
      clearImmutable([file]);
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * The service started on a fresh database in a folder of its own, with a fixture of
 * test/fixtures preloaded into each of its threads (NODE_OPTIONS=--require) and `env` added;
 * killed and its folder removed when the test ends.
 */
async function serviceWithFixture(t: TestContext, fixture: string, env: (dir: string) => Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), "scm-fixture-"));
  const preload = join(import.meta.dirname, "fixtures", fixture);
  const file = join(dir, "s.db");
  const s = await startService(file, { ...env(dir), NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --require ${preload}` });
  t.after(() => {
    s.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  return { s, dir, file };
}

describe("a sync the checkpointer thread makes itself fails", () => {
  it("the database is halted as after a failed sync of the service's own: not retried on a fresh connection", async (t) => {
    // The thread syncs the database file and the WAL through descriptors of its own before its
    // first checkpoint; the flag, there from the start, fails the first of those syncs.
    let flag = "";
    const { s } = await serviceWithFixture(t, "fail-thread-sync.cjs", (dir) => {
      flag = join(dir, "fail-next-thread-sync");
      writeFileSync(flag, "");
      return { FAIL_SYNC_FLAG: flag };
    });
    for (let i = 0; i < 200 && lines(s, "a checkpoint could not sync to disk").length === 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(existsSync(flag), false, "the thread's sync took the failure");
    assert.deepEqual(lines(s, "a checkpoint could not sync to disk").map((l) => [l.level, l.driver_code]), [["error", "EIO"]], s.out.text);
    assert.equal(lines(s, "checkpoint failed; trying again").length, 0, "not taken for trouble a fresh connection could mend");
    const health = await fetch(`http://127.0.0.1:${s.port}/healthz`);
    assert.equal(health.status, 503);
    assert.match(await health.text(), /^unavailable: the database cannot be used/);
    assert.ok(!s.out.text.includes('"msg":"checkpoints work again"'));
  });
});

describe("checkpoints that fail and succeed in turn", () => {
  it("are reported failing once, and working again only after a second of successes, not at each success between failures", async (t) => {
    let flag = "";
    const { s } = await serviceWithFixture(t, "flap-thread-checkpoints.cjs", (dir) => {
      flag = join(dir, "flap-checkpoints");
      writeFileSync(flag, "");
      return { FLAP_CHECKPOINT_FLAG: flag };
    });
    const failed = () => lines(s, "checkpoint failed; trying again");
    const working = () => lines(s, "checkpoints work again");
    for (let i = 0; i < 400 && failed().length === 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.deepEqual(failed().map((l) => [l.level, l.driver_code]), [["warn", "SQLITE_FULL"]], s.out.text);
    // Forty intervals or more of failure, success, failure...: however slow the machine, no
    // success lasts, so none is reported as a recovery, and the one kind of failure once.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(working().length, 0, s.out.text);
    assert.equal(failed().length, 1);
    // The disk mended: a second of successes, and the recovery is reported, once.
    rmSync(flag);
    for (let i = 0; i < 400 && working().length === 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.deepEqual(working().map((l) => l.level), ["info"], s.out.text);
    assert.equal(failed().length, 1);
    // Served throughout: a failed checkpoint costs no request anything.
    assert.equal((await fetch(`http://127.0.0.1:${s.port}/healthz`)).status, 200);
  });

  it("failing with SQLITE_BUSY (another connection checkpointing) is no trouble: nothing is reported", async (t) => {
    let flag = "";
    const { s } = await serviceWithFixture(t, "flap-thread-checkpoints.cjs", (dir) => {
      flag = join(dir, "flap-checkpoints");
      writeFileSync(flag, "");
      return { FLAP_CHECKPOINT_FLAG: flag, FLAP_CHECKPOINT_CODE: "SQLITE_BUSY" };
    });
    // A write (with the token the first start printed), so that there is something to
    // checkpoint; then the busy spell of a second.
    const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(s.out.text)![0];
    const made = await fetch(`http://127.0.0.1:${s.port}/gitpod.v1.RunnerService/CreateRunner`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify({ name: "busy-runner", provider: "RUNNER_PROVIDER_AWS_EC2" }) });
    assert.equal(made.status, 200);
    await new Promise((r) => setTimeout(r, 1000));
    rmSync(flag);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual([lines(s, "checkpoint failed; trying again").length, lines(s, "checkpoints work again").length], [0, 0], s.out.text);
  });
});

describe("the checkpointer thread's own descriptors", () => {
  // Linux reports a failed writeback only to descriptors open when it failed: the thread's
  // syncs catch the failures from its start only if its descriptors were there before any
  // of its connections could have written.
  it("are opened, the database file's and the WAL's, before its first connection", async (t) => {
    let record = "";
    const { file } = await serviceWithFixture(t, "record-thread-opens.cjs", (dir) => {
      record = join(dir, "thread-opens.txt");
      return { RECORD_THREAD_OPENS: record };
    });
    const recorded = () => (existsSync(record) ? readFileSync(record, "utf8").trim().split("\n") : []);
    for (let i = 0; i < 400 && !recorded().some((l) => l.startsWith("connect ")); i++) await new Promise((r) => setTimeout(r, 25));
    const lines = recorded();
    const first = lines.findIndex((l) => l.startsWith("connect "));
    assert.ok(first >= 0, lines.join("\n"));
    assert.equal(lines[first], `connect ${file}`);
    assert.deepEqual(lines.slice(0, first).sort(), [`open ${file}`, `open ${file}-wal`].sort(), lines.join("\n"));
  });
});

describe("database locked by another process past the wait", () => {
  it("creates are unavailable with a clear message, reads keep answering, and creates work once the lock is released", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-lock-"));
    const file = join(dir, "lock.db");
    // A short wait keeps the test quick; the service waits 5 s by default.
    const server = await serveFile(file, { lockWaitMs: 200 });
    const other = new Database(file);
    try {
      const { s } = server;
      const { runnerId } = await createRunner(s);
      const first = await call(s, CREATE, { runnerId, scmId: "github", host: "first.example.com", pat: true });
      other.exec("BEGIN IMMEDIATE");
      const waited = await Promise.all(
        Array.from({ length: 5 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `locked-${i}.example.com`, pat: true })),
      );
      for (const r of waited) {
        assert.equal(r.body.code, "unavailable", JSON.stringify(r.body));
        assert.match(r.body.message, /^the database is locked by another process \(another worker or an admin command\) for longer than this service waits; try again shortly; request id \S+$/);
        assertNoDriverText(r.body.message);
        // unavailable is worth retrying: the official SDK must not be told otherwise.
        assert.equal(r.headers.get("x-should-retry"), null);
      }
      await readsStillWork(s, runnerId, first.body.id);
      other.exec("COMMIT");
      for (let i = 0; i < 5; i++) assert.equal(stored(s.db, `locked-${i}.example.com`), false, "a refused create left nothing behind");
      const again = await Promise.all(
        Array.from({ length: 5 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `locked-${i}.example.com`, pat: true })),
      );
      assert.deepEqual(again.map((r) => r.status), Array(5).fill(200));
    } finally {
      if (other.inTransaction) other.exec("ROLLBACK");
      other.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("a database that reads as damaged", () => {
  it("the call that finds it is unavailable, and the service stops as after a failed sync: every call unavailable, /healthz 503", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-damaged-"));
    const file = join(dir, "damaged.db");
    try {
      const first = await serveFile(file);
      const token = first.s.token;
      const { runnerId } = await createRunner(first.s);
      const created = await call(first.s, CREATE, { runnerId, scmId: "github", host: "damaged.example.com", pat: true });
      assert.equal(created.status, 200);
      await first.close();
      // Every page of the integrations table overwritten, as a failing disk or a stray write
      // would leave them (the file is closed: its WAL is copied in and gone).
      const raw = new Database(file);
      const pageSize = raw.pragma("page_size", { simple: true }) as number;
      const pages = raw.prepare("SELECT pageno FROM dbstat WHERE name = 'scm_integrations'").pluck().all() as number[];
      raw.close();
      assert.ok(pages.length > 0);
      const fd = openSync(file, "r+");
      for (const page of pages) writeSync(fd, Buffer.alloc(pageSize, 0xa5), 0, pageSize, (page - 1) * pageSize);
      closeSync(fd);

      const second = await serveFile(file, {}, token);
      try {
        const { s, logs } = second;
        assert.equal((await fetch(`${s.url}/healthz`)).status, 200, "nothing has read the damage yet");
        const get = await call(s, "gitpod.v1.RunnerConfigurationService/GetSCMIntegration", { id: created.body.id });
        assert.equal(get.status, 503, JSON.stringify(get.body));
        assert.equal(get.body.code, "unavailable");
        assert.match(get.body.message, /^the database reads as damaged \(failing storage, or a damaged file\): this service refuses every call until it is restarted; request id \S+$/);
        assertNoDriverText(get.body.message);
        // From then on: before, each call read the damage again and was answered `internal`, and /healthz said ok.
        const health = await fetch(`${s.url}/healthz`);
        assert.equal(health.status, 503);
        const list = await call(s, "gitpod.v1.RunnerService/ListRunners", {});
        assert.equal(list.body.code, "unavailable", JSON.stringify(list.body));
        const lines = logs.map((l) => JSON.parse(l));
        assert.equal(lines.filter((l) => l.msg.startsWith("the database reads as damaged")).length, 1);
        assert.equal(lines.filter((l) => l.msg === "unexpected error").length, 0);
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("racing writers", () => {
  let dir: string;
  let a: Awaited<ReturnType<typeof serveFile>>;
  let b: Awaited<ReturnType<typeof serveFile>>;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "scm-race-"));
    // Two servers, each with its own connection to one file, as WORKERS=2 runs.
    a = await serveFile(join(dir, "race.db"), { sharedWithProcesses: true });
    b = await serveFile(join(dir, "race.db"), { sharedWithProcesses: true }, a.s.token);
  });
  after(async () => {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("50 parallel creates of one host through two connections: one succeeds, 49 are already_exists", async () => {
    const { runnerId } = await createRunner(a.s);
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => call(i % 2 ? a.s : b.s, CREATE, { runnerId, scmId: "github", host: "race.example.com", pat: true })),
    );
    assert.equal(results.filter((r) => r.status === 200).length, 1);
    assert.equal(results.filter((r) => r.body.code === "already_exists").length, 49);
    assert.deepEqual(a.db.$client.prepare("SELECT count(*) AS n FROM scm_integrations WHERE runner_id = ?").get(runnerId), { n: 1 });
  });

  it("parallel updates and deletes of one integration end in one whole state that the answers agree with", async (t) => {
    const random = seededRandom(t);
    const { runnerId, runnerToken } = await createRunner(a.s, a.s.token, "race-runner");
    const keys = await signUp(a.s, runnerToken);
    // Each update sets every field it touches to values of its own, so a mix of two
    // updates would show. Update 0 removes OAuth altogether.
    const updateBody = (id: string, k: number) =>
      k === 0
        ? { id, oauthClientId: "", pat: true }
        : { id, oauthClientId: `client-${k}`, oauthPlaintextClientSecret: `secret-${k}`, pat: k % 2 === 0 };
    const states = (k: number) =>
      k === 0 ? { clientId: undefined, secret: undefined, pat: true } : { clientId: `client-${k}`, secret: `secret-${k}`, pat: k % 2 === 0 };
    const stateOf = (integration: any) => ({
      clientId: integration.oauth?.clientId,
      secret: integration.oauth ? open(Buffer.from(integration.oauth.encryptedClientSecret, "base64"), keys.publicKey, keys.secretKey) ?? "unopenable" : undefined,
      pat: integration.pat ?? false,
    });
    const rounds = 24;
    let gone = 0;
    for (let round = 0; round < rounds; round++) {
      const created = await call(a.s, CREATE, { runnerId, scmId: "github", host: `r${round}.example.com`, oauthClientId: "client-initial", oauthPlaintextClientSecret: "secret-initial", pat: true });
      assert.equal(created.status, 200, JSON.stringify(created.body));
      const id: string = created.body.id;
      const withDelete = round % 3 !== 0;
      type Op = { kind: "update"; k: number } | { kind: "delete" } | { kind: "get" };
      const ops: Op[] = [
        ...Array.from({ length: 8 }, (_, k) => ({ kind: "update" as const, k })),
        ...(withDelete ? [{ kind: "delete" as const }, { kind: "delete" as const }] : []),
        ...Array.from({ length: 4 }, () => ({ kind: "get" as const })),
      ].sort(() => random() - 0.5);
      const answers = await Promise.all(
        ops.map((op, i) => {
          const server = i % 2 ? a.s : b.s;
          if (op.kind === "update") return call(server, UPDATE, updateBody(id, op.k));
          if (op.kind === "delete") return call(server, DELETE, { id });
          return call(server, GET, { id });
        }),
      );
      const allowed = [{ clientId: "client-initial", secret: "secret-initial", pat: true }, ...Array.from({ length: 8 }, (_, k) => states(k))];
      const okUpdates = new Set<number>();
      let okDeletes = 0;
      ops.forEach((op, i) => {
        const r = answers[i]!;
        if (r.status !== 200) {
          assert.equal(r.body.code, "not_found", `${op.kind}: ${JSON.stringify(r.body)}`);
          return;
        }
        if (op.kind === "update") okUpdates.add(op.k);
        if (op.kind === "delete") okDeletes++;
        // A read in the middle of the race sees one whole state, never a mix.
        if (op.kind === "get") assert.ok(allowed.some((s) => JSON.stringify(s) === JSON.stringify(stateOf(r.body.integration))), JSON.stringify(stateOf(r.body.integration)));
      });

      const final = await Promise.all([call(a.s, GET, { id }), call(b.s, GET, { id })]);
      if (withDelete) {
        // The row existed until a delete took it: exactly one delete succeeded, and the
        // integration is gone for every later read, from either connection.
        assert.equal(okDeletes, 1);
        assert.deepEqual(final.map((r) => r.body.code), ["not_found", "not_found"]);
        assert.equal(a.db.$client.prepare("SELECT 1 FROM scm_integrations WHERE id = ?").get(id), undefined);
        gone++;
      } else {
        assert.equal(final[0]!.status, 200);
        assert.deepEqual(final[1]!.body, final[0]!.body);
        const state = stateOf(final[0]!.body.integration);
        const k = Array.from({ length: 8 }, (_, k) => k).find((k) => JSON.stringify(states(k)) === JSON.stringify(state));
        assert.ok(k !== undefined, `the final state is one update's, whole: ${JSON.stringify(state)}`);
        assert.ok(okUpdates.has(k), `update ${k}, whose state stayed, was answered OK`);
        assert.equal(okUpdates.size, 8, "with no delete every update succeeds");
      }
    }
    t.diagnostic(`${rounds} rounds: ${gone} ended deleted, ${rounds - gone} with one update's state whole`);
  });
});

describe("a database file this process may not write", () => {
  it("stops the start with a line saying so, instead of serving with every write failing", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "scm-ro-"));
    const file = join(dir, "ro.db");
    openDatabase(file).$client.close();
    try {
      if (!makeImmutable(t, [file])) return;
      // SQLite would open it read-only without a word, and fail only the first write; the
      // start asks the kernel first, which answers EPERM for an immutable file.
      assert.throws(
        () => openDatabase(file),
        (err: unknown) => {
          assert.match(describeStartupError(err, { databaseFile: file }) ?? String(err), /^DATABASE_URL: .*ro\.db cannot be opened for reading and writing \(EPERM\): this user must be able to write the file/);
          return true;
        },
      );
    } finally {
      clearImmutable([file]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("stops the start the same way when the folder, where SQLite makes the -wal and -shm, may not be written", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "scm-ro-dir-"));
    const folder = join(dir, "data");
    mkdirSync(folder);
    const file = join(folder, "ro.db");
    openDatabase(file).$client.close(); // closed cleanly: no -wal or -shm left beside it
    try {
      if (!makeImmutable(t, [folder])) return;
      assert.throws(
        () => openDatabase(file),
        (err: unknown) => {
          assert.equal((err as { code?: unknown }).code, "EPERM", String(err));
          assert.match(describeStartupError(err, { databaseFile: file }) ?? String(err), /^DATABASE_URL: .*ro\.db cannot be opened for reading and writing \(EPERM\): this user must be able to write the file, its folder/);
          return true;
        },
      );
    } finally {
      clearImmutable([folder]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("and when a -shm another connection keeps beside it may not be written", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "scm-ro-shm-"));
    const file = join(dir, "ro.db");
    const holder = openDatabase(file); // keeps the -wal and -shm there
    try {
      holder.$client.exec("UPDATE service_secrets SET name = name");
      assert.ok(existsSync(`${file}-shm`));
      if (!makeImmutable(t, [`${file}-shm`])) return;
      assert.throws(
        () => openDatabase(file),
        (err: unknown) => {
          assert.equal((err as { code?: unknown }).code, "EPERM", String(err));
          assert.match(describeStartupError(err, { databaseFile: file }) ?? String(err), /^DATABASE_URL: .*ro\.db cannot be opened for reading and writing \(EPERM\)/);
          return true;
        },
      );
    } finally {
      clearImmutable([`${file}-shm`]);
      holder.$client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a database reached through a link is checked where it is: the link's own folder may be read-only", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "scm-link-"));
    const data = join(dir, "data");
    const etc = join(dir, "etc");
    mkdirSync(data);
    mkdirSync(etc);
    openDatabase(join(data, "s.db")).$client.close();
    symlinkSync(join(data, "s.db"), join(etc, "s.db"));
    try {
      symlinkSync(join(data, "new.db"), join(etc, "new.db")); // a link to a database not made yet
      // and a link to such a link
      symlinkSync(join(data, "chained.db"), join(etc, "middle.db"));
      symlinkSync(join(etc, "middle.db"), join(etc, "chained.db"));
      if (!makeImmutable(t, [etc])) return;
      for (const name of ["s.db", "new.db", "chained.db"]) {
        const db = openDatabase(join(etc, name));
        try {
          db.$client.exec("UPDATE service_secrets SET name = name");
          assert.ok(existsSync(join(data, `${name}-wal`)), `${name}: SQLite keeps its WAL beside the file the link points to`);
          assert.equal(statSync(join(data, name)).mode & 0o777, 0o600, `${name}: made through the link, still this user's alone`);
          // The metrics look for the WAL where SQLite keeps it.
          const wal = databaseFamilies(join(etc, name)).find((f) => f.name === "scm_database_wal_bytes");
          assert.equal(wal?.samples[0]?.value, statSync(join(data, `${name}-wal`)).size);
        } finally {
          db.$client.close();
        }
      }
    } finally {
      clearImmutable([etc]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
