import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { walGatherLibrary } from "../src/store/database.js";
import { loadWalGather } from "../src/store/wal-gather.js";
import { call, createRunner, signUp, startServer, startService, type TestServer } from "./harness.js";

const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";

interface Stats {
  gathered: number;
  flushWrites: number;
  through: number;
  /** Times a commit's publication found bytes still gathered: none, if every commit's frames reached the file at its own writes. */
  atBarrier: number;
}
const stats = (db: Database.Database) => JSON.parse(db.prepare("SELECT wal_gather_stats()").pluck().get() as string) as Stats;

/** A connection as the service's: WAL, 2 KiB pages, no checkpoints of its own. */
function connect(file: string): Database.Database {
  const db = new Database(file);
  db.pragma("page_size = 2048");
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma("wal_autocheckpoint = 0");
  db.pragma("cache_size = -16384");
  return db;
}

describe("WAL writes gathered (native/wal-gather.c)", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "scm-wal-gather-"));
    // A test run without it would pass and prove nothing: npm ci builds it.
    assert.ok(existsSync(walGatherLibrary()), `${walGatherLibrary()} is missing: run npm ci (or npm run build) with a C compiler`);
    assert.deepEqual(loadWalGather(walGatherLibrary()), { on: true });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** test/fixtures/failing-wal-vfs.c built into the test's folder, once. */
  const failingVfs = () => {
    const failing = join(dir, "failing-wal-vfs.so");
    if (existsSync(failing)) return failing;
    const headers = join(dirname(createRequire(import.meta.url).resolve("better-sqlite3/package.json")), "deps", "sqlite3");
    const [cc, ...ccArgs] = (process.env.CC || "cc").trim().split(/\s+/);
    execFileSync(cc!, [...ccArgs, "-O2", "-fPIC", "-shared", "-I", headers, "-o", failing, join(import.meta.dirname, "fixtures", "failing-wal-vfs.c")]);
    return failing;
  };

  /**
   * Runs `body` in a process of its own with the failing VFS under wal-gather, where `db` is
   * a connection to `file` (table t, `insert` into it, `stats()`) and `open()` makes another;
   * answers how the process ended and what it printed.
   */
  const withFailingVfs = (file: string, pageSize: string, body: string) => {
    const script = `
      const Database = require(${JSON.stringify(createRequire(import.meta.url).resolve("better-sqlite3"))});
      new Database(":memory:").loadExtension(${JSON.stringify(failingVfs())});
      new Database(":memory:").loadExtension(${JSON.stringify(walGatherLibrary())});
      const open = () => {
        const db = new Database(${JSON.stringify(file)});
        ${pageSize}db.pragma("journal_mode = WAL"); db.pragma("synchronous = NORMAL"); db.pragma("wal_autocheckpoint = 0");
        return db;
      };
      const db = open();
      db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)");
      const insert = db.prepare("INSERT INTO t (v) VALUES (?)");
      const stats = () => JSON.parse(db.prepare("SELECT wal_gather_stats()").pluck().get());
      ${body}
    `;
    return spawnSync(process.execPath, ["-e", script], { cwd: dir, encoding: "utf8" });
  };

  /** A new file in the test's folder holding table t, a connection to it, and an insert into t. */
  const tableIn = (name: string) => {
    const file = join(dir, name);
    const db = connect(file);
    db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)");
    return { file, db, insert: db.prepare("INSERT INTO t (v) VALUES (?)") };
  };

  it("the service's creates reach the WAL in a few large writes, not two a page", async () => {
    const s: TestServer = await startServer();
    try {
      const { runnerId, runnerToken } = await createRunner(s);
      await signUp(s, runnerToken);
      const createAll = (prefix: string) =>
        Promise.all(Array.from({ length: 40 }, (_, i) => call(s, CREATE, { runnerId, scmId: "github", host: `${prefix}${i}.example.com`, oauthClientId: `c${i}`, oauthPlaintextClientSecret: `secret-${i}` })));
      // The WAL made as long as the creates below write, then copied back whole: the next
      // transaction starts it over and reuses that length, as a serving WAL does.
      await createAll("warm-");
      await createAll("warmer-");
      s.db.$client.pragma("wal_checkpoint(PASSIVE)");
      const before = stats(s.db.$client);
      const commitsBefore = s.db.commitStats().commits;
      const results = await createAll("h");
      assert.deepEqual(results.map((r) => r.status), Array(40).fill(200));
      const d = stats(s.db.$client);
      const gathered = d.gathered - before.gathered;
      const flushes = d.flushWrites - before.flushWrites;
      // Each page is two writes (frame header, page); a commit's frames go out together.
      assert.ok(gathered >= 2 * (s.db.commitStats().commits - commitsBefore), `gathered ${gathered}`);
      assert.ok(flushes > 0 && flushes * 4 <= gathered, `${gathered} writes gathered into ${flushes}`);
      assert.equal(d.atBarrier - before.atBarrier, 0, "every commit's frames were written out before its publication");
      const rows = await Promise.all(results.map((r) => call(s, "gitpod.v1.RunnerConfigurationService/GetSCMIntegration", { id: r.body.id })));
      assert.deepEqual(rows.map((r) => r.status), Array(40).fill(200));
    } finally {
      await s.close();
    }
  });

  it("every commit is in the WAL file before another connection can see it, across WAL restarts", () => {
    const file = join(dir, "seen.db");
    const writer = connect(file);
    writer.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)");
    const reader = connect(file);
    const checkpointer = connect(file);
    const insert = writer.prepare("INSERT INTO t (v) VALUES (?)");
    const seen = reader.prepare("SELECT count(*) AS n, total(length(v)) AS bytes, (SELECT v FROM t ORDER BY k DESC LIMIT 1) AS last FROM t");
    let n = 0;
    let bytes = 0;
    const before = stats(writer);
    for (let commit = 0; commit < 400; commit++) {
      let last = Buffer.alloc(0);
      writer.exec("BEGIN IMMEDIATE");
      for (let i = 0; i < 1 + (commit % 23); i++) {
        last = randomBytes(50 + ((commit * 7919 + i * 104729) % 1900));
        insert.run(last);
        n += 1;
        bytes += last.length;
      }
      writer.exec("COMMIT");
      // The reader's own descriptor reads the frames: they must be in the file already.
      const got = seen.get() as { n: number; bytes: number; last: Buffer };
      assert.equal(got.n, n);
      assert.equal(got.bytes, bytes);
      assert.ok(got.last.equals(last), `commit ${commit}: the last row read back differs`);
      if (commit % 50 === 49) {
        // A copy of the files as they are now (a crash here) holds every commit.
        const copy = join(dir, `copy-${commit}.db`);
        copyFileSync(file, copy);
        copyFileSync(`${file}-wal`, `${copy}-wal`);
        const c = new Database(copy, { readonly: false });
        assert.equal((c.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n, n);
        c.close();
        // And the WAL starts over: the next commits overwrite its head in place.
        assert.equal((checkpointer.pragma("wal_checkpoint(RESTART)") as { busy: number }[])[0]!.busy, 0);
      }
    }
    const d = stats(writer);
    assert.ok(d.gathered - before.gathered > 1000, `gathered ${d.gathered - before.gathered}`);
    assert.equal(d.atBarrier - before.atBarrier, 0);
    assert.equal(writer.pragma("integrity_check", { simple: true }), "ok");
    for (const c of [writer, reader, checkpointer]) c.close();
  });

  it("a transaction a crash cuts off leaves nothing behind; the commits before it stay whole", () => {
    const file = join(dir, "crash.db");
    // A child makes its WAL long and empties it (its writes then reuse that length, as a
    // serving WAL's do, and are gathered; a WAL that grows is written straight through),
    // commits 200 rows, then writes 4 MB in a transaction with a tiny page cache, so that
    // its pages spill into the WAL before any COMMIT, and is killed inside it.
    const child = spawnSync(
      process.execPath,
      [
        "-e",
        `
        const Database = require(${JSON.stringify(createRequire(import.meta.url).resolve("better-sqlite3"))});
        new Database(":memory:").loadExtension(${JSON.stringify(walGatherLibrary())});
        const db = new Database(${JSON.stringify(file)});
        db.pragma("journal_mode = WAL"); db.pragma("synchronous = NORMAL"); db.pragma("wal_autocheckpoint = 0");
        db.pragma("cache_size = 8");
        db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)");
        const insert = db.prepare("INSERT INTO t (v) VALUES (?)");
        db.exec("BEGIN");
        for (let i = 0; i < 6000; i++) insert.run(Buffer.alloc(1000));
        db.exec("COMMIT");
        db.exec("DELETE FROM t");
        db.pragma("wal_checkpoint(RESTART)");
        const before = JSON.parse(db.prepare("SELECT wal_gather_stats()").pluck().get());
        db.exec("BEGIN");
        for (let i = 0; i < 200; i++) insert.run(Buffer.alloc(900, i % 251));
        db.exec("COMMIT");
        db.exec("BEGIN");
        for (let i = 0; i < 4000; i++) insert.run(Buffer.alloc(1000, 7));
        const now = JSON.parse(db.prepare("SELECT wal_gather_stats()").pluck().get());
        process.stdout.write(JSON.stringify({ gathered: now.gathered - before.gathered, flushWrites: now.flushWrites - before.flushWrites, through: now.through - before.through }));
        process.kill(process.pid, "SIGKILL");
        `,
      ],
      { encoding: "utf8" },
    );
    assert.equal(child.signal, "SIGKILL", child.stderr);
    const written = JSON.parse(child.stdout) as Stats;
    assert.ok(written.gathered > 1000 && written.flushWrites * 4 <= written.gathered && written.through === 0, child.stdout);
    const db = connect(file);
    const rows = db.prepare("SELECT v FROM t ORDER BY k").pluck().all() as Buffer[];
    assert.equal(rows.length, 200);
    const expected = createHash("sha256");
    for (let i = 0; i < 200; i++) expected.update(Buffer.alloc(900, i % 251));
    const got = createHash("sha256");
    for (const r of rows) got.update(r);
    assert.equal(got.digest("hex"), expected.digest("hex"));
    assert.equal(db.pragma("integrity_check", { simple: true }), "ok");
    db.close();
  });

  it("every commit's frames reach the file at its own writes, before its publication: plain, spilled and rewritten frames, synchronous FULL", () => {
    const { db, insert } = tableIn("published.db");
    const touch = db.prepare("UPDATE t SET v = ? WHERE k = ?");
    db.transaction(() => { for (let i = 0; i < 3000; i++) insert.run(Buffer.alloc(1000)); })();
    db.exec("DELETE FROM t");
    db.pragma("wal_checkpoint(RESTART)");
    const before = stats(db);
    for (const sync of ["NORMAL", "FULL"]) {
      db.pragma(`synchronous = ${sync}`);
      // Plain commits, each gathered whole into the WAL's reused length.
      for (let c = 0; c < 20; c++) db.transaction(() => { for (let i = 0; i <= c; i++) insert.run(randomBytes(300)); })();
      // A transaction larger than its page cache: pages spill into the WAL before the
      // COMMIT, some are written again in place, and the COMMIT then rewrites the headers
      // of the frames after the first one written twice, its own last.
      db.pragma("cache_size = 8");
      db.transaction(() => {
        for (let i = 0; i < 400; i++) insert.run(randomBytes(900));
        for (let k = 1; k < 400; k += 37) touch.run(randomBytes(900), k);
      })();
      db.pragma("cache_size = -16384");
      db.pragma("wal_checkpoint(RESTART)");
    }
    const d = stats(db);
    assert.ok(d.gathered - before.gathered > 1000, `gathered ${d.gathered - before.gathered}`);
    assert.equal(d.atBarrier - before.atBarrier, 0, "a commit reached its publication with bytes still gathered");
    assert.equal(db.pragma("integrity_check", { simple: true }), "ok");
    db.close();
  });

  it("a transaction that spilled pages and rolled back leaves nothing gathered to land on another connection's commit", () => {
    const { file, db: a, insert } = tableIn("rolled-back.db");
    a.transaction(() => { for (let i = 0; i < 2000; i++) insert.run(randomBytes(900)); })();
    const b = connect(file);
    // The WAL copied back whole: the next writer starts it over inside its length.
    assert.equal((b.pragma("wal_checkpoint(PASSIVE)") as { busy: number }[])[0]!.busy, 0);
    const before = stats(a);
    // A's transaction is larger than its page cache: its pages spill into the WAL before it
    // rolls back, some 800 KB of frames, all still gathered (the buffer takes 1 MiB).
    a.pragma("cache_size = 10");
    a.exec("BEGIN; UPDATE t SET v = zeroblob(900) WHERE k <= 800; ROLLBACK;");
    assert.ok(stats(a).gathered > before.gathered, "the spilled pages were gathered");
    // B commits into the same stretch of the WAL; then A reads, which writes out whatever it
    // still holds.
    b.exec("UPDATE t SET v = x'01020304' WHERE k % 7 = 0");
    const marked = "SELECT count(*) FROM t WHERE v = x'01020304'";
    assert.equal(a.prepare(marked).pluck().get(), 285);
    const c = connect(file);
    assert.equal(c.prepare(marked).pluck().get(), 285);
    assert.equal(c.pragma("integrity_check", { simple: true }), "ok");
    assert.equal((c.pragma("wal_checkpoint(TRUNCATE)") as { busy: number }[])[0]!.busy, 0);
    assert.equal(c.pragma("integrity_check", { simple: true }), "ok");
    assert.equal(c.prepare(marked).pluck().get(), 285);
    assert.equal(stats(a).atBarrier - before.atBarrier, 0);
    for (const db of [a, b, c]) db.close();
  });

  it("a commit whose frames cannot be written out fails as a COMMIT, with nothing of it shown; the process goes on and commits again", () => {
    // A VFS under wal-gather whose WAL writes fail on demand, as a disk's I/O error or an
    // immutable file would.
    const file = join(dir, "failing.db");
    const child = withFailingVfs(file, "", `
      db.transaction(() => { for (let i = 0; i < 2000; i++) insert.run(Buffer.alloc(1000)); })();
      db.exec("DELETE FROM t");
      // The WAL starts over inside its length: the commits below are gathered whole.
      db.pragma("wal_checkpoint(RESTART)");
      db.transaction(() => { for (let i = 0; i < 50; i++) insert.run(Buffer.alloc(500, i)); })();
      const reader = open();
      const count = reader.prepare("SELECT count(*) FROM t").pluck();
      const before = stats();
      db.prepare("SELECT fail_wal_writes(1)").get();
      for (const size of [1, 10]) {
        try {
          db.transaction(() => { for (let i = 0; i < size; i++) insert.run(Buffer.alloc(500, 99)); })();
          console.log("committed while failing");
        } catch (err) {
          console.log(size, err.code, db.inTransaction, count.get());
        }
      }
      db.prepare("SELECT fail_wal_writes(0)").get();
      db.transaction(() => { for (let i = 0; i < 10; i++) insert.run(Buffer.alloc(500, 200)); })();
      const after = stats();
      console.log(count.get(), after.gathered > before.gathered, after.atBarrier - before.atBarrier);
    `);
    assert.equal(child.status, 0, `${child.signal} ${child.stdout} ${child.stderr}`);
    // Each failed COMMIT: an I/O error, its transaction rolled back, another connection
    // still sees 50 rows; then a commit once the writes work, and no commit ever published
    // with its bytes still gathered.
    assert.equal(child.stdout, "1 SQLITE_IOERR_WRITE false 50\n10 SQLITE_IOERR_WRITE false 50\n60 true 0\n");
    const db = connect(file);
    assert.deepEqual(db.prepare("SELECT count(*) AS n, sum(v = zeroblob(500)) AS zeros, sum(v = ?) AS last FROM t").get(Buffer.alloc(500, 200)), { n: 60, zeros: 1, last: 10 });
    assert.equal(db.pragma("integrity_check", { simple: true }), "ok");
    db.close();
  });

  it("a commit of several frames inside the WAL's reused length goes out in one write, its last header waiting for its page; one of 170 KB in two", () => {
    const { db, insert } = tableIn("one-write.db");
    db.transaction(() => { for (let i = 0; i < 400; i++) insert.run(randomBytes(900)); })();
    db.pragma("wal_checkpoint(PASSIVE)");
    // The first commit starts the WAL over (its header is synced apart); the ones after follow on.
    insert.run(randomBytes(900));
    for (let c = 2; c < 12; c++) {
      const before = stats(db);
      db.transaction(() => { for (let i = 0; i < c; i++) insert.run(randomBytes(900)); })();
      const d = stats(db);
      assert.deepEqual(
        { flushWrites: d.flushWrites - before.flushWrites, through: d.through - before.through, atBarrier: d.atBarrier - before.atBarrier },
        { flushWrites: 1, through: 0, atBarrier: 0 },
        `commit of ${c} rows: ${JSON.stringify({ before, d })}`,
      );
      // Two writes a frame, and several frames (two 900-byte rows to a page).
      assert.ok(d.gathered - before.gathered >= 4, `commit of ${c} rows gathered ${d.gathered - before.gathered}`);
    }
    // One of some 170 KB: two writes, since the unix VFS takes under 128 KiB at a time.
    const before = stats(db);
    db.transaction(() => { for (let i = 0; i < 160; i++) insert.run(randomBytes(900)); })();
    const d = stats(db);
    assert.deepEqual({ flushWrites: d.flushWrites - before.flushWrites, through: d.through - before.through }, { flushWrites: 2, through: 0 });
    assert.equal(db.pragma("integrity_check", { simple: true }), "ok");
    db.close();
  });

  it("only writes inside the WAL's length are gathered: a growing WAL goes straight through, one refilled to its length exactly is gathered whole, one run past it is gathered up to it; a checkpoint gathers nothing", () => {
    const { file, db, insert } = tableIn("length.db");
    db.transaction(() => { for (let i = 0; i < 200; i++) insert.run(randomBytes(900)); })();
    // The same pages rewritten: the same number of frames each time.
    const rewrite = db.prepare("UPDATE t SET v = randomblob(900)");
    const delta = (f: () => unknown) => {
      const b = stats(db);
      f();
      const a = stats(db);
      return { gathered: a.gathered - b.gathered, flushWrites: a.flushWrites - b.flushWrites, through: a.through - b.through, atBarrier: a.atBarrier - b.atBarrier };
    };
    assert.deepEqual(delta(() => db.pragma("wal_checkpoint(TRUNCATE)")), { gathered: 0, flushWrites: 0, through: 0, atBarrier: 0 });
    const grown = delta(() => rewrite.run());
    assert.ok(grown.through > 200 && grown.gathered === 0, `the empty WAL grew: ${JSON.stringify(grown)}`);
    // A checkpoint writes the database file, which is not gathered.
    assert.deepEqual(delta(() => db.pragma("wal_checkpoint(PASSIVE)")), { gathered: 0, flushWrites: 0, through: 0, atBarrier: 0 });
    const refilled = delta(() => rewrite.run());
    assert.ok(refilled.gathered > 200 && refilled.through === 0, `the WAL refilled to its length, its last frame ending at its end: ${JSON.stringify(refilled)}`);
    db.pragma("wal_checkpoint(PASSIVE)");
    const past = delta(() => db.transaction(() => { for (let i = 0; i < 100; i++) insert.run(randomBytes(900)); rewrite.run(); })());
    assert.ok(past.gathered > 200 && past.through > 50 && past.atBarrier === 0, `the WAL run past its length: ${JSON.stringify(past)}`);
    // Another connection reads what the writer has.
    const rows = (c: Database.Database) => createHash("sha256").update(Buffer.concat(c.prepare("SELECT v FROM t ORDER BY k").pluck().all() as Buffer[])).digest("hex");
    const other = connect(file);
    assert.equal(rows(other), rows(db));
    assert.equal(other.prepare("SELECT count(*) FROM t").pluck().get(), 300);
    assert.equal(other.pragma("integrity_check", { simple: true }), "ok");
    for (const c of [db, other]) c.close();
  });

  it("a write of gathered bytes that fails once fails its statement or COMMIT, whether it went out with a commit, because the buffer was full, or before a read; nothing of it is shown", () => {
    // The fixture fails only the next write longer than 4 KiB, that is, one write of
    // gathered bytes (a commit's first 120 KiB of several, or the first of a full buffer's);
    // those after it succeed, so a failure dropped on the way would go unnoticed by SQLite.
    const file = join(dir, "fails-once.db");
    const child = withFailingVfs(file, 'db.pragma("page_size = 2048"); ', `
      db.transaction(() => { for (let i = 0; i < 3000; i++) insert.run(Buffer.alloc(1000)); })();
      db.exec("DELETE FROM t");
      // The WAL starts over inside its length: what follows is gathered.
      db.pragma("wal_checkpoint(RESTART)");
      db.transaction(() => { for (let i = 0; i < 50; i++) insert.run(Buffer.alloc(1000, 1)); })();
      const count = open().prepare("SELECT count(*) FROM t").pluck();
      const failOnce = db.prepare("SELECT fail_next_long_wal_write()");
      const attempt = (name, run) => {
        const before = stats();
        try {
          run();
          console.log(name, "committed");
        } catch (err) {
          console.log(name, err.code);
        }
        if (db.inTransaction) db.exec("ROLLBACK");
        console.log(name, count.get(), stats().gathered > before.gathered);
      };
      // 200 pages at COMMIT: written out in two writes, the first fails.
      attempt("commit", () => { failOnce.get(); db.transaction(() => { for (let i = 0; i < 200; i++) insert.run(Buffer.alloc(1000, 2)); })(); });
      // 1500 pages at COMMIT: the buffer fills at 1 MiB, its writing out fails.
      attempt("full", () => { failOnce.get(); db.transaction(() => { for (let i = 0; i < 1500; i++) insert.run(Buffer.alloc(1000, 3)); })(); });
      // Pages spilled before the COMMIT, then read back: the read writes them out first.
      db.pragma("cache_size = 10");
      attempt("read", () => db.transaction(() => {
        for (let i = 0; i < 300; i++) insert.run(Buffer.alloc(1000, 4));
        failOnce.get();
        db.prepare("SELECT sum(length(v)) FROM t").pluck().get();
      })());
      db.pragma("cache_size = -16384");
      db.transaction(() => { for (let i = 0; i < 10; i++) insert.run(Buffer.alloc(1000, 5)); })();
      console.log(count.get());
    `);
    assert.equal(child.status, 0, `${child.signal} ${child.stdout} ${child.stderr}`);
    assert.equal(
      child.stdout,
      ["commit SQLITE_IOERR_WRITE", "commit 50 true", "full SQLITE_IOERR_WRITE", "full 50 true", "read SQLITE_IOERR_WRITE", "read 50 true", "60", ""].join("\n"),
    );
    // A fresh connection, after the process is gone, finds the 60 rows whole.
    const db = connect(file);
    assert.deepEqual(db.prepare("SELECT count(*) AS n, sum(v = ?) AS first, sum(v = ?) AS last FROM t").get(Buffer.alloc(1000, 1), Buffer.alloc(1000, 5)), { n: 60, first: 50, last: 10 });
    assert.equal(db.pragma("integrity_check", { simple: true }), "ok");
    db.close();
  });

  it("locking_mode EXCLUSIVE given up: a rolled-back transaction's gathered frames go out at the next barrier, before another connection writes over them", () => {
    // In exclusive mode the WAL's write lock is not given up, so nothing is dropped at a
    // rollback; once the mode is left, another connection may write that stretch of the WAL.
    const { file, db: a, insert } = tableIn("exclusive.db");
    a.transaction(() => { for (let i = 0; i < 2000; i++) insert.run(randomBytes(900)); })();
    assert.equal((a.pragma("wal_checkpoint(PASSIVE)") as { busy: number }[])[0]!.busy, 0);
    a.pragma("locking_mode = EXCLUSIVE");
    a.pragma("cache_size = 10");
    const before = stats(a);
    a.exec("BEGIN; UPDATE t SET v = zeroblob(900) WHERE k <= 800; ROLLBACK;");
    assert.ok(stats(a).gathered > before.gathered, "the spilled pages were gathered");
    a.pragma("locking_mode = NORMAL");
    a.pragma("cache_size = -16384");
    // A's next read gives up the exclusive lock; its barrier writes out what A still holds.
    assert.equal(a.prepare("SELECT count(*) FROM t").pluck().get(), 2000);
    assert.ok(stats(a).atBarrier - before.atBarrier >= 1, "the barrier found the rolled-back frames");
    const b = connect(file);
    b.exec("UPDATE t SET v = x'01020304' WHERE k % 7 = 0");
    const marked = "SELECT count(*) FROM t WHERE v = x'01020304'";
    assert.equal(a.prepare(marked).pluck().get(), 285);
    const c = connect(file);
    assert.equal(c.prepare(marked).pluck().get(), 285);
    assert.equal(c.pragma("integrity_check", { simple: true }), "ok");
    assert.equal((c.pragma("wal_checkpoint(TRUNCATE)") as { busy: number }[])[0]!.busy, 0);
    assert.equal(c.pragma("integrity_check", { simple: true }), "ok");
    assert.equal(c.prepare(marked).pluck().get(), 285);
    for (const db of [a, b, c]) db.close();
  });

  // A broad guard for changes to wal-gather.c: random transactions of every size (spills
  // included), savepoints and rollbacks, both sync modes, and checkpoints of every kind from
  // another connection, checked against rows kept in JavaScript.
  for (const seed of [1, 2]) {
    it(`random transactions (seed ${seed}): another connection reads what was committed after each, and a copy of the files, opened afresh as after a crash, holds the same`, () => {
      let state = seed;
      const rnd = (n: number) => ((state = (state * 1103515245 + 12345) & 0x7fffffff), state % n);
      const { file, db: w } = tableIn(`random-${seed}.db`);
      const reader = connect(file);
      const checkpointer = connect(file);
      const put = w.prepare("INSERT OR REPLACE INTO t (k, v) VALUES (?, ?)");
      const remove = w.prepare("DELETE FROM t WHERE k = ?");
      const digest = (rows: Iterable<[number, Buffer]>) => {
        const h = createHash("sha256");
        for (const [k, v] of [...rows].sort((a, b) => a[0] - b[0])) h.update(`${k}:`).update(v);
        return h.digest("hex");
      };
      const read = (db: Database.Database) => digest((db.prepare("SELECT k, v FROM t").raw().all() as [number, Buffer][]).map(([k, v]) => [k, v]));
      let committed = new Map<number, Buffer>();
      let nextKey = 1;
      // n changes to `rows`: inserts, rewrites and deletes, each rewriting 100 to 1,900 bytes.
      const change = (rows: Map<number, Buffer>, n: number) => {
        for (let i = 0; i < n; i++) {
          const keys = [...rows.keys()];
          const op = rows.size > 1500 ? 2 + rnd(2) : rnd(4);
          if (op <= 1 || keys.length === 0) {
            const v = Buffer.alloc(100 + rnd(1800), rnd(256));
            put.run(nextKey, v);
            rows.set(nextKey++, v);
          } else if (op === 2) {
            const k = keys[rnd(keys.length)]!;
            const v = Buffer.alloc(100 + rnd(1800), rnd(256));
            put.run(k, v);
            rows.set(k, v);
          } else {
            const k = keys[rnd(keys.length)]!;
            remove.run(k);
            rows.delete(k);
          }
        }
      };
      const crashCopy = () => {
        const copy = join(dir, `random-${seed}-copy.db`);
        for (const suffix of ["", "-wal"]) copyFileSync(file + suffix, copy + suffix);
        rmSync(`${copy}-shm`, { force: true });
        const c = new Database(copy);
        try {
          assert.equal(c.pragma("integrity_check", { simple: true }), "ok");
          assert.equal(read(c), digest(committed), "the copy differs from what was committed");
        } finally {
          c.close();
        }
        for (const suffix of ["", "-wal", "-shm"]) rmSync(copy + suffix, { force: true });
      };
      const begin = stats(w);
      for (let step = 0; step < 150; step++) {
        // A small cache makes a large transaction spill pages into the WAL before its end.
        w.pragma(`cache_size = ${rnd(3) === 0 ? 10 : -16384}`);
        if (rnd(5) === 0) w.pragma(`synchronous = ${rnd(2) ? "FULL" : "NORMAL"}`);
        const rows = new Map(committed);
        const keyBefore = nextKey;
        w.exec("BEGIN");
        change(rows, rnd(4) === 0 ? 200 + rnd(1500) : 1 + rnd(30));
        if (rnd(3) === 0) {
          w.exec("SAVEPOINT s");
          const inner = new Map(rows);
          const keyAtSavepoint = nextKey;
          change(inner, 50 + rnd(600));
          if (rnd(2)) {
            w.exec("ROLLBACK TO s");
            nextKey = keyAtSavepoint;
          } else {
            rows.clear();
            for (const [k, v] of inner) rows.set(k, v);
          }
          w.exec("RELEASE s");
          change(rows, rnd(40));
        }
        if (rnd(6) === 0) {
          w.exec("ROLLBACK");
          nextKey = keyBefore;
        } else {
          w.exec("COMMIT");
          committed = rows;
        }
        assert.equal(read(reader), digest(committed), `step ${step}: another connection reads otherwise`);
        const c = rnd(10);
        if (c < 3) checkpointer.pragma(`wal_checkpoint(${["PASSIVE", "RESTART", "TRUNCATE"][c]})`);
        if (step % 50 === 49) crashCopy();
      }
      const end = stats(w);
      // Not a run that happened to gather nothing: reused WAL space was written through the buffer.
      assert.ok(end.gathered - begin.gathered > 1000 && end.flushWrites > begin.flushWrites, JSON.stringify({ begin, end }));
      assert.equal(end.atBarrier, begin.atBarrier);
      for (const db of [w, reader, checkpointer]) db.close();
    });
  }

  it("its build takes $CC with arguments, says how a compiler that fails without a word ended, and leaves no library of an older source behind", () => {
    // A copy of the build beside a copy of the source, in a folder laid out as the project's.
    const root = join(dir, "build-copy");
    const native = join(root, "src", "store", "native");
    mkdirSync(native, { recursive: true });
    for (const name of ["build.mjs", "wal-gather.c"]) copyFileSync(join(import.meta.dirname, "..", "src", "store", "native", name), join(native, name));
    writeFileSync(join(root, "package.json"), "{}");
    symlinkSync(join(import.meta.dirname, "..", "node_modules"), join(root, "node_modules"));
    const library = join(root, "build", "wal-gather.so");
    const build = (cc: string) => spawnSync(process.execPath, [join(native, "build.mjs")], { env: { ...process.env, CC: cc }, encoding: "utf8" });
    const first = build(`${process.env.CC || "cc"} -DWAL_GATHER_UNUSED=1`);
    assert.equal(first.status, 0);
    assert.equal(first.stderr, "");
    assert.ok(existsSync(library), "built with the compiler's own argument");
    // The source changes (an update), and the compiler fails: the old library goes.
    const later = new Date(Date.now() + 60_000);
    utimesSync(join(native, "wal-gather.c"), later, later);
    const failed = build("/bin/false");
    assert.equal(failed.status, 0, "the install goes on");
    assert.equal(failed.stderr, `warning: could not build ${library} (/bin/false exited with code 1); the service runs without gathering its WAL writes\n`);
    assert.equal(existsSync(library), false, "a library of the older source is not left to be loaded");
  });

  it("a process without the library, or with a file that is no such library, goes on without it and says why, once", () => {
    // Each in a process of its own: what loadWalGather finds is kept for the process.
    const notALibrary = join(dir, "not-a-library.so");
    execFileSync("sh", ["-c", `printf 'plain text' > "${notALibrary}"`]);
    const missing = join(dir, "missing.so");
    const found = (library: string) => {
      const child = spawnSync(
        process.execPath,
        [
          "--import",
          "tsx",
          "-e",
          `
          import(${JSON.stringify(new URL("../src/store/wal-gather.ts", import.meta.url).href)}).then(({ loadWalGather, walGather }) => {
            const before = walGather();
            const first = loadWalGather(${JSON.stringify(library)});
            // Asked again, even for the real library, it answers what it found the first time.
            const again = loadWalGather(${JSON.stringify(walGatherLibrary())});
            process.stdout.write(JSON.stringify({ before: before ?? null, first, again, after: walGather() }));
          });
          `,
        ],
        { encoding: "utf8" },
      );
      assert.equal(child.status, 0, child.stderr);
      return JSON.parse(child.stdout) as { before: null; first: { on: boolean; reason?: string }; again: unknown; after: unknown };
    };
    const absent = found(missing);
    assert.deepEqual(absent.first, { on: false, reason: `${missing} was not built (npm ci builds it with the C compiler better-sqlite3 is built with)` });
    assert.equal(absent.before, null);
    assert.deepEqual(absent.again, absent.first);
    assert.deepEqual(absent.after, absent.first);
    const broken = found(notALibrary);
    assert.equal(broken.first.on, false);
    assert.ok(broken.first.reason!.startsWith(`${notALibrary} did not load: `) && broken.first.reason!.length > `${notALibrary} did not load: `.length, broken.first.reason);
    assert.deepEqual(broken.again, broken.first);
    assert.deepEqual(broken.after, broken.first);
  });

  it("the service's start says its WAL writes are gathered", async () => {
    const svc = await startService(join(dir, "started.db"));
    try {
      const line = svc.out.text.split("\n").find((l) => l.includes('"msg":"listening"'))!;
      assert.equal((JSON.parse(line) as { wal_writes_gathered?: unknown }).wal_writes_gathered, true, line);
    } finally {
      svc.child.kill("SIGTERM");
      assert.equal((await svc.exited).code, 0);
    }
  });
});
