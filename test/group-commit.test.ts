import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { copyFileSync, fdatasync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import workerThreads from "node:worker_threads";
import Database from "better-sqlite3";
import { eq } from "drizzle-orm";
import { open } from "../src/crypto/sealed-box.js";
import { createLogger } from "../src/log.js";
import { OutcomeUnknown } from "../src/store/errors.js";
import { createApp } from "../src/server.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { startCheckpointer } from "../src/store/checkpointer.js";
import { openDatabase, type Db } from "../src/store/database.js";
import { scmIntegrations } from "../src/store/schema.js";
import { listen } from "../src/transport/http-server.js";
import { toConnectError } from "../src/transport/errors.js";
import { Code } from "@connectrpc/connect";
import { RunnerConfigurationService } from "../gen/gitpod/v1/runner_configurations_pb.js";
import { call, countInMainFile, createRunner, PUBLIC_URL, signUp, startServer, type TestServer } from "./harness.js";

const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";
const LIST = "gitpod.v1.RunnerConfigurationService/ListSCMIntegrations";
const GET = "gitpod.v1.RunnerConfigurationService/GetSCMIntegration";
const DELETE = "gitpod.v1.RunnerConfigurationService/DeleteSCMIntegration";
const UPDATE_RUNNER = "gitpod.v1.RunnerService/UpdateRunner";

/** A rejection of a write of unknown outcome, from a driver error with this code. */
const unknownOutcome = (code: string) => (err: unknown) => err instanceof OutcomeUnknown && (err.cause as { code?: string } | undefined)?.code === code;

describe("group commit", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("50 parallel creates of one host: exactly one succeeds, 49 are already_exists", async () => {
    const { runnerId } = await createRunner(s);
    const results = await Promise.all(
      Array.from({ length: 50 }, () => call(s, CREATE, { runnerId, scmId: "github", host: "github.com", pat: true })),
    );
    assert.equal(results.filter((r) => r.status === 200).length, 1);
    assert.equal(results.filter((r) => r.body.code === "already_exists").length, 49);
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.runnerId, runnerId)).all().length, 1);
  });

  it("concurrent creates share commits, yet each is answered for itself and lands whole", async () => {
    const { runnerId, runnerToken } = await createRunner(s);
    const keys = await signUp(s, runnerToken);
    const before = s.db.commitStats();
    // 20 distinct hosts, each sent three times, and two requests that fail a rule
    // only the database can check (an unknown runner), all at once.
    const bodies = [
      ...Array.from({ length: 60 }, (_, i) => ({
        runnerId, scmId: "github", host: `h${i % 20}.example.com`, oauthClientId: `c${i % 20}`, oauthPlaintextClientSecret: `secret-${i % 20}`,
      })),
      { runnerId: "0190a0a0-0000-7000-8000-000000000000", scmId: "github", host: "x.example.com", pat: true },
      { runnerId: "0190a0a0-0000-7000-8000-000000000001", scmId: "github", host: "y.example.com", pat: true },
    ];
    const results = await Promise.all(bodies.map((b) => call(s, CREATE, b)));
    const ok = results.filter((r) => r.status === 200);
    assert.equal(ok.length, 20);
    assert.equal(results.filter((r) => r.body.code === "already_exists").length, 40);
    assert.equal(results.filter((r) => r.body.code === "not_found").length, 2);
    const after = s.db.commitStats();
    assert.equal(after.writes - before.writes, 62, "every write went through the group commit");
    assert.ok(after.commits - before.commits < 62, `62 writes shared ${after.commits - before.commits} commits`);

    for (const r of ok) {
      const row = s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, r.body.id)).get()!;
      const n = row.host.match(/^h(\d+)\./)![1];
      assert.equal(row.oauthClientId, `c${n}`);
      assert.equal(open(row.oauthEncryptedSecret!, keys.publicKey, keys.secretKey), `secret-${n}`);
    }
  });
});

