/**
 * `Uint8Array.prototype.toBase64` (ECMAScript 2026) for runtimes that lack it, as Node 20
 * does. protobuf-es encodes every `bytes` field of a JSON answer with it when the runtime
 * has it, and otherwise with a loop in JavaScript that builds the string a character at
 * a time. A page of 25 integrations carries 25 sealed secrets: with the native path its
 * JSON encoding costs about half as much (BENCHMARKS.md).
 *
 * protobuf-es looks the method up once, when it is first imported, so this module must be
 * imported before anything that imports @bufbuild/protobuf: it is the first import of
 * serving.ts and server.ts. Where the runtime has the method already, nothing changes.
 */
interface ToBase64Options {
  alphabet?: "base64" | "base64url";
  omitPadding?: boolean;
}

type WithToBase64 = Uint8Array & { toBase64?: (options?: ToBase64Options) => string };

export function toBase64(bytes: Uint8Array, options?: ToBase64Options): string {
  const alphabet = options?.alphabet ?? "base64";
  if (alphabet !== "base64" && alphabet !== "base64url") {
    throw new TypeError(`toBase64: alphabet must be "base64" or "base64url", got ${String(alphabet)}`);
  }
  // Node's "base64" pads and its "base64url" does not; the standard pads both unless told not to.
  // A Buffer (as sealed secrets read from the database are) is encoded as it is; another
  // Uint8Array through a Buffer view of its memory, which costs about as much as the encoding.
  const text = (bytes instanceof Buffer ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString(alphabet);
  if (options?.omitPadding) return alphabet === "base64" ? text.replace(/=+$/, "") : text;
  return alphabet === "base64url" ? text + "=".repeat((4 - (text.length % 4)) % 4) : text;
}

if (typeof (Uint8Array.prototype as WithToBase64).toBase64 !== "function") {
  Object.defineProperty(Uint8Array.prototype, "toBase64", {
    value: function (this: Uint8Array, options?: ToBase64Options) {
      return toBase64(this, options);
    },
    writable: true,
    configurable: true,
    enumerable: false,
  });
}
