import type { ApiCaller, RunnerCaller } from "../domain/caller.js";
import { DomainError, Violations, notFound } from "../domain/errors.js";
import { isDotSegment, isPathSegment, normalizeHost } from "../domain/host.js";
import { AZURE_ENTRA, AZURE_SERVER, DEFAULT_SCHEMA, type RunnerSchema, type ScmEntry } from "../domain/scm-schema.js";
import { newId } from "../crypto/ids.js";
import { seal } from "../crypto/sealed-box.js";
import { sealOffLoop } from "../crypto/seal-worker.js";
import type { Db } from "../store/database.js";
import { ownRunnerOnly, writeAs } from "./auth.js";
import type { ScmIntegrationRow } from "../store/schema.js";
import { findRunnerKey } from "../store/runners.js";
import * as store from "../store/scm-integrations.js";
import type { IdempotentCall } from "./idempotency.js";
import { checkUuid, checkUuidList, hasSpaceOrControl, httpsUrlProblem } from "../domain/checks.js";
import { characters, truncate } from "../domain/text.js";
import { ID_ORDER, pageScope, RUNNER_HOST_ORDER, type Page, type PageRequest, type Pager } from "./pagination.js";
import { requireRunner, runnerKeyOf, schemaOf, type SealingRunner } from "./runners.js";

const MAX_CLIENT_ID = 255;
const MAX_SECRET_BYTES = 4096;
const MAX_VIRTUAL_DIRECTORY = 255;
const MAX_SCM_ID = 64;

export interface CreateScmIntegrationInput {
  runnerId: string;
  scmId: string;
  host: string;
  /** Absent and `""` both mean "not given" on Create. */
  oauthClientId?: string | undefined;
  oauthClientSecret?: string | undefined;
  pat: boolean;
  issuerUrl?: string | undefined;
  virtualDirectory?: string | undefined;
}

/** Fields absent from an Update stay as they are; `""` clears (see updateScmIntegration). */
export interface UpdateScmIntegrationInput {
  id: string;
  oauthClientId?: string | undefined;
  oauthClientSecret?: string | undefined;
  pat?: boolean | undefined;
  issuerUrl?: string | undefined;
  virtualDirectory?: string | undefined;
}

/** What an integration will look like once written, as the cross-field rules see it. */
interface Outcome {
  oauth: boolean;
  /** OAuth with a secret the runner can open (false after a key change until re-entered). */
  oauthUsable: boolean;
  pat: boolean;
  issuerUrl: string | null;
  virtualDirectory: string | null;
  /** For an Update: whether the integration had a usable method before it. */
  usableBefore?: boolean;
}

/**
 * Registers a host for one of the caller's runners. Everything that can be checked
 * without the database is checked first, so a bad request touches nothing; the
 * secret is sealed to the runner's key before the row is written. With `once` (an
 * Idempotency-Key), a retry of a create that succeeded answers its id instead.
 */
