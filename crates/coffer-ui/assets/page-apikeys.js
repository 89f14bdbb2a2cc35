// API keys (admin): list, create, revoke. A created key is shown once, in a dialog with a
// Copy button; when the dialog closes its element is removed and the page keeps no copy
// (the API stores only a hash, so nobody can show it again). Revoking the key this tab is
// signed in with signs the tab out. The list follows `system.apikey.>` events, so keys
// created or revoked elsewhere (the CLI, another tab) appear and go without a reload.

import { seg } from "./api.js";
import { badge, button, dialog, field, h, replace, report, toast, when } from "./dom.js";

const ROLES = ["admin", "manage", "runtime"];

export async function render(ctx) {
  const { api, can, main, signal, who } = ctx;
  if (!can.admin) {
    replace(main, h("h1", "API keys"), h("p.error", "Only an admin key can list, create or revoke API keys."));
    return;
  }

  const listBox = h("div.table-wrap#api-keys-box");

  async function load() {
    const { apiKeys } = await api.get("/v1/api-keys", { signal });
    draw(apiKeys);
  }

  function draw(keys) {
    if (!keys.length) {
      replace(listBox, h("p.empty", "No API keys."));
      return;
    }
    replace(listBox, h("table#api-keys",
      h("caption.hint", `${keys.length} key${keys.length === 1 ? "" : "s"}. A key is shown only when it is created; here are its id and description.`),
      h("thead", h("tr", ["Id", "Name", "Role", "Environment", "Created", ""].map((l) => h("th", { scope: "col" }, l)))),
      h("tbody", keys.map((k) => h("tr", { dataset: { keyId: k.id } },
        h("td.mono", { dataset: { col: "id" } }, k.id,
          k.id === who.keyId ? [" ", h("span.badge.badge-self", { title: "This tab is signed in with this key" }, "this tab")] : null),
        h("td", { dataset: { col: "keyName" } }, k.name),
        h("td", { dataset: { col: "role" } }, badge(k.role, `role-${k.role}`)),
        h("td", { dataset: { col: "environment" } }, k.environment ? h("code", k.environment) : h("span.hint", "all")),
        h("td", { dataset: { col: "createdAt" } }, when(k.createdAt)),
        h("td.actions-cell", revokeButton(k)))))));
  }

  function revokeButton(k) {
    const b = button("Revoke", () => revoke(k), { kind: "danger", title: `Revoke ${k.id}` });
    b.dataset.keyId = k.id;
    b.classList.add("revoke-key");
    return b;
  }

  async function revoke(k) {
    const own = k.id === who.keyId;
    const ok = await dialog(`Revoke ${k.id}`, (done) => h("div#revoke-dialog",
      h("p", "Revoke the key ", h("code", k.id), " (", h("q", k.name), ", ", k.role,
        k.environment ? [" of ", h("code", k.environment)] : null,
        ")? Every request made with it is refused from then on, including open event streams. This cannot be undone: a new key would have to be created and handed out."),
      own ? h("p.warning#revoke-self-warning", { role: "alert" },
        h("strong", "This is the key this tab is signed in with."),
        " Revoking it signs you out at once; sign in again with another admin key.") : null,
      h("div.actions",
        h("button", { type: "button", onclick: () => done(false) }, "Cancel"),
        h("button.danger#confirm-revoke", { type: "button", onclick: () => done(true) },
          own ? "Revoke and sign out" : "Revoke"))));
    if (!ok) return;
    try {
      await api.delete(`/v1/api-keys/${seg(k.id)}`);
    } catch (e) {
      if (e.code === "last_admin_key") toast("That is the only admin key: create another admin key before revoking it.", "error");
      else if (e.status === 404) { toast(`${k.id} was already revoked.`); await load().catch(report); }
      else report(e);
      return;
    }
    if (own) {
      ctx.signOut(`You revoked ${k.id}, the key this tab was signed in with.`);
      return;
    }
    toast(`Revoked ${k.id}.`);
    await load().catch(report);
  }

  // The create form. The environment is required for manage and runtime keys and refused
  // for admin keys, so the select is disabled (and not sent) while "admin" is chosen.
  const name = h("input#new-key-name", {
    name: "name", required: true, maxlength: 128, autocomplete: "off", spellcheck: "false",
    placeholder: "deploy-bot",
  });
  const role = h("select#new-key-role", { name: "role" },
    ROLES.map((r) => h("option", { value: r, selected: r === "manage" }, r)));
  const environment = h("select#new-key-environment", { name: "environment", required: true },
    h("option", { value: "" }, "— choose —"),
    ctx.environments.map((e) => h("option", { value: e }, e)));
  const roleHint = h("small.hint#new-key-role-hint");
  const formError = h("p.error#create-key-error", { role: "alert" });
  const syncRole = () => {
    const admin = role.value === "admin";
    environment.disabled = admin;
    environment.required = !admin;
    roleHint.textContent = {
      admin: "Everything, in every environment: environments, keys, encryption, audit.",
      manage: "Secrets, config, functions and orchestrations of one environment; metadata only.",
      runtime: "Only resolves secrets for functions of one environment (workers, coffer run).",
    }[role.value];
  };
  role.addEventListener("change", syncRole);
  syncRole();
  const submit = h("button.primary", { type: "submit" }, "Create key");
  const form = h("form#create-key.create-key", {
    autocomplete: "off",
    onsubmit: async (e) => {
      e.preventDefault();
      formError.textContent = "";
      const body = { name: name.value.trim(), role: role.value };
      if (!body.name) { formError.textContent = "Give the key a name: what or who uses it."; return; }
      if (body.role !== "admin") {
        if (!environment.value) { formError.textContent = `A ${body.role} key belongs to one environment: choose it.`; return; }
        body.environment = environment.value;
      }
      submit.disabled = true;
      try {
        const created = await api.post("/v1/api-keys", body);
        name.value = "";
        await showOnce(created);
        await load().catch(report);
      } catch (err) {
        formError.textContent = err.message;
      } finally {
        submit.disabled = false;
      }
    },
  },
  h("h2", "New key"),
  h("div.form-row",
    field("Name", name),
    field("Role", role),
    field("Environment", environment)),
  roleHint,
  ctx.environments.length ? null : h("p.hint", "There is no environment yet: only admin keys can be created."),
  formError,
  h("div.actions", submit));

  /** The new key, shown once. Nothing keeps it once the dialog is closed. */
  async function showOnce(created) {
    let secret = created.key;
    created.key = undefined;
    await dialog(`Key ${created.id} created`, (done) => {
      const keyEl = h("code.key-once#new-key", secret);
      const copied = h("span.hint#copy-status", { role: "status" });
      const close = () => {
        keyEl.textContent = "";
        keyEl.remove();
        window.getSelection()?.removeAllRanges();
        done(true);
      };
      // Leaving the page while the dialog is open closes it too.
      signal.addEventListener("abort", close, { once: true });
      return h("div#new-key-box",
        h("p", "The new ", h("strong", created.role), " key ", h("q", created.name),
          created.environment ? [" for ", h("code", created.environment)] : null, ":"),
        keyEl,
        h("p.warning", h("strong", "Copy it now: it will not be shown again."),
          " Coffer keeps only a hash of it; if it is lost, revoke it and create another."),
        h("div.actions",
          h("button#copy-key", { type: "button", onclick: () => copy(keyEl, copied) }, "Copy"),
          copied,
          h("span.grow"),
          h("button.primary#close-new-key", { type: "button", onclick: close }, "I have stored it")));
    });
    secret = null;
  }

  replace(main,
    h("h1", "API keys"),
    form,
    h("h2", "Keys"),
    listBox,
    h("p.hint", "Keys are stored as hashes: none can be shown after it is created. The last admin key cannot be revoked."));
  await load();

  // Live: keys created or revoked elsewhere. Reloads are coalesced (an environment's
  // deletion revokes its keys in one event, but a script may create many).
  let pending;
  api.stream("system.apikey.>", {
    signal,
    onEvent: () => {
      clearTimeout(pending);
      pending = setTimeout(() => { if (!signal.aborted) load().catch(() => {}); }, 200);
    },
  }).catch(() => {});
  signal.addEventListener("abort", () => clearTimeout(pending), { once: true });
}

/** Copies the key; where the Clipboard API is unavailable (not a secure context), selects it. */
async function copy(keyEl, status) {
  const text = keyEl.textContent;
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied.";
    return;
  } catch {
    // Falls through: select the text so that Ctrl+C / ⌘C copies it.
  }
  const range = document.createRange();
  range.selectNodeContents(keyEl);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
}
