import { defineConfig } from "drizzle-kit";

// Migrations are generated from src/store/schema.ts with `npm run db:generate`,
// committed under drizzle/, and applied by the service at start.
export default defineConfig({
  dialect: "sqlite",
  schema: "./src/store/schema.ts",
  out: "./drizzle",
});
