// The SDK against the server's OpenAPI document (GET /v1/openapi.json of a real server):
// - src/openapi.gen.ts is exactly what scripts/gen-types.mjs makes of the document;
// - every request the management client makes (method, path, query parameters, body
//   fields, headers) is one the document describes, and every client method is checked.
//
// Needs `npm run build` (it imports ../dist/index.js).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { startServer } from "./harness.mjs";
import { generate, HEADER } from "../scripts/gen-types.mjs";
import { Coffer } from "../dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const generated = path.join(here, "..", "src", "openapi.gen.ts");

let server;
let document;

before(async () => {
  server = await startServer();
  const response = await fetch(`${server.address}/v1/openapi.json`);
  assert.equal(response.status, 200);
  document = await response.json();
});

after(async () => {
  await server?.stop();
});

test("src/openapi.gen.ts is what the generator makes of the server's document", () => {
  const expected = generate(document);
  const actual = readFileSync(generated, "utf8");
  assert.ok(expected.startsWith(HEADER), "the generated file starts with its header");
  if (actual !== expected) {
    const a = actual.split("\n");
    const e = expected.split("\n");
    let line = 0;
    while (line < a.length && line < e.length && a[line] === e[line]) line++;
    assert.fail(
      `src/openapi.gen.ts differs from the server's OpenAPI document (first at line ${line + 1}:\n` +
        `  file:      ${JSON.stringify(a[line] ?? "<end>")}\n  generated: ${JSON.stringify(e[line] ?? "<end>")})\n` +
        "run `npm run gen` (COFFER_BIN=… if the binary is not ../../target/debug/coffer) and commit the result",
    );
  }
});

