import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { call, createRunner, signUp, startServer, type TestServer } from "./harness.js";

const PYTHON = "/usr/bin/python3";
const PLUGIN = "/usr/bin/grpc_python_plugin";
const PROTOC = "/usr/bin/protoc";
const TIMESTAMP_PROTO = "/usr/include/google/protobuf/timestamp.proto";

/** Why the Python client cannot run here, or null when it can. Under CI=true it must run. */
function missing(): string | null {
  for (const path of [PYTHON, PLUGIN, PROTOC, TIMESTAMP_PROTO]) if (!existsSync(path)) return `${path} is not installed`;
  try {
    execFileSync(PYTHON, ["-c", "import grpc, google.protobuf, nacl"], { stdio: "pipe" });
  } catch {
    return "Debian's python3-grpcio / python3-protobuf / python3-nacl are not installed";
  }
  return null;
}

const reason = missing();
const skip = reason && process.env.CI !== "true" ? `skipped: ${reason} (apt-get install protobuf-compiler libprotobuf-dev protobuf-compiler-grpc python3-grpcio python3-protobuf python3-nacl)` : false;

let s: TestServer;
before(async () => (s = await startServer()));
after(() => s.close());

it("a Python gRPC client generated from proto/ makes every call of the API, and a runner in Python opens the secrets sealed to it (PyNaCl)", { skip }, async () => {
  assert.equal(reason, null, `CI=true needs the Python gRPC toolchain: ${reason}`);
  const out = mkdtempSync(join(tmpdir(), "py-stubs-"));
  try {
    execFileSync(PROTOC, [
      "-Iproto", "-I/usr/include", `--python_out=${out}`, `--grpc_out=${out}`, `--plugin=protoc-gen-grpc=${PLUGIN}`,
      // Every file: runners.proto imports google/protobuf/timestamp.proto, from libprotobuf-dev.
      "gitpod/v1/pagination.proto", "gitpod/v1/runner_configurations.proto", "gitpod/v1/runners.proto",
      "gitpod/v1/runner_interactions.proto", "gitpod/v1/subject.proto",
    ], { stdio: "pipe" });
    // The TypeScript side creates an OAuth integration for Python to find.
    const { runnerId, runnerToken } = await createRunner(s, s.token, "python runner");
    await signUp(s, runnerToken);
    const fromTs = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", {
      runnerId, scmId: "gitlab", host: "gitlab.com", oauthClientId: "ts-app", oauthPlaintextClientSecret: "ts-secret",
    });
    const address = s.url.replace("http://", "");
    // Asynchronously: the server runs in this process and must keep answering.
    const { stdout: output } = await promisify(execFile)(PYTHON, ["test/python/integrations.py", out, address, s.token, runnerId], {
      encoding: "utf8",
      timeout: 30_000,
    });
    const [id, duplicate, got, listed, unknown, runner, signedUp, schema, opened, reopened, deleted, renamed, tokens, runnerDeleted, ...rest] = output.trim().split("\n");
    assert.match(id ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(duplicate, "ALREADY_EXISTS");
    assert.equal(got, "github.python.example -");
    assert.deepEqual(listed?.split(" "), [id, fromTs.body.id], "both, in host order (github.python.example, gitlab.com), one page at a time");
    assert.equal(unknown, "NOT_FOUND");
    assert.equal(runner, `python made RUNNER_KIND_LOCAL ${new Date().getUTCFullYear()}`);
    // The runner's side and the rest of the admin calls.
    assert.equal(signedUp, "True", "Signup answers the runner's own id");
    assert.equal(schema, "py-1 forgejo True", "GetRunnerConfigurationSchema shows what the runner published, with a callback URL");
    assert.equal(opened, "True", "the runner lists its OAuth integration and opens the secret with its private key");
    assert.equal(reopened, "True", "and the rotated one");
    assert.equal(deleted, "NOT_FOUND");
    assert.equal(renamed, "['python renamed']", "renamed, and found once walking ListRunners two at a time");
    assert.equal(tokens, "UNAUTHENTICATED OK", "CreateRunnerToken's token works, the one before it no longer");
    assert.equal(runnerDeleted, "NOT_FOUND");
    assert.deepEqual(rest, []);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
