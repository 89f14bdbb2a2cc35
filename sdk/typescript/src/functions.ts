// Functions as the code declares them: `createFunction(definition, handler)`, the context a
// handler receives, and the `Secrets` and `Config` views that tell an undeclared name (a bug
// in the function) from a declared one that is not set (an optional dependency).
//
// No value is ever logged, and none appears in an error message, `JSON.stringify`, or a
// console/inspect rendering of these objects: values live in private fields.

import { SecretNotSetError, UndeclaredSecretError } from "./errors.js";

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** How Coffer hands a function its runs: it POSTs them (`push`) or workers poll (`pull`). */
export type FunctionMode = "push" | "pull";

/** An event (or NATS-style pattern: `order.*` one token, `order.>` one or more) that starts a run. */
export type TriggerSpec = string | { event: string };

/** A function's definition: the code's side of the contract with Coffer. */
export interface FunctionDefinition<S extends string = string, C extends string = string> {
  /** The function's id, `^[a-z0-9][a-z0-9_-]{0,62}$`. */
  id: string;
  /** Events that start a run (none: only direct runs and orchestration steps). */
  triggers?: readonly TriggerSpec[];
  /** The secrets the handler reads: the only ones it can read. */
  secrets?: readonly S[];
  /** The config keys the handler reads: the only ones it can read. */
  config?: readonly C[];
  /** `push` (serve it with `serve()`) or `pull` (run it with `worker()`). */
  mode: FunctionMode;
  /** Push only: how long Coffer waits for an answer, 1–300,000 ms (server default 10,000). */
  timeoutMs?: number;
  /** Push only: retries after a failed attempt, 0–10 (server default 3). */
  retries?: number;
  /** Push only: attempts in flight at once per Coffer node, 1–256 (server default 16). */
  concurrency?: number;
}

/** The event that started a run (an orchestration step's is `orchestration.{id}.{stepId}`). */
export interface RunEvent {
  name: string;
  data: Json;
}

/** Which run a handler is working on. */
export interface RunInfo {
  /** The run's id. Delivery is at least once: de-duplicate on it. */
  id: string;
  /** 1 for the first attempt, +1 per retry or re-lease. */
  attempt: number;
  /** The function's id. */
  functionId: string;
  /** The function's environment. */
  environment: string;
}

/** What a handler receives for one run. */
export interface FunctionContext<S extends string = string, C extends string = string> {
  /** The event that started the run. */
  event: RunEvent;
  /** The run's secrets, as the definition declares them. */
  secrets: Secrets<S>;
  /** The run's config values, as the definition declares them. */
  config: Config<C>;
  /**
   * Parameters (an orchestration step's params, its encrypted params **opened** and its
   * `secretRef`s **resolved**); `{}` otherwise. A plain object, read as such
   * (`triggerParams.DB_PASSWORD`) — so its values are secrets: do not log it. The
   * context's own renderings (`JSON.stringify(ctx)`, `console.log(ctx)`) show its keys only.
   */
  triggerParams: { [key: string]: Json };
  /** The run. */
  run: RunInfo;
  /**
   * Aborted when the run is no longer this handler's: a pull worker lost its lease (the run
   * went to another worker), or a push delivery's connection closed. Pass it to `fetch`.
   */
  signal: AbortSignal;
}

/** A handler: returns the run's output (any JSON; `undefined` is `null`), or throws its error. */
export type Handler<S extends string = string, C extends string = string, O = unknown> = (
  context: FunctionContext<S, C>,
) => O | Promise<O>;

/** A function: its definition and its handler, for `serve()`, `worker()` and `register()`. */
export interface CofferFunction<S extends string = string, C extends string = string> {
  readonly id: string;
  readonly definition: Readonly<FunctionDefinition<S, C>>;
  /** The handler (method syntax: a function of any declaration fits a `CofferFunction[]`). */
  handler(context: FunctionContext<S, C>): unknown;
}

/**
 * Declares a function: `createFunction({ id, triggers, secrets, config?, mode }, handler)`.
 *
 * The declared `secrets` and `config` are the only names the handler can read
 * (`secrets.get` throws {@link UndeclaredSecretError} for any other), and `register()`
 * registers exactly these with Coffer, so the two sides agree. With literal names the
 * compiler checks `secrets.get("…")` too.
 */
export function createFunction<const S extends string = never, const C extends string = never, O = unknown>(
  definition: FunctionDefinition<S, C>,
  handler: Handler<S, C, O>,
): CofferFunction<S, C> {
  if (!definition || typeof definition.id !== "string" || definition.id === "") {
    throw new TypeError("createFunction: definition.id is required");
  }
  if (definition.mode !== "push" && definition.mode !== "pull") {
    throw new TypeError(`createFunction(${definition.id}): mode must be "push" or "pull"`);
  }
  if (typeof handler !== "function") throw new TypeError(`createFunction(${definition.id}): a handler is required`);
  for (const [what, names] of [["secrets", definition.secrets], ["config", definition.config]] as const) {
    if (names !== undefined && (!Array.isArray(names) || names.some((n) => typeof n !== "string"))) {
      throw new TypeError(`createFunction(${definition.id}): ${what} must be an array of names`);
    }
  }
  const frozen: FunctionDefinition<S, C> = Object.freeze({
    ...definition,
    triggers: Object.freeze([...(definition.triggers ?? [])]),
    secrets: Object.freeze([...(definition.secrets ?? [])]),
    config: Object.freeze([...(definition.config ?? [])]),
  });
  return Object.freeze({ id: definition.id, definition: frozen, handler });
}

