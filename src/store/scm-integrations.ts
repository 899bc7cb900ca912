import type Database from "better-sqlite3";
import { and, asc, eq, getTableName, gt, inArray, sql } from "drizzle-orm";
import { DomainError } from "../domain/errors.js";
import { prepared, rawStatement, rowLimit, type Db } from "./database.js";
import { isUniqueViolation } from "./errors.js";
import { runners, scmIntegrations, type NewScmIntegrationRow, type ScmIntegrationRow } from "./schema.js";

/**
 * The integer key of the row with this id (migration 0007), in two parts that SQL joins
 * (KEY_SQL), since a number in JavaScript holds 53 bits exactly and the key has 62: the 48
 * bits of time of a UUIDv7, then the 12 bits of rand_a and the 2 random bits after the
 * variant. Ids made later have larger keys, so creates append to the table. Ids of one
 * millisecond share their time and may share a key (one pair in 16,384); the second row
 * then takes a key above KEY_SPARE and is found through the id index instead. Text that is
 * not such an id still gives a pair (NaN, bound as NULL, where it is not hex at all): it finds
 * no row, or a row whose id the lookup's `id = ?` then refuses.
 */
export function keyOf(id: string): [number, number] {
  return [parseInt(id.slice(0, 8) + id.slice(9, 13), 16), (parseInt(id.slice(15, 18), 16) << 2) | (parseInt(id[19]!, 16) & 3)];
}

// CAST: better-sqlite3 binds every number as a double, and a double times 16384 would be
// one too, rounded to 53 bits.
const KEY_SQL = (time: string, low: string) => `(CAST(${time} AS INTEGER) * 16384 + CAST(${low} AS INTEGER))`;
/** 2^62 - 1: keys made from ids are below 2^62; keys given way to lie above. */
const KEY_SPARE = "4611686018427387903";

/** Inserts an integration; a second one for the same runner and host is already_exists. */
export function insertScmIntegration(db: Db, row: NewScmIntegrationRow): void {
  try {
    // Positional, in the order of insertColumns; a boolean as SQLite stores one.
    const values: unknown[] = insertColumns.map((c) => {
      const value = row[c];
      return typeof value === "boolean" ? Number(value) : (value ?? null);
    });
    values.push(...keyOf(row.id));
    statements(db).insert.run(values);
  } catch (err) {
    if (isUniqueViolation(err)) {
      throw new DomainError(
        "already_exists",
        `host: runner ${row.runnerId} already has an SCM integration for host ${row.host}`,
      );
    }
    throw err;
  }
}

/** The integration with this id in this organization. */
export function findScmIntegration(db: Db, orgId: string, id: string): ScmIntegrationRow | null {
  return statements(db).byId.get({ id, orgId }) ?? null;
}

/**
 * An integration as reads show it: only the columns the API returns, and the sealed
 * secret only while it is sealed to the runner's current key (a runner must never be
 * handed a ciphertext it cannot open). Both are decided in SQL, which spares copying
 * two blobs per row into JavaScript.
 */
export interface IntegrationView {
  id: string;
  runnerId: string;
  scmId: string;
  host: string;
  pat: boolean;
  oauthClientId: string | null;
  oauthEncryptedSecret: Buffer | null;
  issuerUrl: string | null;
  virtualDirectory: string | null;
}

const viewColumns = {
  id: scmIntegrations.id,
  runnerId: scmIntegrations.runnerId,
  scmId: scmIntegrations.scmId,
  host: scmIntegrations.host,
  pat: scmIntegrations.pat,
  oauthClientId: scmIntegrations.oauthClientId,
  // As hex text, which costs less to bring over than a blob: better-sqlite3 makes every blob
  // a Buffer with its own memory, where Buffer.from(hex) takes a slice of node's shared pool.
  oauthEncryptedSecret: sql<string>`hex(CASE WHEN ${scmIntegrations.oauthSealedTo} = ${runners.publicKey} THEN ${scmIntegrations.oauthEncryptedSecret} END)`,
  issuerUrl: scmIntegrations.issuerUrl,
  virtualDirectory: scmIntegrations.virtualDirectory,
};

const selectViews = (db: Db) =>
  db.select(viewColumns).from(scmIntegrations).innerJoin(runners, eq(runners.id, scmIntegrations.runnerId));

