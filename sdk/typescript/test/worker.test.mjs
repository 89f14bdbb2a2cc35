// Pull workers against a real `coffer serve`, with runtime keys.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { startServer } from "./harness.mjs";
import { deferred, ended, send, sleep, until } from "./util.mjs";
import { Coffer, CofferError, LeaseLostError, createFunction, register, worker } from "../dist/index.js";

const ENV = "default";
let server;
let admin;
let runtime;

before(async () => {
  server = await startServer();
  admin = new Coffer({ address: server.address, apiKey: server.adminKey });
  runtime = new Coffer({ address: server.address, apiKey: (await server.createKey("runtime", ENV)).key });
  assert.equal((await server.api("PUT", `/v1/environments/${ENV}/secrets/WORK_KEY`, { value: "wk_0123456789abcdef" })).status, 201);
});

after(async () => {
  await server?.stop();
});

const quiet = () => {};

test("a worker with a runtime key completes N runs, with their outputs", async () => {
  let concurrent = 0;
  let most = 0;
  const work = createFunction(
    { id: "work", triggers: ["work.do"], secrets: ["WORK_KEY"], mode: "pull" },
    async ({ event, secrets, run }) => {
      concurrent++;
      most = Math.max(most, concurrent);
      await sleep(100);
      concurrent--;
      return { n: event.data.n, keyLength: secrets.get("WORK_KEY").length, attempt: run.attempt };
    },
  );
  await register(admin, [work], { environment: ENV });
  // The environment comes from the runtime key (GET /v1/whoami).
  const w = worker({ client: runtime, functions: [work], concurrency: 3, waitMs: 1000, onError: quiet });
  try {
    const ids = [];
    for (let n = 0; n < 8; n++) ids.push(...(await send(server, ENV, "work.do", { n })));
    for (const [n, id] of ids.entries()) {
      const run = await ended(server, ENV, id);
      assert.equal(run.status, "succeeded", JSON.stringify(run));
      assert.deepEqual(run.output, { n, keyLength: 19, attempt: 1 });
    }
    assert.ok(most <= 3, `at most 3 at once, saw ${most}`);
    assert.ok(most >= 2, `runs overlap, saw ${most}`);
  } finally {
    await w.stop();
  }
});

test("a handler's error fails the run with its message, and an undeclared or unset secret says which", async () => {
  const strict = createFunction(
    { id: "strict", triggers: ["strict.do"], secrets: ["WORK_KEY", "NOT_SET_KEY"], mode: "pull" },
    async ({ event, secrets }) => {
      if (event.data.read === "unset") return secrets.get("NOT_SET_KEY");
      if (event.data.read === "undeclared") return secrets.get("OTHER_KEY");
      if (event.data.read === "bigint") return { n: 1n };
      throw new Error(`refusing ${event.data.read}`);
    },
  );
  await register(admin, [strict], { environment: ENV });
  const w = worker({ client: runtime, functions: [strict], environment: ENV, waitMs: 1000, onError: quiet });
  try {
    const expect = {
      unset: "the secret NOT_SET_KEY is declared but not set in environment default",
      undeclared: "function strict did not declare the secret OTHER_KEY: add it to its secrets",
      bigint: "the handler's output could not be encoded as JSON",
      other: "refusing other",
    };
    for (const [read, error] of Object.entries(expect)) {
      const [id] = await send(server, ENV, "strict.do", { read });
      const run = await ended(server, ENV, id);
      assert.equal(run.status, "failed");
      assert.equal(run.error, error);
    }
  } finally {
    await w.stop();
  }
});

