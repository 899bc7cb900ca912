import { hash, randomBytes, timingSafeEqual } from "node:crypto";

/** The two kinds of bearer token; the prefix tells them apart before any lookup. */
export type TokenKind = "api" | "runner";

const PREFIX: Record<TokenKind, string> = { api: "scmapi_", runner: "scmrun_" };
/** The prefixes without their `_`, as a pattern: what logs look for to hide a token (http-server.ts). */
export const PREFIX_PATTERN = "scm(?:api|run)";
// 32 random bytes in unpadded base64url are 43 characters.
const SHAPE = new RegExp(`^(${PREFIX_PATTERN})_[A-Za-z0-9_-]{43}$`);

/** A new token of 256 random bits, and the hash that is stored in its place. */
export function newToken(kind: TokenKind): { token: string; hash: Buffer } {
  const token = PREFIX[kind] + randomBytes(32).toString("base64url");
  return { token, hash: hashToken(token) };
}

export function hashToken(token: string): Buffer {
  // The one-shot form: far cheaper per call than building a Hash object.
  return hash("sha256", token, "buffer");
}

/** The kind of a well-formed token, or null for anything else. */
export function tokenKind(token: string): TokenKind | null {
  const m = SHAPE.exec(token);
  if (!m) return null;
  return m[1] === "scmapi" ? "api" : "runner";
}

/** Compares two hashes in constant time. */
export function sameHash(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
