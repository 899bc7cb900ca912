import { and, asc, count, eq, isNull, sql } from "drizzle-orm";
import { prepared, rawStatement, type Db } from "./database.js";
import { apiTokens, organizations, type ApiTokenRow, type OrganizationRow } from "./schema.js";

export function insertOrganization(db: Db, row: OrganizationRow): void {
  db.insert(organizations).values(row).run();
}

/** Every organization, by name. */
export function listOrganizations(db: Db): OrganizationRow[] {
  return db.select().from(organizations).orderBy(asc(organizations.name)).all();
}

export function findOrganizationByName(db: Db, name: string): OrganizationRow | null {
  return db.select().from(organizations).where(eq(organizations.name, name)).get() ?? null;
}

export function insertApiToken(db: Db, row: ApiTokenRow): void {
  db.insert(apiTokens).values(row).run();
}

/** What authentication needs of the live (not revoked) API token with this hash. */
export function findLiveApiTokenByHash(db: Db, hash: Buffer): Pick<ApiTokenRow, "id" | "orgId" | "tokenHash"> | null {
  const r = liveTokenByHash(db).get(hash) as [string, string, Buffer] | undefined;
  return r ? { id: r[0], orgId: r[1], tokenHash: r[2] } : null;
}

// (hash) Every call authenticates: a plain statement with its row mapped here spares drizzle's mapping.
const liveTokenByHash = prepared((db) =>
  rawStatement(
    db,
    db
      .select({ id: apiTokens.id, orgId: apiTokens.orgId, tokenHash: apiTokens.tokenHash })
      .from(apiTokens)
      .where(and(eq(apiTokens.tokenHash, sql.placeholder("hash")), isNull(apiTokens.revokedAt))),
  ).raw(),
);

export function listApiTokens(db: Db, orgId: string): ApiTokenRow[] {
  return db.select().from(apiTokens).where(eq(apiTokens.orgId, orgId)).orderBy(asc(apiTokens.id)).all();
}

/** Whether an API token with this id exists and is not revoked. */
export function isLiveApiToken(db: Db, id: string): boolean {
  return liveTokenById(db).get(id) !== undefined;
}

// (id) Looked up once per write transaction and token (services/auth.ts).
const liveTokenById = prepared((db) =>
  rawStatement(db, db.select({ one: sql`1` }).from(apiTokens).where(and(eq(apiTokens.id, sql.placeholder("id")), isNull(apiTokens.revokedAt)))).pluck(),
);

/** Marks a token revoked; false when no live token has this id. */
export function revokeApiToken(db: Db, id: string, at: number): boolean {
  const r = db
    .update(apiTokens)
    .set({ revokedAt: at })
    .where(and(eq(apiTokens.id, id), isNull(apiTokens.revokedAt)))
    .run();
  return r.changes > 0;
}

export function countApiTokens(db: Db): number {
  return db.select({ n: count() }).from(apiTokens).get()?.n ?? 0;
}
