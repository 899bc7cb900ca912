import {
  blob,
  index,
  integer,
  primaryKey,
  sqliteTable,
  text,
  uniqueIndex,
} from "drizzle-orm/sqlite-core";

// Times are milliseconds since the epoch; ids are uuids (v7, so new rows append to
// the end of every id-ordered index).

export const organizations = sqliteTable("organizations", {
  id: text("id").primaryKey(),
  name: text("name").notNull().unique(),
  createdAt: integer("created_at").notNull(),
});

export const apiTokens = sqliteTable(
  "api_tokens",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => organizations.id, { onDelete: "cascade" }),
    // SHA-256 of the token; the token itself is never stored.
    tokenHash: blob("token_hash", { mode: "buffer" }).notNull().unique(),
    createdAt: integer("created_at").notNull(),
    revokedAt: integer("revoked_at"),
  },
  (t) => [index("api_tokens_org_idx").on(t.orgId, t.id)],
);

export const runners = sqliteTable(
  "runners",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => organizations.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    kind: integer("kind").notNull(),
    provider: integer("provider").notNull(),
    // The API token that created the runner.
    creatorId: text("creator_id").notNull(),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    // SHA-256 of the runner's current access token.
    accessTokenHash: blob("access_token_hash", { mode: "buffer" }).notNull().unique(),
    // The X25519 key from the runner's latest Signup; null until it signs up.
    publicKey: blob("public_key", { mode: "buffer" }),
    statusUpdatedAt: integer("status_updated_at"),
    // The schema the runner published, as JSON; null means the built-in default.
    configSchema: text("config_schema"),
    // While secrets sealed to the runner's earlier keys are still being dropped, a bounded
    // number a write (services/runners.ts signup), the number of the latest Signup that
    // changed the key, whose walk alone clears it; 0 once none are left. A Signup that finds
    // it set goes on with that walk.
    secretsWalk: integer("secrets_walk").notNull().default(0),
    // Set by DeleteRunner's first step: a runner being deleted takes no new integrations, so
    // that its steps (a bounded number of rows each) come to an end.
    deleting: integer("deleting", { mode: "boolean" }).notNull().default(false),
  },
  (t) => [index("runners_org_idx").on(t.orgId, t.id)],
);

// A rowid table whose integer key is made from the id (migration 0007; see keyOf in
// scm-integrations.ts): a Get is one lookup in a shallow b-tree, where the table keyed by
// id (0004) held whole rows in its interior pages and was eight levels deep at a million rows.
// The key column, `key INTEGER PRIMARY KEY`, is not declared here: drizzle would read it
// into a number, which cannot hold 62 bits. drizzle-kit cannot express it, nor the triggers
// of migration 0005, so a generated migration that recreates this table must add both back.
export const scmIntegrations = sqliteTable(
  "scm_integrations",
  {
    id: text("id").notNull(),
    orgId: text("org_id").notNull(),
    runnerId: text("runner_id")
      .notNull()
      .references(() => runners.id, { onDelete: "cascade" }),
    scmId: text("scm_id").notNull(),
    host: text("host").notNull(),
    pat: integer("pat", { mode: "boolean" }).notNull(),
    oauthClientId: text("oauth_client_id"),
    // crypto_box_seal of the client secret to `oauthSealedTo`.
    oauthEncryptedSecret: blob("oauth_encrypted_secret", { mode: "buffer" }),
    // The runner public key the secret was sealed to, so a later key change is seen.
    oauthSealedTo: blob("oauth_sealed_to", { mode: "buffer" }),
    issuerUrl: text("issuer_url"),
    virtualDirectory: text("virtual_directory"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    // Every id once; and where an id's key was taken by another (keyOf), the way to its row.
    uniqueIndex("scm_integrations_id_idx").on(t.id),
    index("scm_integrations_org_idx").on(t.orgId, t.id),
    // A runner's integrations in host order, read from this index alone: it holds every
    // column a read shows, so a page of 25 is a few adjacent index pages instead of 25
    // lookups in the table, where a runner's rows lie wherever they were appended over time.
    // It also keeps one integration per host and runner: SQLite has no unique index with
    // extra columns, so triggers (migration 0005, which drizzle-kit cannot express either)
    // refuse a second (runner_id, host), looking it up here. One index where there were two
    // (a unique one on (runner_id, host) and this one in id order): each is written at a
    // random place by every create, which on a large table is most of what a create costs
    // (BENCHMARKS.md, "Create growth").
    index("scm_integrations_runner_host_idx").on(
      t.runnerId,
      t.host,
      t.id,
      t.scmId,
      t.pat,
      t.oauthClientId,
      t.oauthEncryptedSecret,
      t.oauthSealedTo,
      t.issuerUrl,
      t.virtualDirectory,
    ),
  ],
);

// Keys the service makes for itself on first start and shares between its processes,
// e.g. the one that signs page tokens.
export const serviceSecrets = sqliteTable("service_secrets", {
  name: text("name").primaryKey(),
  value: blob("value", { mode: "buffer" }).notNull(),
  createdAt: integer("created_at").notNull(),
});

// Successful creates made with an Idempotency-Key header, so a retry gets the first
// answer. `fingerprint` is an HMAC of the request, never the request itself: it holds
// a plaintext client secret.
export const idempotencyKeys = sqliteTable(
  "idempotency_keys",
  {
    // Whose key it is, e.g. `api:<token id>`: keys of different callers never meet.
    scope: text("scope").notNull(),
    key: text("key").notNull(),
    fingerprint: blob("fingerprint", { mode: "buffer" }).notNull(),
    resultId: text("result_id").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.scope, t.key] }), index("idempotency_keys_created_idx").on(t.createdAt)],
);

export type OrganizationRow = typeof organizations.$inferSelect;
export type ApiTokenRow = typeof apiTokens.$inferSelect;
export type RunnerRow = typeof runners.$inferSelect;
export type ScmIntegrationRow = typeof scmIntegrations.$inferSelect;
export type NewScmIntegrationRow = typeof scmIntegrations.$inferInsert;

export type IdempotencyKeyRow = typeof idempotencyKeys.$inferSelect;
