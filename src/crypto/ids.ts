import { randomBytes } from "node:crypto";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether `s` is a uuid in its canonical lower-case text form. */
export function isUuid(s: string): boolean {
  return UUID.test(s);
}

/**
 * A new UUIDv7 (RFC 9562): 48 bits of milliseconds, then random bits. Ids made later
 * sort later, so inserts land at the end of id-ordered indexes and keyset pages
 * follow creation order.
 */
export function newId(now = Date.now()): string {
  const b = randomBytes(16);
  b.writeUIntBE(now, 0, 6);
  b[6] = 0x70 | (b[6]! & 0x0f);
  b[8] = 0x80 | (b[8]! & 0x3f);
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
