//! `--vault-layer ADDR`: what the `vault` backend's layer (`VaultValues`: token, paths,
//! the data map, the incarnation check) adds over a direct call to the same OpenBao. Both
//! sides read one of 100 secrets at a pinned KV v2 version from `connections` concurrent
//! tasks, over one keep-alive HTTP client each side, in interleaved rounds; the direct side
//! parses the JSON answer as any client would. Prints p50/p99 and requests/s per side.

use std::sync::Arc;
use std::time::Duration;

use coffer_store::{
    EnvId, EnvName, Environment, SecretName, StoredValue, Timestamp, ValueEntry, ValueExpect,
    ValueStore,
};
use coffer_vault::{VaultConfig, VaultValues};
use secrecy::SecretString;
use tokio::task::JoinSet;
use tokio::time::Instant;

const SECRETS: usize = 100;
const PATH: &str = "secret/data/coffer-bench-layer";

pub async fn run(
    addr: &str,
    token: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<()> {
    let vars = [
        ("COFFER_VAULT_ADDR", addr.to_owned()),
        ("COFFER_VAULT_TOKEN", token.to_owned()),
        ("COFFER_VAULT_SECRET_PATH", PATH.to_owned()),
    ];
    let config = VaultConfig::from_env(|k| {
        vars.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let values = Arc::new(VaultValues::connect(config).await?);
    let env = Environment {
        name: EnvName::new("default")?,
        id: EnvId::new("env_00000000000b0b0b")?,
        created_at: Timestamp::from_millis(0),
    };
    let mut keys = Vec::with_capacity(SECRETS);
    for i in 0..SECRETS {
        let name = SecretName::new(&format!("LAYER_{i:03}"))?;
        let entry = ValueEntry {
            value: StoredValue::Plain(SecretString::from("v".repeat(64))),
            revision: 1,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            write_id: format!("{i:016x}"),
        };
        let version = values.write(&env, &name, &entry, ValueExpect::Any).await?;
        keys.push((name, version));
    }
    let keys = Arc::new(keys);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut best: [Option<Stats>; 2] = [None, None];
    for _round in 0..3 {
        for side in [Side::Layer, Side::Direct] {
            let _ = phase(
                side,
                &values,
                &env,
                &keys,
                &http,
                addr,
                token,
                connections,
                warmup,
            )
            .await;
            let stats = phase(
                side,
                &values,
                &env,
                &keys,
                &http,
                addr,
                token,
                connections,
                duration,
            )
            .await?;
            let slot = &mut best[side as usize];
            if slot.as_ref().is_none_or(|b| stats.p50 < b.p50) {
                *slot = Some(stats);
            }
        }
    }
    let (layer, direct) = (best[0].take().unwrap(), best[1].take().unwrap());
    for (label, s) in [
        ("vault backend (VaultValues::read)", &layer),
        ("direct OpenBao GET", &direct),
    ] {
        println!(
            "{label:36} {:>7.0}/s  p50 {:>6.3} ms  p99 {:>6.3} ms  errors {}",
            s.rate, s.p50, s.p99, s.errors
        );
    }
    println!(
        "the vault backend adds {:+.1}% at p50 ({:+.3} ms) over a direct OpenBao call, {connections} concurrent readers",
        100.0 * (layer.p50 - direct.p50) / direct.p50,
        layer.p50 - direct.p50
    );
    Ok(())
}

#[derive(Clone, Copy)]
enum Side {
    Layer = 0,
    Direct = 1,
}

struct Stats {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    side: Side,
    values: &Arc<VaultValues>,
    env: &Environment,
    keys: &Arc<Vec<(SecretName, u64)>>,
    http: &reqwest::Client,
    addr: &str,
    token: &str,
    connections: usize,
    length: Duration,
) -> anyhow::Result<Stats> {
    let end = Instant::now() + length;
    let mut tasks = JoinSet::new();
    for t in 0..connections {
        let (values, env, keys, http) = (values.clone(), env.clone(), keys.clone(), http.clone());
        let (addr, token) = (addr.to_owned(), token.to_owned());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = t * 7919;
            while Instant::now() < end {
                i = (i + 31) % keys.len();
                let (name, version) = &keys[i];
                let began = Instant::now();
                let ok = match side {
                    Side::Layer => values
                        .read(&env, name, Some(*version))
                        .await
                        .is_ok_and(|v| v.is_some()),
                    Side::Direct => {
                        let url = format!("{addr}/v1/{PATH}/default/{name}?version={version}");
                        match http.get(url).header("X-Vault-Token", &token).send().await {
                            Ok(r) => r
                                .bytes()
                                .await
                                .ok()
                                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                                .is_some_and(|v| v["data"]["data"]["value"].is_string()),
                            Err(_) => false,
                        }
                    }
                };
                if ok {
                    latencies.push(began.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done?;
        all.extend(l);
        errors += e;
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| {
        all.get(((all.len() as f64) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(Stats {
        rate: all.len() as f64 / length.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        errors,
    })
}
