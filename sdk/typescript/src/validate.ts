// Checks of numeric inputs, so a NaN, an Infinity, a negative or a fractional number fails
// loudly (TypeError) instead of turning into something else on the wire (JSON makes NaN
// `null`, which would silently drop a compare-and-set) or into no limit at all.

/**
 * `n` itself when it is a safe integer within `[min, max]`; throws `TypeError` naming
 * `what` otherwise.
 *
 * @internal
 */
export function integer(n: unknown, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `${min}–${max}`;
    throw new TypeError(`${what} must be an integer, ${range} (got ${describe(n)})`);
  }
  return n;
}

/** `n` when it is a finite number of at least `min`; throws `TypeError` otherwise. @internal */
export function finite(n: unknown, what: string, min = -Infinity): number {
  if (typeof n !== "number" || !Number.isFinite(n) || n < min) {
    throw new TypeError(`${what} must be a finite number${min === -Infinity ? "" : ` of at least ${min}`} (got ${describe(n)})`);
  }
  return n;
}

/** `integer(n, …)` when `n` is given, `undefined` when it is not. @internal */
export function optionalInteger(n: unknown, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  return n === undefined ? undefined : integer(n, what, min, max);
}

function describe(n: unknown): string {
  return typeof n === "number" ? String(n) : typeof n;
}
