//! The sealed-value wire format, a public contract other programs parse:
//!
//! ```text
//! blob = b64(iv) ":" b64(ciphertext) ":" b64(tag)
//! b64  = base64url, no padding, trailing bits zero   ; so each byte string has one encoding
//! iv   = 12 bytes     ciphertext = 0 or more bytes     tag = 16 bytes
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::CryptoError;

/// AES-GCM nonce length.
pub(crate) const IV_LEN: usize = 12;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;

/// A parsed blob.
pub(crate) struct Blob {
    pub(crate) iv: [u8; IV_LEN],
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) tag: [u8; TAG_LEN],
}

/// `b64(iv) ":" b64(ciphertext) ":" b64(tag)`.
pub(crate) fn encode(iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> String {
    let [iv, ciphertext, tag] = [iv, ciphertext, tag].map(|part| URL_SAFE_NO_PAD.encode(part));
    format!("{iv}:{ciphertext}:{tag}")
}

/// Exactly three `:`-separated strict-b64 parts with a 12-byte iv and a
/// 16-byte tag, else [`CryptoError::MalformedBlob`].
pub(crate) fn decode(blob: &str) -> Result<Blob, CryptoError> {
    let mut parts = blob.split(':');
    let (Some(iv), Some(ciphertext), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::MalformedBlob);
    };
    Ok(Blob {
        iv: fixed(iv)?,
        ciphertext: b64(ciphertext)?,
        tag: fixed(tag)?,
    })
}

fn b64(part: &str) -> Result<Vec<u8>, CryptoError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| CryptoError::MalformedBlob)
}

fn fixed<const N: usize>(part: &str) -> Result<[u8; N], CryptoError> {
    b64(part)?
        .try_into()
        .map_err(|_| CryptoError::MalformedBlob)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IV: &str = "AQEBAQEBAQEBAQEB"; // [1; 12]
    const TAG: &str = "AgICAgICAgICAgICAgICAg"; // [2; 16]

    #[test]
    fn encodes_three_unpadded_base64url_parts_and_decodes_them_back() {
        let blob = encode(&[1; IV_LEN], b"ct", &[2; TAG_LEN]);
        assert_eq!(blob, format!("{IV}:Y3Q:{TAG}"));
        let b = decode(&blob).unwrap();
        assert_eq!(
            (b.iv, &b.ciphertext[..], b.tag),
            ([1; 12], &b"ct"[..], [2; 16])
        );
    }

    #[test]
    fn malformed_shapes_are_rejected() {
        for bad in [
            String::new(),
            format!("{IV}:{TAG}"),
            format!("{IV}:Y3Q:{TAG}:"),
            format!("{IV}AQ:Y3Q:{TAG}"),                // 13-byte iv
            format!("{IV}:Y3Q:{TAG}AQ"),                // 17-byte tag
            format!("{IV}:Y3Q=:{TAG}"),                 // padding
            format!("{IV}:Y3R:{TAG}"),                  // non-zero trailing bits
            format!("{IV}:Y+Q:{TAG}"),                  // standard alphabet
            format!("{IV}:Y3Q:AgICAgICAgICAgICAgICAh"), // non-zero trailing bits
        ] {
            let refused = matches!(decode(&bad), Err(CryptoError::MalformedBlob));
            assert!(refused, "{bad}");
        }
    }
}
