import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import Database from "better-sqlite3";
import { newKeyPair, open } from "../src/crypto/sealed-box.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { openDatabase } from "../src/store/database.js";
import { startService, type Service } from "./harness.js";
import { logLines, SecretWatch } from "./secret-watch.js";

const CFG = "gitpod.v1.RunnerConfigurationService";

/** A database with organization "acme" and an API token of it, closed again; answers the token. */
function makeDatabase(file: string): string {
  const db = openDatabase(file);
  try {
    createOrganization(db, "acme");
    const { token } = createApiToken(db, "acme");
    watch.noteToken(token);
    return token;
  } finally {
    db.$client.close();
  }
}

/** A new folder holding a database made by makeDatabase, `scm.db`. */
function databaseIn(folder: string): { folder: string; live: string; token: string } {
  mkdirSync(folder);
  const live = join(folder, "scm.db");
  return { folder, live, token: makeDatabase(live) };
}

/** A backup, at `prefix-backup.db`, of a database made by makeDatabase at `prefix-source.db`. */
async function freshBackup(prefix: string): Promise<string> {
  makeDatabase(`${prefix}-source.db`);
  const made = await admin(`${prefix}-source.db`, "db", "backup", `${prefix}-backup.db`);
  assert.equal(made.status, 0, made.stderr);
  return `${prefix}-backup.db`;
}

/** The admin CLI on `databaseFile`, run to its end without blocking this process's event loop. */
function admin(databaseFile: string, ...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/admin.ts", ...args], { env: { ...process.env, DATABASE_URL: databaseFile }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  return new Promise((resolve) => child.once("close", (status) => resolve({ status, stdout, stderr })));
}

/**
 * Skips `t` and answers true unless this checkout can be run as other users: as root, with
 * setpriv (util-linux; CI has both), from a folder they may read.
 */
function cannotRunAsOthers(t: TestContext): boolean {
  if (process.getuid?.() !== 0 || spawnSync("setpriv", ["--version"]).status !== 0) {
    if (process.env.CI === "true") throw new Error("CI runs as root with setpriv (util-linux), which this test needs");
    t.skip("needs root and setpriv to run the CLI as other users");
    return true;
  }
  // Where the checkout lies in a folder closed to them (a home folder of mode 0700, say),
  // they cannot, whoever runs the tests.
  if (spawnSync("setpriv", ["--reuid", "1002", "--regid", "65534", "--clear-groups", "test", "-r", join(process.cwd(), "src", "admin.ts")]).status !== 0) {
    t.skip(`other users cannot read this checkout (${process.cwd()}), so they cannot run its CLI`);
    return true;
  }
  return false;
}

/** `script` of this checkout (the CLI or the service) run to its end as user `uid` of group 65534, with `env` added. */
function asUser(uid: number, script: string, env: Record<string, string>, ...args: string[]) {
  return spawnSync("setpriv", ["--reuid", String(uid), "--regid", "65534", "--clear-groups", process.execPath, "--import", "tsx", script, ...args], {
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 30_000,
  });
}

/** Every request and answer here goes through this; each service's files and log, and each backup, are scanned with it. */
const watch = new SecretWatch();

async function api(svc: Service, token: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  const data = JSON.stringify(body);
  watch.noteSent(`/${path}`, headers, data);
  const res = await fetch(`http://127.0.0.1:${svc.port}/${path}`, { method: "POST", headers, body: data });
  const text = await res.text();
  watch.noteReceived(Object.fromEntries(res.headers), text);
  return { status: res.status, body: JSON.parse(text) };
}

/** A runner, signed up with a fresh key pair; answers its id and the keys. */
async function signedUpRunner(svc: Service, token: string) {
  const made = await api(svc, token, "gitpod.v1.RunnerService/CreateRunner", { name: "runner-one", kind: "RUNNER_KIND_REMOTE", provider: "RUNNER_PROVIDER_LINUX_HOST" });
  assert.equal(made.status, 200, JSON.stringify(made.body));
  const keys = newKeyPair();
  const signup = await api(svc, made.body.accessToken, "gitpod.v1.RunnerInteractionService/Signup", { publicKey: keys.publicKey.toString("base64") });
  assert.equal(signup.status, 200, JSON.stringify(signup.body));
  return { runnerId: made.body.runner.runnerId as string, keys };
}

