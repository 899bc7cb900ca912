import { createHmac, timingSafeEqual } from "node:crypto";
import type { Violations } from "../domain/errors.js";
import { uuidFromBytes, uuidToBytes } from "../crypto/ids.js";

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

const MAC_BYTES = 16;
const ID_BYTES = 16;
/** The most a token's cursor may take: a runner id and a host of up to 255 characters, as UTF-8. */
const MAX_CURSOR_BYTES = ID_BYTES + 4 * 255;
/** The longest token seal() can make; longer ones are refused unread. */
const MAX_TOKEN_CHARS = Math.ceil(((1 + MAX_CURSOR_BYTES + MAC_BYTES) * 8) / 6);

/**
 * An order a list is read in, and how a page token names the place in it where the next
 * page starts: the key of the last item shown. Each order has its own version byte in the
 * token, so that a token of one order is never read as another's.
 */
export interface Order<T, C> {
  version: number;
  cursorOf(item: T): C;
  encode(cursor: C): Buffer;
  /** null for bytes no cursor of this order encodes to. */
  decode(bytes: Buffer): C | null;
}

/** Id order (UUIDv7, so creation order): the cursor is the last id shown. */
export const ID_ORDER: Order<{ id: string }, string> = {
  version: 1,
  cursorOf: (item) => item.id,
  encode: uuidToBytes,
  decode: (bytes) => (bytes.length === ID_BYTES ? uuidFromBytes(bytes) : null),
};

/** Where a page in runner-then-host order ends. */
export interface RunnerHost {
  runnerId: string;
  host: string;
}

/** By runner id, then by host within a runner: the cursor is the last pair shown. */
export const RUNNER_HOST_ORDER: Order<RunnerHost, RunnerHost> = {
  version: 2,
  cursorOf: (item) => ({ runnerId: item.runnerId, host: item.host }),
  encode: (c) => Buffer.concat([uuidToBytes(c.runnerId), Buffer.from(c.host, "utf8")]),
  decode(bytes) {
    if (bytes.length <= ID_BYTES) return null;
    const host = bytes.subarray(ID_BYTES).toString("utf8");
    // Bytes that are not the UTF-8 of the text they decode to were never made by encode.
    if (!Buffer.from(host, "utf8").equals(bytes.subarray(ID_BYTES))) return null;
    return { runnerId: uuidFromBytes(bytes.subarray(0, ID_BYTES)), host };
  },
};

/**
 * Keyset pagination. A page token carries the key of the last item it showed, in the
 * list's order, and an HMAC over that key and the call's scope (method, caller, filter), so
 * a token that was altered, or made for another call or filter, is refused instead of
 * silently misread. Paging by key rather than offset means rows created or deleted
 * meanwhile never make a walk repeat an item or skip one that existed throughout.
 */
export class Pager {
  constructor(private readonly key: Buffer) {}

  /**
   * Checks `pagination.page_size` and `pagination.token`, adding violations to `v`.
   * Answers how many rows to fetch (one more than the page, to learn whether another
   * page follows) and the key to start after.
   */
  start<C>(v: Violations, scope: string, req: PageRequest, order: Order<never, C>): { size: number; after: C | null } {
    let size = DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(req.pageSize)) {
      v.add("pagination.page_size", "int32.valid", `must be a whole number from 0 to ${MAX_PAGE_SIZE}`);
    } else if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) {
      v.add("pagination.page_size", "int32.range", `must be from 0 to ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE}), got ${req.pageSize}`);
    } else if (req.pageSize > 0) {
      size = req.pageSize;
    }
    let after: C | null = null;
    if (req.token !== "") {
      after = this.open(scope, req.token, order);
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
  page<T extends K, K, C>(scope: string, rows: T[], size: number, order: Order<K, C>): Page<T> {
    if (rows.length <= size) return { items: rows, nextToken: "" };
    const items = rows.slice(0, size);
    return { items, nextToken: this.seal(scope, order.version, order.encode(order.cursorOf(items[items.length - 1]!))) };
  }

  private seal(scope: string, version: number, cursor: Buffer): string {
    const body = Buffer.concat([Buffer.of(version), cursor]);
    return Buffer.concat([body, this.mac(scope, body)]).toString("base64url");
  }

  private open<C>(scope: string, token: string, order: Order<never, C>): C | null {
    if (token.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+$/.test(token)) return null;
    const raw = Buffer.from(token, "base64url");
    // Exactly the encoding seal() makes: base64url decoding ignores stray trailing bits.
    if (raw.length <= 1 + MAC_BYTES || raw[0] !== order.version || raw.toString("base64url") !== token) return null;
    const body = raw.subarray(0, raw.length - MAC_BYTES);
    if (!timingSafeEqual(raw.subarray(body.length), this.mac(scope, body))) return null;
    return order.decode(body.subarray(1));
  }

  private mac(scope: string, body: Buffer): Buffer {
    return createHmac("sha256", this.key).update(body).update("\0").update(scope).digest().subarray(0, MAC_BYTES);
  }
}

/** The scope a token is bound to: the method, who may use it, and the filter in a canonical order. */
export function pageScope(method: string, owner: string, filter: readonly string[] = []): string {
  return [method, owner, ...[...filter].sort()].join("\n");
}
