import type { ApiCaller, RunnerCaller } from "../domain/caller.js";
import { Violations, notFound } from "../domain/errors.js";
import { AZURE_SERVER, DEFAULT_SCHEMA, type RunnerSchema, type ScmEntry } from "../domain/scm-schema.js";
import { newId } from "../crypto/ids.js";
import { isUsablePublicKey, PUBLIC_KEY_BYTES } from "../crypto/sealed-box.js";
import { newToken } from "../crypto/tokens.js";
import { BLANK_TEXT, HIDDEN_TEXT, MAX_FILTER_IDS, checkUuid, checkUuidList, hasControlOrHidden, isBlank } from "../domain/checks.js";
import { characters } from "../domain/text.js";
import { ID_ORDER, pageScope, type Page, type PageRequest, type Pager } from "./pagination.js";
import type { Db } from "../store/database.js";
import { writeAs } from "./auth.js";
import * as store from "../store/runners.js";
import type { RunnerFilter, RunnerView } from "../store/runners.js";
import type { RunnerRow } from "../store/schema.js";

// The defined, meaningful values of the RunnerKind and RunnerProvider enums.
const KINDS = new Map([[1, "LOCAL"], [2, "REMOTE"], [3, "LOCAL_CONFIGURATION"]]);
const PROVIDERS = new Map([
  [1, "AWS_EC2"], [2, "LINUX_HOST"], [3, "DESKTOP_MAC"], [4, "MANAGED"], [5, "GCP"], [6, "DEV_AGENT"],
]);
/**
 * The kind a provider implies, for a CreateRunner that names the provider alone, as the
 * public API lets it: AWS EC2 and GCP runners are remote (the API documents both), a Linux
 * host's is local (the SDK's own example creates "a new local runner on Linux" with that
 * provider alone), Gitpod Desktop on a Mac runs environments on that Mac. The hosted
 * service's own providers (managed, dev agent) have no documented kind and need it sent.
 */
const KIND_OF_PROVIDER = new Map([[1, 2], [5, 2], [2, 1], [3, 1]]);

export interface CreateRunnerInput {
  name: string;
  kind: number;
  provider: number;
}

/** Registers a runner in the caller's organization; the access token is returned only here. */
export function createRunner(db: Db, caller: ApiCaller, input: CreateRunnerInput): Promise<{ runner: RunnerRow; accessToken: string }> {
  const v = new Violations();
  checkRunnerName(v, "name", input.name);
  // Either may be left unspecified (0): the provider is the field of today's clients, the
  // kind the one of older ones.
  if (input.kind !== 0 && !KINDS.has(input.kind)) {
    v.add("kind", "enum.defined", `must be one of ${[...KINDS.values()].map((k) => `RUNNER_KIND_${k}`).join(", ")}`);
  }
  if (input.provider !== 0 && !PROVIDERS.has(input.provider)) {
    v.add("provider", "enum.defined", `must be one of ${[...PROVIDERS.values()].map((p) => `RUNNER_PROVIDER_${p}`).join(", ")}`);
  }
  if (input.kind === 0 && input.provider === 0) {
    v.add("provider", "required", "is required (or kind, which older clients send instead)");
  }
  const kind = input.kind !== 0 ? input.kind : (KIND_OF_PROVIDER.get(input.provider) ?? 0);
  if (kind === 0 && PROVIDERS.has(input.provider)) {
    v.add("kind", "required", `is required with provider RUNNER_PROVIDER_${PROVIDERS.get(input.provider)}, whose kind cannot be deduced`);
  }
  v.throwIfAny();
  const now = Date.now();
  const { token, hash } = newToken("runner");
  const runner: RunnerRow = {
    id: newId(now),
    orgId: caller.orgId,
    name: input.name,
    kind,
    provider: input.provider,
    creatorId: caller.tokenId,
    createdAt: now,
    updatedAt: now,
    accessTokenHash: hash,
    publicKey: null,
    statusUpdatedAt: null,
    configSchema: null,
    secretsWalk: 0,
    deleting: false,
  };
  return writeAs(db, caller, () => {
    store.insertRunner(db, runner);
    return { runner, accessToken: token };
  });
}

/**
 * Records the runner's X25519 public key and answers its id, once the secrets sealed to its
 * earlier keys are dropped: a bounded number a write (RUNNER_ROWS_A_WRITE), with other calls'
 * writes between them, rather than all in one transaction (a runner with a million
 * integrations held every other call for 16 s). No read shows them meanwhile. Should the
 * service stop before the last, the runner's next Signup, with this key or another, goes on.
 */
