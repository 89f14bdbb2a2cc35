//! `coffer login` / `coffer logout`: an API key stored for this user, per server address,
//! in `$XDG_CONFIG_HOME/coffer/credentials.json` (else `~/.config/coffer/…`): the directory
//! 0700, the file 0600, replaced atomically (written beside, then renamed). The pattern of
//! Vault's `~/.vault-token`, keyed by address so one user can work with several servers.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::exit::{NoKeyError, usage};
use super::http::{self, Api, ApiError};
use super::{input, output};

/// Options of `coffer login` and `coffer logout`.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// Address of the Coffer server the key is for.
    #[arg(long, env = "COFFER_ADDR", default_value = "http://127.0.0.1:8720")]
    pub addr: String,
}

/// The longest API key accepted (COFFER_ADMIN_KEY allows 512 characters).
const MAX_KEY_LEN: usize = 512;

/// `coffer login`: reads a key from stdin, checks it against the server, stores it.
pub async fn login(args: LoginArgs) -> Result<()> {
    let base = http::parse_addr(&args.addr)?;
    let key = read_key(&args.addr)?;
    let api = Api::new(base.clone(), &args.addr, key.clone())?;
    match api.get(&["v1", "environments"], &[]).await {
        Ok(_) => {}
        Err(e) => match e.downcast_ref::<ApiError>().map(|a| a.status) {
            // A runtime key may not list environments, but the server knew it.
            Some(StatusCode::FORBIDDEN) => {}
            Some(StatusCode::UNAUTHORIZED) => {
                return Err(e.context(format!(
                    "the server at {} does not accept this key; nothing was stored",
                    api.addr()
                )));
            }
            _ => return Err(e.context("cannot check the key; nothing was stored")),
        },
    }
    let path = credentials_path()?;
    let mut stored = Credentials::load(&path)?;
    stored.keys.insert(address_key(&base), key);
    stored.save(&path)?;
    output::emit(&format!(
        "logged in to {}: the key is stored in {}\n",
        api.addr(),
        path.display()
    ))
}

/// `coffer logout`: forgets the key stored for the address.
pub fn logout(args: LoginArgs) -> Result<()> {
    let base = http::parse_addr(&args.addr)?;
    let path = credentials_path()?;
    let mut stored = Credentials::load(&path)?;
    let shown = http::shown_addr(&base, &args.addr);
    if stored.keys.remove(&address_key(&base)).is_none() {
        return output::emit(&format!("no key was stored for {shown}\n"));
    }
    stored.save(&path)?;
    output::emit(&format!("logged out of {shown}: its key is forgotten\n"))
}

/// The key `coffer login` stored for this address, if any.
pub fn stored_key(base: &Url) -> Result<Option<SecretString>> {
    let path = match credentials_path() {
        Ok(path) => path,
        // No HOME at all (a bare service account): nothing can have been stored.
        Err(_) => return Ok(None),
    };
    Ok(Credentials::load(&path)?.keys.remove(&address_key(base)))
}

/// Where logins are stored: `$XDG_CONFIG_HOME/coffer/credentials.json`, else
/// `$HOME/.config/coffer/credentials.json`.
pub fn credentials_path() -> Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let config = match non_empty("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            non_empty("HOME").ok_or_else(|| anyhow!("neither XDG_CONFIG_HOME nor HOME is set"))?,
        )
        .join(".config"),
    };
    Ok(config.join("coffer").join("credentials.json"))
}

/// A message for when no key is found anywhere, naming every way to give one.
pub fn no_key_error(shown_addr: &str, admin_key_path: Option<&Path>) -> anyhow::Error {
    let local = match admin_key_path {
        Some(path) => format!(
            ", or on the server's machine point --data-dir/COFFER_DATA_DIR at its data dir ({} does not exist)",
            path.display()
        ),
        None => String::new(),
    };
    NoKeyError(format!(
        "no API key for {shown_addr}: run `coffer login --addr {shown_addr}` or set COFFER_API_KEY{local}"
    ))
    .into()
}

/// Stored keys by normalized address.
struct Credentials {
    keys: BTreeMap<String, SecretString>,
}

#[derive(serde::Deserialize)]
struct CredentialsFile {
    keys: BTreeMap<String, SecretString>,
}

