// The management client: `new Coffer({ address, apiKey })`, with one namespace per resource
// (`client.secrets`, `client.orchestrations`, …). Every method is one HTTP request (a listing,
// one per page as it is iterated); every API error is a `CofferError` carrying the API's
// `code`, `status` and, for a revision conflict, `currentRevision`. Nothing here logs, and a
// secret value passed in is only ever put in a request body: no error message contains it.
//
// The shapes are the server's own, generated from its OpenAPI document (openapi.gen.ts).

import { Http, type CofferOptions, type Query } from "./http.js";
import { Pager, type Page } from "./pager.js";
import { integer, optionalInteger } from "./validate.js";
import type {
  ApiKey,
  ApiKeyList,
  AuditEntry,
  AuditPage,
  AuditVerification,
  Caller,
  ConfigEntry,
  ConfigPage,
  Environment,
  EnvironmentList,
  EventAccepted,
  Function as FunctionInfo,
  FunctionList,
  ImportEntry,
  ImportReport,
  ImportedSecret,
  KeyStatus,
  Orchestration,
  OrchestrationList,
  OrchestrationRun,
  OrchestrationRunList,
  OrchestrationRunStatus,
  PutFunction,
  ResultName,
  RewrapReport,
  RoleName,
  Run,
  RunList,
  RunStatus,
  SecretMeta,
  SecretPage,
  Status,
  Step,
  VerifyReport,
} from "./openapi.gen.js";

