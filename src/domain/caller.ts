/** Who is calling, as established from the bearer token. */
export type Caller = ApiCaller | RunnerCaller;

/** An administrator's API token: acts on everything in its organization. */
export interface ApiCaller {
  kind: "api";
  orgId: string;
  tokenId: string;
}

/** A runner's own access token: acts only on that runner. */
export interface RunnerCaller {
  kind: "runner";
  orgId: string;
  runnerId: string;
  /** SHA-256 of the token the call came with, so a write can tell whether it was replaced since. */
  tokenHash: Buffer;
}
