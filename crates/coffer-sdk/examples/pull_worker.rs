//! A pull worker for one function, `send-invoice`, until Ctrl-C (SIGINT).
//!
//! ```text
//! COFFER_ADDR=http://127.0.0.1:8720      # default
//! COFFER_ENV=default                     # default
//! COFFER_API_KEY=ck_default_…            # a runtime key of the environment
//! COFFER_MANAGE_KEY=ck_…                 # optional: register the function first
//! cargo run -p coffer-sdk --example pull_worker
//! ```
//!
//! Then send it an event (with an admin or manage key):
//!
//! ```text
//! curl -X POST $COFFER_ADDR/v1/environments/default/events \
//!   -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
//!   -d '{"name": "order.created", "data": {"orderId": "o-1", "amount": 1200}}'
//! ```
//!
//! and the run's output shows on `GET /v1/environments/default/runs/{id}`.

use coffer_sdk::{Client, Context, FunctionDef, HandlerError, Worker, function};
use serde_json::{Value, json};

/// The function as the code declares it: `STRIPE_KEY` is required, `SLACK_WEBHOOK` is
/// optional, and nothing else can be read.
fn send_invoice_def() -> FunctionDef {
    function("send-invoice")
        .triggers(["order.created"])
        .secrets(["STRIPE_KEY", "SLACK_WEBHOOK"])
}

async fn send_invoice(ctx: Context) -> Result<Value, HandlerError> {
    // Required: a missing key fails the run with a clear message (`?`).
    let stripe_key = ctx.secrets.get("STRIPE_KEY")?;
    let order_id = ctx.event.data["orderId"]
        .as_str()
        .ok_or_else(|| HandlerError::permanent("the event has no orderId"))?;
    let amount = ctx.event.data["amount"].as_u64().unwrap_or(0);
    // A real handler would call Stripe with the key here. The output never carries the
    // key itself (Coffer would store it as `********` anyway).
    let live = stripe_key.starts_with("sk_live_");
    // Optional: degrade gracefully where Slack is not configured.
    let notified = ctx.secrets.has("SLACK_WEBHOOK");
    Ok(json!({
        "orderId": order_id,
        "amount": amount,
        "live": live,
        "notifiedSlack": notified,
        "attempt": ctx.attempt,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("COFFER_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8720".into());
    let env = std::env::var("COFFER_ENV").unwrap_or_else(|_| "default".into());
    let key = std::env::var("COFFER_API_KEY").map_err(|_| "set COFFER_API_KEY to a runtime key")?;
    let def = send_invoice_def();

    if let Ok(manage_key) = std::env::var("COFFER_MANAGE_KEY") {
        let manage = Client::new(&addr, manage_key)?;
        let written = manage.put_function(&env, &def.id, &def.pull()).await?;
        let verb = if written.created {
            "registered"
        } else {
            "updated"
        };
        println!("{verb} function {} in {env}", def.id);
    }

    let worker = Worker::new(Client::new(&addr, key)?, env).function(def, send_invoice);
    println!("worker ready");
    worker
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
        })
        .await?;
    println!("stopped");
    Ok(())
}
