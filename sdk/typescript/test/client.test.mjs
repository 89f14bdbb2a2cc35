// The management client against a real `coffer serve`: environments, secrets (pages,
// search, sort, revisions, import), config, API keys, functions, events and runs, audit.
// Needs `npm run build` (it imports ../dist/index.js).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { startServer } from "./harness.mjs";
import { rejectsWith } from "./util.mjs";
import { Coffer, Pager } from "../dist/index.js";

let server;
let client;

before(async () => {
  server = await startServer();
  client = new Coffer({ address: server.address, apiKey: server.adminKey });
});

after(async () => {
  await server?.stop();
});

/** No response object contains any of these values, at any depth. */
function assertNoValue(objects, values) {
  const text = JSON.stringify(objects);
  for (const v of values) assert.ok(!text.includes(v), "a response contains a secret value");
}

test("environments: create, list, delete", async () => {
  const created = await client.environments.create("sdk-env");
  assert.equal(created.name, "sdk-env");
  assert.match(created.createdAt, /^\d{4}-\d\d-\d\dT/);
  const names = (await client.environments.list()).map((e) => e.name);
  assert.ok(names.includes("default") && names.includes("sdk-env"));
  await rejectsWith(client.environments.create("sdk-env"), 409, "environment_exists");
  await rejectsWith(client.environments.create("Not Valid"), 422, "invalid_name");
  await client.environments.delete("sdk-env");
  assert.ok(!(await client.environments.list()).some((e) => e.name === "sdk-env"));
  await rejectsWith(client.environments.delete("sdk-env"), 404, "environment_not_found");
});

test("secrets: set, get, list across pages, delete — metadata only", async () => {
  await client.environments.create("sec");
  const values = {
    ALPHA: "alpha-value-0a1b2c3d",
    BRAVO: "bravo-value-4e5f6a7b",
    CHARLIE: "charlie-value-8c9d0e1f",
    DELTA: "delta-value-2a3b4c5d",
    ECHO: "echo-value-6e7f8a9b",
  };
  const responses = [];
  for (const [name, value] of Object.entries(values)) {
    const meta = await client.secrets.set("sec", name, value);
    responses.push(meta);
    assert.equal(meta.name, name);
    assert.equal(meta.environment, "sec");
    assert.equal(meta.revision, 1);
    assert.equal(meta.status, "ok");
    assert.ok(!("value" in meta));
  }

  // the iterator walks every page (limit 2: three pages), in name order
  const pager = client.secrets.list("sec", { limit: 2 });
  assert.ok(pager instanceof Pager);
  const listed = [];
  for await (const s of pager) listed.push(s);
  assert.deepEqual(listed.map((s) => s.name), Object.keys(values));
  const pages = [];
  for await (const p of pager.pages()) pages.push(p.items.length);
  assert.deepEqual(pages, [2, 2, 1]);
  assert.deepEqual((await pager.toArray()).map((s) => s.name), Object.keys(values));
  responses.push(...listed);

  // one page, then the next from its cursor
  const first = await client.secrets.page("sec", { limit: 2 });
  assert.deepEqual(first.secrets.map((s) => s.name), ["ALPHA", "BRAVO"]);
  assert.equal(typeof first.nextCursor, "string");
  const second = await client.secrets.page("sec", { limit: 2, cursor: first.nextCursor });
  assert.deepEqual(second.secrets.map((s) => s.name), ["CHARLIE", "DELTA"]);
  // a listing can start from a cursor too
  assert.deepEqual((await client.secrets.list("sec", { limit: 2, cursor: first.nextCursor }).toArray()).map((s) => s.name),
    ["CHARLIE", "DELTA", "ECHO"]);
  responses.push(first, second);

  const got = await client.secrets.get("sec", "BRAVO");
  assert.equal(got.revision, 1);
  responses.push(got);

  const updated = await client.secrets.set("sec", "BRAVO", "bravo-value-rotated-111", { expectedRevision: 1 });
  assert.equal(updated.revision, 2);
  responses.push(updated);

  // a stale revision: revision_conflict with currentRevision; the value is in no message
  const conflict = await rejectsWith(
    client.secrets.set("sec", "BRAVO", "bravo-value-should-not-win", { expectedRevision: 1 }),
    409,
    "revision_conflict",
  );
  assert.equal(conflict.currentRevision, 2);
  assert.ok(!conflict.message.includes("bravo-value-should-not-win"));
  assert.ok(!JSON.stringify(conflict).includes("bravo-value-should-not-win"));
  // expectedRevision 0: only if it does not exist
  const exists = await rejectsWith(client.secrets.set("sec", "ALPHA", "x-value-never", { expectedRevision: 0 }), 409, "revision_conflict");
  assert.equal(exists.currentRevision, 1);
  const created = await client.secrets.set("sec", "FOXTROT", "foxtrot-value-9f8e7d", { expectedRevision: 0 });
  assert.equal(created.revision, 1);
  responses.push(created);

  // delete: a stale revision refused, then deleted, then gone
  const stale = await rejectsWith(client.secrets.delete("sec", "BRAVO", { expectedRevision: 1 }), 409, "revision_conflict");
  assert.equal(stale.currentRevision, 2);
  await client.secrets.delete("sec", "BRAVO", { expectedRevision: 2 });
  await client.secrets.delete("sec", "FOXTROT");
  await rejectsWith(client.secrets.get("sec", "BRAVO"), 404, "secret_not_found");
  await rejectsWith(client.secrets.delete("sec", "BRAVO"), 404, "secret_not_found");

  assertNoValue(responses, [...Object.values(values), "bravo-value-rotated-111", "foxtrot-value-9f8e7d"]);
});