/** Options every call takes. */
export interface CallOptions {
  /** Aborts the request (the promise rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** Compare-and-set: act only if the resource is at this revision (`0`: only if it does not exist). */
export interface RevisionOptions extends CallOptions {
  /**
   * Act only if the resource is at this revision; `0`: only if it does not exist yet. A
   * mismatch rejects with `CofferError` `revision_conflict` (409), whose `currentRevision`
   * says where it is (0: it does not exist). A safe integer ≥ 0: anything else (NaN,
   * Infinity, negative, fractional) rejects with `TypeError` before any request.
   */
  expectedRevision?: number;
}

/** Page size and the cursor a page starts at. */
export interface PageOptions extends CallOptions {
  /**
   * Items per page, 1–1000 (the server's default: 100). For a listing, the size of each page
   * it fetches. Not an integer ≥ 1: `TypeError`.
   */
  limit?: number;
  /** The `nextCursor` of the previous page (a listing starts there instead of at the first page). */
  cursor?: string;
}

/** The order of a secrets listing: by name (bytes; the default), by name descending, or by last update. */
export type SecretSort = "name" | "-name" | "updatedAt" | "-updatedAt";

/** `secrets.list` / `secrets.page` filters. */
export interface SecretListOptions extends PageOptions {
  /** Only names containing this, ignoring ASCII case (1–128 of `[A-Za-z0-9_]`). */
  search?: string;
  /** `name` (default), `-name`, `updatedAt` (least recently updated first) or `-updatedAt`. Ties by name. */
  sort?: SecretSort;
}

/** `runs.list` / `runs.page` filters. */
export interface RunListOptions extends PageOptions {
  /** Only runs of this function. */
  functionId?: string;
  /** Only runs in this state. */
  status?: RunStatus;
}

/** `orchestrationRuns.list` / `orchestrationRuns.page` filters. */
export interface OrchestrationRunListOptions extends PageOptions {
  /** Only runs of this orchestration. */
  orchestrationId?: string;
  /** Only runs in this state. */
  status?: OrchestrationRunStatus;
}

/** `audit.list` / `audit.page` filters, combined with AND. */
export interface AuditListOptions extends PageOptions {
  /** Only rows of this environment (a manage key always gets its own). */
  environment?: string;
  /** Only rows by this key (`ak_…`) or by Coffer itself (`system`). */
  actor?: string;
  /** Only this action, exactly (`secret.created`, …). */
  action?: string;
  /** Only subjects matching this NATS pattern (`system.secret.>`). */
  subject?: string;
  /** Only allowed or only denied attempts. */
  result?: ResultName;
  /** Rows at or after this time. */
  since?: Date | string;
  /** Rows before this time. */
  until?: Date | string;
}

/** `apiKeys.create`'s input. */
export interface CreateApiKeyInput {
  /** A label for the key (shown in lists and the audit log). */
  name: string;
  /** `admin` (everything), `manage` (one environment's resources) or `runtime` (workers). */
  role: RoleName;
  /** Required for `manage` and `runtime`, refused for `admin`. */
  environment?: string;
}

/** A created API key: `key`, the credential itself, is shown this once. */
export type CreatedApiKey = ApiKey & { key: string };

/** A function's definition (`functions.put`), without the compare-and-set revision. */
export type PutFunctionDefinition = Omit<PutFunction, "expectedRevision">;

/** An orchestration's definition: its label and its steps. */
export interface OrchestrationDefinition {
  /** A label (1–128 characters). */
  name: string;
  /** The steps, run in this order unless a decision jumps. */
  steps: Step[];
}

/** How `runs.wait` and `orchestrationRuns.wait` poll. */
export interface WaitOptions extends CallOptions {
  /** Give up after this many milliseconds (default 30,000): rejects with an `Error`. An integer ≥ 0. */
  timeoutMs?: number;
  /** Milliseconds between polls (default 100). An integer ≥ 0. */
  intervalMs?: number;
}

/** `orchestrationRuns.wait`: what to wait for. */
export interface OrchestrationRunWaitOptions extends WaitOptions {
  /**
   * The statuses that end the wait (default: any but `running`, i.e. waiting for an
   * approval or ended).
   */
  until?: OrchestrationRunStatus[];
}

function envPath(environment: string, ...rest: string[]): string {
  return `/v1/environments/${Http.path(environment, ...rest)}`;
}

function toPage<T>(items: T[] | undefined, nextCursor: string | null | undefined): Page<T> {
  return { items: items ?? [], nextCursor: nextCursor ?? null };
}

/**
 * The options' `expectedRevision`, checked: a safe integer ≥ 0, or absent. Anything else
 * (NaN, Infinity, -1, 1.5) is a `TypeError`: JSON would turn NaN into `null`, silently
 * dropping the compare-and-set.
 */
function revision(options: RevisionOptions | undefined): number | undefined {
  return optionalInteger(options?.expectedRevision, "expectedRevision");
}

function revisionQuery(options: RevisionOptions | undefined): Query | undefined {
  const expectedRevision = revision(options);
  return expectedRevision === undefined ? undefined : { expectedRevision };
}

/** A page size: an integer ≥ 1 (the server caps it), or absent. */
function limit(options: { limit?: number } | undefined): number | undefined {
  return optionalInteger(options?.limit, "limit", 1);
}

function time(t: Date | string | undefined): string | undefined {
  return t instanceof Date ? t.toISOString() : t;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function poll<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  what: string,
  options: WaitOptions | undefined,
): Promise<T> {
  const timeoutMs = integer(options?.timeoutMs ?? 30_000, "timeoutMs");
  const intervalMs = integer(options?.intervalMs ?? 100, "intervalMs");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() >= deadline) throw new Error(`Coffer: ${what} did not finish within ${timeoutMs} ms`);
    await sleep(intervalMs, options?.signal);
  }
}

/** Environments: `GET/POST /v1/environments`, `DELETE /v1/environments/{env}`. */
export class EnvironmentsApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /** Every environment the key may see (an admin key: all; a manage key: its own). */
  async list(options?: CallOptions): Promise<Environment[]> {
    const r = await this.#http.request<EnvironmentList>("GET", "/v1/environments", { signal: options?.signal });
    return r.environments;
  }

  /**
   * Creates an environment (admin key).
   *
   * @param name `^[a-z0-9][a-z0-9-]{0,62}$`, not `admin`. One that exists: `CofferError` `environment_exists` (409).
   */
  async create(name: string, options?: CallOptions): Promise<Environment> {
    return this.#http.request<Environment>("POST", "/v1/environments", { body: { name }, signal: options?.signal });
  }

  /** Deletes an environment with its secrets, config, functions and the API keys scoped to it (admin key). */
  async delete(name: string, options?: CallOptions): Promise<void> {
    await this.#http.request<void>("DELETE", envPath(name), { signal: options?.signal });
  }
}

/**
 * Secrets: write-only values, readable metadata. There is deliberately no way to read a
 * value here: only functions' runs (the runtime plane) receive values.
 */
