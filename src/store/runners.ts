import { and, asc, eq, gt, inArray, sql } from "drizzle-orm";
import { prepared, rawStatement, rowLimit, type Db } from "./database.js";
import { runners, type RunnerRow } from "./schema.js";

export function insertRunner(db: Db, row: RunnerRow): void {
  db.insert(runners).values(row).run();
}

/** The runner with this id in this organization. */
export function findRunner(db: Db, orgId: string, id: string): RunnerView | null {
  const r = statements(db).byId.get(id, orgId) as ViewTuple | undefined;
  return r ? toView(r) : null;
}

/**
 * What a write that seals needs of a runner: its public key (null before it signs up), stored
 * schema, and whether it is being deleted; undefined when the organization has no such runner.
 */
export function findRunnerKey(db: Db, orgId: string, id: string): Pick<RunnerRow, "publicKey" | "configSchema" | "deleting"> | undefined {
  const row = statements(db).keyById.get(id, orgId) as [Buffer | null, string | null, number] | undefined;
  return row && { publicKey: row[0], configSchema: row[1], deleting: row[2] !== 0 };
}

/**
 * A runner as reads show it: neither its token hash nor its published schema, which may be
 * hundreds of KB and is read only where it is used (findRunnerKey). A page of runners once
 * read every schema, and a few concurrent pages of large ones ran the process out of memory.
 */
export type RunnerView = Omit<RunnerRow, "accessTokenHash" | "configSchema" | "secretsWalk" | "deleting">;

// The columns of a RunnerView, in the order the raw statement below returns them: drizzle's
// generic mapping cost more than the lookup.
const viewColumns = {
  id: runners.id,
  orgId: runners.orgId,
  name: runners.name,
  kind: runners.kind,
  provider: runners.provider,
  creatorId: runners.creatorId,
  createdAt: runners.createdAt,
  updatedAt: runners.updatedAt,
  publicKey: runners.publicKey,
  statusUpdatedAt: runners.statusUpdatedAt,
} satisfies Record<keyof RunnerView, unknown>;
type ViewTuple = [string, string, string, number, number, string, number, number, Buffer | null, number | null];

function toView(r: ViewTuple): RunnerView {
  return {
    id: r[0],
    orgId: r[1],
    name: r[2],
    kind: r[3],
    provider: r[4],
    creatorId: r[5],
    createdAt: r[6],
    updatedAt: r[7],
    publicKey: r[8],
    statusUpdatedAt: r[9],
  };
}

/** Whether the organization has a runner with this id; reads none of its columns. */
export function hasRunner(db: Db, orgId: string, id: string): boolean {
  return statements(db).exists.get(id, orgId) !== undefined;
}

/** The hash of the runner's current access token, or null when there is no such runner. */
export function runnerTokenHash(db: Db, id: string): Buffer | null {
  return (statements(db).tokenHashById.get(id) as Buffer | undefined) ?? null;
}

/** What authentication needs of the runner whose access token has this hash. */
export function findRunnerByTokenHash(db: Db, hash: Buffer): Pick<RunnerRow, "id" | "orgId" | "accessTokenHash"> | null {
  const r = statements(db).byTokenHash.get(hash) as [string, string, Buffer] | undefined;
  return r ? { id: r[0], orgId: r[1], accessTokenHash: r[2] } : null;
}

const byIdAndOrg = and(eq(runners.id, sql.placeholder("id")), eq(runners.orgId, sql.placeholder("orgId")));

