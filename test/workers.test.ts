// WORKERS=2: one port served by worker processes sharing one database, run as processes of their own.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { childrenRunning, until } from "./harness.js";
import type { SecretWatch } from "./secret-watch.js";
import { holdHttp1, startProcess, stopIfRunning } from "./service-process.js";

/**
 * How long a step of the workers' tests may take. Past it the step fails, naming itself and
 * showing the service's last output, instead of holding the run until the test's own timeout.
 */
const STEP_TIMEOUT_MS = 20_000;

/** `step` as it is, or an error naming `what` with the end of the service's output once STEP_TIMEOUT_MS pass. */
async function inTime<T>(what: string, state: { out: string; err: string }, step: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const signal = AbortSignal.timeout(STEP_TIMEOUT_MS);
  const timedOut = new Promise<never>((_, reject) =>
    signal.addEventListener("abort", () => reject(new Error(`${what}: nothing after ${STEP_TIMEOUT_MS} ms; the service's last output:\n${(state.out + state.err).slice(-2000)}`))),
  );
  return Promise.race([step(signal), timedOut]);
}

/** A Connect JSON call on a connection of its own, so that with workers any of them may answer it. */
function freshConnectionPost(watch: SecretWatch, port: number, token: string, state: { out: string; err: string }) {
  return (path: string, body: unknown) =>
    inTime(path, state, (signal) =>
      watch.fetch(`http://127.0.0.1:${port}/${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}`, connection: "close" },
        body: JSON.stringify(body),
        signal,
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as any })),
    );
}

/** Waits (up to 30 s) until `n` workers logged that they listen. */
async function workersListening(state: { out: string }, n: number): Promise<void> {
  for (let i = 0; i < 600 && (state.out.match(/"msg":"listening"/g) ?? []).length < n; i++) await new Promise((r) => setTimeout(r, 50));
}