/** The integration with this id in this organization, as reads show it. */
export function findScmIntegrationView(db: Db, orgId: string, id: string): IntegrationView | null {
  const v = views(db);
  const [time, low] = keyOf(id);
  // By the key made from the id; failing that (a key given way, or no such row), by the id.
  const row = (v.byKey.get(time, low, id, orgId) ?? v.byId.get(id, orgId)) as ViewRow | undefined;
  return row ? toView(row) : null;
}

/** A row of viewColumns as SQLite returns it, in that order. */
type ViewRow = [string, string, string, string, number, string | null, string, string | null, string | null];

function toView(r: ViewRow): IntegrationView {
  return {
    id: r[0],
    runnerId: r[1],
    scmId: r[2],
    host: r[3],
    pat: r[4] !== 0,
    oauthClientId: r[5],
    // hex() of NULL is "" (a sealed secret is never empty).
    oauthEncryptedSecret: r[6] === "" ? null : Buffer.from(r[6], "hex"),
    issuerUrl: r[7],
    virtualDirectory: r[8],
  };
}

/**
 * The read views as raw better-sqlite3 statements. The SQL comes from drizzle, but rows
 * are mapped here: drizzle's generic per-column mapping cost as much as SQLite reading a
 * page of 25 rows. Parameters are positional, in the order the SQL names them.
 */
const views = prepared((db) => {
  const raw = (query: { toSQL(): { sql: string } }) => rawStatement(db, query).raw();
  // A runner's page; inOrg adds the organization's check on the runner row, which SQLite
  // reads once per page anyway (the outer loop of the join), so it costs nothing.
  const byRunner = (withAfter: boolean, inOrg: boolean) =>
    new PageRead(
      db,
      selectViews(db)
        .where(
          and(
            eq(scmIntegrations.runnerId, sql.placeholder("runnerId")),
            // The runner named as well, so that SQLite reads it first, once, by its key;
            // by the organization alone it would look the runner up again for every row.
            inOrg ? and(eq(runners.id, sql.placeholder("runnerId")), eq(runners.orgId, sql.placeholder("orgId"))) : undefined,
            withAfter ? gt(scmIntegrations.host, sql.placeholder("afterHost")) : undefined,
          ),
        )
        .orderBy(asc(scmIntegrations.host))
        .limit(rowLimit(sql.placeholder("limit"))),
      HOST,
    );
  return {
    // (time, low, id, orgId)
    byKey: raw(getQuery(db, "key")),
    // (id, orgId)
    byId: raw(getQuery(db, "id")),
    // (runnerId, limit)
    firstPageOfRunner: byRunner(false, false),
    // (runnerId, afterHost, limit)
    pageOfRunner: byRunner(true, false),
    // (runnerId, runnerId, orgId, limit)
    firstPageOfRunnerInOrg: byRunner(false, true),
    // (runnerId, runnerId, orgId, afterHost, limit)
    pageOfRunnerInOrg: byRunner(true, true),
    // (orgId, limit)
    firstPageOfOrg: new PageRead(db, orgPageQuery(db, false), ID),
    // (orgId, afterId, limit)
    pageOfOrg: new PageRead(db, orgPageQuery(db, true), ID),
  };
});

/** Pages read again the plain way since the process started (see PageRead); tests watch it. */
export const pageRereads = { count: 0 };

// Where a ViewRow holds the keys pages are ordered by.
const ID = 0;
const HOST = 3;
/** Names for the columns of viewColumns, in that order, as the page's JSON reads them. */
const PAGE_COLUMNS = Object.keys(viewColumns).join(", ");

/**
 * A page of views read as one value: SQLite writes the page's rows as one JSON array of
 * arrays (json_array per row, json_group_array over them) and JSON.parse reads it back,
 * each column as the JSON of its value (text a string, pat a number, NULL null).
 * better-sqlite3 builds each row of a plain read as an array set element by element
 * through V8's API, which was a third of reading a page of 25 (in a loop on the 1M-row
 * file: 40 µs that way, 28 µs as JSON).
 *
 * The page query runs as a subquery that yields its rows in its own order, and the
 * aggregate takes them as they come. SQLite does not promise an aggregate that order
 * without an ORDER BY of its own, which would sort every page again (+6 µs in the same
 * loop), so the page is checked instead: its keys must rise strictly, as they do in the
 * index (ids and (runner, host) pairs are unique; ids and hosts are ASCII, where
 * JavaScript's order is SQLite's). A page that does not is read again the plain way
 * (counted in pageRereads).
 */
class PageRead {
  private readonly json: Database.Statement;
  private readonly plain: Database.Statement;

