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
  const blocked = new Coffer({
    address: server.address,
    apiKey: (await server.createKey("runtime", ENV)).key,
    fetch: (url, init) =>
      partitioned && String(url).includes("/heartbeat") ? Promise.reject(new TypeError("dropped")) : fetch(url, init),
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
