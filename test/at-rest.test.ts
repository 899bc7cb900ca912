import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { openDatabase } from "../src/store/database.js";
import { call, createRunner, signUp, startServer } from "./harness.js";

// What the database file keeps of data the service has let go of.

const CFG = "gitpod.v1.RunnerConfigurationService";

it("a ciphertext dropped on a key change, or deleted with its integration, is not left in the file's free space", async () => {
  const s = await startServer();
  try {
    const { runnerId, runnerToken } = await createRunner(s);
    await signUp(s, runnerToken);
    const ids: string[] = [];
    for (const host of ["kept.example.com", "deleted.example.com"]) {
      const r = await call(s, `${CFG}/CreateSCMIntegration`, { runnerId, scmId: "github", host, oauthClientId: "app", oauthPlaintextClientSecret: `secret of ${host}` });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      ids.push(r.body.id);
    }
    const listed = await call(s, "gitpod.v1.RunnerInteractionService/ListRunnerSCMIntegrations", { runnerId }, runnerToken);
    const boxes = (listed.body.scmIntegrations as any[]).map((i) => Buffer.from(i.oauth.encryptedClientSecret, "base64"));
    assert.equal(boxes.length, 2);
    // What the main file holds once every commit is copied into it. The service's own
    // checkpointer may hold the checkpoint lock at that moment: then it is tried again.
    const mainFile = () => {
      for (let i = 0; i < 200; i++) {
        const [done] = s.db.$client.pragma("wal_checkpoint(TRUNCATE)") as { busy: number }[];
        if (done!.busy === 0) return readFileSync(s.db.$client.name);
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
      throw new Error("the WAL could not be copied into the file in 2 s");
    };
    for (const box of boxes) assert.ok(mainFile().includes(box), "stored, the ciphertext is in the file (the search can find it)");

    assert.equal((await call(s, `${CFG}/DeleteSCMIntegration`, { id: ids[1] })).status, 200);
    await signUp(s, runnerToken); // a new key: the other ciphertext is dropped
    const shown = (await call(s, `${CFG}/GetSCMIntegration`, { id: ids[0] })).body.integration;
    assert.equal(shown.oauth.encryptedClientSecret ?? "", "");
    const file = mainFile();
    boxes.forEach((box, i) => assert.ok(!file.includes(box), `the ${["dropped", "deleted"][i]} ciphertext is overwritten`));
  } finally {
    await s.close();
  }
});

it("a new database, its folder, WAL and shared-memory file are the service user's alone", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-mode-"));
  try {
    const file = join(dir, "made", "here.db");
    const db = openDatabase(file);
    try {
      db.$client.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
      assert.equal(statSync(join(dir, "made")).mode & 0o777, 0o700);
      for (const f of [file, `${file}-wal`, `${file}-shm`]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
    } finally {
      db.$client.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("folders several levels deep made for a new database are each made, and each the service user's alone", () => {
  const dir = mkdtempSync(join(tmpdir(), "scm-mode-deep-"));
  try {
    const file = join(dir, "a", "b", "c", "here.db");
    const db = openDatabase(file);
    try {
      db.$client.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
      for (const d of ["a", "a/b", "a/b/c"]) assert.equal(statSync(join(dir, d)).mode & 0o777, 0o700, d);
      assert.equal(statSync(file).mode & 0o777, 0o600);
    } finally {
      db.$client.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
