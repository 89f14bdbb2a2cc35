// `secrets.get/has` and `config.get/has` semantics, on jobs a real `coffer serve` hands a
// pull worker, and on a job built by hand (a value the job carries for an undeclared name).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { inspect } from "node:util";

import { startServer } from "./harness.mjs";
import { deferred, ended, send } from "./util.mjs";
import {
  Coffer,
  ConfigNotSetError,
  SecretNotSetError,
  UndeclaredConfigError,
  UndeclaredSecretError,
  contextFor,
  createFunction,
  register,
  worker,
} from "../dist/index.js";

const ENV = "default";
const VALUE = "sk_test_secret_value_4242";
let server;
let admin;
let runtime;

before(async () => {
  server = await startServer();
  admin = new Coffer({ address: server.address, apiKey: server.adminKey });
  runtime = new Coffer({ address: server.address, apiKey: (await server.createKey("runtime", ENV)).key });
  assert.equal((await server.api("PUT", `/v1/environments/${ENV}/secrets/STRIPE_KEY`, { value: VALUE })).status, 201);
  assert.equal((await server.api("PUT", `/v1/environments/${ENV}/secrets/NOT_DECLARED`, { value: "nd_value_123456" })).status, 201);
  assert.equal((await server.api("PUT", `/v1/environments/${ENV}/config/region`, { value: { name: "eu-west-1", zones: 3 } })).status, 201);
});

after(async () => {
  await server?.stop();
});

function outcome(fn) {
  try {
    return { value: fn() };
  } catch (e) {
    return { error: e };
  }
}

test("get/has on a real job: declared and set, declared and unset, undeclared; config likewise; no value in JSON", async () => {
  const seen = deferred();
  const payout = createFunction(
    {
      id: "payout",
      triggers: ["payout.requested"],
      secrets: ["STRIPE_KEY", "SLACK_WEBHOOK"],
      config: ["region", "limits"],
      mode: "pull",
    },
    (ctx) => {
      const { secrets, config } = ctx;
      seen.resolve({
        get: {
          set: outcome(() => secrets.get("STRIPE_KEY")),
          unset: outcome(() => secrets.get("SLACK_WEBHOOK")),
          undeclared: outcome(() => secrets.get("NOT_DECLARED")),
        },
        has: [secrets.has("STRIPE_KEY"), secrets.has("SLACK_WEBHOOK"), secrets.has("NOT_DECLARED")],
        config: {
          set: outcome(() => config.get("region")),
          unset: outcome(() => config.get("limits")),
          undeclared: outcome(() => config.get("other")),
          has: [config.has("region"), config.has("limits"), config.has("other")],
        },
        names: secrets.names(),
        json: JSON.stringify(ctx),
        inspected: inspect(ctx, { depth: 5 }),
        string: String(secrets),
        keys: Object.keys(secrets),
      });
      return { ok: true };
    },
  );
  await register(admin, [payout], { environment: ENV });
  const w = worker({ client: runtime, functions: [payout], environment: ENV, waitMs: 1000 });
  try {
    const [id] = await send(server, ENV, "payout.requested", { amount: 1 });
    const s = await seen.promise;
    assert.equal((await ended(server, ENV, id)).status, "succeeded");

    assert.equal(s.get.set.value, VALUE);
    assert.ok(s.get.unset.error instanceof SecretNotSetError);
    assert.equal(s.get.unset.error.secret, "SLACK_WEBHOOK");
    assert.ok(!(s.get.unset.error instanceof UndeclaredSecretError));
    assert.ok(s.get.undeclared.error instanceof UndeclaredSecretError);
    assert.equal(s.get.undeclared.error.secret, "NOT_DECLARED");
    assert.match(s.get.undeclared.error.message, /payout did not declare the secret NOT_DECLARED/);
    assert.deepEqual(s.has, [true, false, false]);

    assert.deepEqual(s.config.set.value, { name: "eu-west-1", zones: 3 });
    assert.ok(s.config.unset.error instanceof ConfigNotSetError);
    assert.ok(s.config.undeclared.error instanceof UndeclaredConfigError);
    assert.deepEqual(s.config.has, [true, false, false]);

    assert.deepEqual(s.names, ["STRIPE_KEY"]);
    for (const shown of [s.json, s.inspected, s.string, s.keys.join()]) {
      assert.ok(!shown.includes(VALUE), `no value in ${shown}`);
      assert.ok(!shown.includes("nd_value_123456"));
    }
    assert.match(s.json, /"secrets":\["STRIPE_KEY"\]/);
    assert.match(s.inspected, /Secrets\(STRIPE_KEY\)/);
    assert.deepEqual(s.keys, []);
  } finally {
    await w.stop();
  }
});

