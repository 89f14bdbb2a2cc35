// Functions and their runs in one environment. Three routes:
//   #/env/{env}/functions        the functions (cursor-paged), the environment's runs, and
//                                 "send an event"
//   #/env/{env}/functions/{id}   one function's definition and its runs
//   #/env/{env}/runs/{runId}     one run: status, attempts, output and error
// Runs on screen follow the event stream (`system.run.>`). A function's signing secret
// appears in exactly two answers (registration and rotation): it is shown once in a dialog
// and forgotten when the dialog closes. Output and errors are shown as the server stored
// them, already redacted, and always as text.

import { seg } from "./api.js";
import {
  backTo, badge, button, confirmTyped, cursorPager, dialog, duration, field, grid, h, replace, report,
  toast, when, withId,
} from "./dom.js";
import { parseJson } from "./json.js";

const PAGE = 50;
const FUNCTION_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/; // secret names and config keys
const EVENT_NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const RUN_STATUSES = ["queued", "running", "succeeded", "failed"];

export async function render(ctx) {
  if (/^\/env\/[^/]+\/runs\//.test(ctx.path)) return renderRun(ctx, ctx.params[0]);
  if (ctx.params.length) return renderFunction(ctx, ctx.params[0]);
  return renderList(ctx);
}

const envBase = (env) => `/v1/environments/${seg(env)}`;
const listHref = (env) => `#/env/${seg(env)}/functions`;
const fnHref = (env, id) => `#/env/${seg(env)}/functions/${seg(id)}`;
const runHref = (env, id) => `#/env/${seg(env)}/runs/${seg(id)}`;

// ---------------------------------------------------------------------------------------
// #/env/{env}/functions

async function renderList(ctx) {
  const { api, env, main, signal } = ctx;
  const manage = ctx.can.manage(env);
  const listBox = h("div.table-wrap#functions");
  const pager = cursorPager("functions", async (cursor) => {
    const page = await api.get(`${envBase(env)}/functions`, { query: { limit: PAGE, cursor }, signal });
    replace(listBox, grid(functionColumns(env), page.functions, {
      empty: "No functions registered in this environment yet.",
    }));
    return page.nextCursor;
  });
  const runs = runsPanel(ctx, {});

  async function register() {
    const saved = await functionDialog(ctx, null);
    if (!saved) return;
    await showSigningSecretOnce(saved.fn.id, saved.secret, "Registered.");
    saved.secret = null;
    ctx.navigate(fnHref(env, saved.fn.id));
  }

  replace(main,
    h("h1", "Functions in ", h("code", env)),
    manage ? h("div.toolbar",
      withId(button("Register a function", register, { kind: "primary" }), "register-function")) : null,
    listBox,
    pager.el,
    manage ? eventSection(ctx, "") : null,
    runs.el);
  await Promise.all([pager.load(), runs.load()]);
  runs.live();
}

function functionColumns(env) {
  return [
    { key: "id", label: "Function", mono: true, render: (f) => h("a", { href: fnHref(env, f.id) }, f.id) },
    { key: "mode", label: "Mode" },
    { key: "triggers", label: "Triggers", render: (f) => codes(f.triggers.map((t) => t.event)) },
    { key: "secrets", label: "Secrets", render: (f) => codes(f.secrets) },
    { key: "config", label: "Config keys", render: (f) => codes(f.config) },
    { key: "url", label: "URL", mono: true, render: (f) => f.url || h("span.hint", "— (pull)") },
    { key: "revision", label: "Revision", render: (f) => String(f.revision) },
    { key: "updatedAt", label: "Updated", render: (f) => when(f.updatedAt) },
  ];
}

// ---------------------------------------------------------------------------------------
// #/env/{env}/functions/{id}

async function renderFunction(ctx, id) {
  const { api, env, main, signal } = ctx;
  const manage = ctx.can.manage(env);
  const url = `${envBase(env)}/functions/${seg(id)}`;
  let fn;
  try {
    fn = await api.get(url, { signal });
  } catch (e) {
    if (e.status !== 404) throw e;
    replace(main, backTo(listHref(env), "Functions"), h("h1", "Function not found"),
      h("p.empty", `There is no function ${id} in ${env}.`));
    return;
  }

  const definition = h("div#function-definition");
  const drawDefinition = () => replace(definition, definitionList(fn));

  async function edit() {
    const saved = await functionDialog(ctx, fn);
    if (!saved) return;
    fn = saved.fn;
    drawDefinition();
    toast(`Updated ${fn.id} (revision ${fn.revision}).`);
  }

  async function rotate() {
    const graceMs = await rotateDialog(fn);
    if (graceMs === null) return;
    try {
      const rotated = await api.post(`${url}/signing-secret`, { graceMs }, { signal });
      let secret = rotated.signingSecret;
      delete rotated.signingSecret; // the dialog's box keeps the only copy
      fn = rotated;
      drawDefinition();
      await showSigningSecretOnce(fn.id, secret, "The signing secret was replaced.");
      secret = null;
    } catch (e) { report(e); }
  }

  async function remove() {
    const ok = await confirmTyped(`Delete function ${fn.id}`,
      "Its definition and signing secret are deleted. Its runs stay; a queued one fails when it comes up.",
      fn.id);
    if (!ok) return;
    try {
      await api.delete(url, { query: { expectedRevision: fn.revision } });
      toast(`Deleted ${fn.id}.`);
      ctx.navigate(listHref(env));
    } catch (e) {
      if (e.status === 409) toast(`${fn.id} changed since this page loaded; look again before deleting.`, "error");
      else report(e);
    }
  }

  // A trigger without wildcards is a ready-made event name for the form.
  const literal = fn.triggers.map((t) => t.event).find((e) => EVENT_NAME.test(e)) || "";
  const runs = runsPanel(ctx, { functionId: fn.id });
  drawDefinition();
  replace(main,
    backTo(listHref(env), "Functions"),
    h("h1", "Function ", h("code", fn.id)),
    manage ? h("div.toolbar",
      withId(button("Edit", edit), "edit-function"),
      withId(button("Rotate signing secret", rotate), "rotate-signing-secret"),
      h("span.grow"),
      withId(button("Delete", remove, { kind: "danger" }), "delete-function")) : null,
    definition,
    manage ? eventSection(ctx, literal) : null,
    runs.el);
  await runs.load();
  runs.live();
}

/** A function's definition, as a description list. Never its signing secret. */
function definitionList(fn) {
  const push = fn.mode === "push";
  return h("dl.props",
    h("dt", "Mode"), h("dd", push ? "push: Coffer POSTs each job to the URL" : "pull: workers with a runtime key poll for jobs"),
    push ? [h("dt", "URL"), h("dd", h("code", fn.url || ""))] : null,
    h("dt", "Triggers"), h("dd", codes(fn.triggers.map((t) => t.event), "none: no event starts it")),
    h("dt", "Secrets"), h("dd", codes(fn.secrets, "none"), h("small.hint", " names only: the values reach its runs, never this page")),
    h("dt", "Config keys"), h("dd", codes(fn.config, "none")),
    push ? [
      h("dt", "Timeout"), h("dd", duration(fn.timeoutMs)),
      h("dt", "Retries"), h("dd", String(fn.retries)),
      h("dt", "Concurrency"), h("dd", `${fn.concurrency} attempts in flight per node`),
    ] : null,
    h("dt", "Signing secret"), h("dd", "sealed; it was shown once, at registration or at its last rotation",
      fn.previousSigningSecretUntil ? `; the previous one also signs until ${when(fn.previousSigningSecretUntil)}` : null),
    h("dt", "Revision"), h("dd", String(fn.revision)),
    h("dt", "Registered"), h("dd", when(fn.createdAt)),
    h("dt", "Updated"), h("dd", when(fn.updatedAt)));
}

// ---------------------------------------------------------------------------------------
// #/env/{env}/runs/{runId}

async function renderRun(ctx, runId) {
  const { api, env, main, signal } = ctx;
  const url = `${envBase(env)}/runs/${seg(runId)}`;
  let run;
  try {
    run = await api.get(url, { signal });
  } catch (e) {
    if (e.status !== 404) throw e;
    replace(main, backTo(listHref(env), "Functions & runs"), h("h1", "Run not found"),
      h("p.empty", `There is no run ${runId} in ${env}: ended runs are deleted after their retention period.`));
    return;
  }

  const box = h("div#run");
  function draw() {
    const status = badge(run.status);
    status.id = "run-status";
    // A step of an orchestration is started by the event "orchestration.{orchId}.{stepId}".
    const step = /^orchestration\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(run.event);
    const hasOutput = Object.hasOwn(run, "output");
    replace(box,
      h("dl.props#run-details",
        h("dt", "Function"), h("dd", h("a", { href: fnHref(env, run.functionId) }, run.functionId)),
        h("dt", "Event"), h("dd", h("code", run.event),
          step ? [" — step ", h("code", step[2]), " of orchestration ",
            h("a", { href: `#/env/${seg(env)}/orchestrations/${seg(step[1])}` }, step[1])] : null),
        h("dt", "Status"), h("dd", status),
        h("dt", "Attempts"), h("dd#run-attempts", String(run.attempts)),
        h("dt", "Started"), h("dd", when(run.createdAt)),
        h("dt", "Updated"), h("dd", when(run.updatedAt))),
      h("h2", "Output"),
      hasOutput
        ? h("pre.json#run-output", JSON.stringify(run.output, null, 2))
        : h("p.empty#run-output", run.status === "succeeded" ? "No output." : "No output yet."),
      run.error != null ? [h("h2", "Error"), h("pre.json#run-error", String(run.error))] : null,
      h("p.hint", "Output and errors are shown as Coffer stored them: any secret value the run was handed reads ********."));
  }
  draw();
  replace(main,
    backTo(fnHref(env, run.functionId), `Function ${run.functionId}`),
    h("h1", "Run ", h("code", run.id)),
    box);

  // Live: refetch on every event about this run.
  api.stream("system.run.>", {
    signal,
    onEvent: (event) => {
      if (event.environment !== env || event.name !== runId) return;
      api.get(url, { signal }).then((fresh) => {
        run = fresh;
        draw();
        box.querySelector("#run-details")?.classList.add("flash");
      }).catch(() => {});
    },
  }).catch(() => {});
}

// ---------------------------------------------------------------------------------------
// The runs of an environment, or of one function: newest first, a status filter, cursor
// pages, and live updates.

function runsPanel(ctx, { functionId }) {
  const { api, env, signal } = ctx;
  const view = { status: "", rows: [], flash: new Set() };
  const box = h("div.table-wrap#runs");
  const columns = [
    { key: "id", label: "Run", mono: true, render: (r) => h("a", { href: runHref(env, r.id) }, r.id) },
    functionId ? null : {
      key: "functionId", label: "Function", render: (r) => h("a", { href: fnHref(env, r.functionId) }, r.functionId),
    },
    { key: "event", label: "Event" },
    { key: "status", label: "Status", render: (r) => badge(r.status) },
    { key: "attempts", label: "Attempts", render: (r) => String(r.attempts) },
    { key: "createdAt", label: "Started", render: (r) => when(r.createdAt) },
    { key: "updatedAt", label: "Updated", render: (r) => when(r.updatedAt) },
  ].filter(Boolean);

  const pager = cursorPager("runs", async (cursor) => {
    const page = await api.get(`${envBase(env)}/runs`, {
      query: { functionId, status: view.status, limit: PAGE, cursor }, signal,
    });
    view.rows = page.runs;
    // A page of runs ends at 256 KiB of outputs: an empty one may still have a next.
    const none = view.status ? `No ${view.status} runs` : "No runs yet";
    replace(box, grid(columns, view.rows, {
      empty: page.nextCursor ? `${none} on this page; Next → shows more.` : `${none}.`,
    }));
    for (const id of view.flash) box.querySelector(`tr[data-id="${CSS.escape(id)}"]`)?.classList.add("flash");
    view.flash.clear();
    return page.nextCursor;
  });

  const filter = h("select#runs-status-filter", {
    "aria-label": "Show runs of this status",
    onchange: () => { view.status = filter.value; pager.reset().catch(report); },
  }, h("option", { value: "" }, "Any status"), RUN_STATUSES.map((s) => h("option", { value: s }, s)));

  // Live: events name the run. They are gathered for half a second, then the page on
  // screen is read again once (the server applies the filters), so a burst of runs costs
  // one request, not one per event. Events about runs that are on neither the first page
  // nor this one change nothing on screen and are ignored.
  let timer = null;
  function onEvent(event) {
    if (event.environment !== env || !event.name) return;
    const onScreen = view.rows.some((r) => r.id === event.name);
    if (!onScreen && !pager.onFirstPage()) return;
    view.flash.add(event.name);
    timer ??= setTimeout(() => {
      timer = null;
      pager.load().catch(() => {});
    }, 500);
  }
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });

  return {
    el: h("section",
      h("h2", functionId ? "Its runs" : "Runs in this environment"),
      h("div.toolbar", h("label", { for: "runs-status-filter" }, "Status"), filter,
        h("span.hint", "Newest first; updated live.")),
      box,
      pager.el),
    load: () => pager.load(),
    live: () => { api.stream("system.run.>", { signal, onEvent }).catch(() => {}); },
  };
}

