// The /v1 client. The API key lives in this object (and in the tab's sessionStorage so a
// reload keeps the session); it is sent only as a bearer header on same-origin requests.
// No cookies are used, so no other site can make requests with the user's authority.

/** An API error: the HTTP status and the body's stable code and message. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.currentRevision = body?.error?.currentRevision;
  }
}

/** A path segment, encoded; "." and ".." (which fetch would resolve away) are refused. */
export const seg = (s) => {
  const text = String(s);
  if (text === "." || text === ".." || text === "") throw new TypeError("not a path segment");
  return encodeURIComponent(text);
};

export class Api {
  #key;

  constructor(key, { onRefused } = {}) {
    this.#key = key;
    this.onRefused = onRefused || (() => {});
  }

  /** Forgets the key (sign-out). */
  forget() { this.#key = null; }

  /**
   * A JSON request. `query` is an object of parameters (undefined and "" left out).
   * Resolves with the parsed body (null for 204); rejects with ApiError.
   */
  async request(method, path, { body, query, signal, headers = {} } = {}) {
    if (!this.#key) throw new ApiError(401, "signed_out", "Signed out.");
    const url = path + queryString(query);
    const init = {
      method,
      signal,
      headers: { ...headers, authorization: `Bearer ${this.#key}`, accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      referrerPolicy: "no-referrer",
    };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "Coffer could not be reached.");
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
    if (!response.ok) {
      const code = parsed?.error?.code || `http_${response.status}`;
      const message = parsed?.error?.message || `${response.status} ${response.statusText}`;
      const error = new ApiError(response.status, code, message, parsed);
      if (response.status === 401) this.onRefused(error);
      throw error;
    }
    return parsed;
  }

  get(path, options) { return this.request("GET", path, options); }
  post(path, body, options) { return this.request("POST", path, { ...options, body }); }
  put(path, body, options) { return this.request("PUT", path, { ...options, body }); }
  delete(path, options) { return this.request("DELETE", path, options); }

  /** Every item of a cursor-paged list: `key` names the array in each page. */
  async *pages(path, key, { query, signal, limit = 100 } = {}) {
    let cursor;
    do {
      const page = await this.get(path, { query: { ...query, limit, cursor }, signal });
      yield page[key] || [];
      cursor = page.nextCursor;
    } while (cursor);
  }

  /**
   * Follows `GET /v1/events/stream?subject=…` until `signal` aborts: calls `onEvent(event,
   * id)` for each event, reconnects after a drop (resuming after the last id, so nothing is
   * missed or repeated), and `onState("open"|"retrying"|"refused", error?)` as it goes.
   * EventSource cannot send an Authorization header, so this reads the stream with fetch.
   */
  async stream(subject, { signal, onEvent, onState = () => {}, after } = {}) {
    let lastId = after;
    let delay = 500;
    while (!signal?.aborted) {
      try {
        const headers = { authorization: `Bearer ${this.#key}`, accept: "text/event-stream" };
        if (lastId !== undefined) headers["last-event-id"] = String(lastId);
        const response = await fetch("/v1/events/stream" + queryString({ subject }), {
          headers, signal, cache: "no-store", credentials: "omit", redirect: "error",
        });
        if (!response.ok) {
          const body = await response.json().catch(() => null);
          const error = new ApiError(response.status, body?.error?.code || `http_${response.status}`,
            body?.error?.message || response.statusText, body);
          if (response.status === 401) this.onRefused(error);
          if (response.status >= 400 && response.status < 500 && response.status !== 429) {
            onState("refused", error);
            return;
          }
          throw error;
        }
        if (!/^text\/event-stream\b/.test(response.headers.get("content-type") || "")) {
          throw new ApiError(response.status, "not_a_stream", "The answer was not an event stream.");
        }
        onState("open");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let id;
        let data = [];
        let held = 0; // characters of the event being read
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          // An event or a line this long is not one Coffer sends: drop the connection
          // rather than grow without bound (the retry resumes after the last id).
          if (buffer.length + held > MAX_EVENT_CHARS) {
            await reader.cancel().catch(() => {});
            throw new ApiError(0, "event_too_large", "An event was too large.");
          }
          let newline;
          while ((newline = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, newline).replace(/\r$/, "");
            buffer = buffer.slice(newline + 1);
            // A line arrived: the connection works, so the next drop retries quickly again.
            delay = 500;
            if (line === "") {
              if (data.length) {
                let event = null;
                try { event = JSON.parse(data.join("\n")); } catch { event = null; }
                if (id !== undefined) lastId = id;
                if (event) onEvent(event, id);
              }
              data = [];
              held = 0;
              id = undefined;
            } else if (line.startsWith("data:")) {
              data.push(line.slice(5).replace(/^ /, ""));
              held += line.length;
            } else if (line.startsWith("id:")) {
              id = line.slice(3).trim();
            }
            // Comments (heartbeats) and other fields are ignored.
          }
        }
      } catch (e) {
        if (signal?.aborted) return;
        onState("retrying", e);
      }
      if (signal?.aborted) return;
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10000);
    }
  }
}

/** The longest event (or line) the stream reader holds: far beyond any Coffer sends. */
const MAX_EVENT_CHARS = 1 << 20;

function queryString(query) {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
  }
  const s = params.toString();
  return s ? `?${s}` : "";
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}
