//! `Coffer-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]`: HMAC-SHA256 over
//! `"{t}.{body}"`, keyed by the function's signing secret (its UTF-8 bytes). During a
//! rotation's grace period a delivery carries one `v1` per secret, new first.
//!
//! A receiver accepts a delivery when `t` is within its tolerance of its own clock and any
//! `v1` matches any of its secrets; the comparison takes constant time.

/// The header's name.
pub const HEADER: &str = "Coffer-Signature";

/// How far `t` may be from the receiver's clock by default: five minutes, either way.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Most `v1` entries a receiver looks at (a header cannot make it work without bound).
const MAX_SIGNATURES: usize = 8;

/// Why a delivery's signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is missing or is not `t=…,v1=…`.
    #[error("the Coffer-Signature header is missing or malformed")]
    Malformed,
    /// `t` is further from now than the tolerance (a replay, or a skewed clock).
    #[error("the Coffer-Signature timestamp is outside the tolerance")]
    Stale,
    /// No signature matches any signing secret.
    #[error("no Coffer-Signature matches the signing secret")]
    Mismatch,
}

/// The header value for `body` sent at `t` (unix seconds), one `v1` per secret, in order.
pub fn sign(secrets: &[&[u8]], t: i64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&coffer_crypto::hex(&mac(secret, t, body)));
    }
    header
}

/// Checks `header` for `body` against `secrets` at `now` (unix seconds).
pub fn verify(
    header: &str,
    secrets: &[&[u8]],
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" if t.is_none() => {
                t = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "v1" if signatures.len() < MAX_SIGNATURES => {
                signatures.push(unhex(value).ok_or(SignatureError::Malformed)?);
            }
            // Other schemes and versions are ignored, as receivers of such headers do.
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let mut matched = false;
    for secret in secrets {
        let expected = mac(secret, t, body);
        for candidate in &signatures {
            // Every pair is compared, so the time taken does not say which matched.
            matched |= coffer_crypto::constant_time_eq(&expected, candidate);
        }
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> [u8; 32] {
    let mut signed = Vec::with_capacity(body.len() + 21);
    signed.extend_from_slice(t.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    coffer_crypto::hmac_sha256(secret, &signed)
}

fn unhex(raw: &str) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    raw.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"runId":"run_1"}"#;

    #[test]
    fn a_signed_body_verifies_within_the_tolerance_only() {
        let header = sign(&[b"cs_one"], 1_000, BODY);
        assert!(header.starts_with("t=1000,v1="));
        assert_eq!(verify(&header, &[b"cs_one"], BODY, 1_000, 300), Ok(()));
        assert_eq!(verify(&header, &[b"cs_one"], BODY, 1_300, 300), Ok(()));
        assert_eq!(verify(&header, &[b"cs_one"], BODY, 700, 300), Ok(()));
        assert_eq!(
            verify(&header, &[b"cs_one"], BODY, 1_301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&header, &[b"cs_one"], BODY, 699, 300),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn the_signature_covers_the_body_the_time_and_the_secret() {
        let header = sign(&[b"cs_one"], 1_000, BODY);
        let mismatch = Err(SignatureError::Mismatch);
        assert_eq!(verify(&header, &[b"cs_two"], BODY, 1_000, 300), mismatch);
        assert_eq!(verify(&header, &[b"cs_one"], b"{}", 1_000, 300), mismatch);
        let moved = header.replacen("t=1000", "t=1001", 1);
        assert_eq!(verify(&moved, &[b"cs_one"], BODY, 1_000, 300), mismatch);
    }

    #[test]
    fn during_a_rotation_either_secret_verifies() {
        let header = sign(&[b"cs_new", b"cs_old"], 5, BODY);
        assert_eq!(header.matches("v1=").count(), 2);
        assert_eq!(verify(&header, &[b"cs_old"], BODY, 5, 300), Ok(()));
        assert_eq!(verify(&header, &[b"cs_new"], BODY, 5, 300), Ok(()));
        assert_eq!(verify(&header, &[b"cs_x", b"cs_new"], BODY, 5, 300), Ok(()));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for header in [
            "",
            "t=5",
            "v1=00",
            "t=x,v1=00",
            "t=5,v1=zz",
            "t=5,v1=0011",
            "garbage",
        ] {
            assert_eq!(
                verify(header, &[b"cs"], BODY, 5, 300),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
    }

    #[test]
    fn the_mac_matches_an_independent_hmac_of_t_dot_body() {
        // HMAC-SHA256("key", "1.{}") computed independently (Python's hmac module).
        let header = sign(&[b"key"], 1, b"{}");
        assert_eq!(
            header,
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