export class SecretsApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /**
   * Sets a secret's value (creating the secret, or a new revision of it) and returns its
   * metadata — never the value.
   *
   * @param environment the environment.
   * @param name `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
   * @param value a UTF-8 string of at most 64 KiB (413 `value_too_large` beyond).
   * @param options `expectedRevision`: write only at this revision (`0`: only if it does not
   *   exist), else `CofferError` `revision_conflict` with `currentRevision`.
   */
  async set(environment: string, name: string, value: string, options?: RevisionOptions): Promise<SecretMeta> {
    if (typeof value !== "string") throw new TypeError("secrets.set: the value must be a string");
    const body: { value: string; expectedRevision?: number } = { value };
    const expectedRevision = revision(options);
    if (expectedRevision !== undefined) body.expectedRevision = expectedRevision;
    return this.#http.request<SecretMeta>("PUT", envPath(environment, "secrets", name), { body, signal: options?.signal });
  }

  /**
   * A secret's metadata (name, revision, key version, status, times): never its value.
   * Rejects with `CofferError` `secret_not_found` (404) when it is not set.
   */
  async get(environment: string, name: string, options?: CallOptions): Promise<SecretMeta> {
    return this.#http.request<SecretMeta>("GET", envPath(environment, "secrets", name), { signal: options?.signal });
  }

  /**
   * Every secret's metadata, across all pages, as an async iterable (`for await`, or
   * `.toArray()`); `limit` is the page size.
   *
   * ```ts
   * for await (const s of client.secrets.list("production", { search: "stripe", sort: "-updatedAt" })) …
   * ```
   */
  list(environment: string, options?: SecretListOptions): Pager<SecretMeta> {
    return new Pager(async (cursor) => {
      const r = await this.page(environment, { ...options, cursor });
      return toPage(r.secrets, r.nextCursor);
    }, options?.cursor);
  }

  /** One page of secrets' metadata: pass its `nextCursor` back as `cursor` for the next (`null`: the last). */
  async page(environment: string, options?: SecretListOptions): Promise<SecretPage> {
    return this.#http.request<SecretPage>("GET", envPath(environment, "secrets"), {
      query: { limit: limit(options), cursor: options?.cursor, search: options?.search, sort: options?.sort },
      signal: options?.signal,
    });
  }

  /**
   * Deletes a secret. Not set: `CofferError` `secret_not_found` (404).
   *
   * @param options `expectedRevision`: delete only this revision, else `revision_conflict` (409).
   */
  async delete(environment: string, name: string, options?: RevisionOptions): Promise<void> {
    await this.#http.request<void>("DELETE", envPath(environment, "secrets", name), {
      query: revisionQuery(options),
      signal: options?.signal,
    });
  }

  /**
   * Sets 1–1000 secrets in one transaction (all or none). A value equal to the stored one
   * keeps its revision (`result: "unchanged"`). Returns each secret's metadata and what
   * happened to it, in the order given — never a value.
   *
   * @param secrets `[{name, value}]`, or an object `{NAME: value}`.
   */
  async import(
    environment: string,
    secrets: ImportEntry[] | Record<string, string>,
    options?: CallOptions,
  ): Promise<ImportedSecret[]> {
    const entries = Array.isArray(secrets)
      ? secrets.map(({ name, value }) => ({ name, value }))
      : Object.entries(secrets).map(([name, value]) => ({ name, value }));
    for (const e of entries) {
      if (typeof e.value !== "string") throw new TypeError(`secrets.import: the value of ${e.name} must be a string`);
    }
    const r = await this.#http.request<ImportReport>("POST", envPath(environment, "secrets"), {
      body: { secrets: entries },
      signal: options?.signal,
    });
    return r.secrets;
  }
}