test("a worker that loses its lease is aborted and does not complete; another worker completes the run", async () => {
  const slow = createFunction({ id: "slow", triggers: ["slow.do"], mode: "pull" }, async () => ({}));
  await register(admin, [slow], { environment: ENV });

  // Worker A: its heartbeats are dropped on the way (a network partition) until released.
  // With room for one run only, it polls no more while it holds this one.
  let partitioned = true;
  let aCompletes = 0;
  const blocked = new Coffer({
    address: server.address,
    apiKey: (await server.createKey("runtime", ENV)).key,
    fetch: (url, init) => {
      if (String(url).includes("/complete")) aCompletes++;
      return partitioned && String(url).includes("/heartbeat") ? Promise.reject(new TypeError("dropped")) : fetch(url, init);
    },
  });
  const started = deferred();
  const aborted = deferred();
  const aErrors = [];
  let aFinished = false;
  const slowA = createFunction({ id: "slow", mode: "pull" }, async ({ run, signal }) => {
    started.resolve(run);
    signal.addEventListener("abort", () => aborted.resolve(signal.reason));
    await aborted.promise;
    aFinished = true;
    return { by: "A" };
  });
  const a = worker({ client: blocked, functions: [slowA], environment: ENV, concurrency: 1, leaseMs: 1000, waitMs: 1000, onError: (e) => aErrors.push(e) });

  const [id] = await send(server, ENV, "slow.do", {});
  const runA = await started.promise;
  assert.equal(runA.id, id);
  assert.equal(runA.attempt, 1);

  // Worker B polls once A's lease (1 s, never extended) has expired, and completes the run.
  const slowB = createFunction({ id: "slow", mode: "pull" }, async ({ run }) => ({ by: "B", attempt: run.attempt }));
  const b = worker({ client: runtime, functions: [slowB], environment: ENV, leaseMs: 1000, waitMs: 1000, onError: quiet });
  try {
    const run = await ended(server, ENV, id);
    assert.equal(run.status, "succeeded");
    assert.deepEqual(run.output, { by: "B", attempt: 2 });
    assert.equal(run.attempts, 2);

    // The partition heals: A's next heartbeat is refused (409 lease_lost), its handler's
    // signal aborts, and it does not complete the run.
    partitioned = false;
    const reason = await aborted.promise;
    assert.ok(reason instanceof LeaseLostError, String(reason));
    assert.equal(reason.runId, id);
    await until(() => a.inFlight === 0, "worker A to drop the run");
    assert.ok(aFinished);
    assert.ok(aErrors.some((e) => e instanceof LeaseLostError));
    assert.ok(aErrors.some((e) => e instanceof CofferError && e.code === "unreachable"), "the dropped heartbeats were reported");
    const after = await ended(server, ENV, id);
    assert.deepEqual(after.output, { by: "B", attempt: 2 }, "A did not overwrite B's completion");
    // Not merely refused: A never tried to complete the run it lost.
    assert.equal(aCompletes, 0, "worker A sent no /complete");
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});

test("stop() stops polling and waits for the runs in flight to finish and complete", async () => {
  const release = deferred();
  const started = deferred();
  const graceful = createFunction({ id: "graceful", triggers: ["graceful.do"], mode: "pull" }, async ({ event }) => {
    started.resolve();
    await release.promise;
    await sleep(200);
    return { n: event.data.n };
  });
  await register(admin, [graceful], { environment: ENV });
  const w = worker({ client: runtime, functions: [graceful], environment: ENV, waitMs: 20_000, onError: quiet });
  const [first] = await send(server, ENV, "graceful.do", { n: 1 });
  await started.promise;
  assert.equal(w.inFlight, 1);

  let stopped = false;
  const stopping = w.stop().then(() => { stopped = true; });
  await sleep(300);
  assert.equal(stopped, false, "stop() waits for the run in flight");
  // Stopped polling: a new run stays queued.
  const [second] = await send(server, ENV, "graceful.do", { n: 2 });
  release.resolve();
  await stopping;
  assert.equal(w.inFlight, 0);
  const done = await server.api("GET", `/v1/environments/${ENV}/runs/${first}`);
  assert.equal(done.body.status, "succeeded", "completed before stop() resolved");
  assert.deepEqual(done.body.output, { n: 1 });
  await sleep(300);
  const queued = await server.api("GET", `/v1/environments/${ENV}/runs/${second}`);
  assert.equal(queued.body.status, "queued");
  assert.equal(w.stop(), w.done, "stop() again is the same promise");

  // An AbortSignal stops a worker too; the queued run goes to it.
  const controller = new AbortController();
  const again = worker({ client: runtime, functions: [graceful], environment: ENV, signal: controller.signal, onError: quiet });
  assert.deepEqual((await ended(server, ENV, second)).output, { n: 2 });
  controller.abort();
  await again.done;
});

test("a worker whose key may not poll stops, and done rejects with the API's error", async () => {
  const f = createFunction({ id: "work", mode: "pull" }, () => null);
  const errors = [];
  const w = worker({ client: admin, functions: [f], environment: ENV, onError: (e) => errors.push(e) });
  await assert.rejects(w.done, (e) => e instanceof CofferError && e.status === 403);
  assert.equal(errors.length, 1);
  assert.throws(() => worker({ client: runtime, functions: [] }), TypeError);
});

/** A client whose fetch is `answer(url, init)` alone: no server. */
function fake(answer) {
  return new Coffer({ address: "http://coffer.test", apiKey: "ck_default_test", fetch: async (url, init) => answer(String(url), init) });
}

const noContent = () => new Response(null, { status: 204 });

test("worker options that are not valid numbers throw TypeError at construction", () => {
  const f = createFunction({ id: "f", mode: "pull" }, () => null);
  const client = fake(noContent);
  for (const bad of [
    { concurrency: NaN }, { concurrency: 0 }, { concurrency: 1.5 }, { waitMs: NaN }, { waitMs: -1 }, { waitMs: 30_001 },
    { leaseMs: NaN }, { leaseMs: 999 }, { leaseMs: Infinity },
  ]) {
    assert.throws(() => worker({ client, functions: [f], environment: ENV, onError: quiet, ...bad }), TypeError, JSON.stringify(bad));
  }
});

test("an idle worker with waitMs 0 does not poll in a tight loop", async () => {
  let polls = 0;
  const f = createFunction({ id: "f", mode: "pull" }, () => null);
  const w = worker({
    client: fake(() => { polls++; return noContent(); }),
    functions: [f], environment: ENV, waitMs: 0, onError: quiet,
  });
  await sleep(1200);
  await w.stop();
  // At most one poll per 500 ms: 3 in 1.2 s (a tight loop makes thousands).
  assert.ok(polls >= 2 && polls <= 4, `polls: ${polls}`);
});

test("a 503 overloaded poll waits as long as Retry-After says before polling again", async () => {
  const at = [];
  const f = createFunction({ id: "f", mode: "pull" }, () => null);
  const errors = [];
  const w = worker({
    client: fake(() => {
      at.push(Date.now());
      return at.length === 1
        ? new Response(JSON.stringify({ error: { code: "overloaded", message: "busy" } }), { status: 503, headers: { "retry-after": "2" } })
        : noContent();
    }),
    functions: [f], environment: ENV, waitMs: 0, onError: (e) => errors.push(e),
  });
  await until(() => at.length >= 2, "a second poll", 5000);
  await w.stop();
  assert.ok(at[1] - at[0] >= 1900, `waited ${at[1] - at[0]} ms`);
  assert.equal(errors[0].retryAfterSeconds, 2);
});

test("a job whose run cannot be handled is reported through onError, never an unhandled rejection", async () => {
  const unhandled = [];
  const onUnhandled = (e) => unhandled.push(e);
  process.on("unhandledRejection", onUnhandled);
  const errors = [];
  let polls = 0;
  const f = createFunction({ id: "f", mode: "pull" }, () => null);
  const w = worker({
    client: fake(() => {
      polls++;
      if (polls > 1) return noContent();
      // ".." is no path segment: building the run's path throws.
      const job = { runId: "..", functionId: "f", environment: ENV, attempt: 1, event: { name: "e", data: null }, secrets: {}, config: {}, triggerParams: {} };
      return new Response(JSON.stringify(job), { status: 200, headers: { "content-type": "application/json" } });
    }),
    functions: [f], environment: ENV, waitMs: 0, onError: (e, context) => errors.push([e, context]),
  });
  try {
    await until(() => errors.length > 0, "the error to be reported", 5000);
    await w.stop();
    await sleep(20);
    assert.ok(errors[0][0] instanceof TypeError, String(errors[0][0]));
    assert.deepEqual(errors[0][1], { runId: ".." });
    assert.deepEqual(unhandled, []);
    assert.equal(w.inFlight, 0);
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
});

test("a worker without an environment waits for Coffer to answer whoami instead of dying", async () => {
  let refusals = 2;
  const client = new Coffer({
    address: server.address,
    apiKey: (await server.createKey("runtime", ENV)).key,
    fetch: (url, init) => {
      if (String(url).endsWith("/v1/whoami") && refusals > 0) {
        refusals--;
        return Promise.reject(new TypeError("connect ECONNREFUSED"));
      }
      return fetch(url, init);
    },
  });
  const late = createFunction({ id: "late", triggers: ["late.do"], mode: "pull" }, ({ run }) => ({ attempt: run.attempt }));
  await register(admin, [late], { environment: ENV });
  const errors = [];
  const w = worker({ client, functions: [late], waitMs: 1000, onError: (e) => errors.push(e) });
  try {
    const [id] = await send(server, ENV, "late.do", {});
    const run = await ended(server, ENV, id);
    assert.equal(run.status, "succeeded");
    assert.equal(refusals, 0);
    assert.equal(errors.filter((e) => e instanceof CofferError && e.code === "unreachable").length, 2);
  } finally {
    await w.stop();
  }
  // A refused key still stops it.
  const revoked = new Coffer({ address: server.address, apiKey: "ck_default_not_a_key_0000000000000000" });
  const stopped = worker({ client: revoked, functions: [late], onError: quiet });
  await assert.rejects(stopped.done, (e) => e instanceof CofferError && e.status === 401);
});

test("a heartbeat that stalls is cut off in time for the next one to keep the lease", async () => {
  let stalled = 0;
  const client = new Coffer({
    address: server.address,
    apiKey: (await server.createKey("runtime", ENV)).key,
    fetch: (url, init) => {
      if (String(url).includes("/heartbeat") && stalled++ === 0) {
        // The first heartbeat never answers (until its own timeout aborts it).
        return new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(init.signal.reason)));
      }
      return fetch(url, init);
    },
  });
  const long = createFunction({ id: "long", triggers: ["long.do"], mode: "pull" }, async ({ run, signal }) => {
    await sleep(3500);
    return { attempt: run.attempt, aborted: signal.aborted };
  });
  await register(admin, [long], { environment: ENV });
  const errors = [];
  const w = worker({ client, functions: [long], environment: ENV, leaseMs: 1500, waitMs: 1000, onError: (e) => errors.push(e) });
  try {
    const [id] = await send(server, ENV, "long.do", {});
    const run = await ended(server, ENV, id);
    assert.equal(run.status, "succeeded", JSON.stringify(run));
    assert.deepEqual(run.output, { attempt: 1, aborted: false });
    assert.equal(run.attempts, 1, "the lease was never lost");
    assert.ok(stalled >= 3, `heartbeats: ${stalled}`);
    assert.ok(errors.some((e) => e instanceof CofferError && /timed out/.test(e.message)), errors.map(String).join());
    assert.ok(!errors.some((e) => e instanceof LeaseLostError));
  } finally {
    await w.stop();
  }
});
