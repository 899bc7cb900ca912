import { DomainError } from "../domain/errors.js";
import type { Db } from "./database.js";
import { isUniqueViolation } from "./errors.js";
import { scmIntegrations, type NewScmIntegrationRow } from "./schema.js";

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