export async function signup(db: Db, caller: RunnerCaller, publicKey: Uint8Array): Promise<string> {
  const v = new Violations();
  if (publicKey.length !== PUBLIC_KEY_BYTES) {
    v.add("public_key", "bytes.len", `must be exactly ${PUBLIC_KEY_BYTES} bytes, got ${publicKey.length}`);
  } else if (!isUsablePublicKey(publicKey)) {
    v.add("public_key", "x25519.order", "is a low-order X25519 point (such as all zeros); send the runner's real public key");
  }
  v.throwIfAny();
  const walk = await writeAs(db, caller, () => {
    const left = store.setRunnerPublicKey(db, caller.runnerId, Buffer.from(publicKey), Date.now());
    // The token was checked before this write: the runner may have been deleted since.
    if (left === null) throw notFound("runner", caller.runnerId);
    return left;
  });
  for (let after: string | null = walk ? "" : null; after !== null; ) {
    const from = after;
    after = await db.write(() => store.dropSomeStaleSecrets(db, caller.runnerId, walk!, from, Date.now()));
  }
  return caller.runnerId;
}

/** The runner with this id in this organization; not_found when absent or in another organization. */
function runnerOf(db: Db, orgId: string, runnerId: string): RunnerView {
  const runner = store.findRunner(db, orgId, runnerId);
  if (!runner) throw notFound("runner", runnerId);
  return runner;
}

/**
 * The columns a write that seals to a runner needs (its key and schema): a create reads
 * them in every write, and the whole row costs two more blobs and eight columns more.
 */
export function runnerKeyOf(db: Db, orgId: string, runnerId: string): SealingRunner {
  const found = store.findRunnerKey(db, orgId, runnerId);
  if (!found) throw notFound("runner", runnerId);
  return { id: runnerId, ...found };
}

export type SealingRunner = Pick<RunnerRow, "id" | "publicKey" | "configSchema" | "deleting">;

/** not_found unless the organization has this runner; for callers that need none of its columns. */
export function requireRunner(db: Db, orgId: string, runnerId: string): void {
  if (!store.hasRunner(db, orgId, runnerId)) throw notFound("runner", runnerId);
}

/**
 * The schema a runner published, or the built-in default. Schemas stored before the
 * service recorded which methods an entry offers read as offering both, as they were
 * treated then; Azure DevOps Server never takes OAuth, whatever its entry says.
 */
export function schemaOf(runner: Pick<RunnerRow, "configSchema">): RunnerSchema {
  if (!runner.configSchema) return DEFAULT_SCHEMA;
  const stored = JSON.parse(runner.configSchema) as { version: string; scm: (Omit<ScmEntry, "oauth" | "pat"> & Partial<ScmEntry>)[] };
  return {
    version: stored.version,
    scm: stored.scm.map((e) => ({ ...e, oauth: e.scmId !== AZURE_SERVER && (e.oauth ?? true), pat: e.pat ?? true })),
  };
}

/**
 * 3 to 127 characters (code points), the contract's rule, and no control characters, which
 * no name needs; anything else the public API takes (spaces around it, say) is taken here too,
 * as given.
 */
function checkRunnerName(v: Violations, field: string, name: string): void {
  const length = characters(name);
  if (length < 3 || length > 127) v.add(field, "string.len", `must be 3 to 127 characters, got ${length}`);
  // Names are shown in lists and terminals: an escape sequence in one would act there, and a
  // direction override or hidden characters would make it read as another runner's.
  else if (hasControlOrHidden(name)) v.add(field, "string.printable", HIDDEN_TEXT);
  else if (isBlank(name)) v.add(field, "string.not_blank", BLANK_TEXT);
}

/** The runner with this id in the caller's organization. */
export async function getRunner(db: Db, caller: ApiCaller, given: string): Promise<RunnerView> {
  const v = new Violations();
  const runnerId = checkUuid(v, "runner_id", given);
  v.throwIfAny();
  return db.read(() => runnerOf(db, caller.orgId, runnerId));
}

