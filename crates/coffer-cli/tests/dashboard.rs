//! The dashboard end to end: the real `coffer serve`, a real headless Chromium driven over
//! WebDriver (Debian's `chromium` and `chromium-driver`; `scripts/test.sh` installs them),
//! and between the two a recording proxy, so a test sees every byte the browser was sent.
//!
//! Each test starts its own server on a port it picks, its own chromedriver on a free port
//! and its own Chromium with a fresh profile; guards end all of them, even after a panic.
//! A browser that cannot be had fails the test with a message saying how to get it.
//!
//! `COFFER_UI_SCREENSHOTS=DIR` saves PNGs of the main pages to DIR (`docs/ui/` holds them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use common::{ServerProcess, Signal, clean_command, free_port, http, send_signal, signal_group};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MASTER_KEY: &str = "3c1e9b0d2f4a6c8e1b3d5f7a9c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c7e";
const CHROMIUM: &str = "/usr/bin/chromium";
const GET_BROWSER: &str = "install Debian's chromium and chromium-driver \
     (apt-get install chromium chromium-driver; scripts/test.sh does it when they are missing)";

/// Markup and script in a user-provided string: rendered as text, it does nothing. (No
/// double quote in it, so that its JSON form, as the config and run pages show values,
/// holds it as it is.)
const XSS: &str = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>";

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// A wrong key and a runtime key are refused at sign-in with a clear message; an admin key
/// signs in with the keyboard alone (typed, then Enter), and Tab reaches the navigation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_wrong_and_runtime_keys_and_works_from_the_keyboard() {
    let t = Dashboard::start().await;
    t.open("").await;
    t.wait_js(
        "the sign-in form",
        "return !!document.getElementById('api-key')",
    )
    .await;
    t.screenshot("sign-in").await;

    t.type_into("#api-key", "ck_this-key-does-not-exist").await;
    t.click("#sign-in").await;
    let error = t
        .wait_js(
            "the wrong key's error",
            "return document.getElementById('sign-in-error')?.textContent || null",
        )
        .await;
    let error = error.as_str().unwrap();
    assert!(error.contains("not accepted"), "{error}");

    let (status, runtime) = t
        .admin_call(
            Method::POST,
            "/v1/api-keys",
            json!({"name": "worker", "role": "runtime", "environment": "default"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{runtime}");
    t.clear("#api-key").await;
    t.type_into("#api-key", runtime["key"].as_str().unwrap())
        .await;
    t.click("#sign-in").await;
    let error = t
        .wait_js(
            "the runtime key's error",
            "const t = document.getElementById('sign-in-error')?.textContent || ''; \
             return t.includes('runtime') ? t : null",
        )
        .await;
    assert!(
        error.as_str().unwrap().contains("admin or manage"),
        "{error}"
    );
    assert_eq!(
        t.js("return sessionStorage.getItem('coffer.apiKey')").await,
        Value::Null,
        "a refused key is not kept"
    );
    assert!(t.js("return !document.querySelector('nav')").await == json!(true));

    // The keyboard alone: a fresh page has the key field focused; type, Enter.
    t.open("").await;
    t.wait_js(
        "the key field focused",
        "return document.activeElement?.id === 'api-key'",
    )
    .await;
    let focused = t.browser.client().active_element().await.unwrap();
    focused
        .send_keys(&format!("{}\u{E007}", t.admin))
        .await
        .unwrap();
    t.wait_js("signed in", "return !!document.getElementById('sign-out')")
        .await;
    let mut reached = None;
    for _ in 0..20 {
        let active = t.browser.client().active_element().await.unwrap();
        active.send_keys("\u{E004}").await.unwrap(); // Tab
        let here = t
            .js("const a = document.activeElement; \
                 return a && a.closest('nav') && a.tagName === 'A' ? a.getAttribute('href') : null")
            .await;
        if here.as_str() == Some("#/env/default/secrets") {
            reached = Some(here);
            break;
        }
    }
    assert!(reached.is_some(), "Tab never reached the Secrets link");
    let active = t.browser.client().active_element().await.unwrap();
    active.send_keys("\u{E007}").await.unwrap(); // Enter follows the link
    t.wait_js(
        "the secrets page, from the keyboard",
        "return location.hash === '#/env/default/secrets' && \
         !!document.getElementById('secret-search')",
    )
    .await;
    t.finish().await;
}

/// A value typed into the "New secret" dialog goes to the server once and never comes
/// back: not in any response the browser received (the proxy saw them all), the page
/// source, the DOM, a field, storage, the URL or the resource timeline. When the CLI
/// writes a new value, the row's revision follows live, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_set_in_the_ui_never_comes_back_and_the_revision_follows_the_cli() {
    const CANARY: &str = "cnry-ui-Zq8v1Lw4Tt9pXe2M";
    const CLI_CANARY: &str = "cnry-cli-Hb3nR7yK0dUa5sQf";
    const IMPORTED: [(&str, &str); 4] = [
        ("DATABASE_URL", "cnry-imp-postgres://u:Pw0rd@db/shop"),
        ("SENTRY_DSN", "cnry-imp-sentry-9c2f0e"),
        ("SMTP_PASSWORD", "cnry-imp-smtp-77Qa"),
        ("STRIPE_KEY", "cnry-imp-sk_live_51Hx"),
    ];
    let t = Dashboard::start().await;
    t.sign_in(&t.admin).await;

    // An environment, created through the form.
    t.wait_js(
        "the environments page",
        "return !!document.getElementById('new-env-name')",
    )
    .await;
    t.type_into("#new-env-name", "shop").await;
    t.click("#create-environment button[type=submit]").await;
    t.wait_js(
        "the new environment's row",
        "return !!document.querySelector('main a[href=\"#/env/shop/secrets\"]')",
    )
    .await;
    t.screenshot("environments").await;
    let secrets: Vec<Value> = IMPORTED
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let (status, body) = t
        .admin_call(
            Method::POST,
            "/v1/environments/shop/secrets",
            json!({ "secrets": secrets }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    t.click("main a[href=\"#/env/shop/secrets\"]").await;
    t.wait_js(
        "the imported secrets",
        "return document.querySelectorAll('#secrets tr[data-name]').length === 4",
    )
    .await;

    // The canary, through the dialog.
    t.click_xpath("//button[normalize-space()='New secret']")
        .await;
    t.wait_js(
        "the new secret dialog",
        "return !!document.getElementById('secret-form')",
    )
    .await;
    t.type_into("#secret-name", "PAYMENT_TOKEN").await;
    t.type_into("#secret-value", CANARY).await;
    // Typed, it is in the field's value only: not in the markup.
    let markup = t.js("return document.documentElement.outerHTML").await;
    assert!(
        !markup.as_str().unwrap().contains(CANARY),
        "typed value in the DOM"
    );
    t.click("#save-secret").await;
    let revision = "return document.querySelector('#secrets tr[data-name=\"PAYMENT_TOKEN\"] \
                    td[data-col=revision]')?.textContent ?? null";
    t.wait_js_eq("the new secret's row at revision 1", revision, json!("1"))
        .await;
    t.wait_js(
        "the dialog closed",
        "return !document.getElementById('secret-form')",
    )
    .await;
    let mut forbidden: Vec<&str> = vec![CANARY, CLI_CANARY];
    forbidden.extend(IMPORTED.iter().map(|(_, v)| *v));
    t.assert_nowhere(&forbidden, "after the save").await;

    // The CLI writes revision 2; the row follows without a reload.
    t.js("window.__sameDocument = 'yes'; return null").await;
    let out = t.cli(
        &["secret", "set", "PAYMENT_TOKEN", "--env", "shop"],
        Some(CLI_CANARY),
    );
    assert!(out.status.success(), "{out:?}");
    let started = Instant::now();
    t.wait_js_within(
        "revision 2, live",
        Duration::from_secs(10),
        &revision.replace("?? null", "=== '2'"),
    )
    .await;
    println!(
        "the CLI's write reached the open page in {:?}",
        started.elapsed()
    );
    assert_eq!(
        t.js("return window.__sameDocument ?? null").await,
        json!("yes"),
        "the page was reloaded"
    );
    t.screenshot("secrets").await;
    t.narrow_screenshot("secrets-narrow").await;
    t.assert_nowhere(&forbidden, "after the live update").await;

    // The proxy did see the value go out, once, in the PUT's body: it records what it says.
    let sent: Vec<String> = t
        .proxy
        .exchanges()
        .iter()
        .filter(|x| String::from_utf8_lossy(&x.request).contains(CANARY))
        .map(|x| format!("{} {}", x.method, x.uri))
        .collect();
    assert_eq!(
        sent,
        vec!["PUT /v1/environments/shop/secrets/PAYMENT_TOKEN".to_owned()],
        "the canary went out once"
    );
    let events = t
        .proxy
        .exchanges()
        .into_iter()
        .filter(|x| x.uri.starts_with("/v1/events/stream"))
        .map(|x| x.response_text())
        .collect::<String>();
    assert!(
        events.contains("PAYMENT_TOKEN"),
        "the event stream went through the proxy: {events}"
    );
    // The row this tab created is on screen: it is not announced as created elsewhere.
    let fresh = t
        .js("const f = document.getElementById('fresh'); return [f.hidden, f.textContent]")
        .await;
    assert_eq!(
        fresh[0],
        json!(true),
        "the secret this tab created is announced as {:?}",
        fresh[1]
    );
    t.finish().await;
}

/// The key the browser is signed in with is revoked with the CLI: the next action in the
/// page sends the browser back to the sign-in form, with a message, and the key is gone
/// from the tab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_sends_the_browser_back_to_sign_in() {
    let t = Dashboard::start().await;
    let key = t.sign_in_with_a_new_admin_key().await;
    // The environments page: it follows no event stream, so nothing but the click below
    // makes a request after the revocation.
    t.wait_js(
        "the environments page",
        "return location.hash === '#/environments' && !!document.getElementById('new-env-name')",
    )
    .await;

    let id = key["id"].as_str().unwrap();
    let out = t.cli(&["apikey", "revoke", id, "--yes"], None);
    assert!(out.status.success(), "{out:?}");
    assert!(
        t.js("return !!document.getElementById('sign-out')").await == json!(true),
        "still signed in until the next request"
    );

    t.click("nav a[href=\"#/env/default/secrets\"]").await;
    let message = t.signed_out_message().await;
    assert!(message.as_str().unwrap().contains("refused"), "{message}");
    assert_eq!(
        t.js(
            "return [sessionStorage.getItem('coffer.apiKey'), location.hash, \
              !!document.querySelector('nav')]"
        )
        .await,
        json!([null, "", false])
    );
    t.finish().await;
}

/// An API key created on the API keys page is shown once (and works), is gone from the page
/// once dismissed, and revoking it there refuses it; revoking the key the tab is signed in
/// with (after a warning) signs the tab out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_is_shown_once_and_revoking_the_own_key_signs_out() {
    let t = Dashboard::start().await;
    let mine = t.sign_in_with_a_new_admin_key().await;
    t.open("#/api-keys").await;
    t.wait_js(
        "the key form",
        "return !!document.getElementById('new-key-name')",
    )
    .await;

    t.type_into("#new-key-name", "deploy from CI").await;
    t.js(
        "const r = document.getElementById('new-key-role'); r.value = 'manage'; \
          r.dispatchEvent(new Event('change', {bubbles: true})); \
          const e = document.getElementById('new-key-environment'); e.value = 'default'; \
          e.dispatchEvent(new Event('change', {bubbles: true})); return null",
    )
    .await;
    t.click("#create-key button[type=submit]").await;
    let key = t
        .wait_js(
            "the new key, shown once",
            "return document.getElementById('new-key')?.textContent || null",
        )
        .await;
    let key = key.as_str().unwrap().to_owned();
    assert!(key.starts_with("ck_default_"), "{key}");
    let (s, who) = call(&t.server.base, &key, Method::GET, "/v1/whoami", None).await;
    assert_eq!(s, StatusCode::OK, "{who}");
    assert_eq!(who["role"], "manage");
    assert_eq!(who["environment"], "default");
    let id = who["keyId"].as_str().unwrap().to_owned();

    t.click("#close-new-key").await;
    let left = t
        .js_args(
            "const k = arguments[0]; \
             return [document.documentElement.outerHTML.includes(k), \
                     JSON.stringify(sessionStorage).includes(k), location.href.includes(k)]",
            vec![json!(key)],
        )
        .await;
    assert_eq!(
        left,
        json!([false, false, false]),
        "the key stays in the page"
    );
    t.wait_js_args(
        "the new key's row",
        "return !!document.querySelector(`[data-key-id=\"${arguments[0]}\"]`)",
        vec![json!(id)],
    )
    .await;

    // Revoking another key: it is refused from then on.
    t.click(&format!("button[data-key-id=\"{id}\"]")).await;
    t.click("#confirm-revoke").await;
    t.wait_js_args(
        "the row gone",
        "return !document.querySelector(`tr[data-key-id=\"${arguments[0]}\"]`)",
        vec![json!(id)],
    )
    .await;
    let (s, _) = call(&t.server.base, &key, Method::GET, "/v1/whoami", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Revoking the tab's own key warns, then signs out.
    let own = mine["id"].as_str().unwrap();
    t.click(&format!("button[data-key-id=\"{own}\"]")).await;
    t.wait_js(
        "the warning that this signs the tab out",
        "return document.getElementById('revoke-self-warning')?.textContent || null",
    )
    .await;
    t.click("#confirm-revoke").await;
    let message = t.signed_out_message().await;
    assert!(message.as_str().unwrap().contains(own), "{message}");
    assert_eq!(
        t.js("return sessionStorage.getItem('coffer.apiKey')").await,
        Value::Null
    );
    let (s, _) = call(
        &t.server.base,
        mine["key"].as_str().unwrap(),
        Method::GET,
        "/v1/whoami",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    t.finish().await;
}

/// A dialog open when the key is revoked goes with the session: the tab signs out (its event
/// stream ends with the revocation and the reconnection is refused), and the value typed
/// into the open "New secret" dialog is nowhere in the page afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialog_open_at_sign_out_leaves_nothing_behind() {
    let t = Dashboard::start().await;
    let key = t.sign_in_with_a_new_admin_key().await;
    t.open("#/env/default/secrets").await;
    t.wait_js(
        "the secrets page",
        "return !!document.getElementById('new-secret')",
    )
    .await;
    t.click("#new-secret").await;
    let canary = "canary-typed-not-sent-4b9e";
    t.type_into("#secret-value", canary).await;
    let out = t.cli(
        &["apikey", "revoke", key["id"].as_str().unwrap(), "--yes"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    t.wait_js(
        "signed out by the stream's refusal",
        "return !!document.getElementById('api-key') && !document.getElementById('sign-out')",
    )
    .await;
    let left = t
        .js_args(
            "const v = arguments[0]; \
             return [document.querySelectorAll('dialog').length, \
                     document.documentElement.outerHTML.includes(v), \
                     [...document.querySelectorAll('input, textarea')].some((e) => e.value.includes(v)), \
                     sessionStorage.length]",
            vec![json!(canary)],
        )
        .await;
    assert_eq!(left, json!([0, false, false, 0]));
    t.finish().await;
}

/// The admin pages do their work: a rewrap walks every value with its progress bar to the
/// end, the audit chain checks out and the result filter keeps only denied rows, and the
/// live feed shows a write made elsewhere without a reload. A manage key is offered none of
/// the admin pages and only its own environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_rewrap_check_the_chain_and_follow_events_and_a_manage_key_sees_less() {
    let t = Dashboard::start().await;
    for i in 0..30 {
        let (s, b) = t
            .admin_call(
                Method::PUT,
                &format!("/v1/environments/default/secrets/S_{i:02}"),
                json!({"value": format!("value-{i}")}),
            )
            .await;
        assert!(s.is_success(), "{b}");
    }
    // A denied request for the audit filter.
    let (s, _) = call(
        &t.server.base,
        "ck_admin_wrong",
        Method::GET,
        "/v1/api-keys",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Denials are written once a second (coalesced): wait until it is in the log.
    t.until_api("the denied row", "/v1/audit?result=denied", |b| {
        b["entries"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    let admin = t.admin.clone();
    t.sign_in(&admin).await;

    t.open("#/encryption").await;
    t.wait_js(
        "the key versions",
        "return !!document.getElementById('key-versions')",
    )
    .await;
    t.click("#rewrap").await;
    t.wait_js(
        "the rewrap summary",
        "const p = document.getElementById('rewrap-progress'); \
         return !!document.getElementById('rewrap-summary') && p && p.max >= 30 && p.value === p.max",
    )
    .await;

    t.open("#/audit").await;
    t.wait_js(
        "the audit log",
        "return !!document.querySelector('#audit tbody tr')",
    )
    .await;
    t.click("#audit-verify").await;
    t.wait_js(
        "the chain checked",
        "return document.getElementById('audit-chain-result')?.dataset.ok === 'true'",
    )
    .await;
    t.js(
        "const r = document.getElementById('audit-result'); r.value = 'denied'; \
          r.dispatchEvent(new Event('change', {bubbles: true})); return null",
    )
    .await;
    t.click("#audit-apply").await;
    t.wait_js(
        "only denied rows",
        "const cells = [...document.querySelectorAll('#audit td[data-col=result]')]; \
         return cells.length > 0 && cells.every((c) => c.textContent.includes('denied'))",
    )
    .await;

    t.open("#/events").await;
    t.wait_js(
        "the stream open",
        "return document.getElementById('stream-state')?.dataset.state === 'open'",
    )
    .await;
    t.js("window.__sameDocument = true; return null").await;
    let (s, b) = t
        .admin_call(
            Method::PUT,
            "/v1/environments/default/secrets/WRITTEN_ELSEWHERE",
            json!({"value": "v"}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    t.wait_js(
        "the write in the feed",
        "return document.getElementById('event-feed').textContent.includes('system.secret.WRITTEN_ELSEWHERE.created')",
    )
    .await;
    assert_eq!(
        t.js("return window.__sameDocument === true").await,
        json!(true)
    );

    // A manage key: its environment only, no admin pages offered.
    let (s, env) = t
        .admin_call(Method::POST, "/v1/environments", json!({"name": "shop"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{env}");
    let (s, manage) = t
        .admin_call(
            Method::POST,
            "/v1/api-keys",
            json!({"name": "shop manager", "role": "manage", "environment": "shop"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{manage}");
    t.click("#sign-out").await;
    t.sign_in(manage["key"].as_str().unwrap()).await;
    t.wait_js(
        "its secrets page",
        "return location.hash === '#/env/shop/secrets'",
    )
    .await;
    let offered = t
        .js(
            "return [[...document.querySelectorAll('nav a')].map((a) => a.getAttribute('href')), \
                     [...document.querySelectorAll('#env-select option')].map((o) => o.value)]",
        )
        .await;
    assert_eq!(
        offered,
        json!([
            [
                "#/env/shop/secrets",
                "#/env/shop/config",
                "#/env/shop/functions",
                "#/env/shop/orchestrations",
                "#/audit",
                "#/events"
            ],
            ["shop"]
        ])
    );
    t.finish().await;
}

/// A run waiting at an approval step is approved from its page; its status moves on. The
/// other main pages are shown with data in them (and saved as screenshots when asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestration_run_is_approved_from_its_page() {
    let t = Dashboard::start().await;
    let env = "/v1/environments/default";
    for (path, body) in [
        (
            format!("{env}/functions/charge"),
            json!({"mode": "pull", "triggers": [{"event": "order.paid"}], "secrets": ["STRIPE_KEY"]}),
        ),
        (
            format!("{env}/secrets/STRIPE_KEY"),
            json!({"value": "sk_test_not-a-real-one"}),
        ),
        (
            format!("{env}/config/REGION"),
            json!({"value": "eu-west-1"}),
        ),
        (
            format!("{env}/config/LIMITS"),
            json!({"value": {"perMinute": 600, "burst": 50}}),
        ),
    ] {
        let (status, answer) = t.admin_call(Method::PUT, &path, body).await;
        assert!(status.is_success(), "{path}: {answer}");
    }
    let (status, o) = t
        .admin_call(
            Method::POST,
            &format!("{env}/orchestrations"),
            json!({"name": "nightly-billing", "steps": [
                {"id": "review", "type": "approval", "timeoutMs": 3_600_000},
                {"id": "settle", "type": "delay", "durationMs": 0}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    let (status, run) = t
        .admin_call(
            Method::POST,
            &format!("{env}/orchestrations/{}/runs", o["id"].as_str().unwrap()),
            json!({"params": {"day": "2026-01-31"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let run_path = format!("{env}/orchestration-runs/{run_id}");
    t.until_api("the run waits for its approval", &run_path, |r| {
        r["status"] == "waiting_approval"
    })
    .await;

    t.sign_in(&t.admin).await;
    t.open(&format!("#/env/default/orchestration-runs/{run_id}"))
        .await;
    let before = t
        .wait_js(
            "the run's status and its approve button",
            "const s = document.getElementById('run-status'); \
             return s && s.textContent && document.getElementById('approve-run') ? s.textContent : null",
        )
        .await;
    assert!(before.as_str().unwrap().contains("waiting"), "{before}");
    t.screenshot("orchestration-run").await;
    t.click("#approve-run").await;
    let after = t
        .wait_js(
            "the status moved on",
            "const s = document.getElementById('run-status')?.textContent || ''; \
             return s && !s.includes('waiting') ? s : null",
        )
        .await;
    println!("run status after the approval: {after}");
    assert_eq!(
        t.js("return document.getElementById('decision-message')?.textContent ?? null")
            .await,
        json!("Approved: the run goes on.")
    );
    let done = t
        .until_api("the run is approved and goes on", &run_path, |r| {
            r["status"] != "waiting_approval"
        })
        .await;
    assert_eq!(done["steps"][0]["status"], "succeeded", "{done}");

    // The other main pages, with something in them.
    if screenshots_dir().is_some() {
        let (_, answer) = t
            .admin_call(
                Method::POST,
                "/v1/api-keys",
                json!({"name": "ci-deploy", "role": "manage", "environment": "default"}),
            )
            .await;
        assert!(answer["id"].is_string(), "{answer}");
        let (status, answer) = t
            .admin_call(
                Method::POST,
                &format!("{env}/events"),
                json!({"name": "order.paid", "data": {"order": 1042}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        for (hash, name, ready) in [
            (
                "#/env/default/config",
                "config",
                "document.body.textContent.includes('eu-west-1')",
            ),
            (
                "#/env/default/functions",
                "functions",
                "document.body.textContent.includes('charge')",
            ),
            (
                "#/api-keys",
                "api-keys",
                "document.body.textContent.includes('ci-deploy')",
            ),
            (
                "#/encryption",
                "encryption",
                "document.querySelectorAll('main table, main dl').length > 0",
            ),
            (
                "#/audit",
                "audit",
                "document.body.textContent.includes('apikey.created')",
            ),
        ] {
            t.open(hash).await;
            t.wait_js(&format!("the {name} page"), &format!("return {ready}"))
                .await;
            t.screenshot(name).await;
        }
        t.open("#/events").await;
        t.wait_js(
            "the event stream open",
            "return document.getElementById('stream-state')?.dataset.state === 'open'",
        )
        .await;
        for (i, name) in ["DATABASE_URL", "SENTRY_DSN", "STRIPE_KEY"]
            .iter()
            .enumerate()
        {
            let (status, answer) = t
                .admin_call(
                    Method::PUT,
                    &format!("{env}/secrets/{name}"),
                    json!({"value": format!("value-{i}")}),
                )
                .await;
            assert!(status.is_success(), "{answer}");
        }
        t.wait_js(
            "three events in the feed",
            "return document.getElementById('event-feed').textContent.includes('SENTRY_DSN')",
        )
        .await;
        t.screenshot("events").await;
    }
    t.finish().await;
}

/// Strings users choose are rendered as text: markup and script in an API key's name, a
/// config value, an orchestration's name, a run's output and the User-Agent the audit log
/// recorded show as those characters, and nothing of them runs or becomes an element.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_provided_strings_render_inert() {
    let t = Dashboard::start().await;
    let env = "/v1/environments/default";
    let key_name = format!("key {XSS}");
    let config_value = format!("config {XSS}");
    let orchestration_name = format!("orch {XSS}");
    let output = format!("output {XSS}");
    let agent = format!("agent {XSS}");

    let (status, key) = t
        .admin_call(
            Method::POST,
            "/v1/api-keys",
            json!({"name": key_name, "role": "manage", "environment": "default"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    // The audit row of this write records the request's User-Agent.
    let answer = http()
        .put(format!("{}{env}/config/GREETING", t.server.base))
        .bearer_auth(&t.admin)
        .header("user-agent", &agent)
        .json(&json!({"value": config_value}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let (status, f) = t
        .admin_call(
            Method::PUT,
            &format!("{env}/functions/render"),
            json!({"mode": "pull", "triggers": [{"event": "page.render"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{f}");
    let (status, o) = t
        .admin_call(
            Method::POST,
            &format!("{env}/orchestrations"),
            json!({"name": orchestration_name, "steps": [{"id": "ok", "type": "approval"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    // A run whose output carries the payload: a pull worker takes the job and completes it.
    let (status, sent) = t
        .admin_call(
            Method::POST,
            &format!("{env}/events"),
            json!({"name": "page.render"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let run_id = sent["runs"][0]["id"].as_str().unwrap().to_owned();
    let (status, worker) = t
        .admin_call(
            Method::POST,
            "/v1/api-keys",
            json!({"name": "worker", "role": "runtime", "environment": "default"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{worker}");
    let worker = worker["key"].as_str().unwrap().to_owned();
    let (status, job) = call(
        &t.server.base,
        &worker,
        Method::POST,
        &format!("{env}/workers/poll"),
        Some(json!({"functions": ["render"], "waitMs": 5000})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    let (status, done) = call(
        &t.server.base,
        &worker,
        Method::POST,
        &format!("{env}/runs/{run_id}/complete"),
        Some(json!({"output": {"message": output}, "attempt": job["attempt"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");

    t.sign_in(&t.admin).await;
    let pages = [
        ("#/api-keys".to_owned(), key_name.clone()),
        ("#/env/default/config".to_owned(), config_value.clone()),
        (
            "#/env/default/orchestrations".to_owned(),
            orchestration_name.clone(),
        ),
        (format!("#/env/default/runs/{run_id}"), output.clone()),
        ("#/audit".to_owned(), agent.clone()),
    ];
    for (hash, text) in pages {
        t.open(&hash).await;
        t.wait_js_args(
            &format!("{text:?} shown as text on {hash}"),
            "return document.querySelector('main')?.textContent.includes(arguments[0]) || null",
            vec![json!(text)],
        )
        .await;
        let state = t
            .js("return {xss: window.__xss ?? null, \
                 img: document.querySelectorAll('img[src=\"x\"]').length, \
                 inline: [...document.scripts].filter((s) => !s.src).length, \
                 handlers: document.querySelectorAll('[onerror]').length}")
            .await;
        assert_eq!(
            state,
            json!({"xss": null, "img": 0, "inline": 0, "handlers": 0}),
            "on {hash}"
        );
    }
    // Give an image that failed to load time to fire its handler, then look again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.js("return window.__xss ?? null").await, Value::Null);
    t.finish().await;
}

/// 10,000 secrets: the page shows the first 100 (the rest stay on the server until asked
/// for) and the time to the rendered table is reported (not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_secrets_render_one_page_and_report_the_first_paint() {
    let t = Dashboard::start().await;
    let (status, created) = t
        .admin_call(Method::POST, "/v1/environments", json!({"name": "big"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let started = Instant::now();
    for batch in 0..10 {
        let secrets: Vec<Value> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                json!({"name": format!("BULK_{n:05}"), "value": format!("v-{n}")})
            })
            .collect();
        let (status, body) = t
            .admin_call(
                Method::POST,
                "/v1/environments/big/secrets",
                json!({ "secrets": secrets }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    println!("imported 10,000 secrets in {:?}", started.elapsed());

    t.sign_in(&t.admin).await;
    // Within the app: from the hash change to the painted table.
    let within = t
        .js_async(
            "const done = arguments[arguments.length - 1];
             const t0 = performance.now();
             location.hash = '#/env/big/secrets';
             const check = () => {
               if (document.querySelector('#secrets tbody tr')) {
                 requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));
               } else {
                 requestAnimationFrame(check);
               }
             };
             check();",
        )
        .await;
    // A fresh load of the page (the key is in the tab's session): first contentful paint,
    // largest contentful paint and when the first page of secrets had arrived.
    t.browser.client().goto("about:blank").await.unwrap();
    let started = Instant::now();
    t.open("#/env/big/secrets").await;
    t.wait_js(
        "the table, after a fresh load",
        "return document.querySelectorAll('#secrets tbody tr').length > 0",
    )
    .await;
    let seen = started.elapsed();
    let timings = t
        .js_async(
            "const done = arguments[arguments.length - 1];
             const fcp = performance.getEntriesByName('first-contentful-paint')[0];
             const list = performance.getEntriesByType('resource')
               .filter((e) => e.name.includes('/v1/environments/big/secrets'));
             let lcp = null;
             new PerformanceObserver((l) => {
               const all = l.getEntries();
               lcp = all[all.length - 1];
             }).observe({type: 'largest-contentful-paint', buffered: true});
             setTimeout(() => done({
               fcp: fcp ? fcp.startTime : null,
               lcp: lcp ? lcp.startTime : null,
               lcpElement: lcp && lcp.element ? lcp.element.tagName : null,
               listArrived: list.length ? list[0].responseEnd : null,
             }), 100);",
        )
        .await;
    println!(
        "secrets page with 10,000 secrets (ms): hash change to painted table {within}; \
         fresh load: first contentful paint {}, largest contentful paint {} ({}), \
         first page of secrets received {}; seen by WebDriver after {:?}",
        timings["fcp"], timings["lcp"], timings["lcpElement"], timings["listArrived"], seen
    );
    assert_eq!(
        t.js(
            "return [document.querySelectorAll('#secrets tbody tr').length, \
              document.querySelectorAll('tr[data-name]').length, \
              document.querySelector('#secrets tbody tr').dataset.name, \
              document.getElementById('next-page').disabled]"
        )
        .await,
        json!([100, 100, "BULK_00000", false]),
        "one page of 100 in the DOM"
    );
    t.click("#next-page").await;
    t.wait_js(
        "the second page",
        "return document.querySelector('#secrets tr[data-name=\"BULK_00100\"]') && \
         document.querySelectorAll('#secrets tbody tr').length === 100",
    )
    .await;
    t.type_into("#secret-search", "bulk_09999").await;
    t.wait_js(
        "the search's one row",
        "const rows = document.querySelectorAll('#secrets tbody tr'); \
         return rows.length === 1 && rows[0].dataset.name === 'BULK_09999'",
    )
    .await;
    // Sorting by last update is the server's, across all 10,000: the one written last comes
    // first (most recent first), then by name descending it is last of all.
    t.clear("#secret-search").await;
    t.type_into("#secret-search", "_").await;
    let (status, _) = t
        .admin_call(
            Method::PUT,
            "/v1/environments/big/secrets/AAA_WRITTEN_LAST",
            json!({"value": "v"}),
        )
        .await;
    assert!(status.is_success());
    t.click("button[data-sort=updatedAt]").await;
    t.wait_js(
        "most recently updated first",
        "const rows = document.querySelectorAll('#secrets tbody tr'); \
         return rows.length === 100 && rows[0].dataset.name === 'AAA_WRITTEN_LAST'",
    )
    .await;
    t.click("button[data-sort=name]").await;
    t.wait_js(
        "by name",
        "const rows = document.querySelectorAll('#secrets tbody tr'); \
         return rows.length === 100 && rows[0].dataset.name === 'AAA_WRITTEN_LAST'",
    )
    .await;
    t.click("button[data-sort=name]").await;
    t.wait_js(
        "by name, Z to A",
        "const rows = document.querySelectorAll('#secrets tbody tr'); \
         return rows.length === 100 && rows[0].dataset.name === 'BULK_09999' \
           && rows[99].dataset.name === 'BULK_09900'",
    )
    .await;
    t.finish().await;
}

// ---------------------------------------------------------------------------------------
// The harness: server, proxy, browser
// ---------------------------------------------------------------------------------------

/// One test's world: `coffer serve`, the recording proxy in front of it, and a browser
/// that opens the proxy's address.
struct Dashboard {
    server: ServerProcess,
    proxy: Proxy,
    browser: Browser,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Dashboard {
    async fn start() -> Dashboard {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let browser = Browser::start(dir.path()).await;
        let server = tokio::task::block_in_place(|| {
            ServerProcess::start(&data, &[("COFFER_MASTER_KEY", MASTER_KEY)], &[])
        });
        let admin = server.admin_key();
        let proxy = Proxy::start(&server.base).await;
        Dashboard {
            server,
            proxy,
            browser,
            admin,
            _dir: dir,
        }
    }

    /// Closes the browser's session; the guards end the processes.
    async fn finish(mut self) {
        self.browser.quit().await;
    }

    /// Opens `/ui/HASH` at the proxy's address (a new document).
    async fn open(&self, hash: &str) {
        let url = format!("{}/ui/{hash}", self.proxy.base);
        let client = self.browser.client();
        let current = client.current_url().await.unwrap();
        if current.as_str().starts_with(&self.proxy.base) && !hash.is_empty() {
            // Same document: follow the hash like a link would.
            self.js_args(
                "location.hash = arguments[0]; return null",
                vec![json!(hash)],
            )
            .await;
        } else {
            client.goto(&url).await.unwrap();
        }
    }

    /// Creates an admin key of its own (one the test may revoke), signs in with it, and
    /// returns the API's answer (`id`, `key`, …).
    async fn sign_in_with_a_new_admin_key(&self) -> Value {
        let (status, created) = self
            .admin_call(
                Method::POST,
                "/v1/api-keys",
                json!({"name": "browser", "role": "admin"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        self.sign_in(created["key"].as_str().unwrap()).await;
        created
    }

    /// Waits until the tab is back on the sign-in form with a message; returns it.
    async fn signed_out_message(&self) -> Value {
        self.wait_js(
            "back on the sign-in form",
            "const e = document.getElementById('sign-in-error'); \
             return document.getElementById('api-key') && e && e.textContent ? e.textContent : null",
        )
        .await
    }

    /// Signs in on a fresh page with the form and waits for the navigation.
    async fn sign_in(&self, key: &str) {
        self.browser
            .client()
            .goto(&format!("{}/ui/", self.proxy.base))
            .await
            .unwrap();
        self.wait_js(
            "the sign-in form",
            "return !!document.getElementById('api-key')",
        )
        .await;
        self.type_into("#api-key", key).await;
        self.click("#sign-in").await;
        self.wait_js(
            "signed in",
            "return !!document.getElementById('sign-out') || \
             (document.getElementById('sign-in-error')?.textContent || null)",
        )
        .await;
        let error = self
            .js("return document.getElementById('sign-in-error')?.textContent || null")
            .await;
        assert_eq!(error, Value::Null, "sign-in refused");
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.send_keys(text).await.unwrap();
    }

    async fn clear(&self, css: &str) {
        self.find(css).await.clear().await.unwrap();
    }

    /// Clicks the element `css` finds; found again if the page redrew it in between (a live
    /// update redraws a table, headers included).
    async fn click(&self, css: &str) {
        for attempt in 1.. {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && attempt < 5 => {}
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    async fn click_xpath(&self, xpath: &str) {
        let el = self
            .browser
            .client()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath(xpath))
            .await
            .unwrap_or_else(|e| panic!("{xpath}: {e}\n{}", self.server.log()));
        el.click().await.unwrap();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.browser
            .client()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} not found: {e}"))
    }

    async fn js(&self, script: &str) -> Value {
        self.js_args(script, vec![]).await
    }

    async fn js_args(&self, script: &str, args: Vec<Value>) -> Value {
        self.browser
            .client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    async fn js_async(&self, script: &str) -> Value {
        self.browser
            .client()
            .execute_async(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Runs `script` until it returns something truthy (10 s at most); returns that.
    async fn wait_js(&self, what: &str, script: &str) -> Value {
        self.wait_js_within(what, Duration::from_secs(10), script)
            .await
    }

    async fn wait_js_args(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        self.poll(what, Duration::from_secs(10), script, args, |v| {
            truthy(v).then(|| v.clone())
        })
        .await
    }

    async fn wait_js_within(&self, what: &str, within: Duration, script: &str) -> Value {
        self.poll(what, within, script, vec![], |v| {
            truthy(v).then(|| v.clone())
        })
        .await
    }

    async fn wait_js_eq(&self, what: &str, script: &str, want: Value) -> Value {
        self.poll(what, Duration::from_secs(10), script, vec![], |v| {
            (*v == want).then(|| v.clone())
        })
        .await
    }

    async fn poll(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        args: Vec<Value>,
        done: impl Fn(&Value) -> Option<Value>,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let got = self.js_args(script, args.clone()).await;
            if let Some(found) = done(&got) {
                return found;
            }
            if Instant::now() > deadline {
                let page = self
                    .js("return document.querySelector('#app')?.innerText ?? ''")
                    .await;
                panic!(
                    "timed out after {within:?} waiting for {what} (last: {got})\n\
                     page text: {}\nserver log tail: {}",
                    page.as_str().unwrap_or(""),
                    tail(&self.server.log(), 2000)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An API call with the admin key, straight to the server.
    async fn admin_call(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let body = (method != Method::GET).then_some(body);
        call(&self.server.base, &self.admin, method, path, body).await
    }

    /// GETs `path` until `ready` holds for the answer (10 s at most).
    async fn until_api(&self, what: &str, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, got) = call(&self.server.base, &self.admin, Method::GET, path, None).await;
            if ready(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "timed out: {what} ({got})");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `coffer ARGS` against the server with the admin key, `stdin` on its standard input.
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        tokio::task::block_in_place(|| {
            let mut cmd = clean_command(args);
            cmd.env("COFFER_ADDR", &self.server.base)
                .env("COFFER_API_KEY", &self.admin)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("coffer");
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                std::io::Write::write_all(&mut input, text.as_bytes()).unwrap();
            }
            drop(input);
            child.wait_with_output().unwrap()
        })
    }

    /// Fails if any of `values` shows anywhere the browser keeps or was sent something.
    async fn assert_nowhere(&self, values: &[&str], when: &str) {
        let mut places: Vec<(String, String)> = vec![(
            "the page source".into(),
            self.browser.client().source().await.unwrap(),
        )];
        let seen = self
            .js("const out = [];
                 out.push(['outerHTML', document.documentElement.outerHTML]);
                 out.push(['innerText', document.body.innerText]);
                 for (const el of document.querySelectorAll('input, textarea, select')) {
                   out.push(['the value of ' + (el.id || el.name || el.tagName), el.value]);
                 }
                 const all = (s) => {
                   const o = {};
                   for (let i = 0; i < s.length; i++) o[s.key(i)] = s.getItem(s.key(i));
                   return JSON.stringify(o);
                 };
                 out.push(['sessionStorage', all(sessionStorage)]);
                 out.push(['localStorage', all(localStorage)]);
                 out.push(['location.href', location.href]);
                 out.push(['document.referrer', document.referrer]);
                 out.push(['history.state', JSON.stringify(history.state)]);
                 out.push(['document.title', document.title]);
                 out.push(['performance entries',
                           performance.getEntries().map((e) => e.name).join('\\n')]);
                 return out;")
            .await;
        for pair in seen.as_array().unwrap() {
            places.push((
                pair[0].as_str().unwrap().to_owned(),
                pair[1].as_str().unwrap_or_default().to_owned(),
            ));
        }
        let exchanges = self.proxy.exchanges();
        assert!(
            exchanges
                .iter()
                .any(|x| x.uri.starts_with("/v1/environments/")
                    && x.response_text().contains("\"revision\"")),
            "the proxy recorded the API's answers"
        );
        for x in &exchanges {
            places.push((
                format!("the response to {} {}", x.method, x.uri),
                x.response_text(),
            ));
            places.push((format!("the URL of {} {}", x.method, x.uri), x.uri.clone()));
        }
        places.push(("the server's log".into(), self.server.log()));
        for (place, text) in &places {
            for value in values {
                assert!(
                    !text.contains(value),
                    "{when}: {value:?} is in {place}:\n{}",
                    tail(text, 3000)
                );
            }
        }
        println!(
            "{when}: none of {} values in {} places ({} proxied responses)",
            values.len(),
            places.len(),
            exchanges.len()
        );
    }

    async fn screenshot(&self, name: &str) {
        let Some(dir) = screenshots_dir() else {
            return;
        };
        // Without the passing toasts; two frames, so what was just drawn is on screen.
        self.js_async(
            "const done = arguments[arguments.length - 1]; \
             document.getElementById('toasts')?.replaceChildren(); \
             requestAnimationFrame(() => requestAnimationFrame(() => done(null)));",
        )
        .await;
        let png = self.browser.client().screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        println!("saved {} ({:?})", path.display(), png_size(&png));
    }

    /// A screenshot at 400 px wide, then back to 1280x800.
    async fn narrow_screenshot(&self, name: &str) {
        if screenshots_dir().is_none() {
            return;
        }
        self.browser.viewport(400, 800).await;
        self.screenshot(name).await;
        self.browser.viewport(1280, 800).await;
    }
}

fn screenshots_dir() -> Option<PathBuf> {
    std::env::var_os("COFFER_UI_SCREENSHOTS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// A PNG's width and height (from its IHDR chunk).
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    let w = png.get(16..20)?;
    let h = png.get(20..24)?;
    Some((
        u32::from_be_bytes(w.try_into().ok()?),
        u32::from_be_bytes(h.try_into().ok()?),
    ))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    }
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

async fn call(
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// chromedriver on a free port, driving a headless Chromium with a fresh profile.
struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
    log: PathBuf,
}

impl Browser {
    async fn start(dir: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: {GET_BROWSER}"
        );
        let path = std::env::var_os("PATH").unwrap_or_default();
        let chromedriver = std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join("chromedriver"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("chromedriver is missing: {GET_BROWSER}"));
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let log = dir.join("chromedriver.log");
        let mut attempt = 0;
        let (driver, port) = loop {
            attempt += 1;
            let port = free_port();
            let mut cmd = Command::new(&chromedriver);
            cmd.arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Its own process group: the guard ends chromedriver and what it started.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}: {GET_BROWSER}", chromedriver.display()));
            if driver_ready(&mut child, port).await {
                break (child, port);
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                attempt < 3,
                "chromedriver did not start ({GET_BROWSER}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let mut browser = Browser {
            client: None,
            driver,
            profile,
            log,
        };
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--window-size=1280,800".into(),
            "--lang=en-US".into(),
            format!("--user-data-dir={}", browser.profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Chromium did not start ({GET_BROWSER}): {e}\n{}",
                    tail(
                        &std::fs::read_to_string(&browser.log).unwrap_or_default(),
                        3000
                    )
                )
            });
        browser.client = Some(client);
        browser.viewport(1280, 800).await;
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Sizes the window so that the page's viewport is `width` x `height`.
    async fn viewport(&self, width: u32, height: u32) {
        let client = self.client();
        client.set_window_size(width, height).await.unwrap();
        let inner = client
            .execute("return [innerWidth, innerHeight]", vec![])
            .await
            .unwrap();
        let (iw, ih) = (
            inner[0].as_u64().unwrap() as u32,
            inner[1].as_u64().unwrap() as u32,
        );
        if (iw, ih) != (width, height) {
            client
                .set_window_size(
                    width + width.saturating_sub(iw),
                    height + height.saturating_sub(ih),
                )
                .await
                .unwrap();
        }
    }

    async fn quit(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        }
    }
}

async fn driver_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if let Ok(answer) = http()
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            && let Ok(status) = answer.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium's processes (found by their profile, which is this test's alone), then
        // chromedriver's process group.
        let profile = self.profile.to_string_lossy().into_owned();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                if String::from_utf8_lossy(&cmdline).contains(&profile) {
                    let _ = send_signal(pid, Signal::KILL);
                }
            }
        }
        let _ = signal_group(self.driver.id(), Signal::KILL);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One request the proxy passed on, and what came back.
#[derive(Clone)]
struct Exchange {
    method: String,
    uri: String,
    request: Vec<u8>,
    /// The status line and headers, then the body as it streamed through.
    response: Arc<Mutex<Vec<u8>>>,
}

impl Exchange {
    fn response_text(&self) -> String {
        String::from_utf8_lossy(&self.response.lock().unwrap()).into_owned()
    }
}

/// A plain HTTP proxy on a port of its own in front of the server: the browser opens its
/// address, it passes each request on and records every response as it streams back.
/// It asks for no compression, so what it records is what the page reads.
struct Proxy {
    base: String,
    log: Arc<Mutex<Vec<Exchange>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = ProxyState {
            upstream: upstream.to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            log: log.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy { base, log, task }
    }

    /// What passed so far (a response still streaming keeps growing).
    fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Headers the proxy does not pass on: those of one connection, not of the message, and
/// `accept-encoding`, so that the bodies it records are as the page reads them.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "accept-encoding"
    )
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let sent = state
        .client
        .request(parts.method.clone(), format!("{}{uri}", state.upstream))
        .headers(headers)
        .body(body.to_vec())
        .send()
        .await;
    let mut upstream = match sent {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut head = format!("{}\n", upstream.status());
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        head.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
        if !hop_by_hop(name.as_str()) {
            response = response.header(name, value);
        }
    }
    let recorded = Arc::new(Mutex::new(head.into_bytes()));
    state.log.lock().unwrap().push(Exchange {
        method: parts.method.to_string(),
        uri,
        request: body.to_vec(),
        response: recorded.clone(),
    });
    // Streamed through as it comes (the event stream never ends), recorded on the way.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        loop {
            match upstream.chunk().await {
                Ok(Some(chunk)) => {
                    recorded.lock().unwrap().extend_from_slice(&chunk);
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    response.body(Body::from_stream(stream)).unwrap()
}
