import type { HandlerContext } from "@connectrpc/connect";
import type { ApiCaller, RunnerCaller } from "../../domain/caller.js";
import { callerKey } from "../context.js";

/** The API-token caller the auth interceptor established; the policy there guarantees the kind. */
export function apiCaller(ctx: HandlerContext): ApiCaller {
  const caller = ctx.values.get(callerKey);
  if (caller?.kind !== "api") throw new Error("handler reached without an API-token caller");
  return caller;
}

/** The runner-token caller the auth interceptor established. */
export function runnerCaller(ctx: HandlerContext): RunnerCaller {
  const caller = ctx.values.get(callerKey);
  if (caller?.kind !== "runner") throw new Error("handler reached without a runner-token caller");
  return caller;
}
