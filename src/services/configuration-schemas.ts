import type { ApiCaller, RunnerCaller } from "../domain/caller.js";
import { Violations, notFound } from "../domain/errors.js";
import { normalizeHost } from "../domain/host.js";
import { AZURE_SERVER, DEFAULT_SCHEMA, type RunnerSchema, type ScmEntry } from "../domain/scm-schema.js";
import type { Db } from "../store/database.js";
import { ownRunnerOnly, writeAs } from "./auth.js";
import * as store from "../store/runners.js";
import { BLANK_TEXT, HIDDEN_TEXT, checkUuid, hasControlOrHidden, httpsUrlProblem, isBlank } from "../domain/checks.js";
import { characters, truncate } from "../domain/text.js";
import { runnerKeyOf, schemaOf } from "./runners.js";

const MAX_SCM_ENTRIES = 50;
const MAX_DEFAULT_HOSTS = 25;
const MAX_VERSION = 64;
const MAX_NAME = 128;
const MAX_PAT_DESCRIPTION = 1024;
/** The most a schema may take as stored (JSON), all its entries together. */
const MAX_STORED_SCHEMA_BYTES = 64 * 1024;
const SCM_ID = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

/** One scm entry as GetRunnerConfigurationSchema shows it. */
export interface ScmDescription {
  scmId: string;
  name: string;
  defaultHosts: string[];
  /** Null where the runner takes personal access tokens only. */
  oauthCallbackUrl: string | null;
  /** Null where the runner takes OAuth only. */
  pat: { description: string; docsLink: string } | null;
}

export interface SchemaDescription {
  version: string;
  scm: ScmDescription[];
}

/** The path under PUBLIC_URL that OAuth apps are registered with as their callback. */
export const OAUTH_CALLBACK_PATH = "/auth/oauth2/callback";

/**
 * The schema a runner published, else the built-in default, with what an admin needs
 * to set up each system: the OAuth callback URL to register (derived from this
 * service's public URL) and how to make a personal access token.
 */
export async function getRunnerConfigurationSchema(db: Db, caller: ApiCaller, given: string, publicUrl: string): Promise<SchemaDescription> {
  const v = new Violations();
  const runnerId = checkUuid(v, "runner_id", given);
  v.throwIfAny();
  const schema = schemaOf(await db.read(() => runnerKeyOf(db, caller.orgId, runnerId)));
  return {
    version: schema.version,
    scm: schema.scm.map((entry) => describe(entry, publicUrl)),
  };
}

function describe(entry: ScmEntry, publicUrl: string): ScmDescription {
  const builtin = DEFAULT_SCHEMA.scm.find((s) => s.scmId === entry.scmId);
  return {
    scmId: entry.scmId,
    name: entry.name,
    defaultHosts: entry.defaultHosts,
    oauthCallbackUrl: entry.oauth ? publicUrl + OAUTH_CALLBACK_PATH : null,
    pat: entry.pat
      ? {
          description:
            entry.patDescription ||
            builtin?.patDescription ||
            `A personal access token for ${entry.name || entry.scmId} with read and write access to repositories.`,
          docsLink: entry.patDocsLink || builtin?.patDocsLink || "",
        }
      : null,
  };
}

/**
 * A schema as a runner sends it. Which of `oauth` and `pat` an entry carries says which
 * methods the runner takes; `oauth.callback_url` is not taken, this service derives it.
 */
export interface PublishedSchema {
  version: string;
  scm: ScmEntry[];
}

/**
 * Stores the schema the runner publishes. From then on Create and Update accept only its
 * scm_ids, and of each only the methods its entry offers; integrations whose scm_id it
 * drops stay readable and deletable.
 */
export function updateRunnerConfigurationSchema(
  db: Db,
  caller: RunnerCaller,
  input: { runnerId: string; schema: PublishedSchema | undefined },
): Promise<void> {
  const v = new Violations();
  const runnerId = checkUuid(v, "runner_id", input.runnerId);
  v.throwIfAny();
  // Another runner's id is refused before its schema is looked at.
  ownRunnerOnly(caller, runnerId);
  const schema = input.schema ? checkSchema(v, input.schema) : null;
  if (!input.schema) v.add("config_schema", "required", "is required");
  const stored = JSON.stringify(schema);
  // Each field has its limit, but together they allow about 1 MB, read by every create for
  // the runner: the schema as stored has a limit of its own.
  const storedBytes = Buffer.byteLength(stored);
  if (schema && storedBytes > MAX_STORED_SCHEMA_BYTES) {
    v.add("config_schema", "schema.max_size", `is ${storedBytes} bytes as stored; at most ${MAX_STORED_SCHEMA_BYTES} are taken`);
  }
  v.throwIfAny();
  return writeAs(db, caller, () => {
    if (!store.updateRunner(db, caller.orgId, caller.runnerId, { configSchema: stored, updatedAt: Date.now() })) {
      throw notFound("runner", caller.runnerId);
    }
  });
}


