// Compiles wal-gather.c (see there) into build/wal-gather.so with the C compiler that
// better-sqlite3's own build uses, against the SQLite headers it ships. Run by npm's
// postinstall and by `npm run build`. Without a compiler the service still runs, its WAL
// written as SQLite writes it (the start's log line says which), so a failure here warns
// and does not stop the install.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const source = join(root, "src", "store", "native", "wal-gather.c");
const target = join(root, "build", "wal-gather.so");

function main() {
  if (existsSync(target) && statSync(target).mtimeMs >= statSync(source).mtimeMs) return;
  const headers = join(dirname(createRequire(join(root, "package.json")).resolve("better-sqlite3/package.json")), "deps", "sqlite3");
  mkdirSync(dirname(target), { recursive: true });
  const partial = `${target}.${process.pid}`;
  // $CC as make takes it: a command with its own arguments (CC="ccache gcc", CC="gcc -m64").
  const [cc, ...ccArgs] = (process.env.CC || "cc").trim().split(/\s+/);
  try {
    execFileSync(cc, [...ccArgs, "-O2", "-fPIC", "-shared", "-Wall", "-I", headers, "-o", partial, source], { stdio: ["ignore", "inherit", "pipe"] });
    renameSync(partial, target);
  } catch (err) {
    rmSync(partial, { force: true });
    // A library built from an older source is not used in its place: the service then runs
    // without one, as the line below says.
    rmSync(target, { force: true });
    // The compiler's first line, else how it ended: one that fails without a word still says so.
    const said = String(err.stderr ?? "").trim().split("\n")[0];
    const detail = said || (typeof err.status === "number" ? `${cc} exited with code ${err.status}` : String(err.message).split("\n")[0]);
    process.stderr.write(`warning: could not build ${target} (${detail}); the service runs without gathering its WAL writes\n`);
  }
}

main();