  constructor(
    db: Db,
    query: { toSQL(): { sql: string } },
    private readonly key: number,
  ) {
    const inner = query.toSQL().sql;
    this.plain = db.$client.prepare(inner).raw();
    this.json = db.$client.prepare(`with page(${PAGE_COLUMNS}) as (${inner}) select json_group_array(json_array(${PAGE_COLUMNS})) from page`).pluck();
  }

  /** The SQL the page is read with, or read again with. */
  sql(form: "json" | "plain"): string {
    return (form === "json" ? this.json : this.plain).source;
  }

  /** The page's rows, for the statement's parameters in order. */
  all(...params: unknown[]): ViewRow[] {
    const rows = JSON.parse(this.json.get(...params) as string) as ViewRow[];
    const k = this.key;
    for (let i = 1; i < rows.length; i++) {
      if (!(rows[i - 1]![k]! < rows[i]![k]!)) {
        pageRereads.count += 1;
        return this.plain.all(...params) as ViewRow[];
      }
    }
    return rows;
  }
}

/**
 * A page of one runner's integrations in host order, provided the runner is the
 * organization's: empty when it is not (or has no such page), so only an empty page needs
 * to ask which.
 */
export function listRunnerPageInOrg(db: Db, orgId: string, runnerId: string, afterHost: string | null, limit: number): IntegrationView[] {
  const v = views(db);
  const rows = afterHost === null ? v.firstPageOfRunnerInOrg.all(runnerId, runnerId, orgId, limit) : v.pageOfRunnerInOrg.all(runnerId, runnerId, orgId, afterHost, limit);
  return rows.map(toView);
}

/**
 * A page of one runner's integrations in host order, optionally only those with the given
 * ids; the caller has established whose runner it is. The (runner_id, host) index serves
 * filter and order, so no sort step is needed.
 */
export function listRunnerPage(db: Db, runnerId: string, afterHost: string | null, limit: number, ids: readonly string[] = []): IntegrationView[] {
  if (ids.length === 0) {
    const v = views(db);
    const rows = afterHost === null ? v.firstPageOfRunner.all(runnerId, limit) : v.pageOfRunner.all(runnerId, afterHost, limit);
    return rows.map(toView);
  }
  // Rarer, built per call; its rows are mapped as the prepared ones are.
  return runQuery(db, runnerPageQuery(db, runnerId, afterHost, limit, ids));
}

/**
 * A page over several distinct runners (already checked to be the caller's), by runner id and then
 * host: each runner's own page in turn, from the one the cursor is in, until the page is
 * full. One `runner_id IN (...)` query would read the runners before the cursor's too,
 * only to drop them.
 */
export function listRunnersPage(db: Db, runnerIds: readonly string[], after: { runnerId: string; host: string } | null, limit: number): IntegrationView[] {
  const out: IntegrationView[] = [];
  for (const runnerId of [...runnerIds].sort()) {
    if (after !== null && runnerId < after.runnerId) continue;
    const afterHost = after !== null && runnerId === after.runnerId ? after.host : null;
    out.push(...listRunnerPage(db, runnerId, afterHost, limit - out.length));
    if (out.length >= limit) break;
  }
  return out;
}

/** A page of the organization's integrations in id order, from the (org_id, id) index. */
export function listOrgPage(db: Db, orgId: string, afterId: string | null, limit: number): IntegrationView[] {
  const v = views(db);
  const rows = afterId === null ? v.firstPageOfOrg.all(orgId, limit) : v.pageOfOrg.all(orgId, afterId, limit);
  return rows.map(toView);
}

function runQuery(db: Db, query: { toSQL(): { sql: string; params: unknown[] } }): IntegrationView[] {
  const { sql: text, params } = query.toSQL();
  return (db.$client.prepare(text).raw().all(...params) as ViewRow[]).map(toView);
}

/**
 * The queries behind findScmIntegrationView, unexecuted, so tests can show their plans: by
 * the key (time, low, id, orgId), and by the id alone (id, orgId).
 */
export function getQuery(db: Db, by: "key" | "id" = "key") {
  const byId = and(eq(scmIntegrations.id, sql.placeholder("id")), eq(scmIntegrations.orgId, sql.placeholder("orgId")));
  if (by === "id") return selectViews(db).where(byId);
  // Two bare parameters, bound by position like the placeholders after them.
  return selectViews(db).where(and(sql.raw(`"${getTableName(scmIntegrations)}"."key" = ${KEY_SQL("?", "?")}`), byId));
}

