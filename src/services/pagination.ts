import { createHmac, timingSafeEqual } from "node:crypto";
import type { Violations } from "../domain/errors.js";

export const DEFAULT_PAGE_SIZE = 25;
export const MAX_PAGE_SIZE = 100;

/** What a List call asked for, after the transport merged the URL query into the body. */
export interface PageRequest {
  /** NaN when the query carried something that is not a number. */
  pageSize: number;
  token: string;
}

export interface Page<T> {
  items: T[];
  /** Empty on the last page. */
  nextToken: string;
}

const VERSION = 1;
const ID_BYTES = 16;
const MAC_BYTES = 16;
const TOKEN_BYTES = 1 + ID_BYTES + MAC_BYTES;
const TOKEN_CHARS = Math.ceil((TOKEN_BYTES * 8) / 6);

/**
 * Keyset pagination over id-ordered rows. A page token carries the last id it showed and
 * an HMAC over that id and the call's scope (method, caller, filter), so a token that was
 * altered, or made for another call or filter, is refused instead of silently misread.
 * Paging by id rather than offset means rows created or deleted meanwhile never make a
 * walk repeat an item or skip one that existed throughout.
 */
export class Pager {
  constructor(private readonly key: Buffer) {}

  /**
   * Checks `pagination.page_size` and `pagination.token`, adding violations to `v`.
   * Answers how many rows to fetch (one more than the page, to learn whether another
   * page follows) and the id to start after.
   */
  start(v: Violations, scope: string, req: PageRequest): { size: number; after: string | null } {
    let size = DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(req.pageSize)) {
      v.add("pagination.page_size", "int32.valid", "must be a whole number from 0 to 100");
    } else if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) {
      v.add("pagination.page_size", "int32.range", `must be from 0 to ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE}), got ${req.pageSize}`);
    } else if (req.pageSize > 0) {
      size = req.pageSize;
    }
    let after: string | null = null;
    if (req.token !== "") {
      after = this.open(scope, req.token);
      if (after === null) {
        v.add(
          "pagination.token",
          "page_token.valid",
          "is not a next_token this call issued: it was altered, or it was made for another call, caller or filter; start again without a token",
        );
      }
    }
    return { size, after };
  }

  /** Cuts `rows` (fetched with `size + 1`) to a page and signs the token for the next one. */
  page<T extends { id: string }>(scope: string, rows: T[], size: number): Page<T> {
    if (rows.length <= size) return { items: rows, nextToken: "" };
    const items = rows.slice(0, size);
    return { items, nextToken: this.seal(scope, items[items.length - 1]!.id) };
  }

  private seal(scope: string, lastId: string): string {
    const body = Buffer.alloc(1 + ID_BYTES);
    body[0] = VERSION;
    Buffer.from(lastId.replaceAll("-", ""), "hex").copy(body, 1);
    return Buffer.concat([body, this.mac(scope, body)]).toString("base64url");
  }

  private open(scope: string, token: string): string | null {
    if (token.length !== TOKEN_CHARS || !/^[A-Za-z0-9_-]+$/.test(token)) return null;
    const raw = Buffer.from(token, "base64url");
    // Exactly the encoding seal() makes: base64url decoding ignores stray trailing bits.
    if (raw.length !== TOKEN_BYTES || raw[0] !== VERSION || raw.toString("base64url") !== token) return null;
    const body = raw.subarray(0, 1 + ID_BYTES);
    if (!timingSafeEqual(raw.subarray(1 + ID_BYTES), this.mac(scope, body))) return null;
    const h = body.subarray(1).toString("hex");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  private mac(scope: string, body: Buffer): Buffer {
    return createHmac("sha256", this.key).update(body).update("\0").update(scope).digest().subarray(0, MAC_BYTES);
  }
}

/** The scope a token is bound to: the method, who may use it, and the filter in a canonical order. */
export function pageScope(method: string, owner: string, filter: readonly string[] = []): string {
  return [method, owner, ...[...filter].sort()].join("\n");
}
