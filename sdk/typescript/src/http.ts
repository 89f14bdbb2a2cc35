// The HTTP core every part of the SDK goes through: one `fetch` per call, the bearer key,
// JSON in and out, and API errors as `CofferError`. Nothing here logs; the key is kept in
// a private field and never appears in an error or in `JSON.stringify(client)`.

import { CofferError } from "./errors.js";
import { integer } from "./validate.js";

/** How to reach Coffer. */
export interface CofferOptions {
  /** The server's base address, e.g. `http://127.0.0.1:8720`. */
  address: string;
  /** An API key (`ck_…`): admin or manage for the management client, runtime for workers. */
  apiKey: string;
  /** A `fetch` to use instead of the global one (tests, proxies, edge runtimes). */
  fetch?: typeof fetch;
  /**
   * Milliseconds before a request is abandoned (default 30,000; a long poll adds its wait).
   * A non-negative integer: anything else is a `TypeError`.
   */
  timeoutMs?: number;
}

/** Query parameters: undefined values are left out. */
export type Query = Record<string, string | number | boolean | undefined>;

/** One request. */
export interface RequestOptions {
  query?: Query;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Extra milliseconds on top of the client's timeout (a long poll's wait). */
  extraTimeoutMs?: number;
  /** This request's own timeout in milliseconds, instead of the client's (a heartbeat's, tied to its lease). */
  timeoutMs?: number;
}

/** An answer: its HTTP status and its parsed JSON body (`undefined` for 204 or an empty body). */
export interface Answer<T> {
  status: number;
  body: T;
}

/** The transport: shared by the management client, `register` and `worker`. */
export class Http {
  readonly address: string;
  readonly #apiKey: string;
  readonly #fetch: typeof fetch;
  readonly #timeoutMs: number;

  constructor(options: CofferOptions) {
    if (!options?.address) throw new TypeError("Coffer: address is required");
    if (!options.apiKey) throw new TypeError("Coffer: apiKey is required");
    this.address = options.address.replace(/\/+$/, "");
    this.#apiKey = options.apiKey;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#timeoutMs = integer(options.timeoutMs ?? 30_000, "Coffer: timeoutMs");
  }

  /**
   * `path` segments, each percent-encoded. Anything but a non-empty string (`undefined`,
   * a number, …), `.` and `..` is a `TypeError`: a missing name must not address another
   * resource (`undefined` would otherwise become the secret named "undefined").
   */
  static path(...segments: string[]): string {
    return segments
      .map((s: unknown) => {
        if (typeof s !== "string") throw new TypeError(`not a path segment: a ${s === null ? "null" : typeof s}, not a string`);
        if (s === "" || s === "." || s === "..") throw new TypeError(`not a path segment: "${s}"`);
        return encodeURIComponent(s);
      })
      .join("/");
  }

  /**
   * Sends one request; resolves with the parsed JSON body (`undefined` for 204), rejects
   * with `CofferError` for any error status or when the server cannot be reached.
   */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    return (await this.requestWithStatus<T>(method, path, options)).body;
  }

  /**
   * {@link request}, also telling the success status (201 created, 200 updated, …).
   * Rejects as `request` does: with `CofferError` for an error status, or status 0
   * (`unreachable`) when the server cannot be reached or its answer cannot be read.
   */
  async requestWithStatus<T>(method: string, path: string, options: RequestOptions = {}): Promise<Answer<T>> {
    const url = new URL(this.address + path);
    for (const [k, v] of Object.entries(options.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const headers: Record<string, string> = {
      accept: "application/json",
      ...options.headers,
      authorization: `Bearer ${this.#apiKey}`,
    };
    let body: string | undefined;
    if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    const timeout = AbortSignal.timeout((options.timeoutMs ?? this.#timeoutMs) + (options.extraTimeoutMs ?? 0));
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let response: Response;
    let text: string;
    try {
      response = await this.#fetch(url, { method, headers, body, signal, redirect: "error" });
      // Inside the try: a connection reset while the body is read is "unreachable" too.
      if (response.status === 204) {
        await response.body?.cancel();
        text = "";
      } else {
        text = await response.text();
      }
    } catch (e) {
      if (options.signal?.aborted) throw e;
      const why = timeout.aborted ? "timed out" : "could not be reached";
      throw new CofferError(0, "unreachable", `Coffer at ${this.address} ${why}`);
    }
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!response.ok) {
      const error = (parsed as { error?: { code?: string; message?: string; currentRevision?: number } })?.error;
      throw new CofferError(
        response.status,
        error?.code ?? `http_${response.status}`,
        error?.message ?? `${method} ${path}: HTTP ${response.status}`,
        error?.currentRevision,
        retryAfter(response.headers.get("retry-after")),
      );
    }
    return { status: response.status, body: parsed as T };
  }

  /** Never the key. */
  toJSON(): { address: string } {
    return { address: this.address };
  }
}

/** `Retry-After` as seconds: delta-seconds, or an HTTP date from now; `undefined` otherwise. */
function retryAfter(header: string | null): number | undefined {
  if (header === null) return undefined;
  const value = header.trim();
  if (/^\d{1,9}$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
