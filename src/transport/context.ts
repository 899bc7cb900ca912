import { createContextKey } from "@connectrpc/connect";
import type { Caller } from "../domain/caller.js";
import type { Admission } from "./interceptors.js";

/** What the HTTP layer knows about one request and what it logs when it ends. */
export interface RequestRecord {
  id: string;
  /** The Connect code the call ended with, set by the error interceptor. */
  code: string | undefined;
  /**
   * Whether the request carried more than one Authorization field. Node keeps the first,
   * and a proxy in front may have checked another: such a call is refused, not guessed at.
   */
  repeatedAuthorization?: boolean;
  /** The caller, or why the call is refused, decided before its body was read (see server.ts). */
  admission?: Admission;
}

export const requestRecordKey = createContextKey<RequestRecord>({ id: "", code: undefined });

/** Set by the auth interceptor for every call that needs a token. */
export const callerKey = createContextKey<Caller | null>(null);