/** Config: plaintext JSON entries of an environment, readable by admin and manage keys. */
export class ConfigApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /** A config entry with its value. Not set: `CofferError` `config_not_found` (404). */
  async get(environment: string, key: string, options?: CallOptions): Promise<ConfigEntry> {
    return this.#http.request<ConfigEntry>("GET", envPath(environment, "config", key), { signal: options?.signal });
  }

  /**
   * Sets a config entry to any JSON value (at most 64 KiB compact).
   *
   * @param key follows the secret-name rule `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
   * @param value any JSON value (`null` included; not `undefined`).
   * @param options `expectedRevision` as for secrets.
   */
  async set(environment: string, key: string, value: unknown, options?: RevisionOptions): Promise<ConfigEntry> {
    if (value === undefined) throw new TypeError("config.set: the value must be a JSON value, not undefined");
    const body: { value: unknown; expectedRevision?: number } = { value };
    const expectedRevision = revision(options);
    if (expectedRevision !== undefined) body.expectedRevision = expectedRevision;
    return this.#http.request<ConfigEntry>("PUT", envPath(environment, "config", key), { body, signal: options?.signal });
  }

  /** Every config entry (key order), across all pages, as an async iterable; `limit` is the page size. */
  list(environment: string, options?: PageOptions): Pager<ConfigEntry> {
    return new Pager(async (cursor) => {
      const r = await this.page(environment, { ...options, cursor });
      return toPage(r.config, r.nextCursor);
    }, options?.cursor);
  }

  /** One page of config entries. */
  async page(environment: string, options?: PageOptions): Promise<ConfigPage> {
    return this.#http.request<ConfigPage>("GET", envPath(environment, "config"), {
      query: { limit: limit(options), cursor: options?.cursor },
      signal: options?.signal,
    });
  }

  /** Deletes a config entry (`expectedRevision`: only at this revision). */
  async delete(environment: string, key: string, options?: RevisionOptions): Promise<void> {
    await this.#http.request<void>("DELETE", envPath(environment, "config", key), {
      query: revisionQuery(options),
      signal: options?.signal,
    });
  }
}

/** API keys (admin key): `ck_<env or "admin">_…`, shown once, stored hashed. */
export class ApiKeysApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /**
   * Creates an API key. The result's `key` is the credential: it is shown this once and
   * cannot be read again — keep it somewhere safe.
   */
  async create(input: CreateApiKeyInput, options?: CallOptions): Promise<CreatedApiKey> {
    const body: { name: string; role: RoleName; environment?: string } = { name: input.name, role: input.role };
    if (input.environment !== undefined) body.environment = input.environment;
    return this.#http.request<CreatedApiKey>("POST", "/v1/api-keys", { body, signal: options?.signal });
  }

  /** Every API key (never the keys themselves). */
  async list(options?: CallOptions): Promise<ApiKey[]> {
    const r = await this.#http.request<ApiKeyList>("GET", "/v1/api-keys", { signal: options?.signal });
    return r.apiKeys;
  }

  /**
   * Revokes (deletes) an API key: its next request gets 401. The last admin key cannot be
   * revoked (`CofferError` `last_admin_key`, 409).
   *
   * @param id the key's id (`ak_…`), not the key.
   */
  async revoke(id: string, options?: CallOptions): Promise<void> {
    await this.#http.request<void>("DELETE", `/v1/api-keys/${Http.path(id)}`, { signal: options?.signal });
  }
}