const inspect = Symbol.for("nodejs.util.inspect.custom");
const denoInspect = Symbol.for("Deno.customInspect");

/**
 * A run's secrets, seen through the function's declaration.
 *
 * - `get(name)`: the value; {@link UndeclaredSecretError} when the definition does not
 *   declare `name` (a bug to fix — even if the job carried a value for it), and
 *   {@link SecretNotSetError} when it is declared but not set in the environment.
 * - `has(name)`: `true` when declared **and** set; `false` otherwise — also for an
 *   undeclared name — and it never throws, so an optional dependency reads
 *   `if (secrets.has("SLACK_WEBHOOK")) notify(secrets.get("SLACK_WEBHOOK"))`.
 *
 * Values are held in private fields: `JSON.stringify(secrets)` and `console.log(secrets)`
 * show the names that are set, never a value.
 */
export class Secrets<S extends string = string> {
  readonly #declared: ReadonlySet<string>;
  readonly #values: ReadonlyMap<string, string>;
  readonly #functionId: string;
  readonly #environment: string;

  /** The view of `values` (a job's `secrets`) for a function that declares `declared`. */
  constructor(declared: readonly string[], values: Record<string, unknown>, functionId: string, environment: string) {
    this.#declared = new Set(declared);
    const map = new Map<string, string>();
    for (const name of declared) {
      const value = Object.prototype.hasOwnProperty.call(values ?? {}, name) ? values[name] : undefined;
      if (typeof value === "string") map.set(name, value);
    }
    this.#values = map;
    this.#functionId = functionId;
    this.#environment = environment;
  }

