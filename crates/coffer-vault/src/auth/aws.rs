//! AWS IAM auth: Coffer signs an `sts:GetCallerIdentity` request with its AWS credentials
//! and hands it, unsent, to Vault (`auth/{mount}/login`); Vault sends it to STS and learns
//! from the answer which IAM principal Coffer is. The signature, not a secret, crosses to
//! Vault: the secret key never leaves this process.
//!
//! The request is what `vault login -method=aws` builds: `POST {sts_endpoint}/`, body
//! `Action=GetCallerIdentity&Version=2011-06-15`, signed (SigV4, service `sts`) over
//! `Content-Type`, `Host`, `X-Amz-Date`, `X-Amz-Security-Token` (with temporary
//! credentials) and `X-Vault-AWS-IAM-Server-ID` (when the role requires one: it binds the
//! signed request to this Vault, so another server cannot replay it).
//!
//! Credentials: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), else
//! web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, as EKS sets them), traded
//! at STS (`AssumeRoleWithWebIdentity`, an unsigned call) for temporary credentials.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{AwsAuth, Login};
use crate::VaultError;
use crate::http::VaultHttp;

/// The body of the signed request: the one STS call Vault's aws method accepts.
pub const GET_CALLER_IDENTITY_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// The header that binds a signed request to one Vault server.
pub const SERVER_ID_HEADER: &str = "X-Vault-AWS-IAM-Server-ID";

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// How long the `AssumeRoleWithWebIdentity` call may take.
const STS_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs in at `auth/{mount}/login` with a SigV4-signed `sts:GetCallerIdentity` request,
/// signed with the credentials of the process environment.
pub async fn login(cfg: &AwsAuth, http: &VaultHttp) -> Result<Login, VaultError> {
    login_with_env(cfg, http, |name| std::env::var(name).ok()).await
}

/// [`login`] with the AWS environment variables read through `get_env` rather than from the
/// process (so that tests need not change the environment of the whole process).
pub async fn login_with_env(
    cfg: &AwsAuth,
    http: &VaultHttp,
    get_env: impl Fn(&str) -> Option<String>,
) -> Result<Login, VaultError> {
    let credentials = credentials(cfg, &get_env).await?;
    let body = login_body(cfg, &credentials, SystemTime::now())?;
    super::kubernetes::post_login(http, &cfg.mount, &body).await
}

/// AWS credentials. The secret parts never show in `Debug`.
struct AwsCredentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The credentials the environment names: static keys first, else web identity.
async fn credentials(
    cfg: &AwsAuth,
    get_env: &impl Fn(&str) -> Option<String>,
) -> Result<AwsCredentials, VaultError> {
    // An empty variable is an unset one (as for the AWS SDKs).
    let var = |name: &str| get_env(name).filter(|v| !v.trim().is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret)) => {
            return Ok(AwsCredentials {
                access_key_id,
                secret_access_key: SecretString::from(secret),
                session_token: var("AWS_SESSION_TOKEN").map(SecretString::from),
            });
        }
        (Some(_), None) => {
            return Err(VaultError::Config(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(VaultError::Config(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
            ));
        }
        (None, None) => {}
    }
    match (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN")) {
        (Some(token_file), Some(role_arn)) => {
            let session_name = var("AWS_ROLE_SESSION_NAME").unwrap_or_else(default_session_name);
            assume_role_with_web_identity(cfg, &token_file, &role_arn, &session_name).await
        }
        _ => Err(VaultError::Config(
            "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or \
             AWS_WEB_IDENTITY_TOKEN_FILE/AWS_ROLE_ARN"
                .into(),
        )),
    }
}

/// `coffer-{unix seconds}`, as the AWS SDKs name a web-identity session they were not given
/// a name for.
fn default_session_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("coffer-{secs}")
}

