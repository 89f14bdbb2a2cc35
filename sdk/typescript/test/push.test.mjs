// Push delivery against a real `coffer serve`: Coffer POSTs signed jobs to a node:http server
// in this test that mounts `serve()`.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";

import { startServer } from "./harness.mjs";
import { ended, listen, send, until } from "./util.mjs";
import {
  Coffer,
  CofferError,
  DEFAULT_MAX_BODY_BYTES,
  PermanentError,
  RegisterError,
  SignatureError,
  createFunction,
  register,
  serve,
  sign,
  verifySignature,
} from "../dist/index.js";

const ENV = "default";
let server;
let client;

before(async () => {
  server = await startServer();
  client = new Coffer({ address: server.address, apiKey: server.adminKey });
  const put = await server.api("PUT", `/v1/environments/${ENV}/secrets/PUSH_TOKEN`, { value: "tok_push_0123456789" });
  assert.equal(put.status, 201);
});

after(async () => {
  await server?.stop();
});

/** A job as Coffer sends it, for direct deliveries. */
function job(functionId, extra = {}) {
  return JSON.stringify({
    runId: "run_direct",
    functionId,
    environment: ENV,
    attempt: 1,
    event: { name: "push.direct", data: { n: 1 } },
    secrets: {},
    config: {},
    triggerParams: {},
    ...extra,
  });
}

function post(url, body, header) {
  const headers = { "content-type": "application/json" };
  if (header !== undefined) headers["coffer-signature"] = header;
  return fetch(url, { method: "POST", headers, body });
}

