import type { ApiCaller } from "../domain/caller.js";
import { DomainError, Violations } from "../domain/errors.js";
import { normalizeHost } from "../domain/host.js";
import { AZURE_ENTRA, AZURE_SERVER } from "../domain/scm-schema.js";
import { newId } from "../crypto/ids.js";
import { seal } from "../crypto/sealed-box.js";
import type { Db } from "../store/database.js";
import { insertScmIntegration } from "../store/scm-integrations.js";
import { checkUuid, runnerOf, schemaOf, truncate } from "./runners.js";

const MAX_CLIENT_ID = 255;
const MAX_SECRET_BYTES = 4096;
const MAX_URL = 2048;
const MAX_VIRTUAL_DIRECTORY = 255;
const MAX_SCM_ID = 64;

export interface CreateScmIntegrationInput {
  runnerId: string;
  scmId: string;
  host: string;
  /** Absent and `""` both mean "not given"; see checkOAuthPair. */
  oauthClientId?: string | undefined;
  oauthClientSecret?: string | undefined;
  pat: boolean;
  issuerUrl?: string | undefined;
  virtualDirectory?: string | undefined;
}

/** The settings of an integration once checked and normalized. */
interface CheckedSettings {
  host: string;
  oauth: { clientId: string; secret: string } | null;
  pat: boolean;
  issuerUrl: string | null;
  virtualDirectory: string | null;
}

/**
 * Registers a host for one of the caller's runners. Everything that can be checked
 * without the database is checked first, so a bad request touches nothing; the
 * secret is sealed to the runner's key before the row is written.
 */
export function createScmIntegration(db: Db, caller: ApiCaller, input: CreateScmIntegrationInput): string {
  const v = new Violations();
  checkUuid(v, "runner_id", input.runnerId);
  checkScmIdShape(v, input.scmId);
  const settings = checkSettings(v, input.scmId, {
    host: input.host,
    oauthClientId: emptyAsAbsent(input.oauthClientId),
    oauthClientSecret: emptyAsAbsent(input.oauthClientSecret),
    pat: input.pat,
    issuerUrl: emptyAsAbsent(input.issuerUrl),
    virtualDirectory: emptyAsAbsent(input.virtualDirectory),
  });
  v.throwIfAny();

  return db.transaction(
    () => {
      const runner = runnerOf(db, caller.orgId, input.runnerId);
      const known = schemaOf(runner).scm.map((s) => s.scmId);
      if (!known.includes(input.scmId)) {
        const unknown = new Violations();
        unknown.add("scm_id", "scm_id.known", `"${truncate(input.scmId)}" is not in the runner's configuration schema; allowed: ${known.join(", ")}`);
        unknown.throwIfAny();
      }
      let sealed: Buffer | null = null;
      if (settings.oauth) {
        if (!runner.publicKey) {
          throw new DomainError(
            "failed_precondition",
            `runner_id: runner does not have a public key; runner ${runner.id} must sign up before an OAuth client secret can be sealed to it`,
          );
        }
        sealed = seal(settings.oauth.secret, runner.publicKey);
      }
      const now = Date.now();
      const id = newId(now);
      insertScmIntegration(db, {
        id,
        orgId: caller.orgId,
        runnerId: runner.id,
        scmId: input.scmId,
        host: settings.host,
        pat: settings.pat,
        oauthClientId: settings.oauth?.clientId ?? null,
        oauthEncryptedSecret: sealed,
        oauthSealedTo: sealed ? runner.publicKey : null,
        issuerUrl: settings.issuerUrl,
        virtualDirectory: settings.virtualDirectory,
        createdAt: now,
        updatedAt: now,
      });
      return id;
    },
    { behavior: "immediate" },
  );
}

function checkScmIdShape(v: Violations, scmId: string): void {
  if (scmId === "") v.add("scm_id", "required", "is required");
  else if (scmId.length > MAX_SCM_ID) v.add("scm_id", "string.max_len", `must be at most ${MAX_SCM_ID} characters`);
}

interface SettingsInput {
  host: string;
  oauthClientId: string | undefined;
  oauthClientSecret: string | undefined;
  pat: boolean;
  issuerUrl: string | undefined;
  virtualDirectory: string | undefined;
}

/**
 * The rules every integration must satisfy, whether created or updated: a valid host,
 * at least one authentication method, and the rules of its scm_id.
 */