describe("another process holding the write lock", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("does not stall reads; the waiting create lands once the lock is released", async () => {
    const { runnerId } = await createRunner(s);
    const other = new Database(s.db.$client.name);
    other.exec("BEGIN IMMEDIATE");
    try {
      const pending = call(s, CREATE, { runnerId, scmId: "github", host: "locked.example.com", pat: true });
      // While the create waits for the lock, reads and health keep answering.
      for (let i = 0; i < 3; i++) {
        assert.equal((await call(s, "gitpod.v1.RunnerService/GetRunner", { runnerId })).status, 200);
        assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
      }
      assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.host, "locked.example.com")).all().length, 0);
      other.exec("COMMIT");
      const created = await pending;
      assert.equal(created.status, 200, JSON.stringify(created.body));
      assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.id, created.body.id)).all().length, 1);
    } finally {
      if (other.inTransaction) other.exec("ROLLBACK");
      other.close();
    }
  });

  it("keeps many waiting writes from holding up the event loop: one retry for all, none sleeping in SQLite", async () => {
    const { runnerId } = await createRunner(s);
    const sqlite = s.db.$client;
    // The connection's busy_timeout at each BEGIN IMMEDIATE: SQLite's busy handler sleeps on
    // the event loop for that long when the lock is taken.
    const patienceAtBegin: number[] = [];
    const exec = sqlite.exec.bind(sqlite);
    sqlite.exec = (sql: string) => {
      if (sql === "BEGIN IMMEDIATE") patienceAtBegin.push(sqlite.pragma("busy_timeout", { simple: true }) as number);
      return exec(sql);
    };
    const other = new Database(sqlite.name);
    other.exec("BEGIN IMMEDIATE");
    try {
      const pending = Array.from({ length: 100 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `wait-${i}.example.com`, pat: true }));
      // Health answers all the while, until the writes have tried the lock 50 times.
      while (patienceAtBegin.length < 50) assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
      assert.equal((await call(s, "gitpod.v1.RunnerService/GetRunner", { runnerId })).status, 200);
      const whileLocked = patienceAtBegin.length;
      other.exec("COMMIT");
      const created = await Promise.all(pending);
      assert.deepEqual(created.map((r) => r.status), Array(100).fill(200));
      assert.ok(whileLocked > 1, `the writes tried the lock ${whileLocked} times`);
      // The first try of the batch that found the lock taken may wait the connection's short
      // busy_timeout; every retry fails at once and waits on a timer instead.
      const slept = patienceAtBegin.slice(0, whileLocked).filter((ms) => ms > 0).length;
      assert.ok(slept <= 1, `${slept} of ${whileLocked} tries waited in SQLite's busy handler`);
      assert.equal(sqlite.pragma("busy_timeout", { simple: true }), 2, "the connection's busy_timeout is as it was");
    } finally {
      sqlite.exec = exec;
      if (other.inTransaction) other.exec("ROLLBACK");
      other.close();
    }
  });

  it("does not keep a process from starting on a database that is in use (a worker replacing another)", async () => {
    const other = new Database(s.db.$client.name);
    other.exec("BEGIN IMMEDIATE");
    const second = openDatabase(s.db.$client.name);
    try {
      // Its start reads the service's keys, which exist: no write, so no wait for the lock.
      const app = createApp(second, createLogger("silent"), { publicUrl: PUBLIC_URL });
      await app.close();
    } finally {
      other.exec("ROLLBACK");
      other.close();
      second.$client.close();
    }
  });
});

