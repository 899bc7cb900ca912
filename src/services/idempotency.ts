import { createHmac } from "node:crypto";
import { sameHash } from "../crypto/tokens.js";
import { DomainError } from "../domain/errors.js";
import type { Db } from "../store/database.js";
import { deleteIdempotencyKeysBefore, findIdempotencyKey, saveIdempotencyKey } from "../store/idempotency-keys.js";

// Visible ASCII only: keys are compared byte for byte and appear in no log.
const KEY_SHAPE = /^[\x21-\x7e]{1,255}$/;
// Expired entries are swept at most this often (or once per TTL, if shorter), by a write of
// their own that a keyed create starts, and at most SWEEP_LIMIT at a time: the whole batch
// waits for the sweep (300,000 at once took 0.7 s). While more are left, the next keyed
// create starts another.
const SWEEP_EVERY_MS = 60_000;
export const SWEEP_LIMIT = 500;

/**
 * One create made with an Idempotency-Key, as the service sees it. Both methods run
 * inside the create's write, so a key and the row it names commit together.
 */
export interface IdempotentCall {
  /** The first call's result id when this is a retry of it; throws when the key was used for a different request. */
  replay(now: number): string | null;
  /** Remembers `resultId` as this key's answer. */
  remember(resultId: string, now: number): void;
}

/**
 * Remembers successful creates by (caller, Idempotency-Key) for `ttlMs`. A request
 * is told apart from another by an HMAC of its bytes under a key of the service's own;
 * the caller leaves secrets out of those bytes, since the key is stored beside them.
 */
export class Idempotency {
  private lastSweep = 0;
  /** Whether the last sweep left expired entries behind. */
  private backlog = false;
  private sweeping = false;

  constructor(
    private readonly db: Db,
    private readonly hmacKey: Buffer,
    readonly ttlMs: number,
  ) {}

  /**
   * The idempotent form of one call, or null when the client sent no key. `request`
   * makes the canonical encoding of the whole request (binary protobuf, unknown fields
   * left out), so JSON and binary forms of one request match; it runs only with a key.
   * `earlier`, when given, makes the encodings earlier versions of the service made of the
   * same request, where they differ, so that a retry across an upgrade still matches what
   * those versions stored.
   */
  call(header: string | null, scope: string, method: string, request: () => Uint8Array, earlier?: () => Uint8Array[]): IdempotentCall | null {
    if (header === null) return null;
    if (!KEY_SHAPE.test(header)) {
      throw new DomainError("invalid_argument", "Idempotency-Key header: must be 1 to 255 visible ASCII characters");
    }
    const key = header;
    const fingerprintOf = (bytes: Uint8Array) => createHmac("sha256", this.hmacKey).update(method).update("\0").update(bytes).digest();
    const fingerprint = fingerprintOf(request());
    return {
      replay: (now) => {
        const prior = findIdempotencyKey(this.db, scope, key);
        if (prior === null || prior.createdAt + this.ttlMs <= now) return null;
        if (sameHash(prior.fingerprint, fingerprint)) return prior.resultId;
        if (earlier?.().some((before) => sameHash(prior.fingerprint, fingerprintOf(before)))) return prior.resultId;
        throw new DomainError(
          "invalid_argument",
          "Idempotency-Key header: this key was already used for a different request; send a new key for a new request",
        );
      },
      remember: (resultId, now) => {
        saveIdempotencyKey(this.db, { scope, key, fingerprint, resultId, createdAt: now });
        this.sweepIfDue(now);
      },
    };
  }

  /**
   * Starts a sweep in a write of its own (the next batch) when one is due. Not inside the
   * create's write: the group commit may run that again, or roll it back, and what the sweep
   * did or was due to do would be lost with it. What it records, it records once committed.
   */
  private sweepIfDue(now: number): void {
    if (this.sweeping || (!this.backlog && now - this.lastSweep < Math.min(SWEEP_EVERY_MS, this.ttlMs))) return;
    this.sweeping = true;
    this.db
      .write(() => deleteIdempotencyKeysBefore(this.db, now - this.ttlMs, SWEEP_LIMIT), { oneStatement: true })
      .then(
        (deleted) => {
          this.lastSweep = now;
          this.backlog = deleted === SWEEP_LIMIT;
        },
        () => {
          // Tried again at the next keyed create; the keys are ignored once expired meanwhile.
        },
      )
      .finally(() => (this.sweeping = false));
  }
}
