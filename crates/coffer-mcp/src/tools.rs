//! The tools: each one's input (the REST body plus `environment` and the route's ids), the
//! API call it makes, and its result (the API's JSON, or a tool error carrying the API's
//! error code).

use std::sync::Arc;

use axum::http::{self, Method, StatusCode};
use rmcp::handler::server::common::schema_for_input;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock, Extensions, Implementation, JsonObject, ServerCapabilities,
    ServerConfig,
};
use rmcp::schemars::{self, JsonSchema};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroize;

use crate::backend::{ApiRequest, Backend, Caller, JsonBody};

/// The MCP server's tools, calling the API through `B`.
pub struct CofferTools<B> {
    backend: Arc<B>,
    tool_router: ToolRouter<Self>,
}

impl<B: Backend> CofferTools<B> {
    /// The tools, calling the API through `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        CofferTools {
            backend,
            tool_router: Self::tool_router(),
        }
    }
}

impl<B> Clone for CofferTools<B> {
    fn clone(&self) -> Self {
        CofferTools {
            backend: self.backend.clone(),
            tool_router: self.tool_router.clone(),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl<B: Backend> ServerHandler for CofferTools<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("coffer", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

const INSTRUCTIONS: &str = "Coffer keeps secrets per environment. These tools manage \
secrets (write-only: no tool ever returns a value), functions and orchestrations through \
Coffer's HTTP API with your API key; results are the API's JSON, encrypted parameters \
masked as {\"value\": \"********\", \"encrypted\": true}. Errors carry the API's code \
(forbidden, environment_not_found, revision_conflict with currentRevision, …).";

// ---- inputs -------------------------------------------------------------------------------

/// A page of a listing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListArgs {
    /// The environment, e.g. `production`.
    environment: String,
    /// The `nextCursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
    /// Items per page, 1-1000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<u32>,
}

/// A secret's new value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetSecretArgs {
    /// The environment.
    environment: String,
    /// The secret's name: letters, digits and `_`, not starting with a digit (1-128).
    name: String,
    /// The value (UTF-8, at most 64 KiB). Write-only: no tool ever shows it again.
    #[schemars(with = "String")]
    value: LenientSecret,
    /// Write only if the secret is at this revision now (`0`: only if it does not exist).
    #[serde(default)]
    expected_revision: Option<u64>,
}

/// A new orchestration.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrchestrationArgs {
    /// The environment.
    environment: String,
    /// A label (1-128 characters).
    name: String,
    /// The steps, run in this order unless a decision jumps.
    #[schemars(schema_with = "steps_schema")]
    steps: Vec<Value>,
}

/// An orchestration's whole definition, again.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateOrchestrationArgs {
    /// The environment.
    environment: String,
    /// The orchestration's id (`orch_…`).
    id: String,
    /// A label (1-128 characters).
    name: String,
    /// The steps. Send an encrypted parameter back masked (`{"value": "********",
    /// "encrypted": true}`) to keep it; omit it to remove it.
    #[schemars(schema_with = "steps_schema")]
    steps: Vec<Value>,
    /// Update only if the orchestration is at this revision now.
    #[serde(default)]
    expected_revision: Option<u64>,
}

/// One orchestration.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestrationArgs {
    /// The environment.
    environment: String,
    /// The orchestration's id (`orch_…`).
    id: String,
}

/// A run to start.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunOrchestrationArgs {
    /// The environment.
    environment: String,
    /// The orchestration's id (`orch_…`).
    id: String,
    /// The run's params (not secret: every read shows them); compute steps' `triggerParams`
    /// start from them and decisions can test them (`params.a.b`).
    #[serde(default)]
    params: Option<serde_json::Map<String, Value>>,
}

/// One orchestration run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunArgs {
    /// The environment.
    environment: String,
    /// The run's id (`orun_…`).
    run_id: String,
}

/// A decision on a run waiting for approval.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApproveArgs {
    /// The environment.
    environment: String,
    /// The run's id (`orun_…`).
    run_id: String,
    /// `true` approves (the run goes on), `false` rejects it.
    #[serde(default = "yes")]
    approve: bool,
    /// Why (kept in the step's state and the audit log; at most 1,024 characters).
    #[serde(default)]
    reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// `set_secret`'s `value`: any JSON is accepted, a string kept as a [`SecretString`] and
