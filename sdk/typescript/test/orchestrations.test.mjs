// Orchestrations through the management client against a real `coffer serve`: create with
// an encrypted param and a secret reference (reads masked), update keeping / re-encrypting /
// removing it (checked through what a pull worker's job receives), runs that wait at an
// approval step and are approved or rejected. Needs `npm run build`.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { startServer } from "./harness.mjs";
import { rejectsWith } from "./util.mjs";
import { Coffer, MASK, encrypt, isMasked, keep, plain, secretRef } from "../dist/index.js";

const ENV = "orch";
const TOKEN = "tok_live_original_7f3a9c1e";
const STRIPE = "sk_live_stripe_value_5d2b8e";

let server;
let client;
let runtimeKey;

before(async () => {
  server = await startServer();
  client = new Coffer({ address: server.address, apiKey: server.adminKey });
  await client.environments.create(ENV);
  runtimeKey = (await server.createKey("runtime", ENV)).key;
  await client.secrets.set(ENV, "STRIPE_KEY", STRIPE);
  await client.functions.put(ENV, "billing", { mode: "pull", secrets: ["STRIPE_KEY"] });
});

after(async () => {
  await server?.stop();
});

/** What a pull worker does, with plain fetch: take the next job of `billing`, complete it. */
async function work(output = { charged: true }) {
  const headers = { authorization: `Bearer ${runtimeKey}`, "content-type": "application/json" };
  const polled = await fetch(`${server.address}/v1/environments/${ENV}/workers/poll`, {
    method: "POST",
    headers,
    body: JSON.stringify({ functions: ["billing"], waitMs: 10_000 }),
  });
  assert.equal(polled.status, 200, "a job came");
  const job = await polled.json();
  const completed = await fetch(`${server.address}/v1/environments/${ENV}/runs/${job.runId}/complete`, {
    method: "POST",
    headers,
    body: JSON.stringify({ output, attempt: job.attempt }),
  });
  assert.equal(completed.status, 200);
  return job;
}

/** Runs the orchestration: its compute step's job goes to `work`, it waits at the approval. */
async function runToApproval(id, params) {
  const started = await client.orchestrations.run(ENV, id, params);
  assert.equal(started.orchestrationId, id);
  const job = await work();
  const waiting = await client.orchestrationRuns.wait(ENV, started.id, { timeoutMs: 10_000 });
  assert.equal(waiting.status, "waiting_approval");
  assert.equal(waiting.currentStep, "review");
  return { run: waiting, job };
}

const definition = () => ({
  name: "nightly-billing",
  steps: [
    {
      id: "charge",
      type: "compute",
      functionId: "billing",
      params: { currency: "eur" },
      encryptedParams: {
        API_TOKEN: encrypt(TOKEN),
        REGION: plain("eu-west-1"),
        STRIPE: secretRef("STRIPE_KEY"),
      },
    },
    { id: "review", type: "approval" },
  ],
});

let orchestration;

test("create with an encrypted param and a secretRef: every read is masked", async () => {
  orchestration = await client.orchestrations.create(ENV, definition());
  assert.match(orchestration.id, /^orch_/);
  assert.equal(orchestration.revision, 1);
  const check = (o) => {
    const params = o.steps[0].encryptedParams;
    assert.deepEqual(params.API_TOKEN, { value: MASK, encrypted: true });
    assert.ok(isMasked(params.API_TOKEN));
    assert.deepEqual(params.API_TOKEN, keep());
    assert.deepEqual(params.REGION, { value: "eu-west-1", encrypted: false });
    assert.deepEqual(params.STRIPE, { secretRef: "STRIPE_KEY" });
    assert.deepEqual(o.steps[1], { id: "review", type: "approval" });
    assert.ok(!JSON.stringify(o).includes(TOKEN) && !JSON.stringify(o).includes(STRIPE));
  };
  check(orchestration);
  check(await client.orchestrations.get(ENV, orchestration.id));
  const listed = await client.orchestrations.list(ENV).toArray();
  assert.deepEqual(listed.map((o) => o.id), [orchestration.id]);
  check(listed[0]);
});