/** A page of the organization's runners in id order, narrowed by the filter's lists. */
export async function listRunners(
  db: Db,
  pager: Pager,
  caller: ApiCaller,
  input: { filter: RunnerFilter; page: PageRequest },
): Promise<Page<RunnerView>> {
  const v = new Violations();
  const filter: RunnerFilter = {
    creatorIds: checkUuidList(v, "filter.creator_ids", input.filter.creatorIds),
    kinds: checkEnumList(v, "filter.kinds", input.filter.kinds, KINDS, "RUNNER_KIND_"),
    providers: checkEnumList(v, "filter.providers", input.filter.providers, PROVIDERS, "RUNNER_PROVIDER_"),
  };
  // A page token is good only for the filter it was made for.
  const scope = pageScope("ListRunners", caller.orgId, [
    ...filter.creatorIds.map((id) => `creator:${id}`),
    ...filter.kinds.map((k) => `kind:${k}`),
    ...filter.providers.map((p) => `provider:${p}`),
  ]);
  const { size, after } = pager.start(v, scope, input.page, ID_ORDER);
  v.throwIfAny();
  return pager.page(scope, await db.read(() => store.listRunners(db, caller.orgId, after, size + 1, filter)), size, ID_ORDER);
}

/**
 * Distinct values of a filter's enum list, each one the enum defines. UNSPECIFIED is
 * taken: a runner created with its kind alone has no provider.
 */
function checkEnumList(v: Violations, field: string, values: readonly number[], known: Map<number, string>, prefix: string): number[] {
  if (values.length > MAX_FILTER_IDS) {
    v.add(field, "repeated.max_items", `must have at most ${MAX_FILTER_IDS} items, got ${values.length}`);
    return [];
  }
  values.forEach((value, i) => {
    if (value !== 0 && !known.has(value)) {
      v.add(`${field}[${i}]`, "enum.defined", `must be one of ${[0, ...known.keys()].map((n) => prefix + (known.get(n) ?? "UNSPECIFIED")).join(", ")}`);
    }
  });
  return [...new Set(values)];
}

/** Renames a runner; an absent name changes nothing (but the runner must exist). */
export function updateRunner(db: Db, caller: ApiCaller, input: { runnerId: string; name?: string | undefined }): Promise<void> {
  const v = new Violations();
  const runnerId = checkUuid(v, "runner_id", input.runnerId);
  if (input.name !== undefined) checkRunnerName(v, "name", input.name);
  v.throwIfAny();
  const { name } = input;
  if (name === undefined) {
    // Nothing to write, but the answer says the runner exists: like a Get's, it waits until
    // what it read is on disk (the durability interceptor waits only for Get and List).
    return db.read(() => requireRunner(db, caller.orgId, runnerId)).then(() => db.durable());
  }
  return writeAs(db, caller, () => {
    if (!store.updateRunner(db, caller.orgId, runnerId, { name, updatedAt: Date.now() })) {
      throw notFound("runner", runnerId);
    }
  });
}

/**
 * Deletes a runner with all its integrations and their sealed secrets. There is nothing
 * else hanging on a runner here, so `force` changes nothing. The integrations go a bounded
 * number a write (RUNNER_ROWS_A_WRITE), other calls' writes between them, and the runner
 * with the last of them: what a call sees meanwhile is the runner with fewer integrations.
 * Only the first write decides whether the call may, and can, delete: once it has deleted
 * some, the call goes on to the end, answered done whoever deletes the last (another
 * DeleteRunner of the same runner, say), and a token revoked meanwhile does not stop it.
 */
export async function deleteRunner(db: Db, caller: ApiCaller, given: string): Promise<void> {
  const v = new Violations();
  const runnerId = checkUuid(v, "runner_id", given);
  v.throwIfAny();
  const step = () => {
    if (!store.hasRunner(db, caller.orgId, runnerId)) return null;
    // From its first step on, the runner takes no new integrations, so the steps come to an end.
    store.markDeleting(db, runnerId);
    if (store.deleteSomeIntegrations(db, runnerId) === store.RUNNER_ROWS_A_WRITE) return false;
    // The cascade takes whatever a create added since.
    store.deleteRunner(db, caller.orgId, runnerId);
    return true;
  };
  const first = await writeAs(db, caller, step);
  if (first === null) throw notFound("runner", runnerId);
  for (let done = first; done !== true; ) done = (await db.write(step)) ?? true;
}

/** Issues a new access token for the runner; the previous one stops working at once. */
export function createRunnerToken(db: Db, caller: ApiCaller, given: string): Promise<string> {
  const v = new Violations();
  const runnerId = checkUuid(v, "runner_id", given);
  v.throwIfAny();
  const { token, hash } = newToken("runner");
  return writeAs(db, caller, () => {
    if (!store.updateRunner(db, caller.orgId, runnerId, { accessTokenHash: hash, updatedAt: Date.now() })) {
      throw notFound("runner", runnerId);
    }
    return token;
  });
}