/// anything else as `None`, so that the tool refuses a wrong type with a fixed message.
/// Serde's own error would quote the value (a numeric PIN, say).
#[derive(Debug)]
struct LenientSecret(Option<SecretString>);

impl<'de> Deserialize<'de> for LenientSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyJson;

        impl<'de> Visitor<'de> for AnyJson {
            type Value = Option<SecretString>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Some(SecretString::from(v)))
            }

            fn visit_string<E>(self, mut v: String) -> Result<Self::Value, E> {
                let secret = SecretString::from(v.as_str());
                v.zeroize();
                Ok(Some(secret))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(AnyJson)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(None)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(None)
            }
        }

        deserializer.deserialize_any(AnyJson).map(LenientSecret)
    }
}

/// The input schema of a tool taking `T` (what rmcp's `Parameters<T>` would derive).
fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|e| {
        panic!(
            "invalid input schema for `{}`: {e}",
            std::any::type_name::<T>()
        )
    })
}

/// A tool's arguments as `T`. Every tool parses its own rather than through rmcp's
/// `Parameters`, whose error text is serde's, and serde quotes the offending input
/// (`invalid type: string "…", expected a sequence`): here a wrong argument is a tool error
/// `invalid_argument` naming the argument, never its value. The strings of the arguments
/// (a secret value among them) are wiped once parsed.
fn parse_args<T: DeserializeOwned>(args: JsonObject) -> Result<T, ToolError> {
    let mut args = Value::Object(args);
    let parsed = T::deserialize(&args).map_err(|e| {
        let Value::Object(map) = &args else {
            unreachable!("built as an object")
        };
        argument_error::<T>(map, &e)
    });
    wipe_strings(&mut args);
    parsed
}

/// The error for arguments `T` refused. Serde names fields in backticks for a missing or
/// unknown field; for a wrong type it quotes the input instead, so the argument at fault is
/// found by leaving each one out in turn (a handful of fields, only on this error path).
fn argument_error<T: DeserializeOwned>(args: &JsonObject, e: &serde_json::Error) -> ToolError {
    let text = e.to_string();
    for (kind, shown) in [
        ("missing field", "missing argument"),
        ("unknown field", "unknown argument"),
    ] {
        if text.starts_with(kind) {
            let message = match text.split('`').nth(1).filter(|f| printable_name(f)) {
                Some(field) => format!("{shown} `{field}`"),
                None => shown.to_owned(),
            };
            return ToolError::new("invalid_argument", message);
        }
    }
    let culprit = args.keys().find(|key| {
        let mut without = args.clone();
        without.remove(key.as_str());
        let mut without = Value::Object(without);
        let fixed = match T::deserialize(&without) {
            Ok(_) => true,
            Err(e) => e.to_string().starts_with("missing field"),
        };
        wipe_strings(&mut without);
        fixed
    });
    let message = match culprit.filter(|f| printable_name(f)) {
        Some(field) => format!(
            "argument `{field}` has the wrong type or is out of range (see the tool's input schema; its value is not shown)"
        ),
        None => "an argument has the wrong type or is out of range (see the tool's input schema)"
            .to_owned(),
    };
    ToolError::new("invalid_argument", message)
}

/// Whether an argument's name (it comes from the client) may be shown: short visible ASCII.
fn printable_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_graphic())
}

/// Overwrites every string in `value` (a map's keys aside) before it is dropped.
fn wipe_strings(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        Value::Object(map) => map.values_mut().for_each(wipe_strings),
        _ => {}
    }
}

// ---- tools --------------------------------------------------------------------------------

