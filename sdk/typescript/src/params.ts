// Helpers for an orchestration compute step's `encryptedParams`.
//
// On write an entry is one of
//   encrypt(value)   {"value": "...", "encrypt": true}     sealed at rest, masked on every read
//   plain(value)     {"value": ..., "encrypt": false}      kept plain (shown on reads)
//   secretRef(name)  {"secretRef": "NAME"}                 the environment's secret, read when the step runs
//   keep()           {"value": "********", "encrypted": true}  (update only) keep the stored value
// and every read shows an encrypted entry as the masked `keep()` form, so a definition read
// with `orchestrations.get` can be sent back to `orchestrations.update` unchanged: its
// encrypted params are kept byte for byte. An entry left out of an update is removed.

import type { Param } from "./openapi.gen.js";

/** The mask every read shows in place of an encrypted param's value. */
export const MASK = "********";

/** `{"value", "encrypt": true}`: a value sealed at rest, opened only for its step's function. */
export interface EncryptParam {
  value: string;
  encrypt: true;
}

/** `{"value", "encrypt": false}`: a param stored and shown in plain text. */
export interface PlainParam {
  value: unknown;
  encrypt: false;
}

/** `{"secretRef": "NAME"}`: the environment's secret NAME, resolved each time the step runs. */
export interface SecretRefParam {
  secretRef: string;
}

/** `{"value": "********", "encrypted": true}`: the masked form; sent in an update, it keeps the stored value. */
export interface MaskedParam {
  value: typeof MASK;
  encrypted: true;
}

/**
 * A param to seal: `{value, encrypt: true}`. In `create` it is encrypted at rest; in
 * `update` it replaces (re-encrypts) whatever the param held.
 *
 * @param value the plaintext (a string of at most 64 KiB); it is never shown again.
 */
export function encrypt(value: string): EncryptParam {
  if (typeof value !== "string") throw new TypeError("encrypt(value): the value must be a string");
  return { value, encrypt: true };
}

/**
 * A param kept in plain text, `{value, encrypt: false}`: any JSON value, shown on reads.
 *
 * @param value any JSON value.
 */
export function plain(value: unknown): PlainParam {
  return { value, encrypt: false };
}

/**
 * A reference to the environment's secret `name`, `{secretRef: name}`: the step gets the
 * secret's value as it is when the step runs (after a rotation, the new one). The step's
 * function must declare the secret.
 *
 * @param name the secret's name (`^[A-Za-z_][A-Za-z0-9_]{0,127}$`).
 */
export function secretRef(name: string): SecretRefParam {
  return { secretRef: name };
}

/**
 * The masked form `{value: "********", encrypted: true}`: in `orchestrations.update` it keeps
 * the param's stored (encrypted) value as it is. It is what every read shows, so passing a
 * read's param back unchanged has the same effect. Not allowed on a renamed step or a step
 * that now runs another function (422): send the value again with `encrypt(value)` there.
 */
export function keep(): MaskedParam {
  return { value: MASK, encrypted: true };
}

/** Whether a param (as a read shows it) is an encrypted one, masked. */
export function isMasked(param: Param | undefined): boolean {
  return param?.encrypted === true && param.value === MASK;
}
