import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isUuid, newId, uuidFromBytes, uuidToBytes } from "../src/crypto/ids.js";

describe("ids (src/crypto/ids.ts)", () => {
  it("a uuid is its 36 characters and nothing around them, in either case", () => {
    const id = newId();
    assert.ok(isUuid(id));
    assert.ok(isUuid(id.toUpperCase()));
    for (const bad of [`${id}0`, `${id}-0`, `0${id}`, ` ${id}`, `${id}\n`, id.slice(0, -1), id.replaceAll("-", "")]) {
      assert.equal(isUuid(bad), false, JSON.stringify(bad));
    }
  });

  it("newId is a UUIDv7 (RFC 9562): version 7, variant 10, the milliseconds in its first 48 bits, big-endian", () => {
    const now = 0x0190_a0b1_c2d3;
    for (let i = 0; i < 64; i++) {
      const id = newId(now);
      assert.match(id, /^0190a0b1-c2d3-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, id);
    }
    // Ids made later sort later.
    assert.ok(newId(now) < newId(now + 1));
    assert.ok(newId(now + 255) < newId(now + 256));
  });

  it("ids made in the same millisecond differ", () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newId(1_700_000_000_000)));
    assert.equal(ids.size, 1000);
  });

  it("the bytes of an id and its text go both ways", () => {
    const id = newId();
    const bytes = uuidToBytes(id.toUpperCase());
    assert.equal(bytes.length, 16);
    assert.equal(uuidFromBytes(bytes), id);
  });
});
