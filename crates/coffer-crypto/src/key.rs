//! AES-256 key material and how operators configure it.

use std::fmt;

use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use zeroize::Zeroizing;

use crate::CryptoError;

/// HKDF-SHA256 salt for passphrase keys. Changing it orphans every passphrase-keyed value.
const PASSPHRASE_SALT: &[u8] = b"coffer/keyring/v1";
/// HKDF-SHA256 info for passphrase keys. Changing it orphans every passphrase-keyed value.
const PASSPHRASE_INFO: &[u8] = b"coffer aes-256-gcm key";
/// Shortest accepted passphrase, in characters.
const MIN_PASSPHRASE_CHARS: usize = 32;

/// 32 bytes of AES-256 key material, zeroized on drop. `Debug` prints `Key(<redacted>)`.
#[derive(Clone)]
pub struct Key {
    bytes: Zeroizing<[u8; 32]>,
}

impl Key {
    /// A key from raw bytes. The caller's copy of `bytes` is not zeroized.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        let bytes = Zeroizing::new(bytes);
        Key { bytes }
    }

    /// Parse key material as configured by an operator, used verbatim (no trimming):
    ///
    /// ```text
    /// material = 64HEXDIG   ; either case -> the 32 raw bytes
    ///          / 32*CHAR    ; any other >= 32 chars: passphrase -> HKDF-SHA256(
    ///                       ;   ikm  = UTF-8 bytes of material,
    ///                       ;   salt = "coffer/keyring/v1",
    ///                       ;   info = "coffer aes-256-gcm key",
    ///                       ;   L    = 32)
    /// ```
    ///
    /// Anything shorter than 32 characters (not bytes) is
    /// [`CryptoError::KeyTooShort`]. HKDF adds no work factor, so a
    /// passphrase must already be high-entropy (e.g. generated), not memorable.
    pub fn from_material(material: &str) -> Result<Key, CryptoError> {
        if let Some(bytes) = decode_hex_32(material) {
            return Ok(Key { bytes });
        }
        let chars = material.chars().count();
        if chars < MIN_PASSPHRASE_CHARS {
            return Err(CryptoError::KeyTooShort { chars });
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        Salt::new(HKDF_SHA256, PASSPHRASE_SALT)
            .extract(material.as_bytes())
            .expand(&[PASSPHRASE_INFO], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut bytes[..]))
            // Invariant: HKDF-SHA256's output length (32) is within 255 * 32, and matches `bytes`.
            .expect("HKDF-SHA256 yields 32 bytes");
        Ok(Key { bytes })
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Exactly 64 hex digits (either case) -> 32 bytes; anything else -> `None`.
fn decode_hex_32(s: &str) -> Option<Zeroizing<[u8; 32]>> {
    let digits = s.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keyring;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const PASSPHRASE: &str = "correct horse battery staple 123"; // 32 chars

    fn bytes(material: &str) -> [u8; 32] {
        *Key::from_material(material).unwrap().as_bytes()
    }

    fn too_short(chars: usize) -> Option<CryptoError> {
        Some(CryptoError::KeyTooShort { chars })
    }

    #[test]
    fn sixty_four_hex_chars_of_either_case_are_the_raw_bytes() {
        let raw: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(bytes(HEX), raw);
        assert_eq!(bytes(&HEX.to_uppercase()), raw);
    }

    #[test]
    fn passphrase_key_is_deterministic_and_pinned() {
        let ring = |material| Keyring::single(Key::from_material(material).unwrap());
        let sealed = ring(PASSPHRASE).seal(b"aad", b"secret").unwrap();
        let opened = ring(PASSPHRASE).open(sealed.key_version, &sealed.blob, b"aad");
        assert_eq!(*opened.unwrap(), b"secret");
        // Python `cryptography` HKDF with the documented salt and info.
        let hkdf = "2ccc2053d498ebb15ae548d3a8d471ab336b71cbc61e16a84ea3f6e52e104928";
        assert_eq!(bytes(PASSPHRASE), *decode_hex_32(hkdf).unwrap());
    }

    #[test]
    fn sixty_four_chars_that_are_not_all_hex_are_a_passphrase() {
        assert_ne!(bytes(&format!("{}g", &HEX[..63])), bytes(HEX));
    }

    #[test]
    fn material_under_32_chars_is_too_short_counting_chars_not_bytes() {
        let short = &PASSPHRASE[..31];
        assert_eq!(Key::from_material(short).err(), too_short(31));
        assert_eq!(Key::from_material("").err(), too_short(0));
        assert_eq!(Key::from_material(&"é".repeat(31)).err(), too_short(31)); // 62 bytes
        assert!(Key::from_material(&"é".repeat(32)).is_ok());
        let message = Key::from_material(short).unwrap_err().to_string();
        assert!(message.contains("got 31 characters"), "{message}");
        assert!(!message.contains(short), "{message}");
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = Key::from_material(PASSPHRASE).unwrap();
        assert_eq!(
            format!("{key:?}|{key:#?}"),
            "Key(<redacted>)|Key(<redacted>)"
        );
        let ring = format!("{:?}", Keyring::single(key));
        assert_eq!(
            ring,
            "Keyring { current: KeyVersion(1), versions: [KeyVersion(1)] }"
        );
    }
}