describe("checkpoints", () => {
  let s: TestServer;
  before(async () => (s = await startServer()));
  after(() => s.close());

  it("the WAL is copied into the database file by the checkpointer, not by a request's commit", async () => {
    assert.equal(s.db.$client.pragma("wal_autocheckpoint", { simple: true }), 0, "no checkpoint inside COMMIT");
    // Bytes 28..31 of the main file hold its size in pages; commits change it only in the
    // WAL, so the file shows the new size once a checkpoint copied page 1 back.
    const pagesInFile = () => readFileSync(s.db.$client.name).readUInt32BE(28);
    const before = pagesInFile();
    const { runnerId } = await createRunner(s);
    for (let batch = 0; batch < 4; batch++) {
      await Promise.all(Array.from({ length: 50 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `cp${batch}-${i}.example.com`, pat: true })));
    }
    for (let i = 0; i < 50 && pagesInFile() <= before; i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(pagesInFile() > before, `the database file grew from ${before} pages once checkpointed`);
  });

  it("past its threshold the WAL starts over from its beginning, with every row kept", () =>
    withSmallWal("restart", async ({ file, db, logs, write, rows, startedOver, restartLogs }) => {
      const sqlite = db.$client;
      await write(1);
      const first = startedOver();
      // Each row takes two pages: 60 rows pass the threshold. Then no more writes, so that
      // the checkpointer is left to find the WAL past its threshold on its own.
      await write(60);
      for (let i = 0; i < 100 && !restartLogs().some((l) => l.done === true); i++) await new Promise((r) => setTimeout(r, 50));
      const done = restartLogs().filter((l) => l.done === true);
      assert.ok(done.length > 0, `a RESTART checkpoint completed: ${logs.join("")}`);
      // Done, it is not repeated while nothing is written (checkpoints run every 50 ms).
      const attempts = restartLogs().length;
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(restartLogs().length, attempts, "no RESTART again until a write has started the WAL over");
      // The next write begins a new WAL over the old one.
      const before = rows();
      await write(1);
      assert.ok(startedOver() > first, `the WAL started over (header count ${first} -> ${startedOver()}) after ${rows()} rows`);

      // Rows written before the WAL started over were copied into the main file, which alone
      // now holds them; the rows after are in the new WAL until the next checkpoint.
      await write(5);
      assert.equal((sqlite.prepare("SELECT count(*) AS n FROM blobs").get() as { n: number }).n, rows(), "the connection sees every row");
      const found = await countInMainFile(file, "SELECT count(*) FROM blobs", before);
      assert.ok(found >= before, `the main file alone holds the ${before} rows from before the WAL started over (found ${found})`);
      const v = sqlite.prepare("SELECT v FROM blobs WHERE n = ?").pluck();
      for (const n of [1, Math.floor(rows() / 2), rows()]) assert.ok((v.get(n) as Buffer).equals(Buffer.alloc(3000, n % 251)), `row ${n} reads back whole`);
    }));

  it("backs off from a RESTART that a long reader holds off, and comes back to it once the reader is gone", () =>
    withSmallWal("backoff", async ({ file, logs, write, startedOver, restartLogs }) => {
      // The reader's snapshot, held as a backup holds its own while it copies.
      const reader = new Database(file);
      try {
        reader.exec("BEGIN");
        reader.prepare("SELECT count(*) FROM sqlite_master").get();
        // Past the threshold, then a row every 20 ms for 1.5 s: a RESTART could be tried at
        // every 50 ms checkpoint, 30 times.
        await write(60);
        for (const end = Date.now() + 1500; Date.now() < end; ) {
          await write(1);
          await new Promise((r) => setTimeout(r, 20));
        }
        const failed = restartLogs().filter((l) => l.done === false).length;
        assert.ok(failed >= 1, `a RESTART was tried and found the reader: ${logs.join("")}`);
        assert.ok(failed <= 8, `${failed} RESTART tries in 1.5 s, each holding the writers off: it backs off`);
        const held = startedOver();
        reader.exec("COMMIT");
        // Nothing more is written, so the writers cannot start the WAL over themselves: the
        // checkpointer must come back to it (1.6 s after its last try at most).
        for (let i = 0; i < 100 && !restartLogs().some((l) => l.done === true); i++) await new Promise((r) => setTimeout(r, 50));
        assert.ok(restartLogs().some((l) => l.done === true), `a RESTART was tried again once the reader had gone, and finished: ${logs.join("")}`);
        await write(1);
        assert.ok(startedOver() > held, "the next write began the WAL over from its start");
      } finally {
        reader.close();
      }
    }));

  it("keeps trying a RESTART that a reader holds off, its waits doubling from twice the interval, not starting at their bound", () =>
    withSmallWal("held-long", async ({ file, logs, write, restartLogs }) => {
      const reader = new Database(file);
      try {
        reader.exec("BEGIN");
        reader.prepare("SELECT count(*) FROM sqlite_master").get();
        await write(60);
        // Waits of 100, 200, 400 and 800 ms put five tries within about 1.5 s; a first wait at
        // the bound (1.6 s), doubling past it, would put the fifth past 20 s.
        for (let i = 0; i < 160 && restartLogs().filter((l) => l.done === false).length < 5; i++) await new Promise((r) => setTimeout(r, 50));
        assert.ok(restartLogs().filter((l) => l.done === false).length >= 5, `five RESTART tries while the reader stayed: ${logs.join("")}`);
        assert.ok(!restartLogs().some((l) => l.done === true), "none finished while it stayed");
      } finally {
        reader.close();
      }
    }));

  it("comes back to a RESTART a reader held off even when nothing was written since it failed", () =>
    withSmallWal("held-then-idle", async ({ file, logs, write, startedOver, restartLogs }) => {
      const reader = new Database(file);
      try {
        reader.exec("BEGIN");
        reader.prepare("SELECT count(*) FROM sqlite_master").get();
        // Past the threshold, then nothing more: the WAL keeps the length the failed RESTART saw.
        await write(60);
        // A try made while the rows were still being written saw a shorter WAL: wait for one after.
        const during = restartLogs().length;
        for (let i = 0; i < 100 && restartLogs().length === during; i++) await new Promise((r) => setTimeout(r, 50));
        const failed = restartLogs().slice(during);
        assert.ok(failed.length >= 1 && failed.every((l) => l.done === false), `a RESTART was tried and found the reader: ${logs.join("")}`);
        const held = startedOver();
        reader.exec("COMMIT");
        // The WAL is as long as when the RESTART failed; that failure must not count as done.
        for (let i = 0; i < 100 && !restartLogs().some((l) => l.done === true); i++) await new Promise((r) => setTimeout(r, 50));
        const done = restartLogs().filter((l) => l.done === true);
        assert.ok(done.length >= 1, `a RESTART was tried again once the reader had gone, and finished: ${logs.join("")}`);
        assert.equal(done[0]!.frames, failed[0]!.frames, "of the very WAL the failed one found");
        await write(1);
        assert.ok(startedOver() > held, "the next write began the WAL over from its start");
      } finally {
        reader.close();
      }
    }));
});

/**
 * Runs `test` on a database of its own whose checkpointer starts the WAL over past 64 frames
 * (the service's threshold is 16,384), so that a few hundred KB do it, with a table of
 * 3,000-byte rows (two pages each) to write to.
 */
