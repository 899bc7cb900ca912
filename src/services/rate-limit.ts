/** How many calls one token may make: `perSecond` on average, up to `burst` at once. */
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
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - bucket.tokens) * 1000) / this.limit.perSecond);
  }

  /** Forgets callers whose bucket has refilled: they are indistinguishable from new ones. */
  private sweep(now: number): void {
    const refillMs = (this.limit.burst * 1000) / this.limit.perSecond;
    for (const [caller, bucket] of this.buckets) {
      if (now - bucket.at >= refillMs) this.buckets.delete(caller);
    }
  }
}