export async function createScmIntegration(
  db: Db,
  caller: ApiCaller,
  input: CreateScmIntegrationInput,
  once: IdempotentCall | null = null,
): Promise<string> {
  const clientId = emptyAsAbsent(input.oauthClientId);
  const secret = emptyAsAbsent(input.oauthClientSecret);
  const issuerUrl = emptyAsAbsent(input.issuerUrl) ?? null;
  const virtualDirectory = directoryAsStored(emptyAsAbsent(input.virtualDirectory)) ?? null;

  const v = new Violations();
  const runnerId = checkUuid(v, "runner_id", input.runnerId);
  if (input.scmId === "") v.add("scm_id", "required", "is required");
  else if (characters(input.scmId) > MAX_SCM_ID) v.add("scm_id", "string.max_len", `must be at most ${MAX_SCM_ID} characters`);
  const host = normalizeHost(input.host);
  if (!host.ok) v.add("host", input.host === "" ? "required" : "host.valid", host.reason);
  checkFieldShapes(v, { clientId, secret, issuerUrl, virtualDirectory });
  if (clientId === undefined && secret !== undefined) {
    v.add("oauth_client_id", "oauth.pair", "is required when oauth_plaintext_client_secret is set");
  }
  if (clientId !== undefined && secret === undefined) {
    v.add("oauth_plaintext_client_secret", "oauth.pair", "is required when oauth_client_id is set");
  }
  const oauthRequested = clientId !== undefined || secret !== undefined;
  checkRules(v, input.scmId, { oauth: oauthRequested, oauthUsable: oauthRequested, pat: input.pat, issuerUrl, virtualDirectory });
  v.throwIfAny();

  const ahead = secret !== undefined ? await sealAhead(db, caller.orgId, runnerId, input.scmId, secret) : null;
  return writeAs(db, caller, () => {
    const now = Date.now();
    const replayed = once?.replay(now);
    if (replayed) return replayed;
    const runner = runnerKeyOf(db, caller.orgId, runnerId);
    if (runner.deleting) {
      throw new DomainError("failed_precondition", `runner_id: runner ${runner.id} is being deleted, and takes no new integrations`);
    }
    const schema = schemaOf(runner);
    const entry = schema.scm.find((e) => e.scmId === input.scmId);
    const offered = new Violations();
    if (!entry) {
      const allowed = schema.scm.map((e) => e.scmId).join(", ");
      offered.add(
        "scm_id",
        "scm_id.known",
        allowed === ""
          ? `"${truncate(input.scmId)}" is not in the runner's configuration schema, which lists no SCM at all: the runner published an empty one, and takes no integration until it publishes one that lists some`
          : `"${truncate(input.scmId)}" is not in the runner's configuration schema; allowed: ${allowed}`,
      );
    } else {
      checkOffered(offered, entry, { oauth: oauthRequested, pat: input.pat });
    }
    const schemaTakesIt = !offered.has("scm_id") && !offered.has("oauth_client_id");
    const fresh = ahead !== null && runner.publicKey?.equals(ahead.key) === true && schemaTakesIt;
    // What was remembered of the runner is out of date (its key, or its schema's word on
    // OAuth here): forgotten, so its next create reads them again.
    if (secret !== undefined && !fresh) forgetKey(caller.orgId, runner.id);
    offered.throwIfAny();
    const sealed = secret === undefined ? null : fresh ? ahead!.box : sealFor(runner, secret, "runner_id");
    const id = newId(now);
    store.insertScmIntegration(db, {
      id,
      orgId: caller.orgId,
      runnerId: runner.id,
      scmId: input.scmId,
      host: host.ok ? host.host : "",
      pat: input.pat,
      oauthClientId: clientId ?? null,
      oauthEncryptedSecret: sealed,
      oauthSealedTo: sealed ? runner.publicKey : null,
      issuerUrl,
      virtualDirectory,
      createdAt: now,
      updatedAt: now,
    });
    once?.remember(id, now);
    return id;
  }, { oneStatement: once === null }); // without an idempotency key, the insert is the only change
}

/** The integration with this id in the caller's organization. */
export async function getScmIntegration(db: Db, caller: ApiCaller, given: string): Promise<store.IntegrationView> {
  const v = new Violations();
  const id = checkUuid(v, "id", given);
  v.throwIfAny();
  const row = await db.read(() => store.findScmIntegrationView(db, caller.orgId, id));
  if (!row) throw notFound("SCM integration", id);
  return row;
}

/**
 * Changes an integration by field presence. `oauth_client_id: ""` removes OAuth with its
 * secret and issuer URL (a secret sent with it is ignored); a new secret is sealed to the
 * runner's current key; a stored secret carries over only while the client id stays the
 * same. The result must pass every rule Create checks, or nothing changes.
 */