const statements = prepared((db) => ({
  // (id, orgId)
  byId: rawStatement(db, db.select(viewColumns).from(runners).where(byIdAndOrg)).raw(),
  // (id, orgId)
  keyById: rawStatement(db, db.select({ key: runners.publicKey, schema: runners.configSchema, deleting: runners.deleting }).from(runners).where(byIdAndOrg)).raw(),
  // (id, orgId)
  exists: rawStatement(db, db.select({ one: sql`1` }).from(runners).where(byIdAndOrg)).pluck(),
  // (id)
  tokenHashById: rawStatement(db, db.select({ hash: runners.accessTokenHash }).from(runners).where(eq(runners.id, sql.placeholder("id")))).pluck(),
  deleteSomeIntegrations: db.$client.prepare(runnerStepSql.deleteSomeIntegrations),
  dropStaleSecrets: db.$client.prepare(runnerStepSql.dropStaleSecrets),
  // (runnerId, afterHost): the last of those rows, when there were as many as a write takes
  lastOfNextRows: db.$client
    .prepare(`SELECT host FROM scm_integrations WHERE runner_id = ? AND host > ? ORDER BY host LIMIT 1 OFFSET ${RUNNER_ROWS_A_WRITE - 1}`)
    .pluck(),
  // (runnerId): by the covering index's order, one seek
  lastHost: db.$client.prepare("SELECT max(host) FROM scm_integrations WHERE runner_id = ?").pluck(),
  // (id)
  markDeleting: db.$client.prepare("UPDATE runners SET deleting = 1 WHERE id = ?"),
  // (runnerId, walk)
  endWalk: db.$client.prepare("UPDATE runners SET secrets_walk = 0 WHERE id = ? AND secrets_walk = ?"),
  // (hash); every call of a runner authenticates through it
  byTokenHash: rawStatement(
    db,
    db
      .select({ id: runners.id, orgId: runners.orgId, accessTokenHash: runners.accessTokenHash })
      .from(runners)
      .where(eq(runners.accessTokenHash, sql.placeholder("hash"))),
  ).raw(),
}));

/** Narrows a runner listing; an empty list does not narrow. */
export interface RunnerFilter {
  creatorIds: readonly string[];
  kinds: readonly number[];
  providers: readonly number[];
}

/** Up to `limit` runners of the organization with ids after `after`, in id order, narrowed by `filter`. */
export function listRunners(db: Db, orgId: string, after: string | null, limit: number, filter: RunnerFilter): RunnerView[] {
  return db
    .select(viewColumns)
    .from(runners)
    .where(
      and(
        eq(runners.orgId, orgId),
        after === null ? undefined : gt(runners.id, after),
        filter.creatorIds.length > 0 ? inArray(runners.creatorId, [...filter.creatorIds]) : undefined,
        filter.kinds.length > 0 ? inArray(runners.kind, [...filter.kinds]) : undefined,
        filter.providers.length > 0 ? inArray(runners.provider, [...filter.providers]) : undefined,
      ),
    )
    .orderBy(asc(runners.id))
    .limit(rowLimit(limit))
    .all();
}

/** A walk over a runner's integrations in host order (see setRunnerPublicKey): its number, and the host it ends at. */
export interface SecretsWalk {
  walk: number;
  lastHost: string;
}

/**
 * Records the runner's key. Secrets sealed to any other key can no longer be opened by the
 * runner: no read shows them from now on (reads compare each with the runner's key), and
 * a change of key starts a walk that drops them (dropSomeStaleSecrets), numbered so that only
 * the latest clears the runner's mark. The walk ends at the runner's last host now: what is
 * created later is sealed to this key. Answers the walk left to do (the one just started, or
 * one a stop cut short), undefined for none, or null when the runner is gone.
 */
export function setRunnerPublicKey(db: Db, id: string, publicKey: Buffer, at: number): SecretsWalk | undefined | null {
  const current = db.select({ key: runners.publicKey, walk: runners.secretsWalk }).from(runners).where(eq(runners.id, id)).get();
  if (!current) return null;
  // A first key has nothing sealed to an earlier one: an OAuth secret needs a key.
  let walk = current.key === null || current.key.equals(publicKey) ? current.walk : current.walk + 1;
  const lastHost = walk === 0 ? undefined : (statements(db).lastHost.get(id) as string | null);
  if (lastHost === null) walk = 0;
  db.update(runners).set({ publicKey, statusUpdatedAt: at, updatedAt: at, secretsWalk: walk }).where(eq(runners.id, id)).run();
  return walk === 0 ? undefined : { walk, lastHost: lastHost! };
}

