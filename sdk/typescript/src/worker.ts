// The pull worker: long-polls for runs of its functions, runs each handler with its lease
// kept alive by heartbeats, reports how it ended, and stops gracefully. Mirrors the Rust
// SDK's `Worker`.

import type { Coffer } from "./client.js";
import { CofferError } from "./errors.js";
import { Http } from "./http.js";
import { type CofferFunction, type Job, contextFor, errorMessage, isJob, outputJson } from "./functions.js";
import { keyEnvironment } from "./register.js";
import { integer } from "./validate.js";

/** Options of {@link worker}. */
export interface WorkerOptions {
  /** A client with a **runtime** key of the environment. */
  client: Coffer;
  /** The pull functions this worker runs. */
  functions: readonly CofferFunction[];
  /**
   * The environment; default: the runtime key's own, read from `GET /v1/whoami` when the
   * worker starts (retried with the polls' backoff while Coffer cannot be reached; a key
   * refused with 401/403 stops the worker).
   */
  environment?: string;
  /**
   * How long one poll waits for a run, an integer 0–30,000 ms (default 20,000). Polls that
   * come back empty sooner than {@link MIN_POLL_INTERVAL_MS} apart are spaced out to it, so
   * `0` does not spin.
   */
  waitMs?: number;
  /**
   * How long a run is the worker's between heartbeats, an integer 1,000–600,000 ms (default
   * 30,000); a heartbeat goes every third of it, on a fixed cadence, each given a third of it
   * to answer.
   */
  leaseMs?: number;
  /** Runs at once, an integer ≥ 1 (default 4). The worker polls only while it has room. */
  concurrency?: number;
  /** Aborting it is `stop()`. */
  signal?: AbortSignal;
  /**
   * Told of what goes wrong without stopping the worker (a failed poll that is retried, a
   * heartbeat or completion that failed, a lost lease) and of the error that stops it.
   * Default: `console.warn` of the message (messages never hold a secret value).
   */
  onError?: (error: Error, context: { runId?: string }) => void;
}

/** A running worker. */
export interface Worker {
  /**
   * Stops polling (a poll waiting is cut off), lets the runs in flight finish and complete,
   * and resolves when they have. Calling it again returns the same promise.
   */
  stop(): Promise<void>;
  /**
   * Resolves when the worker has stopped (after `stop()` or its `signal`); rejects with the
   * error that stopped it when retrying cannot help (the key is refused, 401/403; the
   * environment does not exist, 404; the poll is refused, 400/422) — after the runs in
   * flight have finished.
   */
  readonly done: Promise<void>;
  /** Runs in flight now. */
  readonly inFlight: number;
}

/** A run whose lease was lost: the reason of the handler's aborted `signal`. */
export class LeaseLostError extends Error {
  override readonly name: string = "LeaseLostError";
  readonly runId: string;
  constructor(runId: string) {
    super(`the lease of run ${runId} was lost: it went back to the queue and will not be completed here`);
    this.runId = runId;
  }
}

const DEFAULT_WAIT_MS = 20_000;
const DEFAULT_LEASE_MS = 30_000;
const DEFAULT_CONCURRENCY = 4;
const MAX_BACKOFF_MS = 30_000;
/** The shortest time between two polls that came back empty (`waitMs: 0`, or a quick 204). */
export const MIN_POLL_INTERVAL_MS = 500;
/** How often a completion is tried when the server cannot be reached. */
const COMPLETE_ATTEMPTS = 5;

/**
 * Starts a pull worker: `worker({ client, functions })`.
 *
 * - Polls `POST …/workers/poll` (long poll, `waitMs`) only while it has room for another
 *   run, so at most `concurrency` runs are in flight.
 * - Keeps each run's lease alive with a heartbeat every third of `leaseMs` while its handler
 *   works. A heartbeat refused with 409 `lease_lost` (the worker was stalled past its lease
 *   and the run went to another worker) aborts the handler's `signal`, and the run is not
 *   completed here.
 * - Completes the run with the handler's output (`{output, attempt}`) or its error
 *   (`{error, attempt}`), naming the attempt, so a late completion cannot end a newer one.
 * - `stop()` (or `signal`) stops polling, waits for the runs in flight, then resolves.
 * - Options out of range (`waitMs`, `leaseMs`, `concurrency`: NaN, fractional, too small or
 *   too large) throw `TypeError` here, at construction.
 *
 * Delivery is at least once: a worker that dies (or a poll cut off by `stop()` just as the
 * server handed it a run) leaves the run to come back when its lease expires, as the next
 * attempt. Handlers de-duplicate on `run.id`.
 */
