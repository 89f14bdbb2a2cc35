//! The MCP server through a real MCP client (rmcp): `coffer mcp` on stdio, spawned as a
//! child of the test with COFFER_ADDR and COFFER_API_KEY, and `POST /mcp` on a real
//! `coffer serve`. Both must offer the same ten tools, answer with the API's JSON, turn API
//! errors into tool errors carrying the API's code, and never show a secret value.

mod common;

use std::process::Stdio;

use common::{ServerProcess, clean_command};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const MASTER_KEY: &str = "4f1d0c9e6a2b8c7d5e3f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";
const CANARY: &str = "canary-XYZ-7f3a91";
/// The noisiest `COFFER_LOG` there is, naming rmcp's own targets: rmcp logs whole messages
/// at debug level (`received request`, a set_secret's value in it), which neither `coffer
/// mcp` nor the server may print whatever COFFER_LOG says.
const NOISY_LOG: &str = "trace,rmcp=trace,rmcp::service=trace";

type Client = RunningService<RoleClient, ()>;

/// A server with environment `prod`, a function `billing` in `default`, and a manage key
/// of `prod`.
struct Server {
    dir: tempfile::TempDir,
    process: ServerProcess,
    admin: String,
    manage_prod: String,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let process = ServerProcess::start(
            &dir.path().join("data"),
            &[("COFFER_MASTER_KEY", MASTER_KEY), ("COFFER_LOG", NOISY_LOG)],
            &[],
        );
        let admin = process.admin_key();
        let mut server = Server {
            dir,
            process,
            admin,
            manage_prod: String::new(),
        };
        server
            .rest("POST", "/v1/environments", json!({"name": "prod"}))
            .await;
        let key = server
            .rest(
                "POST",
                "/v1/api-keys",
                json!({"name": "mcp-prod", "role": "manage", "environment": "prod"}),
            )
            .await;
        server.manage_prod = key["key"].as_str().unwrap().to_owned();
        server
            .rest(
                "PUT",
                "/v1/environments/default/functions/billing",
                json!({"triggers": [{"event": "invoice.due"}], "secrets": [], "mode": "pull"}),
            )
            .await;
        server
    }

    /// A REST call with the admin key that must succeed.
    async fn rest(&self, method: &str, path: &str, body: Value) -> Value {
        let response = common::http()
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.process.base),
            )
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// An MCP client of `POST /mcp` with `key`.
    async fn http_client(&self, key: &str) -> Client {
        let config =
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", self.process.base))
                .auth_header(key);
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let transport = StreamableHttpClientTransport::with_client(http, config);
        ().serve(transport).await.expect("initialize over HTTP")
    }

    /// An MCP client of a `coffer mcp` child with `key`; its stderr goes to the returned
    /// file.
    async fn stdio_client(&self, key: &str) -> (Client, std::path::PathBuf) {
        let mut cmd = clean_command(&["mcp"]);
        cmd.env("COFFER_ADDR", &self.process.base)
            .env("COFFER_API_KEY", key)
            .env("COFFER_LOG", NOISY_LOG);
        let stderr_path = self.dir.path().join(format!("mcp-{}.log", rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let (transport, _) = TokioChildProcess::builder(tokio::process::Command::from(cmd))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn coffer mcp");
        let client = ().serve(transport).await.expect("initialize over stdio");
        (client, stderr_path)
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn call(client: &Client, tool: &'static str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// The structured result of a call that must succeed.
async fn ok(client: &Client, tool: &'static str, args: Value) -> Value {
    let result = call(client, tool, args).await;
    let value = result.structured_content.clone().unwrap_or(Value::Null);
    assert_ne!(result.is_error, Some(true), "{tool}: {value}");
    value
}

/// The API error code of a call that must fail as a tool error (not a protocol error).
async fn err(client: &Client, tool: &'static str, args: Value) -> Value {
    let result = call(client, tool, args).await;
    assert_eq!(result.is_error, Some(true), "{tool}: {result:?}");
    let error = result.structured_content.clone().unwrap()["error"].clone();
    let text = serde_json::to_value(&result.content).unwrap().to_string();
    assert!(
        text.contains(error["code"].as_str().unwrap()),
        "the text names the code: {text}"
    );
    error
}

const TOOLS: [&str; 10] = [
    "approve_orchestration_run",
    "create_orchestration",
    "get_orchestration",
    "get_orchestration_run",
    "list_functions",
    "list_orchestrations",
    "list_secrets",
    "run_orchestration",
    "set_secret",
    "update_orchestration",
];

/// What both transports must do the same way, as the admin key.
async fn tools_answer_as_the_api(client: &Client) {
    let info = client.peer_info().expect("initialized");
    assert_eq!(info.server_info.as_ref().unwrap().name, "coffer");
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for tool in &tools {
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
        assert!(
            tool.input_schema.contains_key("properties"),
            "{}",
            tool.name
        );
    }

    let set = ok(
        client,
        "set_secret",
        json!({"environment": "default", "name": "STRIPE_KEY", "value": CANARY}),
    )
    .await;
    assert_eq!(set["name"], "STRIPE_KEY");
    assert!(set["revision"].as_u64().unwrap() >= 1, "{set}");
    assert!(!set.to_string().contains(CANARY), "{set}");

    let listed = ok(client, "list_secrets", json!({"environment": "default"})).await;
    let names: Vec<&str> = listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"STRIPE_KEY"), "{listed}");
    assert!(!listed.to_string().contains(CANARY));

    let functions = ok(client, "list_functions", json!({"environment": "default"})).await;
    assert_eq!(functions["functions"][0]["id"], "billing", "{functions}");

    let missing = err(
        client,
        "list_secrets",
        json!({"environment": "no-such-env"}),
    )
    .await;
    assert_eq!(missing["code"], "environment_not_found", "{missing}");
    assert_eq!(missing["status"], 404);

    let conflict = err(
        client,
        "set_secret",
        json!({"environment": "default", "name": "STRIPE_KEY", "value": "x", "expectedRevision": 0}),
    )
    .await;
    assert_eq!(conflict["code"], "revision_conflict", "{conflict}");
    assert!(conflict["currentRevision"].as_u64().unwrap() >= 1);

    // A path segment that would change the URL never reaches the API.
    let bad = err(client, "list_secrets", json!({"environment": "../v1"})).await;
    assert_eq!(bad["code"], "invalid_name", "{bad}");
}

#[tokio::test]
async fn coffer_mcp_on_stdio_serves_the_tools_with_the_api_key_it_was_given() {
    let server = Server::start().await;
    let (client, stderr) = server.stdio_client(&server.admin).await;
    tools_answer_as_the_api(&client).await;
    client.cancel().await.unwrap();

    // A manage key of prod: its own environment works, another one is the API's 403.
    let (client, stderr_manage) = server.stdio_client(&server.manage_prod).await;
    ok(&client, "list_secrets", json!({"environment": "prod"})).await;
    let denied = err(&client, "list_secrets", json!({"environment": "default"})).await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    assert_eq!(denied["status"], 403);
    client.cancel().await.unwrap();

    for log in [
        std::fs::read_to_string(stderr).unwrap(),
        std::fs::read_to_string(stderr_manage).unwrap(),
    ] {
        assert!(!log.contains(CANARY), "a value in coffer mcp's log:\n{log}");
        assert!(
            !log.contains(&server.admin),
            "the API key in coffer mcp's log:\n{log}"
        );
        assert!(
            !log.contains(&server.manage_prod),
            "the API key in coffer mcp's log:\n{log}"
        );
    }
    server_log_shows_no_value_and_no_key(&server);
}

/// The server prints its admin key once, at the first start (DESIGN.md §3); nothing else
/// it logs may show a key or a value.
fn server_log_shows_no_value_and_no_key(server: &Server) {
    let log = server.process.log();
    assert!(!log.contains(CANARY), "a value in the server log:\n{log}");
    assert_eq!(log.matches(&server.admin).count(), 1, "{log}");
    assert!(!log.contains(&server.manage_prod), "{log}");
}

#[tokio::test]
async fn post_mcp_serves_the_same_tools_as_the_caller() {
    let server = Server::start().await;
    let client = server.http_client(&server.admin).await;
    tools_answer_as_the_api(&client).await;
    client.cancel().await.unwrap();

    let client = server.http_client(&server.manage_prod).await;
    ok(&client, "list_secrets", json!({"environment": "prod"})).await;
    let denied = err(&client, "list_functions", json!({"environment": "default"})).await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    client.cancel().await.unwrap();

    server_log_shows_no_value_and_no_key(&server);
}

#[tokio::test]
async fn post_mcp_without_a_valid_key_is_401_with_the_api_error_body() {
    let server = Server::start().await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    for key in [
        None,
        Some("ck_admin_0000000000000000000000000000000000000000000000000"),
    ] {
        let mut request = common::http()
            .post(format!("{}/mcp", server.process.base))
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "key {key:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    // The same request with the key is served.
    let response = common::http()
        .post(format!("{}/mcp", server.process.base))
        .bearer_auth(&server.admin)
        .header("Accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["serverInfo"]["name"], "coffer", "{body}");
    // Only POST is served.
    let response = common::http()
        .get(format!("{}/mcp", server.process.base))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

/// The orchestration tools (DESIGN.md §3), over both transports: an encrypted parameter
/// goes in once and only ever comes back masked.
#[tokio::test]
async fn an_orchestration_session_never_shows_an_encrypted_parameter() {
    let server = Server::start().await;
    let (stdio, stderr) = server.stdio_client(&server.admin).await;
    let http = server.http_client(&server.admin).await;
    for client in [&stdio, &http] {
        let created = ok(
            client,
            "create_orchestration",
            json!({"environment": "default", "name": "nightly", "steps": [{
                "id": "charge", "type": "compute", "functionId": "billing",
                "params": {"currency": "EUR"},
                "encryptedParams": {"apiToken": {"value": CANARY, "encrypt": true}}
            }]}),
        )
        .await;
        let id = created["id"].as_str().expect("an id").to_owned();
        assert!(id.starts_with("orch_"), "{created}");
        let masked = json!({"value": "********", "encrypted": true});
        assert_eq!(
            created["steps"][0]["encryptedParams"]["apiToken"], masked,
            "{created}"
        );
        assert!(!created.to_string().contains(CANARY));

        let got = ok(
            client,
            "get_orchestration",
            json!({"environment": "default", "id": id}),
        )
        .await;
        assert_eq!(got["steps"][0]["encryptedParams"]["apiToken"], masked);
        assert!(!got.to_string().contains(CANARY), "{got}");

        // The masked form sent back keeps the stored value.
        let updated = ok(
            client,
            "update_orchestration",
            json!({"environment": "default", "id": id, "name": "nightly-2",
                   "steps": got["steps"].clone(), "expectedRevision": got["revision"].clone()}),
        )
        .await;
        assert_eq!(updated["name"], "nightly-2");
        assert_eq!(updated["revision"], got["revision"].as_u64().unwrap() + 1);
        assert_eq!(updated["steps"][0]["encryptedParams"]["apiToken"], masked);

        let listed = ok(
            client,
            "list_orchestrations",
            json!({"environment": "default"}),
        )
        .await;
        assert!(!listed["orchestrations"].as_array().unwrap().is_empty());
        assert!(!listed.to_string().contains(CANARY));

        let run = ok(
            client,
            "run_orchestration",
            json!({"environment": "default", "id": id, "params": {"invoice": 42}}),
        )
        .await;
        let run_id = run["id"].as_str().expect("a run id").to_owned();
        assert!(run_id.starts_with("orun_"), "{run}");
        assert_eq!(run["orchestrationId"], id.as_str());

        let seen = ok(
            client,
            "get_orchestration_run",
            json!({"environment": "default", "runId": run_id}),
        )
        .await;
        assert_eq!(seen["id"], run_id.as_str());
        assert_eq!(seen["params"]["invoice"], 42);
        assert!(!seen.to_string().contains(CANARY), "{seen}");

        // Not waiting at an approval: the API's refusal, as a tool error.
        let refused = err(
            client,
            "approve_orchestration_run",
            json!({"environment": "default", "runId": run_id}),
        )
        .await;
        assert!(refused["status"].as_u64().unwrap() >= 400, "{refused}");
    }
    stdio.cancel().await.unwrap();
    http.cancel().await.unwrap();
    for log in [
        std::fs::read_to_string(stderr).unwrap(),
        server.process.log(),
    ] {
        assert!(
            !log.contains(CANARY),
            "a parameter's value in a log:\n{log}"
        );
    }
}

/// A wrong argument type is a tool error with a stable code whose text never quotes the
/// argument (serde's message would: `invalid type: integer `482193``), on both transports.
#[tokio::test]
async fn argument_errors_never_quote_the_argument() {
    let server = Server::start().await;
    let (stdio, stderr) = server.stdio_client(&server.admin).await;
    let http = server.http_client(&server.admin).await;
    for client in [&stdio, &http] {
        let cases = [
            (
                "set_secret",
                json!({"environment": "default", "name": "PIN", "value": 482193}),
                "invalid_value",
            ),
            (
                "update_orchestration",
                json!({"environment": "default", "id": "orch_0", "name": "n",
                       "steps": "not-a-list-SECRET"}),
                "invalid_argument",
            ),
            (
                "run_orchestration",
                json!({"environment": "default", "id": "orch_0", "params": "SECRET"}),
                "invalid_argument",
            ),
        ];
        for (tool, args, code) in cases {
            let result = call(client, tool, args).await;
            let shown = serde_json::to_string(&result).unwrap();
            // A missing argument is named (nothing to quote there).
            let missing = err(client, tool, json!({})).await;
            assert_eq!(missing["code"], "invalid_argument", "{missing}");
            assert_eq!(missing["message"], "missing argument `environment`");
            assert_eq!(result.is_error, Some(true), "{tool}: {shown}");
            let structured = result.structured_content.clone().unwrap();
            assert_eq!(structured["error"]["code"], code, "{tool}: {shown}");
            assert!(
                !shown.contains("482193") && !shown.contains("SECRET"),
                "{tool}: {shown}"
            );
        }
    }
    // Nothing was written.
    let listed = ok(&stdio, "list_secrets", json!({"environment": "default"})).await;
    assert!(!listed.to_string().contains("PIN"), "{listed}");
    stdio.cancel().await.unwrap();
    http.cancel().await.unwrap();
    for log in [
        std::fs::read_to_string(stderr).unwrap(),
        server.process.log(),
    ] {
        assert!(!log.contains("482193"), "{log}");
        assert!(!log.contains("not-a-list-SECRET"), "{log}");
    }
}

/// `coffer mcp` never falls back to the data dir's admin.key (it would give an assistant
/// every environment): without COFFER_API_KEY or a login it exits 4 before serving, its
/// message on stderr and nothing on stdout (the protocol's channel).
#[tokio::test]
async fn coffer_mcp_never_takes_the_local_admin_key() {
    let server = Server::start().await;
    assert!(server.process.data_dir.join("admin.key").exists());
    let config = tempfile::tempdir().unwrap();
    let output = clean_command(&["mcp"])
        .env("COFFER_ADDR", &server.process.base)
        .env("COFFER_DATA_DIR", &server.process.data_dir)
        .env("XDG_CONFIG_HOME", config.path())
        .env("HOME", config.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    assert!(
        stderr.contains("no API key") && stderr.contains("COFFER_API_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains(&server.admin), "{stderr}");
}
