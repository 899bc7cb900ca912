import type { Idempotency } from "../../services/idempotency.js";
import type { Pager } from "../../services/pagination.js";
import type { Db } from "../../store/database.js";

/** What the handlers share: the database, the page-token signer, the idempotency keys, and where clients reach us. */
export interface Deps {
  db: Db;
  pager: Pager;
  /** This service's public base URL, without a trailing slash (PUBLIC_URL). */
  publicUrl: () => string;
  idempotency: Idempotency;
}
