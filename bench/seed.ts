import { newKeyPair, seal } from "../src/crypto/sealed-box.js";
import { newId } from "../src/crypto/ids.js";
import { newToken } from "../src/crypto/tokens.js";
import { createApiToken, createOrganization } from "../src/services/accounts.js";
import { openDatabase } from "../src/store/database.js";
import { insertScmIntegration } from "../src/store/scm-integrations.js";

export interface Seeded {
  token: string;
  /** Every runner id; all runners have signed up with a key. */
  runnerIds: string[];
  /** Integration ids spread evenly over the whole table (up to 100,000 of them), for Get. */
  integrationIds: string[];
}

/**
 * Fills a fresh database the fast way: prepared inserts (the service's own for integrations)
 * in large transactions with synchronous=OFF (the seed needs no durability). Ids are UUIDv7
 * made in order, one a millisecond, as a service makes them over time, so each row has the
 * key its id makes. Integrations are added to the runners in turn, as a live service gets
 * them over time, so that one runner's rows lie far apart in the table rather than next to
 * each other (which would flatter List). Every integration carries the same sealed secret,
 * which is enough for reading.
 */
export function seed(file: string, runners: number, integrations: number): Seeded {
  const db = openDatabase(file);
  const sqlite = db.$client;
  const orgId = createOrganization(db, "bench").id;
  const token = createApiToken(db, "bench").token;
  sqlite.pragma("synchronous = OFF");
  const keys = newKeyPair();
  const sealed = seal("bench-secret", keys.publicKey);
  const insertRunner = sqlite.prepare(
    `INSERT INTO runners (id, org_id, name, kind, provider, creator_id, created_at, updated_at, access_token_hash, public_key, status_updated_at)
     VALUES (?, ?, ?, 2, 2, 'seed', ?, ?, ?, ?, ?)`,
  );
  const runnerIds: string[] = [];
  const integrationIds: string[] = [];
  // A sample large enough that Gets touch the whole table, not a small part that stays cached.
  const sampleEvery = Math.max(1, Math.floor(integrations / 100_000));
  const now = Date.now();
  const start = now - integrations;
  sqlite.transaction(() => {
    for (let r = 0; r < runners; r++) {
      const runnerId = newId(now);
      runnerIds.push(runnerId);
      insertRunner.run(runnerId, orgId, `bench-runner-${r}`, now, now, newToken("runner").hash, keys.publicKey, now);
    }
  })();
  const batch = sqlite.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const r = i % runners;
      // One a millisecond, the last one now: each id's key is its own (store/scm-integrations.ts, keyOf).
      const at = start + i;
      const id = newId(at);
      if (i % sampleEvery === 0) integrationIds.push(id);
      insertScmIntegration(db, {
        id, orgId, runnerId: runnerIds[r]!, scmId: "github", host: `git${Math.floor(i / runners)}.r${r}.seed.example`, pat: true,
        oauthClientId: "seed-client", oauthEncryptedSecret: sealed, oauthSealedTo: keys.publicKey, issuerUrl: null, virtualDirectory: null, createdAt: at, updatedAt: at,
      });
    }
  });
  for (let i = 0; i < integrations; i += 50_000) batch(i, Math.min(integrations, i + 50_000));
  sqlite.pragma("wal_checkpoint(TRUNCATE)");
  sqlite.close();
  return { token, runnerIds, integrationIds };
}
