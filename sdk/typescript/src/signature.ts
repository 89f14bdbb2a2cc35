// `Coffer-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`: HMAC-SHA256 over `"{t}.{body}"`,
// keyed by the function's signing secret (its UTF-8 bytes), hex encoded. During a signing
// secret's rotation grace period a delivery carries one `v1` per secret, new first.
//
// One implementation, Web Crypto (`crypto.subtle`): it is global in Node.js ≥ 20, Deno, Bun
// and edge runtimes. Each distinct secret's MAC is computed once (`crypto.subtle.sign`) and
// compared with each `v1` by `equalMacs`, a constant-time comparison of 32 bytes. Mirrors
// `coffer_wire::signature` (Rust), except that at most 2 `v1` are read (Coffer sends 2 at
// most: the current secret's and, during a rotation's grace period, the previous one's).

import { SignatureError } from "./errors.js";
import { finite } from "./validate.js";

/** The header Coffer signs push deliveries with. */
export const SIGNATURE_HEADER = "Coffer-Signature";

/** How far a delivery's `t` may be from this machine's clock by default, either way: 300 s. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/**
 * Most `v1` entries looked at: Coffer sends one per signing secret, and a function has at
 * most two (the current one and, during a rotation's grace period, the previous one). Later
 * ones are ignored, so a forged header cannot multiply the work per request.
 */
const MAX_SIGNATURES = 2;

/** The parts of a `Coffer-Signature` header. */
export interface ParsedSignature {
  /** The signing time, unix seconds. */
  timestamp: number;
  /** Each `v1` signature (32 bytes), in the header's order. */
  signatures: Uint8Array[];
}

/** Options of {@link verifySignature}. */
export interface VerifyOptions {
  /** The `Coffer-Signature` header as received (`null`/`undefined` when absent). */
  header: string | null | undefined;
  /** The raw body, exactly as received (bytes, or the text they decode to). */
  body: string | Uint8Array;
  /** The signing secret, or several (during a rotation: the new one and the old one). */
  secrets: string | readonly string[];
  /** How far `t` may be from `now`, either way, in seconds (default 300; a finite number ≥ 0, else `TypeError`). */
  toleranceSeconds?: number;
  /** The time to check against, unix seconds (default: this machine's clock; a finite number, else `TypeError`). */
  now?: number;
}

const encoder = new TextEncoder();

/**
 * Parses a `Coffer-Signature` header: comma-separated `key=value` parts; the first `t` (a
 * non-negative integer) and the first 2 `v1` (64 hex digits each) are read, other keys are
 * ignored (other schemes and versions). Throws {@link SignatureError} when the header is
 * missing, has no `t` or no `v1`, or a part is not `key=value`.
 */
export function parseSignatureHeader(header: string | null | undefined): ParsedSignature {
  const malformed = () => new SignatureError("the Coffer-Signature header is missing or malformed");
  if (typeof header !== "string" || header.length === 0 || header.length > 4096) throw malformed();
  let timestamp: number | undefined;
  const signatures: Uint8Array[] = [];
  for (const raw of header.split(",")) {
    const part = raw.trim();
    const eq = part.indexOf("=");
    if (eq < 0) throw malformed();
    const key = part.slice(0, eq);
    const value = part.slice(eq + 1);
    if (key === "t" && timestamp === undefined) {
      if (!/^\d{1,15}$/.test(value)) throw malformed();
      timestamp = Number(value);
    } else if (key === "v1" && signatures.length < MAX_SIGNATURES) {
      const bytes = unhex(value);
      if (!bytes) throw malformed();
      signatures.push(bytes);
    }
  }
  if (timestamp === undefined || signatures.length === 0) throw malformed();
  return { timestamp, signatures };
}

/**
 * The `Coffer-Signature` header value for `body` signed at `timestamp` (unix seconds,
 * default now): one `v1` per secret, in the order given — what Coffer sends. For tests and
 * for tools that replay a delivery.
 */
export async function sign(
  secrets: string | readonly string[],
  body: string | Uint8Array,
  timestamp: number = unixNow(),
): Promise<string> {
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new TypeError("sign: timestamp must be a non-negative integer (unix seconds)");
  }
  const data = signedBytes(timestamp, body);
  let header = `t=${timestamp}`;
  for (const secret of list(secrets)) {
    const key = await hmacKey(secret);
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, data));
    header += `,v1=${hex(mac)}`;
  }
  return header;
}

