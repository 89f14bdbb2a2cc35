// Helpers shared by this SDK's tests.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { CofferError, toNodeListener } from "../dist/index.js";

/** Serves a fetch handler on 127.0.0.1 (a free port): `{url, close()}`. */
export async function listen(handler, path = "/coffer") {
  const server = createServer(toNodeListener(handler));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}${path}`,
    close: () => new Promise((resolve) => { server.close(resolve); server.closeAllConnections(); }),
  };
}

/** Waits until the run has ended (succeeded or failed) and returns it. */
export async function ended(server, env, runId, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status, body } = await server.api("GET", `/v1/environments/${env}/runs/${runId}`);
    if (status !== 200) throw new Error(`GET run ${runId}: ${status} ${JSON.stringify(body)}`);
    if (body.status === "succeeded" || body.status === "failed") return body;
    if (Date.now() > deadline) throw new Error(`run ${runId} did not end: ${JSON.stringify(body)}\n${server.log()}`);
    await sleep(50);
  }
}

/** Sends an event and returns the ids of the runs it started. */
export async function send(server, env, name, data) {
  const { status, body } = await server.api("POST", `/v1/environments/${env}/events`, { name, data });
  if (status !== 202) throw new Error(`sending ${name}: ${status} ${JSON.stringify(body)}`);
  return body.runs.map((r) => r.id);
}

/** Waits until `check()` is truthy. */
export async function until(check, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise and its resolve. */
export function deferred() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}

/** Asserts that `promise` rejects with a CofferError of this status and code; returns it. */
export async function rejectsWith(promise, status, code) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof CofferError, `a CofferError, not ${e?.name}: ${e?.message}`);
    assert.equal(e.status, status, `status (${e.code}: ${e.message})`);
    assert.equal(e.code, code, `code (${e.message})`);
    return e;
  }
  assert.fail(`expected ${status} ${code}, it succeeded`);
}
