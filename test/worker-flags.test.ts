import assert from "node:assert/strict";
import { it } from "node:test";
import { workerNodeFlags } from "../src/worker-flags.js";

it("workers run with the primary's node flags, their heap growth set to 50% in place of the primary's", () => {
  assert.deepEqual(workerNodeFlags(["--max-semi-space-size=16", "--heap-growing-percent=100", "--v8-pool-size=1"]), ["--max-semi-space-size=16", "--v8-pool-size=1", "--heap-growing-percent=50"]);
  assert.deepEqual(workerNodeFlags(["--import", "tsx", "--heap_growing_percent=80"]), ["--import", "tsx", "--heap-growing-percent=50"]);
  assert.deepEqual(workerNodeFlags([]), ["--heap-growing-percent=50"]);
});
