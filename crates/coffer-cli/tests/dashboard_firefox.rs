//! The dashboard in Firefox: Debian's `firefox-esr`, headless, driven over WebDriver BiDi,
//! which Firefox speaks itself (`--remote-debugging-port`; no geckodriver, which Debian does
//! not package). The Chromium tests (`tests/dashboard.rs`) go deep; this one proves that the
//! same pages load and work in the other engine: sign-in, every page rendered without a
//! script error or a Content-Security-Policy violation, a secret set through the write-only
//! form, and its row following a write made elsewhere (the event stream read with `fetch`).
//!
//! `scripts/test.sh` installs `firefox-esr` where it is missing; without it this test fails
//! with a message saying how to get it.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ServerProcess, Signal, free_port, http, signal_group};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const FIREFOX: &str = "firefox-esr";
const GET_FIREFOX: &str = "install Debian's firefox-esr (apt-get install firefox-esr; \
     scripts/test.sh does it when it is missing)";
const MASTER_KEY: &str = "3c1e9b0d2f4a6c8e1b3d5f7a9c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c7e";

/// Preferences that keep a test profile quiet: no update, telemetry or remote-settings
/// traffic (this machine has no outside network; each attempt would only fail).
const PREFS: &str = r#"
user_pref("app.update.enabled", false);
user_pref("app.normandy.enabled", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("extensions.update.enabled", false);
user_pref("messaging-system.rsexperimentloader.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("toolkit.telemetry.enabled", false);
"#;

/// Records what would show that a page misbehaved, before any page script runs.
const WATCH: &str = "() => {
    window.__problems = [];
    document.addEventListener('securitypolicyviolation', (e) =>
        window.__problems.push('CSP ' + e.violatedDirective + ' ' + e.blockedURI));
    window.addEventListener('error', (e) => window.__problems.push('error ' + e.message));
    window.addEventListener('unhandledrejection', (e) =>
        window.__problems.push('rejection ' + String(e.reason)));
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_in_firefox() {
    let dir = tempfile::tempdir().unwrap();
    let server = tokio::task::block_in_place(|| {
        ServerProcess::start(
            &dir.path().join("data"),
            &[("COFFER_MASTER_KEY", MASTER_KEY)],
            &[],
        )
    });
    let admin = server.admin_key();
    let api = |method: reqwest::Method, path: &str, body: Value| {
        let req = http()
            .request(method, format!("{}{path}", server.base))
            .bearer_auth(&admin)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Something on every page.
    use reqwest::Method;
    for (path, body) in [
        (
            "/v1/environments/default/secrets/STRIPE_KEY",
            json!({"value": "sk_test_firefox"}),
        ),
        (
            "/v1/environments/default/config/REGION",
            json!({"value": {"name": "eu-west", "replicas": 3}}),
        ),
        (
            "/v1/environments/default/functions/charge",
            json!({"triggers": [{"event": "order.paid"}], "secrets": ["STRIPE_KEY"], "mode": "pull"}),
        ),
    ] {
        let (s, b) = api(Method::PUT, path, body).await;
        assert!(s.is_success(), "{path}: {s} {b}");
    }
    let (s, b) = api(
        Method::POST,
        "/v1/environments/default/orchestrations",
        json!({"name": "billing", "steps": [
            {"id": "charge", "type": "compute", "functionId": "charge",
             "encryptedParams": {"token": {"value": "tok_firefox", "encrypt": true}}},
            {"id": "review", "type": "approval"}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let orchestration = b["id"].as_str().unwrap().to_owned();

    let mut ff = Firefox::start(dir.path()).await;
    ff.navigate(&format!("{}/ui", server.base)).await;
    ff.wait("the sign-in form", "!!document.getElementById('api-key')")
        .await;
    ff.eval_args(
        "(key) => { document.getElementById('api-key').value = key; \
                    document.getElementById('sign-in').click(); }",
        vec![json!(admin)],
    )
    .await;
    ff.wait("signed in", "!!document.getElementById('sign-out')")
        .await;

    // Every page renders its heading and its main element, and nothing goes wrong.
    let pages = [
        ("#/environments", "new-env-name"),
        ("#/env/default/secrets", "secrets"),
        ("#/env/default/config", "config"),
        ("#/env/default/functions", "functions"),
        ("#/env/default/functions/charge", "function-definition"),
        ("#/env/default/orchestrations", "orchestrations"),
        (
            &format!("#/env/default/orchestrations/{orchestration}"),
            "steps",
        ),
        ("#/api-keys", "api-keys"),
        ("#/encryption", "key-versions"),
        ("#/audit", "audit"),
        ("#/events", "event-feed"),
    ];
    for (hash, id) in pages {
        ff.eval_args("(h) => { location.hash = h; }", vec![json!(hash)])
            .await;
        ff.wait_args(
            &format!("{hash} rendered #{id}"),
            "(id) => !!document.getElementById(id) && !!document.querySelector('main h1')",
            vec![json!(id)],
        )
        .await;
        let text = ff.eval("document.querySelector('main').innerText").await;
        assert!(
            !text.as_str().unwrap_or("").contains("Something went wrong"),
            "{hash}: {text}"
        );
    }
    // The encrypted param is masked on the orchestration's page.
    ff.eval_args(
        "(h) => { location.hash = h; }",
        vec![json!(format!(
            "#/env/default/orchestrations/{orchestration}"
        ))],
    )
    .await;
    ff.wait(
        "the masked param",
        "document.getElementById('steps')?.textContent.includes('********')",
    )
    .await;

    // A secret set through the write-only form; then its row follows a write made elsewhere.
    ff.eval("(() => { location.hash = '#/env/default/secrets'; })()")
        .await;
    ff.wait(
        "the secrets page",
        "!!document.getElementById('new-secret')",
    )
    .await;
    ff.eval(
        "(() => { document.getElementById('new-secret').click(); \
          document.getElementById('secret-name').value = 'FIREFOX_SECRET'; \
          document.getElementById('secret-value').value = 'canary-firefox-7d1c'; \
          document.getElementById('save-secret').click(); })()",
    )
    .await;
    ff.wait(
        "the new row",
        "document.querySelector('tr[data-name=\"FIREFOX_SECRET\"] td[data-col=revision]')?.textContent === '1'",
    )
    .await;
    ff.eval("(() => { window.__sameDocument = true; })()").await;
    let (s, b) = api(
        Method::PUT,
        "/v1/environments/default/secrets/FIREFOX_SECRET",
        json!({"value": "canary-firefox-second"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    ff.wait(
        "revision 2, live",
        "document.querySelector('tr[data-name=\"FIREFOX_SECRET\"] td[data-col=revision]')?.textContent === '2'",
    )
    .await;
    assert_eq!(ff.eval("window.__sameDocument === true").await, json!(true));
    let leaked = ff
        .eval(
            "['canary-firefox-7d1c', 'canary-firefox-second', 'sk_test_firefox', 'tok_firefox'] \
             .filter((v) => document.documentElement.outerHTML.includes(v) \
               || JSON.stringify(sessionStorage).includes(v) || location.href.includes(v) \
               || [...document.querySelectorAll('input, textarea')].some((e) => e.value.includes(v)))",
        )
        .await;
    assert_eq!(leaked, json!([]), "values left in the page");

    let problems = ff.eval("window.__problems").await;
    assert_eq!(problems, json!([]), "script errors or CSP violations");
    let errors: Vec<&String> = ff
        .console
        .iter()
        .filter(|line| line.starts_with("error"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    ff.quit().await;
}

// ---------------------------------------------------------------------------------------
// A WebDriver BiDi client: just what the test uses.
// ---------------------------------------------------------------------------------------

struct Firefox {
    process: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    context: String,
    /// `level text` of every console entry and script error of the page.
    console: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Firefox {
    async fn start(dir: &Path) -> Firefox {
        let profile = tempfile::tempdir_in(dir).unwrap();
        std::fs::write(profile.path().join("user.js"), PREFS).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("firefox.log")).unwrap();
        let process = Command::new(FIREFOX)
            .args(["--headless", "--no-remote", "--profile"])
            .arg(profile.path())
            .args(["--remote-debugging-port", &port.to_string(), "about:blank"])
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{FIREFOX}: {e}: {GET_FIREFOX}"));
        let url = format!("ws://127.0.0.1:{port}/session");
        let began = Instant::now();
        let socket = loop {
            match tokio_tungstenite::connect_async(&url).await {
                Ok((socket, _)) => break socket,
                Err(e) => {
                    assert!(
                        began.elapsed() < Duration::from_secs(30),
                        "Firefox's WebDriver BiDi did not answer at {url}: {e}\n{}",
                        std::fs::read_to_string(dir.join("firefox.log")).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut ff = Firefox {
            process,
            socket,
            next_id: 0,
            context: String::new(),
            console: Vec::new(),
            _profile: profile,
        };
        ff.command("session.new", json!({"capabilities": {}})).await;
        ff.command("session.subscribe", json!({"events": ["log.entryAdded"]}))
            .await;
        ff.command(
            "script.addPreloadScript",
            json!({"functionDeclaration": WATCH}),
        )
        .await;
        let tree = ff.command("browsingContext.getTree", json!({})).await;
        ff.context = tree["contexts"][0]["context"]
            .as_str()
            .expect("a browsing context")
            .to_owned();
        ff
    }

    /// Sends one command and waits for its answer (console entries that arrive meanwhile
    /// are kept).
    async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(message))
            .await
            .expect("send to Firefox");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer from Firefox"))
                .expect("Firefox closed the connection")
                .expect("a WebSocket frame");
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text).expect("JSON from Firefox");
            if reply["type"] == "event" {
                if reply["method"] == "log.entryAdded" {
                    let p = &reply["params"];
                    self.console.push(format!(
                        "{} {}",
                        p["level"].as_str().unwrap_or("?"),
                        p["text"].as_str().unwrap_or("")
                    ));
                }
                continue;
            }
            if reply["id"] != id {
                continue;
            }
            assert_eq!(reply["type"], "success", "{method}: {reply}");
            return reply["result"].clone();
        }
    }

    async fn navigate(&mut self, url: &str) {
        let context = self.context.clone();
        self.command(
            "browsingContext.navigate",
            json!({"context": context, "url": url, "wait": "complete"}),
        )
        .await;
    }

    /// Evaluates an expression in the page; its value as JSON.
    async fn eval(&mut self, expression: &str) -> Value {
        let context = self.context.clone();
        let result = self
            .command(
                "script.evaluate",
                json!({"expression": expression, "target": {"context": context},
                       "awaitPromise": true, "resultOwnership": "none"}),
            )
            .await;
        assert_eq!(result["type"], "success", "{expression}: {result}");
        deserialize(&result["result"])
    }

    /// Calls `function` (a function declaration) with JSON arguments; its value as JSON.
    async fn eval_args(&mut self, function: &str, args: Vec<Value>) -> Value {
        let context = self.context.clone();
        let arguments: Vec<Value> = args.iter().map(serialize).collect();
        let result = self
            .command(
                "script.callFunction",
                json!({"functionDeclaration": function, "target": {"context": context},
                       "arguments": arguments, "awaitPromise": true,
                       "resultOwnership": "none"}),
            )
            .await;
        assert_eq!(result["type"], "success", "{function}: {result}");
        deserialize(&result["result"])
    }

    /// Waits (10 s at most) until `expression` is truthy.
    async fn wait(&mut self, what: &str, expression: &str) -> Value {
        let began = Instant::now();
        loop {
            let v = self.eval(expression).await;
            if truthy(&v) {
                return v;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "waited 10 s for {what}; console: {:?}",
                self.console
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Firefox::wait`] for a function of `args`.
    async fn wait_args(&mut self, what: &str, function: &str, args: Vec<Value>) -> Value {
        let began = Instant::now();
        loop {
            let v = self.eval_args(function, args.clone()).await;
            if truthy(&v) {
                return v;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "waited 10 s for {what}; console: {:?}",
                self.console
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn quit(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.command("session.end", json!({})),
        )
        .await;
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        // Firefox starts content processes of its own: end the whole group.
        let _ = signal_group(self.process.id(), Signal::KILL);
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A JSON value as a BiDi local value (the types the test passes).
fn serialize(v: &Value) -> Value {
    match v {
        Value::Null => json!({"type": "null"}),
        Value::Bool(b) => json!({"type": "boolean", "value": b}),
        Value::Number(n) => json!({"type": "number", "value": n}),
        Value::String(s) => json!({"type": "string", "value": s}),
        other => panic!("not passed to the page: {other}"),
    }
}

/// A BiDi remote value as JSON (primitives, arrays and plain objects).
fn deserialize(v: &Value) -> Value {
    match v["type"].as_str() {
        Some("undefined" | "null") => Value::Null,
        Some("boolean" | "number" | "string") => v["value"].clone(),
        Some("array") => Value::Array(
            v["value"]
                .as_array()
                .map(|a| a.iter().map(deserialize).collect())
                .unwrap_or_default(),
        ),
        Some("object") => Value::Object(
            v["value"]
                .as_array()
                .map(|pairs| {
                    pairs
                        .iter()
                        .filter_map(|p| Some((p[0].as_str()?.to_owned(), deserialize(&p[1]))))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => json!(format!("<{}>", v["type"].as_str().unwrap_or("?"))),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}
