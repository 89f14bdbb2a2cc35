// DOM helpers. Every string a user or the API provides becomes a text node or an attribute
// value set through the DOM, never markup: nothing here (or anywhere in the dashboard)
// parses HTML from a string, so a name like <img onerror=…> renders as those characters.

/** h("tag.class#id", {attr: value, onclick: fn}, ...children) → an element. */
export function h(spec, attrs, ...children) {
  const [, tag = "div", rest = ""] = /^([a-z0-9-]*)(.*)$/i.exec(spec);
  const el = document.createElement(tag || "div");
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${key} must be a function`);
      el.addEventListener(key.slice(2), value);
    } else if (key === "style" || key === "srcdoc") {
      throw new TypeError(`${key} is not set from h()`); // the CSP refuses inline styles anyway
    } else if ((key === "href" || key === "src" || key === "action") && !/^(#|\/ui\/)/.test(String(value))) {
      // Links stay inside the dashboard: an in-page route or one of its own assets.
      throw new TypeError(`${key} must be a dashboard route or asset`);
    } else if (key === "class") {
      for (const c of String(value).split(/\s+/).filter(Boolean)) el.classList.add(c);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" || key === "checked" || key === "disabled" || key === "selected") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children: nodes as they are, strings and numbers as text, arrays flattened. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** "2026-11-30T05:21:27.123Z" → "2026-11-30 05:21:27" (UTC, sortable, unambiguous). */
export function when(rfc3339) {
  if (!rfc3339) return "";
  return String(rfc3339).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
}

/** A transient message at the bottom of the window. */
export function toast(message, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div#toasts", { role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const item = h("div.toast", { class: kind }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** The dialogs open now: closed (and emptied) when the tab signs out or changes page. */
const openDialogs = new Set();

/** Closes every open dialog as if cancelled, emptying its fields first. */
export function closeDialogs() {
  for (const close of [...openDialogs]) close();
}

/**
 * A modal dialog: resolves with what `build` returns through `done(x)`, or null on cancel.
 * However it closes (done, Escape, sign-out, another page), its inputs and text areas are
 * emptied and anything shown once (`.key-once`) is removed before the dialog leaves the
 * page, so nothing typed or shown in it outlives it.
 */
export function dialog(title, build) {
  return new Promise((resolve) => {
    const el = h("dialog.modal", { "aria-label": title });
    let finished = false;
    const finish = (result) => {
      if (finished) return;
      finished = true;
      openDialogs.delete(cancel);
      for (const field of el.querySelectorAll("input, textarea")) field.value = "";
      for (const once of el.querySelectorAll(".key-once")) once.replaceChildren();
      if (el.open) el.close();
      el.remove();
      resolve(result);
    };
    const cancel = () => finish(null);
    openDialogs.add(cancel);
    el.addEventListener("cancel", (e) => {
      e.preventDefault();
      finish(null);
    });
    append(el, [h("h2", title), build(finish)]);
    document.body.append(el);
    el.showModal();
  });
}

/** Asks to type `word` before a destructive action (`action` names its button); resolves
 * true only if it was typed. */
export function confirmTyped(title, explanation, word, action = "Delete") {
  return dialog(title, (done) => {
    const input = h("input", {
      type: "text", autocomplete: "off", spellcheck: "false", "aria-label": `Type ${word} to confirm`,
      name: "confirm",
    });
    const go = h("button.danger", { type: "submit", disabled: true }, action);
    input.addEventListener("input", () => { go.disabled = input.value !== word; });
    return h("form", { onsubmit: (e) => { e.preventDefault(); done(input.value === word); } },
      h("p", explanation),
      h("label", "Type ", h("code", word), " to confirm", input),
      h("div.actions",
        h("button", { type: "button", onclick: () => done(false) }, "Cancel"),
        go));
  });
}

/** A form field with a label. */
export function field(label, input, hint) {
  return h("label.field", h("span.label", label), input, hint ? h("small.hint", hint) : null);
}

/** A table: columns [{key, label, render?, sort?}], rows of objects. */
export function table(columns, rows, { empty = "Nothing here yet.", caption } = {}) {
  if (!rows.length) return h("p.empty", empty);
  return h("table",
    caption ? h("caption", caption) : null,
    h("thead", h("tr", columns.map((c) => h("th", { scope: "col" }, c.label)))),
    h("tbody", rows.map((row) => h("tr", columns.map((c) => h("td", { dataset: { col: c.key } },
      c.render ? c.render(row) : row[c.key] ?? ""))))));
}

/** A status word as a badge. */
export function badge(text, kind = String(text)) {
  return h("span.badge", { class: `badge-${kind}` }, text);
}

/** A button that runs `action`, disabled while it runs. */
export function button(label, action, { kind = "", title, id } = {}) {
  const b = h("button", { type: "button", class: kind, title, id });
  b.textContent = label;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await action(); } finally { b.disabled = false; }
  });
  return b;
}

/** Shows a failed action's error as a toast (a 401 has already signed the tab out). */
export function report(e) {
  if (e?.name === "AbortError" || e?.status === 401) return;
  toast(e?.message || String(e), "error");
}

/** Previous/next buttons over a cursor-paged list. `fetchPage(cursor)` draws a page and
 * resolves with its nextCursor. */
export function cursorPager(id, fetchPage) {
  const cursors = [undefined]; // the cursor of each page visited; the last is on screen
  let next = null;
  const prev = h(`button#${id}-prev`, { type: "button", disabled: true }, "← Previous");
  const fwd = h(`button#${id}-next`, { type: "button", disabled: true }, "Next →");
  async function load() {
    next = (await fetchPage(cursors[cursors.length - 1])) || null;
    prev.disabled = cursors.length <= 1;
    fwd.disabled = !next;
  }
  async function go(step) {
    const before = cursors.length;
    if (step > 0 && next) cursors.push(next);
    if (step < 0 && cursors.length > 1) cursors.pop();
    try {
      await load();
    } catch (e) {
      if (cursors.length > before) cursors.pop();
      report(e);
    }
  }
  prev.addEventListener("click", () => go(-1));
  fwd.addEventListener("click", () => go(1));
  return {
    el: h("div.pager", prev, fwd),
    load,
    reset: () => { cursors.length = 1; return load(); },
    onFirstPage: () => cursors.length === 1,
  };
}

/** A table whose rows carry data-id (for live updates and tests). */
export function grid(columns, rows, { empty = "Nothing here yet.", key = "id" } = {}) {
  if (!rows.length) return h("p.empty", empty);
  return h("table",
    h("thead", h("tr", columns.map((c) => h("th", { scope: "col" }, c.label)))),
    h("tbody", rows.map((row) => h("tr", { dataset: { id: row[key] } },
      columns.map((c) => h("td", { class: c.mono ? "mono" : undefined, dataset: { col: c.key } },
        c.render ? c.render(row) : row[c.key] ?? ""))))));
}

/** Gives an element a stable id. */
export function withId(el, id) {
  el.id = id;
  return el;
}

export function backTo(href, label) {
  return h("p.back", h("a", { href }, "← ", label));
}

/** 90061000 → "1 d 1 h (90061000 ms)". */
export function duration(ms) {
  if (ms === undefined || ms === null) return "";
  const units = [["d", 86400000], ["h", 3600000], ["min", 60000], ["s", 1000]];
  const parts = [];
  let rest = ms;
  for (const [unit, size] of units) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)} ${unit}`);
      rest %= size;
    }
  }
  return parts.length ? `${parts.join(" ")} (${ms} ms)` : `${ms} ms`;
}
