// The HTTP core every part of the SDK goes through: one `fetch` per call, the bearer key,
// JSON in and out, and API errors as `CofferError`. Nothing here logs; the key is kept in
// a private field and never appears in an error or in `JSON.stringify(client)`.

import { CofferError } from "./errors.js";

/** How to reach Coffer. */
export interface CofferOptions {
  /** The server's base address, e.g. `http://127.0.0.1:8720`. */
  address: string;
  /** An API key (`ck_…`): admin or manage for the management client, runtime for workers. */
  apiKey: string;
  /** A `fetch` to use instead of the global one (tests, proxies, edge runtimes). */
  fetch?: typeof fetch;
  /** Milliseconds before a request is abandoned (default 30,000; a long poll adds its wait). */
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
    this.#timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** `path` segments, each percent-encoded ("." and ".." refused). */
  static path(...segments: string[]): string {
    return segments
      .map((s) => {
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
    const timeout = AbortSignal.timeout(this.#timeoutMs + (options.extraTimeoutMs ?? 0));
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await this.#fetch(url, { method, headers, body, signal, redirect: "error" });
    } catch (e) {
      if (options.signal?.aborted) throw e;
      const why = timeout.aborted ? "timed out" : "could not be reached";
      throw new CofferError(0, "unreachable", `Coffer at ${this.address} ${why}`);
    }
    if (response.status === 204) {
      await response.body?.cancel();
      return undefined as T;
    }
    const text = await response.text();
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
      );
    }
    return parsed as T;
  }

  /** Never the key. */
  toJSON(): { address: string } {
    return { address: this.address };
  }
}
