import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { it } from "node:test";
import { newKeyPair, open } from "../src/crypto/sealed-box.js";
import { sealOffLoop, sealingPlace } from "../src/crypto/seal-worker.js";

const threads = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync("/proc/self/status", "utf8"))![1]);

it("seals a turn's jobs in parts, each answer going to its own job; a refused key fails only its job", async () => {
  // More jobs than one message carries, all asked for in one turn, to different keys.
  const keys = Array.from({ length: 27 }, () => newKeyPair());
  const refused = 12; // an all-zero key: libsodium refuses to seal to a point of small order
  const before = threads();
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
  assert.ok(threads() > before, "sealed in a thread started for it");
  assert.equal(sealingPlace(), "thread");
});

// After the test above: once the thread is given up, this process seals on its own thread.
it("when a part cannot be handed to the thread, every job of the turn is sealed here, those already handed over included, and so are later ones", async () => {
  // Twelve jobs: the first part of 8 goes to the thread; the second holds a key that cannot be
  // copied into a message (a Proxy), so handing it over fails and the thread is given up.
  const keys = Array.from({ length: 12 }, () => newKeyPair());
  const uncopyable = 9;
  const results = await Promise.allSettled(
    keys.map((k, i) => sealOffLoop(`fallback-${i}`, i === uncopyable ? (new Proxy(k.publicKey, {}) as Buffer) : k.publicKey)),
  );
  results.forEach((r, i) => {
    if (i === uncopyable) {
      assert.equal(r.status, "rejected", "the job that could not be handed over fails alone");
      return;
    }
    assert.equal(r.status, "fulfilled", `job ${i}`);
    const box = (r as PromiseFulfilledResult<Buffer>).value;
    assert.equal(open(box, keys[i]!.publicKey, keys[i]!.secretKey), `fallback-${i}`, `job ${i} got its own box`);
  });
  assert.equal(sealingPlace(), "event loop", "the thread given up");
  const later = await sealOffLoop("later", keys[0]!.publicKey);
  assert.equal(open(later, keys[0]!.publicKey, keys[0]!.secretKey), "later", "sealed here from now on");
});