it("WORKERS=2: a failed sync in one worker stops every worker, and a worker started after it too", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-workers-halt-"));
  const flag = join(dir, "fail-next-sync");
  try {
    const fixture = join(process.cwd(), "test", "fixtures", "fail-worker-sync.mjs");
    const { child, port, token, state, exited, watch, finish } = await startProcess(dir, {
      WORKERS: "2",
      FAIL_SYNC_FLAG: flag,
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${fixture}`,
    });
    t.after(() => stopIfRunning(child));
    const listeners = () => (state.out.match(/"msg":"listening"/g) ?? []).length;
    for (let i = 0; i < 600 && listeners() < 2; i++) await new Promise((r) => setTimeout(r, 50));
    const post = freshConnectionPost(watch, port, token!, state);
    const health = () => inTime("healthz", state, async (signal) => (await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { connection: "close" }, signal })).status);
    const runnerId = (await post("gitpod.v1.RunnerService/CreateRunner", { name: "halting", provider: "RUNNER_PROVIDER_AWS_EC2" })).body.runner.runnerId;

    writeFileSync(flag, "");
    const failed = await post("gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", { runnerId, scmId: "github", host: "lost.example.com", pat: true });
    // Committed, and not vouched for: of unknown outcome.
    assert.equal(failed.body.code, "unknown", JSON.stringify(failed.body));
    assert.equal(existsSync(flag), false, "one sync took the failure");
    // Whichever worker a new connection reaches: unavailable, and not healthy. The primary
    // says so, then tells the other worker, which may take a moment on a loaded machine: a
    // round of calls is tried again until every one of them is refused.
    await until("the primary tells every worker", () => state.out.includes("every worker refuses calls"), 10_000);
    const everyone = async () => {
      let answers: unknown[] = [];
      for (let round = 0; round < 20; round++) {
        answers = [];
        for (let i = 0; i < 8; i++) answers.push((await post("gitpod.v1.RunnerService/GetRunner", { runnerId })).body.code, await health());
        if (answers.every((a) => a === "unavailable" || a === 503)) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.fail(`some calls were still answered after 20 rounds: ${JSON.stringify(answers)}`);
    };
    await everyone();

    // A worker killed now is replaced by one that starts halted.
    process.kill(childrenRunning(child.pid!, "src/main.ts")[0]!, "SIGKILL");
    for (let i = 0; i < 600 && listeners() < 3; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(listeners(), 3, `a replacement listens; the service's last output:\n${(state.out + state.err).slice(-3000)}`);
    await everyone();

    child.kill("SIGTERM");
    assert.equal(await inTime("exit on SIGTERM", state, () => exited), 0);
    assert.match(state.out, /database left unclosed/);
    finish();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("WORKERS=2 serves one port from two processes sharing the database, and drains both on SIGTERM", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-workers-"));
  try {
    const { child, port, token, state, exited, watch, finish } = await startProcess(dir, { WORKERS: "2" });
    t.after(() => stopIfRunning(child));
    await workersListening(state, 2);
    const listening = [...state.out.matchAll(/"msg":"listening","address":"[^"]*:(\d+)"[^\n]*"worker":(\d+)/g)];
    assert.deepEqual(new Set(listening.map((m) => m[2])).size, 2, "two workers listen");
    assert.ok(listening.every((m) => Number(m[1]) === port), "on the same port");
    assert.ok(state.out.includes(`curl -sS http://127.0.0.1:${port}/gitpod.v1.RunnerService/CreateRunner`), "the example names the port the workers share");
    // Each worker seals on its own event loop when there is no core to spare for a thread,
    // and runs with the primary's node flags but for a heap growth of its own.
    const sealing = [...state.out.matchAll(/"msg":"listening"[^\n]*"sealing":"([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(sealing, Array(2).fill(availableParallelism() <= 2 ? "event loop" : "thread"));
    const workers = childrenRunning(child.pid!, "src/main.ts");
    assert.equal(workers.length, 2);
    for (const w of workers) {
      const argv = readFileSync(`/proc/${w}/cmdline`, "latin1").split("\0");
      assert.equal(argv.filter((a) => /heap.growing.percent/.test(a)).join(" "), "--heap-growing-percent=50", argv.join(" "));
      assert.ok(argv.includes("tsx"), `the primary's other flags too: ${argv.join(" ")}`);
    }

    // A write through one connection is seen by reads on fresh connections, whichever
    // worker they reach.
    const post = freshConnectionPost(watch, port, token!, state);
    const created = await post("gitpod.v1.RunnerService/CreateRunner", { name: "two-workers", kind: 2, provider: 2 });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    for (let i = 0; i < 6; i++) {
      const got = await post("gitpod.v1.RunnerService/GetRunner", { runnerId: created.body.runner.runnerId });
      assert.equal(got.body.runner.name, "two-workers");
    }
    // Every line a worker writes says which one it is.
    const requestLinesOf = () => state.out.split("\n").filter((l) => l.includes('"msg":"request"'));
    await until("the seven calls are logged", () => requestLinesOf().length >= 7, 10_000);
    const requestLines = requestLinesOf();
    assert.ok(requestLines.length >= 7 && requestLines.every((l) => /"worker":[12]\}$/.test(l)), requestLines.join("\n"));

    child.kill("SIGTERM");
    assert.equal(await inTime("exit on SIGTERM", state, () => exited), 0);
    assert.equal((state.out.match(/"msg":"stopped"/g) ?? []).length, 3, "both workers and the primary stopped");
    finish();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// node reports a worker's exit and its channel's close in whichever order its event loop
// sees them; this fixture makes the rarer order (exit first) the rule.
const EXIT_BEFORE_CLOSE = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${join(process.cwd(), "test", "fixtures", "late-worker-disconnect.mjs")}` };

it("WORKERS=2 with each worker's exit reported before its channel's close: the primary still sees its last worker go, logs its stop and exits 0", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-workers-late-"));
  try {
    const { child, state, exited, finish } = await startProcess(dir, { WORKERS: "2", ...EXIT_BEFORE_CLOSE });
    t.after(() => stopIfRunning(child));
    await workersListening(state, 2);
    child.kill("SIGTERM");
    assert.equal(await inTime("exit on SIGTERM", state, () => exited), 0);
    assert.equal((state.out.match(/"msg":"stopped"/g) ?? []).length, 3, state.out);
    assert.match(state.out, /"msg":"stopped","code":0\}/);
    finish();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const [order, env] of [["", {}], [" (each worker's exit reported before its channel's close)", EXIT_BEFORE_CLOSE]] as const) {
  it(`WORKERS=2: a worker killed while it drains is logged, and the service exits 1${order}`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "scm-workers-killed-"));
    try {
      const { child, port, token, state, exited, watch } = await startProcess(dir, { WORKERS: "2", ...env });
      t.after(() => stopIfRunning(child));
      await workersListening(state, 2);
      // Calls on connections of their own, held open: whichever workers they reach drain until they end.
      const held = Array.from({ length: 6 }, () => holdHttp1(port, token!, "{}", watch));
      await Promise.all(held.map((h) => h.inFlight));
      child.kill("SIGTERM");
      await inTime("draining", state, async () => {
        while (!state.out.includes('"msg":"shutting down"')) await new Promise((r) => setTimeout(r, 20));
      });
      for (const pid of childrenRunning(child.pid!, "src/main.ts")) process.kill(pid, "SIGKILL");
      const ends = await Promise.all(held.map((h) => h.finish().then(() => "answered", () => "cut off")));
      assert.deepEqual(new Set(ends), new Set(["cut off"]));
      assert.equal(await inTime("exit", state, () => exited), 1);
      assert.match(state.out, /"level":"error","msg":"a worker was killed while it drained; the calls it still held were cut off","about_worker":\d,"signal":"SIGKILL"/);
      assert.match(state.out, /"msg":"stopped","code":1\}/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

it("WORKERS=2 stopped while its workers still start exits 0: a worker ended by the signal before it listened held no calls", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "scm-workers-early-"));
  try {
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { env: { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: join(dir, "s.db"), WORKERS: "2" }, stdio: ["ignore", "pipe", "pipe"] });
    t.after(() => stopIfRunning(child));
    const state = { out: "", err: "" };
    child.stdout.on("data", (d) => (state.out += d));
    child.stderr.on("data", (d) => (state.err += d));
    const exited = new Promise<number | null>((r) => child.once("close", r));
    // Both workers forked, and still loading (under tsx, for hundreds of ms): no handler of theirs takes the signal yet.
    await inTime("the workers forked", state, async () => {
      while (childrenRunning(child.pid!, "src/main.ts").length < 2) await new Promise((r) => setTimeout(r, 5));
    });
    child.kill("SIGTERM");
    assert.equal(await inTime("exit", state, () => exited), 0, state.out + state.err);
    assert.doesNotMatch(state.out, /killed while it drained/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