describe("push handler", () => {
  let calls = 0;
  const echo = createFunction(
    { id: "echo", triggers: ["push.echo"], secrets: ["PUSH_TOKEN", "PUSH_OPTIONAL"], mode: "push", retries: 0 },
    async ({ event, secrets, run }) => {
      calls++;
      return {
        got: event.data,
        tokenLength: secrets.get("PUSH_TOKEN").length,
        hasOptional: secrets.has("PUSH_OPTIONAL"),
        runId: run.id,
        attempt: run.attempt,
        environment: run.environment,
      };
    },
  );
  const failing = createFunction(
    { id: "failing", triggers: ["push.fail"], mode: "push", retries: 0 },
    async ({ event }) => {
      if (event.data?.permanent) throw new PermanentError("this payload can never work");
      throw new Error("the downstream service is down");
    },
  );
  const signingSecrets = {};
  const headers = [];
  const bodies = [];
  let endpoint;

  before(async () => {
    const handler = serve({ functions: [echo, failing], signingSecrets });
    endpoint = await listen(async (request) => {
      headers.push(request.headers.get("coffer-signature"));
      bodies.push(await request.clone().text());
      return handler(request);
    });
    const registered = await register(client, [echo, failing], { environment: ENV, url: endpoint.url });
    assert.deepEqual(registered.map((r) => [r.id, r.created]), [["echo", true], ["failing", true]]);
    for (const r of registered) {
      assert.match(r.signingSecret, /^cs_[A-Za-z0-9_-]{43}$/);
      signingSecrets[r.id] = r.signingSecret;
    }
    // A second registration updates and does not show the secret again.
    const again = await register(client, [echo], { environment: ENV, url: endpoint.url });
    assert.equal(again[0].created, false);
    assert.equal(again[0].signingSecret, undefined);
  });

  after(async () => {
    await endpoint?.close();
  });

  test("a good delivery from Coffer runs the handler, and its output becomes the run's output", async () => {
    const before = calls;
    const [id] = await send(server, ENV, "push.echo", { orderId: "o-1" });
    const run = await ended(server, ENV, id);
    assert.equal(run.status, "succeeded", JSON.stringify(run));
    assert.deepEqual(run.output, {
      got: { orderId: "o-1" },
      tokenLength: "tok_push_0123456789".length,
      hasOptional: false,
      runId: id,
      attempt: 1,
      environment: ENV,
    });
    assert.equal(calls, before + 1);
    assert.match(headers.at(-1), /^t=\d+,v1=[0-9a-f]{64}$/);
  });

  test("a bad signature is refused with 401 and the handler never runs", async () => {
    const before = calls;
    const body = job("echo");
    const cases = {
      missing: undefined,
      empty: "",
      malformed: "garbage",
      "no v1": `t=${Math.floor(Date.now() / 1000)}`,
      "short v1": `t=${Math.floor(Date.now() / 1000)},v1=00ff`,
      "wrong secret": await sign("cs_not_the_secret", body),
      "another body": await sign(signingSecrets.echo, job("echo", { attempt: 2 })),
    };
    for (const [what, header] of Object.entries(cases)) {
      const response = await post(endpoint.url, body, header);
      assert.equal(response.status, 401, what);
      const answer = await response.json();
      assert.equal(answer.error.code, "invalid_signature", what);
    }
    // Signed by the other function's secret: verified as a delivery, but not of this function.
    const crossed = await post(endpoint.url, body, await sign(signingSecrets.failing, body));
    assert.equal(crossed.status, 401);
    assert.equal(calls, before, "the handler never ran");
  });

  test("a stale or future timestamp is refused with 401; one within the tolerance runs", async () => {
    const before = calls;
    const body = job("echo", { secrets: { PUSH_TOKEN: "tok_direct_00" } });
    const now = Math.floor(Date.now() / 1000);
    // ±310 s, not ±301: a second ticking over between here and the check cannot make it pass.
    for (const t of [now - 310, now + 310, now - 3600]) {
      const response = await post(endpoint.url, body, await sign(signingSecrets.echo, body, t));
      assert.equal(response.status, 401, `t = now ${t - now}`);
      assert.match((await response.json()).error.message, /tolerance/);
    }
    assert.equal(calls, before);
    const fresh = await post(endpoint.url, body, await sign(signingSecrets.echo, body, now - 200));
    assert.equal(fresh.status, 200);
    assert.equal((await fresh.json()).tokenLength, "tok_direct_00".length);
    assert.equal(calls, before + 1);
  });

  test("a signed job of a function not served here is 404; a signed non-job is 400; GET is 405", async () => {
    const other = job("not-here");
    const response = await post(endpoint.url, other, await sign(signingSecrets.echo, other));
    assert.equal(response.status, 404);
    assert.equal((await response.json()).error.code, "function_not_found");
    const notJob = JSON.stringify({ hello: "world" });
    const bad = await post(endpoint.url, notJob, await sign(signingSecrets.echo, notJob));
    assert.equal(bad.status, 400);
    const get = await fetch(endpoint.url);
    assert.equal(get.status, 405);
  });

  test("a handler's error is a 500 (retried by Coffer) and becomes the run's error; PermanentError is 422", async () => {
    const [id] = await send(server, ENV, "push.fail", {});
    const run = await ended(server, ENV, id);
    assert.equal(run.status, "failed");
    assert.match(run.error, /the downstream service is down/);
    const [permanent] = await send(server, ENV, "push.fail", { permanent: true });
    const failed = await ended(server, ENV, permanent);
    assert.equal(failed.status, "failed");
    assert.match(failed.error, /this payload can never work/);
    const body = job("failing", { event: { name: "push.fail", data: { permanent: true } } });
    const direct = await post(endpoint.url, body, await sign(signingSecrets.failing, body));
    assert.equal(direct.status, 422);
  });

  test("a delivery Coffer signs with a secret this endpoint does not hold fails the run without running it", async () => {
    const before = calls;
    const kept = signingSecrets.echo;
    signingSecrets.echo = "cs_some_other_secret";
    try {
      const [id] = await send(server, ENV, "push.echo", { orderId: "o-2" });
      const run = await ended(server, ENV, id);
      assert.equal(run.status, "failed");
      assert.match(run.error, /401|signature/i);
      assert.equal(calls, before);
    } finally {
      signingSecrets.echo = kept;
    }
  });

  test("after a rotation, deliveries carry both signatures during the grace period and verify with either secret", async () => {
    const old = signingSecrets.echo;
    const rotated = await client.http.request("POST", `/v1/environments/${ENV}/functions/echo/signing-secret`, {
      body: { graceMs: 600_000 },
    });
    const fresh = rotated.signingSecret;
    assert.match(fresh, /^cs_/);
    assert.notEqual(fresh, old);

    for (const [name, secrets] of [["the old secret", old], ["the new secret", fresh], ["both", [fresh, old]]]) {
      signingSecrets.echo = secrets;
      const [id] = await send(server, ENV, "push.echo", { with: name });
      const run = await ended(server, ENV, id);
      assert.equal(run.status, "succeeded", `${name}: ${JSON.stringify(run)}`);
      assert.deepEqual(run.output.got, { with: name });
      const header = headers.at(-1);
      assert.equal(header.match(/v1=/g).length, 2, header);
      // Each v1 on its own: one per secret, new first.
      const [t, first, second] = header.split(",");
      await verifySignature({ header: `${t},${first}`, body: bodies.at(-1), secrets: fresh });
      await verifySignature({ header: `${t},${second}`, body: bodies.at(-1), secrets: old });
    }
    signingSecrets.echo = fresh;
  });
});

