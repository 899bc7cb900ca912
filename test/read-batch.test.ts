import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { openDatabase, type Db } from "../src/store/database.js";
import { organizations } from "../src/store/schema.js";

const names = (db: Db) => db.select({ name: organizations.name }).from(organizations).all().map((r) => r.name).sort();

// The reads of a turn run together at its end, in one read transaction (src/store/read-batch.ts).
describe("read batches", () => {
  let dir: string;
  let db: Db;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "scm-reads-"));
    db = openDatabase(join(dir, "reads.db"));
  });
  after(() => {
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs a turn's reads after the turn, one after another, in one transaction that has ended once they are answered", async () => {
    const seen: { order: number; inTransaction: boolean }[] = [];
    let order = 0;
    const reads = [1, 2, 3].map(() => db.read(() => seen.push({ order: order++, inTransaction: db.$client.inTransaction })));
    assert.equal(seen.length, 0, "nothing ran while the turn was still going");
    await Promise.all(reads);
    assert.deepEqual(seen, [0, 1, 2].map((o) => ({ order: o, inTransaction: true })));
    assert.equal(db.$client.inTransaction, false, "the read transaction does not outlive its batch");
  });

  it("fails only the read that threw; the others of its batch are answered", async () => {
    const results = await Promise.allSettled([
      db.read(() => "first"),
      db.read(() => {
        throw new Error("this read fails");
      }),
      db.read(() => names(db).length),
    ]);
    assert.equal(results[0].status, "fulfilled");
    assert.equal((results[0] as PromiseFulfilledResult<string>).value, "first");
    assert.equal(results[1].status, "rejected");
    assert.equal(((results[1] as PromiseRejectedResult).reason as Error).message, "this read fails");
    assert.equal(results[2].status, "fulfilled");
  });

  it("sees every write acknowledged before it, this process's and another connection's", async () => {
    await db.write(() => db.insert(organizations).values({ id: "o-1", name: "written-here", createdAt: 1 }).run());
    assert.ok((await db.read(() => names(db))).includes("written-here"));

    const other = new Database(db.$client.name);
    try {
      other.prepare("INSERT INTO organizations (id, name, created_at) VALUES ('o-2', 'written-elsewhere', 2)").run();
    } finally {
      other.close();
    }
    assert.ok((await db.read(() => names(db))).includes("written-elsewhere"));
  });

  it("does not hold back writes: a write queued beside reads commits in the same turn", async () => {
    const [before, , afterwards] = await Promise.all([
      db.read(() => names(db)),
      db.write(() => db.insert(organizations).values({ id: "o-3", name: "beside-reads", createdAt: 3 }).run()),
      db.read(() => names(db)),
    ]);
    // A read transaction left open would make the write's BEGIN IMMEDIATE fail on this
    // connection (and Promise.all reject). Both reads ran in one batch, never around the write.
    assert.deepEqual(before, afterwards);
    assert.ok((await db.read(() => names(db))).includes("beside-reads"));
  });
});
