import { ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./log.js";
import { bootstrap } from "./services/accounts.js";
import { createApp } from "./server.js";
import { openDatabase } from "./store/database.js";
import { listen } from "./transport/http-server.js";

/** Starts the service: config, database and migrations, first-start token, listener, signals. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  const db = openDatabase(config.databaseFile);

  const first = bootstrap(db, config.bootstrapOrgName);
  if (first) printFirstStart(first.orgName, first.token, config.publicUrl);

  const app = createApp(db, log, { publicUrl: config.publicUrl });
  const server = await listen(app.handler, config.port, config.host, {
    tls: config.tlsCertFile && config.tlsKeyFile ? { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile } : undefined,
  });
  log.info("listening", {
    address: `${server.address.address}:${server.address.port}`,
    tls: Boolean(config.tlsCertFile),
    database: config.databaseFile,
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal, in_flight: server.inFlight() });
    app.beginShutdown();
    await server.shutdown(config.shutdownTimeoutMs);
    db.$client.close();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

/** Shown once, on the start that created the first token; it goes to stdout, never to the log. */
function printFirstStart(orgName: string, token: string, url: string): void {
  process.stdout.write(
    [
      "",
      `First start: created organization "${orgName}" and an admin API token.`,
      "This token is shown only now; keep it somewhere safe:",
      "",
      `  ${token}`,
      "",
      "Create a runner with it:",
      "",
      `  curl -sS ${url}/gitpod.v1.RunnerService/CreateRunner \\`,
      `    -H 'Authorization: Bearer ${token}' \\`,
      `    -H 'Content-Type: application/json' \\`,
      `    -d '{"name":"my-runner","kind":"RUNNER_KIND_REMOTE","provider":"RUNNER_PROVIDER_LINUX_HOST"}'`,
      "",
      "",
    ].join("\n"),
  );
}

await main();
