import assert from "node:assert/strict";
import { it } from "node:test";
import { newKeyPair, open } from "../src/crypto/sealed-box.js";
import { sealOffLoop } from "../src/crypto/seal-worker.js";

it("seals a turn's jobs in parts, each answer going to its own job; a refused key fails only its job", async () => {
  // More jobs than one message carries, all asked for in one turn, to different keys.
  const keys = Array.from({ length: 27 }, () => newKeyPair());
  const refused = 12; // an all-zero key: libsodium refuses to seal to a point of small order
  const results = await Promise.allSettled(
    keys.map((k, i) => sealOffLoop(`secret-${i}`, i === refused ? Buffer.alloc(32) : k.publicKey)),
  );
  results.forEach((r, i) => {
    if (i === refused) {
      assert.equal(r.status, "rejected", "the refused key's job fails");
      return;
    }
    assert.equal(r.status, "fulfilled", `job ${i}`);
    const box = (r as PromiseFulfilledResult<Buffer>).value;
    assert.equal(open(box, keys[i]!.publicKey, keys[i]!.secretKey), `secret-${i}`, `job ${i} got its own box`);
  });
});