// ---------------------------------------------------------------------------------------
// Send an event: starts one run per function whose trigger matches.

function eventSection(ctx, suggested) {
  const { api, env } = ctx;
  const name = h("input#event-name", {
    name: "event-name", required: true, autocomplete: "off", spellcheck: "false", maxlength: 255,
    placeholder: "order.created", value: suggested,
  });
  const data = h("textarea#event-data", {
    name: "event-data", rows: 4, spellcheck: "false", autocomplete: "off", placeholder: '{"orderId": 42}',
  });
  const error = h("p.error#event-error", { role: "alert" });
  const result = h("div#event-runs", { role: "status" });
  const submit = h("button.primary#send-event-submit", { type: "submit" }, "Send event");
  const form = h("form#send-event", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      const eventName = name.value.trim();
      if (!EVENT_NAME.test(eventName) || eventName.length > 255) {
        error.textContent = "An event name is dot-separated words of letters, digits, _ and - (at most 255 characters).";
        return;
      }
      const body = { name: eventName };
      if (data.value.trim()) {
        const parsed = parseJson(data.value, { quote: false });
        if (!parsed.ok) {
          error.textContent = `The data: ${parsed.message}`;
          return;
        }
        body.data = parsed.value;
      }
      submit.disabled = true;
      try {
        const accepted = await api.post(`${envBase(env)}/events`, body);
        const n = accepted.runs.length;
        replace(result, n === 0
          ? h("p.empty", `No function's trigger matches ${eventName}: no run was started.`)
          : [h("p", `${eventName} started ${n} run${n === 1 ? "" : "s"}:`),
            h("ul", accepted.runs.map((r) => h("li",
              h("a", { href: runHref(env, r.id) }, h("code", r.id)), " of ",
              h("a", { href: fnHref(env, r.functionId) }, r.functionId))))]);
      } catch (err) {
        if (err.name !== "AbortError") error.textContent = err.message;
      } finally {
        submit.disabled = false;
      }
    },
  },
  field("Event name", name),
  field("Data (JSON, optional)", data, "Handed to each run as event.data; at most 64 KiB. Not secret: runs show it."),
  error,
  h("div.toolbar", submit),
  result);
  return h("section#event-section", h("h2", "Send an event"), form);
}

