import sodium from "sodium-native";

export const PUBLIC_KEY_BYTES = sodium.crypto_box_PUBLICKEYBYTES;

/** Seals `plaintext` to an X25519 public key (libsodium crypto_box_seal). */
export function seal(plaintext: string, publicKey: Buffer): Buffer {
  const message = Buffer.from(plaintext, "utf8");
  const out = Buffer.alloc(message.length + sodium.crypto_box_SEALBYTES);
  sodium.crypto_box_seal(out, message, publicKey);
  return out;
}

/** Opens a sealed box with the key pair it was sealed to; null when it does not open. */
export function open(ciphertext: Buffer, publicKey: Buffer, secretKey: Buffer): string | null {
  if (ciphertext.length < sodium.crypto_box_SEALBYTES) return null;
  const out = Buffer.alloc(ciphertext.length - sodium.crypto_box_SEALBYTES);
  const ok = sodium.crypto_box_seal_open(out, ciphertext, publicKey, secretKey);
  return ok ? out.toString("utf8") : null;
}

/** A new X25519 key pair, as a runner makes one. */
export function newKeyPair(): { publicKey: Buffer; secretKey: Buffer } {
  const publicKey = Buffer.alloc(sodium.crypto_box_PUBLICKEYBYTES);
  const secretKey = Buffer.alloc(sodium.crypto_box_SECRETKEYBYTES);
  sodium.crypto_box_keypair(publicKey, secretKey);
  return { publicKey, secretKey };
}

/**
 * Whether a 32-byte X25519 public key is usable: a key of small order (all zeros and
 * the other low-order points) makes every shared secret predictable, so anything
 * sealed to it could be opened by anyone. Multiplying by a random scalar yields zero
 * exactly for those keys, and libsodium refuses that result.
 */
export function isUsablePublicKey(key: Uint8Array): boolean {
  if (key.length !== sodium.crypto_box_PUBLICKEYBYTES) return false;
  const scalar = Buffer.alloc(sodium.crypto_scalarmult_SCALARBYTES);
  sodium.randombytes_buf(scalar);
  const out = Buffer.alloc(sodium.crypto_scalarmult_BYTES);
  try {
    sodium.crypto_scalarmult(out, scalar, Buffer.from(key));
  } catch {
    return false;
  }
  return !out.every((b) => b === 0);
}