export function updateScmIntegration(db: Db, caller: ApiCaller, given: UpdateScmIntegrationInput): Promise<void> {
  const input = { ...given, virtualDirectory: directoryAsStored(given.virtualDirectory) };
  const removeOAuth = input.oauthClientId === "";
  // "" removes OAuth whether or not a secret comes with it, as the public API documents
  // the field: a secret sent beside it is dropped unread.
  const secret = removeOAuth ? undefined : emptyAsAbsent(input.oauthClientSecret);
  const v = new Violations();
  const id = checkUuid(v, "id", input.id);
  checkFieldShapes(v, {
    clientId: emptyAsAbsent(input.oauthClientId),
    secret,
    issuerUrl: emptyAsAbsent(input.issuerUrl),
    virtualDirectory: emptyAsAbsent(input.virtualDirectory),
  });
  v.throwIfAny();

  return writeAs(db, caller, () => {
    // Its own list of problems: the group commit may run this more than once (see run in
    // group-commit.ts), and each run judges the row as it finds it.
    const rules = new Violations();
    const row = store.findScmIntegration(db, caller.orgId, id);
    if (!row) throw notFound("SCM integration", id);
    const runner = runnerKeyOf(db, caller.orgId, row.runnerId);
    const entry = schemaOf(runner).scm.find((e) => e.scmId === row.scmId);
    if (!entry && extends_(input, row)) {
      throw new DomainError(
        "failed_precondition",
        `scm_id "${row.scmId}" is no longer in runner ${runner.id}'s configuration schema: this integration can be read, deleted, narrowed (OAuth removed, PAT turned off) or have its secret entered again, but nothing can be added to it`,
      );
    }

    let clientId = row.oauthClientId;
    // A secret sealed to another key than the runner's is none: a Signup with a new key
    // drops such secrets a bounded number a write, and this one may not be dropped yet.
    const current = row.oauthSealedTo !== null && runner.publicKey !== null && row.oauthSealedTo.equals(runner.publicKey);
    let sealed = current ? row.oauthEncryptedSecret : null;
    let sealedTo = current ? row.oauthSealedTo : null;
    const usableBefore = row.pat || (row.oauthClientId !== null && sealed !== null);
    if (removeOAuth) {
      clientId = sealed = sealedTo = null;
    } else {
      const changesClient = input.oauthClientId !== undefined && input.oauthClientId !== row.oauthClientId;
      if (changesClient && secret === undefined) {
        rules.add(
          "oauth_plaintext_client_secret",
          "oauth.pair",
          row.oauthClientId === null
            ? "is required to turn on OAuth"
            : "is required when oauth_client_id changes; the stored secret belongs to the previous client id",
        );
      }
      if (input.oauthClientId === undefined && row.oauthClientId === null && secret !== undefined) {
        rules.add("oauth_client_id", "oauth.pair", "is required to turn on OAuth (this integration has no OAuth client id yet)");
      }
      if (input.oauthClientId !== undefined) clientId = input.oauthClientId;
    }
    const outcome: Outcome = {
      oauth: clientId !== null,
      oauthUsable: clientId !== null && (secret !== undefined || sealed !== null),
      pat: input.pat ?? row.pat,
      issuerUrl: cleared(input.issuerUrl, removeOAuth ? null : row.issuerUrl),
      virtualDirectory: cleared(input.virtualDirectory, row.virtualDirectory),
      usableBefore,
    };
    checkRules(rules, row.scmId, outcome);
    // Only what the update adds must be on offer: an integration made before the runner
    // stopped offering a method keeps it until someone removes it.
    if (entry) checkOffered(rules, entry, { oauth: addsClient(input, row), pat: input.pat === true && !row.pat });
    rules.throwIfAny();

    if (secret !== undefined) {
      // Update has no runner_id: the message names what cannot be taken.
      sealed = sealFor(runner, secret, "oauth_plaintext_client_secret");
      sealedTo = runner.publicKey;
    }
    store.updateScmIntegration(db, row.id, {
      oauthClientId: clientId,
      oauthEncryptedSecret: sealed,
      oauthSealedTo: sealedTo,
      pat: outcome.pat,
      issuerUrl: outcome.issuerUrl,
      virtualDirectory: outcome.virtualDirectory,
      updatedAt: Date.now(),
    });
  });
}

/** Deletes the integration and its sealed secret. */
export function deleteScmIntegration(db: Db, caller: ApiCaller, given: string): Promise<void> {
  const v = new Violations();
  const id = checkUuid(v, "id", given);
  v.throwIfAny();
  return writeAs(db, caller, () => {
    if (!store.deleteScmIntegration(db, caller.orgId, id)) throw notFound("SCM integration", id);
  });
}

