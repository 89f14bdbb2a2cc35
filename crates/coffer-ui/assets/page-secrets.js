// Secrets of one environment: metadata only. Pages of 100 from the server, which also
// searches and sorts (by name or by last update, either way), so 10,000 secrets are never
// loaded at once; the other columns sort the page on screen. Rows change live as the event
// stream reports writes.
// Values are write-only: typed into a field that is never pre-filled and is cleared and
// removed once sent; a dotenv file dropped on the page is parsed here and sent once.

import { seg } from "./api.js";
import { badge, button, confirmTyped, dialog, field, h, replace, report, toast, when } from "./dom.js";
import { parseDotenv } from "./dotenv.js";

const PAGE = 100;
/** Columns the server sorts by (every page); the others sort the page on screen. */
const SERVER_SORTED = new Set(["name", "updatedAt"]);
const ORDER_WORDS = {
  name: "by name", "-name": "by name, Z to A",
  updatedAt: "least recently updated first", "-updatedAt": "most recently updated first",
};
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

export async function render(ctx) {
  const { api, env, main, signal } = ctx;
  const base = `/v1/environments/${seg(env)}/secrets`;
  const view = {
    search: "",
    cursors: [undefined], // cursor of each page visited; the last is the page on screen
    before: [0], // rows on the pages before each page visited (a search's pages may be short)
    rows: [],
    next: null,
    sort: { key: "name", dir: 1 }, // the column the table is sorted by
    order: "name", // the server's order (`sort`): name, -name, updatedAt, -updatedAt
    fresh: 0, // secrets created elsewhere since the page loaded
  };

  const tableBox = h("div.table-wrap");
  const status = h("p.hint#secrets-status", { role: "status" });
  const prev = h("button#prev-page", { type: "button", onclick: () => go(-1) }, "← Previous");
  const next = h("button#next-page", { type: "button", onclick: () => go(1) }, "Next →");
  const fresh = h("p.hint#fresh", { hidden: true });

  async function load() {
    const cursor = view.cursors[view.cursors.length - 1];
    const page = await api.get(base, {
      query: { limit: PAGE, cursor, search: view.search, sort: view.order }, signal,
    });
    view.rows = page.secrets;
    view.next = page.nextCursor || null;
    // What was created before this read is in it (or on another page): the count restarts.
    view.fresh = 0;
    draw();
  }

  async function go(step) {
    if (step > 0 && view.next) {
      view.cursors.push(view.next);
      view.before.push(view.before[view.before.length - 1] + view.rows.length);
    }
    if (step < 0 && view.cursors.length > 1) {
      view.cursors.pop();
      view.before.pop();
    }
    try { await load(); } catch (e) { report(e); }
  }

  function sorted() {
    const { key, dir } = view.sort;
    if (SERVER_SORTED.has(key)) return view.rows; // already in that order, across pages
    return [...view.rows].sort((a, b) => {
      const x = a[key];
      const y = b[key];
      if (x === y) return a.name < b.name ? -1 : 1;
      return (x < y ? -1 : 1) * dir;
    });
  }

  function header(key, label) {
    const sortState = view.sort.key === key ? (view.sort.dir > 0 ? "ascending" : "descending") : "none";
    const everything = SERVER_SORTED.has(key);
    return h("th", { scope: "col", "aria-sort": sortState },
      h("button.sort", {
        type: "button",
        dataset: { sort: key },
        title: everything ? `Sort all secrets by ${label.toLowerCase()}` : `Sort this page by ${label.toLowerCase()}`,
        onclick: () => {
          const dir = view.sort.key === key ? -view.sort.dir : (key === "updatedAt" ? -1 : 1);
          view.sort = { key, dir };
          if (!everything) { draw(); return; }
          view.order = `${dir < 0 ? "-" : ""}${key}`;
          view.cursors = [undefined];
          view.before = [0];
          load().catch(report);
        },
      }, label));
  }

  function row(s) {
    return h("tr", { dataset: { name: s.name } },
      h("td", { dataset: { col: "name" } }, s.name),
      h("td", { dataset: { col: "revision" } }, String(s.revision)),
      h("td", { dataset: { col: "keyVersion" } }, s.keyVersion === 0 ? "none (dev)" : `v${s.keyVersion}`),
      h("td", { dataset: { col: "status" } }, badge(s.status)),
      h("td", { dataset: { col: "updatedAt" } }, when(s.updatedAt)),
      h("td.actions-cell",
        button("Set value", () => setValue(s)),
        " ",
        button("Delete", () => remove(s), { kind: "danger" })));
  }

  function draw() {
    const first = view.before[view.before.length - 1];
    if (!view.rows.length) {
      // A search reads a bounded stretch of names per page: an empty page may have a next.
      const more = view.next ? " in this stretch of names; Next → looks further" : "";
      replace(tableBox, h("p.empty", view.search ? `No secret names contain “${view.search}”${more}.` : "No secrets yet."));
    } else {
      replace(tableBox, h("table#secrets",
        h("caption.hint", `Secrets ${first + 1}–${first + view.rows.length}${view.next ? "" : ` of ${first + view.rows.length}`}, ${ORDER_WORDS[view.order]}. Name and Updated sort all secrets; the other columns sort this page.`),
        h("thead", h("tr",
          header("name", "Name"), header("revision", "Revision"), header("keyVersion", "Key"),
          header("status", "Status"), header("updatedAt", "Updated"), h("th", { scope: "col" }, ""))),
        h("tbody", sorted().map(row))));
    }
    prev.disabled = view.cursors.length <= 1;
    next.disabled = !view.next;
    fresh.hidden = view.fresh === 0;
    fresh.textContent = `${view.fresh} secret${view.fresh === 1 ? "" : "s"} created since this page loaded. `;
    if (view.fresh) fresh.append(h("button.link", { type: "button", onclick: () => { view.fresh = 0; load().catch(report); } }, "Show"));
  }

  async function setValue(existing) {
    const done = await valueDialog(existing);
    if (!done) return;
    toast(done.created ? `Created ${done.name} (revision 1).` : `Updated ${done.name} to revision ${done.revision}.`);
    await load().catch(report);
  }

  /** The write-only value form. Resolves with the written metadata, or null. */
  function valueDialog(existing) {
    return dialog(existing ? `Set the value of ${existing.name}` : "New secret", (close) => {
      const name = existing ? null : h("input#secret-name", {
        name: "name", required: true, autocomplete: "off", spellcheck: "false",
        pattern: NAME.source, placeholder: "STRIPE_KEY",
      });
      const value = h("textarea#secret-value.secret-value", {
        name: "value", required: true, autocomplete: "off", spellcheck: "false",
        autocapitalize: "off", rows: 4, "aria-describedby": "secret-value-hint",
      });
      const reveal = h("input#reveal-value", { type: "checkbox" });
      reveal.addEventListener("change", () => value.classList.toggle("secret-value", !reveal.checked));
      const error = h("p.error", { role: "alert" });
      const submit = h("button.primary#save-secret", { type: "submit" }, existing ? "Save new value" : "Create");
      const forget = () => { value.value = ""; };
      const form = h("form#secret-form", {
        autocomplete: "off",
        onsubmit: async (e) => {
          e.preventDefault();
          const secretName = existing ? existing.name : name.value.trim();
          if (!NAME.test(secretName)) {
            error.textContent = "A name is a letter or _ followed by letters, digits or _ (at most 128).";
            return;
          }
          submit.disabled = true;
          error.textContent = "";
          try {
            const body = { value: value.value, expectedRevision: existing ? existing.revision : 0 };
            forget();
            const meta = await api.put(`${base}/${seg(secretName)}`, body);
            body.value = "";
            close({ ...meta, created: !existing });
          } catch (err) {
            if (err.code === "revision_conflict" || err.status === 409) {
              error.textContent = existing
                ? `${secretName} changed since this page loaded (now revision ${err.currentRevision ?? "?"}). Type the value again to replace that revision.`
                : `${secretName} already exists. Use “Set value” on its row to replace it.`;
              if (existing && err.currentRevision) existing.revision = err.currentRevision;
            } else {
              error.textContent = err.message;
            }
          } finally {
            submit.disabled = false;
          }
        },
      },
      name ? field("Name", name) : null,
      field("Value", value, "Write-only: it is sent once and can never be shown again, here or anywhere."),
      h("small.hint#secret-value-hint", "Sent over this connection only, then cleared from the page."),
      h("label", reveal, " Show while typing"),
      error,
      h("div.actions",
        h("button", { type: "button", onclick: () => { forget(); close(null); } }, "Cancel"),
        submit));
      form.addEventListener("reset", forget);
      return form;
    });
  }

  async function remove(s) {
    const ok = await confirmTyped(`Delete ${s.name}`,
      `Its value is deleted for good. Functions that declare ${s.name} will no longer receive it.`, s.name);
    if (!ok) return;
    try {
      await api.delete(`${base}/${seg(s.name)}`, { query: { expectedRevision: s.revision } });
      toast(`Deleted ${s.name}.`);
      await load();
    } catch (e) {
      if (e.status === 409) toast(`${s.name} changed since this page loaded; look again before deleting.`, "error");
      else report(e);
    }
  }

  // Live: the stream reports writes in this environment; rows on screen follow them.
  function onEvent(event) {
    if (event.environment !== env) return;
    const action = String(event.subject).split(".").pop();
    const i = view.rows.findIndex((r) => r.name === event.name);
    if (action === "deleted") {
      if (i >= 0) { view.rows.splice(i, 1); draw(); }
      return;
    }
    if (i < 0) {
      if (action === "created") { view.fresh += 1; draw(); }
      return;
    }
    changed.add(event.name);
    if (!flushing) flushing = setTimeout(refresh, 250);
  }

  // Rows written elsewhere, re-read together: one by one when they are few, the whole page
  // when many changed at once (an import), so a burst costs one request, not a hundred.
  const changed = new Set();
  let flushing = null;
  async function refresh() {
    flushing = null;
    const names = [...changed];
    changed.clear();
    try {
      if (names.length > 10) {
        await load();
      } else {
        for (const name of names) {
          const meta = await api.get(`${base}/${seg(name)}`, { signal });
          const j = view.rows.findIndex((r) => r.name === meta.name);
          if (j >= 0) view.rows[j] = meta;
        }
        draw();
      }
      for (const name of names) {
        tableBox.querySelector(`tr[data-name="${CSS.escape(name)}"]`)?.classList.add("flash");
      }
    } catch {
      // Gone meanwhile, or the page was left: the next event or load shows the truth.
    }
  }
  signal.addEventListener("abort", () => clearTimeout(flushing), { once: true });

  // Search: by the server, after a pause in typing.
  let timer;
  const search = h("input#secret-search", {
    type: "search", name: "search", placeholder: "Search names", autocomplete: "off",
    spellcheck: "false", "aria-label": "Search secret names", pattern: "[A-Za-z0-9_]*",
  });
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const term = search.value.trim();
      if (term && !/^[A-Za-z0-9_]{1,128}$/.test(term)) {
        status.textContent = "Names hold only letters, digits and _.";
        return;
      }
      status.textContent = "";
      view.search = term;
      view.cursors = [undefined];
      view.before = [0];
      load().catch(report);
    }, 250);
  });

  replace(main,
    h("h1", "Secrets in ", h("code", env)),
    h("div.toolbar",
      search,
      h("span.grow"),
      button("New secret", () => setValue(null), { kind: "primary", id: "new-secret" })),
    importControls(ctx, base, () => load().catch(report)),
    status,
    fresh,
    tableBox,
    h("div.pager", prev, next),
    h("p.hint", "Values are never shown: not here, not in the API, not to an admin."));
  await load();
  api.stream("system.secret.>", { signal, onEvent }).catch(() => {});
}

