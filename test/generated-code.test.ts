import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { it } from "node:test";

const buf = join("node_modules", ".bin", "buf");
const env = { ...process.env, PATH: `${join(process.cwd(), "node_modules", ".bin")}:${process.env.PATH}` };

it("gen/ is what `buf generate` makes from proto/ now", () => {
  const out = mkdtempSync(join(tmpdir(), "gen-check-"));
  try {
    execFileSync(buf, ["generate", "-o", out], { env, stdio: "pipe" });
    const fresh = files(join(out, "gen"));
    const committed = files("gen");
    assert.deepEqual([...committed.keys()].sort(), [...fresh.keys()].sort(), "same files; run npm run generate");
    for (const [name, text] of fresh) assert.equal(committed.get(name), text, `gen/${name} is stale; run npm run generate`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

it("buf lint passes", () => {
  execFileSync(buf, ["lint"], { env, stdio: "pipe" });
});

function files(root: string): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else found.set(relative(root, path), readFileSync(path, "utf8"));
    }
  };
  walk(root);
  return found;
}