#[tool_router(router = tool_router)]
impl<B: Backend> CofferTools<B> {
    /// `GET /v1/environments/{env}/secrets`
    #[tool(
        input_schema = input_schema::<ListArgs>(),
        description = "List the secrets of an environment: names, revisions, key versions and timestamps, never values. One page; pass nextCursor as cursor for the next."
    )]
    async fn list_secrets(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: ListArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        self.list(&ext, &args, "secrets").await
    }

    /// `PUT /v1/environments/{env}/secrets/{name}`
    #[tool(
        input_schema = input_schema::<SetSecretArgs>(),
        description = "Create or update a secret's value. The result is the secret's metadata (revision, key version, timestamps): the value is write-only and never shown again."
    )]
    async fn set_secret(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: SetSecretArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        // Any JSON was accepted as `value` so that a wrong type is refused here, with a
        // message that cannot quote it (serde's would: `invalid type: integer `482193``).
        let Some(value) = &args.value.0 else {
            return Ok(ToolError::new("invalid_value", "value must be a string").into_result());
        };
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            value: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            expected_revision: Option<u64>,
        }
        let body = Body {
            value: value.expose_secret(),
            expected_revision: args.expected_revision,
        };
        self.send(&ext, Method::PUT, body_of(&body), || {
            Ok(format!(
                "{}/secrets/{}",
                env_path(&args.environment)?,
                segment("name", &args.name)?
            ))
        })
        .await
    }

    /// `GET /v1/environments/{env}/functions`
    #[tool(
        input_schema = input_schema::<ListArgs>(),
        description = "List the functions of an environment: triggers, declared secrets (names), push or pull mode. One page; pass nextCursor as cursor for the next."
    )]
    async fn list_functions(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: ListArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        self.list(&ext, &args, "functions").await
    }

    /// `POST /v1/environments/{env}/orchestrations`
    #[tool(
        input_schema = input_schema::<CreateOrchestrationArgs>(),
        description = "Create an orchestration: ordered compute, approval, delay and decision steps. A compute step's encryptedParams entry {\"value\": \"…\", \"encrypt\": true} is sealed; every read shows it masked."
    )]
    async fn create_orchestration(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: CreateOrchestrationArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        let body = json!({"name": args.name, "steps": args.steps});
        self.send(&ext, Method::POST, body_of(&body), || {
            Ok(format!("{}/orchestrations", env_path(&args.environment)?))
        })
        .await
    }

    /// `PUT /v1/environments/{env}/orchestrations/{id}`
    #[tool(
        input_schema = input_schema::<UpdateOrchestrationArgs>(),
        description = "Replace an orchestration's definition (name and all steps). Keep an encrypted parameter by sending it back masked, {\"value\": \"********\", \"encrypted\": true}; omit it to remove it."
    )]
    async fn update_orchestration(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: UpdateOrchestrationArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        let mut body = json!({"name": args.name, "steps": args.steps});
        if let Some(revision) = args.expected_revision {
            body["expectedRevision"] = revision.into();
        }
        self.send(&ext, Method::PUT, body_of(&body), || {
            orchestration_path(&args.environment, &args.id)
        })
        .await
    }

    /// `GET /v1/environments/{env}/orchestrations/{id}`
    #[tool(
        input_schema = input_schema::<OrchestrationArgs>(),
        description = "Show an orchestration, its encrypted parameters masked."
    )]
    async fn get_orchestration(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: OrchestrationArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        self.send(&ext, Method::GET, Ok(None), || {
            orchestration_path(&args.environment, &args.id)
        })
        .await
    }

    /// `GET /v1/environments/{env}/orchestrations`
    #[tool(
        input_schema = input_schema::<ListArgs>(),
        description = "List the orchestrations of an environment, masked. One page; pass nextCursor as cursor for the next."
    )]
    async fn list_orchestrations(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: ListArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        self.list(&ext, &args, "orchestrations").await
    }

    /// `POST /v1/environments/{env}/orchestrations/{id}/runs`
    #[tool(
        input_schema = input_schema::<RunOrchestrationArgs>(),
        description = "Start a run of an orchestration with optional params; the result is the run (id, status, steps)."
    )]
    async fn run_orchestration(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: RunOrchestrationArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        let body = match args.params {
            Some(params) => json!({ "params": params }),
            None => json!({}),
        };
        self.send(&ext, Method::POST, body_of(&body), || {
            Ok(format!(
                "{}/runs",
                orchestration_path(&args.environment, &args.id)?
            ))
        })
        .await
    }

    /// `GET /v1/environments/{env}/orchestration-runs/{runId}`
    #[tool(
        input_schema = input_schema::<RunArgs>(),
        description = "Show an orchestration run: its status, current step and each step's status, output or error."
    )]
    async fn get_orchestration_run(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: RunArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        self.send(&ext, Method::GET, Ok(None), || {
            run_path(&args.environment, &args.run_id)
        })
        .await
    }

    /// `POST /v1/environments/{env}/orchestration-runs/{runId}/approve` or `/reject`
    #[tool(
        input_schema = input_schema::<ApproveArgs>(),
        description = "Approve (approve: true, the default) or reject (approve: false) an orchestration run waiting at an approval step, with an optional reason."
    )]
    async fn approve_orchestration_run(
        &self,
        args: JsonObject,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let args: ApproveArgs = match parse_args(args) {
            Ok(args) => args,
            Err(e) => return Ok(e.into_result()),
        };
        let body = match &args.reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        let decision = if args.approve { "approve" } else { "reject" };
        self.send(&ext, Method::POST, body_of(&body), || {
            Ok(format!(
                "{}/{decision}",
                run_path(&args.environment, &args.run_id)?
            ))
        })
        .await
    }
}

