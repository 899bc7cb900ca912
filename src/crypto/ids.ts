import { randomFillSync } from "node:crypto";

// Either case: RFC 9562 reads the hex digits without regard to case, and some platforms
// write them in upper case. Ids are stored and answered in lower case.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `s` is a uuid in its text form, in either case. */
export function isUuid(s: string): boolean {
  return UUID.test(s);
}

/**
 * A new UUIDv7 (RFC 9562): 48 bits of milliseconds, then random bits. Ids made later
 * sort later, so inserts land at the end of id-ordered indexes and keyset pages
 * follow creation order.
 */
export function newId(now = Date.now()): string {
  const b = random10();
  b.writeUIntBE(now, 0, 6);
  // random10() fills bytes 6..15; the version and variant bits go over two of them.
  b[6] = 0x70 | (b[6]! & 0x0f);
  b[8] = 0x80 | (b[8]! & 0x3f);
  return uuidFromBytes(b);
}

/** The 16 bytes of a uuid given in its text form. */
export function uuidToBytes(id: string): Buffer {
  return Buffer.from(id.replaceAll("-", ""), "hex");
}

/** A uuid's text form, in lower case, from its 16 bytes. */
export function uuidFromBytes(bytes: Buffer): string {
  const h = bytes.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Drawing 16 random bytes per id from the OS costs more than the rest of an insert, so
// ids draw from a pool refilled 4 KiB at a time. Each byte is handed out once.
const POOL = Buffer.alloc(4096);
let used = POOL.length;

/** 16 bytes whose last 10 are fresh random bytes (the first 6 become the timestamp). */
function random10(): Buffer {
  if (used + 10 > POOL.length) {
    randomFillSync(POOL);
    used = 0;
  }
  const out = Buffer.alloc(16);
  out.set(POOL.subarray(used, used + 10), 6);
  used += 10;
  return out;
}
