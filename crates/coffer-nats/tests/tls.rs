//! `NatsValues` over TLS, against a real `nats-server --tls`: a throwaway CA, server and
//! client certificates made by the `openssl` command in a temporary directory.
//!
//! Needs `nats-server` and `openssl` on the machine; without them every test fails saying
//! so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coffer_nats::values::{NatsValueOptions, NatsValues};
use coffer_store::{
    EnvId, EnvName, Environment, SecretName, StoreError, StoredValue, Timestamp, ValueEntry,
    ValueExpect, ValueStore,
};

mod common;
use common::{Server, connect};

/// The bound every call of these tests has.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A certificate authority of this test, and the certificates it signed.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A new CA (`ca.pem`), a server certificate for `127.0.0.1` and `localhost`
    /// (`server.pem`) and a client certificate (`client.pem`), with their keys.
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        std::fs::write(
            pki.path("ext.cnf"),
            "[req]\ndistinguished_name = dn\n[dn]\n\
             [ca]\nbasicConstraints = critical, CA:TRUE\n\
             keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n\
             [server]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n\
             [client]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             extendedKeyUsage = clientAuth\n",
        )
        .expect("write the openssl config");
        pki.openssl(&[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=coffer test CA",
            "-config",
            "ext.cnf",
            "-extensions",
            "ca",
        ]);
        pki.issue("server", "/CN=localhost");
        pki.issue("client", "/CN=coffer-client");
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `{name}.pem` and `{name}.key`, signed by this CA with the `[name]` extensions.
    fn issue(&self, name: &str, subject: &str) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
            "-config",
            "ext.cnf",
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            "ext.cnf",
            "-extensions",
            name,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): these tests need it"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `nats-server` that speaks only TLS, with this CA's server certificate; with
    /// `verify`, it also requires a client certificate signed by this CA.
    fn server(&self, verify: bool) -> Server {
        let (cert, key, ca) = (
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
        );
        let mut args = vec![
            "--tls".to_owned(),
            "--tlscert".to_owned(),
            cert.display().to_string(),
            "--tlskey".to_owned(),
            key.display().to_string(),
        ];
        if verify {
            args.push("--tlsverify".into());
            args.push("--tlscacert".into());
            args.push(ca.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start(&args)
    }

    /// Options for `url` trusting this CA, requiring TLS.
    fn options(&self, url: &str) -> NatsValueOptions {
        let mut o = NatsValueOptions::new(url);
        o.timeout = TIMEOUT;
        o.tls_ca = Some(self.path("ca.pem"));
        o.require_tls = true;
        o
    }

    /// `o` with this CA's client certificate.
    fn with_client_cert(&self, mut o: NatsValueOptions) -> NatsValueOptions {
        o.tls_cert = Some(self.path("client.pem"));
        o.tls_key = Some(self.path("client.key"));
        o
    }
}

fn env() -> Environment {
    Environment {
        name: EnvName::new("prod").unwrap(),
        id: EnvId::new("env_00000000000007a5").unwrap(),
        created_at: Timestamp::from_millis(0),
    }
}

/// Writes a value and reads it back through `values`.
async fn round_trip(values: &NatsValues, key: &str) {
    let name = SecretName::new(key).unwrap();
    let entry = ValueEntry {
        value: StoredValue::Sealed {
            key_version: coffer_crypto::KeyVersion::new(1).unwrap(),
            blob: format!("iv:{key}:tag"),
        },
        revision: 1,
        created_at: Timestamp::from_millis(1),
        updated_at: Timestamp::from_millis(1),
        write_id: "00000000000000aa".into(),
    };
    values.ping().await.expect("ping over TLS");
    let version = values
        .write(&env(), &name, &entry, ValueExpect::Absent)
        .await
        .expect("write over TLS");
    let (got, read) = values
        .read(&env(), &name, None)
        .await
        .expect("read over TLS")
        .expect("the value written");
    assert_eq!(got, version);
    match read.value {
        StoredValue::Sealed { blob, .. } => assert_eq!(blob, format!("iv:{key}:tag")),
        other => panic!("{other:?}"),
    }
}

/// Connecting with `o` fails as unavailable, within the timeout (and a margin).
async fn refused(o: NatsValueOptions, why: &str) -> String {
    let began = Instant::now();
    let result = NatsValues::connect(o).await;
    let took = began.elapsed();
    assert!(
        took < TIMEOUT + Duration::from_secs(1),
        "{why}: took {took:?}"
    );
    match result {
        Err(StoreError::Unavailable(msg)) => msg,
        Err(other) => panic!("{why}: expected Unavailable, got {other:?}"),
        Ok(_) => panic!("{why}: connected"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_values_round_trip_over_nats_with_require_tls_and_over_tls_urls() {
    let pki = Pki::new();
    let server = pki.server(false);
    let port = server.port;
    // `nats://` and require_tls: the client upgrades after the server's INFO.
    round_trip(&connect(pki.options(&server.url())).await, "VIA_NATS_URL").await;
    // `tls://`, by IP and by name (both in the certificate).
    let mut o = pki.options(&format!("tls://127.0.0.1:{port}"));
    o.require_tls = false;
    round_trip(&connect(o).await, "VIA_TLS_URL").await;
    round_trip(
        &connect(pki.options(&format!("tls://localhost:{port}"))).await,
        "VIA_TLS_NAME",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_or_with_another_ca_the_server_is_unavailable_within_the_timeout() {
    let pki = Pki::new();
    let server = pki.server(false);
    let mut o = pki.options(&server.url());
    o.tls_ca = None;
    refused(o, "no CA: the system's roots do not know this one").await;
    let other = Pki::new();
    refused(other.options(&server.url()), "another CA").await;
    // The same server with the right CA: it was the trust that failed.
    round_trip(&connect(pki.options(&server.url())).await, "RIGHT_CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_a_server_without_tls() {
    let pki = Pki::new();
    let plain = Server::start(&[]);
    refused(pki.options(&plain.url()), "require_tls on a plain server").await;
    // And without require_tls the same options talk to it in the clear (the CA is unused).
    let mut o = pki.options(&plain.url());
    o.require_tls = false;
    round_trip(&connect(o).await, "PLAIN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_clients_takes_only_a_client_certificate_of_its_ca() {
    let pki = Pki::new();
    let server = pki.server(true);
    refused(pki.options(&server.url()), "no client certificate").await;
    let other = Pki::new();
    // A client certificate of another CA (the server's CA trusted for the server).
    let mut o = pki.options(&server.url());
    o.tls_cert = Some(other.path("client.pem"));
    o.tls_key = Some(other.path("client.key"));
    refused(o, "a client certificate of another CA").await;
    round_trip(
        &connect(pki.with_client_cert(pki.options(&server.url()))).await,
        "WITH_CLIENT_CERT",
    )
    .await;
    let o = pki.with_client_cert(pki.options(&format!("tls://localhost:{}", server.port)));
    round_trip(&connect(o).await, "WITH_CLIENT_CERT_TLS_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_tls_files_are_unavailable_without_a_hang() {
    let pki = Pki::new();
    let server = pki.server(false);
    let mut o = pki.options(&server.url());
    o.tls_ca = Some(Path::new("/nonexistent/coffer-ca.pem").to_owned());
    refused(o, "a CA file that does not exist").await;
    let mut o = pki.with_client_cert(pki.options(&server.url()));
    o.tls_key = Some(pki.path("ca.pem"));
    refused(o, "a key file without a key").await;
}