impl<B: Backend> CofferTools<B> {
    /// `GET …/{what}?cursor&limit`.
    async fn list(
        &self,
        ext: &Extensions,
        args: &ListArgs,
        what: &str,
    ) -> Result<CallToolResult, ErrorData> {
        self.send(ext, Method::GET, Ok(None), || {
            let mut path = format!("{}/{what}", env_path(&args.environment)?);
            let limit = args.limit.map(|n| n.to_string());
            let query: Vec<(&str, &str)> = [("cursor", args.cursor.as_deref())]
                .into_iter()
                .chain([("limit", limit.as_deref())])
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            if !query.is_empty() {
                let encoded = serde_urlencoded::to_string(&query).map_err(|_| {
                    ToolError::new("invalid_argument", "the query could not be encoded")
                })?;
                path = format!("{path}?{encoded}");
            }
            Ok(path)
        })
        .await
    }

    /// Builds the path (a bad segment is a tool error, never a wrong URL), calls the API on
    /// behalf of whoever sent the MCP message, and turns the answer into the tool's result.
    async fn send(
        &self,
        ext: &Extensions,
        method: Method,
        body: Result<Option<JsonBody>, ToolError>,
        path: impl FnOnce() -> Result<String, ToolError>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = match (path(), body) {
            (Ok(path_and_query), Ok(body)) => ApiRequest {
                method,
                path_and_query,
                body,
            },
            (Err(e), _) | (_, Err(e)) => return Ok(e.into_result()),
        };
        let caller = Caller {
            http: ext.get::<http::request::Parts>(),
        };
        match self.backend.call(request, &caller).await {
            Ok(answer) if answer.status.is_success() => Ok(success(answer.body)),
            Ok(answer) => Ok(api_error(answer.status, answer.body)),
            Err(e) => Ok(ToolError::new("unavailable", e.to_string()).into_result()),
        }
    }
}

// ---- results ------------------------------------------------------------------------------

/// The API's JSON as the tool's structured content (an object, as MCP wants it) and text.
fn success(body: Value) -> CallToolResult {
    match body {
        Value::Object(_) => CallToolResult::structured(body),
        Value::Null => CallToolResult::structured(json!({})),
        other => CallToolResult::structured(json!({ "result": other })),
    }
}

/// An API error answer as a tool error: the API's `{"error": {code, message,
/// currentRevision?}}` with the HTTP status added, and a line of text saying the same.
fn api_error(status: StatusCode, body: Value) -> CallToolResult {
    let code = body["error"]["code"].as_str();
    let Some(code) = code else {
        return ToolError::new(
            "unexpected_response",
            format!("the API answered HTTP {status} without a Coffer error body"),
        )
        .into_result();
    };
    let message = body["error"]["message"].as_str().unwrap_or_default();
    let mut text = format!("{code}: {message}");
    if let Some(current) = body["error"]["currentRevision"].as_u64() {
        text.push_str(&format!(" (current revision: {current})"));
    }
    text.push_str(&format!(" (HTTP {})", status.as_u16()));
    let mut structured = body;
    structured["error"]["status"] = status.as_u16().into();
    error_result(text, structured)
}

fn error_result(text: String, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

/// A failure before or instead of an API answer, shaped like the API's errors.
#[derive(Debug)]
struct ToolError {
    code: &'static str,
    message: String,
}

impl ToolError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        ToolError {
            code,
            message: message.into(),
        }
    }

    fn into_result(self) -> CallToolResult {
        let text = format!("{}: {}", self.code, self.message);
        let structured = json!({"error": {"code": self.code, "message": self.message}});
        error_result(text, structured)
    }
}

