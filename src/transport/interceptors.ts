import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Caller } from "../domain/caller.js";
import { DomainError } from "../domain/errors.js";
import type { Logger } from "../log.js";
import { authenticate, StaleCredential } from "../services/auth.js";
import type { RateLimiter } from "../services/rate-limit.js";
import type { Db } from "../store/database.js";
import { isDamaged, OutcomeUnknown } from "../store/errors.js";
import { callerKey, requestRecordKey } from "./context.js";
import { toConnectError } from "./errors.js";

/** Which kind of token each service takes; services not listed take none (server.ts checks its TOKEN_SERVICES against it). */
export const TOKEN_POLICY: Readonly<Record<string, "api" | "runner">> = {
  "gitpod.v1.RunnerService": "api",
  "gitpod.v1.RunnerConfigurationService": "api",
  "gitpod.v1.RunnerInteractionService": "runner",
};

/**
 * Outermost: turns whatever the call threw into a Connect error (see errors.ts) and
 * records the final code for the request log line.
 */
export function errorInterceptor(log: Logger, db: Db): Interceptor {
  return (next) => async (req) => {
    const record = req.contextValues.get(requestRecordKey);
    const fail = (err: unknown) => {
      const code = (err as { code?: unknown } | null)?.code;
      if (isDamaged(code) && db.haltedBy() === null) {
        log.error("the database reads as damaged: every call is refused until the service is restarted; check the storage, and restore a backup if the file is damaged", { driver_code: String(code) });
        db.halt(err as Error);
      }
      // A call cut off (its client gone, or its stream reset here at a time limit) fails its
      // reads with node's "Premature close", which may come before the call's signal says so:
      // the end of the call, not a fault to log.
      if ((req.signal.aborted || code === "ERR_STREAM_PREMATURE_CLOSE") && !(err instanceof DomainError) && !(err instanceof ConnectError)) {
        record.code = "canceled";
        return new ConnectError("the call was cut off before it ended", Code.Canceled);
      }
      // A token revoked or replaced while its call waited, refused inside the write (writeAs):
      // logged as the refusals at the door are.
      if (err instanceof StaleCredential) logRefusal(log, req, err.message);
      const connectErr = toConnectError(err, req.method, record.id, log);
      record.code = codeName(connectErr.code);
      return connectErr;
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        record.code = "ok";
        return res;
      }
      // A stream (reflection's) ends well or not only once its messages have all gone.
      const messages = res.message;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* messages;
            record.code = "ok";
          } catch (err) {
            throw fail(err);
          } finally {
            // Neither ended nor failed: its client went (or the stream was cut off).
            record.code ??= "canceled";
          }
        })(),
      };
    } catch (err) {
      throw fail(err);
    }
  };
}

/** Methods that only read: their answers show what the database holds (health shows none). */
const READS = /^(Get|List)/;

/**
 * Holds an answer until what it may show is on disk. Group commits become visible
 * before their sync returns (see group-commit.ts), so a read, or any refusal, waits
 * for the sync of every commit made so far. A write that succeeded needs no wait: it is
 * answered after its own sync, which covers every commit it could have seen.
 * Once a sync has failed, a refusal is `unavailable` like every other call: a not_found
 * may rest on a delete that never reached the disk.
 */
export function durabilityInterceptor(db: Db): Interceptor {
  return (next) => async (req) => {
    let res;
    try {
      res = await next(req);
    } catch (err) {
      // A write of unknown outcome says so, whatever the sync it failed with now says.
      if (err instanceof OutcomeUnknown) throw err;
      await db.durable();
      throw err;
    }
    if (READS.test(req.method.name)) await db.durable();
    return res;
  };
}

/** What the door decided for a call that needs a token: who calls (and when that was found), or why not. */
export type Admission = { caller: Caller; at: number } | { refusal: unknown; caller?: Caller };

/**
 * An admission older than this is checked again before the call goes on. A call is admitted
 * when its headers arrive, and its body may take up to REQUEST_TIMEOUT_MS: a token revoked
 * while a slow body came is then refused. A read whose body came within this time is served
 * on its admission, so a revocation reaches such a read up to this late (writes check again
 * in their transaction anyway, see writeAs).
 */
const READMIT_AFTER_MS = 1000;

