import type { Caller } from "../domain/caller.js";
import { DomainError } from "../domain/errors.js";
import { hashToken, sameHash, tokenKind } from "../crypto/tokens.js";
import type { Db } from "../store/database.js";
import { findLiveApiTokenByHash } from "../store/accounts.js";
import { findRunnerByTokenHash } from "../store/runners.js";

// Longer headers are refused before any work is done on them.
const MAX_AUTHORIZATION_LENGTH = 512;

/**
 * Establishes the caller from an `Authorization` header. Anything but a live token in
 * `Bearer <token>` form is unauthenticated; the message never repeats the token.
 */
export function authenticate(db: Db, authorization: string | null): Caller {
  if (authorization === null || authorization === "") {
    throw unauthenticated("missing Authorization header; send Authorization: Bearer <token>");
  }
  if (authorization.length > MAX_AUTHORIZATION_LENGTH) {
    throw unauthenticated("Authorization header is too long");
  }
  const match = /^Bearer ([^\s]+)$/i.exec(authorization);
  if (!match) throw unauthenticated("Authorization header must have the form: Bearer <token>");
  const token = match[1]!;
  const kind = tokenKind(token);
  if (kind === null) throw unauthenticated("the bearer token is malformed");
  // Lookups go by the SHA-256 of the token, so the time taken says nothing about how
  // close a guess came; the final comparison is constant-time as well.
  const hash = hashToken(token);
  if (kind === "api") {
    const row = findLiveApiTokenByHash(db, hash);
    if (row && sameHash(row.tokenHash, hash)) return { kind: "api", orgId: row.orgId, tokenId: row.id };
  } else {
    const row = findRunnerByTokenHash(db, hash);
    if (row && sameHash(row.accessTokenHash, hash)) return { kind: "runner", orgId: row.orgId, runnerId: row.id };
  }
  throw unauthenticated("the bearer token is unknown or revoked");
}

function unauthenticated(message: string): DomainError {
  return new DomainError("unauthenticated", message);
}
