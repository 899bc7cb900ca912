import { and, eq } from "drizzle-orm";
import type { Db } from "./database.js";
import { runners, type RunnerRow } from "./schema.js";

export function insertRunner(db: Db, row: RunnerRow): void {
  db.insert(runners).values(row).run();
}

/** The runner with this id in this organization. */
export function findRunner(db: Db, orgId: string, id: string): RunnerRow | null {
  return db.select().from(runners).where(and(eq(runners.id, id), eq(runners.orgId, orgId))).get() ?? null;
}

export function findRunnerByTokenHash(db: Db, hash: Buffer): RunnerRow | null {
  return db.select().from(runners).where(eq(runners.accessTokenHash, hash)).get() ?? null;
}

export function setRunnerPublicKey(db: Db, id: string, publicKey: Buffer, at: number): void {
  db.update(runners)
    .set({ publicKey, statusUpdatedAt: at, updatedAt: at })
    .where(eq(runners.id, id))
    .run();
}