/// Trades the web-identity token in `token_file` for temporary credentials of `role_arn`
/// (`AssumeRoleWithWebIdentity` at the configured STS endpoint; the call is unsigned: the
/// token is the credential).
async fn assume_role_with_web_identity(
    cfg: &AwsAuth,
    token_file: &str,
    role_arn: &str,
    session_name: &str,
) -> Result<AwsCredentials, VaultError> {
    let token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
        VaultError::Config(format!(
            "cannot read the web identity token {token_file}: {e}"
        ))
    })?;
    let token = SecretString::from(token);
    let form = SecretString::from(
        serde_urlencoded::to_string([
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", session_name),
            ("WebIdentityToken", token.expose_secret().trim()),
        ])
        .map_err(|_| VaultError::Config("cannot encode the web identity request".into()))?,
    );
    let url = sts_url(cfg)?;
    let client = reqwest::Client::builder()
        .timeout(STS_TIMEOUT)
        .connect_timeout(STS_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| VaultError::Config(format!("cannot build the HTTP client: {e}")))?;
    let resp = client
        .post(url)
        .header("Content-Type", FORM_CONTENT_TYPE)
        .header("Accept", "application/xml")
        .body(form.expose_secret().to_owned())
        .send()
        .await
        .map_err(|e| VaultError::Unavailable(describe_sts_transport(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| VaultError::Unavailable(describe_sts_transport(&e)))?;
    credentials_from_sts_reply(status, &text)
}

/// The credentials of an `AssumeRoleWithWebIdentity` answer. STS's refusal shows its error
/// code only (its message could quote the request).
fn credentials_from_sts_reply(
    status: StatusCode,
    text: &str,
) -> Result<AwsCredentials, VaultError> {
    let code = || xml_text(text, "Code").unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(VaultError::Unavailable(format!(
            "AWS STS answered {}",
            code()
        )));
    }
    if status.is_client_error() {
        return Err(VaultError::Denied(format!(
            "AWS STS refused the web identity token ({})",
            code()
        )));
    }
    if !status.is_success() {
        return Err(VaultError::Protocol(format!(
            "AWS STS answered HTTP {}",
            status.as_u16()
        )));
    }
    let field = |tag: &str| {
        xml_text(text, tag)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                VaultError::Protocol(format!("the AssumeRoleWithWebIdentity answer has no {tag}"))
            })
    };
    Ok(AwsCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: SecretString::from(field("SecretAccessKey")?),
        session_token: Some(SecretString::from(field("SessionToken")?)),
    })
}