function checkSchema(v: Violations, s: PublishedSchema): RunnerSchema {
  const at = "config_schema";
  if (characters(s.version) > MAX_VERSION) v.add(`${at}.version`, "string.max_len", `must be at most ${MAX_VERSION} characters`);
  else if (hasControlOrHidden(s.version)) v.add(`${at}.version`, "string.printable", HIDDEN_TEXT);
  else if (s.version !== "" && isBlank(s.version)) v.add(`${at}.version`, "string.not_blank", BLANK_TEXT);
  if (s.scm.length > MAX_SCM_ENTRIES) {
    v.add(`${at}.scm`, "repeated.max_items", `must have at most ${MAX_SCM_ENTRIES} entries, got ${s.scm.length}`);
    return { version: s.version, scm: [] };
  }
  const seen = new Set<string>();
  const scm: ScmEntry[] = s.scm.map((e, i) => {
    const f = `${at}.scm[${i}]`;
    if (e.scmId === "") v.add(`${f}.scm_id`, "required", "is required");
    else if (!SCM_ID.test(e.scmId)) {
      v.add(`${f}.scm_id`, "scm_id.valid", `must be 1 to 64 of a-z, 0-9, '_', '-', '.', starting with a letter or digit, got "${truncate(e.scmId)}"`);
    } else if (seen.has(e.scmId)) v.add(`${f}.scm_id`, "scm_id.unique", `"${e.scmId}" appears more than once`);
    seen.add(e.scmId);
    if (characters(e.name) > MAX_NAME) v.add(`${f}.name`, "string.max_len", `must be at most ${MAX_NAME} characters`);
    else if (hasControlOrHidden(e.name)) v.add(`${f}.name`, "string.printable", HIDDEN_TEXT);
    else if (e.name !== "" && isBlank(e.name)) v.add(`${f}.name`, "string.not_blank", BLANK_TEXT);
    const hosts: string[] = [];
    if (e.defaultHosts.length > MAX_DEFAULT_HOSTS) {
      v.add(`${f}.default_hosts`, "repeated.max_items", `must have at most ${MAX_DEFAULT_HOSTS} hosts, got ${e.defaultHosts.length}`);
    } else {
      e.defaultHosts.forEach((h, j) => {
        const host = normalizeHost(h);
        if (!host.ok) v.add(`${f}.default_hosts[${j}]`, "host.valid", host.reason);
        else if (hosts.includes(host.host)) v.add(`${f}.default_hosts[${j}]`, "host.unique", `"${host.host}" appears more than once`);
        else hosts.push(host.host);
      });
    }
    if (e.scmId === AZURE_SERVER && !e.pat) {
      v.add(`${f}.pat`, "required", `is required: ${AZURE_SERVER} takes personal access tokens only`);
    } else if (!e.oauth && !e.pat) {
      v.add(f, "scm.auth_method_required", "must offer at least one authentication method: send oauth, pat or both");
    }
    // Admins read this text (in a terminal too): line breaks and tabs may lay it out, no
    // other control character may reach them. A carriage return only ends a line: alone,
    // a terminal would write the next line over the one before.
    if (characters(e.patDescription) > MAX_PAT_DESCRIPTION) {
      v.add(`${f}.pat.description`, "string.max_len", `must be at most ${MAX_PAT_DESCRIPTION} characters`);
    } else if (hasControlOrHidden(e.patDescription.replace(/\r\n|[\n\t]/g, " "))) {
      v.add(`${f}.pat.description`, "string.printable", `${HIDDEN_TEXT} other than line breaks (\\n or \\r\\n) and tabs`);
    }
    if (e.patDocsLink !== "") {
      const problem = httpsUrlProblem(e.patDocsLink);
      if (problem) v.add(`${f}.pat.docs_link`, "string.https_url", problem);
    }
    return {
      scmId: e.scmId,
      name: e.name,
      defaultHosts: hosts,
      oauth: e.oauth && e.scmId !== AZURE_SERVER,
      pat: e.pat,
      patDescription: e.patDescription,
      patDocsLink: e.patDocsLink,
    };
  });
  return { version: s.version, scm };
}
