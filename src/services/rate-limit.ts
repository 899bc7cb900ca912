/** How much one token may use (calls, or bytes of request body): `perSecond` on average, up to `burst` at once. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date, in ms (performance.now()). */
  at: number;
  /** What took `tokens` below zero last (see spend). */
  debtor?: object | undefined;
}

// Buckets of callers that went quiet are dropped once there are this many.
const SWEEP_AT = 10_000;

/**
 * One token bucket per caller, kept in memory. Each process keeps its own, so with
 * WORKERS=N a caller can reach up to N times the rate; a limit against abuse and
 * runaway scripts, not a quota.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: RateLimit,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** How many callers have a bucket now. */
  get callers(): number {
    return this.buckets.size;
  }

  /** Takes one call from `caller`'s bucket: 0 if it may proceed, else ms until it may. */
  take(caller: string): number {
    const bucket = this.bucket(caller);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - bucket.tokens) * 1000) / this.limit.perSecond);
  }

  /**
   * Takes `amount` for `user` (an object naming one use, such as one body being parsed) from
   * `caller`'s bucket, into debt if need be: for what is only known as it is used. While the
   * bucket is below zero only the use that took it there goes on; any other gets the ms
   * until the debt is paid off, and nothing is taken. So one use at a time runs into debt,
   * whatever the others do meanwhile: a use that crossed zero by a little, paid back in a
   * moment, is not let on once another has crossed since.
   */
  spend(caller: string, amount: number, user: object): number {
    const bucket = this.bucket(caller);
    if (bucket.tokens < 0 && bucket.debtor !== user) return Math.ceil((-bucket.tokens * 1000) / this.limit.perSecond);
    bucket.tokens -= amount;
    if (bucket.tokens < 0) bucket.debtor = user;
    return 0;
  }

  /**
   * What `spend` would answer for `user` without spending: 0 if it would take the amount, else
   * the ms until `caller`'s debt, run up by another use, is paid off. A use charged to several
   * buckets asks each first, so that it is charged to all of them or to none.
   */
  refusal(caller: string, user: object): number {
    const bucket = this.bucket(caller);
    return bucket.tokens < 0 && bucket.debtor !== user ? Math.ceil((-bucket.tokens * 1000) / this.limit.perSecond) : 0;
  }

  /** 0 if `caller` owes nothing, else ms until its debt is paid off (see spend). */
  debtWait(caller: string): number {
    if (!this.buckets.has(caller)) return 0;
    const tokens = this.bucket(caller).tokens;
    return tokens >= 0 ? 0 : Math.ceil((-tokens * 1000) / this.limit.perSecond);
  }

  /** `caller`'s bucket, brought up to date. */
  private bucket(caller: string): Bucket {
    const now = this.now();
    let bucket = this.buckets.get(caller);
    if (bucket === undefined) {
      if (this.buckets.size >= SWEEP_AT) this.sweep(now);
      bucket = { tokens: this.limit.burst, at: now };
      this.buckets.set(caller, bucket);
    } else {
      bucket.tokens = Math.min(this.limit.burst, bucket.tokens + ((now - bucket.at) * this.limit.perSecond) / 1000);
      bucket.at = now;
    }
    return bucket;
  }

  /** Forgets callers whose bucket has refilled (debts paid): they are indistinguishable from new ones. */
  private sweep(now: number): void {
    for (const [caller, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) * this.limit.perSecond) / 1000 >= this.limit.burst) this.buckets.delete(caller);
    }
  }
}