function checkSettings(v: Violations, scmId: string, s: SettingsInput): CheckedSettings {
  const host = normalizeHost(s.host);
  if (!host.ok) v.add("host", "host.valid", host.reason);

  const oauth = checkOAuthPair(v, s.oauthClientId, s.oauthClientSecret);
  const oauthRequested = s.oauthClientId !== undefined || s.oauthClientSecret !== undefined;
  if (!oauthRequested && !s.pat) {
    v.add(
      "pat",
      "auth.method_required",
      "at least one authentication method is required: set pat to true, or give oauth_client_id with oauth_plaintext_client_secret",
    );
  }

  if (s.issuerUrl !== undefined) {
    if (!oauthRequested) v.add("issuer_url", "issuer_url.oauth_only", "is only allowed together with OAuth (oauth_client_id)");
    else {
      const problem = httpsUrlProblem(s.issuerUrl);
      if (problem) v.add("issuer_url", "string.https_url", problem);
    }
  } else if (scmId === AZURE_ENTRA && oauthRequested) {
    v.add("issuer_url", "required", `is required for ${AZURE_ENTRA} with OAuth (the Entra ID issuer, https://login.microsoftonline.com/<tenant>/v2.0)`);
  }

  if (scmId === AZURE_SERVER && oauthRequested) {
    v.add("oauth_client_id", "scm.pat_only", `${AZURE_SERVER} supports personal access tokens only; remove the OAuth settings`);
  }
  if (s.virtualDirectory !== undefined) {
    if (scmId !== AZURE_SERVER) {
      v.add("virtual_directory", "virtual_directory.scm", `is only allowed for ${AZURE_SERVER}`);
    } else {
      const problem = virtualDirectoryProblem(s.virtualDirectory);
      if (problem) v.add("virtual_directory", "virtual_directory.valid", problem);
    }
  } else if (scmId === AZURE_SERVER) {
    v.add("virtual_directory", "required", `is required for ${AZURE_SERVER}, e.g. /tfs`);
  }

  return {
    host: host.ok ? host.host : "",
    oauth,
    pat: s.pat,
    issuerUrl: s.issuerUrl ?? null,
    virtualDirectory: s.virtualDirectory ?? null,
  };
}

/** OAuth needs both halves; one without the other is a violation on the missing one. */
function checkOAuthPair(
  v: Violations,
  clientId: string | undefined,
  secret: string | undefined,
): { clientId: string; secret: string } | null {
  if (clientId === undefined && secret === undefined) return null;
  if (clientId === undefined) {
    v.add("oauth_client_id", "oauth.pair", "is required when oauth_plaintext_client_secret is set");
  } else if (clientId.length > MAX_CLIENT_ID) {
    v.add("oauth_client_id", "string.max_len", `must be at most ${MAX_CLIENT_ID} characters`);
  } else if (/[\u0000-\u0020\u007f]/.test(clientId)) {
    v.add("oauth_client_id", "string.printable", "must not contain whitespace or control characters");
  }
  if (secret === undefined) {
    v.add("oauth_plaintext_client_secret", "oauth.pair", "is required when oauth_client_id is set");
  } else if (Buffer.byteLength(secret, "utf8") > MAX_SECRET_BYTES) {
    v.add("oauth_plaintext_client_secret", "string.max_bytes", `must be at most ${MAX_SECRET_BYTES} bytes`);
  }
  return clientId !== undefined && secret !== undefined ? { clientId, secret } : null;
}

function httpsUrlProblem(value: string): string | null {
  if (value.length > MAX_URL) return `must be at most ${MAX_URL} characters`;
  if (/[\u0000-\u0020\u007f]/.test(value)) return "must not contain whitespace or control characters";
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return "must be an absolute https URL";
  }
  if (url.protocol !== "https:") return `must be an https URL, got scheme ${url.protocol.replace(/:$/, "")}`;
  if (url.username || url.password) return "must not include credentials";
  if (url.hash) return "must not include a fragment";
  return null;
}

function virtualDirectoryProblem(value: string): string | null {
  if (value.length > MAX_VIRTUAL_DIRECTORY) return `must be at most ${MAX_VIRTUAL_DIRECTORY} characters`;
  if (!value.startsWith("/")) return 'must start with "/", e.g. /tfs';
  if (!/^(\/[A-Za-z0-9._~%!$&'()*+,;=:-]+)+\/?$/.test(value)) {
    return "must be a path of non-empty segments without whitespace, '?', '#' or '@'";
  }
  return null;
}

function emptyAsAbsent(value: string | undefined): string | undefined {
  return value === "" ? undefined : value;
}