// ---------------------------------------------------------------------------------------
// Register or update a function; rotate its signing secret; show a signing secret once.

/** Resolves with {fn, secret} (secret only on a registration), or null. */
function functionDialog(ctx, existing) {
  const { api, env } = ctx;
  return dialog(existing ? `Update function ${existing.id}` : "Register a function", (close) => {
    const input = (id, attrs = {}) => h(`input#${id}`, { autocomplete: "off", spellcheck: "false", ...attrs });
    const id = existing ? null : input("function-id", {
      // (a pattern attribute is compiled with the v flag: "-" is escaped in the class)
      name: "id", required: true, pattern: "[a-z0-9][a-z0-9_\\-]{0,62}", placeholder: "send-invoice",
    });
    const mode = h("select#function-mode", { name: "mode" },
      ["pull", "push"].map((m) => h("option", { value: m, selected: (existing?.mode || "pull") === m }, m)));
    const url = input("function-url", { name: "url", type: "url", placeholder: "https://hooks.example.com/coffer", value: existing?.url || "" });
    const list = (items) => (items || []).join(" ");
    const triggers = input("function-triggers", { name: "triggers", placeholder: "order.created invoice.*", value: list(existing?.triggers.map((t) => t.event)) });
    const secrets = input("function-secrets", { name: "secrets", placeholder: "STRIPE_KEY DATABASE_URL", value: list(existing?.secrets) });
    const config = input("function-config", { name: "config", placeholder: "REGION", value: list(existing?.config) });
    const number = (nid, min, max, value) => input(nid, { type: "number", min, max, step: 1, required: true, value });
    const timeoutMs = number("function-timeout", 1, 300000, existing?.timeoutMs ?? 10000);
    const retries = number("function-retries", 0, 10, existing?.retries ?? 3);
    const concurrency = number("function-concurrency", 1, 256, existing?.concurrency ?? 16);
    const pushOnly = h("fieldset.push-only",
      h("legend", "Push delivery"),
      field("URL", url, "This machine, or https:// to a host the operator allows. No credentials in it: every read shows it."),
      field("Timeout (ms)", timeoutMs),
      field("Retries after a failed attempt", retries),
      field("Attempts in flight per node", concurrency));
    const sync = () => {
      pushOnly.hidden = mode.value !== "push";
      url.required = mode.value === "push";
    };
    mode.addEventListener("change", sync);
    sync();

    const error = h("p.error#function-error", { role: "alert" });
    const submit = h("button.primary#save-function", { type: "submit" }, existing ? "Save" : "Register");
    const words = (el) => el.value.split(/[\s,]+/).filter(Boolean);
    return h("form#function-form", {
      autocomplete: "off",
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        const fid = existing ? existing.id : id.value.trim();
        if (!FUNCTION_ID.test(fid)) {
          error.textContent = "An id is a lowercase letter or digit followed by lowercase letters, digits, _ or - (at most 63).";
          return;
        }
        const bad = [...words(secrets), ...words(config)].filter((n) => !NAME.test(n));
        if (bad.length) {
          error.textContent = `Not valid names: ${bad.join(", ")}`;
          return;
        }
        const body = {
          triggers: words(triggers).map((event) => ({ event })),
          secrets: words(secrets),
          config: words(config),
          mode: mode.value,
          expectedRevision: existing ? existing.revision : 0,
        };
        if (mode.value === "push") {
          Object.assign(body, {
            url: url.value.trim(),
            timeoutMs: Number(timeoutMs.value),
            retries: Number(retries.value),
            concurrency: Number(concurrency.value),
          });
        }
        submit.disabled = true;
        try {
          const saved = await api.put(`${envBase(env)}/functions/${seg(fid)}`, body);
          const secret = saved.signingSecret || null;
          delete saved.signingSecret;
          close({ fn: saved, secret });
        } catch (err) {
          if (err.status === 409) {
            error.textContent = existing
              ? `${fid} changed since this page loaded (now revision ${err.currentRevision ?? "?"}). Reload the page to edit that revision.`
              : `A function ${fid} already exists: edit it from its page.`;
          } else if (err.name !== "AbortError") {
            error.textContent = err.message;
          }
        } finally {
          submit.disabled = false;
        }
      },
    },
    id ? field("Id", id, "Lowercase letters, digits, _ and -.") : null,
    field("Mode", mode, "pull: workers with a runtime key poll for jobs; push: Coffer POSTs each job, signed."),
    field("Triggers", triggers, "Event names or patterns (order.* one word, order.> one or more), separated by spaces."),
    field("Secrets", secrets, "Names of secrets its runs receive, separated by spaces. Values are never entered here."),
    field("Config keys", config, "Separated by spaces."),
    pushOnly,
    error,
    h("div.actions",
      h("button", { type: "button", onclick: () => close(null) }, "Cancel"),
      submit));
  });
}