/**
 * A page of the organization's integrations: all of them in id order, or only those of
 * some runners, by runner id and then host. A runner in the filter that the organization
 * does not have is not_found, so a mistyped or foreign id is not mistaken for "no
 * integrations".
 */
export async function listScmIntegrations(
  db: Db,
  pager: Pager,
  caller: ApiCaller,
  input: { runnerIds: readonly string[]; page: PageRequest },
): Promise<Page<store.IntegrationView>> {
  const v = new Violations();
  const runnerIds = checkUuidList(v, "filter.runner_ids", input.runnerIds);
  const scope = pageScope("ListSCMIntegrations", caller.orgId, runnerIds);
  if (runnerIds.length === 0) {
    const { size, after } = pager.start(v, scope, input.page, ID_ORDER);
    v.throwIfAny();
    return db.read(() => pager.page(scope, store.listOrgPage(db, caller.orgId, after, size + 1), size, ID_ORDER));
  }
  const { size, after } = pager.start(v, scope, input.page, RUNNER_HOST_ORDER);
  v.throwIfAny();
  return db.read(() => {
    if (runnerIds.length === 1) {
      // The common shape: the page itself checks the runner's organization, and only an
      // empty one needs the lookup that tells "no such runner" from "none yet". The token
      // is bound to this runner, so its cursor is in this runner's page.
      const rows = store.listRunnerPageInOrg(db, caller.orgId, runnerIds[0]!, after?.host ?? null, size + 1);
      if (rows.length === 0) requireRunner(db, caller.orgId, runnerIds[0]!);
      return pager.page(scope, rows, size, RUNNER_HOST_ORDER);
    }
    // Runners just checked to be the organization's need no org condition on their pages.
    for (const id of runnerIds) requireRunner(db, caller.orgId, id);
    return pager.page(scope, store.listRunnersPage(db, runnerIds, after, size + 1), size, RUNNER_HOST_ORDER);
  });
}

/** A page of the calling runner's own integrations in host order, optionally only the given ids. */
export async function listRunnerScmIntegrations(
  db: Db,
  pager: Pager,
  caller: RunnerCaller,
  input: { runnerId: string; ids: readonly string[]; page: PageRequest },
): Promise<Page<store.IntegrationView>> {
  const v = new Violations();
  const runnerId = checkUuid(v, "runner_id", input.runnerId);
  // Another runner's id is refused first; a malformed one is reported with the rest.
  if (!v.has("runner_id")) ownRunnerOnly(caller, runnerId);
  const ids = checkUuidList(v, "filter.scm_integration_ids", input.ids);
  const scope = pageScope("ListRunnerSCMIntegrations", caller.runnerId, ids);
  const { size, after } = pager.start(v, scope, input.page, RUNNER_HOST_ORDER);
  v.throwIfAny();
  const rows = await db.read(() => store.listRunnerPage(db, caller.runnerId, after?.host ?? null, size + 1, ids));
  return pager.page(scope, rows, size, RUNNER_HOST_ORDER);
}

/** Shape checks of the fields given, shared by Create and Update. */
function checkFieldShapes(
  v: Violations,
  f: { clientId?: string | undefined; secret?: string | undefined; issuerUrl?: string | null | undefined; virtualDirectory?: string | null | undefined },
): void {
  if (f.clientId != null) {
    if (characters(f.clientId) > MAX_CLIENT_ID) v.add("oauth_client_id", "string.max_len", `must be at most ${MAX_CLIENT_ID} characters`);
    else if (hasSpaceOrControl(f.clientId)) v.add("oauth_client_id", "string.printable", "must not contain whitespace or control characters");
  }
  if (f.secret != null && Buffer.byteLength(f.secret, "utf8") > MAX_SECRET_BYTES) {
    v.add("oauth_plaintext_client_secret", "string.max_bytes", `must be at most ${MAX_SECRET_BYTES} bytes`);
  }
  if (f.issuerUrl != null) {
    // An OpenID issuer identifier has no query (nor fragment, which any URL here is refused).
    const problem = httpsUrlProblem(f.issuerUrl) ?? (f.issuerUrl.includes("?") ? "must not include a query: an OpenID issuer is an https URL without one" : null);
    if (problem) v.add("issuer_url", "string.https_url", problem);
  }
  if (f.virtualDirectory != null) {
    const problem = virtualDirectoryProblem(f.virtualDirectory);
    if (problem) v.add("virtual_directory", "virtual_directory.valid", problem);
  }
}

