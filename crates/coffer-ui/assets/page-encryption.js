// Encryption keys (admin): which key versions exist and what each seals (counts only —
// the API never returns key material, and this page asks for none), then the two walks
// over every stored value, function signing secret and orchestration param, in batches of
// 100 with a progress bar: "Rewrap" re-encrypts them to the current key version, "Verify"
// opens them and lists (by name only) those that do not open. Both are resumable and
// idempotent on the server, so stopping one halfway (or leaving the page) is harmless.

import { badge, button, h, replace, report, toast } from "./dom.js";

const BATCH = 100;
// Unreadable items listed on screen per kind (a broken keyring can make thousands).
const SHOWN = 1000;

export async function render(ctx) {
  const { api, can, main, signal } = ctx;
  if (!can.admin) {
    replace(main, h("h1", "Encryption keys"), h("p.error", "Only an admin key can see the key lifecycle."));
    return;
  }

  const statusBox = h("div#key-status");
  const walkBox = h("div#key-walk");
  let status = null; // the last GET /v1/keys answer
  let walking = null; // {stop()} while a rewrap or verify runs

  async function load() {
    status = await api.get("/v1/keys", { signal });
    drawStatus();
  }

  /** Everything a walk goes over: sealed items of every version, plus any plaintext left. */
  function totalItems(s) {
    const sealed = s.keys.reduce((n, k) => n + k.values + k.signingSecrets + k.orchestrationParams, 0);
    return sealed + s.plaintextValues + s.plaintextSigningSecrets + s.plaintextOrchestrationParams;
  }

  function drawStatus() {
    const s = status;
    const enabled = s.encryption === "enabled";
    const missing = s.keys.filter((k) => !k.inKeyring);
    const stale = s.keys.filter((k) => !k.current && k.inKeyring && k.values + k.signingSecrets + k.orchestrationParams > 0);
    replace(statusBox,
      h("dl.stats#key-summary",
        h("dt", "Encryption at rest"),
        h("dd", { dataset: { field: "encryption" } }, badge(s.encryption),
          enabled ? null : h("span.hint", " dev mode: values are stored unencrypted")),
        h("dt", "Current key version"),
        h("dd", { dataset: { field: "currentKeyVersion" } }, s.currentKeyVersion == null ? "none" : `v${s.currentKeyVersion}`),
        h("dt", "Unreadable values"),
        h("dd", { dataset: { field: "unreadableValues" } },
          s.unreadableValues ? badge(String(s.unreadableValues), "unreadable") : "0",
          s.unreadableValues ? h("span.hint", " — “Verify every value” lists them") : null),
        h("dt", "Stored unencrypted"),
        h("dd", { dataset: { field: "plaintext" } },
          `${plural(s.plaintextValues, "value")}, ${plural(s.plaintextSigningSecrets, "signing secret")}, `,
          plural(s.plaintextOrchestrationParams, "orchestration param"))),
      s.keys.length ? h("div.table-wrap", h("table#key-versions",
        h("caption.hint", "What each key version seals. Counts only: no key material ever leaves the server."),
        h("thead", h("tr", ["Version", "", "In keyring"].map((l) => h("th", { scope: "col" }, l)),
          ["Values", "Signing secrets", "Orchestration params", "Encryptions"].map((l) => h("th.num", { scope: "col" }, l)))),
        h("tbody", s.keys.map((k) => h("tr", { dataset: { version: String(k.version) } },
          h("td", { dataset: { col: "version" } }, `v${k.version}`),
          h("td", { dataset: { col: "current" } }, k.current ? badge("current") : null),
          h("td", { dataset: { col: "inKeyring" } }, k.inKeyring ? "yes" : badge("missing")),
          h("td.num", { dataset: { col: "values" } }, count(k.values)),
          h("td.num", { dataset: { col: "signingSecrets" } }, count(k.signingSecrets)),
          h("td.num", { dataset: { col: "orchestrationParams" } }, count(k.orchestrationParams)),
          h("td.num", { dataset: { col: "encryptions" } }, count(k.encryptions))))))) :
        h("p.empty", "No key version is in use."),
      missing.length ? h("p.warning", { role: "alert" },
        `Not in the keyring: ${missing.map((k) => `v${k.version}`).join(", ")}. ` +
        "What it seals cannot be opened until that key is back in the keyring, or each secret is written again. A rewrap cannot help: it has to open what it re-encrypts.") : null,
      stale.length && enabled ? h("p.hint",
        `${stale.map((k) => `v${k.version}`).join(", ")} still seal${stale.length === 1 ? "s" : ""} items: ` +
        "rewrap them to the current version before removing the old key from the keyring.") : null);
    rewrapButton.disabled = !enabled || walking !== null;
    rewrapButton.title = enabled ? "" : "No key is configured (dev mode): there is nothing to rewrap to.";
    verifyButton.disabled = walking !== null;
  }

  /**
   * Pages `path` with {limit, cursor} until nextCursor is null, showing progress against
   * the items GET /v1/keys counts. `step(report)` adds a batch to the totals and returns
   * how many items it covered. Resolves with true when the walk finished, false if stopped.
   */
  async function walk(path, title, progressId, step) {
    const total = Math.max(totalItems(status), 1);
    const progress = h(`progress.progress#${progressId}`, { max: total, value: 0 });
    const line = h("p.hint", { role: "status", id: `${progressId}-text` }, "Starting…");
    let stopped = false;
    const stopButton = h("button#stop-walk", {
      type: "button",
      onclick: () => { stopped = true; stopButton.disabled = true; line.textContent = "Stopping after this batch…"; },
    }, "Stop");
    replace(walkBox, h("h2", title), progress, line, h("div.actions", stopButton));
    walking = { stop: () => { stopped = true; } };
    drawStatus();
    let cursor;
    let done = 0;
    try {
      do {
        const batch = await api.post(path, { limit: BATCH, cursor }, { signal });
        done += step(batch);
        // Items written during the walk can make it longer than the count it started from.
        if (done > progress.max) progress.max = done;
        progress.value = done;
        line.textContent = `${count(done)} of ${plural(progress.max, "item")}`;
        cursor = batch.nextCursor;
      } while (cursor && !stopped && !signal.aborted);
    } finally {
      walking = null;
    }
    stopButton.remove();
    if (cursor) {
      line.textContent = `Stopped after ${plural(done, "item")}. Run it again to go over everything (it starts from the beginning; what is done stays done).`;
      return false;
    }
    progress.value = progress.max;
    line.textContent = `Done: ${plural(done, "item")}.`;
    return true;
  }

  // Rewrap: re-encrypt everything to the current key version.
  async function rewrap() {
    const sum = {
      values: zero(),
      signingSecrets: zero(),
      orchestrationParams: zero(),
    };
    let finished;
    try {
      finished = await walk("/v1/keys/rewrap", "Rewrap to the current key", "rewrap-progress", (r) => {
        add(sum.values, r);
        add(sum.signingSecrets, r.signingSecrets);
        add(sum.orchestrationParams, r.orchestrationParams);
        return items(r) + items(r.signingSecrets) + items(r.orchestrationParams);
      });
    } catch (e) {
      report(e);
      finished = false;
    }
    walkBox.append(h("div.table-wrap", h("table#rewrap-summary",
      h("caption.hint", finished ? "What the rewrap did." : "What the rewrap did before it stopped."),
      h("thead", h("tr", h("th", { scope: "col" }, ""),
        ["Rewrapped", "Already current", "Unreadable", "Updated concurrently"].map((l) => h("th.num", { scope: "col" }, l)))),
      h("tbody",
        summaryRow("Values", "values", sum.values),
        summaryRow("Function signing secrets", "signingSecrets", sum.signingSecrets),
        summaryRow("Orchestration params", "orchestrationParams", sum.orchestrationParams)))));
    const unreadable = sum.values.unreadable + sum.signingSecrets.unreadable + sum.orchestrationParams.unreadable;
    if (unreadable) {
      walkBox.append(h("p.warning", `${unreadable} item${unreadable === 1 ? "" : "s"} could not be opened and stay as they were: “Verify every value” names them.`));
    }
    if (finished) toast("Rewrap done.");
    await load().catch(report);
  }

  // Verify: open everything, change nothing, list what does not open (names only).
  async function verify() {
    const found = { values: [], signingSecrets: [], orchestrationParams: [] };
    const checked = { values: 0, signingSecrets: 0, orchestrationParams: 0 };
    let finished;
    try {
      finished = await walk("/v1/keys/verify", "Verify every value", "verify-progress", (r) => {
        checked.values += r.checked;
        checked.signingSecrets += r.signingSecretsChecked;
        checked.orchestrationParams += r.orchestrationParamsChecked;
        found.values.push(...r.unreadable);
        found.signingSecrets.push(...r.unreadableSigningSecrets);
        found.orchestrationParams.push(...r.unreadableOrchestrationParams);
        return r.checked + r.signingSecretsChecked + r.orchestrationParamsChecked;
      });
    } catch (e) {
      report(e);
      finished = false;
    }
    const bad = found.values.length + found.signingSecrets.length + found.orchestrationParams.length;
    walkBox.append(h("div#verify-summary",
      h("p", { dataset: { result: bad ? "unreadable" : "ok" } },
        bad ? badge("unreadable") : badge("ok"), " ",
        `Checked ${plural(checked.values, "value")}, ${plural(checked.signingSecrets, "function signing secret")} and `,
        `${plural(checked.orchestrationParams, "orchestration param")}${finished ? "" : " (stopped before the end)"}: `,
        bad ? `${bad} did not open.` : "every one opens."),
      found.values.length ? [h("h3", "Values"), h("div.table-wrap", h("table#unreadable-values",
        h("thead", h("tr", ["Environment", "Secret", "Revision", "Key version"].map((l) => h("th", { scope: "col" }, l)))),
        h("tbody", found.values.slice(0, SHOWN).map((v) => h("tr",
          h("td", h("a", { href: `#/env/${encodeURIComponent(v.environment)}/secrets` }, v.environment)),
          h("td.mono", v.name), h("td", String(v.revision)), h("td", `v${v.keyVersion}`)))))),
      more(found.values.length),
      h("p.hint", "Writing a secret again repairs it.")] : null,
      found.signingSecrets.length ? [h("h3", "Function signing secrets"), h("div.table-wrap", h("table#unreadable-signing-secrets",
        h("thead", h("tr", ["Environment", "Function", "Revision", "Key version", "Which"].map((l) => h("th", { scope: "col" }, l)))),
        h("tbody", found.signingSecrets.slice(0, SHOWN).map((v) => h("tr",
          h("td", v.environment), h("td.mono", v.function), h("td", String(v.revision)),
          h("td", `v${v.keyVersion}`), h("td", v.previous ? "previous" : "current")))))),
      more(found.signingSecrets.length),
      h("p.hint", "Rotating the function's signing secret repairs it.")] : null,
      found.orchestrationParams.length ? [h("h3", "Orchestration params"), h("div.table-wrap", h("table#unreadable-orchestration-params",
        h("thead", h("tr", ["Environment", "Orchestration", "Step", "Param", "Revision", "Key version"].map((l) => h("th", { scope: "col" }, l)))),
        h("tbody", found.orchestrationParams.slice(0, SHOWN).map((v) => h("tr",
          h("td", v.environment), h("td.mono", v.orchestration), h("td.mono", v.step), h("td.mono", v.param),
          h("td", String(v.revision)), h("td", `v${v.keyVersion}`)))))),
      more(found.orchestrationParams.length),
      h("p.hint", "Setting the param again (encrypt: true) repairs it.")] : null));
    await load().catch(report);
  }

  const rewrapButton = button("Rewrap to the current key", rewrap, { kind: "primary" });
  rewrapButton.id = "rewrap";
  const verifyButton = button("Verify every value", verify);
  verifyButton.id = "verify";

  replace(main,
    h("h1", "Encryption keys"),
    statusBox,
    h("div.toolbar", rewrapButton, verifyButton),
    h("p.hint", "Rewrap re-encrypts every value, then every function signing secret, then every orchestration param to the current key version, while Coffer keeps serving; revisions do not change. Verify opens each of them and changes nothing. Both go in batches of 100 and can be stopped and run again."),
    walkBox);
  await load();
  signal.addEventListener("abort", () => walking?.stop(), { once: true });
}