test("secrets: search and sort", async () => {
  await client.environments.create("sorted");
  for (const name of ["STRIPE_KEY", "stripe_webhook", "DB_URL", "API_TOKEN"]) {
    await client.secrets.set("sorted", name, `value-of-${name}`);
  }
  const names = async (options) => (await client.secrets.list("sorted", options).toArray()).map((s) => s.name);
  assert.deepEqual(await names({}), ["API_TOKEN", "DB_URL", "STRIPE_KEY", "stripe_webhook"]);
  assert.deepEqual(await names({ sort: "-name" }), ["stripe_webhook", "STRIPE_KEY", "DB_URL", "API_TOKEN"]);
  assert.deepEqual(await names({ search: "stripe" }), ["STRIPE_KEY", "stripe_webhook"]);
  assert.deepEqual(await names({ search: "STRIPE", sort: "-name", limit: 1 }), ["stripe_webhook", "STRIPE_KEY"]);
  assert.deepEqual(await names({ search: "nothing_like_it" }), []);
  // updatedAt order: the one written last comes last (first with -updatedAt)
  await new Promise((r) => setTimeout(r, 5));
  await client.secrets.set("sorted", "DB_URL", "value-of-DB_URL-2");
  assert.equal((await names({ sort: "updatedAt", limit: 3 })).at(-1), "DB_URL");
  assert.equal((await names({ sort: "-updatedAt" }))[0], "DB_URL");
  await rejectsWith(client.secrets.page("sorted", { search: "not valid!" }), 400, "invalid_query");
});

