//! `NatsValues` with a `.creds` file, against a real `nats-server` in operator mode (JWT
//! authentication). There is no `nsc` here: the test is its own operator. It makes an
//! operator, a system account, an account with JetStream and a user (nkeys), signs their
//! JWTs (`ed25519-nkey`, as `nsc` does), preloads the accounts into the server's memory
//! resolver, and writes the user's `.creds` file.
//!
//! Needs the `nats-server` binary; without it every test fails saying so.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_nats::values::{NatsValueOptions, NatsValues};
use coffer_store::{
    EnvId, EnvName, Environment, SecretName, StoreError, StoredValue, Timestamp, ValueEntry,
    ValueExpect, ValueStore,
};
use nkeys::KeyPair;
use serde_json::{Value, json};

mod common;
use common::{Server, connect, options};

/// A JWT of `claims` (`iss`, `iat` and `jti` filled in), signed by `issuer`.
fn jwt(issuer: &KeyPair, mut claims: Value, serial: u32) -> String {
    claims["iss"] = json!(issuer.public_key());
    claims["iat"] = json!(1_767_225_600 + i64::from(serial));
    // Unique per claim set; the server does not recompute it.
    claims["jti"] = json!(format!("COFFERTEST{serial:042}"));
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn account_claims(account: &KeyPair, name: &str, jetstream: bool) -> Value {
    let storage = if jetstream { -1 } else { 0 };
    json!({
        "sub": account.public_key(),
        "name": name,
        "nats": {
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": storage, "disk_storage": storage,
                "streams": -1, "consumer": -1
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        }
    })
}

/// The `.creds` file of `user`, whose JWT `account` signed, as `nsc` writes it.
fn creds(account: &KeyPair, user: &KeyPair, serial: u32) -> String {
    let claims = json!({
        "sub": user.public_key(),
        "name": "coffer",
        "nats": {
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }
    });
    format!(
        "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        jwt(account, claims, serial),
        user.seed().expect("seed")
    )
}

/// An operator-mode server whose only JetStream account is `account`.
fn operator_server(dir: &Path, account: &KeyPair) -> Server {
    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        json!({"sub": operator.public_key(), "name": "coffer-test",
               "nats": {"type": "operator", "version": 2}}),
        1,
    );
    std::fs::write(dir.join("operator.jwt"), operator_jwt).unwrap();
    let preload = [
        (
            &system,
            jwt(&operator, account_claims(&system, "SYS", false), 2),
        ),
        (
            account,
            jwt(&operator, account_claims(account, "CODER", true), 3),
        ),
    ]
    .iter()
    .map(|(kp, jwt)| format!("  {}: \"{jwt}\"\n", kp.public_key()))
    .collect::<String>();
    let config = format!(
        "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
        dir.join("operator.jwt").display(),
        system.public_key(),
    );
    let path = dir.join("server.conf");
    std::fs::write(&path, config).unwrap();
    Server::start(&["-c", &path.display().to_string()])
}

fn options_with(server: &Server, creds: &Path) -> NatsValueOptions {
    let mut o = options(server);
    o.credentials_file = Some(creds.to_owned());
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_of_the_account_works_and_others_are_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let account = KeyPair::new_account();
    let server = operator_server(dir.path(), &account);

    // The account's user: pings, writes and reads.
    let good = dir.path().join("good.creds");
    std::fs::write(&good, creds(&account, &KeyPair::new_user(), 10)).unwrap();
    let values = connect(options_with(&server, &good)).await;
    values.ping().await.expect("JetStream for the account");
    let env = Environment {
        name: EnvName::new("prod").unwrap(),
        id: EnvId::new("env_0000000000000c4e").unwrap(),
        created_at: Timestamp::from_millis(0),
    };
    let name = SecretName::new("VIA_CREDS").unwrap();
    let entry = ValueEntry {
        value: StoredValue::Sealed {
            key_version: coffer_crypto::KeyVersion::new(1).unwrap(),
            blob: "iv:creds:tag".into(),
        },
        revision: 1,
        created_at: Timestamp::from_millis(1),
        updated_at: Timestamp::from_millis(1),
        write_id: "00000000000000aa".into(),
    };
    let version = values
        .write(&env, &name, &entry, ValueExpect::Absent)
        .await
        .unwrap();
    let (got, _) = values.read(&env, &name, None).await.unwrap().unwrap();
    assert_eq!(got, version);

    // A user of an account the operator never signed, no credentials at all, and a file
    // that is not a creds file: each refused as unavailable, within the timeout.
    let stranger = dir.path().join("stranger.creds");
    let stranger_user = KeyPair::new_user();
    let seed = stranger_user.seed().unwrap();
    std::fs::write(
        &stranger,
        creds(&KeyPair::new_account(), &stranger_user, 11),
    )
    .unwrap();
    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "not a creds file\n").unwrap();
    for (o, why) in [
        (options_with(&server, &stranger), "a stranger's creds"),
        (options(&server), "no creds"),
        (options_with(&server, &garbage), "a file that is not creds"),
        (
            options_with(&server, &dir.path().join("missing.creds")),
            "no such file",
        ),
    ] {
        let began = Instant::now();
        let result = NatsValues::connect(o).await;
        assert!(
            began.elapsed() < Duration::from_secs(4),
            "{why}: {:?}",
            began.elapsed()
        );
        match result {
            Err(StoreError::Unavailable(msg)) => {
                assert!(!msg.contains(&seed), "{why}: the seed is in {msg}")
            }
            Err(other) => panic!("{why}: expected Unavailable, got {other:?}"),
            Ok(_) => panic!("{why}: connected"),
        }
    }
}
