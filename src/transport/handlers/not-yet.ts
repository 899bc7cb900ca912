import { Code, ConnectError } from "@connectrpc/connect";

/** Stands in for calls of the contract this service does not serve yet. */
export function notYet(): never {
  throw new ConnectError("not implemented yet", Code.Unimplemented);
}
