import { and, asc, eq, gt, sql } from "drizzle-orm";
import { prepared, rawStatement, type Db } from "./database.js";
import { runners, scmIntegrations, type RunnerRow } from "./schema.js";

export function insertRunner(db: Db, row: RunnerRow): void {
  db.insert(runners).values(row).run();
}

/** The runner with this id in this organization. */
export function findRunner(db: Db, orgId: string, id: string): RunnerRow | null {
  return statements(db).byId.get({ id, orgId }) ?? null;
}

/** Whether the organization has a runner with this id; reads none of its columns. */
export function hasRunner(db: Db, orgId: string, id: string): boolean {
  return statements(db).exists.get(id, orgId) !== undefined;
}

/** What authentication needs of the runner whose access token has this hash. */
export function findRunnerByTokenHash(db: Db, hash: Buffer): Pick<RunnerRow, "id" | "orgId" | "accessTokenHash"> | null {
  return statements(db).byTokenHash.get({ hash }) ?? null;
}

const statements = prepared((db) => ({
  byId: db
    .select()
    .from(runners)
    .where(and(eq(runners.id, sql.placeholder("id")), eq(runners.orgId, sql.placeholder("orgId"))))
    .prepare(),
  // (id, orgId)
  exists: rawStatement(
    db,
    db
      .select({ one: sql`1` })
      .from(runners)
      .where(and(eq(runners.id, sql.placeholder("id")), eq(runners.orgId, sql.placeholder("orgId")))),
  ).pluck(),
  byTokenHash: db
    .select({ id: runners.id, orgId: runners.orgId, accessTokenHash: runners.accessTokenHash })
    .from(runners)
    .where(eq(runners.accessTokenHash, sql.placeholder("hash")))
    .prepare(),
}));

/** Up to `limit` runners of the organization with ids after `after`, in id order. */
export function listRunners(db: Db, orgId: string, after: string | null, limit: number): RunnerRow[] {
  return db
    .select()
    .from(runners)
    .where(after === null ? eq(runners.orgId, orgId) : and(eq(runners.orgId, orgId), gt(runners.id, after)))
    .orderBy(asc(runners.id))
    .limit(limit)
    .all();
}

/**
 * Records the runner's key. Secrets sealed to any other key can no longer be opened by
 * the runner, so they are dropped in the same transaction; their integrations keep the
 * OAuth client id and report an empty secret until an Update seals a new one.
 */
export function setRunnerPublicKey(db: Db, id: string, publicKey: Buffer, at: number): void {
  db.transaction(
    (tx) => {
      const current = tx.select({ key: runners.publicKey }).from(runners).where(eq(runners.id, id)).get();
      tx.update(runners).set({ publicKey, statusUpdatedAt: at, updatedAt: at }).where(eq(runners.id, id)).run();
      if (current?.key && current.key.equals(publicKey)) return;
      tx.update(scmIntegrations)
        .set({ oauthEncryptedSecret: null, oauthSealedTo: null, updatedAt: at })
        .where(eq(scmIntegrations.runnerId, id))
        .run();
    },
    { behavior: "immediate" },
  );
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

/** Deletes the runner; its integrations and their sealed secrets go with it (foreign key cascade). */
export function deleteRunner(db: Db, orgId: string, id: string): boolean {
  return db.delete(runners).where(and(eq(runners.id, id), eq(runners.orgId, orgId))).run().changes > 0;
}
