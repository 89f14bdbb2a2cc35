// Orchestrations of one environment. Three routes:
//   #/env/{env}/orchestrations                 the orchestrations (cursor-paged) and the
//                                              environment's orchestration runs
//   #/env/{env}/orchestrations/{id}            one definition: its steps in order, its runs,
//                                              "Start a run", edit (JSON), delete
//   #/env/{env}/orchestration-runs/{runId}     one run: its status, each step's state and
//                                              output, and Approve / Reject while it waits
// A compute step's encrypted params are masked by the server on every read; this page shows
// them as ******** whatever the read says, a reference as "secret NAME", and sends the masked
// form back unchanged when a definition is edited (which keeps the stored value). Runs follow
// the event stream (`system.orchestration.>`); a run's page also reads it again every 2 s
// until it ends, since a step can move on without an orchestration event.

import { seg, sleep } from "./api.js";
import {
  backTo, badge, button, confirmTyped, cursorPager, dialog, duration, field, grid, h, replace, report,
  toast, when, withId,
} from "./dom.js";
import { parseJson } from "./json.js";

const PAGE = 50;
const MASK = "********";
const RUN_STATUSES = ["running", "waiting_approval", "succeeded", "failed", "rejected"];
const ENDED = new Set(["succeeded", "failed", "rejected"]);
const OPS = { eq: "equals", ne: "does not equal", gt: "is greater than", lt: "is less than", exists: "exists" };

