//! # coffer-sdk
//!
//! The Rust SDK for Coffer, a self-hosted secrets service for function platforms.
//! Functions declare the secrets they need; at run time Coffer hands each run exactly
//! those, and nobody — not even an admin — reads a value back through the management
//! plane.
//!
//! Three pieces:
//!
//! - [`Client`]: a typed client for the HTTP API — environments, API keys, secrets
//!   (values are write-only), config, functions, events, runs, orchestrations — and the
//!   runtime routes a worker uses (poll, heartbeat, complete, resolve).
//! - [`Worker`]: a pull worker. It long-polls for runs of its functions, runs their
//!   handlers (at most N at once), keeps each run's lease alive with heartbeats, reports
//!   the output or the error, and shuts down gracefully.
//! - [`PushHandler`]: the endpoint Coffer POSTs push runs to, as a `tower::Service` for
//!   axum or hyper. It verifies the `Coffer-Signature` header (HMAC-SHA256, a tolerance
//!   window, constant-time comparison, several secrets during a rotation) before it runs
//!   anything.
//!
//! A handler is an `async` function of a [`Context`] returning the run's output as JSON.
//! Its [`Secrets`] are seen through the function's [`FunctionDef`]: [`Secrets::get`] tells
//! a secret the code never declared ([`SecretError::Undeclared`], a bug) from one that is
//! declared but not set in this environment ([`SecretError::Missing`]), and
//! [`Secrets::has`] lets an optional integration step aside gracefully.
//!
//! ## Quick start
//!
//! Declare a function in code, register it, and run a worker for it:
//!
//! ```no_run
//! use coffer_sdk::{Client, Context, HandlerError, Worker, function};
//! use serde_json::{Value, json};
//!
//! async fn send_invoice(ctx: Context) -> Result<Value, HandlerError> {
//!     let stripe_key = ctx.secrets.get("STRIPE_KEY")?; // declared: required
//!     let order = &ctx.event.data["orderId"];
//!     // ... charge the order with `stripe_key` ...
//!     # let _ = stripe_key;
//!     if ctx.secrets.has("SLACK_WEBHOOK") {
//!         // declared, optional: notify only where it is set
//!     }
//!     Ok(json!({ "invoiced": order }))
//! }
//!
//! # async fn example() -> Result<(), coffer_sdk::Error> {
//! let def = function("send-invoice")
//!     .triggers(["order.created"])
//!     .secrets(["STRIPE_KEY", "SLACK_WEBHOOK"]);
//!
//! // Once, with an admin or manage key: register the definition as a pull function.
//! let admin = Client::new("http://127.0.0.1:8720", std::env::var("COFFER_MANAGE_KEY").unwrap())?;
//! admin.put_function("production", &def.id, &def.pull()).await?;
//!
//! // The worker, with a runtime key of the environment; Ctrl-C stops it gracefully.
//! let runtime = Client::new("http://127.0.0.1:8720", std::env::var("COFFER_API_KEY").unwrap())?;
//! Worker::new(runtime, "production")
//!     .function(def, send_invoice)
//!     .concurrency(8)
//!     .run(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! The same handler behind a push endpoint (register with `def.push(url)` instead; the
//! answer to the first registration carries the function's `signingSecret`):
//!
//! ```no_run
//! # use coffer_sdk::{Context, HandlerError, PushHandler, function};
//! # async fn send_invoice(_ctx: Context) -> Result<serde_json::Value, HandlerError> {
//! #     Ok(serde_json::json!({"sent": true}))
//! # }
//! # async fn example() {
//! let def = function("send-invoice").secrets(["STRIPE_KEY", "SLACK_WEBHOOK"]);
//! let push = PushHandler::new([std::env::var("COFFER_SIGNING_SECRET").unwrap()])
//!     .function(def, send_invoice);
//! let app = axum::Router::new().route_service("/coffer", push);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! Events start runs; the run's output is visible to the management plane (redacted: any
//! secret value in it reads `********`):
//!
//! ```no_run
//! # async fn example(admin: coffer_sdk::Client) -> Result<(), coffer_sdk::Error> {
//! use coffer_sdk::wire::SendEvent;
//! let sent = admin
//!     .send_event(
//!         "production",
//!         &SendEvent { name: "order.created".into(), data: Some(serde_json::json!({"orderId": "o-1"})) },
//!         Some("order-o-1"), // idempotency key: a retried send starts no second run
//!     )
//!     .await?;
//! let run = admin.get_run("production", &sent.runs[0].id).await?;
//! println!("{:?}: {:?}", run.status, run.output);
//! # Ok(())
//! # }
//! ```
//!
//! Orchestrations chain steps (compute, approval, delay, decision); a compute step may
//! carry encrypted params, sealed by the server and masked in every answer:
//!
//! ```no_run
//! # async fn example(admin: coffer_sdk::Client) -> Result<(), coffer_sdk::Error> {
//! use coffer_sdk::wire::{ComputeStep, CreateOrchestration, DelayStep, Param, Step};
//! let mut charge = ComputeStep {
//!     id: "charge".into(),
//!     function_id: "send-invoice".into(),
//!     params: Default::default(),
//!     encrypted_params: Default::default(),
//! };
//! charge.encrypted_params.insert("API_TOKEN".into(), Param::encrypt("tok-123"));
//! let steps = vec![
//!     Step::Delay(DelayStep { id: "settle".into(), duration_ms: 60_000 }),
//!     Step::Compute(charge),
//! ];
//! let o = admin
//!     .create_orchestration("production", &CreateOrchestration { name: "billing".into(), steps })
//!     .await?;
//! let run = admin.run_orchestration("production", &o.id, None).await?;
//! let run = admin.get_orchestration_run("production", &run.id).await?;
//! println!("{}: {}", run.id, run.status.as_str());
//! # Ok(())
//! # }
//! ```
//!
//! Runnable versions of these live in the crate's `examples/` (`pull_worker.rs`,
//! `push_handler.rs`); the crate's tests run them against a real `coffer serve`.
//!
//! ## Wire types
//!
//! The runtime plane's shapes ([`wire::PutFunction`], [`wire::Function`], [`wire::Job`],
//! [`wire::Run`], …) are `coffer-wire`'s, re-exported as [`wire`]: the server serializes
//! the very same types. The older management shapes (environments, secret metadata, config
//! entries, API keys) are not in `coffer-wire` yet; this crate defines minimal,
//! read-tolerant versions of them in [`management`], re-exported at the root. A follow-up
//! moves them into `coffer-wire`, keeping their names and fields.
//!
//! ## What never leaks
//!
//! - The API key and signing secrets live in [`secrecy::SecretString`]s; `Debug` of
//!   [`Client`], [`PushHandler`], [`NewApiKey`], [`Secrets`] and [`wire::Job`] shows no
//!   value.
//! - No [`Error`] holds a value: the server's messages never contain one, and an answer the
//!   SDK cannot decode is described by position, never quoted.
//! - Bodies that carry values (a secret being set, a polled job) are kept in buffers wiped
//!   on drop, as far as the SDK holds them (the HTTP stack's own buffers are not).
//! - The client follows no redirect and, for a loopback address, no proxy.
//!
//! ## Delivery
//!
//! At least once, in both modes: a run whose worker died, or whose push attempt timed out
//! or answered 5xx, comes again as a new attempt. [`Context::run_id`] and
//! [`Context::attempt`] are what a handler de-duplicates on.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
mod function;
pub mod management;
mod orchestrations;
mod push;
mod worker;

pub use client::Client;
pub use error::{ApiError, Error};
pub use function::{
    Config, ConfigError, Context, FunctionDef, HandlerError, HandlerResult, SecretError, Secrets,
    function,
};
pub use management::{
    ApiKey, ConfigEntry, ConfigPage, Environment, NewApiKey, PageRequest, Role, RunQuery,
    SecretMeta, SecretPage, SecretQuery, SecretStatus, Written,
};
pub use orchestrations::OrchestrationRunQuery;
pub use push::{DEFAULT_MAX_BODY, PushHandler};
pub use worker::{DEFAULT_CONCURRENCY, DEFAULT_LEASE, DEFAULT_WAIT, Worker};

/// The runtime plane's wire shapes and the `Coffer-Signature` scheme, shared with the
/// server (the `coffer-wire` crate).
pub use coffer_wire as wire;

/// Re-exported so callers can build [`secrecy::SecretString`]s for keys and values without
/// a dependency of their own.
pub use secrecy;