/**
 * The rules every integration must satisfy, whether created or updated: at least one
 * authentication method, an issuer URL only with OAuth, and the rules of its scm_id.
 */
function checkRules(v: Violations, scmId: string, o: Outcome): void {
  if (!o.oauth && !o.pat) {
    v.add(
      "pat",
      "auth.method_required",
      "at least one authentication method is required: set pat to true, or give oauth_client_id with oauth_plaintext_client_secret",
    );
  } else if (!o.oauthUsable && !o.pat && o.usableBefore !== false) {
    // Only an Update that takes the last usable method away: one that finds none (its secret
    // dropped by a key change, PAT off) and adds none leaves it no worse, and is let through,
    // so that a client sending its settings again (a Terraform apply) is not refused.
    v.add(
      "pat",
      "auth.method_required",
      "would leave no usable authentication method: the OAuth secret must be entered again since the runner signed up with a new key; set oauth_plaintext_client_secret, or keep pat on",
    );
  }
  if (o.issuerUrl !== null && !o.oauth && !v.has("issuer_url")) {
    v.add("issuer_url", "issuer_url.oauth_only", "is only allowed together with OAuth (oauth_client_id)");
  }
  if (o.issuerUrl === null && o.oauth && scmId === AZURE_ENTRA) {
    v.add("issuer_url", "required", `is required for ${AZURE_ENTRA} with OAuth (the Entra ID issuer, https://login.microsoftonline.com/<tenant>/v2.0)`);
  }
  if (o.oauth && scmId === AZURE_SERVER) {
    v.add("oauth_client_id", "scm.pat_only", `${AZURE_SERVER} supports personal access tokens only; remove the OAuth settings`);
  }
  if (o.virtualDirectory !== null && scmId !== AZURE_SERVER && !v.has("virtual_directory")) {
    v.add("virtual_directory", "virtual_directory.scm", `is only allowed for ${AZURE_SERVER}`);
  }
  if (o.virtualDirectory === null && scmId === AZURE_SERVER) {
    v.add("virtual_directory", "required", `is required for ${AZURE_SERVER}, e.g. /tfs`);
  }
}

/** Refuses methods the runner's schema entry does not offer (it sent no `oauth` or no `pat`). */
function checkOffered(v: Violations, entry: ScmEntry, wants: { oauth: boolean; pat: boolean }): void {
  if (wants.oauth && !entry.oauth && !v.has("oauth_client_id")) {
    v.add("oauth_client_id", "scm.pat_only", `the runner takes personal access tokens only for ${entry.scmId}; remove the OAuth settings`);
  }
  if (wants.pat && !entry.pat) {
    v.add("pat", "scm.oauth_only", `the runner takes OAuth only for ${entry.scmId}; set pat to false`);
  }
}

function addsClient(input: UpdateScmIntegrationInput, row: ScmIntegrationRow): boolean {
  return input.oauthClientId !== undefined && input.oauthClientId !== "" && input.oauthClientId !== row.oauthClientId;
}

/**
 * Whether an Update adds something to the integration: a new OAuth client, PAT turned
 * on, an issuer URL or virtual directory set. Re-entering the secret of the same client,
 * removing OAuth and turning PAT off do not.
 */
function extends_(input: UpdateScmIntegrationInput, row: ScmIntegrationRow): boolean {
  const newClient = addsClient(input, row);
  const patOn = input.pat === true && !row.pat;
  const setsIssuer = input.issuerUrl !== undefined && input.issuerUrl !== "" && input.issuerUrl !== row.issuerUrl;
  const setsDirectory = input.virtualDirectory !== undefined && input.virtualDirectory !== "" && input.virtualDirectory !== row.virtualDirectory;
  return newClient || patOn || setsIssuer || setsDirectory;
}

/**
 * Runners recently sealed to, by organization and runner, oldest first: the key, and the
 * scm_ids whose schema entry takes OAuth. Either may be out of date (the runner signed up
 * again or published a schema, or is gone): the write checks both against the runner in
 * its own transaction and seals again, or fails, as it must. So this only spares a create
 * the lookup, and the turn of the event loop it waits for.
 */
