// The dashboard's shell: sign-in, navigation, and the hash router that renders one page at
// a time into <main>. Routes (after "#") carry names and ids only, never a value.

import { Api } from "./api.js";
import { closeDialogs, h, replace } from "./dom.js";

const KEY_SLOT = "coffer.apiKey";

/** Pages: a route pattern → the module that renders it (loaded when first visited). */
const ROUTES = [
  [/^\/environments$/, "page-environments.js"],
  [/^\/env\/([a-z0-9-]+)\/secrets$/, "page-secrets.js"],
  [/^\/env\/([a-z0-9-]+)\/config$/, "page-config.js"],
  [/^\/env\/([a-z0-9-]+)\/functions$/, "page-functions.js"],
  [/^\/env\/([a-z0-9-]+)\/functions\/([a-z0-9_-]+)$/, "page-functions.js"],
  [/^\/env\/([a-z0-9-]+)\/runs\/([A-Za-z0-9_-]+)$/, "page-functions.js"],
  [/^\/env\/([a-z0-9-]+)\/orchestrations$/, "page-orchestrations.js"],
  [/^\/env\/([a-z0-9-]+)\/orchestrations\/([A-Za-z0-9_-]+)$/, "page-orchestrations.js"],
  [/^\/env\/([a-z0-9-]+)\/orchestration-runs\/([A-Za-z0-9_-]+)$/, "page-orchestrations.js"],
  [/^\/api-keys$/, "page-apikeys.js"],
  [/^\/encryption$/, "page-encryption.js"],
  [/^\/audit$/, "page-audit.js"],
  [/^\/events$/, "page-events.js"],
];

const state = {
  api: null,
  who: null, // {keyId, role, environment}
  environments: [],
  page: null, // AbortController of the page on screen
};

const root = () => document.getElementById("app");

/** What the signed-in key may do; pages offer nothing else. */
export function can(who) {
  const admin = who.role === "admin";
  return {
    admin,
    manage: (env) => admin || (who.role === "manage" && who.environment === env),
  };
}

function signOut(message) {
  state.page?.abort();
  closeDialogs();
  state.api?.forget();
  state.api = null;
  state.who = null;
  state.environments = [];
  sessionStorage.clear(); // the key and the last environment: nothing carries to the next key
  if (location.hash) history.replaceState(null, "", location.pathname);
  showSignIn(message);
}

function showSignIn(message) {
  // A text field drawn masked, not type=password: browsers offer to save what is typed
  // into a password field (autocomplete=off notwithstanding), and the key must stay in this
  // tab only.
  const input = h("input#api-key.masked-input", {
    type: "text", autocomplete: "off", spellcheck: "false", autocapitalize: "off",
    required: true, placeholder: "ck_…", "aria-describedby": "sign-in-help",
  });
  const error = h("p.error#sign-in-error", { role: "alert" }, message || "");
  const submit = h("button.primary#sign-in", { type: "submit" }, "Sign in");
  const form = h("form.sign-in", {
    onsubmit: async (e) => {
      e.preventDefault();
      submit.disabled = true;
      error.textContent = "";
      const key = input.value.trim();
      try {
        await signIn(key);
        input.value = "";
      } catch (err) {
        error.textContent = err.message;
      } finally {
        submit.disabled = false;
      }
    },
  },
  h("h1", "Coffer"),
  h("label", { for: "api-key" }, "API key"),
  input,
  h("p.hint#sign-in-help", "An admin or manage key. It stays in this tab only and is forgotten when you sign out or close the tab."),
  error,
  submit);
  replace(root(), h("main.center", form));
  input.focus();
}

async function signIn(key) {
  const api = new Api(key);
  let who;
  try {
    who = await api.get("/v1/whoami");
  } catch (e) {
    if (e.status === 401) throw new Error("That key was not accepted: check that it is complete and has not been revoked.");
    throw e;
  }
  if (who.role === "runtime") {
    throw new Error("This is a runtime key: it can only resolve secrets for functions. Sign in with an admin or manage key.");
  }
  const { environments } = await api.get("/v1/environments");
  // Signed in: only now is anything kept. From here a 401 means the key stopped working
  // (revoked): the tab signs out.
  api.onRefused = () => signOut("Your key was refused: it may have been revoked. Sign in again.");
  state.api = api;
  state.who = who;
  state.environments = environments.map((e) => e.name);
  sessionStorage.setItem(KEY_SLOT, key);
  if (!location.hash || location.hash === "#" || location.hash === "#/") {
    location.hash = who.role === "admin" ? "#/environments" : `#/env/${who.environment}/secrets`;
  } else {
    render();
  }
}

