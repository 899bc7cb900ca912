import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
// Imported before the service's base64 module is loaded (below), so this is protobuf-es's
// own encoder in JavaScript: the reference the native path must match byte for byte.
import { base64Encode } from "@bufbuild/protobuf/wire";

type Encoding = "std" | "std_raw" | "url";
// How protobuf-es maps its encodings onto the standard method's options.
const OPTIONS = {
  std: { alphabet: "base64", omitPadding: false },
  std_raw: { alphabet: "base64", omitPadding: true },
  url: { alphabet: "base64url", omitPadding: true },
} as const;

describe("Uint8Array.prototype.toBase64 on Node 20 (src/runtime/base64.ts)", async () => {
  const { toBase64 } = await import("../src/runtime/base64.js");
  const method = (Uint8Array.prototype as Uint8Array & { toBase64?: (o?: object) => string }).toBase64;

  it("is installed", () => {
    assert.equal(typeof method, "function");
  });

  it("encodes as protobuf-es does, for every length around the 3-byte groups and every encoding", () => {
    for (let length = 0; length <= 130; length++) {
      const bytes = new Uint8Array(randomBytes(length));
      for (const encoding of ["std", "std_raw", "url"] as Encoding[]) {
        assert.equal(method!.call(bytes, OPTIONS[encoding]), base64Encode(bytes, encoding), `${length} bytes, ${encoding}`);
      }
    }
  });

  it("encodes a view into a larger buffer, not the whole buffer", () => {
    const whole = new Uint8Array(randomBytes(64));
    const view = whole.subarray(5, 21);
    assert.equal(method!.call(view), base64Encode(view, "std"));
    assert.equal(method!.call(view), Buffer.from(whole.slice(5, 21)).toString("base64"));
  });

  it("encodes a Buffer, also one in node's shared pool (as sealed secrets are read), like any Uint8Array", () => {
    for (let length = 0; length <= 40; length++) {
      const pooled = Buffer.from(randomBytes(length).toString("hex"), "hex");
      for (const encoding of ["std", "std_raw", "url"] as Encoding[]) {
        assert.equal(method!.call(pooled, OPTIONS[encoding]), base64Encode(new Uint8Array(pooled), encoding), `${length} bytes, ${encoding}`);
      }
    }
  });

  it("follows the standard's defaults and padding", () => {
    const bytes = new Uint8Array([0xfb, 0xff]);
    assert.equal(toBase64(bytes), "+/8=");
    assert.equal(toBase64(bytes, { alphabet: "base64url" }), "-_8=");
    assert.equal(toBase64(bytes, { alphabet: "base64url", omitPadding: true }), "-_8");
    assert.equal(toBase64(bytes, { omitPadding: true }), "+/8");
    assert.equal(toBase64(new Uint8Array(0)), "");
    // Whole 3-byte groups need no padding, in either alphabet.
    const whole = new Uint8Array([0xfb, 0xff, 0xbf]);
    assert.equal(toBase64(whole), "+/+/");
    assert.equal(toBase64(whole, { alphabet: "base64url" }), "-_-_");
    assert.equal(toBase64(new Uint8Array(0), { alphabet: "base64url" }), "");
    assert.throws(() => toBase64(bytes, { alphabet: "hex" as never }), TypeError);
  });
});
