import type { Caller, RunnerCaller } from "../domain/caller.js";
import { DomainError } from "../domain/errors.js";
import { hashToken, sameHash, tokenKind } from "../crypto/tokens.js";
import type { Db } from "../store/database.js";
import { findLiveApiTokenByHash, isLiveApiToken } from "../store/accounts.js";
import { findRunnerByTokenHash, runnerTokenHash } from "../store/runners.js";

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
    if (row && sameHash(row.accessTokenHash, hash)) return { kind: "runner", orgId: row.orgId, runnerId: row.id, tokenHash: row.accessTokenHash };
  }
  throw unauthenticated("the bearer token is unknown or revoked");
}

/**
 * Runs `work` as a write of `caller`, provided the caller's token is still good inside the
 * write's transaction. The token was checked when the call came in, before the write
 * waited for its batch: a revocation (admin CLI) or a new runner token committed in
 * between must stop it, so that a rotated credential writes nothing once its rotation is
 * acknowledged. An API token is looked up once per transaction (another process cannot
 * revoke it while the transaction holds the write lock); a runner's, whose replacement
 * may come in the same batch, at every write. A runner gone altogether is left to `work`,
 * which answers not_found.
 */
export function writeAs<T>(db: Db, caller: Caller, work: () => T, options?: { oneStatement: boolean }): Promise<T> {
  return db.write(() => {
    requireLiveToken(db, caller);
    return work();
  }, options);
}

/** Per database, the API tokens found live in its current write transaction. */
const liveInTransaction = new WeakMap<Db, { transaction: number; tokenIds: Set<string> }>();

function requireLiveToken(db: Db, caller: Caller): void {
  if (caller.kind === "runner") {
    const current = runnerTokenHash(db, caller.runnerId);
    if (current !== null && !sameHash(current, caller.tokenHash)) {
      throw new StaleCredential("the runner's access token was replaced while this call waited; use the new token");
    }
    return;
  }
  const transaction = db.writeTransaction();
  let live = liveInTransaction.get(db);
  if (live?.transaction !== transaction) liveInTransaction.set(db, (live = { transaction, tokenIds: new Set() }));
  if (live.tokenIds.has(caller.tokenId)) return;
  if (!isLiveApiToken(db, caller.tokenId)) throw new StaleCredential("the bearer token was revoked while this call waited");
  live.tokenIds.add(caller.tokenId);
}

/** A token that was good when its call came in and no longer is when its write runs. */
export class StaleCredential extends DomainError {
  constructor(message: string) {
    super("unauthenticated", message);
  }
}

function unauthenticated(message: string): DomainError {
  return new DomainError("unauthenticated", message);
}

/** A runner token speaks for its own runner only. */
export function ownRunnerOnly(caller: RunnerCaller, runnerId: string): void {
  if (runnerId !== caller.runnerId) {
    throw new DomainError("permission_denied", `runner_id: this access token belongs to runner ${caller.runnerId}, not ${runnerId}`);
  }
}
