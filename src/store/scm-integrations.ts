import { and, asc, eq, gt, inArray, type SQL } from "drizzle-orm";
import { DomainError } from "../domain/errors.js";
import type { Db } from "./database.js";
import { isUniqueViolation } from "./errors.js";
import { scmIntegrations, type NewScmIntegrationRow, type ScmIntegrationRow } from "./schema.js";

/** Inserts an integration; a second one for the same runner and host is already_exists. */
export function insertScmIntegration(db: Db, row: NewScmIntegrationRow): void {
  try {
    db.insert(scmIntegrations).values(row).run();
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
  return (
    db
      .select()
      .from(scmIntegrations)
      .where(and(eq(scmIntegrations.id, id), eq(scmIntegrations.orgId, orgId)))
      .get() ?? null
  );
}

export interface IntegrationPageQuery {
  /** Exactly one of orgId and runnerId scopes the query. */
  orgId?: string;
  runnerId?: string;
  runnerIds?: readonly string[];
  ids?: readonly string[];
  after: string | null;
  limit: number;
}

/**
 * One keyset page in id order: rows with ids after `after`. With one runner the
 * (runner_id, id) index serves both filter and order, so no sort step is needed.
 */
export function listScmIntegrations(db: Db, q: IntegrationPageQuery): ScmIntegrationRow[] {
  const where: SQL[] = [];
  if (q.orgId !== undefined) where.push(eq(scmIntegrations.orgId, q.orgId));
  if (q.runnerId !== undefined) where.push(eq(scmIntegrations.runnerId, q.runnerId));
  if (q.runnerIds && q.runnerIds.length === 1) where.push(eq(scmIntegrations.runnerId, q.runnerIds[0]!));
  else if (q.runnerIds && q.runnerIds.length > 1) where.push(inArray(scmIntegrations.runnerId, [...q.runnerIds]));
  if (q.ids && q.ids.length > 0) where.push(inArray(scmIntegrations.id, [...q.ids]));
  if (q.after !== null) where.push(gt(scmIntegrations.id, q.after));
  return db
    .select()
    .from(scmIntegrations)
    .where(and(...where))
    .orderBy(asc(scmIntegrations.id))
    .limit(q.limit)
    .all();
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