/// The text of the first `<tag>…</tag>` element of `xml`, its five predefined entities
/// decoded. Enough for STS's flat answers (no CDATA, no attributes on these elements); not
/// a general XML parser.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    let raw = xml[start..start + len].trim();
    if raw.contains('<') {
        return None;
    }
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The body of `auth/{mount}/login`: the role and the signed `GetCallerIdentity` request
/// (URL, body and headers, each base64-encoded as Vault expects), signed at `now`.
fn login_body(
    cfg: &AwsAuth,
    credentials: &AwsCredentials,
    now: SystemTime,
) -> Result<Value, VaultError> {
    let url = sts_url(cfg)?;
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => {
            return Err(VaultError::Config(format!(
                "the AWS STS endpoint {url} has no host"
            )));
        }
    };
    let mut headers: Vec<(&str, String)> = vec![
        ("Content-Type", FORM_CONTENT_TYPE.to_owned()),
        ("Host", host),
    ];
    if let Some(server_id) = &cfg.server_id {
        headers.push((SERVER_ID_HEADER, server_id.clone()));
    }

    let identity = Credentials::new(
        &credentials.access_key_id,
        credentials.secret_access_key.expose_secret(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        None,
        "coffer",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&cfg.region)
        .name("sts")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| VaultError::Config(format!("cannot sign the AWS request: {e}")))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().map(|(n, v)| (*n, v.as_str())),
        SignableBody::Bytes(GET_CALLER_IDENTITY_BODY.as_bytes()),
    )
    .map_err(|e| VaultError::Config(format!("cannot sign the AWS request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| VaultError::Config(format!("cannot sign the AWS request: {e}")))?
        .into_parts();
    let (signature_headers, _params) = instructions.into_parts();

    // Header names as Go's `http.Header` spells them (what `vault login` sends); Vault
    // canonicalises them anyway.
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        all.entry(name.to_owned()).or_default().push(value);
    }
    for header in &signature_headers {
        all.entry(go_header_name(header.name()))
            .or_default()
            .push(header.value().to_owned());
    }
    let headers_json = serde_json::to_vec(&all)
        .map_err(|e| VaultError::Config(format!("cannot encode the AWS request: {e}")))?;

    Ok(json!({
        "role": cfg.role,
        "iam_http_request_method": "POST",
        "iam_request_url": BASE64.encode(url.as_str()),
        "iam_request_body": BASE64.encode(GET_CALLER_IDENTITY_BODY),
        "iam_request_headers": BASE64.encode(headers_json),
    }))
}

/// `{sts_endpoint}/`, checked.
fn sts_url(cfg: &AwsAuth) -> Result<Url, VaultError> {
    let endpoint = cfg.sts_endpoint.trim_end_matches('/');
    let url = Url::parse(&format!("{endpoint}/")).map_err(|e| {
        VaultError::Config(format!(
            "the AWS STS endpoint {endpoint:?} is not a URL: {e}"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(VaultError::Config(format!(
            "the AWS STS endpoint {endpoint:?} is not an http(s) URL"
        )));
    }
    Ok(url)
}

/// `x-amz-date` → `X-Amz-Date` (Go's canonical header form).
fn go_header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A transport error talking to STS, without its URL.
fn describe_sts_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "AWS STS did not answer in time".into()
    } else if e.is_connect() {
        "cannot connect to AWS STS".into()
    } else {
        "the request to AWS STS failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(server_id: Option<&str>) -> AwsAuth {
        AwsAuth {
            role: "coffer".into(),
            mount: "aws".into(),
            region: "eu-west-1".into(),
            sts_endpoint: "https://sts.eu-west-1.amazonaws.com".into(),
            server_id: server_id.map(str::to_owned),
        }
    }

    fn creds(session: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: session.map(SecretString::from),
        }
    }

    fn decode(body: &Value, field: &str) -> String {
        let b64 = body[field].as_str().unwrap();
        String::from_utf8(BASE64.decode(b64).unwrap()).unwrap()
    }

    #[test]
    fn the_login_body_carries_the_signed_request_vault_expects() {
        let body = login_body(
            &cfg(Some("vault.example.com")),
            &creds(Some("TOKEN")),
            UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(body["role"], "coffer");
        assert_eq!(body["iam_http_request_method"], "POST");
        assert_eq!(
            decode(&body, "iam_request_url"),
            "https://sts.eu-west-1.amazonaws.com/"
        );
        assert_eq!(decode(&body, "iam_request_body"), GET_CALLER_IDENTITY_BODY);
        let headers: BTreeMap<String, Vec<String>> =
            serde_json::from_str(&decode(&body, "iam_request_headers")).unwrap();
        assert_eq!(headers["Host"], ["sts.eu-west-1.amazonaws.com"]);
        assert_eq!(headers["Content-Type"], [FORM_CONTENT_TYPE]);
        assert_eq!(headers["X-Vault-AWS-IAM-Server-ID"], ["vault.example.com"]);
        assert_eq!(headers["X-Amz-Date"], ["19700101T000000Z"]);
        assert_eq!(headers["X-Amz-Security-Token"], ["TOKEN"]);
        let auth = &headers["Authorization"][0];
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/19700101/eu-west-1/sts/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;\
             x-vault-aws-iam-server-id, Signature="
        ));
        assert!(!body.to_string().contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn an_explicit_port_is_part_of_the_signed_host() {
        let mut cfg = cfg(None);
        cfg.sts_endpoint = "http://127.0.0.1:4566/".into();
        let body = login_body(&cfg, &creds(None), UNIX_EPOCH).unwrap();
        let headers: BTreeMap<String, Vec<String>> =
            serde_json::from_str(&decode(&body, "iam_request_headers")).unwrap();
        assert_eq!(headers["Host"], ["127.0.0.1:4566"]);
        assert!(!headers.contains_key("X-Amz-Security-Token"));
        assert!(!headers.contains_key(SERVER_ID_HEADER));
        assert_eq!(decode(&body, "iam_request_url"), "http://127.0.0.1:4566/");
    }

    #[test]
    fn sts_credentials_are_read_from_its_xml_answer() {
        let xml = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>FQo&amp;Gh+/=</SessionToken>
      <SecretAccessKey>secret/key</SecretAccessKey>
      <Expiration>2030-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        let c = credentials_from_sts_reply(StatusCode::OK, xml).unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key.expose_secret(), "secret/key");
        assert_eq!(c.session_token.unwrap().expose_secret(), "FQo&Gh+/=");
    }

    #[test]
    fn sts_refusals_and_odd_answers_are_told_apart() {
        let refusal = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
                       <Message>Incorrect token audience</Message></Error></ErrorResponse>";
        let err = credentials_from_sts_reply(StatusCode::BAD_REQUEST, refusal).unwrap_err();
        assert!(matches!(&err, VaultError::Denied(m) if m.contains("InvalidIdentityToken")));
        assert!(matches!(
            credentials_from_sts_reply(StatusCode::SERVICE_UNAVAILABLE, ""),
            Err(VaultError::Unavailable(_))
        ));
        assert!(matches!(
            credentials_from_sts_reply(StatusCode::OK, "<html>hello</html>"),
            Err(VaultError::Protocol(_))
        ));
        let nested = "<AccessKeyId><x/></AccessKeyId>";
        assert_eq!(xml_text(nested, "AccessKeyId"), None);
    }

    #[test]
    fn credentials_never_show_their_secrets_in_debug() {
        let shown = format!("{:?}", creds(Some("TOKEN")));
        assert!(!shown.contains("wJalrXUtnFEMI"));
        assert!(!shown.contains("TOKEN"));
    }

    #[test]
    fn header_names_take_gos_canonical_form() {
        assert_eq!(go_header_name("x-amz-date"), "X-Amz-Date");
        assert_eq!(go_header_name("authorization"), "Authorization");
    }
}
