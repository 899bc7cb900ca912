import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import { readMigrationFiles } from "drizzle-orm/migrator";
import { newId } from "../src/crypto/ids.js";
import { newKeyPair, open, seal } from "../src/crypto/sealed-box.js";
import { newToken } from "../src/crypto/tokens.js";
import { openDatabase } from "../src/store/database.js";
import { insertScmIntegration, keyOf } from "../src/store/scm-integrations.js";
import { ForeignDatabaseError, NewerDatabaseError, UnknownMigrationError } from "../src/store/migrations.js";
import { describeStartupError } from "../src/startup-errors.js";
import { call, serveDatabase, type TestServer } from "./harness.js";

const GET = "gitpod.v1.RunnerConfigurationService/GetSCMIntegration";
const LIST = "gitpod.v1.RunnerConfigurationService/ListSCMIntegrations";
const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";

/** The last migration before scm_integrations was rebuilt; a database made by an earlier release stops here. */
const BEFORE_REBUILD = "0002_idempotency_keys";

/** A copy of drizzle/ that ends at `lastTag`, as an earlier release shipped it. */
function migrationsUpTo(dir: string, lastTag: string): string {
  const out = join(dir, "old-drizzle");
  cpSync(join(import.meta.dirname, "..", "drizzle"), out, { recursive: true });
  const journalFile = join(out, "meta", "_journal.json");
  const journal = JSON.parse(readFileSync(journalFile, "utf8")) as { entries: { tag: string }[] };
  const last = journal.entries.findIndex((e) => e.tag === lastTag);
  assert.ok(last >= 0, `no migration ${lastTag}`);
  journal.entries = journal.entries.slice(0, last + 1);
  writeFileSync(journalFile, JSON.stringify(journal));
  return out;
}