/**
 * Establishes the caller from the bearer token, takes the call from the caller's rate
 * limit, and enforces which token kind a service takes (`admit` answers undefined for a
 * service that takes no token). The HTTP handler runs this before the request's body is read (see server.ts),
 * so that a call without a good token costs no decompression or parsing; the auth
 * interceptor then only applies what was decided.
 */
export function admitter(db: Db, limiter: RateLimiter | null, bodyLimiter: RateLimiter | null = null) {
  async function admit(policy: "api" | "runner", serviceName: string, authorization: string | null, repeated: boolean): Promise<Admission> {
    // Known once the token is: a call refused after that (its rate limit, the wrong kind of
    // token) is logged with whose it was.
    let known: Caller | undefined;
    try {
      if (repeated) throw new DomainError("unauthenticated", "more than one Authorization header; send exactly one");
      const caller = await db.read(() => authenticate(db, authorization));
      known = caller;
      // The limit counts every call of a token, also the ones refused below, so a token
      // cannot flood the service (or its log) with calls it is not allowed to make.
      const key = limitKey(caller);
      if (limiter) {
        const waitMs = limiter.take(key);
        if (waitMs > 0) throw rateLimited(`rate limit exceeded for this token; retry in ${waitMs} ms`, waitMs);
      }
      // Bodies are charged as they are parsed (see bodyCharge), so a call is let in while its
      // token owes no bytes, and the body it then sends may run it into debt.
      // (Only its own: what an organization's runners share holds back only large bodies, as
      // they come to be parsed.)
      if (bodyLimiter) {
        const waitMs = bodyLimiter.debtWait(key);
        if (waitMs > 0) throw bodyRateLimited(waitMs, key);
      }
      if (caller.kind !== policy) {
        throw new DomainError(
          "permission_denied",
          policy === "api"
            ? `${serviceName} needs an API token; a runner access token may only call gitpod.v1.RunnerInteractionService`
            : `${serviceName} is for runners and needs the runner's own access token, not an API token`,
        );
      }
      return { caller, at: Date.now() };
    } catch (refusal) {
      return known ? { refusal, caller: known } : { refusal };
    }
  }
  return {
    admit(serviceName: string, authorization: string | null, repeatedAuthorization: boolean): Promise<Admission> | undefined {
      const policy = Object.hasOwn(TOKEN_POLICY, serviceName) ? TOKEN_POLICY[serviceName] : undefined;
      return policy === undefined ? undefined : admit(policy, serviceName, authorization, repeatedAuthorization);
    },
    /** The same token looked up again; the rate limit is not taken twice. */
    async recheck(authorization: string | null): Promise<Admission> {
      try {
        return { caller: await db.read(() => authenticate(db, authorization)), at: Date.now() };
      } catch (refusal) {
        return { refusal };
      }
    },
  };
}

/**
 * Applies the admission the HTTP handler made for the call (or makes it, for a call that
 * reached connect-node another way): the caller goes into the context, a refusal is thrown
 * here, inside the durability interceptor, and logged with its reason, never the token.
 */
export function authInterceptor(log: Logger, admit: ReturnType<typeof admitter>): Interceptor {
  return (next) => async (req) => {
    const record = req.contextValues.get(requestRecordKey);
    let admission = record.admission ?? (await admit.admit(req.service.typeName, req.header.get("authorization"), record.repeatedAuthorization === true));
    if (admission === undefined) {
      refuseIfPastDeadline(req);
      return next(req);
    }
    if (!("refusal" in admission) && Date.now() - admission.at > READMIT_AFTER_MS) admission = await admit.recheck(req.header.get("authorization"));
    if ("refusal" in admission) {
      if (admission.refusal instanceof DomainError) logRefusal(log, req, admission.refusal.message);
      throw admission.refusal;
    }
    req.contextValues.set(callerKey, admission.caller);
    refuseIfPastDeadline(req);
    // Returned as it is: a .catch() here to log the refusals of writeAs (see errorInterceptor)
    // cost about 13 µs of CPU per Get (BENCHMARKS.md).
    return next(req);
  };
}