/** Functions: what runs with which declared secrets, on which events, push or pull. */
export class FunctionsApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /**
   * Registers or updates a function. On first registration the result carries its
   * `signingSecret` (push deliveries are signed with it), shown this once; an update keeps it.
   *
   * @param id `^[a-z0-9][a-z0-9_-]{0,62}$`.
   * @param definition `{mode, triggers?, secrets?, config?, url?, timeoutMs?, retries?, concurrency?}`.
   * @param options `expectedRevision`: `0` to register only if new, `n` to update only revision n.
   */
  async put(environment: string, id: string, definition: PutFunctionDefinition, options?: RevisionOptions): Promise<FunctionInfo> {
    const expectedRevision = revision(options);
    return this.#http.request<FunctionInfo>("PUT", envPath(environment, "functions", id), {
      body: expectedRevision === undefined ? definition : { ...definition, expectedRevision },
      signal: options?.signal,
    });
  }

  /** A function (never its signing secret). Unknown: `CofferError` `function_not_found` (404). */
  async get(environment: string, id: string, options?: CallOptions): Promise<FunctionInfo> {
    return this.#http.request<FunctionInfo>("GET", envPath(environment, "functions", id), { signal: options?.signal });
  }

  /** Every function (id order), across all pages, as an async iterable; `limit` is the page size. */
  list(environment: string, options?: PageOptions): Pager<FunctionInfo> {
    return new Pager(async (cursor) => {
      const r = await this.page(environment, { ...options, cursor });
      return toPage(r.functions, r.nextCursor);
    }, options?.cursor);
  }

  /** One page of functions. */
  async page(environment: string, options?: PageOptions): Promise<FunctionList> {
    return this.#http.request<FunctionList>("GET", envPath(environment, "functions"), {
      query: { limit: limit(options), cursor: options?.cursor },
      signal: options?.signal,
    });
  }

  /** Deletes a function; its runs stay (a queued one fails when it comes up). */
  async delete(environment: string, id: string, options?: RevisionOptions): Promise<void> {
    await this.#http.request<void>("DELETE", envPath(environment, "functions", id), {
      query: revisionQuery(options),
      signal: options?.signal,
    });
  }

  /**
   * Replaces the function's signing secret; the result carries the new `signingSecret`
   * (shown this once). Deliveries are signed with the old one too until
   * `previousSigningSecretUntil`.
   *
   * @param options `graceMs`: how long the old secret keeps signing (default one day; `0`: drop it
   *   now; at most 30 days); not an integer ≥ 0: `TypeError`.
   */
  async rotateSigningSecret(
    environment: string,
    id: string,
    options?: CallOptions & { graceMs?: number },
  ): Promise<FunctionInfo> {
    return this.#http.request<FunctionInfo>("POST", envPath(environment, "functions", id, "signing-secret"), {
      body: options?.graceMs === undefined ? {} : { graceMs: integer(options.graceMs, "graceMs") },
      signal: options?.signal,
    });
  }
}

/** Events: what starts functions' runs. */
export class EventsApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /**
   * Sends an event: starts one run of every function with a matching trigger, and returns
   * their `{id, functionId}`.
   *
   * @param name dot-separated tokens (`order.created`).
   * @param data any JSON, handed to each run as `event.data`.
   * @param options `idempotencyKey`: sending the same key again starts nothing and answers the first send's runs.
   */
  async send(
    environment: string,
    name: string,
    data?: unknown,
    options?: CallOptions & { idempotencyKey?: string },
  ): Promise<EventAccepted> {
    const body: { name: string; data?: unknown } = { name };
    if (data !== undefined) body.data = data;
    const headers: Record<string, string> = {};
    if (options?.idempotencyKey !== undefined) headers["idempotency-key"] = options.idempotencyKey;
    return this.#http.request<EventAccepted>("POST", envPath(environment, "events"), { body, headers, signal: options?.signal });
  }
}

const RUN_ENDED: readonly RunStatus[] = ["succeeded", "failed"];

/** Function runs (their output and error redacted of every resolved secret). */
export class RunsApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /** A run. Unknown: `CofferError` `run_not_found` (404). */
  async get(environment: string, id: string, options?: CallOptions): Promise<Run> {
    return this.#http.request<Run>("GET", envPath(environment, "runs", id), { signal: options?.signal });
  }

  /** Every run (newest first), across all pages, as an async iterable; filter by `functionId`, `status`. */
  list(environment: string, options?: RunListOptions): Pager<Run> {
    return new Pager(async (cursor) => {
      const r = await this.page(environment, { ...options, cursor });
      return toPage(r.runs, r.nextCursor);
    }, options?.cursor);
  }

  /** One page of runs. */
  async page(environment: string, options?: RunListOptions): Promise<RunList> {
    return this.#http.request<RunList>("GET", envPath(environment, "runs"), {
      query: { functionId: options?.functionId, status: options?.status, limit: limit(options), cursor: options?.cursor },
      signal: options?.signal,
    });
  }

  /** Polls a run until it has ended (`succeeded` or `failed`) and returns it. */
  async wait(environment: string, id: string, options?: WaitOptions): Promise<Run> {
    return poll(() => this.get(environment, id, options), (r) => RUN_ENDED.includes(r.status), `run ${id}`, options);
  }
}

/**
 * Orchestrations: ordered steps (compute, approval, delay, decision). A compute step's
 * `encryptedParams` are sealed at rest and masked on every read (see `encrypt`, `secretRef`,
 * `keep` and `update`).
 */