test("the generator is deterministic and declares one type per schema", () => {
  const text = generate(document);
  assert.equal(generate(JSON.parse(JSON.stringify(document))), text);
  // the same document with its schemas (and their properties) in reverse order
  const reversed = structuredClone(document);
  const schemas = Object.entries(reversed.components.schemas).reverse();
  reversed.components.schemas = Object.fromEntries(
    schemas.map(([k, v]) => [k, v.properties ? { ...v, properties: Object.fromEntries(Object.entries(v.properties).reverse()) } : v]),
  );
  assert.equal(generate(reversed), text);
  const declared = [...text.matchAll(/^export (?:interface|type) (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(declared, Object.keys(document.components.schemas).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
});

test("the generator's mapping of JSON Schema", () => {
  const text = generate({
    components: {
      schemas: {
        Obj: {
          type: "object",
          description: "An object.",
          required: ["a", "e"],
          properties: {
            a: { type: "string", description: "Required." },
            b: { type: ["integer", "null"] },
            c: { oneOf: [{ type: "null" }, { $ref: "#/components/schemas/Kind" }] },
            d: { type: "object", additionalProperties: { type: "string" } },
            e: { type: "array", items: { $ref: "#/components/schemas/Kind" } },
            f: {},
            "x-y": { type: "boolean" },
            secret: { type: "string", writeOnly: true },
          },
          additionalProperties: false,
        },
        Kind: { type: "string", enum: ["one", "two"] },
        Ext: { allOf: [{ $ref: "#/components/schemas/Obj" }, { type: "object", required: ["z"], properties: { z: { type: "number" } } }] },
      },
    },
  });
  assert.match(text, /\/\*\* An object\. \*\/\nexport interface Obj \{\n/);
  assert.match(text, /\n  \/\*\* Required\. \*\/\n  a: string;\n/);
  assert.match(text, /\n  b\?: number \| null;\n/);
  assert.match(text, /\n  c\?: Kind \| null;\n/);
  assert.match(text, /\n  d\?: Record<string, string>;\n/);
  assert.match(text, /\n  e: Kind\[\];\n/);
  assert.match(text, /\n  f\?: unknown;\n/);
  assert.match(text, /\n  "x-y"\?: boolean;\n/);
  assert.match(text, /\/\*\* @writeOnly[^\n]*\*\/\n  secret\?: string;\n/);
  assert.match(text, /export type Kind = "one" \| "two";\n/);
  assert.match(text, /export interface Ext extends Obj \{\n  z: number;\n\}/);
  assert.throws(
    () => generate({ components: { schemas: { A: { $ref: "#/components/schemas/Missing" } } } }),
    /names no schema/,
  );
});

// Every client method: the request it must make (method and path template of the document),
// and a call that makes it with every optional parameter set.
const first = async (pager) => {
  for await (const item of pager) return item;
  return undefined;
};
const E = "env-1";
const operations = [
  ["whoami", "GET", "/v1/whoami", (c) => c.whoami()],
  ["status", "GET", "/v1/status", (c) => c.status()],
  ["environments.list", "GET", "/v1/environments", (c) => c.environments.list()],
  ["environments.create", "POST", "/v1/environments", (c) => c.environments.create(E)],
  ["environments.delete", "DELETE", "/v1/environments/{env}", (c) => c.environments.delete(E)],
  ["secrets.set", "PUT", "/v1/environments/{env}/secrets/{name}", (c) => c.secrets.set(E, "A", "v", { expectedRevision: 1 })],
  ["secrets.get", "GET", "/v1/environments/{env}/secrets/{name}", (c) => c.secrets.get(E, "A")],
  ["secrets.list", "GET", "/v1/environments/{env}/secrets", (c) => first(c.secrets.list(E, { limit: 2, cursor: "x", search: "a", sort: "-name" }))],
  ["secrets.page", "GET", "/v1/environments/{env}/secrets", (c) => c.secrets.page(E, { limit: 2, cursor: "x", search: "a", sort: "updatedAt" })],
  ["secrets.delete", "DELETE", "/v1/environments/{env}/secrets/{name}", (c) => c.secrets.delete(E, "A", { expectedRevision: 1 })],
  ["secrets.import", "POST", "/v1/environments/{env}/secrets", (c) => c.secrets.import(E, { A: "v" })],
  ["config.get", "GET", "/v1/environments/{env}/config/{key}", (c) => c.config.get(E, "k")],
  ["config.set", "PUT", "/v1/environments/{env}/config/{key}", (c) => c.config.set(E, "k", { a: 1 }, { expectedRevision: 0 })],
  ["config.list", "GET", "/v1/environments/{env}/config", (c) => first(c.config.list(E, { limit: 2, cursor: "x" }))],
  ["config.page", "GET", "/v1/environments/{env}/config", (c) => c.config.page(E, { limit: 2, cursor: "x" })],
  ["config.delete", "DELETE", "/v1/environments/{env}/config/{key}", (c) => c.config.delete(E, "k", { expectedRevision: 1 })],
  ["apiKeys.create", "POST", "/v1/api-keys", (c) => c.apiKeys.create({ name: "n", role: "manage", environment: E })],
  ["apiKeys.list", "GET", "/v1/api-keys", (c) => c.apiKeys.list()],
  ["apiKeys.revoke", "DELETE", "/v1/api-keys/{id}", (c) => c.apiKeys.revoke("ak_0123456789abcdef")],
  ["functions.put", "PUT", "/v1/environments/{env}/functions/{id}", (c) => c.functions.put(E, "f", {
    mode: "push", triggers: [{ event: "a.b" }], secrets: ["A"], config: ["k"], url: "http://127.0.0.1:1/",
    timeoutMs: 1000, retries: 1, concurrency: 1,
  }, { expectedRevision: 0 })],
  ["functions.get", "GET", "/v1/environments/{env}/functions/{id}", (c) => c.functions.get(E, "f")],
  ["functions.list", "GET", "/v1/environments/{env}/functions", (c) => first(c.functions.list(E, { limit: 2, cursor: "x" }))],
  ["functions.page", "GET", "/v1/environments/{env}/functions", (c) => c.functions.page(E, { limit: 2, cursor: "x" })],
  ["functions.delete", "DELETE", "/v1/environments/{env}/functions/{id}", (c) => c.functions.delete(E, "f", { expectedRevision: 1 })],
  ["functions.rotateSigningSecret", "POST", "/v1/environments/{env}/functions/{id}/signing-secret", (c) => c.functions.rotateSigningSecret(E, "f", { graceMs: 0 })],
  ["events.send", "POST", "/v1/environments/{env}/events", (c) => c.events.send(E, "a.b", { x: 1 }, { idempotencyKey: "k1" })],
  ["runs.get", "GET", "/v1/environments/{env}/runs/{id}", (c) => c.runs.get(E, "run_1")],
  ["runs.list", "GET", "/v1/environments/{env}/runs", (c) => first(c.runs.list(E, { functionId: "f", status: "queued", limit: 2, cursor: "x" }))],
  ["runs.page", "GET", "/v1/environments/{env}/runs", (c) => c.runs.page(E, { functionId: "f", status: "failed", limit: 2, cursor: "x" })],
  ["runs.wait", "GET", "/v1/environments/{env}/runs/{id}", (c) => c.runs.wait(E, "run_1")],
  ["orchestrations.create", "POST", "/v1/environments/{env}/orchestrations", (c) => c.orchestrations.create(E, { name: "o", steps: [{ id: "a", type: "approval" }] })],
  ["orchestrations.get", "GET", "/v1/environments/{env}/orchestrations/{id}", (c) => c.orchestrations.get(E, "orch_1")],
  ["orchestrations.list", "GET", "/v1/environments/{env}/orchestrations", (c) => first(c.orchestrations.list(E, { limit: 2, cursor: "x" }))],
  ["orchestrations.page", "GET", "/v1/environments/{env}/orchestrations", (c) => c.orchestrations.page(E, { limit: 2, cursor: "x" })],
  ["orchestrations.update", "PUT", "/v1/environments/{env}/orchestrations/{id}", (c) => c.orchestrations.update(E, "orch_1", {
    name: "o", steps: [], id: "orch_1", environment: E, revision: 1, createdAt: "", updatedAt: "",
  }, { expectedRevision: 1 })],
  ["orchestrations.delete", "DELETE", "/v1/environments/{env}/orchestrations/{id}", (c) => c.orchestrations.delete(E, "orch_1", { expectedRevision: 1 })],
  ["orchestrations.run", "POST", "/v1/environments/{env}/orchestrations/{id}/runs", (c) => c.orchestrations.run(E, "orch_1", { a: 1 })],
  ["orchestrationRuns.get", "GET", "/v1/environments/{env}/orchestration-runs/{runId}", (c) => c.orchestrationRuns.get(E, "orun_1")],
  ["orchestrationRuns.list", "GET", "/v1/environments/{env}/orchestration-runs", (c) => first(c.orchestrationRuns.list(E, { orchestrationId: "orch_1", status: "running", limit: 2, cursor: "x" }))],
  ["orchestrationRuns.page", "GET", "/v1/environments/{env}/orchestration-runs", (c) => c.orchestrationRuns.page(E, { orchestrationId: "orch_1", status: "rejected", limit: 2, cursor: "x" })],
  ["orchestrationRuns.approve", "POST", "/v1/environments/{env}/orchestration-runs/{runId}/approve", (c) => c.orchestrationRuns.approve(E, "orun_1", { reason: "ok" })],
  ["orchestrationRuns.reject", "POST", "/v1/environments/{env}/orchestration-runs/{runId}/reject", (c) => c.orchestrationRuns.reject(E, "orun_1", { reason: "no" })],
  ["orchestrationRuns.wait", "GET", "/v1/environments/{env}/orchestration-runs/{runId}", (c) => c.orchestrationRuns.wait(E, "orun_1")],
  ["audit.list", "GET", "/v1/audit", (c) => first(c.audit.list({
    environment: E, actor: "system", action: "secret.created", subject: "system.>", result: "allowed",
    since: new Date(0), until: "2100-01-01T00:00:00Z", limit: 2, cursor: "x",
  }))],
  ["audit.page", "GET", "/v1/audit", (c) => c.audit.page({ environment: E, limit: 2 })],
  ["audit.verify", "GET", "/v1/audit/verify", (c) => c.audit.verify()],
  ["keys.status", "GET", "/v1/keys", (c) => c.keys.status()],
  ["keys.rewrap", "POST", "/v1/keys/rewrap", (c) => c.keys.rewrap({ cursor: "x", limit: 10 })],
  ["keys.verify", "POST", "/v1/keys/verify", (c) => c.keys.verify({ cursor: "x", limit: 10 })],
];

/** Every public method of the client: `whoami`, `secrets.set`, … */
function clientMethods(client) {
  const names = [];
  const own = (o) => Object.getOwnPropertyNames(Object.getPrototypeOf(o)).filter((n) => n !== "constructor" && n !== "toJSON" && typeof o[n] === "function");
  for (const n of own(client)) names.push(n);
  for (const [ns, value] of Object.entries(client)) {
    if (ns === "http" || typeof value !== "object") continue;
    for (const n of own(value)) names.push(`${ns}.${n}`);
  }
  return names.sort();
}

function resolveRef(schema) {
  if (schema?.$ref) return document.components.schemas[schema.$ref.replace("#/components/schemas/", "")];
  return schema;
}

test("every client method maps to an operation of the document", async () => {
  const table = new Map(operations.map((o) => [o[0], o]));
  assert.equal(table.size, operations.length, "no method twice in the table");
  const probe = new Coffer({ address: "http://127.0.0.1:1", apiKey: "ck_admin_x" });
  assert.deepEqual(clientMethods(probe), [...table.keys()].sort(), "the table lists every client method");

  for (const [name, method, template] of operations) {
    const operation = document.paths[template]?.[method.toLowerCase()];
    assert.ok(operation, `${name}: ${method} ${template} is not in the server's OpenAPI document`);
  }
});

test("every request the client makes is one the document describes", async () => {
  for (const [name, method, template, call] of operations) {
    const seen = [];
    const client = new Coffer({
      address: "http://coffer.test",
      apiKey: "ck_admin_test",
      fetch: async (url, init) => {
        seen.push({ url: new URL(url), init });
        // an answer every method accepts: an ended run, an empty page
        return new Response(JSON.stringify({ status: "succeeded", nextCursor: null }), {
          status: 200,
          headers: { "content-type": "application/json" },
        });
      },
    });
    await call(client);
    assert.equal(seen.length, 1, `${name}: one request`);
    const [{ url, init }] = seen;
    assert.equal(init.method, method, `${name}: method`);
    const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`);
    assert.match(url.pathname, pattern, `${name}: ${url.pathname} is not ${template}`);
    const operation = document.paths[template][method.toLowerCase()];
    const parameters = operation.parameters ?? [];

    const query = parameters.filter((p) => p.in === "query").map((p) => p.name);
    for (const key of url.searchParams.keys()) {
      assert.ok(query.includes(key), `${name}: query parameter ${key} is not documented for ${method} ${template}`);
    }
    const headerParams = parameters.filter((p) => p.in === "header").map((p) => p.name.toLowerCase());
    for (const key of Object.keys(init.headers)) {
      if (["authorization", "accept", "content-type"].includes(key.toLowerCase())) continue;
      assert.ok(headerParams.includes(key.toLowerCase()), `${name}: header ${key} is not documented`);
    }

    const bodySchema = resolveRef(operation.requestBody?.content?.["application/json"]?.schema);
    if (init.body === undefined) {
      assert.ok(!operation.requestBody?.required, `${name}: ${method} ${template} requires a body`);
    } else {
      assert.ok(bodySchema, `${name}: sends a body ${method} ${template} does not take`);
      const body = JSON.parse(init.body);
      for (const field of Object.keys(body)) {
        assert.ok(field in (bodySchema.properties ?? {}), `${name}: body field ${field} is not in the request schema`);
      }
      for (const field of bodySchema.required ?? []) {
        assert.ok(field in body, `${name}: the required body field ${field} is missing`);
      }
    }
  }
});
