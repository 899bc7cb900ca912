import { DomainError, Violations, invalidArgument } from "../domain/errors.js";
import { newId } from "../crypto/ids.js";
import { newToken } from "../crypto/tokens.js";
import type { Db } from "../store/database.js";
import * as store from "../store/accounts.js";
import { isUniqueViolation } from "../store/errors.js";
import type { OrganizationRow } from "../store/schema.js";
import { checkUuid, organizationNameProblem } from "../domain/checks.js";

/** Throws invalid_argument unless `name` can name an organization. */
export function checkOrganizationName(name: string): void {
  const problem = organizationNameProblem(name);
  if (problem) throw invalidArgument([{ field: "name", rule: "org.name", message: problem }]);
}

/** Creates an organization; see `organizationNameProblem` for its name. */
export function createOrganization(db: Db, name: string): OrganizationRow {
  checkOrganizationName(name);
  const row: OrganizationRow = { id: newId(), name, createdAt: Date.now() };
  try {
    store.insertOrganization(db, row);
  } catch (err) {
    if (isUniqueViolation(err)) throw new DomainError("already_exists", `organization "${name}" already exists`);
    throw err;
  }
  return row;
}

export function listOrganizations(db: Db): OrganizationRow[] {
  return store.listOrganizations(db);
}

function organizationByName(db: Db, name: string): OrganizationRow {
  const org = store.findOrganizationByName(db, name);
  if (!org) throw new DomainError("not_found", `organization "${name}" not found`);
  return org;
}

/** Issues an API token for an organization; the token is returned here only. */
export function createApiToken(db: Db, orgName: string): { id: string; token: string } {
  const org = organizationByName(db, orgName);
  const { token, hash } = newToken("api");
  const id = newId();
  store.insertApiToken(db, { id, orgId: org.id, tokenHash: hash, createdAt: Date.now(), revokedAt: null });
  return { id, token };
}

export interface ApiTokenInfo {
  id: string;
  createdAt: number;
  revokedAt: number | null;
}

export function listApiTokens(db: Db, orgName: string): ApiTokenInfo[] {
  const org = organizationByName(db, orgName);
  return store.listApiTokens(db, org.id).map(({ id, createdAt, revokedAt }) => ({ id, createdAt, revokedAt }));
}

/** Revokes a live API token; answers its id as stored (ids are shown in lower case). */
export function revokeApiToken(db: Db, given: string): string {
  const v = new Violations();
  const id = checkUuid(v, "id", given);
  v.throwIfAny();
  if (!store.revokeApiToken(db, id, Date.now())) {
    throw new DomainError("not_found", `no live API token with id ${id}`);
  }
  return id;
}

/**
 * On a database without any API token, creates the first organization and an admin
 * token for it, so a fresh install can be used at once. Null when tokens exist.
 */
export function bootstrap(db: Db, orgName: string): { orgName: string; token: string } | null {
  // Read first: a start with tokens in place needs no write lock, which another process
  // (the admin CLI, a migration of another copy) may be holding.
  if (store.countApiTokens(db) > 0) return null;
  return db.transaction(
    () => {
      if (store.countApiTokens(db) > 0) return null;
      if (!store.findOrganizationByName(db, orgName)) createOrganization(db, orgName);
      return { orgName, token: createApiToken(db, orgName).token };
    },
    { behavior: "immediate" },
  );
}