test("secrets: import, and values never in an error", async () => {
  await client.environments.create("imp");
  const imported = await client.secrets.import("imp", { ONE: "import-value-one-111", TWO: "import-value-two-222" });
  assert.deepEqual(imported.map((s) => [s.name, s.result, s.revision]), [["ONE", "created", 1], ["TWO", "created", 1]]);
  const again = await client.secrets.import("imp", [
    { name: "ONE", value: "import-value-one-111" },
    { name: "TWO", value: "import-value-two-333" },
  ]);
  assert.deepEqual(again.map((s) => [s.name, s.result, s.revision]), [["ONE", "unchanged", 1], ["TWO", "updated", 2]]);
  assertNoValue([imported, again], ["import-value-one-111", "import-value-two-222", "import-value-two-333"]);

  // refusals whose request carried a value: the value is in neither message nor error
  const big = `toolarge-${"x".repeat(70_000)}`;
  const tooLarge = await rejectsWith(client.secrets.set("imp", "BIG", big), 413, "value_too_large");
  const badName = await rejectsWith(client.secrets.set("imp", "9bad", "bad-name-value-444"), 422, "invalid_name");
  const noEnv = await rejectsWith(client.secrets.set("nowhere", "OK", "no-env-value-555"), 404, "environment_not_found");
  const badImport = await rejectsWith(client.secrets.import("imp", { "bad name": "import-bad-666" }), 422, "invalid_name");
  for (const [e, v] of [[tooLarge, "toolarge-"], [badName, "bad-name-value-444"], [noEnv, "no-env-value-555"], [badImport, "import-bad-666"]]) {
    assert.ok(!e.message.includes(v) && !String(e.stack).includes(v) && !JSON.stringify(e).includes(v));
  }
  // not a string: refused before any request, without the value
  await assert.rejects(client.secrets.set("imp", "N", { secret: "object-value-777" }), (e) => {
    assert.ok(e instanceof TypeError);
    assert.ok(!e.message.includes("object-value-777"));
    return true;
  });
  // the server cannot be reached: the value is in no message either
  const offline = new Coffer({ address: "http://127.0.0.1:1", apiKey: server.adminKey });
  const unreachable = await rejectsWith(offline.secrets.set("imp", "X", "offline-value-888"), 0, "unreachable");
  assert.ok(!unreachable.message.includes("offline-value-888"));
  assert.ok(!JSON.stringify(offline).includes(server.adminKey), "the client never serializes its key");
});

test("config: set, get, list, delete with revisions", async () => {
  await client.environments.create("cfg");
  const flags = { beta: true, limits: { rpm: 100 }, list: [1, "two", null] };
  const set = await client.config.set("cfg", "feature_flags", flags);
  assert.equal(set.revision, 1);
  assert.deepEqual(set.value, flags);
  assert.deepEqual((await client.config.get("cfg", "feature_flags")).value, flags);
  const str = await client.config.set("cfg", "region", "eu-west-1", { expectedRevision: 0 });
  assert.equal(str.value, "eu-west-1");
  await client.config.set("cfg", "nothing", null);
  assert.equal((await client.config.get("cfg", "nothing")).value, null);
  const conflict = await rejectsWith(client.config.set("cfg", "region", "us", { expectedRevision: 5 }), 409, "revision_conflict");
  assert.equal(conflict.currentRevision, 1);
  assert.equal((await client.config.set("cfg", "region", "us-east-1", { expectedRevision: 1 })).revision, 2);
  assert.deepEqual((await client.config.list("cfg", { limit: 1 }).toArray()).map((c) => c.key), ["feature_flags", "nothing", "region"]);
  const page = await client.config.page("cfg", { limit: 2 });
  assert.equal(page.config.length, 2);
  assert.equal(typeof page.nextCursor, "string");
  await rejectsWith(client.config.delete("cfg", "region", { expectedRevision: 1 }), 409, "revision_conflict");
  await client.config.delete("cfg", "region", { expectedRevision: 2 });
  await rejectsWith(client.config.get("cfg", "region"), 404, "config_not_found");
  await assert.rejects(client.config.set("cfg", "x", undefined), TypeError);
});