/** Asks for the grace period of a rotation; resolves with it in ms, or null. */
function rotateDialog(fn) {
  return dialog(`Rotate the signing secret of ${fn.id}`, (close) => {
    const hours = h("input#grace-hours", { type: "number", min: 0, max: 720, step: 1, required: true, value: 24 });
    return h("form", {
      onsubmit: (e) => {
        e.preventDefault();
        close(Math.round(Number(hours.value) * 3600000));
      },
    },
    h("p", "A new signing secret replaces the current one. It is shown once, right after."),
    field("Grace period (hours)", hours, "For this long, deliveries are also signed with the old secret, so receivers can switch at their pace (at most 720 hours)."),
    h("div.actions",
      h("button", { type: "button", onclick: () => close(null) }, "Cancel"),
      h("button.primary#confirm-rotate", { type: "submit" }, "Rotate")));
  });
}

/**
 * Shows a signing secret once, like a new API key: a box with a copy button. The box's text
 * node is the only copy the page keeps; it is emptied whenever the dialog closes.
 */
function showSigningSecretOnce(functionId, secret, intro) {
  if (!secret) return Promise.resolve(null);
  return dialog(`Signing secret of ${functionId}`, (done) => {
    const box = h("p.key-once#signing-secret", secret);
    secret = null;
    // However the dialog closes (Done, Escape), the secret leaves the page.
    queueMicrotask(() => box.closest("dialog")?.addEventListener("close", () => box.replaceChildren(), { once: true }));
    return h("div",
      h("p", intro, " This is the only time it is shown: copy it into the receiver's configuration now. ",
        "Push receivers check each delivery's Coffer-Signature with it; Coffer keeps it sealed and never shows it again."),
      box,
      h("div.actions",
        withId(button("Copy", () => copyText(box)), "copy-signing-secret"),
        h("button.primary#signing-secret-done", { type: "button", onclick: () => done(true) }, "Done")));
  });
}

async function copyText(el) {
  try {
    await navigator.clipboard.writeText(el.textContent);
    toast("Copied to the clipboard.");
  } catch {
    // No clipboard access (an insecure origin, a denied permission): select it instead.
    const range = document.createRange();
    range.selectNodeContents(el);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    toast("Selected: press Ctrl+C (⌘C) to copy it.");
  }
}

// ---------------------------------------------------------------------------------------
// Small helpers.

/** Names as code chips; `none` when there are none. */
function codes(list, none = "none") {
  if (!list?.length) return h("span.hint", none);
  return h("span.codes", list.map((x) => h("code", x)));
}
