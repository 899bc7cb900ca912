import { randomBytes } from "node:crypto";
import { eq } from "drizzle-orm";
import type { Db } from "./database.js";
import { serviceSecrets } from "./schema.js";

/**
 * The secret stored under `name`, made (32 random bytes) the first time it is
 * asked for: read, else insert-or-ignore and read again, so processes starting together
 * agree on one.
 */
export function serviceSecret(db: Db, name: string): Buffer {
  // Read first: once it exists, a start needs no write lock (another worker may hold it).
  const existing = db.select().from(serviceSecrets).where(eq(serviceSecrets.name, name)).get();
  if (existing) return existing.value;
  db.insert(serviceSecrets)
    .values({ name, value: randomBytes(32), createdAt: Date.now() })
    .onConflictDoNothing()
    .run();
  const row = db.select().from(serviceSecrets).where(eq(serviceSecrets.name, name)).get();
  if (!row) throw new Error(`service secret ${name} could not be stored`);
  return row.value;
}