export function worker(options: WorkerOptions): Worker {
  if (!options?.client) throw new TypeError("worker: client is required");
  const functions = new Map<string, CofferFunction>();
  for (const fn of options.functions ?? []) {
    if (functions.has(fn.id)) throw new TypeError(`worker: function ${fn.id} is given twice`);
    functions.set(fn.id, fn);
  }
  if (functions.size === 0) throw new TypeError("worker: at least one function is required");
  const http = options.client.http;
  const waitMs = integer(options.waitMs ?? DEFAULT_WAIT_MS, "worker: waitMs", 0, 30_000);
  const leaseMs = integer(options.leaseMs ?? DEFAULT_LEASE_MS, "worker: leaseMs", 1_000, 600_000);
  const concurrency = integer(options.concurrency ?? DEFAULT_CONCURRENCY, "worker: concurrency", 1);
  const beatEvery = Math.floor(leaseMs / 3);
  const report =
    options.onError ??
    ((e: Error, context: { runId?: string }) => {
      console.warn(`coffer worker${context.runId ? ` (run ${context.runId})` : ""}: ${e.message}`);
    });
  const tell = (e: unknown, runId?: string) => {
    try {
      report(e instanceof Error ? e : new Error(errorMessage(e)), runId === undefined ? {} : { runId });
    } catch {
      // The reporter's own failure changes nothing.
    }
  };

  const stopping = new AbortController();
  const runs = new Set<Promise<void>>();
  let roomFreed: (() => void) | undefined;

  const onSignal = () => stopping.abort();
  if (options.signal?.aborted) stopping.abort();
  else options.signal?.addEventListener("abort", onSignal, { once: true });

  /**
   * The environment: the option, or the key's own (`GET /v1/whoami`), retried with the polls'
   * backoff until it answers — only a refused key (401/403) or an answer that cannot help (an
   * admin key has no environment) stops it. `undefined` once stopping.
   */
  async function resolveEnvironment(): Promise<string | undefined> {
    if (options.environment !== undefined) return options.environment;
    for (let failures = 0; ; failures++) {
      if (stopping.signal.aborted) return undefined;
      try {
        return await keyEnvironment(options.client, "worker");
      } catch (e) {
        if (stopping.signal.aborted) return undefined;
        if (!(e instanceof CofferError) || e.status === 401 || e.status === 403) throw e;
        tell(e);
        await sleep(delay(e, failures), stopping.signal);
      }
    }
  }

  async function loop(): Promise<void> {
    const environment = await resolveEnvironment();
    if (environment === undefined) return;
    const base = `/v1/environments/${Http.path(environment)}`;
    const poll = { functions: [...functions.keys()], waitMs, leaseMs };
    let failures = 0;
    while (!stopping.signal.aborted) {
      while (runs.size >= concurrency && !stopping.signal.aborted) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            stopping.signal.removeEventListener("abort", wake);
            roomFreed = undefined;
            resolve();
          };
          roomFreed = wake;
          stopping.signal.addEventListener("abort", wake, { once: true });
        });
      }
      if (stopping.signal.aborted) break;
      let job: unknown;
      const polledAt = Date.now();
      try {
        job = await http.request<unknown>("POST", `${base}/workers/poll`, {
          body: poll,
          signal: stopping.signal,
          extraTimeoutMs: waitMs,
        });
        failures = 0;
      } catch (e) {
        if (stopping.signal.aborted) break;
        if (e instanceof CofferError && !retryable(e.status)) throw e;
        tell(e);
        // 503 `overloaded` says how long to wait (Retry-After): honoured, as the Rust SDK does.
        await sleep(delay(e, failures++), stopping.signal);
        continue;
      }
      if (job === undefined) {
        // 204: nothing within waitMs. One that came back quickly (waitMs 0, or a server that
        // answers at once) waits out the rest of the minimum interval: an idle worker must not spin.
        const early = MIN_POLL_INTERVAL_MS - (Date.now() - polledAt);
        if (early > 0) await sleep(early, stopping.signal);
        continue;
      }
      if (!isJob(job)) {
        tell(new Error("a polled job is not a run's job (runId, attempt, event); ignored"));
        continue;
      }
      // Nothing a run does may reject unhandled (a bad run id, a reporter that throws …).
      const run = runJob(base, job)
        .catch((e: unknown) => tell(e, job.runId))
        .finally(() => {
          runs.delete(run);
          roomFreed?.();
        });
      runs.add(run);
    }
  }

  async function runJob(base: string, job: Job): Promise<void> {
    const fn = functions.get(job.functionId);
    const runPath = `${base}/runs/${Http.path(job.runId)}`;
    let result: { output: unknown } | { error: string };
    let lost = false;
    if (!fn) {
      // The server only hands out runs of the functions polled for.
      result = { error: `this worker does not run function ${job.functionId}` };
    } else {
      const lease = new AbortController();
      // A fixed cadence, every third of the lease, whatever each heartbeat takes; each one is
      // given a third of the lease to answer, so one that stalls is cut off in time for the
      // next to keep the lease.
      const beat = async () => {
        try {
          await http.request<void>("POST", `${runPath}/heartbeat`, {
            body: { attempt: job.attempt, leaseMs },
            timeoutMs: beatEvery,
          });
        } catch (e) {
          if (lost) return;
          if (e instanceof CofferError && (e.status === 409 || e.status === 404)) {
            lost = true;
            clearInterval(timer);
            const reason = new LeaseLostError(job.runId);
            tell(reason, job.runId);
            lease.abort(reason);
            return;
          }
          tell(e, job.runId);
        }
      };
      const timer = setInterval(() => void beat(), beatEvery);
      try {
        const output = await fn.handler(contextFor(fn, job, lease.signal));
        const json = outputJson(output);
        result = json === undefined ? { error: "the handler's output could not be encoded as JSON" } : { output: JSON.parse(json) as unknown };
      } catch (e) {
        result = { error: errorMessage(e) };
      } finally {
        clearInterval(timer);
      }
    }
    if (lost) return;
    await complete(runPath, job, result);
  }

  async function complete(runPath: string, job: Job, result: { output: unknown } | { error: string }): Promise<void> {
    let body: Record<string, unknown> = { ...result, attempt: job.attempt };
    for (let attempt = 1; attempt <= COMPLETE_ATTEMPTS; attempt++) {
      try {
        await http.request<unknown>("POST", `${runPath}/complete`, { body });
        return;
      } catch (e) {
        if (!(e instanceof CofferError)) {
          tell(e, job.runId);
          return;
        }
        if ("output" in body && [400, 413, 422].includes(e.status)) {
          // The server refused the output itself (too large, say): end the run with an error
          // saying so rather than leave it to run again when its lease expires.
          tell(e, job.runId);
          body = { error: `the handler's output was refused: ${e.message}`, attempt: job.attempt };
          continue;
        }
        if (e.status === 409) {
          tell(new LeaseLostError(job.runId), job.runId);
          return;
        }
        if (retryable(e.status) && attempt < COMPLETE_ATTEMPTS) {
          tell(e, job.runId);
          await sleep(delay(e, attempt - 1));
          continue;
        }
        tell(e, job.runId);
        return;
      }
    }
  }

  const done = (async () => {
    try {
      await loop();
    } finally {
      stopping.abort();
      options.signal?.removeEventListener("abort", onSignal);
      while (runs.size > 0) await Promise.allSettled([...runs]);
    }
  })();
  // A rejection is also reported; `done` still rejects for whoever awaits it.
  done.catch((e: unknown) => tell(e));

  return {
    stop() {
      stopping.abort();
      return done;
    },
    done,
    get inFlight() {
      return runs.size;
    },
  };
}

function retryable(status: number): boolean {
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

/** Exponential from 500 ms to 30 s, with jitter over the upper half. */
function backoff(failures: number): number {
  const exp = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(failures, 6));
  return exp / 2 + Math.random() * (exp / 2);
}

/**
 * How long to wait after a failure: what the server asked for (`Retry-After`, on 503
 * `overloaded`), at most 30 s, else {@link backoff}.
 */
function delay(e: unknown, failures: number): number {
  const asked = e instanceof CofferError ? e.retryAfterSeconds : undefined;
  return asked !== undefined ? Math.min(MAX_BACKOFF_MS, asked * 1000) : backoff(failures);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