export class OrchestrationsApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /**
   * Creates an orchestration; the result is masked (every encrypted param reads
   * `{value: "********", encrypted: true}`). A definition the server refuses is
   * `CofferError` 422 whose message names the step.
   *
   * ```ts
   * await client.orchestrations.create("prod", { name: "billing", steps: [
   *   { id: "charge", type: "compute", functionId: "billing",
   *     encryptedParams: { API_TOKEN: encrypt(token), STRIPE: secretRef("STRIPE_KEY") } },
   *   { id: "review", type: "approval" },
   * ] });
   * ```
   */
  async create(environment: string, definition: OrchestrationDefinition, options?: CallOptions): Promise<Orchestration> {
    return this.#http.request<Orchestration>("POST", envPath(environment, "orchestrations"), {
      body: { name: definition.name, steps: definition.steps },
      signal: options?.signal,
    });
  }

  /** An orchestration, masked. Unknown: `CofferError` `orchestration_not_found` (404). */
  async get(environment: string, id: string, options?: CallOptions): Promise<Orchestration> {
    return this.#http.request<Orchestration>("GET", envPath(environment, "orchestrations", id), { signal: options?.signal });
  }

  /** Every orchestration (creation order), masked, across all pages, as an async iterable. */
  list(environment: string, options?: PageOptions): Pager<Orchestration> {
    return new Pager(async (cursor) => {
      const r = await this.page(environment, { ...options, cursor });
      return toPage(r.orchestrations, r.nextCursor);
    }, options?.cursor);
  }

  /** One page of orchestrations. */
  async page(environment: string, options?: PageOptions): Promise<OrchestrationList> {
    return this.#http.request<OrchestrationList>("GET", envPath(environment, "orchestrations"), {
      query: { limit: limit(options), cursor: options?.cursor },
      signal: options?.signal,
    });
  }

  /**
   * Replaces an orchestration's definition (`name` and `steps`, the whole of it). Per
   * encrypted param of a step:
   *
   * - sent back masked, `{value: "********", encrypted: true}` (as `get` shows it, or
   *   `keep()`): the stored value is **kept**, byte for byte;
   * - `{value, encrypt: true}` (`encrypt(value)`): sealed **anew** with the new value;
   * - `{value, encrypt: false}` (`plain(value)`) or `{secretRef}` (`secretRef(name)`): plain, or a reference;
   * - **omitted**: **removed**.
   *
   * So the result of `get` can be passed back unchanged (only its `name` and `steps` are
   * sent), with just the changes made. A masked param on a renamed step, or on a step that
   * now runs another function, is refused (422): send the value again there.
   *
   * @param definition `{name, steps}`; an `Orchestration` read with `get` will do.
   * @param options `expectedRevision`: apply only at this revision (pass the read's
   *   `revision` to be sure the kept params are the ones read), else `revision_conflict` (409).
   */
  async update(
    environment: string,
    id: string,
    definition: OrchestrationDefinition,
    options?: RevisionOptions,
  ): Promise<Orchestration> {
    const body: { name: string; steps: Step[]; expectedRevision?: number } = { name: definition.name, steps: definition.steps };
    const expectedRevision = revision(options);
    if (expectedRevision !== undefined) body.expectedRevision = expectedRevision;
    return this.#http.request<Orchestration>("PUT", envPath(environment, "orchestrations", id), { body, signal: options?.signal });
  }

  /** Deletes an orchestration; its runs' history stays (a run still going fails at its next compute step). */
  async delete(environment: string, id: string, options?: RevisionOptions): Promise<void> {
    await this.#http.request<void>("DELETE", envPath(environment, "orchestrations", id), {
      query: revisionQuery(options),
      signal: options?.signal,
    });
  }

  /**
   * Starts a run of the orchestration and returns it (202). Follow it with
   * `client.orchestrationRuns.get/wait`, decide its approval steps with `approve`/`reject`.
   *
   * @param params the run's params: every compute step's `triggerParams` start from them,
   *   and decisions can test them (`params.a.b`). Not secret: shown on every read.
   */
  async run(environment: string, id: string, params?: Record<string, unknown>, options?: CallOptions): Promise<OrchestrationRun> {
    return this.#http.request<OrchestrationRun>("POST", envPath(environment, "orchestrations", id, "runs"), {
      body: params === undefined ? {} : { params },
      signal: options?.signal,
    });
  }
}