describe("upgrading a database made before scm_integrations was keyed by id", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-upgrade-"));
  const file = join(dir, "old.db");
  const keys = newKeyPair();
  const oldKey = newKeyPair();
  const api = newToken("api");
  const otherApi = newToken("api");
  const secret = "upgrade-client-secret-7f3a";
  const orgId = newId(Date.now());
  const runnerId = newId(Date.now());
  const ids = { oauth: newId(Date.now()), patOnly: newId(Date.now()), staleKey: newId(Date.now()) };
  let s: TestServer;

  before(async () => {
    // What an earlier release left on disk: its schema, with rows written by its code.
    const old = new Database(file);
    migrate(drizzle(old), { migrationsFolder: migrationsUpTo(dir, BEFORE_REBUILD) });
    const now = Date.now();
    old.prepare("INSERT INTO organizations (id, name, created_at) VALUES (?, 'acme', ?)").run(orgId, now);
    old.prepare("INSERT INTO api_tokens (id, org_id, token_hash, created_at) VALUES (?, ?, ?, ?)").run(newId(now), orgId, api.hash, now);
    const otherOrg = newId(now);
    old.prepare("INSERT INTO organizations (id, name, created_at) VALUES (?, 'other', ?)").run(otherOrg, now);
    old.prepare("INSERT INTO api_tokens (id, org_id, token_hash, created_at) VALUES (?, ?, ?, ?)").run(newId(now), otherOrg, otherApi.hash, now);
    old
      .prepare(
        `INSERT INTO runners (id, org_id, name, kind, provider, creator_id, created_at, updated_at, access_token_hash, public_key, status_updated_at)
         VALUES (?, ?, 'old-runner', 2, 2, 'someone', ?, ?, ?, ?, ?)`,
      )
      .run(runnerId, orgId, now, now, newToken("runner").hash, keys.publicKey, now);
    const insert = old.prepare(
      `INSERT INTO scm_integrations (id, org_id, runner_id, scm_id, host, pat, oauth_client_id, oauth_encrypted_secret, oauth_sealed_to, issuer_url, virtual_directory, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    insert.run(ids.oauth, orgId, runnerId, "github", "github.com", 0, "client-1", seal(secret, keys.publicKey), keys.publicKey, null, null, now, now);
    insert.run(ids.patOnly, orgId, runnerId, "azuredevops_server", "ado.example.com", 1, null, null, null, null, "tfs", now, now);
    // Sealed to a key the runner has since replaced: reads must not hand it out.
    insert.run(ids.staleKey, orgId, runnerId, "gitlab", "gitlab.example.com", 1, "client-2", seal(secret, oldKey.publicKey), oldKey.publicKey, null, null, now, now);
    old.close();

    // openDatabase applies the migrations this release adds, and says so first (the service
    // logs it: nothing else is logged until it serves, which may take a while).
    const told: number[] = [];
    const db = openDatabase(file, { onUpgrade: (n) => told.push(n) });
    assert.equal(told.length, 1);
    assert.ok(told[0]! > 0, `${told[0]} migrations`);
    s = await serveDatabase(db, file, dir, { token: api.token, otherToken: otherApi.token });
    s.watch.noteSecret(secret);
  });

  after(() => s.close());

  it("keeps every integration as it was, its sealed secret still opening with the runner's key", async () => {
    assert.deepEqual((await call(s, LIST, {}, s.otherToken)).body.integrations ?? [], [], "the other organization sees none");
    const page = await call(s, LIST, { filter: { runnerIds: [runnerId] } });
    assert.equal(page.status, 200, JSON.stringify(page.body));
    // In host order: ado.example.com, github.com, gitlab.example.com.
    assert.deepEqual(page.body.integrations.map((i: any) => i.id), [ids.patOnly, ids.oauth, ids.staleKey]);
    const oauth = (await call(s, GET, { id: ids.oauth })).body.integration;
    assert.equal(oauth.host, "github.com");
    assert.equal(oauth.oauth.clientId, "client-1");
    assert.equal(open(Buffer.from(oauth.oauth.encryptedClientSecret, "base64"), keys.publicKey, keys.secretKey), secret);
    const patOnly = (await call(s, GET, { id: ids.patOnly })).body.integration;
    assert.deepEqual([patOnly.scmId, patOnly.pat, patOnly.virtualDirectory, patOnly.oauth], ["azuredevops_server", true, "tfs", undefined]);
    const stale = (await call(s, GET, { id: ids.staleKey })).body.integration;
    assert.equal(stale.oauth.clientId, "client-2");
    assert.equal(stale.oauth.encryptedClientSecret ?? "", "", "a secret sealed to a replaced key is not handed out");
  });

  it("keeps the table's rules: one integration per runner and host, gone with its runner", async () => {
    const again = await call(s, CREATE, { runnerId, scmId: "github", host: "github.com", pat: true });
    assert.equal(again.body.code, "already_exists", JSON.stringify(again.body));
    const sqlite = s.db.$client;
    assert.match(sqlite.prepare("SELECT sql FROM sqlite_master WHERE name = 'scm_integrations'").pluck().get() as string, /`key` integer PRIMARY KEY NOT NULL/);
    assert.deepEqual(sqlite.pragma("foreign_key_check"), []);
    await s.db.write(() => sqlite.prepare("DELETE FROM runners WHERE id = ?").run(runnerId));
    assert.equal(sqlite.prepare("SELECT count(*) FROM scm_integrations").pluck().get(), 0);
  });
});

describe("upgrading a database whose integrations were keyed by their id's text (0004 to 0006)", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-upgrade-keyed-"));
  const file = join(dir, "old.db");
  const api = newToken("api");
  const orgId = newId(Date.now());
  const runnerId = newId(Date.now());
  const at = Date.now() - 10_000;
  // Three ids whose keys are one (the same millisecond, and the same 14 bits after it), in
  // id order; then ids of their own milliseconds, one asked for in upper case, and one of
  // another version, whose leading digits are not a time.
  const shared = newId(at).slice(0, 20);
  const sharing = ["000", "3a1", "fff"].map((tail) => `${shared}${tail}-${"0".repeat(12)}`);
  const own = Array.from({ length: 200 }, (_, i) => newId(at + 1 + i));
  const upper = newId(at + 500);
  const v4 = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
  let s: TestServer;

  before(async () => {
    const old = new Database(file);
    old.pragma("journal_mode = WAL");
    migrate(drizzle(old), { migrationsFolder: migrationsUpTo(dir, "0006_runner_steps") });
    old.prepare("INSERT INTO organizations (id, name, created_at) VALUES (?, 'acme', ?)").run(orgId, at);
    old.prepare("INSERT INTO api_tokens (id, org_id, token_hash, created_at) VALUES (?, ?, ?, ?)").run(newId(at), orgId, api.hash, at);
    old
      .prepare(
        `INSERT INTO runners (id, org_id, name, kind, provider, creator_id, created_at, updated_at, access_token_hash, public_key, status_updated_at)
         VALUES (?, ?, 'old-runner', 2, 2, 'someone', ?, ?, ?, ?, ?)`,
      )
      .run(runnerId, orgId, at, at, newToken("runner").hash, newKeyPair().publicKey, at);
    const insert = old.prepare(
      `INSERT INTO scm_integrations (id, org_id, runner_id, scm_id, host, pat, created_at, updated_at) VALUES (?, ?, ?, 'github', ?, 1, ?, ?)`,
    );
    for (const [i, id] of [...sharing, ...own, upper, v4].entries()) insert.run(id, orgId, runnerId, `h${i}.example.com`, at, at);
    assert.match(old.prepare("SELECT sql FROM sqlite_master WHERE name = 'scm_integrations'").pluck().get() as string, /WITHOUT ROWID$/);
    old.close();
    s = await serveDatabase(openDatabase(file), file, dir, { token: api.token, otherToken: newToken("api").token });
  });

  after(() => s.close());

  it("gives each row the key its id makes, as the service works it out; of ids sharing one, the first has it and the others one above 2^62", () => {
    const sqlite = s.db.$client;
    const hasOwnKey = sqlite.prepare("SELECT count(*) FROM scm_integrations WHERE key = CAST(? AS INTEGER) * 16384 + CAST(? AS INTEGER) AND id = ?").pluck();
    for (const id of [...own, upper, v4, sharing[0]!]) assert.equal(hasOwnKey.get(...keyOf(id), id), 1, id);
    const spare = sqlite.prepare("SELECT count(*) FROM scm_integrations WHERE id = ? AND key > 4611686018427387903").pluck();
    for (const id of sharing.slice(1)) assert.equal(spare.get(id), 1, id);
    // Nothing lost, nothing doubled, and the table's rules and indexes as a new database has them.
    assert.equal(sqlite.prepare("SELECT count(DISTINCT id) FROM scm_integrations").pluck().get(), sharing.length + own.length + 2);
    assert.deepEqual(sqlite.pragma("integrity_check"), [{ integrity_check: "ok" }]);
    const schema = (name: string) => sqlite.prepare("SELECT sql FROM sqlite_master WHERE name = ?").pluck().get(name);
    const fresh = openDatabase(join(dir, "fresh.db"));
    try {
      for (const name of ["scm_integrations", "scm_integrations_id_idx", "scm_integrations_org_idx", "scm_integrations_runner_host_idx", "scm_integrations_runner_host_unique_insert", "scm_integrations_runner_host_unique_update"]) {
        assert.equal(schema(name), fresh.$client.prepare("SELECT sql FROM sqlite_master WHERE name = ?").pluck().get(name), name);
      }
    } finally {
      fresh.$client.close();
    }
  });

  it("finds every integration by its id, by its key or through the id index, in either case of its digits", async () => {
    for (const id of [...sharing, ...own.slice(0, 20), upper, v4]) {
      const got = await call(s, GET, { id: id === upper ? id.toUpperCase() : id });
      assert.equal(got.status, 200, `${id}: ${JSON.stringify(got.body)}`);
      assert.equal(got.body.integration.id, id);
    }
    assert.equal((await call(s, GET, { id: newId(at) })).body.code, "not_found");
  });

  it("a new integration whose id's key another row has is created and found all the same", async () => {
    const before = s.db.$client.prepare("SELECT count(*) FROM scm_integrations").pluck().get() as number;
    const made = await call(s, CREATE, { runnerId, scmId: "github", host: "new.example.com", pat: true });
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const id = made.body.id as string;
    // Its key is its own: the row keyed by it is this one.
    assert.equal(s.db.$client.prepare("SELECT id FROM scm_integrations WHERE key = CAST(? AS INTEGER) * 16384 + CAST(? AS INTEGER)").pluck().get(...keyOf(id)), id);
    // Another row takes the same key, as an id of the same millisecond may: written as a create
    // writes, it gives way, and each is found by its own id.
    const twin = `${id.slice(0, 24)}${id.slice(24) === "0".repeat(12) ? "1".repeat(12) : "0".repeat(12)}`;
    await s.db.write(() =>
      insertScmIntegration(s.db, { id: twin, orgId, runnerId, scmId: "github", host: "twin.example.com", pat: true, oauthClientId: null, oauthEncryptedSecret: null, oauthSealedTo: null, issuerUrl: null, virtualDirectory: null, createdAt: at, updatedAt: at }),
    );
    assert.ok((s.db.$client.prepare("SELECT key > 4611686018427387903 FROM scm_integrations WHERE id = ?").pluck().get(twin) as number) === 1, "the twin gave way");
    for (const [which, host] of [[id, "new.example.com"], [twin, "twin.example.com"]] as const) {
      const got = await call(s, GET, { id: which });
      assert.equal(got.body.integration?.host, host, JSON.stringify(got.body));
    }
    assert.equal(s.db.$client.prepare("SELECT count(*) FROM scm_integrations").pluck().get(), before + 2);
  });
});

describe("migrating a database another process migrates too", () => {
  it("a start that waited for the other's migrations applies none of them twice", async () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-migrate-race-"));
    const file = join(dir, "old.db");
    const old = new Database(file);
    old.pragma("journal_mode = WAL"); // as every database this service made
    migrate(drizzle(old), { migrationsFolder: migrationsUpTo(dir, BEFORE_REBUILD) });
    old.close();
    // The other process applies the rest as a release does, and holds its transaction open a
    // moment: this start finds them pending, then waits for the write lock.
    const other = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import Database from "better-sqlite3";
         import { readMigrationFiles } from "drizzle-orm/migrator";
         const db = new Database(${JSON.stringify(file)});
         db.exec("BEGIN IMMEDIATE");
         const last = db.prepare("SELECT max(created_at) FROM __drizzle_migrations").pluck().get();
         for (const m of readMigrationFiles({ migrationsFolder: "drizzle" })) {
           if (m.folderMillis <= last) continue;
           for (const statement of m.sql) db.exec(statement);
           db.prepare('INSERT INTO "__drizzle_migrations" ("hash", "created_at") VALUES (?, ?)').run(m.hash, m.folderMillis);
         }
         console.log("holding");
         setTimeout(() => { db.exec("COMMIT"); db.close(); }, 500);`,
      ],
      { cwd: join(import.meta.dirname, ".."), stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise<number | null>((resolve) => other.once("exit", resolve));
    await new Promise<void>((resolve) => other.stdout.once("data", () => resolve()));
    const db = openDatabase(file);
    try {
      assert.equal(await exited, 0);
      const applied = db.$client.prepare("SELECT created_at FROM __drizzle_migrations").pluck().all() as number[];
      assert.equal(new Set(applied).size, applied.length, `a migration recorded twice: ${applied.join(", ")}`);
      const journal = JSON.parse(readFileSync(join(import.meta.dirname, "..", "drizzle", "meta", "_journal.json"), "utf8")) as { entries: unknown[] };
      assert.equal(applied.length, journal.entries.length);
    } finally {
      db.$client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a SQLite database of something else is refused and left as it was; an empty one is made one of this service", () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-migrate-foreign-"));
    const running: Database.Database[] = [];
    try {
      const refusedAsIs = (file: string, says: string) => {
        const before = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]));
        assert.throws(
          () => openDatabase(file),
          (err) => err instanceof ForeignDatabaseError && describeStartupError(err, { databaseFile: file }) === `DATABASE_URL: ${file} is not a database of this service: ${says}; set DATABASE_URL to this service's database, or to a new file`,
          file,
        );
        const after = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]));
        assert.deepEqual(Object.keys(after).sort(), Object.keys(before).sort(), `${file}: no file made or removed`);
        // (The -shm is SQLite's index of the WAL, which any reader, read-only too, writes to.)
        for (const f of Object.keys(before)) if (!f.endsWith("-shm")) assert.ok(after[f]!.equals(before[f]!), `${file}: ${f} as it was`);
      };
      const make = (name: string, sql: string, keepWal = false) => {
        const file = join(dir, name);
        const other = new Database(file);
        other.exec(sql);
        // Killed before closing: its WAL stays beside the file, not yet copied in.
        if (keepWal) {
          other.pragma("wal_autocheckpoint = 0");
          other.exec("INSERT INTO a VALUES (2)");
          running.push(other); // left open, like a program that still runs
          return file;
        }
        other.close();
        return file;
      };
      refusedAsIs(make("tables.db", "CREATE TABLE a (x); CREATE TABLE b (x); CREATE VIEW c AS SELECT 1; CREATE TABLE d (x); INSERT INTO a VALUES (1)"), "it holds tables of something else (a, b, c, ...) and none of this service's");
      // Another program that uses drizzle has the same table of migrations, with its own in it.
      refusedAsIs(make("drizzle-app.db", `CREATE TABLE "__drizzle_migrations" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric); INSERT INTO "__drizzle_migrations" (hash, created_at) VALUES ('theirs', 1735689600000); CREATE TABLE organizations (x)`), "it holds tables of something else (__drizzle_migrations, organizations) and none of this service's");
      refusedAsIs(make("newer-app.db", `CREATE TABLE "__drizzle_migrations" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric); INSERT INTO "__drizzle_migrations" (hash, created_at) VALUES ('theirs', 4102444800000); CREATE TABLE users (x)`), "it holds tables of something else (__drizzle_migrations, users) and none of this service's");
      refusedAsIs(make("marked.db", "PRAGMA application_id = 1234"), "it is marked as another program's (application_id or user_version)");
      refusedAsIs(make("versioned.db", "PRAGMA user_version = 7"), "it is marked as another program's (application_id or user_version)");
      // In WAL mode, with commits still in its WAL: not copied into the file by this service.
      const wal = make("wal.db", "PRAGMA journal_mode = WAL; CREATE TABLE a (x); INSERT INTO a VALUES (1)", true);
      refusedAsIs(wal, "it holds tables of something else (a) and none of this service's");

      // Empty, or only what SQLite or an older release of this service left: made one of this service.
      writeFileSync(join(dir, "touched.db"), "");
      make("analyzed.db", "CREATE TABLE t (x); ANALYZE; DROP TABLE t");
      // An older release made the table of migrations before its first migration's
      // transaction: stopped during that, it left the table empty.
      make("interrupted.db", `CREATE TABLE "__drizzle_migrations" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)`);
      for (const name of ["touched.db", "analyzed.db", "interrupted.db"]) {
        openDatabase(join(dir, name)).$client.close();
        const made = new Database(join(dir, name), { readonly: true });
        assert.ok(made.prepare("SELECT 1 FROM sqlite_master WHERE name = 'scm_integrations'").get(), `${name} migrated`);
        made.close();
        // And opened again, it is this service's.
        openDatabase(join(dir, name)).$client.close();
      }
    } finally {
      for (const other of running) other.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("committed migrations never change: each is pinned by its time and hash", () => {
    // A database records each migration's hash, and a release refuses one whose record it
    // does not know. Add a new migration's pair here; never edit one that is here.
    assert.deepEqual(readMigrationFiles({ migrationsFolder: join(import.meta.dirname, "..", "drizzle") }).map((m) => [m.folderMillis, m.hash]), [
      [1795589254981, "68d2b0093c0076cf0f8cd88b31d3364db65136c5bc0f74b2ff070632245f2fcd"],
      [1795599113503, "f7b880550873fe40a099c54da3f655164853884d08827d11c2054fc3087f1850"],
      [1795607096675, "320b9905306335ef4db976d416026e6c3af19ee87b434ead2f17a6d7f2153a5d"],
      [1796224048765, "74644bcd9a70d6a30650fb3bf2a0f1f97e141c7de0f000b206504edcdfea8058"],
      [1796224761422, "5e04771fb8b1888c96987b9bbb1261bde8b95f05b6ac9e9586f3da01bc34d064"],
      [1796450456597, "0ec95d95e69ce932bd9928e9cd7fceed99c7a5abda9635eac785a85968a3327a"],
      [1796555031906, "48e86c1637be831f00e35a689eaf1d67033fe6f8f8f39ad376308d8289483456"],
      [1796593672348, "58bbe70c89c2904e3ac08e5e2f9b57bdf60f917638e9d38cba8ac605a33d1b35"],
    ]);
  });

  it("a database that records a migration this release does not have is refused at start, unchanged; an earlier form known to be sound is taken", () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-migrate-other-"));
    try {
      const file = join(dir, "other-build.db");
      openDatabase(file).$client.close();
      const records = (run: (db: Database.Database) => void) => {
        const db = new Database(file);
        run(db);
        db.close();
      };
      // 0003 as it first shipped: taken, and nothing is applied again.
      records((db) => db.prepare('UPDATE "__drizzle_migrations" SET hash = ? WHERE created_at = 1796224048765').run("1e22fc06ea27f9bc59748b18974cbed036eda6a167cc9009278a6afd570c13d2"));
      openDatabase(file).$client.close();
      // 0006 as first committed, with a time of its own: taken, and the current 0006 applied on top.
      const firstForm = join(dir, "first-0006.db");
      const early = new Database(firstForm);
      migrate(drizzle(early), { migrationsFolder: migrationsUpTo(dir, "0005_runner_host_index") });
      early.exec("ALTER TABLE `runners` ADD `stale_secrets` integer DEFAULT false NOT NULL");
      early.prepare('INSERT INTO "__drizzle_migrations" ("hash", "created_at") VALUES (?, ?)').run("852fd84f1c80c214399224897c4cd976098a8d7489f8fb492f6e3c213d5fbd00", 1796551607190);
      early.close();
      const upgraded = openDatabase(firstForm);
      assert.deepEqual(
        (upgraded.$client.prepare("SELECT name FROM pragma_table_info('runners') WHERE name IN ('stale_secrets', 'secrets_walk', 'deleting') ORDER BY name").pluck().all()),
        ["deleting", "secrets_walk", "stale_secrets"],
      );
      upgraded.$client.close();
      // Another build's 0006 (same time, other text), and one of a time no release has.
      const refusals: [(db: Database.Database) => void, string][] = [
        [(db) => db.prepare('UPDATE "__drizzle_migrations" SET hash = ? WHERE created_at = 1796555031906').run("another-form"), "2026-12-06T"],
        [(db) => db.prepare('INSERT INTO "__drizzle_migrations" ("hash", "created_at") VALUES (?, ?)').run("between", 1796500000000), "2026-12-05T"],
      ];
      for (const [change, day] of refusals) {
        const copy = join(dir, `copy-${day}.db`);
        cpSync(file, copy);
        const db = new Database(copy);
        change(db);
        db.close();
        const before = readFileSync(copy);
        let refused: unknown;
        try {
          openDatabase(copy).$client.close();
        } catch (err) {
          refused = err;
        }
        assert.ok(refused instanceof UnknownMigrationError, String(refused));
        assert.ok(readFileSync(copy).equals(before), "the refused database is as it was");
        assert.match(
          describeStartupError(refused, { databaseFile: copy }) ?? "",
          new RegExp(`^DATABASE_URL: ${copy} cannot be served by this release: the database has a migration of ${day}[^ ]* that differs from this release's migrations \\(it was migrated by another build, one made between releases\\); run the build that migrated it`),
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a database a newer release migrated is refused at start, naming the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "scm-migrate-newer-"));
    const file = join(dir, "newer.db");
    openDatabase(file).$client.close();
    const newer = new Database(file);
    newer.prepare('INSERT INTO "__drizzle_migrations" ("hash", "created_at") VALUES (?, ?)').run("from-a-later-release", 4102444800000);
    // Kept out of WAL mode, as the newer release might: the refusal must not switch it back.
    newer.pragma("journal_mode = DELETE");
    newer.close();
    const before = readFileSync(file);
    let refused: unknown;
    let after: { bytes: Buffer; files: string[] };
    try {
      openDatabase(file).$client.close();
    } catch (err) {
      refused = err;
    } finally {
      after = { bytes: readFileSync(file), files: readdirSync(dir) };
      rmSync(dir, { recursive: true, force: true });
    }
    assert.ok(refused instanceof NewerDatabaseError, String(refused));
    assert.ok(after.bytes.equals(before), "the refused database is as it was");
    assert.deepEqual(after.files, ["newer.db"], "no -wal or -shm left beside it");
    assert.match(describeStartupError(refused, { databaseFile: file }) ?? "", new RegExp(`^DATABASE_URL: ${file} was upgraded by a newer release of this service \\(the database has a migration of 2100-01-01T00:00:00.000Z, newer than any this release has`));
  });
});

// "upgrading the database" is said for an upgrade only, not for a new database.
it("a new database is migrated without the upgrade notice", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-migrations-"));
  try {
    const told: number[] = [];
    const db = openDatabase(join(dir, "new.db"), { onUpgrade: (n) => told.push(n) });
    db.$client.close();
    assert.deepEqual(told, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