/** The note under a list cut at SHOWN rows. */
function more(n) {
  return n > SHOWN ? h("p.hint", `… and ${count(n - SHOWN)} more (${count(n)} in all; coffer keys verify lists every one).`) : null;
}

const zero = () => ({ rewrapped: 0, alreadyCurrent: 0, unreadable: 0, updatedConcurrently: 0 });

function add(sum, r) {
  if (!r) return;
  for (const k of Object.keys(sum)) sum[k] += r[k] || 0;
}

/** Items a rewrap batch covered in one group: every outcome counts as walked. */
function items(r) {
  return r ? r.rewrapped + r.alreadyCurrent + r.unreadable + r.updatedConcurrently : 0;
}

function summaryRow(label, key, s) {
  return h("tr", { dataset: { group: key } },
    h("th", { scope: "row" }, label),
    h("td.num", { dataset: { col: "rewrapped" } }, count(s.rewrapped)),
    h("td.num", { dataset: { col: "alreadyCurrent" } }, count(s.alreadyCurrent)),
    h("td.num", { dataset: { col: "unreadable" } }, count(s.unreadable)),
    h("td.num", { dataset: { col: "updatedConcurrently" } }, count(s.updatedConcurrently)));
}

const count = (n) => Number(n).toLocaleString("en");
const plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;