test("a value a job carries for a name the code does not declare stays unreachable; errors name, never show, values", () => {
  const fn = createFunction({ id: "f", secrets: ["A", "B"], config: ["k"], mode: "pull" }, () => null);
  const ctx = contextFor(fn, {
    runId: "run_1",
    functionId: "f",
    environment: "prod",
    attempt: 2,
    event: { name: "e", data: null },
    secrets: { A: "value-a-123456", OLD_TOKEN: "old-token-123456" },
    config: { k: false },
    triggerParams: {},
  });
  assert.equal(ctx.secrets.get("A"), "value-a-123456");
  assert.throws(() => ctx.secrets.get("OLD_TOKEN"), UndeclaredSecretError);
  assert.equal(ctx.secrets.has("OLD_TOKEN"), false);
  assert.throws(() => ctx.secrets.get("B"), (e) => e instanceof SecretNotSetError && /environment prod/.test(e.message));
  assert.equal(ctx.config.get("k"), false, "a falsy config value is still set");
  assert.equal(ctx.config.has("k"), true);
  assert.deepEqual(ctx.run, { id: "run_1", attempt: 2, functionId: "f", environment: "prod" });
  const everything = [JSON.stringify(ctx), inspect(ctx, { depth: 9, showHidden: true }), String(ctx.secrets)].join("\n");
  assert.ok(!everything.includes("value-a-123456") && !everything.includes("old-token-123456"), everything);
  for (const name of ["A", "B", "OLD_TOKEN", "Z"]) {
    try {
      ctx.secrets.get(name);
    } catch (e) {
      assert.ok(!e.message.includes("value-a") && !e.message.includes("old-token"));
    }
  }
  // has() never throws, whatever it is given.
  assert.equal(ctx.secrets.has(undefined), false);
  assert.throws(() => createFunction({ id: "x", mode: "sometimes" }, () => null), TypeError);
});

test("triggerParams: readable by the handler, but the context's JSON and inspect renderings show keys only", () => {
  const fn = createFunction({ id: "provision", secrets: ["CLOUD_API_TOKEN"], mode: "pull" }, () => null);
  const password = "pg-pass-Zx81!kq2-opened";
  const token = "cloud_tok_5f3a9c0e1d2b_ref";
  const ctx = contextFor(fn, {
    runId: "run_1",
    functionId: "provision",
    environment: "prod",
    attempt: 1,
    event: { name: "orchestration.o.s", data: null },
    secrets: { CLOUD_API_TOKEN: token },
    config: {},
    // An encrypted param, opened, and a secretRef, resolved: secrets both.
    triggerParams: { DB_PASSWORD: password, CLOUD_TOKEN: token, tenant: "acme" },
  });
  assert.equal(ctx.triggerParams.DB_PASSWORD, password, "the handler reads the plain object");
  assert.deepEqual(Object.keys(ctx.triggerParams), ["DB_PASSWORD", "CLOUD_TOKEN", "tenant"]);
  assert.deepEqual(Object.keys(ctx), ["event", "secrets", "config", "triggerParams", "run", "signal"]);
  const { triggerParams } = ctx;
  assert.equal(triggerParams.CLOUD_TOKEN, token, "destructuring works");

  const json = JSON.stringify(ctx);
  const shown = [json, inspect(ctx), inspect(ctx, { depth: 9, showHidden: true }), String(ctx), `${ctx}`];
  for (const text of shown) {
    assert.ok(!text.includes(password) && !text.includes(token), text);
    assert.match(text, /DB_PASSWORD/);
    assert.match(text, /CLOUD_TOKEN/);
  }
  assert.deepEqual(JSON.parse(json).triggerParams, ["CLOUD_TOKEN", "DB_PASSWORD", "tenant"]);
  assert.deepEqual(JSON.parse(json).run, { id: "run_1", attempt: 1, functionId: "provision", environment: "prod" });
});