export async function render(ctx) {
  if (/^\/env\/[^/]+\/orchestration-runs\//.test(ctx.path)) return renderRun(ctx, ctx.params[0]);
  if (ctx.params.length) return renderOrchestration(ctx, ctx.params[0]);
  return renderList(ctx);
}

const envBase = (env) => `/v1/environments/${seg(env)}`;
const listHref = (env) => `#/env/${seg(env)}/orchestrations`;
const orchHref = (env, id) => `#/env/${seg(env)}/orchestrations/${seg(id)}`;
const runHref = (env, id) => `#/env/${seg(env)}/orchestration-runs/${seg(id)}`;
const fnHref = (env, id) => `#/env/${seg(env)}/functions/${seg(id)}`;
const fnRunHref = (env, id) => `#/env/${seg(env)}/runs/${seg(id)}`;

/** `system.orchestration.run.{runId}.{what}` → the run id; definition events → null. */
const runOf = (event) => (String(event.subject).startsWith("system.orchestration.run.") ? event.name : null);

// ---------------------------------------------------------------------------------------
// #/env/{env}/orchestrations

async function renderList(ctx) {
  const { api, env, main, signal } = ctx;
  const manage = ctx.can.manage(env);
  const listBox = h("div.table-wrap#orchestrations");
  const pager = cursorPager("orchestrations", async (cursor) => {
    const page = await api.get(`${envBase(env)}/orchestrations`, { query: { limit: PAGE, cursor }, signal });
    replace(listBox, grid([
      { key: "id", label: "Orchestration", mono: true, render: (o) => h("a", { href: orchHref(env, o.id) }, o.id) },
      { key: "name", label: "Name" },
      { key: "steps", label: "Steps", render: (o) => stepSummary(o.steps) },
      { key: "revision", label: "Revision", render: (o) => String(o.revision) },
      { key: "updatedAt", label: "Updated", render: (o) => when(o.updatedAt) },
    ], page.orchestrations, { empty: "No orchestrations in this environment yet." }));
    return page.nextCursor;
  });
  const runs = runsPanel(ctx, {});

  async function create() {
    const saved = await definitionDialog(ctx, null);
    if (!saved) return;
    toast(`Created ${saved.name}.`);
    ctx.navigate(orchHref(env, saved.id));
  }

  replace(main,
    h("h1", "Orchestrations in ", h("code", env)),
    manage ? h("div.toolbar",
      withId(button("New orchestration", create, { kind: "primary" }), "new-orchestration")) : null,
    listBox,
    pager.el,
    runs.el);
  await Promise.all([pager.load(), runs.load()]);

  // Live: run events go to the runs table; a definition created, updated or deleted
  // reloads the page of orchestrations on screen (at most every half second).
  let timer = null;
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  api.stream("system.orchestration.>", {
    signal,
    onEvent: (event) => {
      if (event.environment !== env) return;
      if (runOf(event)) { runs.onEvent(event); return; }
      timer ??= setTimeout(() => { timer = null; pager.load().catch(() => {}); }, 500);
    },
  }).catch(() => {});
}

/** "3: approval, decision, compute". */
function stepSummary(steps) {
  return `${steps.length}${steps.length ? ": " : ""}${steps.map((s) => s.type).join(", ")}`;
}

// ---------------------------------------------------------------------------------------
// #/env/{env}/orchestrations/{id}

async function renderOrchestration(ctx, id) {
  const { api, env, main, signal } = ctx;
  const manage = ctx.can.manage(env);
  const url = `${envBase(env)}/orchestrations/${seg(id)}`;
  let orch;
  try {
    orch = await api.get(url, { signal });
  } catch (e) {
    if (e.status !== 404) throw e;
    replace(main, backTo(listHref(env), "Orchestrations"), h("h1", "Orchestration not found"),
      h("p.empty", `There is no orchestration ${id} in ${env}.`));
    return;
  }

  const title = h("h1");
  const details = h("dl.props#orchestration-details");
  const steps = h("ol.steps#steps");
  const gone = h("p.error#orchestration-deleted", { role: "alert", hidden: true },
    "This orchestration was deleted. Its runs' history stays.");
  function draw() {
    replace(title, "Orchestration ", h("span.name", orch.name));
    replace(details,
      h("dt", "Id"), h("dd", h("code", orch.id)),
      h("dt", "Revision"), h("dd", String(orch.revision)),
      h("dt", "Created"), h("dd", when(orch.createdAt)),
      h("dt", "Updated"), h("dd", when(orch.updatedAt)));
    replace(steps, orch.steps.map((s) => stepItem(ctx, s, steps)));
    if (!orch.steps.length) steps.append(h("li.empty", "No steps."));
  }

  async function start() {
    const run = await startDialog(ctx, orch);
    if (run) ctx.navigate(runHref(env, run.id));
  }

  async function edit() {
    const saved = await definitionDialog(ctx, orch);
    if (!saved) return;
    orch = saved;
    draw();
    toast(`Saved ${orch.name} (revision ${orch.revision}).`);
  }

  async function remove() {
    const ok = await confirmTyped(`Delete orchestration ${orch.name}`,
      "Its definition and its encrypted params are deleted. Its runs' history stays; a run still going fails at its next compute step.",
      orch.id);
    if (!ok) return;
    try {
      await api.delete(url, { query: { expectedRevision: orch.revision } });
      toast(`Deleted ${orch.name}.`);
      ctx.navigate(listHref(env));
    } catch (e) {
      if (e.status === 409) toast("It changed since this page loaded; look again before deleting.", "error");
      else report(e);
    }
  }

  const runs = runsPanel(ctx, { orchestrationId: orch.id });
  draw();
  replace(main,
    backTo(listHref(env), "Orchestrations"),
    title,
    manage ? h("div.toolbar",
      withId(button("Start a run", start, { kind: "primary" }), "start-run"),
      withId(button("Edit", edit), "edit-orchestration"),
      h("span.grow"),
      withId(button("Delete", remove, { kind: "danger" }), "delete-orchestration")) : null,
    gone,
    details,
    h("h2", "Steps"),
    h("p.hint", "In this order, unless a decision jumps. Encrypted params are never shown: they are sealed, and opened only for their step's function run."),
    steps,
    runs.el);
  await runs.load();

  api.stream("system.orchestration.>", {
    signal,
    onEvent: (event) => {
      if (event.environment !== env) return;
      if (runOf(event)) { runs.onEvent(event); return; }
      if (event.name !== orch.id) return;
      if (String(event.subject).endsWith(".deleted")) { gone.hidden = false; return; }
      api.get(url, { signal }).then((fresh) => { orch = fresh; draw(); }).catch(() => {});
    },
  }).catch(() => {});
}

/** One step of a definition, as a list item; decisions link to the steps they jump to. */
function stepItem(ctx, s, list) {
  const { env } = ctx;
  const jump = (target) => h("a.step-link", {
    href: `#${ctx.path}`,
    dataset: { jump: target },
    onclick: (e) => {
      e.preventDefault();
      const li = list.querySelector(`li[data-step="${CSS.escape(target)}"]`);
      if (!li) return;
      li.scrollIntoView({ block: "center" });
      li.focus();
      li.classList.remove("flash");
      void li.offsetWidth; // restarts the highlight
      li.classList.add("flash");
    },
  }, target);

  let body;
  switch (s.type) {
    case "compute":
      body = [
        h("p", "Runs function ", h("a", { href: fnHref(env, s.functionId) }, h("code", s.functionId)), "."),
        s.params && Object.keys(s.params).length
          ? [h("div.label", "Params"), h("pre.json", JSON.stringify(s.params, null, 2))] : null,
        s.encryptedParams && Object.keys(s.encryptedParams).length
          ? [h("div.label", "Encrypted params"), paramList(s.encryptedParams)] : null,
      ];
      break;
    case "approval":
      body = h("p", s.timeoutMs != null
        ? `Waits for an approval; without one within ${duration(s.timeoutMs)}, the run fails.`
        : "Waits for an approval, for as long as it takes.");
      break;
    case "delay":
      body = h("p", `Waits ${duration(s.durationMs)}.`);
      break;
    case "decision": {
      const c = s.condition || {};
      body = h("p",
        "If ", h("code", c.path), " ", OPS[c.op] || c.op,
        c.op !== "exists" && c.value !== undefined ? [" ", h("code", JSON.stringify(c.value))] : null,
        ", go to ", jump(s.then), "; else to ", jump(s.else), ".");
      break;
    }
    default:
      body = h("pre.json", JSON.stringify(s, null, 2));
  }
  return h("li", { dataset: { step: s.id }, tabindex: -1 },
    h("div.step-head", h("strong", h("code", s.id)), h("span.step-type", s.type)),
    body);
}

/** A compute step's encryptedParams: masked entries as ********, references by name. */
function paramList(params) {
  return h("dl.props.params", Object.entries(params).map(([name, p]) => [
    h("dt", h("code", name)),
    h("dd",
      p?.secretRef != null
        ? ["secret ", h("code", p.secretRef), h("small.hint", " (a reference: its current value is read when the step runs)")]
        : p?.encrypted === false
          ? [h("code", JSON.stringify(p.value)), h("small.hint", " (plain)")]
          // Anything else is masked, whatever its form: a value is shown only when the
          // server says outright that it is not encrypted.
          : [h("span.masked", MASK), h("small.hint", " (encrypted)")]),
  ]));
}

// ---------------------------------------------------------------------------------------
// #/env/{env}/orchestration-runs/{runId}

async function renderRun(ctx, runId) {
  const { api, env, main, signal } = ctx;
  const url = `${envBase(env)}/orchestration-runs/${seg(runId)}`;
  let run;
  try {
    run = await api.get(url, { signal });
  } catch (e) {
    if (e.status !== 404) throw e;
    replace(main, backTo(listHref(env), "Orchestrations"), h("h1", "Run not found"),
      h("p.empty", `There is no orchestration run ${runId} in ${env}: ended runs are deleted after their retention period.`));
    return;
  }
  // The definition, for its name and the steps' types: only when it is still the revision
  // the run pinned (a later revision may have other steps under the same ids).
  const orch = await api.get(`${envBase(env)}/orchestrations/${seg(run.orchestrationId)}`, { signal }).catch(() => null);
  const types = new Map(orch && orch.revision === run.orchestrationRevision ? orch.steps.map((s) => [s.id, s.type]) : []);

  const details = h("dl.props#orchestration-run-details");
  const steps = h("ol.steps#run-steps");

  // The decision form stays the same element across refreshes (a reason being typed is
  // kept); it is only shown or hidden.
  const reason = h("input#decision-reason", {
    name: "reason", maxlength: 1024, autocomplete: "off", placeholder: "Checked the amount with finance",
  });
  const approve = h("button.primary#approve-run", { type: "button", onclick: () => decide("approve") }, "Approve");
  const reject = h("button.danger#reject-run", { type: "button", onclick: () => decide("reject") }, "Reject");
  const waitingAt = h("p#waiting-at");
  const message = h("p#decision-message", { role: "alert" });
  const approval = h("section.approval#approval", { hidden: true },
    h("h2", "Waiting for approval"),
    waitingAt,
    field("Reason (optional)", reason, "Kept in the step's output and the audit log."),
    h("div.toolbar", approve, reject));
  const canDecide = ctx.can.manage(env);

  function draw() {
    const status = badge(run.status);
    status.id = "run-status";
    replace(details,
      h("dt", "Orchestration"), h("dd",
        h("a", { href: orchHref(env, run.orchestrationId) }, orch ? orch.name : run.orchestrationId),
        ` (revision ${run.orchestrationRevision})`),
      h("dt", "Status"), h("dd", status),
      h("dt", "Current step"), h("dd", run.currentStep ? h("code", run.currentStep) : "—"),
      h("dt", "Started"), h("dd", when(run.createdAt)),
      h("dt", "Updated"), h("dd", when(run.updatedAt)),
      h("dt", "Params"), h("dd", Object.keys(run.params || {}).length
        ? h("pre.json#run-params", JSON.stringify(run.params, null, 2)) : h("span.hint", "none")));
    replace(steps, run.steps.map((s) => runStepItem(s)));

    const waiting = run.status === "waiting_approval";
    approval.hidden = !(waiting && canDecide);
    approve.disabled = reject.disabled = !waiting;
    if (waiting) {
      const at = run.steps.find((s) => s.id === run.currentStep);
      replace(waitingAt, "Step ", h("code", run.currentStep || "?"), " waits for someone to approve or reject the run",
        at?.until ? `; without a decision by ${when(at.until)}, it fails.` : ".");
    }
  }

  function runStepItem(s) {
    const current = s.id === run.currentStep && !ENDED.has(run.status);
    return h("li", { dataset: { step: s.id }, class: current ? "current" : undefined, "aria-current": current ? "step" : undefined },
      h("div.step-head",
        h("strong", h("code", s.id)),
        types.has(s.id) ? h("span.step-type", types.get(s.id)) : null,
        badge(s.status),
        s.runId ? h("span", "function run ", h("a", { href: fnRunHref(env, s.runId) }, h("code", s.runId))) : null,
        s.until && !ENDED.has(s.status) ? h("span.hint", `until ${when(s.until)}`) : null),
      s.error != null ? h("pre.json.step-error", String(s.error)) : null,
      Object.hasOwn(s, "output") ? h("pre.json", JSON.stringify(s.output, null, 2)) : null);
  }

  async function decide(action) {
    approve.disabled = reject.disabled = true;
    message.textContent = "";
    message.className = "";
    try {
      const text = reason.value.trim();
      run = await api.post(`${url}/${action}`, text ? { reason: text } : {}, { signal });
      reason.value = "";
      message.textContent = action === "approve" ? "Approved: the run goes on." : "Rejected: the run has ended.";
      message.className = "hint";
      draw();
    } catch (e) {
      if (e.name === "AbortError") return;
      message.className = "error";
      if (e.code === "not_waiting") {
        message.textContent = "This run does not wait for an approval any more: someone else decided, or its approval timed out. Its current state is shown below.";
        await refresh().catch(() => {});
      } else {
        message.textContent = e.message;
      }
      approve.disabled = reject.disabled = run.status !== "waiting_approval";
    }
  }

  /** Reads the run again; redraws only when something changed. */
  async function refresh() {
    const fresh = await api.get(url, { signal });
    if (JSON.stringify(fresh) === JSON.stringify(run)) return;
    run = fresh;
    draw();
  }

  draw();
  replace(main,
    backTo(orchHref(env, run.orchestrationId), orch ? `Orchestration ${orch.name}` : "Orchestration"),
    h("h1", "Orchestration run ", h("code", run.id)),
    details,
    message,
    approval,
    h("h2", "Steps"),
    h("p.hint", "Outputs and errors are shown as Coffer stored them: any secret value or encrypted param the step was handed reads ********."),
    steps);

  // Live: the event stream, and a read every 2 s until the run ends (a step's function run
  // ending moves the run on without an orchestration event).
  api.stream("system.orchestration.>", {
    signal,
    onEvent: (event) => {
      if (event.environment === env && runOf(event) === runId) refresh().catch(() => {});
    },
  }).catch(() => {});
  (async () => {
    while (!signal.aborted && !ENDED.has(run.status)) {
      await sleep(2000, signal);
      if (signal.aborted) return;
      await refresh().catch(() => {});
    }
  })();
}

// ---------------------------------------------------------------------------------------
// Orchestration runs of the environment, or of one orchestration: newest first, filters,
// cursor pages; `onEvent` takes the page's run events.

function runsPanel(ctx, { orchestrationId }) {
  const { api, env, signal } = ctx;
  const view = { status: "", orchestrationId: orchestrationId || "", rows: [], flash: new Set() };
  const box = h("div.table-wrap#orchestration-runs");
  const columns = [
    { key: "id", label: "Run", mono: true, render: (r) => h("a", { href: runHref(env, r.id) }, r.id) },
    orchestrationId ? null : {
      key: "orchestrationId", label: "Orchestration", mono: true,
      render: (r) => h("a", { href: orchHref(env, r.orchestrationId) }, r.orchestrationId),
    },
    { key: "status", label: "Status", render: (r) => badge(r.status) },
    { key: "currentStep", label: "Current step", mono: true, render: (r) => r.currentStep || "" },
    { key: "createdAt", label: "Started", render: (r) => when(r.createdAt) },
    { key: "updatedAt", label: "Updated", render: (r) => when(r.updatedAt) },
  ].filter(Boolean);

  const pager = cursorPager("orchestration-runs", async (cursor) => {
    const page = await api.get(`${envBase(env)}/orchestration-runs`, {
      query: { orchestrationId: view.orchestrationId, status: view.status, limit: PAGE, cursor }, signal,
    });
    view.rows = page.runs;
    replace(box, grid(columns, view.rows, { empty: view.status ? `No runs ${view.status.replace("_", " ")}.` : "No runs yet." }));
    for (const id of view.flash) box.querySelector(`tr[data-id="${CSS.escape(id)}"]`)?.classList.add("flash");
    view.flash.clear();
    return page.nextCursor;
  });

  const status = h("select#orchestration-runs-status", {
    "aria-label": "Show runs of this status",
    onchange: () => { view.status = status.value; pager.reset().catch(report); },
  }, h("option", { value: "" }, "Any status"), RUN_STATUSES.map((s) => h("option", { value: s }, s)));
  const error = h("span.error#orchestration-runs-filter-error", { role: "alert" });
  const which = orchestrationId ? null : h("input#orchestration-runs-orchestration", {
    type: "search", autocomplete: "off", spellcheck: "false", placeholder: "orch_…",
    "aria-label": "Only runs of this orchestration id",
    onchange: () => {
      const v = which.value.trim();
      if (v && !/^[A-Za-z0-9_-]{1,64}$/.test(v)) { error.textContent = "An orchestration id is like orch_0123abcd."; return; }
      error.textContent = "";
      view.orchestrationId = v;
      pager.reset().catch(report);
    },
  });

  // Events are gathered for half a second, then the page on screen is read again once.
  let timer = null;
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  function onEvent(event) {
    const onScreen = view.rows.some((r) => r.id === event.name);
    if (!onScreen && !pager.onFirstPage()) return;
    view.flash.add(event.name);
    timer ??= setTimeout(() => { timer = null; pager.load().catch(() => {}); }, 500);
  }

  return {
    el: h("section",
      h("h2", orchestrationId ? "Its runs" : "Orchestration runs"),
      h("div.toolbar",
        h("label", { for: "orchestration-runs-status" }, "Status"), status,
        which ? [h("label", { for: "orchestration-runs-orchestration" }, "Orchestration"), which] : null,
        error,
        h("span.hint", "Newest first; updated live.")),
      box,
      pager.el),
    load: () => pager.load(),
    onEvent,
  };
}

// ---------------------------------------------------------------------------------------
// Dialogs: start a run; create or edit a definition as JSON.

/** Resolves with the started run, or null. */
function startDialog(ctx, orch) {
  return dialog(`Start a run of ${orch.name}`, (close) => {
    const params = h("textarea#run-params-input", {
      name: "params", rows: 5, spellcheck: "false", autocomplete: "off", placeholder: '{"amount": 1200}',
    });
    const error = h("p.error", { role: "alert" });
    const submit = h("button.primary#confirm-start-run", { type: "submit" }, "Start");
    return h("form#start-run-form", {
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        const body = {};
        if (params.value.trim()) {
          const parsed = parseJson(params.value, { quote: false });
          if (!parsed.ok) {
            error.textContent = `The params: ${parsed.message}`;
            return;
          }
          body.params = parsed.value;
          if (!isObject(body.params)) {
            error.textContent = "The params are a JSON object: {\"name\": value, …}.";
            return;
          }
        }
        submit.disabled = true;
        try {
          close(await ctx.api.post(`${envBase(ctx.env)}/orchestrations/${seg(orch.id)}/runs`, body));
        } catch (err) {
          if (err.name !== "AbortError") error.textContent = err.message;
        } finally {
          submit.disabled = false;
        }
      },
    },
    field("Params (JSON object, optional)", params,
      "Every compute step's params start from these, and decisions can test them (params.a.b). Not secret: every read of the run shows them."),
    error,
    h("div.actions",
      h("button", { type: "button", onclick: () => close(null) }, "Cancel"),
      submit));
  });
}