test("API keys: create (key shown once), whoami, list, revoke → 401", async () => {
  await client.environments.create("keys");
  const created = await client.apiKeys.create({ name: "sdk manage", role: "manage", environment: "keys" });
  assert.match(created.key, /^ck_keys_/);
  assert.match(created.id, /^ak_/);
  assert.equal(created.role, "manage");
  assert.equal(created.environment, "keys");

  const manage = new Coffer({ address: server.address, apiKey: created.key });
  assert.deepEqual(await manage.whoami(), { keyId: created.id, role: "manage", environment: "keys" });
  assert.equal((await client.whoami()).role, "admin");
  // a manage key may manage its environment, not another, and not API keys
  await manage.secrets.set("keys", "MANAGED", "managed-value-123");
  await rejectsWith(manage.secrets.set("default", "MANAGED", "managed-value-123"), 403, "forbidden");
  await rejectsWith(manage.apiKeys.list(), 403, "forbidden");

  const listed = await client.apiKeys.list();
  const mine = listed.find((k) => k.id === created.id);
  assert.ok(mine);
  assert.equal(mine.key ?? undefined, undefined, "a listed key never carries the key");
  assert.ok(!JSON.stringify(listed).includes(created.key));

  await client.apiKeys.revoke(created.id);
  await rejectsWith(manage.whoami(), 401, "unauthorized");
  await rejectsWith(client.apiKeys.revoke(created.id), 404, "api_key_not_found");
  assert.ok(!(await client.apiKeys.list()).some((k) => k.id === created.id));
  // the only admin key cannot go
  const admin = (await client.whoami()).keyId;
  await rejectsWith(client.apiKeys.revoke(admin), 409, "last_admin_key");
});

test("functions: put, get, list, rotate the signing secret, delete", async () => {
  await client.environments.create("fns");
  const registered = await client.functions.put("fns", "send-invoice", {
    mode: "pull",
    triggers: [{ event: "invoice.*" }],
    secrets: ["STRIPE_KEY"],
  });
  assert.equal(registered.id, "send-invoice");
  assert.equal(registered.revision, 1);
  assert.match(registered.signingSecret, /^cs_/);
  const got = await client.functions.get("fns", "send-invoice");
  assert.equal(got.signingSecret ?? undefined, undefined, "a read never shows the signing secret");
  assert.deepEqual(got.secrets, ["STRIPE_KEY"]);
  assert.deepEqual(got.triggers, [{ event: "invoice.*" }]);

  const updated = await client.functions.put("fns", "send-invoice", { mode: "pull", triggers: [{ event: "invoice.>" }], secrets: [] }, { expectedRevision: 1 });
  assert.equal(updated.revision, 2);
  assert.equal(updated.signingSecret ?? undefined, undefined, "an update keeps the secret and does not show it");
  await rejectsWith(client.functions.put("fns", "send-invoice", { mode: "pull" }, { expectedRevision: 0 }), 409, "revision_conflict");

  for (const id of ["a-fn", "b-fn", "c-fn"]) await client.functions.put("fns", id, { mode: "pull" });
  assert.deepEqual((await client.functions.list("fns", { limit: 2 }).toArray()).map((f) => f.id), ["a-fn", "b-fn", "c-fn", "send-invoice"]);

  const rotated = await client.functions.rotateSigningSecret("fns", "send-invoice", { graceMs: 60_000 });
  assert.match(rotated.signingSecret, /^cs_/);
  assert.notEqual(rotated.signingSecret, registered.signingSecret);
  assert.equal(typeof rotated.previousSigningSecretUntil, "string");

  await client.functions.delete("fns", "a-fn");
  await rejectsWith(client.functions.get("fns", "a-fn"), 404, "function_not_found");
});