/**
 * The SQL of the statements prepared once for a runner's pages (first page and after a
 * host, without and with the organization's check), so tests can check their shape: as
 * they run, or the plain reads a page falls back to.
 */
export function runnerPageSql(db: Db, form: "json" | "plain" = "json"): string[] {
  const v = views(db);
  return [v.firstPageOfRunner, v.pageOfRunner, v.firstPageOfRunnerInOrg, v.pageOfRunnerInOrg].map((p) => p.sql(form));
}

/** The same for the organization's pages (first page and after an id). */
export function orgPageSql(db: Db, form: "json" | "plain" = "json"): string[] {
  const v = views(db);
  return [v.firstPageOfOrg, v.pageOfOrg].map((p) => p.sql(form));
}

/**
 * The query behind listRunnerPage with ids, unexecuted, so tests can show its plan. The ids
 * are looked up by key and the few rows found sorted by host: through the runner's index in
 * host order, a runner with a million integrations was walked to the end for 25 ids (140
 * ms). The unary `+` keeps SQLite from choosing that index.
 */
export function runnerPageQuery(db: Db, runnerId: string, afterHost: string | null, limit: number, ids: readonly string[]) {
  return selectViews(db)
    .where(
      and(
        sql`+${scmIntegrations.runnerId} = ${runnerId}`,
        inArray(scmIntegrations.id, [...ids]),
        afterHost === null ? undefined : gt(scmIntegrations.host, afterHost),
      ),
    )
    .orderBy(asc(scmIntegrations.host))
    .limit(rowLimit(limit));
}

/** The statements behind listOrgPage, prepared once, and shown to tests for their plans: (orgId, [afterId,] limit). */
export function orgPageQuery(db: Db, withAfter: boolean) {
  return selectViews(db)
    .where(and(eq(scmIntegrations.orgId, sql.placeholder("orgId")), withAfter ? gt(scmIntegrations.id, sql.placeholder("afterId")) : undefined))
    .orderBy(asc(scmIntegrations.id))
    .limit(rowLimit(sql.placeholder("limit")));
}

export function updateScmIntegration(
  db: Db,
  id: string,
  set: Partial<Omit<ScmIntegrationRow, "id" | "orgId" | "runnerId" | "createdAt">>,
): void {
  db.update(scmIntegrations).set(set).where(eq(scmIntegrations.id, id)).run();
}

/** Deletes the integration and its sealed secret; false when the organization has none with this id. */
export function deleteScmIntegration(db: Db, orgId: string, id: string): boolean {
  return (
    db
      .delete(scmIntegrations)
      .where(and(eq(scmIntegrations.id, id), eq(scmIntegrations.orgId, orgId)))
      .run().changes > 0
  );
}

// Every column of a new integration, in the order insertScmIntegration passes them.
const insertColumns = [
  "id", "orgId", "runnerId", "scmId", "host", "pat", "oauthClientId",
  "oauthEncryptedSecret", "oauthSealedTo", "issuerUrl", "virtualDirectory", "createdAt", "updatedAt",
] as const satisfies readonly (keyof NewScmIntegrationRow)[];

const statements = prepared((db) => {
  const table = getTableName(scmIntegrations);
  return {
    byId: db
      .select()
      .from(scmIntegrations)
      .where(and(eq(scmIntegrations.id, sql.placeholder("id")), eq(scmIntegrations.orgId, sql.placeholder("orgId"))))
      .prepare(),
    // A plain statement over the schema's names: drizzle's per-parameter mapping cost about
    // as much as the insert's own work outside SQLite, on every create.
    // The row's columns, then its key's two parts (keyOf). A key another row has already
    // (ids of one millisecond can share one) gives way to the next free one above KEY_SPARE.
    insert: db.$client.prepare(
      `INSERT INTO "${table}" ("key", ${insertColumns.map((c) => `"${scmIntegrations[c].name}"`).join(", ")}) ` +
        `SELECT CASE WHEN EXISTS (SELECT 1 FROM "${table}" WHERE "key" = made.k) ` +
        `THEN max(coalesce((SELECT max("key") FROM "${table}"), 0), ${KEY_SPARE}) + 1 ELSE made.k END, ` +
        `${insertColumns.map(() => "?").join(", ")} FROM (SELECT ${KEY_SQL("?", "?")} AS k) AS made`,
    ),
  };
});
