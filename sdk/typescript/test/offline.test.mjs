// The client's input checks, the transport's error mapping, pagination's cycle guard and the
// Node.js adapter's failure path, against a `fetch` of the test's own (no server needed).

import { test } from "node:test";
import assert from "node:assert/strict";

import { Coffer, CofferError, Pager, toNodeListener } from "../dist/index.js";

/** A client whose fetch records each request and answers with `answer(url, init)`. */
function recording(answer = () => json(200, {})) {
  const seen = [];
  const client = new Coffer({
    address: "http://coffer.test",
    apiKey: "ck_admin_test",
    fetch: async (url, init) => {
      seen.push({ url: String(url), init });
      return answer(String(url), init);
    },
  });
  return { client, seen };
}

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

test("expectedRevision NaN, Infinity, negative or fractional is a TypeError before any request", async () => {
  const { client, seen } = recording();
  for (const bad of [NaN, Infinity, -1, 1.5, "3"]) {
    await assert.rejects(client.secrets.set("prod", "STRIPE_KEY", "sk_value_123456", { expectedRevision: bad }), TypeError, String(bad));
    await assert.rejects(client.secrets.delete("prod", "STRIPE_KEY", { expectedRevision: bad }), TypeError);
    await assert.rejects(client.config.set("prod", "k", 1, { expectedRevision: bad }), TypeError);
    await assert.rejects(client.functions.put("prod", "f", { mode: "pull" }, { expectedRevision: bad }), TypeError);
    await assert.rejects(client.orchestrations.update("prod", "o", { name: "o", steps: [] }, { expectedRevision: bad }), TypeError);
  }
  for (const bad of [NaN, 0, -5, 2.5]) {
    await assert.rejects(client.secrets.page("prod", { limit: bad }), TypeError, `limit ${bad}`);
    await assert.rejects(client.secrets.list("prod", { limit: bad }).toArray(), TypeError);
  }
  await assert.rejects(client.functions.rotateSigningSecret("prod", "f", { graceMs: NaN }), TypeError);
  await assert.rejects(client.runs.wait("prod", "run_1", { timeoutMs: NaN }), TypeError);
  await assert.rejects(client.keys.rewrap({ limit: Infinity }), TypeError);
  assert.equal(seen.length, 0, "no request was made");
  assert.throws(() => new Coffer({ address: "http://x", apiKey: "ck_x", timeoutMs: NaN }), TypeError);

  // A valid revision is sent as it is; 0 included.
  await client.secrets.set("prod", "STRIPE_KEY", "sk_value_123456", { expectedRevision: 0 });
  assert.deepEqual(JSON.parse(seen[0].init.body), { value: "sk_value_123456", expectedRevision: 0 });
});

test("a path segment that is not a string (undefined) is a TypeError, and nothing is written or deleted", async () => {
  const { client, seen } = recording();
  await assert.rejects(client.secrets.set("prod", undefined, "sk_value_123456"), TypeError);
  await assert.rejects(client.secrets.delete("prod", undefined), TypeError);
  await assert.rejects(client.secrets.get(undefined, "A"), TypeError);
  await assert.rejects(client.config.delete("prod", 42), TypeError);
  await assert.rejects(client.secrets.set("prod", "..", "v"), TypeError);
  assert.equal(seen.length, 0, "no request was made");
});

test("a connection reset while the answer's body is read is CofferError unreachable; Retry-After is exposed", async () => {
  const { client } = recording(() => {
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"id":'));
      },
      pull(controller) {
        controller.error(new TypeError("socket hang up"));
      },
    });
    return new Response(body, { status: 200 });
  });
  await assert.rejects(client.whoami(), (e) => e instanceof CofferError && e.status === 0 && e.code === "unreachable");

  const busy = recording(() => json(503, { error: { code: "overloaded", message: "too many polls" } }, { "retry-after": "7" }));
  await assert.rejects(busy.client.status(), (e) => {
    assert.ok(e instanceof CofferError);
    assert.equal(e.code, "overloaded");
    assert.equal(e.retryAfterSeconds, 7);
    return true;
  });
  const plain = recording(() => json(404, { error: { code: "secret_not_found", message: "no" } }));
  await assert.rejects(plain.client.secrets.get("prod", "A"), (e) => e.retryAfterSeconds === undefined);
});

test("a listing whose cursors go round in a cycle rejects with CofferError cursor_cycle instead of looping", async () => {
  let requests = 0;
  const next = { undefined: "a", a: "b", b: "c", c: "a" };
  const pager = new Pager(async (cursor) => {
    requests++;
    return { items: [cursor ?? "start"], nextCursor: next[String(cursor)] };
  });
  await assert.rejects(pager.toArray(), (e) => e instanceof CofferError && e.code === "cursor_cycle");
  assert.equal(requests, 4);
  // A listing that ends is read whole.
  const ends = new Pager(async (cursor) => ({ items: [cursor ?? 0], nextCursor: cursor === undefined ? "1" : null }));
  assert.deepEqual(await ends.toArray(), [0, "1"]);
});

test("toNodeListener: a response that fails while it is written answers 500 and rejects nothing unhandled", async () => {
  const unhandled = [];
  const onUnhandled = (e) => unhandled.push(e);
  process.on("unhandledRejection", onUnhandled);
  try {
    const handler = async () =>
      new Response(new ReadableStream({ pull(controller) { controller.error(new Error("broken")); } }), { status: 200 });
    const ended = [];
    const res = {
      statusCode: 0,
      headersSent: false,
      headers: {},
      setHeader(name, value) { this.headers[name] = value; },
      end(chunk) { ended.push(chunk); },
      once() {},
      destroy() { ended.push("destroyed"); },
    };
    const req = { method: "GET", url: "/", headers: {}, async *[Symbol.asyncIterator]() {} };
    toNodeListener(handler)(req, res);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(res.statusCode, 500);
    assert.equal(ended.length, 1);
    assert.match(new TextDecoder().decode(ended[0]), /"internal"/);

    // Headers already sent: the response is cut off.
    const sent = { ...res, headersSent: true, statusCode: 0, headers: {}, setHeader() {}, end() { throw new Error("cannot"); } };
    ended.length = 0;
    toNodeListener(handler)(req, sent);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(ended, ["destroyed"]);
    assert.deepEqual(unhandled, []);
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
});
