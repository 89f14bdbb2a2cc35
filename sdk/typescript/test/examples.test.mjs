// The README's two examples (examples/payout.ts, examples/provision.ts, built to
// dist-examples/ by `npm run build`) against a real `coffer serve`.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";

import { startServer } from "./harness.mjs";
import { ended, send } from "./util.mjs";
import * as payoutExample from "../dist-examples/payout.js";
import * as provisionExample from "../dist-examples/provision.js";

const ENV = "default";
let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

async function setSecret(name, value) {
  const { status } = await server.api("PUT", `/v1/environments/${ENV}/secrets/${name}`, { value });
  assert.ok(status === 200 || status === 201, `${name}: ${status}`);
}

test("payout: a push function with a required STRIPE_KEY and an optional SLACK_WEBHOOK", async () => {
  // A stand-in for Slack's incoming webhook.
  const slack = [];
  const hook = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c)).on("end", () => {
      slack.push(JSON.parse(body));
      res.end("ok");
    });
  });
  await new Promise((resolve) => hook.listen(0, "127.0.0.1", resolve));
  const endpoint = await payoutExample.main({ address: server.address, apiKey: server.adminKey, environment: ENV });
  try {
    assert.match(endpoint.signingSecret, /^cs_/, "the first registration's secret");
    const fn = await server.api("GET", `/v1/environments/${ENV}/functions/payout`);
    assert.deepEqual(
      [fn.body.mode, fn.body.url, fn.body.secrets, fn.body.triggers],
      ["push", endpoint.url, ["STRIPE_KEY", "SLACK_WEBHOOK"], [{ event: "payout.requested" }]],
    );

    // STRIPE_KEY not set yet: the required secret fails the run (retried, then failed).
    const [missing] = await send(server, ENV, "payout.requested", { payoutId: "po_0", amount: 1 });
    const failed = await ended(server, ENV, missing, 60_000);
    assert.equal(failed.status, "failed");
    assert.match(failed.error, /STRIPE_KEY is declared but not set/);

    // Required set, optional not: it pays out without notifying.
    await setSecret("STRIPE_KEY", "sk_test_4eC39HqLyjWDarjtT1zdp7dc");
    const [quiet] = await send(server, ENV, "payout.requested", { payoutId: "po_1", amount: 2500, currency: "eur" });
    const run1 = await ended(server, ENV, quiet);
    assert.equal(run1.status, "succeeded", JSON.stringify(run1));
    assert.deepEqual(run1.output, {
      payoutId: "po_1", amount: 2500, currency: "eur", live: false, notifiedSlack: false, runId: quiet,
    });
    assert.equal(slack.length, 0);

    // With SLACK_WEBHOOK set, it notifies.
    await setSecret("SLACK_WEBHOOK", `http://127.0.0.1:${hook.address().port}/hooks/T000/B000`);
    const [loud] = await send(server, ENV, "payout.requested", { payoutId: "po_2", amount: 99 });
    const run2 = await ended(server, ENV, loud);
    assert.equal(run2.status, "succeeded", JSON.stringify(run2));
    assert.equal(run2.output.notifiedSlack, true);
    assert.deepEqual(slack, [{ text: "Payout po_2: 99 eur" }]);

    // A bad event is a PermanentError: 422, failed on the first attempt.
    const [bad] = await send(server, ENV, "payout.requested", { payoutId: "po_3" });
    const run3 = await ended(server, ENV, bad);
    assert.equal(run3.status, "failed");
    assert.equal(run3.attempts, 1);
    assert.match(run3.error, /needs a payoutId and a positive amount/);
  } finally {
    await endpoint.close();
    await new Promise((resolve) => hook.close(resolve));
  }
});

test("provision: an orchestration step with encrypted params and a secretRef, run by a pull worker", async () => {
  const password = "pg-pass-Zx81!kq2-very-long";
  await setSecret("CLOUD_API_TOKEN", "cloud_tok_5f3a9c0e1d2b");
  const { key: runtimeKey } = await server.createKey("runtime", ENV);
  const options = { address: server.address, apiKey: server.adminKey, runtimeKey, environment: ENV, dbPassword: password };

  const { orchestrationId, run } = await provisionExample.main({ ...options, tenant: "acme" });
  assert.equal(run.status, "succeeded", JSON.stringify(run));
  const [create, check, review, done] = run.steps;
  assert.equal(create.status, "succeeded");
  assert.deepEqual(create.output, {
    tenant: "acme",
    plan: "pro",
    region: "eu-west-1",
    database: "db-acme",
    engine: "postgres-16",
    sizeGb: 20,
    passwordSha256: createHash("sha256").update(password).digest("hex"),
    tokenFromRef: true,
    attempt: 1,
  });
  assert.deepEqual(check.output, { result: false, next: "done" });
  assert.equal(review.status, "skipped");
  assert.equal(done.status, "succeeded");

  // The encrypted param is masked on every read; the definition never shows the value.
  const orchestration = await server.api("GET", `/v1/environments/${ENV}/orchestrations/${orchestrationId}`);
  assert.deepEqual(orchestration.body.steps[0].encryptedParams, {
    DB_PASSWORD: { value: "********", encrypted: true },
    REGION: { value: "eu-west-1", encrypted: false },
    CLOUD_TOKEN: { secretRef: "CLOUD_API_TOKEN" },
  });
  const everything = JSON.stringify([orchestration.body, run, await server.api("GET", `/v1/environments/${ENV}/runs/${create.runId}`)]);
  assert.ok(!everything.includes(password) && !everything.includes("cloud_tok_5f3a9c0e1d2b"));

  // An enterprise plan makes a big database: the run waits for a human's approval.
  const big = await provisionExample.main({ ...options, tenant: "globex", plan: "enterprise" });
  assert.equal(big.run.status, "waiting_approval");
  assert.equal(big.run.steps[0].output.sizeGb, 500);
  const approved = await server.api("POST", `/v1/environments/${ENV}/orchestration-runs/${big.run.id}/approve`, { reason: "ok" });
  assert.equal(approved.status, 200);
});

test("the README's two example code blocks are examples/payout.ts and examples/provision.ts, byte for byte", () => {
  const read = (file) => readFileSync(new URL(`../${file}`, import.meta.url), "utf8");
  const readme = read("README.md");
  for (const [heading, file] of [
    ["## Example: a payout with declared secrets (push)", "examples/payout.ts"],
    ["## Example: provisioning with encrypted params (orchestration, pull)", "examples/provision.ts"],
  ]) {
    const at = readme.indexOf(heading);
    assert.ok(at >= 0, `the README has the section ${heading}`);
    const open = readme.indexOf("```ts\n", at);
    const close = readme.indexOf("\n```\n", open);
    assert.ok(open > at && close > open, `a ts block follows ${heading}`);
    const next = readme.indexOf("\n## ", at + heading.length);
    assert.ok(next === -1 || open < next, `the block is in the section ${heading}`);
    assert.equal(readme.slice(open + "```ts\n".length, close + 1), read(file), `the README's block of ${file} differs from the file`);
  }
});