async function withSmallWal(
  name: string,
  test: (t: {
    file: string;
    db: Db;
    logs: string[];
    write: (count: number) => Promise<unknown>;
    rows: () => number;
    startedOver: () => number;
    restartLogs: () => Record<string, unknown>[];
  }) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), `scm-${name}-`));
  const file = join(dir, `${name}.db`);
  const db = openDatabase(file);
  const logs: string[] = [];
  const checkpointer = startCheckpointer(db, createLogger("debug", (line) => logs.push(line)), { resetFrames: 64 });
  try {
    const sqlite = db.$client;
    sqlite.exec("CREATE TABLE blobs (n INTEGER PRIMARY KEY, v BLOB)");
    let rows = 0;
    await test({
      file,
      db,
      logs,
      write: (count) =>
        Promise.all(Array.from({ length: count }, () => db.write(() => sqlite.prepare("INSERT INTO blobs VALUES (?, ?)").run(++rows, Buffer.alloc(3000, rows % 251))))),
      rows: () => rows,
      // Bytes 12..15 of the WAL's header count the times it was started over.
      startedOver: () => readFileSync(`${file}-wal`).readUInt32BE(12),
      restartLogs: () => logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "wal restart"),
    });
  } finally {
    await checkpointer.stop();
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("a batch SQLite rolls back as a whole", () => {
  it("fails the write that caused it, with its error, and runs the others again in the next batch", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-batch-"));
    const db = openDatabase(join(dir, "batch.db"));
    try {
      const sqlite = db.$client;
      sqlite.exec("CREATE TABLE blobs (name TEXT PRIMARY KEY, v BLOB)");
      const insert = (name: string, bytes: number) => () => sqlite.prepare("INSERT INTO blobs VALUES (?, ?)").run(name, Buffer.alloc(bytes, 7)).changes;
      const unlimited = sqlite.pragma("max_page_count", { simple: true }) as number;
      // No page more than the file has: the big write cannot fit, and on SQLITE_FULL
      // SQLite undoes the whole transaction, the small write before it included.
      sqlite.pragma(`max_page_count = ${sqlite.pragma("page_count", { simple: true }) as number}`);
      const batch = () => [db.write(insert("small-1", 10)), db.write(insert("big", 64 * 1024)), db.write(insert("small-2", 10))];
      const before = db.commitStats().commits;
      const failed = await Promise.allSettled(batch());
      assert.deepEqual(
        failed.map((r) => (r.status === "rejected" ? (r.reason as { code?: string }).code : "committed")),
        ["committed", "SQLITE_FULL", "committed"],
        "the big write fails with the cause, not with a follow-on error; the small ones, undone with it, ran again",
      );
      assert.deepEqual(sqlite.prepare("SELECT name FROM blobs ORDER BY name").all(), [{ name: "small-1" }, { name: "small-2" }]);
      assert.equal(db.commitStats().commits - before, 1, "in one batch of their own");
      sqlite.pragma(`max_page_count = ${unlimited}`);
      sqlite.exec("DELETE FROM blobs");
      assert.deepEqual(await Promise.all(batch()), [1, 1, 1]);
      assert.equal(sqlite.inTransaction, false);
    } finally {
      db.$client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("a COMMIT that reports a failed sync", () => {
  it("stops every later write and read, as a failed off-loop sync does", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-commit-sync-"));
    const db = openDatabase(join(dir, "commit.db"));
    try {
      const sqlite = db.$client;
      sqlite.exec("CREATE TABLE t (v INTEGER)");
      assert.equal(await db.write(() => sqlite.prepare("INSERT INTO t VALUES (1)").run().changes), 1);
      // Batches commit with synchronous=NORMAL, which syncs nothing inside COMMIT; should
      // SQLite report a failed fsync there all the same, nothing after it can be vouched for.
      const exec = sqlite.exec.bind(sqlite);
      let failNext = true;
      sqlite.exec = ((text: string) => {
        if (text === "COMMIT" && failNext) {
          failNext = false;
          throw new Database.SqliteError("disk I/O error", "SQLITE_IOERR_FSYNC");
        }
        return exec(text);
      }) as typeof sqlite.exec;
      // Of unknown outcome: a COMMIT that failed on an I/O error may have written all its frames.
      await assert.rejects(db.write(() => sqlite.prepare("INSERT INTO t VALUES (2)").run()), unknownOutcome("SQLITE_IOERR_FSYNC"));
      assert.equal(db.haltedBy()?.message, "disk I/O error");
      await assert.rejects(db.write(() => sqlite.prepare("INSERT INTO t VALUES (3)").run()), { code: "SQLITE_IOERR_FSYNC" }, "later writes fail too");
      await assert.rejects(db.durable() ?? Promise.resolve("no wait"), { code: "SQLITE_IOERR_FSYNC" }, "and so does every answer that shows what was read");
      assert.deepEqual(sqlite.prepare("SELECT v FROM t").pluck().all(), [1]);
    } finally {
      db.$client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("a database shared with other processes (worker processes)", () => {
  // Two connections to one file, as two workers have; each holds its WAL syncs until the test ends them.
  type Held = { fd: number; done: (err: Error | null) => void };
  let dir: string;
  let a: ReturnType<typeof openDatabase>;
  let b: ReturnType<typeof openDatabase>;
  let heldA: Held[];
  const settled = async (p: Promise<unknown> | undefined) => {
    if (p === undefined) return "no wait";
    let state = "pending";
    p.then(() => (state = "ok"), () => (state = "failed"));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    return state;
  };

  beforeEach(() => {
    heldA = [];
    dir = mkdtempSync(join(tmpdir(), "scm-shared-"));
    const file = join(dir, "shared.db");
    a = openDatabase(file, { sharedWithProcesses: true, syncWal: (fd, done) => void heldA.push({ fd, done }) });
    b = openDatabase(file, { sharedWithProcesses: true });
    b.$client.exec("CREATE TABLE t (name TEXT NOT NULL)");
  });
  afterEach(() => {
    for (const h of heldA.splice(0)) h.done(null);
    a.$client.close();
    b.$client.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("an answer showing another process's commit waits for a sync that begins after it", async () => {
    assert.equal(await b.write(() => b.$client.prepare("INSERT INTO t VALUES ('from b')").run().changes), 1);
    assert.deepEqual(await a.read(() => a.$client.prepare("SELECT name FROM t").pluck().all()), ["from b"]);
    const shown = a.durable();
    assert.equal(heldA.length, 1, "this process syncs the WAL itself");
    assert.equal(await settled(shown), "pending", "not answered before that sync returns");
    heldA[0]!.done(null);
    assert.equal(await settled(shown), "ok");
    assert.equal(a.durable(), undefined, "no other commit since: nothing more to wait for");
    assert.equal(heldA.length, 1);
  });

  it("its own commits do not count as another's, and reads with no commit anywhere do not wait", async () => {
    // The other connection made the table: this one syncs that once, then has nothing to wait for.
    const setup = a.durable();
    assert.equal(heldA.length, 1);
    heldA.shift()!.done(null);
    await setup;
    assert.equal(a.durable(), undefined);
    const own = a.write(() => a.$client.prepare("INSERT INTO t VALUES ('from a')").run().changes);
    for (let i = 0; i < 100 && heldA.length < 1; i++) await new Promise((r) => setTimeout(r, 5));
    heldA[0]!.done(null);
    assert.equal(await own, 1);
    assert.deepEqual(await a.read(() => a.$client.prepare("SELECT name FROM t").pluck().all()), ["from a"]);
    assert.equal(a.durable(), undefined, "the write was answered after its own sync");
    assert.equal(heldA.length, 1, "and no second sync began");
  });

  it("each keeps half the page cache of a process that serves alone (8 MiB, not 16)", () => {
    assert.equal(a.$client.pragma("cache_size", { simple: true }), -8192);
    const alone = openDatabase(join(dir, "alone.db"));
    try {
      assert.equal(alone.$client.pragma("cache_size", { simple: true }), -16384);
    } finally {
      alone.$client.close();
    }
  });

  it("a failed sync of another process's commits stops every later write and read here", async () => {
    await b.write(() => b.$client.prepare("INSERT INTO t VALUES ('from b')").run());
    const shown = a.durable();
    heldA[0]!.done(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
    await assert.rejects(shown!, { code: "SQLITE_IOERR_FSYNC" });
    assert.match(a.haltedBy()?.message ?? "", /could not be synced/);
    await assert.rejects(a.write(() => a.$client.prepare("INSERT INTO t VALUES ('later')").run()), { code: "SQLITE_IOERR_FSYNC" });
  });
});

describe("writes with and without a savepoint of their own", () => {
  it("a one-statement write runs without a savepoint, a failure undoing only its statement; a guarded write is undone whole", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-savepoint-"));
    const db = openDatabase(join(dir, "savepoint.db"));
    try {
      const sqlite = db.$client;
      sqlite.exec("CREATE TABLE names (name TEXT PRIMARY KEY)");
      const add = (...names: string[]) => () => {
        for (const n of names) sqlite.prepare("INSERT INTO names VALUES (?)").run(n);
        return names.length;
      };
      const one = { oneStatement: true };
      // One batch: a duplicate among one-statement writes, and a two-statement write whose
      // second statement is a duplicate.
      const results = await Promise.allSettled([
        db.write(add("a"), one),
        db.write(add("a"), one),
        db.write(add("b", "a")),
        db.write(add("c"), one),
        db.write(add("d", "e")),
        // Breaking the promise shows there is no savepoint: f stays.
        db.write(add("f", "a"), one),
      ]);
      assert.deepEqual(
        results.map((r) => (r.status === "fulfilled" ? r.value : (r.reason as { code?: string }).code)),
        [1, "SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_PRIMARYKEY", 1, 2, "SQLITE_CONSTRAINT_PRIMARYKEY"],
      );
      assert.equal(db.commitStats().commits, 1, "the writes shared one transaction");
      assert.deepEqual(sqlite.prepare("SELECT name FROM names ORDER BY name").pluck().all(), ["a", "c", "d", "e", "f"], "b went with its write");
    } finally {
      db.$client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("syncing off the event loop", () => {
  // Holds each WAL sync until the test lets it go, so what waits for a sync can be seen.
  const held: ((err: Error | null) => void)[] = [];
  let holding = false;
  let onHeld = () => {};
  const syncWal = (fd: number, done: (err: Error | null) => void) => {
    if (!holding) return fdatasync(fd, done);
    held.push(done);
    onHeld();
  };
  const nextHeld = () => new Promise<void>((resolve) => (onHeld = resolve));
  let dir: string;
  let s: TestServer;
  let stop: () => Promise<void>;
  // Which calls the handler has finished, as opposed to answered.
  const handled = new Set<string>();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "scm-sync-"));
    const db = openDatabase(join(dir, "sync.db"), { syncWal });
    createOrganization(db, "acme");
    const token = createApiToken(db, "acme").token;
    const app = createApp(db, createLogger("silent"), {
      publicUrl: PUBLIC_URL,
      interceptors: [(next) => async (req) => {
        const res = await next(req);
        handled.add(req.method.name);
        return res;
      }],
    });
    const server = await listen(app.handler, 0, "127.0.0.1");
    s = { url: `http://127.0.0.1:${server.address.port}`, db, token } as TestServer;
    stop = async () => {
      await server.shutdown(1000);
      await app.close();
      db.$client.close();
      rmSync(dir, { recursive: true, force: true });
    };
  });
  after(() => stop());

  it("a create is answered, and a read showing it answers, only once the WAL is synced", async () => {
    const { runnerId } = await createRunner(s);
    holding = true;
    const synced = nextHeld();
    let createAnswered = false;
    const create = call(s, CREATE, { runnerId, scmId: "github", host: "held.example.com", pat: true }).then((r) => ((createAnswered = true), r));
    await synced; // committed; its sync is running
    let listAnswered = false;
    const list = call(s, LIST, { filter: { runnerIds: [runnerId] } }).then((r) => ((listAnswered = true), r));
    while (!handled.has("ListSCMIntegrations")) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(createAnswered, false, "the create waits for its sync");
    assert.equal(listAnswered, false, "the list read the new row, so it waits for the same sync");
    holding = false;
    held.splice(0).forEach((done) => done(null));
    const [created, listed] = await Promise.all([create, list]);
    assert.equal(created.status, 200, JSON.stringify(created.body));
    assert.deepEqual(listed.body.integrations.map((i: { id: string }) => i.id), [created.body.id]);
  });

  it("commits its batches with synchronous=NORMAL, and leaves FULL for every other write", async () => {
    const levels = await Promise.all([s.db.write(() => s.db.$client.pragma("synchronous", { simple: true })), s.db.write(() => 0)]);
    assert.equal(levels[0], 1, "NORMAL inside a batch: the fdatasync after it makes it durable");
    assert.equal(s.db.$client.pragma("synchronous", { simple: true }), 2, "FULL outside");
  });

  it("a refusal resting on an unsynced delete, and an UpdateRunner that writes nothing, wait for the sync too", async () => {
    const { runnerId } = await createRunner(s);
    const created = await call(s, CREATE, { runnerId, scmId: "github", host: "gone.example.com", pat: true });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    holding = true;
    const synced = nextHeld();
    const deleted = call(s, DELETE, { id: created.body.id });
    await synced; // the delete is committed; its sync is held
    const answered = new Set<string>();
    const get = call(s, GET, { id: created.body.id }).then((r) => (answered.add("get"), r));
    const update = call(s, UPDATE_RUNNER, { runnerId }).then((r) => (answered.add("update"), r));
    // Both read what they show within a few turns; the update's wait is inside its handler,
    // so the handled set cannot tell when, and a generous pause stands in for it.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual([...answered], [], "the not_found shows the delete, the update shows what the runner's read saw");
    holding = false;
    held.splice(0).forEach((done) => done(null));
    const [d, g, u] = await Promise.all([deleted, get, update]);
    assert.equal(d.status, 200, JSON.stringify(d.body));
    assert.equal(g.body.code, "not_found", JSON.stringify(g.body));
    assert.equal(u.status, 200, JSON.stringify(u.body));
  });

  // Last in this suite: a failed sync stops the database for good.
  it("a failed sync answers its writes as of unknown outcome, and every write, read and health check after it unavailable until a restart", async () => {
    const { runnerId } = await createRunner(s);
    holding = true;
    const synced = nextHeld();
    const failed = call(s, CREATE, { runnerId, scmId: "github", host: "lost.example.com", pat: true });
    await synced;
    holding = false;
    held.splice(0).forEach((done) => done(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" })));
    // Committed, and perhaps on disk: neither done nor refused, and not to be retried blindly
    // (the row may be there after a restart).
    const r = await failed;
    assert.equal(r.body.code, "unknown", JSON.stringify(r.body));
    assert.match(r.body.message, /^this write's outcome is unknown: a sync to disk failed after it was committed, and it may or may not be stored/);
    assert.equal(r.headers.get("x-should-retry"), "false");
    assert.doesNotMatch(r.body.message, /EIO|fdatasync|SQLITE/);
    // The kernel may have dropped what it could not write: nothing committed since is
    // vouched for, the failed row included, which stays committed but is never shown.
    const next = await call(s, CREATE, { runnerId, scmId: "github", host: "after.example.com", pat: true });
    assert.equal(next.body.code, "unavailable", JSON.stringify(next.body));
    assert.match(next.body.message, /^a sync of the database to disk failed, so what it holds cannot be vouched for: this service refuses every call until it is restarted; request id /);
    const list = await call(s, LIST, { filter: { runnerIds: [runnerId] } });
    assert.equal(list.body.code, "unavailable", JSON.stringify(list.body));
    // Refusals too: a not_found could rest on a delete that never reached the disk.
    const missing = await call(s, GET, { id: "01a23a85-70c0-7000-8000-000000000000" });
    assert.equal(missing.body.code, "unavailable", JSON.stringify(missing.body));
    const rename = await call(s, UPDATE_RUNNER, { runnerId });
    assert.equal(rename.body.code, "unavailable", JSON.stringify(rename.body));
    const health = await fetch(`${s.url}/healthz`);
    assert.equal(health.status, 503);
    assert.match(await health.text(), /^unavailable: the database cannot be used/, "not \"shutting down\": nothing is");
    assert.equal(s.db.select().from(scmIntegrations).where(eq(scmIntegrations.host, "after.example.com")).all().length, 0, "nothing more was committed");
  });
});

describe("checkpoints after a failed sync", () => {
  it("stop for good, so a commit that never reached the disk is not copied into the database file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-ckpt-halt-"));
    const file = join(dir, "halt.db");
    let failSyncs = false;
    const syncWal = (fd: number, done: (err: Error | null) => void) =>
      failSyncs ? done(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" })) : fdatasync(fd, done);
    const db = openDatabase(file, { syncWal });
    const logs: string[] = [];
    const checkpointer = startCheckpointer(db, createLogger("debug", (line) => logs.push(line)));
    try {
      const sqlite = db.$client;
      sqlite.exec("CREATE TABLE t (name TEXT PRIMARY KEY)");
      const insert = (name: string) => db.write(() => sqlite.prepare("INSERT INTO t VALUES (?)").run(name).changes);
      await insert("synced");
      assert.equal(await countInMainFile(file, "SELECT count(*) FROM t WHERE name = 'synced'", 1), 1, "before the failure, checkpoints copy commits into the main file");

      failSyncs = true;
      await assert.rejects(insert("lost"), unknownOutcome("SQLITE_IOERR_FSYNC"));
      assert.ok(db.haltedBy(), "the database has stopped");
      assert.ok(logs.some((l) => l.includes("checkpoints stopped until a restart")), logs.join(""));
      // Checkpoints ran every 50 ms before; given eight of those, none copies the failed commit.
      await new Promise((r) => setTimeout(r, 400));
      const copy = `${file}.alone`;
      copyFileSync(file, copy);
      const alone = new Database(copy, { readonly: true });
      try {
        assert.equal(alone.prepare("SELECT count(*) FROM t WHERE name = 'lost'").pluck().get(), 0, "the failed commit stays out of the main file");
        assert.equal(alone.prepare("SELECT count(*) FROM t WHERE name = 'synced'").pluck().get(), 1);
      } finally {
        alone.close();
      }
    } finally {
      await checkpointer.stop();
      db.$client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the WAL's sync descriptors", () => {
  it("are open from the start, so a process short of descriptors later still syncs, and close with the connection", () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-walfds-"));
    const file = join(dir, "fds.db");
    const walDescriptors = () =>
      readdirSync("/proc/self/fd").filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === `${file}-wal`;
        } catch {
          return false; // closed meanwhile (the listing's own descriptor)
        }
      }).length;
    try {
      const db = openDatabase(file);
      // SQLite's own descriptor and the two the syncs use, before any write was committed.
      assert.equal(db.commitStats().commits, 0);
      assert.equal(walDescriptors(), 3);
      db.$client.close();
      assert.equal(walDescriptors(), 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("two syncs at once", () => {
  // Each WAL sync waits here, with the descriptor it was given, until the test ends it.
  type Held = { fd: number; done: (err: Error | null) => void };
  let held: Held[] = [];
  const syncWal = (fd: number, done: (err: Error | null) => void) => void held.push({ fd, done });
  let dir: string;
  let db: ReturnType<typeof openDatabase>;
  const insert = (name: string) => db.write(() => db.$client.prepare("INSERT INTO t (name) VALUES (?)").run(name).changes);
  /** Settles the writes' promises that can settle now, then says which have. */
  const settled = async (writes: Promise<unknown>[]) => {
    const state = writes.map(() => "pending");
    writes.forEach((w, i) => w.then(() => (state[i] = "ok"), () => (state[i] = "failed")));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    return state;
  };
  const syncsStarted = async (n: number) => {
    for (let i = 0; i < 100 && held.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(held.length, n, `${n} syncs running`);
  };

  beforeEach(() => {
    held = [];
    dir = mkdtempSync(join(tmpdir(), "scm-syncs-"));
    db = openDatabase(join(dir, "syncs.db"), { syncWal });
    db.$client.exec("CREATE TABLE t (name TEXT NOT NULL)");
  });
  afterEach(() => {
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a second sync starts while the first runs, through its own descriptor, and answers the commits before it", async () => {
    const first = insert("a");
    await syncsStarted(1);
    const second = insert("b");
    await syncsStarted(2);
    const third = insert("c");
    assert.deepEqual(await settled([first, second, third]), ["pending", "pending", "pending"]);
    assert.equal(held.length, 2, "no third sync while two run");
    assert.notEqual(held[0]!.fd, held[1]!.fd, "each sync has a descriptor of its own");

    // The second began after both first commits: its success answers them both.
    held[1]!.done(null);
    assert.deepEqual(await settled([first, second, third]), ["ok", "ok", "pending"]);
    assert.equal(held.length, 3, "the freed slot syncs the third commit");
    held[0]!.done(null);
    assert.deepEqual(await settled([first, second, third]), ["ok", "ok", "pending"], "the first sync began before the third commit");
    held[2]!.done(null);
    assert.deepEqual(await settled([first, second, third]), ["ok", "ok", "ok"]);
    assert.equal(db.durable(), undefined, "everything committed is on disk");
  });

  it("when one of two syncs fails, a success of the other answers nothing, and the database stops", async () => {
    const first = insert("a");
    await syncsStarted(1);
    const second = insert("b");
    await syncsStarted(2);
    held[0]!.done(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
    held[1]!.done(null);
    assert.deepEqual(await settled([first, second]), ["failed", "failed"]);
    // Both committed, and neither vouched for: of unknown outcome. A write after them never began.
    await assert.rejects(first, unknownOutcome("SQLITE_IOERR_FSYNC"));
    await assert.rejects(second, unknownOutcome("SQLITE_IOERR_FSYNC"));
    await assert.rejects(insert("c"), (err: Error & { code?: string }) => err.code === "SQLITE_IOERR_FSYNC");
    assert.ok(db.haltedBy(), "syncing has stopped for good");
    assert.equal(held.length, 2, "nothing more was synced");
  });

  it("closing the connection answers every waiting commit: by the syncs running, or as not synced", async () => {
    const first = insert("a");
    await syncsStarted(1);
    const second = insert("b");
    await syncsStarted(2);
    const third = insert("c"); // no slot free: no sync covers it yet
    assert.deepEqual(await settled([first, second, third]), ["pending", "pending", "pending"]);
    db.$client.close();
    assert.deepEqual(await settled([first, second, third]), ["pending", "pending", "failed"]);
    // Committed, never synced: of unknown outcome.
    await assert.rejects(third, (err: unknown) => unknownOutcome("SQLITE_MISUSE")(err) && /closed before/.test(((err as Error).cause as Error).message));
    // The client is told so, as unknown (not retried by itself), and the operator's log names the driver's code.
    const lines: string[] = [];
    const told = toConnectError(await third.catch((err: unknown) => err), RunnerConfigurationService.method.createSCMIntegration, "req-closed", createLogger("error", (l) => lines.push(l)));
    assert.equal(told.code, Code.Unknown);
    assert.equal(
      told.rawMessage,
      "this write's outcome is unknown: the database was closed before it was on disk, and it may or may not be stored (it may show only after a restart); check before sending it again (a create sent again with the same Idempotency-Key is safe); request id req-closed",
    );
    // The id reaches the client in the answer's headers (server.ts), not again in the error's.
    assert.deepEqual([told.metadata.get("x-should-retry"), told.metadata.get("x-request-id")], ["false", null]);
    assert.deepEqual(
      lines.map((l) => JSON.parse(l)).map(({ time: _, ...rest }) => rest),
      [{ level: "error", msg: "write of unknown outcome", request_id: "req-closed", procedure: "/gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", driver_code: "SQLITE_MISUSE" }],
    );
    held[0]!.done(null);
    held[1]!.done(null);
    assert.deepEqual(await settled([first, second]), ["ok", "ok"], "the syncs that ran still count");
    assert.equal(held.length, 2, "no sync starts after the close");
  });
});

/**
 * Runs `test` with a checkpointer whose thread object is at hand, so that what the thread
 * reports (a message, an error) can be given to the service's side as the thread would.
 */
async function withCheckpointerThread(test: (ctx: { db: Db; logs: string[]; thread: import("node:worker_threads").Worker }) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "scm-ckpt-thread-"));
  const db = openDatabase(join(dir, "thread.db"));
  const logs: string[] = [];
  const Original = workerThreads.Worker;
  let thread: import("node:worker_threads").Worker | undefined;
  workerThreads.Worker = class extends Original {
    constructor(...args: ConstructorParameters<typeof Original>) {
      super(...args);
      thread = this;
    }
  };
  syncBuiltinESMExports();
  let checkpointer: { stop(): Promise<void> };
  try {
    checkpointer = startCheckpointer(db, createLogger("debug", (line) => logs.push(line)));
  } finally {
    workerThreads.Worker = Original;
    syncBuiltinESMExports();
  }
  try {
    assert.ok(thread, "the checkpointer started a thread");
    await test({ db, logs, thread });
  } finally {
    await checkpointer.stop();
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("what the checkpointer thread reports", () => {
  it("the line saying checkpoints stopped names why: a failed sync, or a database that read as damaged", async () => {
    const cases: [string, RegExp][] = [
      ["SQLITE_IOERR_FSYNC", /^checkpoints stopped until a restart: a sync failed, .*reboot the host/],
      ["SQLITE_CORRUPT", /^checkpoints stopped until a restart: the database read as damaged, .*check the storage/],
      ["SQLITE_NOTADB", /^checkpoints stopped until a restart: the database read as damaged, /],
    ];
    for (const [code, said] of cases) {
      await withCheckpointerThread(async ({ db, logs }) => {
        db.halt(new Database.SqliteError("stopped here", code));
        const lines = logs.map((l) => JSON.parse(l)).filter((l) => String(l.msg).startsWith("checkpoints stopped"));
        assert.equal(lines.length, 1, `${code}: ${logs.join("")}`);
        assert.match(lines[0].msg, said, code);
        assert.equal(lines[0].level, "error");
      });
    }
  });

  it("a thread that fails turns SQLite's automatic checkpoints back on, and says so", () =>
    withCheckpointerThread(async ({ db, logs, thread }) => {
      assert.equal(db.$client.pragma("wal_autocheckpoint", { simple: true }), 0, "off while the thread checkpoints");
      thread.emit("error", new Error("the thread died"));
      assert.equal(db.$client.pragma("wal_autocheckpoint", { simple: true }), 1000, "back on: the WAL would otherwise grow without end");
      assert.ok(logs.some((l) => l.includes('"msg":"checkpointer failed; automatic checkpoints are back on"')), logs.join(""));
    }));

  it("a sync the thread could not make stops the database, as the service's own failed sync does", () =>
    withCheckpointerThread(async ({ db, logs, thread }) => {
      assert.equal(db.haltedBy(), null);
      thread.emit("message", { halted: "EIO", detail: "thread.db: EIO: i/o error, fdatasync" });
      const cause = db.haltedBy() as { code?: unknown } | null;
      assert.ok(cause, "the database has stopped");
      assert.equal(cause.code, "SQLITE_IOERR_FSYNC");
      const line = logs.map((l) => JSON.parse(l)).find((l) => l.msg === "a checkpoint could not sync to disk");
      assert.ok(line, logs.join(""));
      assert.equal(line.driver_code, "EIO");
      // And after it, no automatic checkpoint comes back should the thread fail too: nothing may be copied any more.
      thread.emit("error", new Error("the thread died"));
      assert.equal(db.$client.pragma("wal_autocheckpoint", { simple: true }), 0);
    }));
});
