// A push function that pays out: Ironflow's `createFunction({ id, triggers, secrets:
// ["STRIPE_KEY"] }, …)` rewritten for Coffer. STRIPE_KEY is required; SLACK_WEBHOOK is an
// optional dependency (`secrets.has`). Served with `serve()` on Node's http server and
// registered with `register()`.
//
//   COFFER_ADDR=http://127.0.0.1:8720 COFFER_API_KEY=ck_…(admin or manage) \
//   [COFFER_ENV=default] [PORT=3000] [COFFER_SIGNING_SECRETS=cs_…[,cs_…]] \
//   node dist-examples/payout.js
//
// Then send it an event: POST /v1/environments/default/events
//   {"name": "payout.requested", "data": {"payoutId": "po_1", "amount": 2500, "currency": "eur"}}

import { createServer } from "node:http";
import { Coffer, PermanentError, createFunction, register, serve, toNodeListener } from "@coffer/sdk";

export const payout = createFunction(
  {
    id: "payout",
    triggers: ["payout.requested"],
    secrets: ["STRIPE_KEY", "SLACK_WEBHOOK"],
    mode: "push",
    retries: 2,
  },
  async ({ event, secrets, run, signal }) => {
    const { payoutId, amount, currency } = (event.data ?? {}) as {
      payoutId?: unknown;
      amount?: unknown;
      currency?: unknown;
    };
    if (typeof payoutId !== "string" || typeof amount !== "number" || !(amount > 0)) {
      // Retrying will not fix the event: 422, and Coffer fails the run at once.
      throw new PermanentError("the event needs a payoutId and a positive amount");
    }
    // Required: not set → SecretNotSetError, the run fails (and is retried: it may be set by then).
    const stripeKey = secrets.get("STRIPE_KEY");
    // A real payout calls Stripe here:
    //   await fetch("https://api.stripe.com/v1/payouts", {
    //     method: "POST", signal, headers: { authorization: `Bearer ${stripeKey}` }, body: … });
    const live = stripeKey.startsWith("sk_live_");

    // Optional: notify Slack where a webhook is configured, carry on where it is not.
    let notifiedSlack = false;
    if (secrets.has("SLACK_WEBHOOK")) {
      const response = await fetch(secrets.get("SLACK_WEBHOOK"), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ text: `Payout ${payoutId}: ${amount} ${String(currency ?? "eur")}` }),
        signal,
      });
      notifiedSlack = response.ok;
    }
    // The run's output. Never the key itself (Coffer would store it as ******** anyway).
    return { payoutId, amount, currency: currency ?? "eur", live, notifiedSlack, runId: run.id };
  },
);

/** Options of {@link main}. */
export interface PayoutOptions {
  /** Coffer's address. */
  address: string;
  /** An admin or manage key (it registers the function). */
  apiKey: string;
  /** The environment (default `default`). */
  environment?: string;
  /** Where to listen (default 127.0.0.1, port 0: a free one). */
  host?: string;
  port?: number;
  /** The function's signing secret(s), when it is registered already (an update does not show it). */
  signingSecrets?: string[];
}

/** The running endpoint. */
export interface PayoutEndpoint {
  /** The URL Coffer delivers to. */
  url: string;
  /** The signing secret, when this run registered the function (shown once: keep it). */
  signingSecret: string | undefined;
  /** Stops listening. */
  close(): Promise<void>;
}

/** Listens, registers `payout` with this endpoint's URL, and verifies deliveries with its signing secret. */
export async function main(options: PayoutOptions): Promise<PayoutEndpoint> {
  const environment = options.environment ?? "default";
  // Filled in once register() answers: serve() reads it at each request.
  const signingSecrets: Record<string, string[]> = { payout: options.signingSecrets ?? [] };
  const server = createServer(toNodeListener(serve({ functions: [payout], signingSecrets })));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", resolve);
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : options.port;
  const url = `http://${options.host ?? "127.0.0.1"}:${port}/coffer`;

  const client = new Coffer({ address: options.address, apiKey: options.apiKey });
  const [registration] = await register(client, [payout], { environment, url });
  if (registration?.signingSecret) signingSecrets.payout = [registration.signingSecret];
  if (signingSecrets.payout?.length === 0) {
    server.close();
    throw new Error("payout was registered before: pass its signing secret (COFFER_SIGNING_SECRETS)");
  }
  return {
    url,
    signingSecret: registration?.signingSecret,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// `node dist-examples/payout.js`
if (process.argv[1]?.endsWith("payout.js")) {
  const endpoint = await main({
    address: process.env.COFFER_ADDR ?? "http://127.0.0.1:8720",
    apiKey: process.env.COFFER_API_KEY ?? "",
    environment: process.env.COFFER_ENV ?? "default",
    port: Number(process.env.PORT ?? 3000),
    signingSecrets: process.env.COFFER_SIGNING_SECRETS?.split(",").map((s) => s.trim()).filter(Boolean) ?? [],
  });
  console.log(`listening on ${endpoint.url}`);
  if (endpoint.signingSecret) {
    console.log(`registered payout; its signing secret is shown this once: ${endpoint.signingSecret}`);
  }
  const stop = () => void endpoint.close().then(() => console.log("stopped"));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
