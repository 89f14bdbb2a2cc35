// Mounting a fetch-style handler (`serve()`'s) on Node.js's `http` server or Express. Only
// structural types: nothing here imports a Node.js module, so the SDK stays usable where
// there is no Node.js (Deno, Bun and edge runtimes take the fetch handler directly).

import type { FetchHandler } from "./serve.js";

/** What this adapter reads of a Node.js `IncomingMessage` (an Express `req` is one). */
export interface NodeRequestLike extends AsyncIterable<Uint8Array | string> {
  method?: string | undefined;
  url?: string | undefined;
  headers: Record<string, string | string[] | undefined>;
}

/** What this adapter uses of a Node.js `ServerResponse` (an Express `res` is one). */
export interface NodeResponseLike {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(chunk?: Uint8Array): unknown;
  once?(event: "close", listener: () => void): unknown;
  /** Whether the status and headers were sent already (a failure then can only cut the response). */
  headersSent?: boolean;
  /** Cuts the response off (used when it fails after its headers were sent). */
  destroy?(error?: Error): unknown;
}

/**
 * A `(req, res)` listener for `http.createServer(...)` or an Express route
 * (`app.post("/coffer", toNodeListener(handler))` — mount it before any body parser, since
 * the signature covers the raw body) that hands each request to `handler` as a Web `Request`
 * and writes its `Response` back. The request's `signal` aborts when the connection closes.
 * The body is read only as the handler reads it (a refusal before reading reads nothing).
 * Nothing it does can reject unhandled: a failure answers 500 if the headers are not sent
 * yet, and cuts the response off otherwise.
 */
export function toNodeListener(handler: FetchHandler): (req: NodeRequestLike, res: NodeResponseLike) => void {
  return (req, res) => {
    respond(handler, req, res).catch(() => {
      try {
        if (!res.headersSent) {
          res.statusCode = 500;
          res.setHeader("content-type", "application/json");
          res.end(new TextEncoder().encode(INTERNAL));
        } else {
          res.destroy?.();
        }
      } catch {
        res.destroy?.();
      }
    });
  };
}

const INTERNAL = JSON.stringify({ error: { code: "internal", message: "the request could not be handled" } });

async function respond(handler: FetchHandler, req: NodeRequestLike, res: NodeResponseLike): Promise<void> {
  let response: Response;
  try {
    const host = first(req.headers.host) ?? "localhost";
    let url: URL;
    try {
      url = new URL(req.url ?? "/", `http://${host}`);
    } catch {
      url = new URL(req.url ?? "/", "http://localhost");
    }
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined) continue;
      headers.set(name, Array.isArray(value) ? value.join(", ") : value);
    }
    const method = (req.method ?? "GET").toUpperCase();
    const closed = new AbortController();
    res.once?.("close", () => closed.abort());
    const init: RequestInit & { duplex?: "half" } = { method, headers, signal: closed.signal };
    if (method !== "GET" && method !== "HEAD") {
      const chunks = req[Symbol.asyncIterator]();
      const encoder = new TextEncoder();
      init.body = new ReadableStream<Uint8Array>(
        {
          async pull(controller) {
            const next = await chunks.next();
            if (next.done) controller.close();
            else controller.enqueue(typeof next.value === "string" ? encoder.encode(next.value) : next.value);
          },
          // On cancel (a refusal before the body was read) the rest is left to Node.js, which
          // discards it: ending the iterator would destroy the socket before the answer.
        },
        // Nothing is pulled before the handler reads: a refused request reads no body.
        { highWaterMark: 0 },
      );
      init.duplex = "half";
    }
    response = await handler(new Request(url, init));
  } catch {
    response = new Response(INTERNAL, { status: 500, headers: { "content-type": "application/json" } });
  }
  res.statusCode = response.status;
  response.headers.forEach((value, name) => {
    res.setHeader(name, value);
  });
  const body = new Uint8Array(await response.arrayBuffer());
  res.end(body);
}

function first(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