async function loadEnvironments() {
  const body = await state.api.get("/v1/environments");
  state.environments = body.environments.map((e) => e.name);
}

function currentEnv(path) {
  const m = /^\/env\/([a-z0-9-]+)\//.exec(path);
  if (m) return m[1];
  return sessionStorage.getItem("coffer.env") || state.who.environment || state.environments[0];
}

function nav(path) {
  const env = currentEnv(path);
  const allowed = can(state.who);
  const link = (href, label) => h("a", {
    href, "aria-current": `#${path}` === href ? "page" : undefined,
  }, label);
  const select = h("select#env-select", {
    "aria-label": "Environment",
    onchange: () => {
      const tail = /^\/env\/[a-z0-9-]+\/([a-z-]+)/.exec(path)?.[1] || "secrets";
      location.hash = `#/env/${select.value}/${tail}`;
    },
  }, state.environments.map((e) => h("option", { value: e, selected: e === env }, e)));
  return h("nav.side", { "aria-label": "Main" },
    h("div.brand", h("img", { src: "/ui/favicon.svg", alt: "", width: 24, height: 24 }), "Coffer"),
    h("div.who", h("span.role", state.who.role), " ",
      h("code", state.who.keyId),
      state.who.environment ? [" in ", h("code", state.who.environment)] : null),
    allowed.admin ? link("#/environments", "Environments") : null,
    env ? h("div.group",
      h("label.label", { for: "env-select" }, "Environment"),
      select,
      link(`#/env/${env}/secrets`, "Secrets"),
      link(`#/env/${env}/config`, "Config"),
      link(`#/env/${env}/functions`, "Functions & runs"),
      link(`#/env/${env}/orchestrations`, "Orchestrations")) : null,
    h("div.group",
      allowed.admin ? link("#/api-keys", "API keys") : null,
      allowed.admin ? link("#/encryption", "Encryption keys") : null,
      link("#/audit", "Audit log"),
      link("#/events", "Live events")),
    h("button#sign-out", { type: "button", onclick: () => signOut("Signed out.") }, "Sign out"));
}

async function render() {
  if (!state.api) return;
  state.page?.abort();
  closeDialogs();
  const controller = new AbortController();
  state.page = controller;
  const path = location.hash.replace(/^#/, "") || "/environments";
  const main = h("main#main", { tabindex: "-1" });
  replace(root(), h("div.shell", nav(path), main));
  const route = ROUTES.map(([re, file]) => [re.exec(path), file]).find(([m]) => m);
  if (!route) {
    replace(main, h("h1", "Not found"), h("p", "There is no such page."));
    return;
  }
  const [match, file] = route;
  const env = /^\/env\//.test(path) ? match[1] : undefined;
  if (env) sessionStorage.setItem("coffer.env", env);
  const ctx = {
    api: state.api,
    who: state.who,
    can: can(state.who),
    env,
    params: match.slice(env ? 2 : 1),
    path,
    main,
    signal: controller.signal,
    environments: state.environments,
    refreshEnvironments: async () => { await loadEnvironments(); },
    navigate: (hash) => { location.hash = hash; },
    signOut: (message) => signOut(message),
    rerender: () => render(),
  };
  try {
    const page = await import(`./${file}`);
    if (controller.signal.aborted) return;
    await page.render(ctx);
  } catch (e) {
    if (controller.signal.aborted || e.name === "AbortError") return;
    if (e.status === 401) return; // signOut already ran
    replace(main, h("h1", "Something went wrong"), h("p.error", { role: "alert" }, e.message || String(e)));
  }
}

window.addEventListener("hashchange", render);

const saved = sessionStorage.getItem(KEY_SLOT);
if (saved) {
  signIn(saved).catch((e) => {
    if (e.status === 0) {
      // Coffer did not answer: keep the key and say so; a reload tries again.
      showSignIn(`${e.message} Reload the page to try again.`);
    } else {
      signOut(e.message);
    }
  });
} else {
  showSignIn();
}