// ---- paths --------------------------------------------------------------------------------

fn env_path(environment: &str) -> Result<String, ToolError> {
    Ok(format!(
        "/v1/environments/{}",
        segment("environment", environment)?
    ))
}

fn orchestration_path(environment: &str, id: &str) -> Result<String, ToolError> {
    Ok(format!(
        "{}/orchestrations/{}",
        env_path(environment)?,
        segment("id", id)?
    ))
}

fn run_path(environment: &str, run_id: &str) -> Result<String, ToolError> {
    Ok(format!(
        "{}/orchestration-runs/{}",
        env_path(environment)?,
        segment("runId", run_id)?
    ))
}

/// `raw` as one path segment. Every name and id Coffer has is made of letters, digits, `_`
/// and `-` (at most 128 characters), so anything else (`/`, `?`, `#`, `%`, `.`, spaces) is
/// refused here rather than encoded into a URL that means something else; the API checks
/// the exact rule of each name. The input is not echoed: a value may have been put there.
fn segment<'a>(field: &str, raw: &'a str) -> Result<&'a str, ToolError> {
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(raw)
    } else {
        Err(ToolError::new(
            "invalid_name",
            format!("`{field}` must be 1-128 letters, digits, '_' or '-' (not shown here)"),
        ))
    }
}

fn body_of(body: &impl Serialize) -> Result<Option<JsonBody>, ToolError> {
    JsonBody::new(body)
        .map(Some)
        .map_err(|_| ToolError::new("invalid_argument", "the request body could not be encoded"))
}

