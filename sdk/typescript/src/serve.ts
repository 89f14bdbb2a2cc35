// The push endpoint: `serve({ functions, signingSecrets })` → `(Request) => Promise<Response>`,
// a standard fetch handler (Deno.serve, Bun.serve, Hono, edge runtimes; Node's http and
// Express through `toNodeListener`). It verifies `Coffer-Signature` before anything else.

import { SignatureError } from "./errors.js";
import {
  type CofferFunction,
  PermanentError,
  contextFor,
  errorMessage,
  isJob,
  outputJson,
} from "./functions.js";
import { DEFAULT_TOLERANCE_SECONDS, SIGNATURE_HEADER, checkTimestamp, matchSignature, unixNow } from "./signature.js";
import { finite, integer } from "./validate.js";

/**
 * The signing secrets, per function id: one secret, or several during a rotation's grace
 * period (the new one and the old one). An object (read at each request, so it may be
 * filled in after `register()` answers) or a lookup function.
 */
export type SigningSecrets =
  | Readonly<Record<string, string | readonly string[] | undefined>>
  | ((functionId: string) => string | readonly string[] | undefined);

/** Options of {@link serve}. */
export interface ServeOptions {
  /** The push functions this endpoint runs (routed by the job's `functionId`). */
  functions: readonly CofferFunction[];
  /** Each function's signing secret(s), as `register()` or a rotation answered them. */
  signingSecrets: SigningSecrets;
  /**
   * How far a delivery's timestamp may be from this machine's clock, either way (default
   * 300 s; a finite number ≥ 0, else `serve()` throws `TypeError`).
   */
  toleranceSeconds?: number;
  /**
   * The largest body read, in bytes (default {@link DEFAULT_MAX_BODY_BYTES}, 4 MiB; an
   * integer ≥ 0, else `serve()` throws `TypeError`). The body is **buffered whole before
   * its signature is verified** (the signature covers the raw bytes), so each request in
   * flight may hold this much memory — also a forged one with a fresh timestamp. Coffer
   * does not cap a job below what its parts allow (about 14 MiB at the very most: 64
   * secrets, 64 config values and 64 encrypted params or secret references of up to 64 KiB
   * each, run and step params, event data), and an answer of 413 fails the run without a
   * retry: raise it (`16 * 1024 * 1024`) for functions that declare many large values.
   */
  maxBodyBytes?: number;
  /**
   * Answer a handler's failure with a generic message instead of the error's own (default
   * `false`: the message becomes the run's error, which Coffer redacts before storing it).
   */
  hideErrorMessages?: boolean;
}

/** A fetch-style request handler. */
export type FetchHandler = (request: Request) => Promise<Response>;

/**
 * The default largest body `serve()` reads: 4 MiB — room for some 60 values of the largest
 * size (64 KiB), far beyond a usual job of a few KiB, while a flood of forged requests holds
 * at most this much memory per request. Coffer's own maximum job is
 * larger (about 14 MiB, see {@link ServeOptions.maxBodyBytes}): raise it where needed.
 */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

/**
 * The endpoint Coffer POSTs a push function's runs to. For each request it:
 *
 * 1. answers **405** to anything but `POST`;
 * 2. refuses a missing, malformed, stale or future `Coffer-Signature` with **401** — before
 *    reading the body;
 * 3. reads (buffers) the body, at most `maxBodyBytes` (**413** beyond, at once when the
 *    declared `Content-Length` is over it);
 * 4. verifies the signature over the raw body against every configured signing secret
 *    (Web Crypto HMAC-SHA256, one MAC per distinct secret, compared in constant time with
 *    at most 2 `v1`) — **401** when none matches, and nothing is parsed or run;
 * 5. parses the job (**400** if it is not one), finds its function (**404** if not served
 *    here) and checks that a secret **of that function** signed it (**401** otherwise);
 * 6. runs the handler: **200** with its output as the JSON body (the run's output), **422**
 *    for a {@link PermanentError} (Coffer does not retry), **500** for any other error
 *    (Coffer retries while the function's retries last). Error bodies are
 *    `{"error": {"code", "message"}}`, as Coffer's own.
 *
 * Delivery is at least once: a handler de-duplicates on `run.id`.
 */