describe("signature", () => {
  test("sign and verifySignature agree with an independent HMAC and refuse what they should", async () => {
    // HMAC-SHA256("key", "1.{}"), as coffer_wire's test computes it independently.
    assert.equal(await sign("key", "{}", 1), "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224");
    const header = await sign(["cs_new", "cs_old"], "body", 1000);
    assert.equal(header.match(/v1=/g).length, 2);
    for (const secrets of ["cs_new", "cs_old", ["cs_x", "cs_old"]]) {
      await verifySignature({ header, body: "body", secrets, now: 1000 });
    }
    await verifySignature({ header, body: new TextEncoder().encode("body"), secrets: "cs_new", now: 1300 });
    await verifySignature({ header, body: "body", secrets: "cs_new", now: 700 });
    const refused = async (options, message) => {
      await assert.rejects(verifySignature({ header, body: "body", secrets: "cs_new", now: 1000, ...options }), (e) => {
        assert.ok(e instanceof SignatureError);
        assert.match(e.message, message);
        return true;
      });
    };
    await refused({ now: 1301 }, /tolerance/);
    await refused({ now: 699 }, /tolerance/);
    await refused({ now: 1100, toleranceSeconds: 60 }, /tolerance/);
    await refused({ secrets: "cs_other" }, /matches/);
    await refused({ body: "Body" }, /matches/);
    await refused({ header: header.replace("t=1000", "t=1001") }, /matches/);
    for (const bad of [undefined, null, "", "t=5", "v1=00", "t=x,v1=00", "t=5,v1=zz", "t=5,v1=0011", "garbage"]) {
      await refused({ header: bad }, /malformed/);
    }
    // Other schemes are ignored; the first t counts.
    await verifySignature({ header: `${header},v0=abc,t=5`, body: "body", secrets: "cs_new", now: 1000 });
  });
});

test("register: when a later function fails, the error carries the signing secrets of those registered before it", async () => {
  const good = createFunction({ id: "reg-good", mode: "pull" }, () => null);
  const bad = createFunction({ id: "Bad Id", mode: "pull" }, () => null);
  let failure;
  try {
    await register(client, [good, bad], { environment: ENV });
    assert.fail("the registration of Bad Id should fail");
  } catch (e) {
    failure = e;
  }
  assert.ok(failure instanceof RegisterError, String(failure));
  assert.equal(failure.functionId, "Bad Id");
  assert.ok(failure.cause instanceof CofferError && failure.cause.status === 422, String(failure.cause));
  assert.equal(failure.registrations.length, 1);
  const [registration] = failure.registrations;
  assert.equal(registration.id, "reg-good");
  assert.equal(registration.created, true);
  assert.match(registration.signingSecret, /^cs_/);
  assert.ok(!JSON.stringify(failure).includes(registration.signingSecret), "JSON never shows the secret");
  // created comes from the status: 201 the first time, 200 for an update.
  const [again] = await register(client, [good], { environment: ENV });
  assert.deepEqual([again.created, again.signingSecret], [false, undefined]);
});