  /** The value of a declared secret that is set; throws otherwise (see the class). */
  get(name: S): string {
    if (!this.#declared.has(name)) throw new UndeclaredSecretError(name, this.#functionId);
    const value = this.#values.get(name);
    if (value === undefined) throw new SecretNotSetError(name, this.#environment);
    return value;
  }

  /** Whether `name` is declared and set. Never throws. */
  has(name: S): boolean {
    return this.#declared.has(name) && this.#values.has(name);
  }

  /** The declared names that are set, sorted. */
  names(): string[] {
    return [...this.#values.keys()].sort();
  }

  /** The names that are set: never a value. */
  toJSON(): string[] {
    return this.names();
  }

  /** Never a value. */
  toString(): string {
    return `Secrets(${this.names().join(", ")})`;
  }

  /** `console.log` / `util.inspect` in Node.js: names only. */
  [inspect](): string {
    return this.toString();
  }

  /** `console.log` in Deno: names only. */
  [denoInspect](): string {
    return this.toString();
  }
}

/** `config.get(key)` for a key the function did not declare: a bug in the function. */
export class UndeclaredConfigError extends Error {
  override readonly name: string = "UndeclaredConfigError";
  readonly key: string;
  constructor(key: string, functionId: string) {
    super(`function ${functionId} did not declare the config key ${key}: add it to its config`);
    this.key = key;
  }
}

/** `config.get(key)` for a declared config key that is not set in the environment. */
export class ConfigNotSetError extends Error {
  override readonly name: string = "ConfigNotSetError";
  readonly key: string;
  constructor(key: string, environment: string) {
    super(`the config key ${key} is declared but not set in environment ${environment}`);
    this.key = key;
  }
}

/**
 * A run's config values, seen through the function's declaration: the same rules as
 * {@link Secrets} (`get` throws {@link UndeclaredConfigError} or {@link ConfigNotSetError};
 * `has` is a boolean that never throws). Config is not secret, but its JSON and inspect
 * renderings still show keys only, to keep logs short and uniform.
 */
export class Config<C extends string = string> {
  readonly #declared: ReadonlySet<string>;
  readonly #values: ReadonlyMap<string, Json>;
  readonly #functionId: string;
  readonly #environment: string;

  /** The view of `values` (a job's `config`) for a function that declares `declared`. */
  constructor(declared: readonly string[], values: Record<string, unknown>, functionId: string, environment: string) {
    this.#declared = new Set(declared);
    const map = new Map<string, Json>();
    for (const key of declared) {
      if (values && Object.prototype.hasOwnProperty.call(values, key) && values[key] !== undefined) {
        map.set(key, values[key] as Json);
      }
    }
    this.#values = map;
    this.#functionId = functionId;
    this.#environment = environment;
  }

  /** The value (any JSON) of a declared config key that is set; throws otherwise. */
  get(key: C): Json {
    if (!this.#declared.has(key)) throw new UndeclaredConfigError(key, this.#functionId);
    if (!this.#values.has(key)) throw new ConfigNotSetError(key, this.#environment);
    return this.#values.get(key) as Json;
  }

  /** Whether `key` is declared and set. Never throws. */
  has(key: C): boolean {
    return this.#declared.has(key) && this.#values.has(key);
  }

  /** The declared keys that are set, sorted. */
  keys(): string[] {
    return [...this.#values.keys()].sort();
  }

  /** The keys that are set. */
  toJSON(): string[] {
    return this.keys();
  }

  /** Keys only. */
  toString(): string {
    return `Config(${this.keys().join(", ")})`;
  }

  /** `console.log` / `util.inspect` in Node.js: keys only. */
  [inspect](): string {
    return this.toString();
  }

  /** `console.log` in Deno: keys only. */
  [denoInspect](): string {
    return this.toString();
  }
}

/**
 * Thrown by a handler for a failure retrying will not fix: a push endpoint answers 422,
 * which Coffer does not retry (any other error is a 500, retried while the function's
 * retries last). A pull run's error is never retried either way.
 */
export class PermanentError extends Error {
  override readonly name: string = "PermanentError";
}

/** A job as Coffer sends it (push body, poll answer). */
export interface Job {
  runId: string;
  functionId: string;
  environment: string;
  attempt: number;
  event: RunEvent;
  secrets: Record<string, string>;
  config: Record<string, Json>;
  triggerParams: { [key: string]: Json };
}

/** Whether `value` has a run's job's shape (runId, attempt, functionId, environment, event). @internal */
export function isJob(value: unknown): value is Job {
  if (typeof value !== "object" || value === null) return false;
  const j = value as Partial<Record<keyof Job, unknown>>;
  const event = j.event as { name?: unknown } | null | undefined;
  return (
    typeof j.runId === "string" &&
    typeof j.functionId === "string" &&
    typeof j.environment === "string" &&
    typeof j.attempt === "number" &&
    typeof event === "object" &&
    event !== null &&
    typeof event.name === "string"
  );
}

/**
 * The context a handler of `fn` receives for `job` — what `serve()` and `worker()` build, and
 * what a unit test of a handler can build from a job of its own.
 *
 * Its fields are plain (`ctx.triggerParams` is an ordinary object, destructuring works), and
 * the context renders safely: `JSON.stringify(ctx)`, `String(ctx)` and `console.log(ctx)`
 * (Node.js's `util.inspect`, Deno) show the event, the run, and only the **names** of the
 * secrets, config keys and trigger params — never a value, since an orchestration step's
 * trigger params hold opened encrypted params and resolved secret references. These
 * renderings are non-enumerable methods of the context itself: a copy (`{ ...ctx }`) or
 * `ctx.triggerParams` on its own prints its values.
 */
export function contextFor<S extends string, C extends string>(
  fn: CofferFunction<S, C>,
  job: Job,
  signal: AbortSignal = new AbortController().signal,
): FunctionContext<S, C> {
  const params = job.triggerParams;
  const context: FunctionContext<S, C> = {
    event: { name: job.event.name, data: job.event.data ?? null },
    secrets: new Secrets<S>(fn.definition.secrets ?? [], job.secrets ?? {}, fn.id, job.environment),
    config: new Config<C>(fn.definition.config ?? [], job.config ?? {}, fn.id, job.environment),
    triggerParams: typeof params === "object" && params !== null && !Array.isArray(params) ? params : {},
    run: { id: job.runId, attempt: job.attempt, functionId: job.functionId, environment: job.environment },
    signal,
  };
  const safe = () => ({
    event: context.event,
    secrets: context.secrets.names(),
    config: context.config.keys(),
    triggerParams: Object.keys(context.triggerParams ?? {}).sort(),
    run: context.run,
  });
  const text = () =>
    `FunctionContext { event: ${JSON.stringify(context.event)}, secrets: ${String(context.secrets)}, ` +
    `config: ${String(context.config)}, triggerParams: TriggerParams(${safe().triggerParams.join(", ")}), ` +
    `run: ${JSON.stringify(context.run)} }`;
  Object.defineProperties(context, {
    toJSON: { value: safe, enumerable: false },
    toString: { value: text, enumerable: false },
    [inspect]: { value: text, enumerable: false },
    [denoInspect]: { value: text, enumerable: false },
  });
  return context;
}

/**
 * The run's error text for what a handler threw: an `Error`'s message (or a thrown string),
 * else a generic text — never `String()` of an arbitrary object. Coffer redacts secret values
 * in it before storing it.
 *
 * @internal
 */
export function errorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : typeof error === "string" ? error : "";
  return message || "the handler failed";
}

/** The handler's output as JSON text (`undefined` is `null`), or `undefined` when it is not JSON. @internal */
export function outputJson(output: unknown): string | undefined {
  try {
    const text = JSON.stringify(output === undefined ? null : output);
    return typeof text === "string" ? text : "null";
  } catch {
    return undefined;
  }
}