test("run: the compute step gets the values, waits at the approval, approve → succeeded", async () => {
  const { run, job } = await runToApproval(orchestration.id, { amount: 5 });
  assert.equal(job.triggerParams.API_TOKEN, TOKEN);
  assert.equal(job.triggerParams.STRIPE, STRIPE);
  assert.equal(job.triggerParams.REGION, "eu-west-1");
  assert.equal(job.triggerParams.currency, "eur");
  assert.equal(job.triggerParams.amount, 5);
  assert.deepEqual(run.params, { amount: 5 });
  assert.equal(run.steps[0].status, "succeeded");
  assert.deepEqual(run.steps[0].output, { charged: true });
  assert.equal(run.steps[1].status, "running");
  assert.ok(!JSON.stringify(run).includes(TOKEN));

  const approved = await client.orchestrationRuns.approve(ENV, run.id, { reason: "looks right" });
  assert.equal(approved.id, run.id);
  const ended = await client.orchestrationRuns.wait(ENV, run.id, { until: ["succeeded", "failed", "rejected"], timeoutMs: 10_000 });
  assert.equal(ended.status, "succeeded");
  assert.equal(ended.steps[1].output.reason, "looks right");
  assert.equal(ended.steps[1].output.decidedBy, (await client.whoami()).keyId);
  // approving again: it no longer waits
  await rejectsWith(client.orchestrationRuns.approve(ENV, run.id), 409, "not_waiting");
  await rejectsWith(client.orchestrationRuns.reject(ENV, run.id), 409, "not_waiting");
});

test("update sending the masked param back keeps it; reject → rejected", async () => {
  const read = await client.orchestrations.get(ENV, orchestration.id);
  // the read as it is, with one plain change: the masked API_TOKEN is kept
  read.steps[0].params = { currency: "usd" };
  const updated = await client.orchestrations.update(ENV, read.id, read, { expectedRevision: read.revision });
  assert.equal(updated.revision, 2);
  assert.ok(isMasked(updated.steps[0].encryptedParams.API_TOKEN));

  const { run, job } = await runToApproval(orchestration.id);
  assert.equal(job.triggerParams.API_TOKEN, TOKEN, "the stored value was kept");
  assert.equal(job.triggerParams.currency, "usd");
  const rejected = await client.orchestrationRuns.reject(ENV, run.id, { reason: "not today" });
  assert.equal(rejected.id, run.id);
  // the decision is recorded at once (a second one is refused), applied right after
  await rejectsWith(client.orchestrationRuns.approve(ENV, run.id), 409, "not_waiting");
  const ended = await client.orchestrationRuns.wait(ENV, run.id, { until: ["rejected", "succeeded", "failed"], timeoutMs: 10_000 });
  assert.equal(ended.status, "rejected");
  assert.equal(ended.steps[1].status, "rejected");

  // keep() is the same thing as the read's masked object
  const again = await client.orchestrations.get(ENV, orchestration.id);
  again.steps[0].encryptedParams.API_TOKEN = keep();
  assert.equal((await client.orchestrations.update(ENV, again.id, again)).revision, 3);
  const second = await runToApproval(orchestration.id);
  assert.equal(second.job.triggerParams.API_TOKEN, TOKEN);
  await client.orchestrationRuns.reject(ENV, second.run.id);
  await client.orchestrationRuns.wait(ENV, second.run.id, { until: ["rejected"], timeoutMs: 10_000 });
});