/** Orchestration runs: their state, and the decisions of their approval steps. */
export class OrchestrationRunsApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /** An orchestration run. Unknown: `CofferError` `orchestration_run_not_found` (404). */
  async get(environment: string, runId: string, options?: CallOptions): Promise<OrchestrationRun> {
    return this.#http.request<OrchestrationRun>("GET", envPath(environment, "orchestration-runs", runId), { signal: options?.signal });
  }

  /** Every orchestration run (newest first), across all pages; filter by `orchestrationId`, `status`. */
  list(environment: string, options?: OrchestrationRunListOptions): Pager<OrchestrationRun> {
    return new Pager(async (cursor) => {
      const r = await this.page(environment, { ...options, cursor });
      return toPage(r.runs, r.nextCursor);
    }, options?.cursor);
  }

  /** One page of orchestration runs. */
  async page(environment: string, options?: OrchestrationRunListOptions): Promise<OrchestrationRunList> {
    return this.#http.request<OrchestrationRunList>("GET", envPath(environment, "orchestration-runs"), {
      query: {
        orchestrationId: options?.orchestrationId,
        status: options?.status,
        limit: limit(options),
        cursor: options?.cursor,
      },
      signal: options?.signal,
    });
  }

  /**
   * Approves the approval step the run waits at: it goes on. The decision is recorded at
   * once (a second decision is `not_waiting`) and the engine applies it right after, so the
   * run answered may still read `waiting_approval`: follow it with `wait`. A run that does
   * not wait for an approval: `CofferError` `not_waiting` (409).
   *
   * @param options `reason`: kept in the step's output and the audit log (at most 1,024 characters).
   */
  async approve(environment: string, runId: string, options?: CallOptions & { reason?: string }): Promise<OrchestrationRun> {
    return this.#decide("approve", environment, runId, options);
  }

  /**
   * Rejects the approval step the run waits at: the run ends `rejected`. As with `approve`,
   * the decision is recorded at once and applied right after (the run answered may still
   * read `waiting_approval`; `wait` for `rejected`). Not waiting: `not_waiting` (409).
   *
   * @param options `reason`: kept in the step's output and the audit log.
   */
  async reject(environment: string, runId: string, options?: CallOptions & { reason?: string }): Promise<OrchestrationRun> {
    return this.#decide("reject", environment, runId, options);
  }

  /**
   * Polls a run until its status is one of `until` (default: anything but `running`: it
   * waits for an approval, or it has ended) and returns it.
   */
  async wait(environment: string, runId: string, options?: OrchestrationRunWaitOptions): Promise<OrchestrationRun> {
    const until = options?.until;
    return poll(
      () => this.get(environment, runId, options),
      (r) => (until ? until.includes(r.status) : r.status !== "running"),
      `orchestration run ${runId}`,
      options,
    );
  }

  async #decide(
    decision: "approve" | "reject",
    environment: string,
    runId: string,
    options: (CallOptions & { reason?: string }) | undefined,
  ): Promise<OrchestrationRun> {
    return this.#http.request<OrchestrationRun>("POST", envPath(environment, "orchestration-runs", runId, decision), {
      body: options?.reason === undefined ? {} : { reason: options.reason },
      signal: options?.signal,
    });
  }
}

/** The audit log: hash-chained rows of every change and denial (never a value). */
export class AuditApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /**
   * Every audit row matching the filters (`seq` order), across all pages, as an async
   * iterable. A page may be empty and not the last: the iteration follows cursors until the
   * end. `limit` is the page size.
   */
  list(options?: AuditListOptions): Pager<AuditEntry> {
    return new Pager(async (cursor) => {
      const r = await this.page({ ...options, cursor });
      return toPage(r.entries, r.nextCursor);
    }, options?.cursor);
  }

  /** One page of audit rows. */
  async page(options?: AuditListOptions): Promise<AuditPage> {
    return this.#http.request<AuditPage>("GET", "/v1/audit", {
      query: {
        environment: options?.environment,
        actor: options?.actor,
        action: options?.action,
        subject: options?.subject,
        result: options?.result,
        since: time(options?.since),
        until: time(options?.until),
        limit: limit(options),
        cursor: options?.cursor,
      },
      signal: options?.signal,
    });
  }

  /** Checks the whole hash chain (admin key): `ok`, or the first broken row. */
  async verify(options?: CallOptions): Promise<AuditVerification> {
    return this.#http.request<AuditVerification>("GET", "/v1/audit/verify", { signal: options?.signal });
  }
}

