import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Db } from "../src/store/database.js";
import { isUniqueViolation } from "../src/store/errors.js";
import { runnerStepSql } from "../src/store/runners.js";
import { getQuery, keyOf, listOrgPage, listRunnerPage, listRunnerPageInOrg, orgPageQuery, orgPageSql, pageRereads, runnerPageQuery, runnerPageSql } from "../src/store/scm-integrations.js";
import { call, createRunner, startServer, type TestServer } from "./harness.js";

const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";
// Every column but the key, which SQLite then assigns (above every other).
const COLUMNS = "id, org_id, runner_id, scm_id, host, pat, oauth_client_id, oauth_encrypted_secret, oauth_sealed_to, issuer_url, virtual_directory, created_at, updated_at";

/** SQLite's plan for a query, one step per line, over the migrated database. */
function plan(db: Db, q: { toSQL(): { sql: string; params: unknown[] } }, params?: unknown[]): string[] {
  const { sql, params: own } = q.toSQL();
  return (db.$client.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...(params ?? own)) as { detail: string }[]).map((r) => r.detail);
}

// The reads' costs stay independent of the table's size, and of the order its rows came in,
// only while these plans hold: a changed schema or query that loses them fails here.
describe("query plans", () => {
  let s: TestServer;
  let runnerId: string;
  const ids: string[] = [];

  before(async () => {
    s = await startServer();
    runnerId = (await createRunner(s)).runnerId;
    for (let i = 0; i < 30; i++) ids.push((await call(s, CREATE, { runnerId, scmId: "github", host: `h${i}.example.com`, pat: true })).body.id);
  });
  after(() => s.close());

  it("a Get is one lookup of the integration by the key made from its id (and one of its runner); failing that, one by its id", () => {
    const [time, low] = keyOf(ids[3]!);
    const steps = plan(s.db, getQuery(s.db, "key"), [time, low, ids[3], "any-org"]);
    assert.deepEqual(steps, ["SEARCH scm_integrations USING INTEGER PRIMARY KEY (rowid=?)", "SEARCH runners USING INDEX sqlite_autoindex_runners_1 (id=?)"]);
    const byId = plan(s.db, getQuery(s.db, "id"), [ids[3], "any-org"]);
    // The id index, or the organization's (org_id, id): either finds the one entry at once.
    assert.match(byId[0]!, /^SEARCH scm_integrations USING INDEX scm_integrations_(id|org)_idx \((org_id=\? AND )?id=\?\)$/, byId.join(" | "));
    assert.equal(byId.length, 2, byId.join(" | "));
  });

  it("a runner's page comes from one index in host order: no table lookups, no sort step", () => {
    // The statements prepared once for it, with and without the organization's check on the
    // runner: as they run, the page written as JSON from a subquery, and the plain reads a page
    // falls back to.
    for (const form of ["json", "plain"] as const) {
      for (const sql of runnerPageSql(s.db, form)) {
        const params = Array.from(sql.match(/\?/g)!, () => runnerId);
        const steps = (s.db.$client.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map((r) => r.detail);
        assert.deepEqual(steps, [
          ...(form === "json" ? ["CO-ROUTINE page"] : []),
          "SEARCH runners USING INDEX sqlite_autoindex_runners_1 (id=?)",
          "SEARCH scm_integrations USING COVERING INDEX scm_integrations_runner_host_idx (runner_id=?" + (sql.includes(" > ?") ? " AND host>?)" : ")"),
          // The page's own rows, at most its limit, as the subquery yields them.
          ...(form === "json" ? ["SCAN page"] : []),
        ]);
      }
    }
    // Narrowed to some ids (a runner's own list), built per call: each id by key, and the few
    // rows found sorted by host, never a walk of the runner's index (a million entries for a
    // runner that has them).
    for (const afterHost of [null, "h10.example.com"]) {
      const steps = plan(s.db, runnerPageQuery(s.db, runnerId, afterHost, 26, [ids[3]!, ids[12]!]));
      assert.equal(steps[0], "SEARCH scm_integrations USING INDEX scm_integrations_id_idx (id=?)", steps.join(" | "));
      assert.ok(!steps.some((d) => /scm_integrations_runner_host_idx|SCAN/.test(d)), steps.join(" | "));
    }
  });

  it("the organization's page comes from the (org_id, id) index in id order, without a sort step", () => {
    for (const after of [null, ids[10]!]) {
      const steps = plan(s.db, orgPageQuery(s.db, after !== null), after === null ? ["any-org", 26] : ["any-org", after, 26]);
      assert.ok(steps.some((d) => d.includes("scm_integrations USING INDEX scm_integrations_org_idx (org_id=?" + (after ? " AND id>?)" : ")"))), steps.join(" | "));
      assert.ok(!steps.some((d) => /TEMP B-TREE|SCAN/.test(d)), steps.join(" | "));
    }
    // As it runs: the same, in a subquery whose rows (at most the limit) are written as JSON.
    for (const [i, sql] of orgPageSql(s.db).entries()) {
      const steps = (s.db.$client.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...(i === 0 ? ["any-org", 26] : ["any-org", ids[10], 26])) as { detail: string }[]).map((r) => r.detail);
      assert.equal(steps[0], "CO-ROUTINE page", steps.join(" | "));
      assert.equal(steps.at(-1), "SCAN page", steps.join(" | "));
      assert.ok(steps.some((d) => d.includes("scm_integrations USING INDEX scm_integrations_org_idx (org_id=?" + (i === 1 ? " AND id>?)" : ")"))), steps.join(" | "));
      assert.ok(!steps.some((d) => /TEMP B-TREE/.test(d) || (/SCAN/.test(d) && d !== "SCAN page")), steps.join(" | "));
    }
  });

  it("a create checks its runner and host in the same index, by a trigger, not by a scan", () => {
    const steps = (
      s.db.$client.prepare("EXPLAIN QUERY PLAN SELECT 1 FROM scm_integrations WHERE runner_id = ? AND host = ?").all(runnerId, "h1.example.com") as { detail: string }[]
    ).map((r) => r.detail);
    assert.deepEqual(steps, ["SEARCH scm_integrations USING COVERING INDEX scm_integrations_runner_host_idx (runner_id=? AND host=?)"]);
    const triggers = s.db.$client.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'scm_integrations'").all() as { name: string; sql: string }[];
    assert.deepEqual(triggers.map((t) => t.name).sort(), ["scm_integrations_runner_host_unique_insert", "scm_integrations_runner_host_unique_update"]);
    for (const t of triggers) assert.match(t.sql, /WHERE `runner_id` = NEW.`runner_id` AND `host` = NEW.`host`/);
  });

  it("a runner's integrations are taken apart in host order from the covering index, each row reached by the table's key", () => {
    for (const [name, sql] of Object.entries(runnerStepSql)) {
      const params = Array.from(sql.match(/\?/g)!, () => runnerId);
      const steps = (s.db.$client.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map((r) => r.detail);
      const shown = `${name}: ${steps.join(" | ")}`;
      assert.ok(steps.includes("SEARCH scm_integrations USING INTEGER PRIMARY KEY (rowid=?)"), shown);
      assert.ok(steps.some((d) => d.startsWith("SEARCH scm_integrations USING COVERING INDEX scm_integrations_runner_host_idx (runner_id=?")), shown);
      assert.ok(!steps.some((d) => /TEMP B-TREE|SCAN scm_integrations|scm_integrations_id_idx/.test(d)), shown);
    }
  });

  it("the triggers refuse a second (runner_id, host) from any writer, by INSERT or UPDATE, as a unique index would", () => {
    const sqlite = s.db.$client;
    const count = () => sqlite.prepare("SELECT count(*) FROM scm_integrations WHERE runner_id = ?").pluck().get(runnerId);
    const before = count();
    const refused = (work: () => unknown) => {
      assert.throws(work, (err: unknown) => {
        assert.ok(isUniqueViolation(err), String(err));
        assert.equal((err as Error).message, "UNIQUE constraint failed: scm_integrations.runner_id, scm_integrations.host");
        return true;
      });
    };
    // A copy of h1's row under a new id: the same runner and host.
    refused(() =>
      sqlite
        .prepare(`INSERT INTO scm_integrations (${COLUMNS}) SELECT ?, org_id, runner_id, scm_id, host, pat, oauth_client_id, oauth_encrypted_secret, oauth_sealed_to, issuer_url, virtual_directory, created_at, updated_at FROM scm_integrations WHERE id = ?`)
        .run("0190a0a0-0000-7000-8000-00000000beef", ids[1]),
    );
    refused(() => sqlite.prepare("UPDATE scm_integrations SET host = 'h2.example.com' WHERE id = ?").run(ids[1]));
    assert.equal(count(), before, "nothing written");
    // Another host, or the same row written again, is no second pair.
    sqlite.prepare("UPDATE scm_integrations SET host = 'h1-moved.example.com' WHERE id = ?").run(ids[1]);
    sqlite.prepare("UPDATE scm_integrations SET host = 'h1.example.com' WHERE id = ?").run(ids[1]);
    sqlite.prepare("UPDATE scm_integrations SET host = host, runner_id = runner_id WHERE id = ?").run(ids[1]);
    assert.equal(count(), before);
  });

  // Given a bare `LIMIT ?`, SQLite plans with the bound value and compiles the statement
  // again each time that parameter is bound, so a statement prepared once is parsed anew on
  // every page (store/database.ts, rowLimit).
  it("a page's row limit is bound inside an expression, so its statement is planned once", () => {
    const built = [
      runnerPageQuery(s.db, runnerId, null, 26, [ids[1]!]),
      runnerPageQuery(s.db, runnerId, "h2.example.com", 26, [ids[1]!]),
      orgPageQuery(s.db, false),
      orgPageQuery(s.db, true),
    ].map((q) => q.toSQL().sql);
    // The statements the common page is read with, and the ones built per call for rarer filters.
    for (const sql of [...runnerPageSql(s.db), ...runnerPageSql(s.db, "plain"), ...orgPageSql(s.db), ...built]) {
      assert.match(sql, / limit \? \+ 0(?:$|\) select json_group_array)/, sql);
      assert.doesNotMatch(sql, /limit \?(?! \+ 0)/, sql);
    }
    // The expression still limits: 7 rows asked, 7 rows had, in host order (and in id order
    // for the organization's page).
    const orgId = s.db.$client.prepare("SELECT org_id FROM runners WHERE id = ?").pluck().get(runnerId) as string;
    const hosts = ids.map((_, i) => `h${i}.example.com`).sort();
    const pages = [
      (afterHost: string | null, limit: number) => listRunnerPage(s.db, runnerId, afterHost, limit),
      (afterHost: string | null, limit: number) => listRunnerPageInOrg(s.db, orgId, runnerId, afterHost, limit),
    ];
    for (const page of pages) {
      assert.deepEqual(page(null, 7).map((r) => r.host), hosts.slice(0, 7));
      assert.deepEqual(page("h20.example.com", 3).map((r) => r.host), hosts.filter((h) => h > "h20.example.com").slice(0, 3));
    }
    assert.deepEqual(listOrgPage(s.db, orgId, null, 7).map((r) => r.id), [...ids].sort().slice(0, 7));
    assert.deepEqual(listOrgPage(s.db, orgId, ids[20]!, 3).map((r) => r.id), [...ids].sort().filter((id) => id > ids[20]!).slice(0, 3));
  });
  // Pages are read as JSON and their order checked in JavaScript, whose string order is
  // SQLite's for the ASCII that ids and hosts are. Keys outside it (put in by hand here: the
  // API makes ids itself and refuses such hosts) can be ordered otherwise by the two, and a
  // page whose keys do not rise is read again the plain way: whole, in SQLite's order, as a
  // page always is. Each of the six page statements is read both ways here.
  it("a page whose keys JavaScript orders otherwise than SQLite is read again the plain way, whole and in SQLite's order", () => {
    const sqlite = s.db.$client;
    const orgId = sqlite.prepare("SELECT org_id FROM runners WHERE id = ?").pluck().get(runnerId) as string;
    const copy = sqlite.prepare(
      `INSERT INTO scm_integrations (${COLUMNS}) SELECT ?, org_id, runner_id, scm_id, ?, pat, oauth_client_id, oauth_encrypted_secret, oauth_sealed_to, issuer_url, virtual_directory, created_at, updated_at FROM scm_integrations WHERE id = ?`,
    );
    // U+FF61 is EF BD A1 in UTF-8 and U+1F600 F0 9F 98 80: SQLite puts the first first, while
    // JavaScript compares U+1F600's first UTF-16 unit (D83D) and puts it first. The ids begin
    // with "z", after every UUID.
    const oddHosts = ["h\u{1F600}.example.com", "h\uFF61.example.com"];
    const oddIds = ["z\u{1F600}", "z\uFF61"];
    assert.ok(oddHosts[0]! < oddHosts[1]! && oddIds[0]! < oddIds[1]!, "JavaScript's order");
    copy.run(oddIds[0], oddHosts[0], ids[0]);
    copy.run(oddIds[1], oddHosts[1], ids[0]);
    try {
      const hosts = sqlite.prepare("SELECT host FROM scm_integrations WHERE runner_id = ? ORDER BY host").pluck().all(runnerId) as string[];
      const orgIds = sqlite.prepare("SELECT id FROM scm_integrations WHERE org_id = ? ORDER BY id").pluck().all(orgId) as string[];
      assert.deepEqual(hosts.slice(-2), [oddHosts[1], oddHosts[0]], "SQLite's order of the hosts");
      assert.deepEqual(orgIds.slice(-2), [oddIds[1], oddIds[0]], "SQLite's order of the ids");
      const afterHost = hosts.at(-4)!;
      const afterId = orgIds.at(-4)!;
      const reads: [string, () => string[], string[]][] = [
        ["runner, first page", () => listRunnerPage(s.db, runnerId, null, 100).map((r) => r.host), hosts],
        ["runner, after a host", () => listRunnerPage(s.db, runnerId, afterHost, 10).map((r) => r.host), hosts.slice(-3)],
        ["runner in its organization, first page", () => listRunnerPageInOrg(s.db, orgId, runnerId, null, 100).map((r) => r.host), hosts],
        ["runner in its organization, after a host", () => listRunnerPageInOrg(s.db, orgId, runnerId, afterHost, 10).map((r) => r.host), hosts.slice(-3)],
        ["organization, first page", () => listOrgPage(s.db, orgId, null, 100).map((r) => r.id), orgIds],
        ["organization, after an id", () => listOrgPage(s.db, orgId, afterId, 10).map((r) => r.id), orgIds.slice(-3)],
      ];
      for (const [name, read, expected] of reads) {
        const before = pageRereads.count;
        assert.deepEqual(read(), expected, name);
        assert.equal(pageRereads.count, before + 1, `${name}: read again the plain way`);
      }
      // Pages without such keys are not read twice.
      const before = pageRereads.count;
      assert.equal(listRunnerPage(s.db, runnerId, null, 5).length, 5);
      assert.equal(listOrgPage(s.db, orgId, null, 5).length, 5);
      assert.equal(pageRereads.count, before);
    } finally {
      sqlite.prepare("DELETE FROM scm_integrations WHERE id IN (?, ?)").run(oddIds[0], oddIds[1]);
    }
  });
});