/**
 * A call whose deadline passed before it began (Connect-Timeout-Ms: 0, grpc-timeout: 0m, or one
 * shorter than its body took to come) is not made, as a server whose work honours its deadline
 * would not make it; one passing later lets the call finish. Checked once the door has
 * answered: a refused token or a rate limit is still said as such.
 */
function refuseIfPastDeadline(req: Parameters<ReturnType<Interceptor>>[0]): void {
  const reason: unknown = req.signal.reason;
  if (req.signal.aborted && reason instanceof ConnectError && reason.code === Code.DeadlineExceeded) throw reason;
}

/** A refused credential, logged with its reason and never the token. */
function logRefusal(log: Logger, req: Parameters<ReturnType<Interceptor>>[0], reason: string): void {
  log.warn("authentication refused", {
    request_id: req.contextValues.get(requestRecordKey).id,
    procedure: `/${req.service.typeName}/${req.method.name}`,
    reason,
  });
}

/** The bucket a caller's calls and body bytes are counted in: each API token's own, each runner's own. */
function limitKey(caller: Caller): string {
  return caller.kind === "api" ? `api:${caller.tokenId}` : `runner:${caller.runnerId}`;
}

/**
 * A body's bytes that the bucket of its organization's runners is not charged: any API token
 * may create runners, each with a bucket of its own, and without one they share, 40 runners
 * made by one token took turns parsing 1 MiB bodies and held the event loop for 20 s, where
 * one token's bucket lets two through. What a runner usually sends (a page request, a Signup)
 * is far smaller, so a fleet's calls, however many, never reach the shared bucket.
 */
const SHARED_FREE_BYTES = 4096;

/**
 * What an admitted call's body is charged to as connect-node is about to parse it (see
 * chargeBody; a compressed one for what it inflates to): its token's byte bucket, and for a
 * runner what the body holds past SHARED_FREE_BYTES to the bucket its organization's runners
 * share. The body that takes a bucket below zero goes on into debt; any other body charged to
 * it that comes to be parsed meanwhile is refused (it throws), so that bodies sent side by side
 * cannot all pass on admissions made together, and the token's own next calls wait its debt
 * out (see admitter). A body is charged to all its buckets or to none: one a bucket refuses is
 * not parsed, and owes nothing. Null without a byte limit.
 */
export function bodyCharge(bodyLimiter: RateLimiter | null, caller: Caller): ((bytes: number) => void) | null {
  if (!bodyLimiter) return null;
  const own = limitKey(caller);
  const shared = caller.kind === "runner" ? `runners:${caller.orgId}` : null;
  const body = {};
  // A body may be charged in parts (gRPC messages, what a compressed one inflates to).
  let charged = 0;
  return (bytes) => {
    const past = (n: number) => Math.max(0, n - SHARED_FREE_BYTES);
    const toShare = shared === null ? 0 : past(charged + bytes) - past(charged);
    const charges: [string, number][] = toShare > 0 ? [[own, bytes], [shared!, toShare]] : [[own, bytes]];
    for (const [key] of charges) {
      const waitMs = bodyLimiter.refusal(key, body);
      if (waitMs > 0) throw bodyRateLimited(waitMs, key);
    }
    for (const [key, amount] of charges) bodyLimiter.spend(key, amount, body);
    charged += bytes;
  };
}

const bodyRateLimited = (waitMs: number, key: string) =>
  rateLimited(
    key.startsWith("runners:")
      ? `the request bodies of this organization's runners are over the byte rate limit they share; retry in ${waitMs} ms`
      : `this token's request bodies are over its byte rate limit; retry in ${waitMs} ms`,
    waitMs,
  );

/**
 * resource_exhausted (HTTP 429 in Connect) with the wait in both forms the official SDK
 * reads: `retry-after-ms` first, then `retry-after` in whole seconds.
 */
function rateLimited(message: string, waitMs: number): ConnectError {
  const err = new ConnectError(message, Code.ResourceExhausted);
  err.metadata.set("retry-after-ms", String(waitMs));
  err.metadata.set("retry-after", String(Math.ceil(waitMs / 1000)));
  return err;
}

/** `Code.InvalidArgument` → `invalid_argument`, as Connect writes codes on the wire. */
export function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/[A-Z]/g, (c, i: number) => (i > 0 ? "_" : "") + c.toLowerCase());
}
