// In a file of its own: the choice is for the whole process, made before its first seal.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { it } from "node:test";
import { newKeyPair, open } from "../src/crypto/sealed-box.js";
import { sealOffLoop, sealOnEventLoop, sealingPlace } from "../src/crypto/seal-worker.js";

const threads = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync("/proc/self/status", "utf8"))![1]);

it("sealing on the event loop (as many workers as cores): every box opens, a refused key fails alone, and no thread is started", async () => {
  assert.equal(sealingPlace(), "thread", "a process seals in a thread unless told otherwise");
  sealOnEventLoop();
  assert.equal(sealingPlace(), "event loop");
  const before = threads();
  const keys = Array.from({ length: 20 }, () => newKeyPair());
  const refused = 7;
  const results = await Promise.allSettled(keys.map((k, i) => sealOffLoop(`here-${i}`, i === refused ? Buffer.alloc(32) : k.publicKey)));
  results.forEach((r, i) => {
    if (i === refused) return assert.equal(r.status, "rejected", "the refused key's job fails");
    assert.equal(r.status, "fulfilled", `job ${i}`);
    assert.equal(open((r as PromiseFulfilledResult<Buffer>).value, keys[i]!.publicKey, keys[i]!.secretKey), `here-${i}`);
  });
  assert.equal(threads(), before, "no sealing thread was started");
});
