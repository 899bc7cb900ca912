import net from "node:net";
import { call, createRunner, signUp, startServer } from "./test/harness.js";
const s = await startServer();
const { runnerId, runnerToken } = await createRunner(s);
await signUp(s, runnerToken);
const fat = "\u{1F600}".repeat(255);
for (let i = 0; i < 100; i++) {
  const r = await call(s, "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration", { runnerId, scmId: "azuredevops_entra", host: `dev.azure.com/${"a".repeat(200)}${i}`, oauthClientId: fat, oauthPlaintextClientSecret: "x", issuerUrl: `https://login.microsoftonline.com/${"t".repeat(1900)}/v2.0` });
  if (r.status !== 200) throw new Error(JSON.stringify(r.body));
}
const body = JSON.stringify({ pagination: { pageSize: 100 }, filter: { runnerIds: [runnerId] } });
const req = (id: string) => `POST /gitpod.v1.RunnerConfigurationService/ListSCMIntegrations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nX-Request-Id: ${id}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
const port = Number(new URL(s.url).port);
const sock = net.connect(port, "127.0.0.1");
sock.on("error", () => {});
await new Promise((r) => sock.once("connect", r));
sock.pause();
let text = ""; for (let i = 0; i < 20; i++) text += req(`fat-${i}`);
sock.write(text);
await new Promise((r) => setTimeout(r, 1500));
const mode = process.argv[2];
if (mode === "reset") { sock.resetAndDestroy(); await new Promise((r) => setTimeout(r, 500)); }
else { await s.close().catch((e) => console.log("close", e.message)); }
const lines = s.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "request" && String(l.request_id).startsWith("fat-"));
console.log(lines.map((l) => `${l.request_id}:${l.code}:${l.http_status}`).join(" "));
if (mode === "reset") await s.close().catch(() => {});
process.exit(0);
