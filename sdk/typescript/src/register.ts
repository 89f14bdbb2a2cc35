// `register(client, functions, { environment, url })`: upserts each function's definition
// (`PUT /v1/environments/{env}/functions/{id}`), exactly as the code declares it.

import type { Coffer } from "./client.js";
import { Http } from "./http.js";
import type { CofferFunction } from "./functions.js";

/** Options of {@link register}. */
export interface RegisterOptions {
  /** The environment; default: the key's own (a manage key's), read from `GET /v1/whoami`. */
  environment?: string;
  /**
   * Push functions: the URL Coffer POSTs their runs to (where `serve()` is mounted), or a
   * function of the function's id. Required when a push function is registered.
   */
  url?: string | ((functionId: string) => string);
}

/** What one registration answered. */
export interface Registration {
  /** The function's id. */
  id: string;
  /** `true` when this call registered it (201), `false` when it updated it (200). */
  created: boolean;
  /** The function's revision after this call. */
  revision: number;
  /**
   * The signing secret (`cs_…`), on the first registration only: keep it for `serve()`.
   * An update keeps the secret and does not show it again.
   */
  signingSecret?: string;
}

/**
 * `register()` failed part of the way: `registrations` holds the functions registered before
 * the failure — with their signing secrets, which a first registration shows only once, so
 * store them — and `cause` the error that stopped it (a `CofferError`, or a `TypeError` for a
 * push function without a url). The functions after the failing one were not attempted.
 */
export class RegisterError extends Error {
  override readonly name: string = "RegisterError";
  /** The registrations that succeeded before the failure, in order (signing secrets included). */
  readonly registrations: Registration[];
  /** The id of the function whose registration failed. */
  readonly functionId: string;

  constructor(functionId: string, registrations: Registration[], cause: unknown) {
    const why = cause instanceof Error ? cause.message : "an unknown error";
    super(`registering function ${functionId} failed (${registrations.length} registered before it): ${why}`, { cause });
    this.functionId = functionId;
    this.registrations = registrations;
  }

  /** The registrations and the failure; never a signing secret. */
  toJSON(): { name: string; message: string; functionId: string; registered: string[] } {
    return { name: this.name, message: this.message, functionId: this.functionId, registered: this.registrations.map((r) => r.id) };
  }
}

interface FunctionRecord {
  id: string;
  revision: number;
  signingSecret?: string;
}

/**
 * Registers (creates or updates) each function's definition in the environment: triggers,
 * secrets, config keys, mode, and for push functions `url` and the optional `timeoutMs`,
 * `retries` and `concurrency`. Needs an admin or manage key. An update replaces the whole
 * definition (what the code no longer declares is no longer declared) and keeps the
 * signing secret; only a first registration's answer carries it.
 *
 * The functions are registered one by one, in order. If one fails, it rejects with
 * {@link RegisterError}, whose `registrations` are those registered before it — including
 * their signing secrets, shown this once — and whose `cause` is the failure. (Failing to
 * read the key's environment, before any registration, rejects with that error itself.)
 */
export async function register(
  client: Coffer,
  functions: readonly CofferFunction[],
  options: RegisterOptions = {},
): Promise<Registration[]> {
  const environment = options.environment ?? (await keyEnvironment(client, "register"));
  const out: Registration[] = [];
  for (const fn of functions) {
    try {
      out.push(await registerOne(client, environment, fn, options));
    } catch (e) {
      throw new RegisterError(fn.id, out, e);
    }
  }
  return out;
}

async function registerOne(
  client: Coffer,
  environment: string,
  fn: CofferFunction,
  options: RegisterOptions,
): Promise<Registration> {
  const d = fn.definition;
  const body: Record<string, unknown> = {
    triggers: (d.triggers ?? []).map((t) => (typeof t === "string" ? { event: t } : { event: t.event })),
    secrets: [...(d.secrets ?? [])],
    config: [...(d.config ?? [])],
    mode: d.mode,
  };
  if (d.mode === "push") {
    const url = typeof options.url === "function" ? options.url(fn.id) : options.url;
    if (!url) throw new TypeError(`register: push function ${fn.id} needs a url (where serve() is mounted)`);
    body.url = url;
    if (d.timeoutMs !== undefined) body.timeoutMs = d.timeoutMs;
    if (d.retries !== undefined) body.retries = d.retries;
    if (d.concurrency !== undefined) body.concurrency = d.concurrency;
  }
  const { status, body: record } = await client.http.requestWithStatus<FunctionRecord>(
    "PUT",
    `/v1/environments/${Http.path(environment, "functions", fn.id)}`,
    { body },
  );
  // 201: registered now; 200: updated (an update never shows the signing secret).
  const registration: Registration = { id: fn.id, created: status === 201, revision: record.revision };
  if (record.signingSecret !== undefined) registration.signingSecret = record.signingSecret;
  return registration;
}

/** The environment a scoped key belongs to (`GET /v1/whoami`). @internal */
export async function keyEnvironment(client: Coffer, who: string): Promise<string> {
  const me = await client.http.request<{ environment: string | null }>("GET", "/v1/whoami");
  if (!me?.environment) {
    throw new TypeError(`${who}: this key has no environment of its own (an admin key): pass { environment }`);
  }
  return me.environment;
}