/// The JSON schema of `steps`: one of the four step shapes (the API checks the details).
fn steps_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "Steps, run in array order unless a decision jumps.",
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "description": "Runs a function; its triggerParams = run params ∪ params ∪ decrypted encryptedParams (encryptedParams win).",
                    "properties": {
                        "id": {"type": "string"},
                        "type": {"const": "compute"},
                        "functionId": {"type": "string"},
                        "params": {"type": "object"},
                        "encryptedParams": {
                            "type": "object",
                            "description": "NAME → {\"value\": \"…\", \"encrypt\": true} to seal a value, {\"value\": …, \"encrypt\": false} to keep it plain, {\"secretRef\": \"SECRET_NAME\"} for the environment's secret, or (on update) the masked {\"value\": \"********\", \"encrypted\": true} to keep the stored one.",
                            "additionalProperties": {"type": "object"}
                        }
                    },
                    "required": ["id", "type", "functionId"]
                },
                {
                    "type": "object",
                    "description": "Waits for approve_orchestration_run.",
                    "properties": {
                        "id": {"type": "string"},
                        "type": {"const": "approval"},
                        "timeoutMs": {"type": "integer", "minimum": 1}
                    },
                    "required": ["id", "type"]
                },
                {
                    "type": "object",
                    "description": "Waits durationMs.",
                    "properties": {
                        "id": {"type": "string"},
                        "type": {"const": "delay"},
                        "durationMs": {"type": "integer", "minimum": 0}
                    },
                    "required": ["id", "type", "durationMs"]
                },
                {
                    "type": "object",
                    "description": "Jumps to `then` or `else` by a condition on params.a.b or steps.<id>.output.a.b.",
                    "properties": {
                        "id": {"type": "string"},
                        "type": {"const": "decision"},
                        "condition": {
                            "type": "object",
                            "properties": {
                                "path": {"type": "string"},
                                "op": {"enum": ["eq", "ne", "gt", "lt", "exists"]},
                                "value": {}
                            },
                            "required": ["path", "op"]
                        },
                        "then": {"type": "string"},
                        "else": {"type": "string"}
                    },
                    "required": ["id", "type", "condition", "then", "else"]
                }
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoBackend;

    impl Backend for NoBackend {
        async fn call(
            &self,
            _: ApiRequest,
            _: &Caller<'_>,
        ) -> Result<crate::ApiResponse, crate::Unavailable> {
            unreachable!("listing tools calls nothing")
        }
    }

    #[test]
    fn ten_tools_each_with_an_object_input_schema() {
        let tools = CofferTools::<NoBackend>::tool_router().list_all();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
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
            ]
        );
        for tool in &tools {
            let schema = serde_json::Value::Object((*tool.input_schema).clone());
            assert_eq!(schema["type"], "object", "{}", tool.name);
            assert!(
                schema["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!("environment"))),
                "{}: {schema}",
                tool.name
            );
        }
    }

    #[test]
    fn segments_that_would_change_the_url_are_refused_without_echoing_them() {
        for bad in [
            "",
            "a/b",
            "..",
            ".",
            "a?b",
            "a#b",
            "a%2Fb",
            "a b",
            "é",
            "s3cr3t value",
        ] {
            let e = segment("environment", bad).unwrap_err();
            assert_eq!(e.code, "invalid_name", "{bad:?}");
            assert!(bad.is_empty() || !e.message.contains(bad), "{bad:?}");
        }
        assert!(segment("id", &"a".repeat(129)).is_err());
        for good in ["production", "STRIPE_KEY", "orch_0123abcd", "fn-1"] {
            assert_eq!(segment("x", good).unwrap(), good);
        }
    }

    #[test]
    fn api_errors_keep_their_code_and_the_current_revision() {
        let result = api_error(
            StatusCode::CONFLICT,
            json!({"error": {"code": "revision_conflict", "message": "expected 1", "currentRevision": 4}}),
        );
        assert_eq!(result.is_error, Some(true));
        let s = result.structured_content.unwrap();
        assert_eq!(s["error"]["code"], "revision_conflict");
        assert_eq!(s["error"]["currentRevision"], 4);
        assert_eq!(s["error"]["status"], 409);
        let text = serde_json::to_value(&result.content[0]).unwrap();
        assert_eq!(
            text["text"],
            "revision_conflict: expected 1 (current revision: 4) (HTTP 409)"
        );
    }

    #[test]
    fn an_answer_without_a_coffer_error_body_is_still_a_tool_error() {
        let result = api_error(StatusCode::BAD_GATEWAY, Value::Null);
        assert_eq!(result.is_error, Some(true));
        assert_eq!(
            result.structured_content.unwrap()["error"]["code"],
            "unexpected_response"
        );
    }

    #[test]
    fn a_secret_value_never_shows_in_the_arguments_debug() {
        let args: SetSecretArgs = serde_json::from_value(json!({
            "environment": "prod", "name": "K", "value": "canary-XYZ"
        }))
        .unwrap();
        assert!(!format!("{args:?}").contains("canary-XYZ"));
        let value = args.value.0.as_ref().unwrap();
        let body = JsonBody::new(&json!({"value": value.expose_secret()})).unwrap();
        assert!(!format!("{body:?}").contains("canary-XYZ"));
    }

    fn error_of(result: &CallToolResult) -> (Value, String) {
        assert_eq!(result.is_error, Some(true), "{result:?}");
        let text = serde_json::to_value(&result.content).unwrap().to_string();
        (
            result.structured_content.clone().unwrap()["error"].clone(),
            text,
        )
    }

    fn object(v: Value) -> JsonObject {
        let Value::Object(map) = v else { panic!() };
        map
    }

    #[tokio::test]
    async fn a_value_that_is_not_a_string_is_refused_without_quoting_it() {
        let tools = CofferTools::new(Arc::new(NoBackend));
        for value in [
            json!(482193),
            json!(4821.93),
            json!(true),
            json!(["482193"]),
            json!({"pin": "482193"}),
            Value::Null,
        ] {
            let args = object(json!({"environment": "prod", "name": "PIN", "value": value}));
            let result = tools.set_secret(args, Extensions::new()).await.unwrap();
            let (error, text) = error_of(&result);
            assert_eq!(error["code"], "invalid_value", "{value}");
            assert_eq!(error["message"], "value must be a string");
            let shown = format!("{text} {error}");
            assert!(
                !shown.contains("482193") && !shown.contains("4821"),
                "{shown}"
            );
        }
        // Missing, it is named (and there is nothing to quote).
        let args = object(json!({"environment": "prod", "name": "PIN"}));
        let (error, _) = error_of(&tools.set_secret(args, Extensions::new()).await.unwrap());
        assert_eq!(error["code"], "invalid_argument");
        assert_eq!(error["message"], "missing argument `value`");
    }

    #[tokio::test]
    async fn no_argument_error_of_any_tool_quotes_the_argument() {
        let tools = CofferTools::new(Arc::new(NoBackend));
        let ext = Extensions::new;
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "update_orchestration",
                json!({"environment": "prod", "id": "orch_1", "name": "n", "steps": "not-a-list-SECRET"}),
                "steps",
            ),
            (
                "create_orchestration",
                json!({"environment": "prod", "name": "n", "steps": {"SECRET": 1}}),
                "steps",
            ),
            (
                "update_orchestration",
                json!({"environment": "prod", "id": "orch_1", "name": "n", "steps": [], "expectedRevision": "SECRET"}),
                "expectedRevision",
            ),
            (
                "run_orchestration",
                json!({"environment": "prod", "id": "orch_1", "params": "SECRET"}),
                "params",
            ),
            (
                "approve_orchestration_run",
                json!({"environment": "prod", "runId": "orun_1", "approve": "SECRET"}),
                "approve",
            ),
            (
                "approve_orchestration_run",
                json!({"environment": "prod", "runId": "orun_1", "reason": ["SECRET"]}),
                "reason",
            ),
            (
                "list_secrets",
                json!({"environment": "prod", "limit": -7_654_321}),
                "limit",
            ),
            (
                "list_functions",
                json!({"environment": ["SECRET"]}),
                "environment",
            ),
            (
                "get_orchestration",
                json!({"environment": "prod", "id": 7_654_321}),
                "id",
            ),
            (
                "get_orchestration_run",
                json!({"environment": "prod", "runId": {"SECRET": true}}),
                "runId",
            ),
            (
                "list_orchestrations",
                json!({"environment": "prod", "cursor": 7_654_321}),
                "cursor",
            ),
            (
                "set_secret",
                json!({"environment": "prod", "name": "K", "value": "SECRET", "expectedRevision": "7654321"}),
                "expectedRevision",
            ),
        ];
        for (tool, args, field) in cases {
            let args = object(args);
            let result = match tool {
                "update_orchestration" => tools.update_orchestration(args, ext()).await,
                "create_orchestration" => tools.create_orchestration(args, ext()).await,
                "run_orchestration" => tools.run_orchestration(args, ext()).await,
                "approve_orchestration_run" => tools.approve_orchestration_run(args, ext()).await,
                "list_secrets" => tools.list_secrets(args, ext()).await,
                "list_functions" => tools.list_functions(args, ext()).await,
                "get_orchestration" => tools.get_orchestration(args, ext()).await,
                "get_orchestration_run" => tools.get_orchestration_run(args, ext()).await,
                "list_orchestrations" => tools.list_orchestrations(args, ext()).await,
                "set_secret" => tools.set_secret(args, ext()).await,
                _ => unreachable!(),
            }
            .unwrap();
            let (error, text) = error_of(&result);
            assert_eq!(error["code"], "invalid_argument", "{tool}: {text}");
            let shown = format!("{text} {error}");
            assert!(
                shown.contains(&format!("argument `{field}`")),
                "{tool}: {shown}"
            );
            assert!(
                !shown.contains("SECRET") && !shown.contains("7654321"),
                "{tool}: {shown}"
            );
        }
        // An unknown argument is named when its name is short and printable, else not.
        let args = object(json!({"environment": "prod", "bogus": "SECRET"}));
        let (error, _) = error_of(&tools.list_secrets(args, ext()).await.unwrap());
        assert_eq!(error["message"], "unknown argument `bogus`");
        let args = object(json!({"environment": "prod", "SECRET value": 1}));
        let (error, _) = error_of(&tools.list_secrets(args, ext()).await.unwrap());
        assert_eq!(error["message"], "unknown argument");
    }

    #[test]
    fn the_input_schemas_are_the_argument_types() {
        let tools = CofferTools::<NoBackend>::tool_router().list_all();
        let set = tools.iter().find(|t| t.name == "set_secret").unwrap();
        let schema = Value::Object((*set.input_schema).clone());
        assert_eq!(schema["properties"]["value"]["type"], "string", "{schema}");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(required, ["environment", "name", "value"], "{schema}");
        let update = tools
            .iter()
            .find(|t| t.name == "update_orchestration")
            .unwrap();
        let schema = Value::Object((*update.input_schema).clone());
        assert_eq!(schema["properties"]["steps"]["type"], "array", "{schema}");
    }
}