const recentKeys = new Map<string, { key: Buffer; oauth: ReadonlySet<string> }>();
const RECENT_KEYS = 16_384;
const keyName = (orgId: string, runnerId: string) => `${orgId}/${runnerId}`;
const forgetKey = (orgId: string, runnerId: string) => recentKeys.delete(keyName(orgId, runnerId));
const takesOAuth = (schema: RunnerSchema): ReadonlySet<string> => new Set(schema.scm.filter((e) => e.oauth).map((e) => e.scmId));
const DEFAULT_OAUTH = takesOAuth(DEFAULT_SCHEMA);

/**
 * The secret sealed, off the event loop, to the key the runner has now; null when it has
 * none, when its schema's entry for `scmId` takes no OAuth (the write refuses the create:
 * no sealing for that), or when there is no such runner (the write says why). The write
 * uses the box only while that is still the runner's key, and seals again should a Signup
 * have changed it.
 */
async function sealAhead(db: Db, orgId: string, runnerId: string, scmId: string, secret: string): Promise<{ key: Buffer; box: Buffer } | null> {
  const known = keyName(orgId, runnerId);
  let runner = recentKeys.get(known);
  if (runner === undefined) {
    const found = await db.read(() => findRunnerKey(db, orgId, runnerId));
    if (!found?.publicKey) return null;
    const schema = schemaOf(found);
    runner = { key: found.publicKey, oauth: schema === DEFAULT_SCHEMA ? DEFAULT_OAUTH : takesOAuth(schema) };
    if (recentKeys.size >= RECENT_KEYS) recentKeys.delete(recentKeys.keys().next().value!);
    recentKeys.set(known, runner);
  }
  if (!runner.oauth.has(scmId)) return null;
  // Should sealing fail here, the write seals inline, and reports a key libsodium refuses.
  const box = await sealOffLoop(secret, runner.key).catch(() => null);
  return box ? { key: runner.key, box } : null;
}

function sealFor(runner: SealingRunner, secret: string, field: "runner_id" | "oauth_plaintext_client_secret"): Buffer {
  if (!runner.publicKey) {
    throw new DomainError(
      "failed_precondition",
      `${field}: runner does not have a public key; runner ${runner.id} must sign up before an OAuth client secret can be sealed to it`,
    );
  }
  return seal(secret, runner.publicKey);
}

/** The host as a create stores it (normalizeHost); a host it refuses is left as given. */
export function hostAsStored(given: string): string {
  const host = normalizeHost(given);
  return host.ok ? host.host : given;
}

/**
 * A virtual directory as stored: without the trailing slash a client may add, so "/tfs/" and
 * "/tfs" are one directory and a runner can append "/collection" to either.
 */
export function directoryAsStored(value: string | undefined): string | undefined {
  return value !== undefined && value.length > 1 && value.endsWith("/") ? value.slice(0, -1) : value;
}

/** Why a virtual directory (as stored) is refused: its segments follow the rules of a host's path. */
function virtualDirectoryProblem(value: string): string | null {
  if (characters(value) > MAX_VIRTUAL_DIRECTORY) return `must be at most ${MAX_VIRTUAL_DIRECTORY} characters`;
  if (!value.startsWith("/")) return 'must start with "/", e.g. /tfs';
  for (const segment of value.slice(1).split("/")) {
    if (segment === "") return "must be a path of non-empty segments, e.g. /tfs";
    if (isDotSegment(segment)) return "must not contain . or .. segments";
    if (!isPathSegment(segment)) {
      return `has an invalid character in segment "${truncate(segment)}": letters, digits, -._~!$&'()*+,;=: and %XX escapes only`;
    }
  }
  return null;
}

/** Update semantics of an optional string: absent keeps `current`, `""` clears, else the value. */
function cleared(value: string | undefined, current: string | null): string | null {
  if (value === undefined) return current;
  return value === "" ? null : value;
}

function emptyAsAbsent(value: string | undefined): string | undefined {
  return value === "" ? undefined : value;
}
