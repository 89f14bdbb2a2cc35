//! A push endpoint for one function, `notify-shipping`, served with axum at `POST /coffer`
//! until Ctrl-C (SIGINT).
//!
//! ```text
//! COFFER_SIGNING_SECRETS=cs_…[,cs_…]   # the function's signing secret(s): during a
//!                                      # rotation, the new one and the old one
//! LISTEN=127.0.0.1:3000                # default; port 0 picks a free one
//! cargo run -p coffer-sdk --example push_handler
//! ```
//!
//! It prints `listening on http://ADDR/coffer`: register the function with that URL (the
//! first registration's answer carries the signing secret):
//!
//! ```text
//! curl -X PUT $COFFER_ADDR/v1/environments/default/functions/notify-shipping \
//!   -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
//!   -d '{"mode": "push", "url": "http://127.0.0.1:3000/coffer",
//!        "triggers": [{"event": "order.shipped"}], "secrets": ["CARRIER_TOKEN"]}'
//! ```

use coffer_sdk::{Context, FunctionDef, HandlerError, PushHandler, function};
use serde_json::{Value, json};

fn notify_shipping_def() -> FunctionDef {
    function("notify-shipping")
        .triggers(["order.shipped"])
        .secrets(["CARRIER_TOKEN"])
        .config(["carrier"])
}

async fn notify_shipping(ctx: Context) -> Result<Value, HandlerError> {
    let token = ctx.secrets.get("CARRIER_TOKEN")?;
    // Config is declared like secrets; an unset key falls back to a default here.
    let carrier = ctx
        .config
        .get("carrier")
        .ok()
        .and_then(Value::as_str)
        .unwrap_or("post")
        .to_owned();
    Ok(json!({
        "orderId": ctx.event.data["orderId"],
        "carrier": carrier,
        "authenticated": !token.is_empty(),
        "runId": ctx.run_id,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secrets = std::env::var("COFFER_SIGNING_SECRETS")
        .map_err(|_| "set COFFER_SIGNING_SECRETS to the function's signing secret")?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());

    let push = PushHandler::new(secrets.split(',').map(|s| s.trim().to_owned()))
        .function(notify_shipping_def(), notify_shipping);
    let app = axum::Router::new().route_service("/coffer", push);

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}/coffer", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped");
    Ok(())
}
