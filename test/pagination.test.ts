import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { call, createRunner, startServer, type TestServer } from "./harness.js";

const LIST = "gitpod.v1.RunnerConfigurationService/ListSCMIntegrations";
const CREATE = "gitpod.v1.RunnerConfigurationService/CreateSCMIntegration";
const DELETE = "gitpod.v1.RunnerConfigurationService/DeleteSCMIntegration";

/** Sends a List with the SDK's habit of putting token and pageSize in the URL query. */
async function listWithQuery(s: TestServer, query: Record<string, string>, body: object) {
  const res = await fetch(`${s.url}/${LIST}?${new URLSearchParams(query)}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

describe("pagination", () => {
  let s: TestServer;
  let runnerA: string;
  let runnerB: string;
  const idsA: string[] = [];
  /** runnerA's integrations in the order its pages show them: by host. */
  let byHostA: string[];

  before(async () => {
    s = await startServer();
    runnerA = (await createRunner(s, s.token, "runner-a")).runnerId;
    runnerB = (await createRunner(s, s.token, "runner-b")).runnerId;
    for (let i = 0; i < 110; i++) {
      const r = await call(s, CREATE, { runnerId: runnerA, scmId: "github", host: `a${i}.example.com`, pat: true });
      idsA.push(r.body.id);
    }
    for (let i = 0; i < 5; i++) await call(s, CREATE, { runnerId: runnerB, scmId: "gitlab", host: `b${i}.example.com`, pat: true });
    byHostA = idsA.map((id, i) => ({ id, host: `a${i}.example.com` })).sort((x, y) => (x.host < y.host ? -1 : 1)).map((x) => x.id);
  });
  after(() => s.close());

  it("page_size: 0 means 25, up to 100 is honoured, outside 0..100 is invalid_argument", async () => {
    const filter = { runnerIds: [runnerA] };
    const byDefault = await call(s, LIST, { filter });
    assert.equal(byDefault.body.integrations.length, 25);
    assert.deepEqual(byDefault.body.integrations.map((i: any) => i.id), byHostA.slice(0, 25));
    const hundred = await call(s, LIST, { filter, pagination: { pageSize: 100 } });
    assert.equal(hundred.body.integrations.length, 100);
    const one = await call(s, LIST, { filter, pagination: { pageSize: 1 } });
    assert.equal(one.body.integrations.length, 1);
    for (const pageSize of [-1, 101, 2 ** 31 - 1]) {
      const r = await call(s, LIST, { filter, pagination: { pageSize } });
      assert.equal(r.body.code, "invalid_argument", String(pageSize));
      assert.match(r.body.message, /^pagination\.page_size: must be from 0 to 100/);
    }
    // Number() would read these as 16, 3 and 7; the JSON mapping allows a JSON number only.
    for (const pageSize of ["0x10", "0b11", "0o7"]) {
      const r = await call(s, LIST, { filter, pagination: { pageSize } });
      assert.equal(r.body.code, "invalid_argument", pageSize);
      assert.equal(r.body.message, `cannot decode field gitpod.v1.PaginationRequest.page_size from JSON: "${pageSize}"`);
    }
    // A long one is shown cut short: the answer does not grow with the request.
    const long = await call(s, LIST, { filter, pagination: { pageSize: `0x${"1".repeat(100_000)}` } });
    assert.equal(long.body.message, `cannot decode field gitpod.v1.PaginationRequest.page_size from JSON: "0x${"1".repeat(62)}…"`);
    // A message field given something else is named, not only its message type.
    for (const [body, reason] of [
      [{ filter, pagination: 5 }, "pagination from JSON: expected object, got 5"],
      [{ filter, pagination: [] }, "pagination from JSON: expected object, got Array(0)"],
      [{ filter: "runner", pagination: {} }, 'filter from JSON: expected object, got "runner"'],
    ] as const) {
      const r = await call(s, LIST, body);
      assert.equal(r.body.code, "invalid_argument", JSON.stringify(body));
      assert.equal(r.body.message, `cannot decode field gitpod.v1.ListSCMIntegrationsRequest.${reason}`);
    }
    assert.equal((await call(s, LIST, { filter, pagination: null })).body.integrations.length, 25, "null is an absent message");
  });

  it("next_token is empty on the last page, and a page that ends exactly at the last item says so", async () => {
    const last = await call(s, LIST, { filter: { runnerIds: [runnerB] }, pagination: { pageSize: 5 } });
    assert.equal(last.body.integrations.length, 5);
    assert.equal(last.body.pagination.nextToken ?? "", "");
    const empty = await call(s, LIST, { filter: { runnerIds: [(await createRunner(s, s.token, "empty-runner")).runnerId] } });
    assert.deepEqual(empty.body.integrations ?? [], []);
    assert.equal(empty.body.pagination.nextToken ?? "", "");
  });

  it("filters by runner, refuses bad filters naming the item, and not_found for a runner it does not have", async () => {
    const both = await call(s, LIST, { filter: { runnerIds: [runnerB, runnerA, runnerB] }, pagination: { pageSize: 100 } });
    assert.equal(both.body.integrations.length, 100);
    const onlyB = await call(s, LIST, { filter: { runnerIds: [runnerB] } });
    assert.equal(onlyB.body.integrations.length, 5);
    assert.ok(onlyB.body.integrations.every((i: any) => i.runnerId === runnerB));
    const bad = await call(s, LIST, { filter: { runnerIds: [runnerA, "nope"] } });
    assert.match(bad.body.message, /^filter\.runner_ids\[1\]: must be a uuid/);
    const many = await call(s, LIST, { filter: { runnerIds: Array(26).fill(runnerA) } });
    assert.match(many.body.message, /^filter\.runner_ids: must have at most 25 items, got 26/);
    const foreign = (await createRunner(s, s.otherToken, "other-org")).runnerId;
    const notMine = await call(s, LIST, { filter: { runnerIds: [runnerA, foreign] } });
    assert.equal(notMine.body.code, "not_found");
    // One runner: its page checks the organization, and an empty page tells "none yet" from "no such runner".
    assert.equal((await call(s, LIST, { filter: { runnerIds: [foreign] } })).body.code, "not_found");
    assert.equal((await call(s, LIST, { filter: { runnerIds: ["0190a0a0-0000-7000-8000-00000000abcd"] } })).body.code, "not_found");
    const empty = await call(s, LIST, { filter: { runnerIds: [(await createRunner(s)).runnerId] } });
    assert.equal(empty.status, 200);
    assert.deepEqual(empty.body.integrations ?? [], []);
    // Unfiltered lists hold only the caller's organization.
    const asOther = await call(s, LIST, {}, s.otherToken);
    assert.deepEqual(asOther.body.integrations ?? [], []);
  });

  it("the URL query's token and pageSize win over the body's", async () => {
    const filter = { runnerIds: [runnerA] };
    const first = await listWithQuery(s, { pageSize: "10" }, { filter, pagination: { pageSize: 50 } });
    assert.equal(first.body.integrations.length, 10);
    const second = await listWithQuery(s, { token: first.body.pagination.nextToken }, { filter, pagination: { pageSize: 10, token: "ignored-because-the-query-has-one" } });
    assert.deepEqual(second.body.integrations.map((i: any) => i.id), byHostA.slice(10, 20));
    const bad = await listWithQuery(s, { pageSize: "ten" }, { filter });
    assert.match(bad.body.message, /^pagination\.page_size: must be a whole number/);
    const tooBig = await listWithQuery(s, { pageSize: "1000" }, { filter });
    assert.equal(tooBig.body.code, "invalid_argument");
  });

  it("a token that was altered, or made for another call, filter or organization, is invalid_argument", async () => {
    const filter = { runnerIds: [runnerA] };
    const { nextToken } = (await call(s, LIST, { filter, pagination: { pageSize: 3 } })).body.pagination;
    assert.equal((await call(s, LIST, { filter, pagination: { token: nextToken } })).status, 200);
    const flipped = nextToken.slice(0, 10) + (nextToken[10] === "A" ? "B" : "A") + nextToken.slice(11);
    const runnersToken = (await call(s, "gitpod.v1.RunnerService/ListRunners", { pagination: { pageSize: 1 } })).body.pagination.nextToken;
    const otherOrgToken = (await call(s, LIST, { pagination: { pageSize: 1 } }, s.token)).body.pagination.nextToken;
    const attempts: [string, object, string?][] = [
      ["altered", { filter, pagination: { token: flipped } }],
      ["garbage", { filter, pagination: { token: "definitely not a token" } }],
      ["truncated", { filter, pagination: { token: nextToken.slice(0, 20) } }],
      ["one character longer", { filter, pagination: { token: `${nextToken}A` } }],
      ["last character changed", { filter, pagination: { token: nextToken.slice(0, -1) + (nextToken.endsWith("A") ? "B" : "A") } }],
      ["very long", { filter, pagination: { token: nextToken.repeat(10_000) } }],
      ["another filter", { filter: { runnerIds: [runnerB] }, pagination: { token: nextToken } }],
      ["no filter", { pagination: { token: nextToken } }],
      ["another call", { filter, pagination: { token: runnersToken } }],
      ["another organization", { pagination: { token: otherOrgToken } }, s.otherToken],
    ];
    for (const [name, body, token] of attempts) {
      const r = await call(s, LIST, body, token ?? s.token);
      assert.equal(r.body.code, "invalid_argument", name);
      assert.match(r.body.message, /^pagination\.token: is not a next_token this call issued/, name);
    }
  });

  it("walking every page while others create and delete never repeats an item nor skips one that stayed", async () => {
    const filter = { runnerIds: [runnerA, runnerB] };
    const start = (await call(s, LIST, { filter, pagination: { pageSize: 100 } })).body;
    const initial: string[] = [...start.integrations, ...(await call(s, LIST, { filter, pagination: { pageSize: 100, token: start.pagination.nextToken } })).body.integrations].map((i: any) => i.id);
    // Every third item is deleted during the walk; the rest stay throughout.
    const doomed = initial.filter((_, i) => i % 3 === 0);
    const stayed = new Set(initial.filter((_, i) => i % 3 !== 0));

    const seen: { id: string; runnerId: string; host: string }[] = [];
    let token = "";
    let writes = 0;
    for (;;) {
      const page = await call(s, LIST, { filter, pagination: { pageSize: 7, token } });
      assert.equal(page.status, 200, JSON.stringify(page.body));
      seen.push(...page.body.integrations.map((i: any) => ({ id: i.id, runnerId: i.runnerId, host: i.host })));
      // Between pages: delete some items (ahead and behind), create new ones.
      const churn = [
        ...doomed.splice(0, 4).map((id) => call(s, DELETE, { id })),
        call(s, CREATE, { runnerId: writes % 2 ? runnerA : runnerB, scmId: "github", host: `new${writes++}.example.com`, pat: true }),
      ];
      for (const r of await Promise.all(churn)) assert.equal(r.status, 200);
      token = page.body.pagination.nextToken ?? "";
      if (!token) break;
    }
    const seenIds = seen.map((i) => i.id);
    assert.equal(new Set(seenIds).size, seenIds.length, "no item twice");
    for (const id of stayed) assert.ok(seenIds.includes(id), `skipped ${id}, which existed throughout`);
    const keys = seen.map((i) => `${i.runnerId} ${i.host}`);
    assert.deepEqual(keys, [...keys].sort(), "runner, then host order");
  });

  it("the whole organization's list walks in id order, through pages whose tokens name ids", async () => {
    const seen: string[] = [];
    let token = "";
    for (;;) {
      const page = await call(s, LIST, { pagination: { pageSize: 30, token } });
      assert.equal(page.status, 200, JSON.stringify(page.body));
      seen.push(...page.body.integrations.map((i: any) => i.id));
      token = page.body.pagination.nextToken ?? "";
      if (!token) break;
    }
    assert.ok(seen.length > 60, String(seen.length));
    assert.equal(new Set(seen).size, seen.length, "no item twice");
    assert.deepEqual(seen, [...seen].sort(), "id order");
    // A token of a runner's list (runner-then-host order) is not one of these, and the other way round.
    const runnerToken = (await call(s, LIST, { filter: { runnerIds: [runnerA] }, pagination: { pageSize: 2 } })).body.pagination.nextToken;
    const orgToken = (await call(s, LIST, { pagination: { pageSize: 2 } })).body.pagination.nextToken;
    assert.equal((await call(s, LIST, { pagination: { token: runnerToken } })).body.code, "invalid_argument");
    assert.equal((await call(s, LIST, { filter: { runnerIds: [runnerA] }, pagination: { token: orgToken } })).body.code, "invalid_argument");
  });

  it("several runners' pages run through each runner in id order, and through its hosts", async () => {
    const filter = { runnerIds: [runnerB, runnerA] };
    const seen: { runnerId: string; host: string }[] = [];
    let token = "";
    for (;;) {
      const page = await call(s, LIST, { filter, pagination: { pageSize: 9, token } });
      assert.equal(page.status, 200, JSON.stringify(page.body));
      seen.push(...page.body.integrations.map((i: any) => ({ runnerId: i.runnerId, host: i.host })));
      token = page.body.pagination.nextToken ?? "";
      if (!token) break;
    }
    const [first, second] = [runnerA, runnerB].sort();
    const firstHosts = seen.filter((i) => i.runnerId === first).map((i) => i.host);
    const secondHosts = seen.filter((i) => i.runnerId === second).map((i) => i.host);
    assert.deepEqual(seen.map((i) => i.runnerId), [...firstHosts.map(() => first), ...secondHosts.map(() => second)]);
    assert.deepEqual(firstHosts, [...firstHosts].sort());
    assert.deepEqual(secondHosts, [...secondHosts].sort());
    const count = async (runnerId: string) => {
      let n = 0;
      let t = "";
      for (;;) {
        const p = await call(s, LIST, { filter: { runnerIds: [runnerId] }, pagination: { pageSize: 100, token: t } });
        n += p.body.integrations.length;
        t = p.body.pagination.nextToken ?? "";
        if (!t) return n;
      }
    };
    assert.equal(firstHosts.length, await count(first!));
    assert.equal(secondHosts.length, await count(second!));
  });

  it("a page that crosses into the next runner starts at its first host, whatever host the cursor holds", async () => {
    const made = [(await createRunner(s, s.token, "cursor-one")).runnerId, (await createRunner(s, s.token, "cursor-two")).runnerId];
    const [first, second] = made.sort();
    // The first runner's one host sorts after the second's: carried over, the cursor's host would hide it.
    assert.equal((await call(s, CREATE, { runnerId: first, scmId: "github", host: "zz.example.com", pat: true })).status, 200);
    assert.equal((await call(s, CREATE, { runnerId: second, scmId: "github", host: "aa.example.com", pat: true })).status, 200);
    const filter = { runnerIds: [first, second] };
    const hosts = (page: any) => page.body.integrations.map((i: any) => i.host);
    assert.deepEqual(hosts(await call(s, LIST, { filter, pagination: { pageSize: 10 } })), ["zz.example.com", "aa.example.com"]);
    const one = await call(s, LIST, { filter, pagination: { pageSize: 1 } });
    assert.deepEqual(hosts(one), ["zz.example.com"]);
    const two = await call(s, LIST, { filter, pagination: { pageSize: 1, token: one.body.pagination.nextToken } });
    assert.deepEqual(hosts(two), ["aa.example.com"]);
  });
});
