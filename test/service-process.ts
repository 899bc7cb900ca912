// Services run as processes of their own, for the tests of starting, stopping and workers.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { logLines, SecretWatch } from "./secret-watch.js";

/**
 * Starts src/main.ts on a fresh database and resolves once it is listening. What the test
 * sends and gets goes through `watch`; `finish`, once the process exited, looks for leaks.
 */
export async function startProcess(dir: string, extraEnv: Record<string, string> = {}) {
  const dbFile = join(dir, "db", "s.db");
  const env = { ...process.env, PORT: "0", HOST: "127.0.0.1", DATABASE_URL: dbFile, ...extraEnv };
  const fresh = !existsSync(dbFile);
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { env, stdio: ["ignore", "pipe", "pipe"] });
  const state = { out: "", err: "" };
  child.stdout.on("data", (d) => (state.out += d));
  child.stderr.on("data", (d) => (state.err += d));
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`exited ${code}: ${state.out}`)));
    const timer = setInterval(() => {
      const m = /"msg":"listening","address":"[^"]*:(\d+)"/.exec(state.out);
      // With workers, the primary prints the first-start message once one of them listens.
      if (m && (!fresh || /Create a runner with it:[^]*-d '/.test(state.out))) {
        clearInterval(timer);
        resolve(Number(m[1]));
      }
    }, 20);
  });
  const token = /scmapi_[A-Za-z0-9_-]{43}/.exec(state.out)?.[0];
  // On "close", not "exit": the last lines (a worker's, the primary's "stopped") may still be
  // in the pipe when the exit is reported.
  const exited = new Promise<number | null>((r) => child.once("close", r));
  const watch = new SecretWatch();
  if (token) watch.noteToken(token);
  const finish = () => watch.finish(dbFile, [...logLines(state.out), state.err]);
  return { child, port, token, state, exited, watch, finish };
}

/** The answer to a request the client holds open; `finish` sends the rest of the body. */
export interface Held {
  /** Settles once the server has the request (its 100 Continue arrived), i.e. it is in flight. */
  inFlight: Promise<void>;
  finish(): Promise<{ status: number; text: string }>;
}

export const CREATE_PATH = "/gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";

/**
 * A call (a create unless `path` says otherwise) sent over HTTP/1.1 with `Expect: 100-continue`,
 * its body withheld until `finish`; with `sentFirst`, that many of its bytes go out as soon as
 * the server has the call.
 */
export function holdHttp1(port: number, token: string, body: string, watch: SecretWatch, options: { path?: string; sentFirst?: number } = {}): Held {
  const path = options.path ?? CREATE_PATH;
  const first = options.sentFirst ?? 0;
  let answer!: Promise<{ status: number; text: string }>;
  let req!: http.ClientRequest;
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json", "content-length": Buffer.byteLength(body), expect: "100-continue" };
  watch.noteSent(path, headers, body);
  const inFlight = new Promise<void>((continued, failed) => {
    answer = new Promise((resolve, reject) => {
      req = http.request(
        { port, host: "127.0.0.1", method: "POST", path, agent: false, headers },
        (res) => {
          let text = "";
          res.on("data", (d) => (text += d));
          res.on("end", () => {
            watch.noteReceived(res.headers, text);
            resolve({ status: res.statusCode ?? 0, text });
          });
          res.on("error", reject);
        },
      );
      req.on("error", (err) => (failed(err), reject(err)));
      req.on("continue", () => {
        if (first > 0) req.write(body.slice(0, first));
        continued();
      });
      req.flushHeaders();
    });
  });
  return { inFlight, finish: () => (req.end(body.slice(first)), answer) };
}

/** Kills a service a failed test left running (its workers exit with it). */
export function stopIfRunning(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}
