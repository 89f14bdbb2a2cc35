//! Starts a server in-process on 127.0.0.1:0 with a temp data dir and a fixed key, on the
//! backend `COFFER_TEST_BACKEND` names: `sqlite` (default) or `postgres` (a database of its
//! own on `COFFER_TEST_DATABASE_URL`). `scripts/test.sh` runs this suite on both.

use std::sync::Arc;

use coffer_api::ServeOptions;
use coffer_core::{Coffer, StartupOptions};
use coffer_crypto::{Key, Keyring};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub const MASTER_KEY_HEX: &str = "4f1c0d9e6a2b8c7d5e3f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

pub struct Server {
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    _database: Option<coffer_postgres::testing::TestDatabase>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether the value store under test checks `expectedRevision` and applies imports
/// atomically (Vault KV v1 does neither: the service answers 422 `invalid_value`, which the
/// tests that need the capability assert instead).
pub fn compare_and_set() -> bool {
    std::env::var("COFFER_TEST_VALUES").as_deref() != Ok("vault-kv1")
}

/// The answer to a request the value store under test cannot honour (see
/// [`compare_and_set`]).
pub fn assert_refused_for_capability(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_value", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("backend cannot"), "{body}");
}

pub async fn start() -> Server {
    start_with(ServeOptions::default()).await
}

pub async fn start_with(serve_options: ServeOptions) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let (catalog, secrets, database) = crate::backend::open(dir.path()).await;
    let keyring = Keyring::single(Key::from_material(MASTER_KEY_HEX).expect("key"));
    let options = StartupOptions {
        catalog,
        secrets,
        keyring: Some(keyring),
        require_encryption: true,
        admin_key_seed: None,
        allow_unreadable: false,
        backend_note: None,
    };
    let (coffer, report) = options.start().await.expect("start");
    let admin = report
        .admin_key
        .expect("first start creates an admin key")
        .key
        .expose_secret()
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(coffer_api::serve_with(
        listener,
        Arc::new(coffer) as Arc<Coffer>,
        async {
            let _ = stopped.await;
        },
        serve_options,
    ));
    Server {
        base,
        admin,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        _dir: dir,
        _database: database,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Server {
    /// Begins shutdown and waits until the server has stopped; returns how long that took.
    pub async fn shut_down(mut self) -> std::time::Duration {
        let began = std::time::Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve");
        }
        began.elapsed()
    }

    /// Sends a request with an optional bearer key and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        if is_event_stream(&resp) {
            return (status, Value::Null); // it does not end: tests/api/events.rs reads streams
        }
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(Some(&self.admin), method, path, body).await
    }

    pub async fn create_env(&self, name: &str) {
        let (s, b) = self
            .admin(
                Method::POST,
                "/v1/environments",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    /// Creates a key and returns (id, key).
    pub async fn create_key(&self, role: &str, env: Option<&str>) -> (String, String) {
        let mut body = json!({ "name": format!("{role} key"), "role": role });
        if let Some(env) = env {
            body["environment"] = json!(env);
        }
        let (s, b) = self.admin(Method::POST, "/v1/api-keys", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        (
            b["id"].as_str().unwrap().to_owned(),
            b["key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn put_secret(&self, env: &str, name: &str, value: &str) -> Value {
        let path = format!("/v1/environments/{env}/secrets/{name}");
        let (s, b) = self
            .admin(Method::PUT, &path, Some(json!({ "value": value })))
            .await;
        assert!(s.is_success(), "{s} {b}");
        b
    }

    pub async fn put_config(&self, env: &str, key: &str, value: Value) -> Value {
        let path = format!("/v1/environments/{env}/config/{key}");
        let (s, b) = self
            .admin(Method::PUT, &path, Some(json!({ "value": value })))
            .await;
        assert!(s.is_success(), "{s} {b}");
        b
    }

    /// Every page of the listing at `path` (which has a query already), following
    /// `nextCursor` as admin until it is absent: the `field` items of each page.
    pub async fn pages(&self, path: &str, field: &str) -> Vec<Vec<Value>> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = path.to_owned();
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.admin(Method::GET, &url, None).await;
            assert_eq!(status, StatusCode::OK, "{url}: {page}");
            pages.push(page[field].as_array().expect("a page").clone());
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return pages,
            }
            assert!(pages.len() < 1_000, "{path}: the pages never end");
        }
    }

    /// Everything the store holds, as one comparable snapshot (metadata only).
    pub async fn snapshot(&self) -> Value {
        let (_, envs) = self.admin(Method::GET, "/v1/environments", None).await;
        let (_, keys) = self.admin(Method::GET, "/v1/api-keys", None).await;
        let mut secrets = Vec::new();
        for env in envs["environments"].as_array().unwrap() {
            let path = format!(
                "/v1/environments/{}/secrets?limit=1000",
                env["name"].as_str().unwrap()
            );
            secrets.push(self.admin(Method::GET, &path, None).await.1);
        }
        json!({ "environments": envs, "apiKeys": keys, "secrets": secrets })
    }
}

/// Whether the answer is a server-sent event stream.
pub fn is_event_stream(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}
