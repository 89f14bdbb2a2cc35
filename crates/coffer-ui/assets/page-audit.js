// The audit log: filters, cursor paging (in seq order, as the API serves it) and, for an
// admin, the hash chain's check. An admin sees every row; a manage key only its
// environment's (the API enforces it; the environment filter is fixed here to match).
// Every field is rendered as text — a denied request's user agent is whatever the caller
// sent, so it is treated like any other untrusted string.

import { badge, button, field, h, replace, report, when } from "./dom.js";

const PAGE = 100;
// One request examines at most 10,000 sequence numbers, so a selective filter can answer
// with an empty page that still has a next one: follow up to this many such pages at once.
const EMPTY_HOPS = 20;

export async function render(ctx) {
  const { api, can, main, signal, who } = ctx;
  const view = {
    query: {},
    cursors: [undefined], // the cursor each visited page was fetched from; last = on screen
    rows: [],
    next: null,
  };

  // Filters.
  const environment = h("select#audit-environment", { name: "environment", disabled: !can.admin },
    can.admin ? h("option", { value: "" }, "any") : null,
    (can.admin ? ctx.environments : [who.environment]).map((e) => h("option", { value: e }, e)));
  const actor = h("input#audit-actor", {
    name: "actor", autocomplete: "off", spellcheck: "false", placeholder: "ak_… or system",
    pattern: "ak_[0-9a-f]{16}|system",
  });
  const action = h("input#audit-action", {
    name: "action", autocomplete: "off", spellcheck: "false", maxlength: 256, placeholder: "secret.created",
  });
  const subject = h("input#audit-subject", {
    name: "subject", autocomplete: "off", spellcheck: "false", placeholder: "system.secret.>",
  });
  const result = h("select#audit-result", { name: "result" },
    h("option", { value: "" }, "any"),
    h("option", { value: "allowed" }, "allowed"),
    h("option", { value: "denied" }, "denied"));
  const since = h("input#audit-since", { type: "datetime-local", name: "since", step: 1 });
  const until = h("input#audit-until", { type: "datetime-local", name: "until", step: 1 });
  const filterError = h("p.error#audit-filter-error", { role: "alert" });

  const form = h("form.filters#audit-filters", {
    onsubmit: (e) => {
      e.preventDefault();
      apply();
    },
    onreset: () => {
      // After the browser has cleared the fields.
      setTimeout(() => {
        if (!can.admin) environment.value = who.environment;
        apply();
      });
    },
  },
  h("div.filter-grid",
    field("Environment", environment),
    field("Actor (key id)", actor),
    field("Action", action),
    field("Subject", subject, "NATS pattern: * one token, > the rest"),
    field("Result", result),
    field("Since", since, "your local time; rows at or after"),
    field("Until", until, "your local time; rows before")),
  filterError,
  h("div.toolbar",
    h("button.primary#audit-apply", { type: "submit" }, "Apply"),
    h("button#audit-reset", { type: "reset" }, "Clear"),
    h("button#audit-last-day", {
      type: "button",
      onclick: () => {
        since.value = localInput(new Date(Date.now() - 24 * 3600 * 1000));
        until.value = "";
        apply();
      },
    }, "Last 24 hours")));

  /** The filters as query parameters; throws with a message when a time is not one. */
  function readFilters() {
    const q = {
      environment: environment.value,
      actor: actor.value.trim(),
      action: action.value.trim(),
      subject: subject.value.trim(),
      result: result.value,
      since: toUtc(since.value, "Since"),
      until: toUtc(until.value, "Until"),
    };
    if (q.since && q.until && q.since >= q.until) throw new Error("“Since” must be before “Until”.");
    return q;
  }

  function apply() {
    filterError.textContent = "";
    try {
      view.query = readFilters();
    } catch (e) {
      filterError.textContent = e.message;
      return;
    }
    view.cursors = [undefined];
    load().catch(showError);
  }

  const showError = (e) => {
    if (e?.name === "AbortError") return;
    if (e?.status === 400) filterError.textContent = e.message; // invalid_query names the parameter
    else report(e);
  };

  // Paging.
  const tableBox = h("div.table-wrap#audit-box");
  const pageInfo = h("span.hint#audit-page-info", { role: "status" });
  const prev = h("button#audit-prev", { type: "button", onclick: () => go(-1) }, "← Previous");
  const next = h("button#audit-next", { type: "button", onclick: () => go(1) }, "Next →");

  async function load() {
    let cursor = view.cursors[view.cursors.length - 1];
    let rows = [];
    let hops = 0;
    let page;
    do {
      page = await api.get("/v1/audit", { query: { ...view.query, limit: PAGE, cursor }, signal });
      rows = page.entries;
      cursor = page.nextCursor;
      hops += 1;
    } while (!rows.length && cursor && hops < EMPTY_HOPS);
    view.rows = rows;
    view.next = page.nextCursor || null;
    draw();
  }

  async function go(step) {
    if (step > 0 && view.next) view.cursors.push(view.next);
    if (step < 0 && view.cursors.length > 1) view.cursors.pop();
    await load().catch(showError);
  }

  function draw() {
    if (!view.rows.length) {
      replace(tableBox, h("p.empty", view.next
        ? "No matching rows in this stretch of the log yet; “Next” looks further."
        : "No matching rows."));
    } else {
      replace(tableBox, h("table#audit.audit",
        h("thead", h("tr", ["Seq", "Time", "Actor", "Action", "Subject", "Environment", "Name", "Revision",
          "Result", "Remote address", "User agent", "Event", ""].map((l) => h("th", { scope: "col" }, l)))),
        h("tbody", view.rows.map(row))));
    }
    const first = view.rows[0]?.seq;
    const last = view.rows[view.rows.length - 1]?.seq;
    pageInfo.textContent = view.rows.length
      ? `Page ${view.cursors.length}: ${view.rows.length} row${view.rows.length === 1 ? "" : "s"}, seq ${first}–${last}`
      : `Page ${view.cursors.length}`;
    prev.disabled = view.cursors.length <= 1;
    next.disabled = !view.next;
  }

  function row(r) {
    const actorCell = r.actor?.keyId
      ? [h("code", r.actor.keyId), r.actor.keyName && r.actor.keyName !== r.actor.keyId ? [h("br"), h("span.hint", r.actor.keyName)] : null]
      : h("span.hint", "unknown key");
    return h("tr", { dataset: { seq: String(r.seq) }, class: r.result === "denied" ? "denied" : "" },
      h("td.num", { dataset: { col: "seq" } }, String(r.seq)),
      h("td.nowrap", { dataset: { col: "at" } }, when(r.at)),
      h("td", { dataset: { col: "actor" } }, actorCell),
      h("td.mono.wrap", { dataset: { col: "action" } }, breakable(r.action)),
      h("td.mono.wrap", { dataset: { col: "subject" } }, breakable(r.subject)),
      h("td", { dataset: { col: "environment" } }, r.environment ?? ""),
      h("td.mono.wrap", { dataset: { col: "name" } }, r.name ?? ""),
      h("td.num", { dataset: { col: "revision" } }, r.revision ?? ""),
      h("td.nowrap", { dataset: { col: "result" } }, badge(r.result),
        r.status != null ? [" ", h("span.hint", String(r.status))] : null,
        r.count > 1 ? [" ", h("span.hint", { title: r.result === "denied" ? "identical attempts within one second" : "items" }, `×${r.count}`)] : null),
      h("td.mono", { dataset: { col: "remote" } }, r.remote ?? ""),
      h("td.wrap.ua", { dataset: { col: "userAgent" } }, r.userAgent ?? ""),
      h("td.num", { dataset: { col: "event" } }, r.event ?? ""),
      h("td", { dataset: { col: "more" } }, h("details",
        h("summary", "more"),
        h("dl.row-detail",
          r.detail != null ? [h("dt", "Detail"), h("dd", h("code", r.detail))] : null,
          h("dt", "Hash"), h("dd", h("code", r.hash)),
          h("dt", "Previous hash"), h("dd", h("code", r.prevHash))))));
  }

  // The chain check (admin).
  const chainBox = h("div#audit-chain", { role: "status" });
  const verifyButton = can.admin ? button("Check the chain", async () => {
    replace(chainBox, h("p.hint", "Checking every row…"));
    try {
      const v = await api.get("/v1/audit/verify", { signal });
      replace(chainBox, h("dl.stats#audit-chain-result", { dataset: { ok: String(v.ok) } },
        h("dt", "Chain"), h("dd", { dataset: { field: "ok" } }, v.ok ? badge("ok") : badge("broken")),
        h("dt", "Rows checked"), h("dd", { dataset: { field: "rows" } }, String(v.rows)),
        h("dt", "Head seq"), h("dd", { dataset: { field: "headSeq" } }, String(v.headSeq)),
        h("dt", "Head hash"), h("dd", { dataset: { field: "headHash" } }, h("code", v.headHash)),
        v.firstBroken ? [
          h("dt", "First broken row"),
          h("dd", { dataset: { field: "firstBroken" } },
            `seq ${v.firstBroken.seq}: `, badge(v.firstBroken.problem, "broken"), " ", v.firstBroken.message),
        ] : null),
      h("p.hint", "The chain shows tampering by whoever can write the database but cannot prevent it: keep a copy of the head hash elsewhere to compare."));
    } catch (e) {
      replace(chainBox);
      report(e);
    }
  }) : null;
  if (verifyButton) verifyButton.id = "audit-verify";

  replace(main,
    h("h1", "Audit log"),
    can.admin ? null : h("p.hint", "A manage key sees the rows of its own environment."),
    form,
    verifyButton ? h("div.toolbar", verifyButton, h("span.hint", "Walks the whole log and checks every row's hash.")) : null,
    chainBox,
    tableBox,
    h("div.pager", prev, next, pageInfo),
    h("p.hint", "Rows in order of seq (oldest first); a denied request's action and subject are its route. No row holds a secret or config value."));
  if (!can.admin) environment.value = who.environment;
  view.query = readFilters();
  await load();
}

/** Text with a line-break opportunity (<wbr>) after each "." and "/": subjects and routes wrap there. */
function breakable(text) {
  if (text == null) return "";
  return String(text).split(/(?<=[./])/).flatMap((part) => [part, h("wbr")]).slice(0, -1);
}

/** A datetime-local value (local time, no zone) → RFC 3339 UTC; "" stays "". */
function toUtc(local, label) {
  if (!local) return "";
  const d = new Date(local); // a date-time without an offset is read as local time
  if (Number.isNaN(d.getTime())) throw new Error(`“${label}” is not a date and time.`);
  return d.toISOString();
}

/** A Date → the datetime-local form of it, in local time. */
function localInput(d) {
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