async function create(svc: Service, token: string, runnerId: string, host: string): Promise<string> {
  const r = await api(svc, token, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host, oauthClientId: `client-${host}`, oauthPlaintextClientSecret: `backup-secret-${host}` });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.id as string;
}

/** Every integration of the runner, by id. */
async function listAll(svc: Service, token: string, runnerId: string): Promise<Map<string, any>> {
  const byId = new Map<string, any>();
  let pageToken = "";
  do {
    const r = await api(svc, token, `${CFG}/ListSCMIntegrations`, { filter: { runnerIds: [runnerId] }, pagination: { pageSize: 100, token: pageToken } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    for (const i of r.body.integrations ?? []) byId.set(i.id, i);
    pageToken = r.body.pagination?.nextToken ?? "";
  } while (pageToken !== "");
  return byId;
}

const FILLER_ROWS = 40_000;

/** Adds `rows` integrations to a runner straight into the database (another connection beside the service's). */
function fillRunner(file: string, runnerId: string, rows: number): void {
  const db = new Database(file);
  try {
    db.pragma("busy_timeout = 5000");
    const orgId = db.prepare("SELECT org_id FROM runners WHERE id = ?").pluck().get(runnerId);
    const insert = db.prepare(
      `INSERT INTO scm_integrations (id, org_id, runner_id, scm_id, host, pat, oauth_client_id, oauth_encrypted_secret, oauth_sealed_to, issuer_url, virtual_directory, created_at, updated_at)
       VALUES (?, ?, ?, 'github', ?, 0, ?, ?, ?, NULL, NULL, 0, 0)`,
    );
    db.transaction(() => {
      for (let i = 0; i < rows; i++) {
        const id = `00000000-0000-7000-8000-${i.toString(16).padStart(12, "0")}`;
        insert.run(id, orgId, runnerId, `filler-${i}.example.com`, `client-${i}`, Buffer.alloc(80, i % 251), Buffer.alloc(32, 7));
      }
    })();
  } finally {
    db.close();
  }
}

/** Stops a service, then scans its database files and log for tokens and secrets. */
async function stopService(svc: Service, dbFile: string): Promise<void> {
  svc.child.kill("SIGTERM");
  assert.equal((await svc.exited).code, 0);
  watch.finish(dbFile, [...logLines(svc.out.text), svc.out.err]);
}

describe("admin db backup and restore", () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "scm-backup-"))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("a backup taken while the service takes creates holds every create acknowledged before it began; restored elsewhere, it serves them", async () => {
    const live = join(dir, "live", "scm.db");
    mkdirSync(join(dir, "live"));
    const token = makeDatabase(live);
    const svc = await startService(live);
    try {
      const { runnerId, keys } = await signedUpRunner(svc, token);
      for (let i = 0; i < 20; i++) await create(svc, token, runnerId, `before-${i}.example.com`);
      // Some 25 MB more, under a second runner, so that the copy takes several steps (16 MiB
      // each): steps that began a read of their own would start over at every commit below.
      const filler = FILLER_ROWS;
      fillRunner(live, (await signedUpRunner(svc, token)).runnerId, filler);

      // Creates go on, four at a time, all through the backup (for 30 s at most).
      const acked = new Set<string>();
      let running = true;
      const deadline = Date.now() + 30_000;
      let n = 0;
      const writers = Array.from({ length: 4 }, async () => {
        while (running && Date.now() < deadline) acked.add(await create(svc, token, runnerId, `during-${n++}.example.com`));
      });
      while (acked.size < 20) await new Promise((r) => setTimeout(r, 5));
      const ackedBefore = new Set([...(await listAll(svc, token, runnerId)).keys()]);
      const backup = join(dir, "scm-backup.db");
      const atStart = acked.size;
      const made = await admin(live, "db", "backup", backup);
      const atEnd = acked.size;
      const endedInTime = Date.now() < deadline;
      running = false;
      await Promise.all(writers);
      assert.equal(made.status, 0, made.stderr);
      const holds = /^backed up to .*scm-backup\.db: \d+ bytes; 1 organization, 2 runners, (\d+) SCM integrations\n$/.exec(made.stderr);
      assert.ok(holds, made.stderr);
      assert.ok(Number(holds[1]) >= filler + ackedBefore.size, made.stderr);
      assert.ok(endedInTime, "the backup ended while the creates went on");
      assert.ok(atEnd > atStart, `creates were answered while the backup ran (${atStart} before, ${atEnd} after)`);
      assert.equal(statSync(backup).mode & 0o777, 0o600, "the backup is readable by its owner alone, as the database is");
      assert.deepEqual(readdirSync(dir).sort(), ["live", "scm-backup.db"], "no partial copy is left behind");
      assert.deepEqual(watch.scan([backup], []).leaks, [], "no token or client secret is in the backup as it was sent");

      const restored = join(dir, "elsewhere", "restored.db");
      const put = await admin(restored, "db", "restore", backup);
      assert.equal(put.status, 0, put.stderr);
      assert.match(put.stderr, /^restored .*scm-backup\.db to .*restored\.db: \d+ bytes; 1 organization, 2 runners, \d+ SCM integrations\n$/);
      const copy = await startService(restored);
      try {
        const found = await listAll(copy, token, runnerId);
        for (const id of ackedBefore) assert.ok(found.has(id), `${id}, acknowledged before the backup began, is in it`);
        const everything = new Set([...ackedBefore, ...acked]);
        for (const id of found.keys()) assert.ok(everything.has(id), `${id} in the backup is an acknowledged create`);
        const one = found.get([...ackedBefore][0]!);
        assert.equal(open(Buffer.from(one.oauth.encryptedClientSecret, "base64"), keys.publicKey, keys.secretKey), `backup-secret-${one.host}`, "the runner still opens a restored secret");
      } finally {
        await stopService(copy, restored);
      }
    } finally {
      await stopService(svc, live);
    }
  });

  it("restore is refused while the service has the database open; stopped, the backup takes its place and the replaced database is kept aside", async () => {
    const { folder, live, token } = databaseIn(join(dir, "swap"));
    let svc = await startService(live);
    const { runnerId } = await signedUpRunner(svc, token);
    const kept = await create(svc, token, runnerId, "kept.example.com");
    const backup = join(dir, "swap-backup.db");
    assert.equal((await admin(live, "db", "backup", backup)).status, 0);
    const later = await create(svc, token, runnerId, "later.example.com");

    const refused = await admin(live, "db", "restore", backup);
    assert.equal(refused.status, 2);
    assert.match(refused.stderr, /in use by another process; stop the service first/);
    assert.deepEqual([...(await listAll(svc, token, runnerId)).keys()].sort(), [kept, later].sort(), "the service serves on, unchanged");
    await stopService(svc, live);
    // A restore refused for its source leaves the folder as it was: the service's claim file too.
    const notes = join(dir, "swap-notes.txt");
    writeFileSync(notes, "not a database\n".repeat(200));
    const stopped = readdirSync(folder).sort();
    assert.ok(stopped.includes("scm.db.lock"), stopped.join(" "));
    const notRestored = await admin(live, "db", "restore", notes);
    assert.equal(notRestored.status, 2, notRestored.stderr);
    assert.match(notRestored.stderr, /swap-notes\.txt is not a readable SQLite database/);
    assert.deepEqual(readdirSync(folder).sort(), stopped, "the claim file the service made is kept");
    chmodSync(live, 0o640);

    const put = await admin(live, "db", "restore", backup);
    assert.equal(put.status, 0, put.stderr);
    const aside = /the database it replaced is now (.*scm\.db\.replaced-[0-9TZ-]+);/.exec(put.stderr)?.[1];
    assert.ok(aside, put.stderr);
    // The claim file is the service's, which outlives it (see serving-claim.ts).
    assert.deepEqual(readdirSync(folder).sort(), ["scm.db", "scm.db.lock", aside.slice(folder.length + 1)].sort(), "no WAL of the old database beside the new one, no copy left over");
    assert.equal(statSync(live).mode & 0o777, 0o640, "the restored database has the mode of the one it replaced");
    const old = new Database(aside, { readonly: true });
    try {
      assert.equal(old.prepare("SELECT count(*) FROM scm_integrations").pluck().get(), 2, "the replaced database, WAL folded in, has both");
    } finally {
      old.close();
    }
    svc = await startService(live);
    try {
      assert.deepEqual([...(await listAll(svc, token, runnerId)).keys()], [kept], "the service now serves the backup");
    } finally {
      await stopService(svc, live);
    }
  });

  it("refuses targets and sources it should not use, with exit 2 and a line saying why, and changes nothing", async () => {
    const { folder, live } = databaseIn(join(dir, "refusals"));
    const good = join(folder, "good.db");
    assert.equal((await admin(live, "db", "backup", good)).status, 0);
    writeFileSync(join(folder, "stale.db-wal"), "left by an earlier database of that name");
    writeFileSync(join(folder, "hot.db-journal"), "a hot journal's bytes");
    writeFileSync(join(folder, "shared.db-shm"), "");
    const state = () => readdirSync(folder).sort().map((f) => `${f}:${statSync(join(folder, f)).size}:${statSync(join(folder, f)).mtimeMs}`);
    const before = state();

    const refusals: [string[], RegExp][] = [
      [["db", "backup", good], /good\.db exists; a backup never overwrites a file/],
      [["db", "backup", join(folder, "stale.db")], /stale\.db-wal exists beside it, and SQLite would read it into the backup/],
      [["db", "backup", join(folder, "hot.db")], /hot\.db-journal exists beside it, and SQLite would read it into the backup/],
      [["db", "backup", join(folder, "shared.db")], /shared\.db-shm exists beside it, and SQLite would read it into the backup/],
      [["db", "backup", join(folder, "missing", "b.db")], /the folder .*missing does not exist/],
      [["db", "backup", `${live}-wal`], /scm\.db-wal: a name ending in -wal is SQLite's for the file beside a database/],
      [["db", "backup"], /usage:/],
      [["db", "backup", `${folder}/`], /names no file; give the backup's file name/],
      [["db", "backup", ""], /names no file/],
      [["db", "restore", join(folder, "none.db")], /none\.db: no such file/],
      [["db", "restore", folder], /refusals is not a regular file/],
      [["db", "restore", live], /is the database itself/],
    ];
    // A copy whose table and index disagree (a byte of the organization's name changed
    // where it first appears): sound pages, so quick_check passes; integrity_check does not.
    const damaged = join(dir, "damaged.db");
    assert.equal((await admin(live, "db", "backup", damaged)).status, 0);
    const bytes = readFileSync(damaged);
    bytes[bytes.indexOf("acme") + 3] = "f".charCodeAt(0);
    writeFileSync(damaged, bytes);
    const d = new Database(damaged, { readonly: true });
    assert.equal(d.pragma("quick_check", { simple: true }), "ok");
    assert.notEqual(d.pragma("integrity_check", { simple: true }), "ok");
    d.close();
    refusals.push([["db", "restore", damaged], /damaged\.db is damaged: SQLite's integrity_check found faults/]);
    // A copy of a good backup with a hot journal beside it: the file alone is not whole.
    writeFileSync(join(dir, "journaled.db"), readFileSync(good));
    writeFileSync(join(dir, "journaled.db-journal"), "a hot journal's bytes");
    refusals.push([["db", "restore", join(dir, "journaled.db")], /journaled\.db has a rollback journal beside it/]);
    const notes = join(dir, "notes.txt");
    writeFileSync(notes, "not a database\n".repeat(200));
    refusals.push([["db", "restore", notes], /notes\.txt is not a readable SQLite database \(SQLITE_NOTADB\)/]);
    const foreign = join(dir, "foreign.db");
    const f = new Database(foreign);
    f.exec("CREATE TABLE notes (body TEXT)");
    f.close();
    refusals.push([["db", "restore", foreign], /foreign\.db is not a database of this service/]);
    // A backup from a release with a migration this one does not know.
    const newer = join(dir, "newer.db");
    assert.equal((await admin(live, "db", "backup", newer)).status, 0);
    const n = new Database(newer);
    n.prepare(`INSERT INTO "__drizzle_migrations" ("hash", "created_at") VALUES ('future', ?)`).run(Date.UTC(2100, 0, 1));
    n.close();
    refusals.push([["db", "restore", newer], /newer\.db was made by a newer release of this service/]);
    // A database file whose WAL still holds commits: a copy of the file alone would lose them.
    const walled = join(dir, "walled", "w.db");
    mkdirSync(join(dir, "walled"));
    makeDatabase(walled);
    const holder = spawnSync(process.execPath, ["-e", `
      const db = require("better-sqlite3")(${JSON.stringify(walled)});
      db.pragma("wal_autocheckpoint = 0");
      db.exec("CREATE TABLE later (x)");
      process.kill(process.pid, "SIGKILL");
    `]);
    assert.equal(holder.signal, "SIGKILL");
    assert.ok(statSync(`${walled}-wal`).size > 0);
    refusals.push([["db", "restore", walled], /w\.db has a WAL beside it \(w\.db-wal\)/]);

    for (const [args, why] of refusals) {
      const r = await admin(live, ...args);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, why);
      assert.doesNotMatch(r.stderr, /\n {4}at /, "a line, not a stack trace");
    }
    assert.deepEqual(state(), before, "no file was made, changed or left behind");

    // Another name of the database (a hard link), whose -wal SQLite would look for beside that
    // name: it is the database itself, and while it is there the database is not backed up either.
    const link = join(folder, "hard-link.db");
    linkSync(live, link);
    const linkedRestore = await admin(live, "db", "restore", link);
    assert.equal(linkedRestore.status, 2, linkedRestore.stderr);
    assert.match(linkedRestore.stderr, /hard-link\.db is the database itself/);
    const linkedBackup = await admin(live, "db", "backup", join(dir, "of-linked.db"));
    assert.equal(linkedBackup.status, 2, linkedBackup.stderr);
    assert.match(linkedBackup.stderr, /has 2 names \(hard links to one file\)/);
    rmSync(link);
    assert.deepEqual(state(), before);

    // A backup of a database a newer release migrated is for that release's CLI to make.
    const fromNewer = await admin(newer, "db", "backup", join(dir, "from-newer.db"));
    assert.equal(fromNewer.status, 2);
    assert.match(fromNewer.stderr, /newer\.db was migrated by a newer release of this service .*; use that release's admin CLI\n$/);
    assert.equal(existsSync(join(dir, "from-newer.db")), false);

    // Refused on its way into a folder not there yet: the folders it made go again.
    const elsewhere = join(dir, "made", "for", "x.db");
    const r = await admin(elsewhere, "db", "restore", notes);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(existsSync(join(dir, "made")), false, "no folder is left behind");
  });
});

describe("admin db backup and restore, at the edges", () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "scm-backup-edges-"))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("a backup changes nothing in the database it copies, not even a migration the CLI would apply", async () => {
    const live = join(dir, "older.db");
    makeDatabase(live);
    // As a database the running service (an older release) has not migrated as far.
    const migrations = (file: string) => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare(`SELECT count(*) FROM "__drizzle_migrations"`).pluck().get() as number;
      } finally {
        db.close();
      }
    };
    const db = new Database(live);
    db.prepare(`DELETE FROM "__drizzle_migrations" WHERE created_at = (SELECT max(created_at) FROM "__drizzle_migrations")`).run();
    db.close();
    const before = migrations(live);
    const made = await admin(live, "db", "backup", join(dir, "older-backup.db"));
    assert.equal(made.status, 0, made.stderr);
    assert.equal(migrations(live), before, "the live database was not migrated");
    assert.equal(migrations(join(dir, "older-backup.db")), before, "the backup is the database as it was");
  });

  /**
   * A database over two steps of the copy (16 MiB each) in `name`, and a backup of it to
   * `target` with test/fixtures/during-backup-copy.cjs doing `during` once the copy's first step
   * is in: answers the CLI's exit code and what it wrote to stderr.
   */
  async function backupInterrupted(name: string, target: string, during: string) {
    const { folder, live, token } = databaseIn(join(dir, name));
    const svc = await startService(live);
    try {
      fillRunner(live, (await signedUpRunner(svc, token)).runnerId, 50_000);
    } finally {
      await stopService(svc, live);
    }
    assert.ok(statSync(live).size > 2 * 16 * 1024 * 1024, `${statSync(live).size} bytes`);
    const fixture = join(process.cwd(), "test", "fixtures", "during-backup-copy.cjs");
    const env = { ...process.env, DATABASE_URL: live, DURING_BACKUP_COPY: during, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --require ${fixture}` };
    const child = spawn(process.execPath, ["--import", "tsx", "src/admin.ts", "db", "backup", join(folder, target)], { env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const status = await new Promise<number | null>((resolve) => child.once("close", resolve));
    return { folder, status, stderr };
  }

  it("a backup interrupted by Ctrl-C removes its partial copy and exits 130", async () => {
    const r = await backupInterrupted("interrupted", "cut.db", "SIGINT");
    assert.equal(r.status, 130, r.stderr);
    assert.match(r.stderr, /^interrupted \(SIGINT\); no backup was made\n$/);
    assert.deepEqual(readdirSync(r.folder).sort(), ["scm.db", "scm.db.lock"], "neither the partial copy nor a backup is left (the claim file is the service's)");
  });

  it("a file SQLite would read into the backup that appears beside its name while the copy is made keeps the backup from being named", async () => {
    const r = await backupInterrupted("late", "late.db", join(dir, "late", "late.db-journal"));
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /late\.db-journal exists beside it, and SQLite would read it into the backup; move it away first\n$/);
    assert.deepEqual(readdirSync(r.folder).sort(), ["late.db-journal", "scm.db", "scm.db.lock"], "no backup named, no partial copy left");
  });

  it("a backup by a user who may read the database but not write beside it is refused, leaving no -wal or -shm the service could not use", async (t) => {
    // As two other users: the service's (1001, owning the database) and a reader in its group.
    if (cannotRunAsOthers(t)) return;
    chmodSync(dir, 0o711); // mkdtemp's 0700 would keep the other users out of everything
    const folder = join(dir, "shared");
    mkdirSync(folder);
    const live = join(folder, "scm.db");
    makeDatabase(live);
    const out = join(dir, "shared-out");
    mkdirSync(out);
    chmodSync(out, 0o777);
    chownSync(folder, 1001, 65534);
    chownSync(live, 1001, 65534);
    chmodSync(folder, 0o750);
    chmodSync(live, 0o640);
    const as = (uid: number, target: string) => asUser(uid, "src/admin.ts", { DATABASE_URL: live }, "db", "backup", target);
    const reader = as(1002, join(out, "by-reader.db"));
    assert.equal(reader.status, 2, reader.stderr);
    assert.match(reader.stderr, /this user cannot write .*scm\.db or beside it \(EACCES\); run `db backup` as the service's user/);
    assert.deepEqual(readdirSync(folder), ["scm.db"], "no -wal or -shm left for the service to trip on");
    const owner = as(1001, join(out, "by-owner.db"));
    assert.equal(owner.status, 0, owner.stderr);
    assert.deepEqual(readdirSync(folder), ["scm.db"]);
  });

  it("run by root, the CLI's first database goes to the folder's owner; a folder the user cannot search is said as such, not taken for no database", async (t) => {
    if (cannotRunAsOthers(t)) return;
    chmodSync(dir, 0o711);
    const home = join(dir, "service-home");
    mkdirSync(home);
    chownSync(home, 1001, 65534);
    // `sudo npm run admin -- org create` before the first start: folders and file made for the service's user.
    const file = join(home, "data", "deeper", "scm.db");
    const made = await admin(file, "org", "create", "acme");
    assert.equal(made.status, 0, made.stderr);
    for (const path of [join(home, "data"), join(home, "data", "deeper"), file]) {
      assert.deepEqual([statSync(path).uid, statSync(path).gid], [1001, 65534], path);
    }
    const as = (uid: number, databaseFile: string, ...args: string[]) => asUser(uid, "src/admin.ts", { DATABASE_URL: databaseFile }, ...args);
    const listed = as(1001, file, "org", "list");
    assert.equal(listed.status, 0, listed.stderr);
    assert.match(listed.stdout, /^acme\t/);

    // Another user, who cannot search the folder: the database is there, but out of reach.
    chmodSync(home, 0o700);
    for (const args of [["org", "list"], ["db", "backup", join(dir, "never.db")]]) {
      const shut = as(1002, file, ...args);
      assert.equal(shut.status, 2, shut.stderr);
      assert.equal(shut.stderr, `DATABASE_URL: cannot look up ${file} (EACCES): this user must be able to search every folder on its path\n`);
    }
    const service = asUser(1002, "src/main.ts", { DATABASE_URL: file, PORT: "0", HOST: "127.0.0.1" });
    assert.equal(service.status, 1, service.stderr);
    assert.equal(service.stderr, `startup error: DATABASE_URL: cannot look up ${file} (EACCES): this user must be able to search every folder on its path\n`);

    // A claim file the service's user may read but not write (left by root, say): SQLite would
    // open it read-only and lock it shared, which is no claim. Refused instead.
    chmodSync(home, 0o755);
    writeFileSync(`${file}.lock`, "");
    chmodSync(`${file}.lock`, 0o644);
    const readOnlyClaim = asUser(1001, "src/main.ts", { DATABASE_URL: file, PORT: "0", HOST: "127.0.0.1" });
    assert.equal(readOnlyClaim.status, 1, readOnlyClaim.stderr);
    assert.match(readOnlyClaim.stderr, /^startup error: DATABASE_URL: .*scm\.db cannot be opened for reading and writing \(EACCES\)/);
  });

  it("run by root, a restore gives what it makes to the database's owner, or where there is none yet to the owner of the folder it goes in", async (t) => {
    if (process.getuid?.() !== 0) {
      if (process.env.CI === "true") throw new Error("CI runs as root, which this test needs");
      t.skip("needs root");
      return;
    }
    const backup = await freshBackup(join(dir, "owned"));
    const home = join(dir, "owned-home");
    mkdirSync(home);
    chownSync(home, 1001, 65534);
    const owners = (...paths: string[]) => paths.map((p) => `${p}: ${statSync(p).uid}:${statSync(p).gid}`);
    // No database yet: the folders it makes, the file and its claim file go to the folder's owner.
    const fresh = join(home, "data", "deeper", "scm.db");
    const first = await admin(fresh, "db", "restore", backup);
    assert.equal(first.status, 0, first.stderr);
    const made = [join(home, "data"), join(home, "data", "deeper"), fresh, `${fresh}.lock`];
    assert.deepEqual(owners(...made), made.map((p) => `${p}: 1001:65534`));
    // Over a database of another user's: the restored file, and the claim file, are that user's.
    const existing = join(home, "scm.db");
    makeDatabase(existing);
    chownSync(existing, 1002, 65534);
    const second = await admin(existing, "db", "restore", backup);
    assert.equal(second.status, 0, second.stderr);
    assert.deepEqual(owners(existing, `${existing}.lock`), [`${existing}: 1002:65534`, `${existing}.lock: 1002:65534`]);
  });

  it("restore is refused while another process has the database open without claiming it (a backup running, an sqlite3 shell), and changes nothing", async () => {
    const backup = await freshBackup(join(dir, "held"));
    const { folder, live } = databaseIn(join(dir, "held"));
    const holder = new Database(live);
    try {
      assert.equal(holder.pragma("journal_mode", { simple: true }), "wal");
      const before = holder.prepare("SELECT count(*) FROM api_tokens").pluck().get();
      const listing = readdirSync(folder).sort();
      const refused = await admin(live, "db", "restore", backup);
      assert.equal(refused.status, 2, refused.stderr);
      assert.equal(refused.stderr, "the database is in use by another process; stop the service first\n");
      assert.deepEqual(readdirSync(folder).sort(), listing, "no copy made, nothing moved aside");
      assert.equal(holder.prepare("SELECT count(*) FROM api_tokens").pluck().get(), before);
    } finally {
      holder.close();
    }
  });

  it("files SQLite left beside a database that is gone are moved aside, not read into the restored one", async () => {
    const backup = await freshBackup(join(dir, "strays"));
    mkdirSync(join(dir, "strays"));
    const file = join(dir, "strays", "scm.db");
    writeFileSync(`${file}-wal`, "a WAL whose database is gone");
    const put = await admin(file, "db", "restore", backup);
    assert.equal(put.status, 0, put.stderr);
    assert.match(put.stderr, /files SQLite had left beside it were moved aside: .*scm\.db\.replaced-[0-9TZ-]+-wal\n$/);
    assert.doesNotMatch(put.stderr, /the database it replaced/, "there was none");
    assert.equal(existsSync(`${file}-wal`), false);
    const restored = new Database(file, { readonly: true });
    try {
      assert.equal(restored.prepare("SELECT count(*) FROM organizations").pluck().get(), 1);
    } finally {
      restored.close();
    }
  });

  it("restores through a symbolic link to a database not there yet: the link is kept and the file it names made", async () => {
    const backup = await freshBackup(join(dir, "linked"));
    mkdirSync(join(dir, "volume"));
    const link = join(dir, "scm.db");
    symlinkSync(join(dir, "volume", "scm.db"), link);
    const put = await admin(link, "db", "restore", backup);
    assert.equal(put.status, 0, put.stderr);
    assert.ok(lstatSync(link).isSymbolicLink(), "the link is still a link");
    assert.ok(statSync(join(dir, "volume", "scm.db")).isFile(), "the database is where the link points");
  });
});
