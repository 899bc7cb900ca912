import { and, eq, lte, sql } from "drizzle-orm";
import { prepared, type Db } from "./database.js";
import { idempotencyKeys, type IdempotencyKeyRow } from "./schema.js";

const statements = prepared((db) => ({
  find: db
    .select()
    .from(idempotencyKeys)
    .where(and(eq(idempotencyKeys.scope, sql.placeholder("scope")), eq(idempotencyKeys.key, sql.placeholder("key"))))
    .prepare(),
}));

/** The remembered result for this caller's key, expired or not. */
export function findIdempotencyKey(db: Db, scope: string, key: string): IdempotencyKeyRow | null {
  return statements(db).find.get({ scope, key }) ?? null;
}

/** Remembers a result, replacing an expired entry for the same key. */
export function saveIdempotencyKey(db: Db, row: IdempotencyKeyRow): void {
  db.insert(idempotencyKeys)
    .values(row)
    .onConflictDoUpdate({
      target: [idempotencyKeys.scope, idempotencyKeys.key],
      set: { fingerprint: row.fingerprint, resultId: row.resultId, createdAt: row.createdAt },
    })
    .run();
}

/** Drops the oldest entries made at or before `cutoff`, at most `limit` of them; answers how many. */
export function deleteIdempotencyKeysBefore(db: Db, cutoff: number, limit: number): number {
  const oldest = db
    .select({ scope: idempotencyKeys.scope, key: idempotencyKeys.key })
    .from(idempotencyKeys)
    .where(lte(idempotencyKeys.createdAt, cutoff))
    .orderBy(idempotencyKeys.createdAt)
    .limit(limit);
  return db.delete(idempotencyKeys).where(sql`(${idempotencyKeys.scope}, ${idempotencyKeys.key}) IN ${oldest}`).run().changes;
}
