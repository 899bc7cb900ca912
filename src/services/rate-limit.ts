/** How much one token may use (calls, or bytes of request body): `perSecond` on average, up to `burst` at once. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date, in ms (performance.now()). */
  at: number;
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
   * Takes `amount` from `caller`'s bucket whatever it holds, into debt if need be: for what
   * is only known as it is used, such as the bytes of a body being read.
   */
  owe(caller: string, amount: number): void {
    this.bucket(caller).tokens -= amount;
  }

  /** 0 if `caller` owes nothing, else ms until its debt is paid off (see owe). */
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
