import { existsSync, readFileSync } from "node:fs";

// Sums what every test server's leak watch found (see secret-watch.ts); `npm test`
// runs this after the tests and fails when anything leaked or nothing was watched.
const file = process.argv[2] ?? "";
const lines = existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : [];
const total = { servers: 0, tokens: 0, secrets: 0, skipped: 0, responses: 0, bytes: 0, leaks: 0 };
let plantedFound = 0;
for (const line of lines) {
  const r = JSON.parse(line) as Omit<typeof total, "servers"> & { planted: boolean };
  // Leaks planted to prove the watch works are counted apart.
  if (r.planted) {
    plantedFound += r.leaks;
    continue;
  }
  total.servers++;
  total.tokens += r.tokens;
  total.secrets += r.secrets;
  total.skipped += r.skipped;
  total.responses += r.responses;
  total.bytes += r.bytes;
  total.leaks += r.leaks;
}
process.stdout.write(
  `leak watch: ${total.servers} test servers; ${total.tokens} tokens and ${total.secrets} client secrets searched ` +
    `(${total.skipped} too short or echoed in stored fields, not searched) in the database files, logs and ` +
    `${total.responses} responses, ${(total.bytes / 1e6).toFixed(1)} MB; leaks found: ${total.leaks} ` +
    `(and ${plantedFound} of the leaks planted on purpose)\n`,
);
if (total.servers === 0 || total.leaks > 0 || plantedFound === 0) process.exit(1);