describe("serve without a network", () => {
  test("a body over maxBodyBytes is 413; a signed request within it runs; a lookup function gives the secrets", async () => {
    let ran = 0;
    const f = createFunction({ id: "f", mode: "push" }, ({ run }) => { ran++; return run.attempt; });
    const handler = serve({ functions: [f], signingSecrets: (id) => (id === "f" ? ["cs_f"] : undefined), maxBodyBytes: 400 });
    const body = job("f");
    const request = async (b) =>
      handler(new Request("http://x/coffer", { method: "POST", body: b, headers: { "coffer-signature": await sign("cs_f", b) } }));
    const big = body.replace('"triggerParams":{}', `"triggerParams":{"pad":"${"x".repeat(500)}"}`);
    assert.equal((await request(big)).status, 413);
    const ok = await request(body);
    assert.equal(ok.status, 200);
    assert.equal(await ok.json(), 1);
    assert.equal(ran, 1);
  });

  test("a forged header costs one MAC per distinct secret, and at most 2 v1 are read", async () => {
    const f = createFunction({ id: "f", mode: "push" }, () => "ran");
    const g = createFunction({ id: "g", mode: "push" }, () => "ran");
    // Three entries, two distinct secrets.
    const handler = serve({ functions: [f, g], signingSecrets: { f: ["cs_f", "cs_shared"], g: "cs_shared" } });
    const body = job("f");
    const now = Math.floor(Date.now() / 1000);
    const forged = `t=${now}` + `,v1=${"0".repeat(64)}`.repeat(8);
    const subtle = globalThis.crypto.subtle;
    const counts = { sign: 0, verify: 0 };
    subtle.sign = function (...args) { counts.sign++; return SubtleCrypto.prototype.sign.apply(this, args); };
    subtle.verify = function (...args) { counts.verify++; return SubtleCrypto.prototype.verify.apply(this, args); };
    try {
      const response = await handler(new Request("http://x/coffer", { method: "POST", body, headers: { "coffer-signature": forged } }));
      assert.equal(response.status, 401);
      assert.deepEqual(counts, { sign: 2, verify: 0 }, "one MAC per distinct secret, none per v1");
    } finally {
      delete subtle.sign;
      delete subtle.verify;
    }
    // The right signature as a third v1 is not read; as the first or second it is.
    const right = (await sign("cs_f", body, now)).split(",")[1];
    const zero = `v1=${"0".repeat(64)}`;
    const post = (header) => handler(new Request("http://x/coffer", { method: "POST", body, headers: { "coffer-signature": header } }));
    assert.equal((await post(`t=${now},${zero},${zero},${right}`)).status, 401);
    assert.equal((await post(`t=${now},${zero},${right}`)).status, 200);
    assert.equal((await post(`t=${now},${right},${zero},${zero}`)).status, 200);
    await assert.rejects(
      verifySignature({ header: `t=${now},${zero},${zero},${right}`, body, secrets: "cs_f", now }),
      SignatureError,
    );
  });

  test("a malformed or stale signature is refused before the body is read", async () => {
    const f = createFunction({ id: "f", mode: "push" }, () => "ran");
    const handler = serve({ functions: [f], signingSecrets: { f: "cs_f" } });
    const now = Math.floor(Date.now() / 1000);
    for (const header of [undefined, "garbage", `t=${now - 3600},v1=${"0".repeat(64)}`]) {
      let pulled = false;
      const body = new ReadableStream(
        { pull(controller) { pulled = true; controller.enqueue(new TextEncoder().encode(job("f"))); controller.close(); } },
        { highWaterMark: 0 },
      );
      const headers = header === undefined ? {} : { "coffer-signature": header };
      const response = await handler(new Request("http://x/coffer", { method: "POST", body, headers, duplex: "half" }));
      assert.equal(response.status, 401, String(header));
      assert.equal(pulled, false, `the body was not read (${header})`);
    }
  });

  test("a declared Content-Length over maxBodyBytes is 413 at once, through toNodeListener, before any body arrives", async () => {
    assert.equal(DEFAULT_MAX_BODY_BYTES, 4 * 1024 * 1024);
    let ran = 0;
    const f = createFunction({ id: "f", mode: "push" }, () => { ran++; return null; });
    const endpoint = await listen(serve({ functions: [f], signingSecrets: { f: "cs_f" } }));
    try {
      const { port } = new URL(endpoint.url);
      const now = Math.floor(Date.now() / 1000);
      const answer = await new Promise((resolve, reject) => {
        const socket = connect(Number(port), "127.0.0.1");
        let text = "";
        const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no answer: ${text}`)); }, 5000);
        socket.setEncoding("utf8");
        socket.on("data", (chunk) => {
          text += chunk;
          if (text.includes("\r\n\r\n")) { clearTimeout(timer); socket.destroy(); resolve(text); }
        });
        socket.on("error", reject);
        // A forged header with a fresh timestamp, a 1 GiB body declared, and none sent.
        socket.write(
          "POST /coffer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
          `Coffer-Signature: t=${now},v1=${"0".repeat(64)}\r\nContent-Length: ${1024 ** 3}\r\n\r\n`,
        );
      });
      assert.match(answer, /^HTTP\/1\.1 413 /);
      assert.equal(ran, 0);
    } finally {
      await endpoint.close();
    }
  });

  test("serve() and verifySignature refuse options that are not numbers (TypeError)", async () => {
    const f = createFunction({ id: "f", mode: "push" }, () => null);
    for (const bad of [{ maxBodyBytes: NaN }, { maxBodyBytes: -1 }, { maxBodyBytes: 1.5 }, { toleranceSeconds: NaN }, { toleranceSeconds: -1 }]) {
      assert.throws(() => serve({ functions: [f], signingSecrets: {}, ...bad }), TypeError, JSON.stringify(bad));
    }
    const header = await sign("cs", "body", 1000);
    // NaN used to accept any timestamp: |now - t| > NaN is false.
    for (const bad of [{ toleranceSeconds: NaN }, { now: NaN }, { now: Infinity }, { toleranceSeconds: -1 }]) {
      await assert.rejects(verifySignature({ header, body: "body", secrets: "cs", now: 1000, ...bad }), TypeError, JSON.stringify(bad));
    }
  });
});
