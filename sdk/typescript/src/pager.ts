// Cursor pagination as async iteration: `for await (const s of client.secrets.list("prod"))`
// walks every page, one request per page, only as far as the loop goes.

import { CofferError } from "./errors.js";

/** One page of a listing: its items and the cursor of the next page (`null` on the last). */
export interface Page<T> {
  /** The items of this page (it may hold fewer than `limit`, even none, and not be the last). */
  items: T[];
  /** Pass it back as `cursor` for the next page; `null` (or absent) on the last page. */
  nextCursor: string | null;
}

/** Fetches the page that starts at `cursor` (the first page for `undefined`). */
export type PageFetcher<T> = (cursor: string | undefined) => Promise<Page<T>>;

/**
 * Every item of a paginated listing, across its cursor pages, as an async iterable.
 * Nothing is requested until it is iterated; each iteration starts from the first page.
 *
 * ```ts
 * for await (const secret of client.secrets.list("production")) console.log(secret.name);
 * const all = await client.secrets.list("production").toArray();
 * ```
 */
export class Pager<T> implements AsyncIterable<T> {
  readonly #fetch: PageFetcher<T>;
  readonly #start: string | undefined;

  /**
   * @param fetchPage fetches the page that starts at a cursor (the first page for `undefined`).
   * @param cursor where the iteration starts (default: the first page).
   */
  constructor(fetchPage: PageFetcher<T>, cursor?: string) {
    this.#fetch = fetchPage;
    this.#start = cursor;
  }

  /** Every item of every page, in the server's order. */
  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for await (const page of this.pages()) yield* page.items;
  }

  /**
   * The pages themselves, for a caller that wants to see page boundaries or cursors.
   * A cursor seen before in this iteration (the listing would go round forever) rejects with
   * `CofferError` `cursor_cycle` (status 0) instead of looping.
   */
  async *pages(): AsyncGenerator<Page<T>, void, undefined> {
    let cursor = this.#start;
    const seen = new Set<string>();
    if (cursor !== undefined) seen.add(cursor);
    for (;;) {
      const page = await this.#fetch(cursor);
      yield page;
      const next = page.nextCursor ?? undefined;
      if (next === undefined) return;
      if (seen.has(next)) {
        throw new CofferError(0, "cursor_cycle", "Coffer: the listing's cursors go round in a cycle (a cursor came back)");
      }
      seen.add(next);
      cursor = next;
    }
  }

  /** Every item of every page in one array (reads the whole listing: mind its size). */
  async toArray(): Promise<T[]> {
    const all: T[] = [];
    for await (const item of this) all.push(item);
    return all;
  }
}