test("events start runs; runs.get, list, wait (a pull worker completes one)", async () => {
  await client.environments.create("evt");
  await client.functions.put("evt", "on-order", { mode: "pull", triggers: [{ event: "order.created" }] });
  await client.functions.put("evt", "other", { mode: "pull", triggers: [{ event: "other.thing" }] });

  const sent = await client.events.send("evt", "order.created", { orderId: 42 });
  assert.equal(sent.runs.length, 1);
  const [{ id: runId, functionId }] = sent.runs;
  assert.equal(functionId, "on-order");
  const run = await client.runs.get("evt", runId);
  assert.equal(run.status, "queued");
  assert.equal(run.event, "order.created");

  // an idempotency key: the same send again answers the same runs and starts nothing
  const once = await client.events.send("evt", "order.created", { orderId: 43 }, { idempotencyKey: "order-43" });
  const twice = await client.events.send("evt", "order.created", { orderId: 43 }, { idempotencyKey: "order-43" });
  assert.deepEqual(twice.runs, once.runs);
  assert.deepEqual((await client.events.send("evt", "nobody.listens")).runs, []);
  await client.events.send("evt", "other.thing");

  const all = await client.runs.list("evt", { limit: 1 }).toArray();
  assert.equal(all.length, 3);
  const mine = await client.runs.list("evt", { functionId: "on-order" }).toArray();
  assert.deepEqual(mine.map((r) => r.id).sort(), [runId, once.runs[0].id].sort());
  assert.equal((await client.runs.list("evt", { status: "succeeded" }).toArray()).length, 0);

  // a pull worker with a runtime key takes the oldest job and completes it
  const runtime = await server.createKey("runtime", "evt");
  const job = await fetch(`${server.address}/v1/environments/evt/workers/poll`, {
    method: "POST",
    headers: { authorization: `Bearer ${runtime.key}`, "content-type": "application/json" },
    body: JSON.stringify({ functions: ["on-order"], waitMs: 5000 }),
  }).then((r) => r.json());
  assert.equal(job.runId, runId);
  assert.deepEqual(job.event, { name: "order.created", data: { orderId: 42 } });
  const done = await fetch(`${server.address}/v1/environments/evt/runs/${job.runId}/complete`, {
    method: "POST",
    headers: { authorization: `Bearer ${runtime.key}`, "content-type": "application/json" },
    body: JSON.stringify({ output: { charged: true }, attempt: job.attempt }),
  });
  assert.equal(done.status, 200);
  const finished = await client.runs.wait("evt", runId, { timeoutMs: 10_000 });
  assert.equal(finished.status, "succeeded");
  assert.deepEqual(finished.output, { charged: true });
  assert.deepEqual((await client.runs.list("evt", { status: "succeeded" }).toArray()).map((r) => r.id), [runId]);
  await rejectsWith(client.runs.get("evt", "run_0123456789abcdef0123456789abcdef"), 404, "run_not_found");
});

test("audit: list with filters across pages, verify the chain; server status, keys", async () => {
  await client.environments.create("aud");
  await client.secrets.set("aud", "AUDITED", "audited-value-5150");
  await client.secrets.set("aud", "AUDITED", "audited-value-5151");
  await client.secrets.delete("aud", "AUDITED");

  const rows = await client.audit.list({ environment: "aud", limit: 1 }).toArray();
  const actions = rows.map((r) => r.action);
  assert.ok(actions.includes("secret.created") && actions.includes("secret.updated") && actions.includes("secret.deleted"), actions.join());
  assert.ok(rows.every((r) => r.environment === "aud"));
  for (let i = 1; i < rows.length; i++) assert.ok(rows[i].seq > rows[i - 1].seq);
  assertNoValue(rows, ["audited-value-5150", "audited-value-5151"]);

  const created = await client.audit.list({ action: "secret.created", subject: "system.secret.AUDITED.>" }).toArray();
  assert.equal(created.length, 1);
  assert.equal(created[0].name, "AUDITED");
  const since = await client.audit.list({ environment: "aud", since: new Date(Date.now() + 60_000) }).toArray();
  assert.deepEqual(since, []);
  const page = await client.audit.page({ environment: "aud", limit: 2 });
  assert.equal(page.entries.length, 2);

  const verified = await client.audit.verify();
  assert.equal(verified.ok, true);
  assert.equal(verified.firstBroken, null);
  assert.ok(verified.rows > 0);

  const status = await client.status();
  assert.equal(status.encryption, "enabled");
  const keys = await client.keys.status();
  assert.equal(keys.encryption, "enabled");
  assert.ok(keys.keys.some((k) => k.current));
  const rewrap = await client.keys.rewrap();
  assert.equal(rewrap.nextCursor, null);
  const verify = await client.keys.verify();
  assert.deepEqual(verify.unreadable, []);
});