/**
 * Drops the secrets sealed to a key other than the runner's among its next
 * RUNNER_ROWS_A_WRITE integrations in host order after `afterHost` (their integrations keep
 * the OAuth client id and report an empty secret until an Update seals a new one). Answers
 * the host to go on after, or null once the walk has passed its last host. The runner is
 * unmarked then only while this walk is still its latest: a Signup with another key since
 * (even one going back to an earlier key) walks again from the start, and the mark is that
 * walk's to clear.
 */
export function dropSomeStaleSecrets(db: Db, runnerId: string, walk: SecretsWalk, afterHost: string, at: number): string | null {
  const s = statements(db);
  s.dropStaleSecrets.run(at, runnerId, afterHost, runnerId);
  const next = s.lastOfNextRows.get(runnerId, afterHost) as string | undefined;
  if (next !== undefined && next < walk.lastHost) return next;
  s.endWalk.run(runnerId, walk.walk);
  return null;
}

/** Marks the runner as being deleted: it takes no new integrations (see deleting in schema.ts). */
export function markDeleting(db: Db, id: string): void {
  statements(db).markDeleting.run(id);
}

/** Changes the columns given; false when the organization has no runner with this id. */
export function updateRunner(
  db: Db,
  orgId: string,
  id: string,
  set: Partial<Pick<RunnerRow, "name" | "accessTokenHash" | "configSchema" | "updatedAt">>,
): boolean {
  return db.update(runners).set(set).where(and(eq(runners.id, id), eq(runners.orgId, orgId))).run().changes > 0;
}

/**
 * How many of a runner's integrations one write deletes or rewrites at most (see
 * deleteSomeIntegrations, dropSomeStaleSecrets): one write holds the event loop and every other
 * write, and a runner may have any number of them (a million took 17 s in one transaction).
 */
export const RUNNER_ROWS_A_WRITE = 500;

/**
 * The writes that take a runner's integrations apart a bounded number at a time. Each reads
 * the runner's next rows from the covering index and reaches them in the table by its key
 * (the rowid, which every index entry carries; migration 0007), not by the id index.
 */
export const runnerStepSql = {
  // (runnerId): the first of its integrations in the covering index's order
  deleteSomeIntegrations: `DELETE FROM scm_integrations WHERE key IN (SELECT key FROM scm_integrations WHERE runner_id = ? ORDER BY host LIMIT ${RUNNER_ROWS_A_WRITE})`,
  // (at, runnerId, afterHost, runnerId): of the next rows, only those to drop (a runner's
  // PAT-only integrations are not rewritten)
  dropStaleSecrets: `UPDATE scm_integrations SET oauth_encrypted_secret = NULL, oauth_sealed_to = NULL, updated_at = ?
     WHERE key IN (SELECT key FROM (SELECT key, oauth_sealed_to FROM scm_integrations WHERE runner_id = ? AND host > ? ORDER BY host LIMIT ${RUNNER_ROWS_A_WRITE})
                  WHERE oauth_sealed_to IS NOT (SELECT public_key FROM runners WHERE id = ?) AND oauth_sealed_to IS NOT NULL)`,
};

/** Deletes up to RUNNER_ROWS_A_WRITE of the runner's integrations; how many it did. */
export function deleteSomeIntegrations(db: Db, runnerId: string): number {
  return statements(db).deleteSomeIntegrations.run(runnerId).changes;
}

/** Deletes the runner; its integrations and their sealed secrets go with it (foreign key cascade). */
export function deleteRunner(db: Db, orgId: string, id: string): boolean {
  return db.delete(runners).where(and(eq(runners.id, id), eq(runners.orgId, orgId))).run().changes > 0;
}
