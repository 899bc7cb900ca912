import { Code, type Interceptor } from "@connectrpc/connect";
import { DomainError } from "../domain/errors.js";
import type { Logger } from "../log.js";
import { authenticate } from "../services/auth.js";
import type { Db } from "../store/database.js";
import { callerKey, requestRecordKey } from "./context.js";
import { toConnectError } from "./errors.js";

/** Which kind of token each service takes; services not listed take none. */
const TOKEN_POLICY: Record<string, "api" | "runner"> = {
  "gitpod.v1.RunnerService": "api",
  "gitpod.v1.RunnerConfigurationService": "api",
  "gitpod.v1.RunnerInteractionService": "runner",
};

/**
 * Outermost: turns whatever the call threw into a Connect error (see errors.ts) and
 * records the final code for the request log line.
 */
export function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const record = req.contextValues.get(requestRecordKey);
    try {
      const res = await next(req);
      record.code = "ok";
      return res;
    } catch (err) {
      const connectErr = toConnectError(err, req.method, record.id, log);
      record.code = codeName(connectErr.code);
      throw connectErr;
    }
  };
}

/** Establishes the caller from the bearer token and enforces which token kind a service takes. */
export function authInterceptor(db: Db): Interceptor {
  return (next) => async (req) => {
    const policy = TOKEN_POLICY[req.service.typeName];
    if (policy === undefined) return next(req);
    const caller = db.read(() => authenticate(db, req.header.get("authorization")));
    if (caller.kind !== policy) {
      throw new DomainError(
        "permission_denied",
        policy === "api"
          ? `${req.service.typeName} needs an API token; a runner access token may only call gitpod.v1.RunnerInteractionService`
          : `${req.service.typeName} is for runners and needs the runner's own access token, not an API token`,
      );
    }
    req.contextValues.set(callerKey, caller);
    return next(req);
  };
}

/** `Code.InvalidArgument` → `invalid_argument`, as Connect writes codes on the wire. */
export function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/[A-Z]/g, (c, i: number) => (i > 0 ? "_" : "") + c.toLowerCase());
}