export function serve(options: ServeOptions): FetchHandler {
  if (!options || !Array.isArray(options.functions)) throw new TypeError("serve: functions is required");
  if (options.signingSecrets === undefined || options.signingSecrets === null) {
    throw new TypeError("serve: signingSecrets is required");
  }
  const functions = new Map<string, CofferFunction>();
  for (const fn of options.functions) {
    if (functions.has(fn.id)) throw new TypeError(`serve: function ${fn.id} is given twice`);
    functions.set(fn.id, fn);
  }
  const tolerance = finite(options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS, "serve: toleranceSeconds", 0);
  const maxBody = integer(options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES, "serve: maxBodyBytes");
  const lookup = options.signingSecrets;
  const secretsOf = (id: string): readonly string[] => {
    const found = typeof lookup === "function" ? lookup(id) : Object.hasOwn(lookup, id) ? lookup[id] : undefined;
    if (found === undefined) return [];
    return (typeof found === "string" ? [found] : found).filter((s) => typeof s === "string" && s !== "");
  };

  return async (request: Request): Promise<Response> => {
    if (request.method !== "POST") {
      await request.body?.cancel().catch(() => undefined);
      return error(405, "method_not_allowed", "deliveries are POSTed", { allow: "POST" });
    }
    const header = request.headers.get(SIGNATURE_HEADER);
    const now = unixNow();
    try {
      checkTimestamp(header, tolerance, now);
    } catch (e) {
      await request.body?.cancel().catch(() => undefined);
      if (e instanceof SignatureError) return error(401, "invalid_signature", e.message);
      throw e;
    }

    const body = await readBody(request, maxBody);
    if (body === "too_large") return error(413, "body_too_large", `the body is over ${maxBody} bytes`);
    if (body === "unreadable") return error(400, "malformed_body", "the body could not be read");

    // Every function's secrets at once, so the job is verified before it is parsed.
    const owners: string[] = [];
    const secrets: string[] = [];
    for (const id of functions.keys()) {
      for (const secret of secretsOf(id)) {
        owners.push(id);
        secrets.push(secret);
      }
    }
    let matched: boolean[];
    try {
      matched = await matchSignature(header, body, secrets, tolerance, now);
    } catch (e) {
      if (e instanceof SignatureError) return error(401, "invalid_signature", e.message);
      throw e;
    }
    const signedBy = new Set(owners.filter((_, i) => matched[i]));
    if (signedBy.size === 0) {
      return error(401, "invalid_signature", "no Coffer-Signature matches the signing secret");
    }

    let job: unknown;
    try {
      job = JSON.parse(new TextDecoder().decode(body));
    } catch {
      // The parser's message could quote the body: say what, not where.
      return error(400, "invalid_body", "the body is not JSON");
    }
    if (!isJob(job)) return error(400, "invalid_body", "the body is not a Coffer job (runId, functionId, attempt, event)");
    const fn = functions.get(job.functionId);
    if (!fn) return error(404, "function_not_found", `no handler for function ${job.functionId} here`);
    if (!signedBy.has(fn.id)) {
      return error(401, "invalid_signature", `no Coffer-Signature matches the signing secret of function ${fn.id}`);
    }

    let output: unknown;
    try {
      output = await fn.handler(contextFor(fn, job, request.signal));
    } catch (e) {
      const message = options.hideErrorMessages ? "the handler failed" : errorMessage(e);
      return error(e instanceof PermanentError ? 422 : 500, "handler_failed", message);
    }
    const json = outputJson(output);
    if (json === undefined) return error(500, "handler_failed", "the handler's output could not be encoded as JSON");
    return new Response(json, { status: 200, headers: { "content-type": "application/json" } });
  };
}

/** Reads at most `max` bytes of the body. */
async function readBody(request: Request, max: number): Promise<Uint8Array | "too_large" | "unreadable"> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > max) {
    await request.body?.cancel().catch(() => undefined);
    return "too_large";
  }
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > max) {
        await reader.cancel().catch(() => undefined);
        return "too_large";
      }
      chunks.push(value);
    }
  } catch {
    return "unreadable";
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}

function error(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}
