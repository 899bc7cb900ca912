import { readFileSync } from "node:fs";
import http2 from "node:http2";
import type { Scenario } from "../drive.js";
import { PATHS, binaryRequest, grpcFrame } from "./requests.js";

/**
 * Drives one scenario over gRPC on cleartext HTTP/2: one connection, `concurrency`
 * streams in flight, each request built fresh (h2load sends one fixed body, so it cannot
 * create unique hosts). Same output line as wrk.lua.
 *
 *   node dist/bench/load/grpc.js URL SCENARIO CONCURRENCY SECONDS TOKEN RUNNERS_FILE IDS_FILE TAG
 */
const [url, scenarioArg, concurrencyArg, secondsArg, token, runnersFile, idsFile, tag] = process.argv.slice(2) as string[];
const scenario = scenarioArg as Scenario;
const concurrency = Number(concurrencyArg);
const runners = readFileSync(runnersFile!, "utf8").trim().split("\n");
const ids = readFileSync(idsFile!, "utf8").trim().split("\n");
const pick = (list: string[]) => list[Math.floor(Math.random() * list.length)]!;
let counter = 0;

function message(): { path: string; bytes: Uint8Array } {
  counter += 1;
  const ask = { runnerId: pick(runners), id: pick(ids), host: `g${counter}-${tag}.bench.example`, secret: `bench-secret-${counter}` };
  return { path: PATHS[scenario], bytes: binaryRequest(scenario, ask) };
}

const session = http2.connect(url!);
session.on("error", (err) => {
  process.stderr.write(`grpc driver: ${err.message}\n`);
  process.exit(1);
});
const latencies: number[] = [];
let errors = 0;
const started = process.hrtime.bigint();
const deadline = started + BigInt(Number(secondsArg) * 1e9);

function one(): Promise<void> {
  return new Promise((resolve) => {
    const { path, bytes } = message();
    const t0 = process.hrtime.bigint();
    const stream = session.request({
      ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${token}`,
    });
    let status: string | undefined;
    // A call counts only when answered as gRPC (HTTP 200, a gRPC content type) with status 0.
    stream.on("response", (headers) => {
      const grpc = headers[":status"] === 200 && String(headers["content-type"] ?? "").startsWith("application/grpc");
      status = grpc ? (headers["grpc-status"] as string | undefined) : "not gRPC";
    });
    stream.on("trailers", (trailers) => {
      if (status !== "not gRPC") status = (trailers["grpc-status"] as string | undefined) ?? status;
    });
    stream.on("data", () => {});
    // A reset stream is one failed call, not the end of the run (close follows).
    stream.on("error", () => (status = "reset"));
    stream.on("close", () => {
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e3);
      if (status !== "0") errors += 1;
      resolve();
    });
    stream.end(grpcFrame(bytes));
  });
}

async function worker(): Promise<void> {
  while (process.hrtime.bigint() < deadline) await one();
}

await Promise.all(Array.from({ length: concurrency }, worker));
const duration = Number(process.hrtime.bigint() - started) / 1e3;
latencies.sort((a, b) => a - b);
const at = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0);
// requests: every call answered; ok: those answered with status 0, the ones that count.
process.stdout.write(`${JSON.stringify({ requests: latencies.length, ok: latencies.length - errors, duration_us: Math.round(duration), errors, p50_us: at(0.5), p99_us: at(0.99) })}\n`);
session.close();