/**
 * Verifies a push delivery: the header parses, its `t` is within the tolerance of `now`
 * (either way: stale and future timestamps are refused alike), and some `v1` is the
 * HMAC-SHA256 of `"{t}.{body}"` under one of `secrets`. Resolves when it is; rejects with
 * {@link SignatureError} (missing or malformed, outside the tolerance, or no match), and
 * with `TypeError` for a `toleranceSeconds` or `now` that is not a finite number.
 *
 * Each distinct secret's MAC is computed once and compared with every `v1` (at most 2) in
 * constant time, every pair without an early exit, so the time taken does not say which
 * matched.
 */
export async function verifySignature(options: VerifyOptions): Promise<void> {
  const matched = await matchSignature(
    options.header,
    options.body,
    list(options.secrets),
    options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS,
    options.now ?? unixNow(),
  );
  if (!matched.some(Boolean)) throw mismatch();
}

/**
 * For each of `secrets`, whether a `v1` of the header matches it (what `serve()` uses to
 * tell which function's secret signed a delivery). Rejects with {@link SignatureError} when
 * the header is missing, malformed or outside the tolerance; a header that matches no secret
 * resolves with all `false`.
 *
 * @internal
 */
export async function matchSignature(
  header: string | null | undefined,
  body: string | Uint8Array,
  secrets: readonly string[],
  toleranceSeconds: number,
  now: number,
): Promise<boolean[]> {
  const parsed = checkTimestamp(header, toleranceSeconds, now);
  const data = signedBytes(parsed.timestamp, body);
  // One MAC per distinct secret (a secret listed twice, or shared by two functions, is
  // hashed once): the work is bounded by the secrets configured, not by the header.
  const macs = new Map<string, Uint8Array>();
  for (const secret of secrets) {
    if (!macs.has(secret)) macs.set(secret, new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), data)));
  }
  return secrets.map((secret) => {
    const expected = macs.get(secret) as Uint8Array;
    let ok = false;
    for (const signature of parsed.signatures) {
      // No short cut: every pair is compared.
      ok = equalMacs(expected, signature) || ok;
    }
    return ok;
  });
}

/**
 * Whether two MACs are equal, in time that does not depend on where they differ: every byte
 * pair is XORed into an accumulator, with no early exit. Not a cryptographic primitive (the
 * MACs come from Web Crypto), only the comparison Web Crypto offers no call for. A length
 * mismatch (never the case here: both are 32 bytes) is simply unequal.
 *
 * @internal
 */
export function equalMacs(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

/**
 * Parses the header and checks its timestamp only (no body needed): lets a receiver refuse
 * a missing, malformed, stale or future signature before reading the body.
 *
 * @internal
 */
export function checkTimestamp(
  header: string | null | undefined,
  toleranceSeconds: number,
  now: number,
): ParsedSignature {
  finite(toleranceSeconds, "toleranceSeconds", 0);
  finite(now, "now");
  const parsed = parseSignatureHeader(header);
  if (Math.abs(now - parsed.timestamp) > toleranceSeconds) {
    throw new SignatureError("the Coffer-Signature timestamp is outside the tolerance");
  }
  return parsed;
}

function mismatch(): SignatureError {
  return new SignatureError("no Coffer-Signature matches the signing secret");
}

function list(secrets: string | readonly string[]): readonly string[] {
  const all = typeof secrets === "string" ? [secrets] : secrets;
  for (const s of all) {
    if (typeof s !== "string" || s.length === 0) throw new TypeError("a signing secret must be a non-empty string");
  }
  return all;
}

async function hmacKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
}

function signedBytes(timestamp: number, body: string | Uint8Array): Uint8Array<ArrayBuffer> {
  const prefix = encoder.encode(`${timestamp}.`);
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const out = new Uint8Array(prefix.length + bytes.length);
  out.set(prefix, 0);
  out.set(bytes, prefix.length);
  return out;
}

function unhex(raw: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F]{64}$/.test(raw)) return undefined;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(raw.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** This machine's clock, unix seconds. */
export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}
