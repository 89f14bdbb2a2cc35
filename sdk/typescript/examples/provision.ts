// Provisioning a tenant as an orchestration whose compute step holds its own credentials:
// Centrali's `client.createOrchestration({ steps: [{ encryptedParams }] })` rewritten for
// Coffer. The step's DB_PASSWORD is an encrypted param (sealed at rest, masked on every
// read, opened only for this step's job); CLOUD_TOKEN references the environment secret
// CLOUD_API_TOKEN (resolved when the step runs, so a rotation reaches it). The step's
// function runs in a pull worker.
//
//   COFFER_ADDR=http://127.0.0.1:8720 COFFER_API_KEY=ck_…(admin or manage) \
//   COFFER_RUNTIME_KEY=ck_…(runtime) DB_PASSWORD=… [TENANT=acme] [PLAN=pro] \
//   node dist-examples/provision.js

import { Coffer, type Json, createFunction, register, worker } from "@coffer/sdk";

export const provisionDatabase = createFunction(
  { id: "provision-database", secrets: ["CLOUD_API_TOKEN"], mode: "pull" },
  async ({ triggerParams, secrets, run }) => {
    // The run's params, the step's params and its encrypted params (opened), in one object.
    const tenant = text(triggerParams.tenant, "tenant");
    const plan = text(triggerParams.plan, "plan");
    const engine = text(triggerParams.engine, "engine");
    const region = text(triggerParams.REGION, "REGION");
    const password = text(triggerParams.DB_PASSWORD, "DB_PASSWORD");
    const cloudToken = text(triggerParams.CLOUD_TOKEN, "CLOUD_TOKEN");
    // A real step calls the cloud's API with cloudToken and creates the database with
    // password here. What it returns is stored; Coffer redacts the step's opened params and
    // referenced values in it, but the step returns neither: a fingerprint says which
    // password was set without showing it.
    return {
      tenant,
      plan,
      region,
      database: `db-${tenant}`,
      engine,
      sizeGb: plan === "enterprise" ? 500 : 20,
      passwordSha256: await sha256(password),
      // The reference resolves to the very secret the function declares.
      tokenFromRef: cloudToken === secrets.get("CLOUD_API_TOKEN"),
      attempt: run.attempt,
    };
  },
);

/** The orchestration: provision, then a size check that asks a human for big databases. */
export function provisioning(dbPassword: string): { name: string; steps: Json[] } {
  return {
    name: "provision-tenant",
    steps: [
      {
        id: "create-database",
        type: "compute",
        functionId: provisionDatabase.id,
        params: { engine: "postgres-16" },
        encryptedParams: {
          DB_PASSWORD: { value: dbPassword, encrypt: true },
          REGION: { value: "eu-west-1", encrypt: false },
          CLOUD_TOKEN: { secretRef: "CLOUD_API_TOKEN" },
        },
      },
      {
        id: "size-check",
        type: "decision",
        condition: { path: "steps.create-database.output.sizeGb", op: "gt", value: 100 },
        then: "review",
        else: "done",
      },
      { id: "review", type: "approval", timeoutMs: 86_400_000 },
      { id: "done", type: "delay", durationMs: 0 },
    ],
  };
}

/** Options of {@link main}. */
export interface ProvisionOptions {
  /** Coffer's address. */
  address: string;
  /** An admin or manage key: registers the function, creates and starts the orchestration. */
  apiKey: string;
  /** A runtime key of the environment: the worker's. */
  runtimeKey: string;
  /** The environment (default `default`). */
  environment?: string;
  /** The tenant to provision (default `acme`). */
  tenant?: string;
  /** The run's plan (default `pro`); `enterprise` makes a big database, which needs an approval. */
  plan?: string;
  /** The database password the step is given, encrypted. */
  dbPassword: string;
}

/** An orchestration run, as the API shows it. */
export interface OrchestrationRun {
  id: string;
  orchestrationId: string;
  status: "running" | "waiting_approval" | "succeeded" | "failed" | "rejected";
  steps: { id: string; status: string; output?: Json; runId?: string; error?: string }[];
  params: { [key: string]: Json };
}

/**
 * Registers the function, creates the orchestration, runs a worker, starts a run and waits
 * until it ends (or waits for an approval); stops the worker and returns the run.
 */
export async function main(options: ProvisionOptions): Promise<{ orchestrationId: string; run: OrchestrationRun }> {
  const environment = options.environment ?? "default";
  const env = `/v1/environments/${encodeURIComponent(environment)}`;
  const manage = new Coffer({ address: options.address, apiKey: options.apiKey });
  await register(manage, [provisionDatabase], { environment });

  const created = await manage.http.request<{ id: string }>("POST", `${env}/orchestrations`, {
    body: provisioning(options.dbPassword),
  });

  const runtime = new Coffer({ address: options.address, apiKey: options.runtimeKey });
  const w = worker({ client: runtime, functions: [provisionDatabase], environment, waitMs: 5_000, leaseMs: 10_000 });
  try {
    const params: { [key: string]: Json } = { tenant: options.tenant ?? "acme", plan: options.plan ?? "pro" };
    let run = await manage.http.request<OrchestrationRun>("POST", `${env}/orchestrations/${created.id}/runs`, {
      body: { params },
    });
    const deadline = Date.now() + 60_000;
    while (run.status === "running" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      run = await manage.http.request<OrchestrationRun>("GET", `${env}/orchestration-runs/${run.id}`);
    }
    return { orchestrationId: created.id, run };
  } finally {
    await w.stop();
  }
}

function text(value: Json | undefined, name: string): string {
  if (typeof value !== "string") throw new Error(`the step's ${name} param is missing`);
  return value;
}

async function sha256(value: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(value)));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// `node dist-examples/provision.js`
if (process.argv[1]?.endsWith("provision.js")) {
  const { orchestrationId, run } = await main({
    address: process.env.COFFER_ADDR ?? "http://127.0.0.1:8720",
    apiKey: process.env.COFFER_API_KEY ?? "",
    runtimeKey: process.env.COFFER_RUNTIME_KEY ?? "",
    environment: process.env.COFFER_ENV ?? "default",
    tenant: process.env.TENANT ?? "acme",
    ...(process.env.PLAN ? { plan: process.env.PLAN } : {}),
    dbPassword: process.env.DB_PASSWORD ?? "",
  });
  console.log(`orchestration ${orchestrationId}: run ${run.id} ${run.status}`);
  for (const step of run.steps) console.log(`  ${step.id}: ${step.status} ${JSON.stringify(step.output ?? null)}`);
}