/** Import from a dotenv file: dropped on the page or chosen; names previewed, values never. */
function importControls(ctx, base, reload) {
  const picker = h("input#import-file", { type: "file", accept: ".env,text/plain", hidden: true });
  const zone = h("div.dropzone#dropzone", "Drop a .env file here to import it");
  const start = async (file) => {
    if (!file) return;
    if (file.size > 1024 * 1024) { toast("That file is over 1 MiB.", "error"); return; }
    let entries;
    try {
      entries = parseDotenv(await file.text());
    } catch (e) {
      toast(`${file.name}: ${e.message}`, "error");
      return;
    }
    picker.value = "";
    if (!entries.length) { toast(`${file.name} holds no entries.`, "error"); return; }
    const bad = entries.filter((e) => !NAME.test(e.name)).map((e) => e.name);
    const go = await dialog(`Import ${entries.length} secret${entries.length === 1 ? "" : "s"} into ${ctx.env}`, (done) =>
      h("div",
        h("p", `From ${file.name}. Values equal to the stored ones stay as they are; the rest are written in one transaction — all or nothing.`),
        bad.length ? h("p.error", `Not valid names: ${bad.join(", ")}`) : null,
        h("ul#import-names", entries.map((e) => h("li", h("code", e.name)))),
        h("div.actions",
          h("button", { type: "button", onclick: () => done(false) }, "Cancel"),
          h("button.primary#confirm-import", { type: "button", disabled: bad.length > 0, onclick: () => done(true) }, "Import"))));
    if (!go) { entries.length = 0; return; }
    try {
      const secrets = entries.map((e) => ({ name: e.name, value: e.value }));
      entries.length = 0;
      const result = await ctx.api.post(base, { secrets });
      secrets.length = 0;
      const count = (r) => result.secrets.filter((s) => s.result === r).length;
      toast(`Imported ${result.secrets.length}: ${count("created")} created, ${count("updated")} updated, ${count("unchanged")} unchanged.`);
      reload();
    } catch (e) { report(e); }
  };
  picker.addEventListener("change", () => start(picker.files[0]));
  const opened = (e) => { e.preventDefault(); zone.classList.add("over"); };
  zone.addEventListener("dragover", opened);
  zone.addEventListener("dragenter", opened);
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    start(e.dataTransfer.files[0]);
  });
  // A file dropped anywhere else on the page must not make the browser open it (a .env
  // file would be shown in plain text): the whole document refuses drops while this page
  // is on screen.
  const refuse = (e) => { if (!zone.contains(e.target)) e.preventDefault(); };
  document.addEventListener("dragover", refuse);
  document.addEventListener("drop", refuse);
  ctx.signal.addEventListener("abort", () => {
    document.removeEventListener("dragover", refuse);
    document.removeEventListener("drop", refuse);
  }, { once: true });
  zone.append(" or ", h("button.link", { type: "button", onclick: () => picker.click() }, "choose one"), picker);
  return zone;
}
