// Live events: the event stream (GET /v1/events/stream) as a feed, newest first. A subject
// pattern (NATS wildcards) picks what to follow; changing it restarts the stream from the
// current end. The connection's state is shown as it changes (api.js reconnects by itself,
// resuming after the last event received). Pause holds new events back without dropping
// them (up to the cap), and the feed keeps the last 500. Events carry names, never values.

import { badge, h, replace, when } from "./dom.js";

const CAP = 500;
const DEFAULT_SUBJECT = "system.>";

export async function render(ctx) {
  const { api, can, main, signal } = ctx;

  const feed = h("ul.feed#event-feed", { "aria-live": "off" });
  const empty = h("p.empty#event-empty", "Waiting for events… (only those committed from now on are shown)");
  const state = h("span#stream-state", { role: "status" });
  const stateDetail = h("span.hint#stream-state-detail");
  const counter = h("span.hint#event-count");
  let received = 0;
  let paused = false;
  let held = []; // events received while paused, oldest first

  function setState(name, error) {
    state.dataset.state = name;
    replace(state, badge(name, name === "connecting" ? "pending" : name));
    stateDetail.textContent = name === "retrying"
      ? ` reconnecting (${error?.message || "the connection dropped"})`
      : name === "refused" ? ` ${error?.message || "the server refused the stream"}` : "";
  }

  function item(event) {
    const actor = event.actor || {};
    return h("li", { dataset: { eventId: String(event.id ?? ""), subject: String(event.subject ?? "") } },
      h("span.ev-time", when(event.at)),
      h("span.ev-subject", event.subject),
      event.environment ? h("span.ev-env", { title: "environment" }, event.environment) : null,
      h("span.ev-actor", { title: actor.keyId || "" }, actor.keyName || actor.keyId || "—"),
      event.revision != null ? h("span.ev-rev", `rev ${event.revision}`) : null,
      event.count != null ? h("span.ev-count", `count ${event.count}`) : null,
      h("span.ev-id.hint", `#${event.id}`));
  }

  /** Puts events (oldest first) at the top of the feed, and trims it to the cap. */
  function show(events) {
    if (!events.length) return;
    empty.hidden = true;
    const nodes = events.slice(-CAP).map(item).reverse();
    feed.prepend(...nodes);
    while (feed.childElementCount > CAP) feed.lastElementChild.remove();
    nodes[0].classList.add("flash");
  }

  function drawCounter() {
    counter.textContent = `${received} received` + (paused ? `, ${held.length} held while paused` : "") +
      (feed.childElementCount >= CAP ? `; showing the last ${CAP}` : "");
  }

  function onEvent(event) {
    received += 1;
    if (paused) {
      held.push(event);
      if (held.length > CAP) held.shift();
    } else {
      show([event]);
    }
    drawCounter();
  }

  // The stream runs under its own controller, ended by a new subject or by leaving the page.
  let streamController = null;
  function start(pattern) {
    streamController?.abort();
    const controller = new AbortController();
    streamController = controller;
    signal.addEventListener("abort", () => controller.abort(), { once: true });
    setState("connecting");
    api.stream(pattern, {
      signal: controller.signal,
      onEvent: (event) => { if (!controller.signal.aborted) onEvent(event); },
      onState: (name, error) => { if (!controller.signal.aborted) setState(name, error); },
    }).catch(() => {});
  }

  // The subject pattern.
  const subject = h("input#event-subject", {
    name: "subject", value: DEFAULT_SUBJECT, autocomplete: "off", spellcheck: "false",
    required: true, "aria-describedby": "event-subject-hint", size: 32,
  });
  const subjectError = h("p.error#event-subject-error", { role: "alert" });
  const form = h("form.toolbar#event-filter", {
    onsubmit: (e) => {
      e.preventDefault();
      const pattern = subject.value.trim() || DEFAULT_SUBJECT;
      subjectError.textContent = checkPattern(pattern);
      if (subjectError.textContent) return;
      subject.value = pattern;
      start(pattern);
    },
  },
  h("label", { for: "event-subject" }, "Subject"),
  subject,
  h("button.primary#event-follow", { type: "submit" }, "Follow"),
  h("span.grow"),
  h("span.label", "Stream"), state, stateDetail);

  const pause = h("button#pause-feed", {
    type: "button", "aria-pressed": "false",
    onclick: () => {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume" : "Pause";
      feed.classList.toggle("paused", paused);
      if (!paused) {
        const out = held;
        held = [];
        show(out);
      }
      drawCounter();
    },
  }, "Pause");
  const clear = h("button#clear-feed", {
    type: "button",
    onclick: () => { feed.replaceChildren(); held = []; empty.hidden = false; drawCounter(); },
  }, "Clear");

  replace(main,
    h("h1", "Live events"),
    form,
    h("small.hint#event-subject-hint",
      "A NATS pattern: * matches one token, > (last) one or more. system.secret.*.updated, system.config.>, system.run.>. ",
      can.admin ? "An admin key sees every event." : "A manage key sees the events of its own environment."),
    subjectError,
    h("div.toolbar", pause, clear, h("span.grow"), counter),
    empty,
    feed);
  drawCounter();
  start(DEFAULT_SUBJECT);
}

/** A light check of a subject pattern (the server has the last word): "" when it looks fine. */
function checkPattern(pattern) {
  const tokens = pattern.split(".");
  if (tokens.some((t) => t === "")) return "A subject has no empty token (no leading, trailing or double dot).";
  if (tokens.slice(0, -1).includes(">")) return "> may only be the last token.";
  if (tokens.some((t) => t.length > 1 && /[*>]/.test(t))) return "* and > stand alone as a whole token.";
  if (/\s/.test(pattern)) return "A subject has no spaces.";
  return "";
}
