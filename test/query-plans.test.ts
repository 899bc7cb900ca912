import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Db } from "../src/store/database.js";
import { getQuery, listQuery, listRunnerPageInOrg, listScmIntegrations, runnerPageSql } from "../src/store/scm-integrations.js";
import { call, createRunner, startServer, type TestServer } from "./harness.js";

const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";

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

  it("a Get is one primary-key lookup of the integration (and one of its runner)", () => {
    const steps = plan(s.db, getQuery(s.db), [ids[3], "any-org"]);
    assert.equal(steps[0], "SEARCH scm_integrations USING PRIMARY KEY (id=?)", steps.join(" | "));
    assert.equal(steps.length, 2, steps.join(" | "));
  });

  it("a runner's page comes from one index in id order: no table lookups, no sort step", () => {
    for (const after of [null, ids[10]!]) {
      const steps = plan(s.db, listQuery(s.db, { runnerIds: [runnerId], after, limit: 26 }));
      assert.ok(steps.some((d) => d.includes("USING COVERING INDEX scm_integrations_runner_page_idx")), steps.join(" | "));
      assert.ok(!steps.some((d) => /TEMP B-TREE|SCAN/.test(d)), steps.join(" | "));
    }
    // The statements prepared once for it, with and without the organization's check on the runner.
    for (const sql of runnerPageSql(s.db)) {
      const params = Array.from(sql.match(/\?/g)!, () => runnerId);
      const steps = (s.db.$client.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map((r) => r.detail);
      assert.equal(steps[0], "SEARCH runners USING INDEX sqlite_autoindex_runners_1 (id=?)", steps.join(" | "));
      assert.equal(steps[1], "SEARCH scm_integrations USING COVERING INDEX scm_integrations_runner_page_idx (runner_id=?" + (sql.includes(" > ?") ? " AND id>?)" : ")"), steps.join(" | "));
      assert.equal(steps.length, 2, steps.join(" | "));
    }
  });

  // Given a bare `LIMIT ?`, SQLite plans with the bound value and compiles the statement
  // again each time that parameter is bound, so a statement prepared once is parsed anew on
  // every page (store/database.ts, rowLimit).
  it("a page's row limit is bound inside an expression, so its statement is planned once", () => {
    const built = [null, ids[10]!].map((after) => listQuery(s.db, { runnerIds: [runnerId], after, limit: 26 }).toSQL().sql);
    // The statements the common page is read with, and the ones built per call for rarer filters.
    for (const sql of [...runnerPageSql(s.db), ...built]) {
      assert.match(sql, / limit \? \+ 0$/, sql);
      assert.doesNotMatch(sql, /limit \?(?! \+ 0)/, sql);
    }
    // The expression still limits: 7 rows asked, 7 rows had, in id order.
    const orgId = s.db.$client.prepare("SELECT org_id FROM runners WHERE id = ?").pluck().get(runnerId) as string;
    const pages = [
      (after: string | null, limit: number) => listScmIntegrations(s.db, { runnerId, after, limit }),
      (after: string | null, limit: number) => listRunnerPageInOrg(s.db, orgId, runnerId, after, limit),
    ];
    for (const page of pages) {
      assert.deepEqual(page(null, 7).map((r) => r.id), [...ids].sort().slice(0, 7));
      assert.deepEqual(page(ids[20]!, 3).map((r) => r.id), [...ids].sort().filter((id) => id > ids[20]!).slice(0, 3));
    }
  });
});