impl Credentials {
    fn load(path: &Path) -> Result<Self> {
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Credentials {
                    keys: BTreeMap::new(),
                });
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if let Ok(meta) = file.metadata()
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} is readable by other users; `chmod 600` it (or log in again)",
                path.display()
            );
        }
        let bytes =
            input::read_all(file).with_context(|| format!("cannot read {}", path.display()))?;
        // The parse error is not shown: it could quote part of a key.
        let parsed: CredentialsFile = serde_json::from_slice(&bytes).map_err(|_| {
            anyhow!(
                "{} is not a credentials file written by `coffer login`; remove it and log in again",
                path.display()
            )
        })?;
        Ok(Credentials { keys: parsed.keys })
    }

    /// Replaces the file atomically: a reader sees the old content or the new, never half.
    fn save(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .context("the credentials path has no directory")?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // An existing directory keeps its mode from `create`; tighten it if others may look in.
        let mode = fs::metadata(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(dir, Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
        }
        let body = self.to_json()?;
        let tmp = dir.join(format!(".credentials.json.{}.tmp", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&body)?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            fs::File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        Ok(())
    }

    fn to_json(&self) -> Result<Zeroizing<Vec<u8>>> {
        let keys: BTreeMap<&str, &str> = self
            .keys
            .iter()
            .map(|(addr, key)| (addr.as_str(), key.expose_secret()))
            .collect();
        // JSON spells one character in at most 6; sized up front so the buffer never
        // reallocates and leaves an unwiped copy of a key behind.
        let hint = 64
            + keys
                .iter()
                .map(|(a, k)| 6 * (a.len() + k.len()) + 8)
                .sum::<usize>();
        let mut buf = Zeroizing::new(Vec::with_capacity(hint));
        serde_json::to_writer_pretty(&mut *buf, &serde_json::json!({ "keys": keys }))
            .context("cannot encode the credentials")?;
        buf.push(b'\n');
        Ok(buf)
    }
}

/// The address a login is stored under: the URL without credentials, normalized
/// (`127.0.0.1:8720` and `http://127.0.0.1:8720/` are one server).
fn address_key(base: &Url) -> String {
    let mut url = base.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The key, from a terminal without echo or from a pipe; never shown in any message.
fn read_key(addr: &str) -> Result<SecretString> {
    let key = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(format!("API key for {}: ", output::printable(addr)))
                .context("cannot read the key from the terminal")?,
        )
    } else {
        let bytes = input::read_bounded(std::io::stdin().lock(), MAX_KEY_LEN + 2)
            .context("cannot read the key from stdin")?
            .ok_or_else(|| {
                usage(format!(
                    "the key on stdin is longer than {MAX_KEY_LEN} characters"
                ))
            })?;
        Zeroizing::new(
            String::from_utf8(bytes.to_vec()).map_err(|_| usage("the key on stdin is not text"))?,
        )
    };
    let trimmed = key.trim();
    if trimmed.is_empty() {
        bail!(usage(
            "no key: pipe it on stdin (`coffer login < key-file`) or type it at the prompt"
        ));
    }
    if trimmed.len() > MAX_KEY_LEN || !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(usage(
            "that is not an API key: keys are visible ASCII characters without spaces"
        ));
    }
    Ok(SecretString::from(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_has_one_address_key_however_it_is_written() {
        let a = address_key(&http::parse_addr("127.0.0.1:8720").unwrap());
        let b = address_key(&http::parse_addr("http://127.0.0.1:8720/").unwrap());
        let c = address_key(&http::parse_addr("http://user:pw@127.0.0.1:8720").unwrap());
        assert_eq!(a, "http://127.0.0.1:8720/");
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn credentials_round_trip_through_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coffer").join("credentials.json");
        let mut creds = Credentials::load(&path).unwrap();
        assert!(creds.keys.is_empty());
        creds.keys.insert(
            "http://h:1/".into(),
            SecretString::from("ck_admin_\"quoted\\"),
        );
        creds.save(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let loaded = Credentials::load(&path).unwrap();
        assert_eq!(
            loaded.keys["http://h:1/"].expose_secret(),
            "ck_admin_\"quoted\\"
        );
    }

    #[test]
    fn a_corrupt_credentials_file_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        fs::write(&path, "{\"keys\": {\"a\": ck_secret_material").unwrap();
        let e = Credentials::load(&path).err().unwrap().to_string();
        assert!(e.contains("credentials.json"), "{e}");
        assert!(!e.contains("ck_secret"), "{e}");
    }
}