const TEMPLATE = {
  name: "my-orchestration",
  steps: [
    { id: "review", type: "approval", timeoutMs: 86400000 },
    { id: "wait", type: "delay", durationMs: 1000 },
  ],
};

/**
 * The definition as JSON ({"name", "steps"}). Editing starts from the masked read: an
 * encrypted param left as {"value": "********", "encrypted": true} keeps its stored value;
 * a new value is written {"value": "…", "encrypt": true} and is sealed by the server.
 * Resolves with the saved orchestration, or null.
 */
function definitionDialog(ctx, existing) {
  const { api, env } = ctx;
  return dialog(existing ? `Edit ${existing.name}` : "New orchestration", (close) => {
    const text = h("textarea#orchestration-json.json-editor", {
      name: "definition", rows: 20, spellcheck: "false", autocomplete: "off", autocapitalize: "off",
    });
    text.value = JSON.stringify(existing ? { name: existing.name, steps: existing.steps } : TEMPLATE, null, 2);
    const error = h("p.error#orchestration-json-error", { role: "alert" });
    const submit = h("button.primary#save-orchestration", { type: "submit" }, existing ? "Save" : "Create");
    const forget = () => { text.value = ""; }; // it may hold new encrypted values
    return h("form#orchestration-form", {
      autocomplete: "off",
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        // No quoting in the message: the text may hold a new encrypted param's value.
        const parsed = parseJson(text.value, { quote: false });
        if (!parsed.ok) {
          error.textContent = parsed.message;
          return;
        }
        const def = parsed.value;
        const problem = checkDefinition(def);
        if (problem) { error.textContent = problem; return; }
        submit.disabled = true;
        try {
          const body = { name: def.name, steps: def.steps };
          const saved = existing
            ? await api.put(`${envBase(env)}/orchestrations/${seg(existing.id)}`, { ...body, expectedRevision: existing.revision })
            : await api.post(`${envBase(env)}/orchestrations`, body);
          forget();
          close(saved);
        } catch (err) {
          if (err.status === 409) {
            error.textContent = `It changed since this page loaded (now revision ${err.currentRevision ?? "?"}). Cancel and reload the page to edit that revision.`;
          } else if (err.name !== "AbortError") {
            error.textContent = err.message;
          }
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("p.hint", "The whole definition as JSON: {\"name\", \"steps\"}; steps are compute, approval, delay or decision (docs/ORCHESTRATIONS.md)."),
    h("p.hint", "Encrypted params read {\"value\": \"********\", \"encrypted\": true}: leave that as it is to keep the stored value, remove the entry to delete it, or write {\"value\": \"…\", \"encrypt\": true} to set a new one — it is sealed and never shown again. {\"secretRef\": \"NAME\"} refers to a secret the step's function declares."),
    field("Definition", text),
    error,
    h("div.actions",
      h("button", { type: "button", onclick: () => { forget(); close(null); } }, "Cancel"),
      submit));
  });
}

/** What is wrong with a definition before it is sent (the server checks the rest), or null. */
function checkDefinition(def) {
  if (!isObject(def)) return "The definition is a JSON object: {\"name\": …, \"steps\": […]}.";
  const extra = Object.keys(def).filter((k) => k !== "name" && k !== "steps");
  if (extra.length) return `Only "name" and "steps" are part of a definition (not ${extra.join(", ")}).`;
  if (typeof def.name !== "string" || !def.name.trim()) return "The definition needs a \"name\".";
  if (!Array.isArray(def.steps)) return "\"steps\" is a list of steps.";
  for (const step of def.steps) {
    if (!isObject(step)) return "Each step is a JSON object.";
    for (const [param, p] of Object.entries(step.encryptedParams || {})) {
      const where = `Step ${step.id}, encrypted param ${param}`;
      // The masked form keeps the stored value only when it is sent back exactly as read.
      if (isObject(p) && p.encrypted === true && p.value !== MASK) {
        return `${where}: a masked value is kept only when sent back unchanged ({"value": "${MASK}", "encrypted": true}). To set a new value, write {"value": "…", "encrypt": true}.`;
      }
      if (isObject(p) && p.encrypt === true && p.value === MASK) {
        return `${where}: "${MASK}" would be sealed as the value itself. Leave {"value": "${MASK}", "encrypted": true} to keep the stored one.`;
      }
    }
  }
  return null;
}

const isObject = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
