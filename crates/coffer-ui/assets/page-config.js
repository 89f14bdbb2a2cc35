// Config of one environment. Unlike secrets, config entries are plaintext JSON by design:
// the API returns their values to admin and manage keys, so this page shows a preview in
// the list and the whole value in the editor. Pages of 100 in key order from the server;
// writes are pinned to the revision that was read (a change made meanwhile is a clear
// conflict, not an overwrite); rows follow `system.config.>` events live.

import { seg } from "./api.js";
import { button, confirmTyped, dialog, field, h, replace, report, toast, when } from "./dom.js";
import { parseJson } from "./json.js";

const PAGE = 100;
const KEY = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const MAX_BYTES = 65536;
const PREVIEW = 120;

export async function render(ctx) {
  const { api, can, env, main, signal } = ctx;
  if (!can.manage(env)) {
    replace(main, h("h1", "Config in ", h("code", env)),
      h("p.error", "This key may not read or change the config of this environment."));
    return;
  }
  const base = `/v1/environments/${seg(env)}/config`;
  const view = {
    cursors: [undefined], // cursor of each page visited; the last is the page on screen
    rows: [],
    next: null,
    fresh: 0, // entries created elsewhere since the page loaded
    mine: new Set(), // keys this tab created (their events are not news)
  };

  const tableBox = h("div.table-wrap#config-box");
  const prev = h("button#config-prev", { type: "button", onclick: () => go(-1) }, "← Previous");
  const next = h("button#config-next", { type: "button", onclick: () => go(1) }, "Next →");
  const fresh = h("p.hint#config-fresh", { hidden: true });

  async function load() {
    const cursor = view.cursors[view.cursors.length - 1];
    const page = await api.get(base, { query: { limit: PAGE, cursor }, signal });
    view.rows = page.config;
    view.next = page.nextCursor || null;
    draw();
  }

  async function go(step) {
    if (step > 0 && view.next) view.cursors.push(view.next);
    if (step < 0 && view.cursors.length > 1) view.cursors.pop();
    try { await load(); } catch (e) { report(e); }
  }

  function row(c) {
    return h("tr", { dataset: { key: c.key } },
      h("td", { dataset: { col: "name" } }, c.key),
      h("td", { dataset: { col: "value" } }, h("code.preview", { title: "Compact JSON; Edit shows all of it" }, preview(c.value))),
      h("td.num", { dataset: { col: "revision" } }, String(c.revision)),
      h("td.nowrap", { dataset: { col: "updatedAt" } }, when(c.updatedAt)),
      h("td.actions-cell",
        button("Edit", () => edit(c), { title: `Edit ${c.key}` }),
        " ",
        button("Delete", () => remove(c), { kind: "danger", title: `Delete ${c.key}` })));
  }

  function draw() {
    const first = (view.cursors.length - 1) * PAGE;
    if (!view.rows.length) {
      replace(tableBox, h("p.empty", view.cursors.length > 1 ? "No more entries." : "No config entries yet."));
    } else {
      replace(tableBox, h("table#config",
        h("caption.hint", `Entries ${first + 1}–${first + view.rows.length}${view.next ? "" : ` of ${first + view.rows.length}`}, by key.`),
        h("thead", h("tr", ["Key", "Value", "Revision", "Updated", ""].map((l) => h("th", { scope: "col" }, l)))),
        h("tbody", view.rows.map(row))));
    }
    prev.disabled = view.cursors.length <= 1;
    next.disabled = !view.next;
    fresh.hidden = view.fresh === 0;
    fresh.textContent = `${view.fresh} entr${view.fresh === 1 ? "y" : "ies"} created since this page loaded. `;
    if (view.fresh) fresh.append(h("button.link", { type: "button", onclick: () => { view.fresh = 0; load().catch(report); } }, "Show"));
  }

  async function edit(existing) {
    const saved = await editor(existing);
    if (!saved) return;
    if (!existing) view.mine.add(saved.key);
    toast(saved.revision === 1 ? `Created ${saved.key}.` : `Saved ${saved.key} (revision ${saved.revision}).`);
    await load().catch(report);
  }

  /** The JSON editor. Resolves with the written entry, or null. */
  function editor(existing) {
    // A copy: a conflict moves the revision this dialog writes against, not the row's.
    const target = existing ? { key: existing.key, revision: existing.revision } : null;
    return dialog(existing ? `Edit ${existing.key}` : "New config entry", (close) => {
      signal.addEventListener("abort", () => close(null), { once: true });
      const key = existing ? null : h("input#config-key", {
        name: "key", required: true, autocomplete: "off", spellcheck: "false",
        pattern: KEY.source, placeholder: "FEATURE_FLAGS",
      });
      const text = h("textarea#config-value.json-editor", {
        name: "value", required: true, spellcheck: "false", autocapitalize: "off", rows: 14,
        "aria-describedby": "config-value-status",
        value: existing ? JSON.stringify(existing.value, null, 2) : "{\n  \n}",
      });
      const parseStatus = h("p.hint#config-value-status", { role: "status" });
      const error = h("p.error#config-error", { role: "alert" });
      const submit = h("button.primary#save-config", { type: "submit" }, existing ? "Save" : "Create");
      const reloadButton = h("button#reload-config", {
        type: "button", hidden: true,
        onclick: async () => {
          try {
            const current = await api.get(`${base}/${seg(target.key)}`, { signal });
            text.value = JSON.stringify(current.value, null, 2);
            target.revision = current.revision;
            error.textContent = `Loaded revision ${current.revision}.`;
            reloadButton.hidden = true;
            check();
          } catch (e) {
            error.textContent = e.status === 404 ? `${target.key} was deleted meanwhile.` : e.message;
          }
        },
      }, "Load the current value");

      /** Parses the editor's text; shows where it breaks. Returns {ok, value}. */
      function check() {
        const parsed = parseJson(text.value);
        if (!parsed.ok) {
          parseStatus.className = "error";
          parseStatus.textContent = parsed.message;
          return parsed;
        }
        const bytes = new TextEncoder().encode(JSON.stringify(parsed.value)).length;
        if (bytes > MAX_BYTES) {
          parseStatus.className = "error";
          parseStatus.textContent = `Valid JSON, but ${bytes.toLocaleString("en")} bytes once compact: the limit is ${MAX_BYTES.toLocaleString("en")}.`;
          return { ok: false };
        }
        parseStatus.className = "hint";
        parseStatus.textContent = `Valid JSON (${describe(parsed.value)}, ${bytes.toLocaleString("en")} bytes compact).`;
        return parsed;
      }
      let timer;
      text.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 200); });
      queueMicrotask(check);

      const format = h("button#format-config", {
        type: "button",
        onclick: () => {
          const parsed = check();
          if (parsed.ok) text.value = JSON.stringify(parsed.value, null, 2);
          else if (parsed.position != null) selectAt(text, parsed.position);
        },
      }, "Format");

      return h("form#config-form", {
        autocomplete: "off",
        onsubmit: async (e) => {
          e.preventDefault();
          error.textContent = "";
          const name = target ? target.key : key.value.trim();
          if (!KEY.test(name)) {
            error.textContent = "A key is a letter or _ followed by letters, digits or _ (at most 128).";
            return;
          }
          const parsed = check();
          if (!parsed.ok) {
            if (parsed.position != null) selectAt(text, parsed.position);
            return;
          }
          submit.disabled = true;
          try {
            const entry = await api.put(`${base}/${seg(name)}`,
              { value: parsed.value, expectedRevision: target ? target.revision : 0 });
            close(entry);
          } catch (err) {
            if (err.status === 409) {
              const now = err.currentRevision;
              if (!target) {
                error.textContent = `${name} already exists (revision ${now ?? "?"}): edit it from its row instead.`;
              } else if (now === 0) {
                error.textContent = `${name} was deleted since you opened it. Save again to create it anew.`;
                target.revision = 0;
              } else {
                error.textContent = `${name} changed since you opened it: it is now at revision ${now ?? "?"}. ` +
                  "Load the current value to start from it, or Save again to replace that revision with yours.";
                if (now) target.revision = now;
                reloadButton.hidden = false;
              }
            } else {
              error.textContent = err.message;
            }
          } finally {
            submit.disabled = false;
          }
        },
      },
      key ? field("Key", key, "Letters, digits and _; not starting with a digit.") : null,
      field("Value (JSON)", text),
      parseStatus,
      h("p.hint", "Config is plaintext, readable by admin and manage keys: put secrets in Secrets, not here."),
      error,
      h("div.actions",
        format,
        reloadButton,
        h("span.grow"),
        h("button", { type: "button", onclick: () => close(null) }, "Cancel"),
        submit));
    });
  }

  async function remove(c) {
    const ok = await confirmTyped(`Delete ${c.key}`,
      `The config entry ${c.key} (revision ${c.revision}) is deleted. Functions that declare it will no longer receive it.`, c.key);
    if (!ok) return;
    try {
      await api.delete(`${base}/${seg(c.key)}`, { query: { expectedRevision: c.revision } });
      toast(`Deleted ${c.key}.`);
      await load();
    } catch (e) {
      if (e.status === 409) {
        toast(`${c.key} changed since this page loaded (now revision ${e.currentRevision ?? "?"}); look again before deleting.`, "error");
        await load().catch(report);
      } else if (e.status === 404) {
        toast(`${c.key} was already deleted.`);
        await load().catch(report);
      } else {
        report(e);
      }
    }
  }

  // Live: the stream reports config writes in this environment; rows on screen follow them.
  function onEvent(event) {
    if (event.environment !== env) return;
    const action = String(event.subject).split(".").pop();
    const i = view.rows.findIndex((r) => r.key === event.name);
    if (action === "deleted") {
      if (i >= 0) { view.rows.splice(i, 1); draw(); }
      return;
    }
    if (i < 0) {
      if (action === "created" && !view.mine.has(event.name)) { view.fresh += 1; draw(); }
      return;
    }
    if (view.rows[i].revision >= event.revision) return; // this tab's own write, already shown
    api.get(`${base}/${seg(event.name)}`, { signal }).then((entry) => {
      const j = view.rows.findIndex((r) => r.key === entry.key);
      if (j < 0) return;
      view.rows[j] = entry;
      draw();
      tableBox.querySelector(`tr[data-key="${CSS.escape(entry.key)}"]`)?.classList.add("flash");
    }).catch(() => {});
  }

  replace(main,
    h("h1", "Config in ", h("code", env)),
    h("div.toolbar",
      h("span.grow"),
      button("New entry", () => edit(null), { kind: "primary" })),
    fresh,
    tableBox,
    h("div.pager", prev, next),
    h("p.hint", "Config values are plain JSON, stored and shown as they are written (compact, with object keys sorted)."));
  await load();
  api.stream("system.config.>", { signal, onEvent }).catch(() => {});
}

/** The compact JSON of a value, cut to a preview. */
function preview(value) {
  const s = JSON.stringify(value);
  return s.length > PREVIEW ? `${s.slice(0, PREVIEW - 1)}…` : s;
}

function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "object") return `an object with ${Object.keys(value).length} key${Object.keys(value).length === 1 ? "" : "s"}`;
  return `a ${typeof value}`;
}

/** Moves the caret to `position` in a textarea (and scrolls it there). */
function selectAt(textarea, position) {
  textarea.focus();
  textarea.setSelectionRange(position, Math.min(position + 1, textarea.value.length));
}