/** Encryption keys (admin key): never key material. */
export class KeysApi {
  readonly #http: Http;
  /** @internal */
  constructor(http: Http) {
    this.#http = http;
  }

  /** Which key versions exist and what each one seals. */
  async status(options?: CallOptions): Promise<KeyStatus> {
    return this.#http.request<KeyStatus>("GET", "/v1/keys", { signal: options?.signal });
  }

  /**
   * Re-encrypts values, signing secrets and orchestration params to the current key version:
   * everything (no `limit`), or one batch (send `nextCursor` back as `cursor` to continue).
   */
  async rewrap(options?: CallOptions & { cursor?: string; limit?: number }): Promise<RewrapReport> {
    return this.#http.request<RewrapReport>("POST", "/v1/keys/rewrap", {
      body: { cursor: options?.cursor, limit: limit(options) },
      signal: options?.signal,
    });
  }

  /** Opens one batch of stored values (and then signing secrets, params) to find unreadable ones; changes none. */
  async verify(options?: CallOptions & { cursor?: string; limit?: number }): Promise<VerifyReport> {
    return this.#http.request<VerifyReport>("POST", "/v1/keys/verify", {
      body: { cursor: options?.cursor, limit: limit(options) },
      signal: options?.signal,
    });
  }
}

/**
 * A client of one Coffer server, with one API key.
 *
 * ```ts
 * const coffer = new Coffer({ address: "http://127.0.0.1:8720", apiKey: process.env.COFFER_API_KEY! });
 * await coffer.secrets.set("production", "STRIPE_KEY", value);
 * for await (const s of coffer.secrets.list("production")) console.log(s.name, s.revision);
 * ```
 */
export class Coffer {
  /** The transport (used by `register` and `worker` too). */
  readonly http: Http;
  /** Environments. */
  readonly environments: EnvironmentsApi;
  /** Secrets: set, list, delete — metadata only, never a value. */
  readonly secrets: SecretsApi;
  /** Plaintext config entries. */
  readonly config: ConfigApi;
  /** API keys. */
  readonly apiKeys: ApiKeysApi;
  /** Functions. */
  readonly functions: FunctionsApi;
  /** Events that start functions' runs. */
  readonly events: EventsApi;
  /** Function runs. */
  readonly runs: RunsApi;
  /** Orchestration definitions. */
  readonly orchestrations: OrchestrationsApi;
  /** Orchestration runs, approvals. */
  readonly orchestrationRuns: OrchestrationRunsApi;
  /** The audit log. */
  readonly audit: AuditApi;
  /** Encryption key lifecycle. */
  readonly keys: KeysApi;

  constructor(options: CofferOptions) {
    this.http = new Http(options);
    this.environments = new EnvironmentsApi(this.http);
    this.secrets = new SecretsApi(this.http);
    this.config = new ConfigApi(this.http);
    this.apiKeys = new ApiKeysApi(this.http);
    this.functions = new FunctionsApi(this.http);
    this.events = new EventsApi(this.http);
    this.runs = new RunsApi(this.http);
    this.orchestrations = new OrchestrationsApi(this.http);
    this.orchestrationRuns = new OrchestrationRunsApi(this.http);
    this.audit = new AuditApi(this.http);
    this.keys = new KeysApi(this.http);
  }

  /** The key this client uses: its id, role and environment. A revoked key: `CofferError` 401 `unauthorized`. */
  async whoami(options?: CallOptions): Promise<Caller> {
    return this.http.request<Caller>("GET", "/v1/whoami", { signal: options?.signal });
  }

  /** The server's version, backend and encryption state (no key needed). */
  async status(options?: CallOptions): Promise<Status> {
    return this.http.request<Status>("GET", "/v1/status", { signal: options?.signal });
  }

  /** Never the key. */
  toJSON(): { address: string } {
    return this.http.toJSON();
  }
}