test("update with encrypt(value) re-encrypts: the new value is delivered", async () => {
  const read = await client.orchestrations.get(ENV, orchestration.id);
  read.steps[0].encryptedParams.API_TOKEN = encrypt("tok_live_rotated_0b4d6f");
  const updated = await client.orchestrations.update(ENV, read.id, read, { expectedRevision: read.revision });
  assert.ok(isMasked(updated.steps[0].encryptedParams.API_TOKEN));
  assert.ok(!JSON.stringify(updated).includes("tok_live_rotated_0b4d6f"));
  const { run, job } = await runToApproval(orchestration.id);
  assert.equal(job.triggerParams.API_TOKEN, "tok_live_rotated_0b4d6f");
  assert.equal(job.triggerParams.STRIPE, STRIPE);
  await client.orchestrationRuns.approve(ENV, run.id);
  const ended = await client.orchestrationRuns.wait(ENV, run.id, { until: ["succeeded", "failed"], timeoutMs: 10_000 });
  assert.equal(ended.status, "succeeded");
});

test("update omitting the param removes it; a stale revision is a conflict", async () => {
  const read = await client.orchestrations.get(ENV, orchestration.id);
  delete read.steps[0].encryptedParams.API_TOKEN;
  const updated = await client.orchestrations.update(ENV, read.id, read, { expectedRevision: read.revision });
  assert.deepEqual(Object.keys(updated.steps[0].encryptedParams).sort(), ["REGION", "STRIPE"]);
  const { run, job } = await runToApproval(orchestration.id);
  assert.ok(!("API_TOKEN" in job.triggerParams), "the removed param is gone");
  assert.equal(job.triggerParams.REGION, "eu-west-1");
  await client.orchestrationRuns.reject(ENV, run.id);
  await client.orchestrationRuns.wait(ENV, run.id, { until: ["rejected"], timeoutMs: 10_000 });

  const conflict = await rejectsWith(
    client.orchestrations.update(ENV, read.id, read, { expectedRevision: read.revision }),
    409,
    "revision_conflict",
  );
  assert.equal(conflict.currentRevision, updated.revision);
});

test("a masked param on a renamed step is refused; bad definitions name the step", async () => {
  const read = await client.orchestrations.get(ENV, orchestration.id);
  read.steps[0].encryptedParams.API_TOKEN = keep();
  read.steps[0].id = "charge-renamed";
  const refused = await rejectsWith(client.orchestrations.update(ENV, read.id, read), 422, "invalid_value");
  assert.match(refused.message, /charge-renamed/);
  const missing = await rejectsWith(
    client.orchestrations.create(ENV, { name: "bad", steps: [{ id: "x", type: "compute", functionId: "no-such-fn" }] }),
    422,
    "invalid_value",
  );
  assert.match(missing.message, /\bx\b/);
  await rejectsWith(client.orchestrations.get(ENV, "orch_0123456789abcdef0123456789abcdef"), 404, "orchestration_not_found");
});

test("orchestration runs: list with filters; delete keeps the runs", async () => {
  const runs = await client.orchestrationRuns.list(ENV, { orchestrationId: orchestration.id, limit: 2 }).toArray();
  assert.equal(runs.length, 5);
  for (let i = 1; i < runs.length; i++) assert.ok(runs[i - 1].createdAt >= runs[i].createdAt, "newest first");
  assert.equal((await client.orchestrationRuns.list(ENV, { status: "succeeded" }).toArray()).length, 2);
  assert.equal((await client.orchestrationRuns.list(ENV, { status: "rejected" }).toArray()).length, 3);
  const page = await client.orchestrationRuns.page(ENV, { limit: 1 });
  assert.equal(page.runs.length, 1);
  assert.ok(!JSON.stringify(runs).includes(TOKEN) && !JSON.stringify(runs).includes(STRIPE));

  await client.orchestrations.delete(ENV, orchestration.id);
  await rejectsWith(client.orchestrations.get(ENV, orchestration.id), 404, "orchestration_not_found");
  assert.equal((await client.orchestrationRuns.list(ENV, { orchestrationId: orchestration.id }).toArray()).length, 5);
});
