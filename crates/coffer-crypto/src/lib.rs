//! Coffer's crypto core: a versioned AES-256-GCM keyring that seals values
//! with associated data into the `iv:ciphertext:tag` blob (see [`Keyring::seal`]).
//!
//! Pure: no I/O, no async. Key material and plaintext never appear in
//! `Debug`, `Display`, errors or panics.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod blob;
mod key;

pub use key::Key;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Everything that can go wrong in this crate. No variant carries secrets.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// A key version was 0 or not a decimal number.
    #[error("key versions are positive integers")]
    InvalidKeyVersion,
    /// Key material is neither 64 hex characters nor a long enough passphrase.
    #[error(
        "key material is too short: need 64 hex characters (`openssl rand -hex 32`) \
         or a passphrase of at least 32 characters; got {chars} characters"
    )]
    KeyTooShort {
        /// How many characters (not bytes) the material had.
        chars: usize,
    },
    /// The keyring has no key for this version.
    #[error("key version {0} is not in the keyring")]
    UnknownKeyVersion(KeyVersion),
    /// The blob does not parse as `iv:ciphertext:tag`.
    #[error("sealed value is malformed")]
    MalformedBlob,
    /// The GCM tag did not verify.
    #[error("sealed value does not authenticate (wrong key, wrong associated data, or tampered)")]
    Unauthentic,
    /// The system CSPRNG failed.
    #[error("system random number generator failed")]
    Rng,
}

/// A key version: a positive integer (1, 2, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyVersion(NonZeroU32);

impl KeyVersion {
    /// `v`, or [`CryptoError::InvalidKeyVersion`] if `v == 0`.
    pub fn new(v: u32) -> Result<KeyVersion, CryptoError> {
        NonZeroU32::new(v)
            .map(KeyVersion)
            .ok_or(CryptoError::InvalidKeyVersion)
    }

    /// The version number.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for KeyVersion {
    type Err = CryptoError;

    /// `version = 1*DIGIT`, value in `1..=u32::MAX`. No sign, no whitespace.
    fn from_str(s: &str) -> Result<KeyVersion, CryptoError> {
        // Canonical decimal only: "01" and "1" must not both name version 1, or which key a
        // keyring holds for it would depend on the order it was read in.
        let canonical =
            !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
        if !canonical {
            return Err(CryptoError::InvalidKeyVersion);
        }
        let v = s.parse().map_err(|_| CryptoError::InvalidKeyVersion)?;
        KeyVersion::new(v)
    }
}

/// Versions -> keys, with one current version used for every new seal.
///
/// Each version's AES-256-GCM key schedule is expanded once, when the ring is made, not on
/// every seal and open (that was ~3 % of a resolve's server time).
pub struct Keyring {
    current: KeyVersion,
    keys: BTreeMap<KeyVersion, LessSafeKey>,
}

impl Keyring {
    /// A ring sealing under `current`, which must be one of `keys`
    /// (else [`CryptoError::UnknownKeyVersion`]).
    pub fn new(
        current: KeyVersion,
        keys: BTreeMap<KeyVersion, Key>,
    ) -> Result<Keyring, CryptoError> {
        if !keys.contains_key(&current) {
            return Err(CryptoError::UnknownKeyVersion(current));
        }
        let keys = keys.iter().map(|(v, key)| (*v, schedule(key))).collect();
        Ok(Keyring { current, keys })
    }

    /// A ring holding just `key`, as version 1, current.
    pub fn single(key: Key) -> Keyring {
        let v1 = KeyVersion(NonZeroU32::MIN);
        Keyring {
            current: v1,
            keys: BTreeMap::from([(v1, schedule(&key))]),
        }
    }

    /// The version new seals use.
    pub fn current(&self) -> KeyVersion {
        self.current
    }

    /// Every version in the ring, ascending.
    pub fn versions(&self) -> impl Iterator<Item = KeyVersion> + '_ {
        self.keys.keys().copied()
    }

    /// Whether the ring holds a key for `v`.
    pub fn contains(&self, v: KeyVersion) -> bool {
        self.keys.contains_key(&v)
    }

    /// Seal under the current version:
    ///
    /// ```text
    /// iv              = 12 fresh bytes from SystemRandom, per call
    /// ciphertext, tag = AES-256-GCM(key[current], iv, aad, plaintext)   ; 16-byte tag
    /// blob            = b64(iv) ":" b64(ciphertext) ":" b64(tag)        ; ciphertext may be empty
    /// b64             = base64url, no padding, trailing bits zero
    /// ```
    ///
    /// # Panics
    /// If `plaintext` exceeds the GCM limit of 2^36 - 32 bytes (64 GiB).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        self.seal_with(self.current, aad, plaintext)
    }

    /// [`Keyring::seal`] under `version` instead of the current one (for
    /// per-version canaries). [`CryptoError::UnknownKeyVersion`] if absent.
    ///
    /// # Panics
    /// As [`Keyring::seal`].
    pub fn seal_with(
        &self,
        version: KeyVersion,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Sealed, CryptoError> {
        let key = self.aead_key(version)?;
        let iv = random_bytes::<{ blob::IV_LEN }>()?;
        let mut buf = Zeroizing::new(plaintext.to_vec());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf)
            // Invariant: AES-GCM sealing fails only past its 64 GiB length limit (documented panic).
            .expect("plaintext exceeds the AES-GCM length limit");
        Ok(Sealed {
            key_version: version,
            blob: blob::encode(&iv, &buf, tag.as_ref()),
        })
    }

    /// Open `blob` sealed under `version` with associated data `aad`.
    ///
    /// Errors: [`CryptoError::UnknownKeyVersion`] if the ring lacks `version`;
    /// [`CryptoError::MalformedBlob`] if `blob` does not parse;
    /// [`CryptoError::Unauthentic`] if the tag does not verify.
    pub fn open(
        &self,
        version: KeyVersion,
        blob: &str,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let key = self.aead_key(version)?;
        let parts = blob::decode(blob)?;
        let mut buf = Zeroizing::new(parts.ciphertext);
        buf.extend_from_slice(&parts.tag);
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(parts.iv),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| CryptoError::Unauthentic)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The output of a seal: the version used and the encoded blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The key version the blob was sealed under; pass it back to [`Keyring::open`].
    pub key_version: KeyVersion,
    /// `iv:ciphertext:tag`, see [`Keyring::seal`].
    pub blob: String,
}

/// Fill a fresh array from the system CSPRNG (for API key tokens and ids).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Rng)?;
    Ok(out)
}

/// `N` bytes from the system CSPRNG as `2N` lowercase hex digits (tokens, ids).
pub fn random_hex<const N: usize>() -> Result<String, CryptoError> {
    random_bytes::<N>().map(|b| hex(&b))
}

/// Lowercase hex SHA-256 of `data` (API keys are stored as this hash).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest(&SHA256, data).as_ref())
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths (comparing a
/// stored secret with a submitted one must not tell an observer how much of it matched).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// HMAC-SHA256 of `data` under `key` (webhook signatures: `Coffer-Signature`).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

impl Keyring {
    fn aead_key(&self, version: KeyVersion) -> Result<&LessSafeKey, CryptoError> {
        self.keys
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))
    }
}

/// `key`'s AES-256-GCM key schedule.
fn schedule(key: &Key) -> LessSafeKey {
    // Invariant: AES_256_GCM takes exactly 32 key bytes, and `Key` always holds 32.
    let unbound = UnboundKey::new(&AES_256_GCM, key.as_bytes()).expect("AES-256 key is 32 bytes");
    LessSafeKey::new(unbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    const AAD: &[u8] = b"vault/db-password";

    fn v(n: u32) -> KeyVersion {
        KeyVersion::new(n).unwrap()
    }

    fn random_ring() -> Keyring {
        Keyring::single(Key::from_bytes(random_bytes().unwrap()))
    }

    /// Open under version 1 with [`AAD`].
    fn open1(ring: &Keyring, blob: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        ring.open(v(1), blob, AAD)
    }

    /// A random ring and a 30-byte secret sealed under it.
    fn sealed_fixture() -> (Keyring, String) {
        let ring = random_ring();
        let blob = ring
            .seal(AAD, b"thirty bytes of secret payload")
            .unwrap()
            .blob;
        (ring, blob)
    }

    #[test]
    fn round_trip_including_empty_and_64_kib() {
        let ring = random_ring();
        for plaintext in [b"hunter2".to_vec(), vec![], vec![0xa5; 64 * 1024]] {
            let sealed = ring.seal(AAD, &plaintext).unwrap();
            assert_eq!(sealed.key_version, v(1));
            assert_eq!(*open1(&ring, &sealed.blob).unwrap(), plaintext);
        }
        let empty = ring.seal(AAD, b"").unwrap().blob;
        assert!(empty.split(':').map(str::len).eq([16, 0, 22]), "{empty}");
    }

    #[test]
    fn opens_blob_sealed_by_an_independent_implementation() {
        // Python `cryptography` AESGCM, key = 00..1f, iv = 64..6f.
        let ring = Keyring::single(Key::from_bytes(std::array::from_fn(|i| i as u8)));
        let blob = "ZGVmZ2hpamtsbW5v:KW-qBxqCdv9KQjuJrQs:ApPwsDhOFr_GcKwK1D3BQg";
        assert_eq!(*open1(&ring, blob).unwrap(), b"attack at dawn");
    }

    #[test]
    fn wrong_key_with_same_version_is_unauthentic() {
        let (_, blob) = sealed_fixture();
        assert_eq!(open1(&random_ring(), &blob), Err(CryptoError::Unauthentic));
    }

    #[test]
    fn wrong_associated_data_is_unauthentic() {
        let (ring, blob) = sealed_fixture();
        let opened = ring.open(v(1), &blob, b"vault/other");
        assert_eq!(opened, Err(CryptoError::Unauthentic));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let (ring, blob) = sealed_fixture();
        for end in 0..blob.len() {
            assert!(
                open1(&ring, &blob[..end]).is_err(),
                "prefix of {end} accepted"
            );
        }
        for i in 0..blob.len() {
            let cut = format!("{}{}", &blob[..i], &blob[i + 1..]);
            assert!(
                open1(&ring, &cut).is_err(),
                "blob without char {i} accepted"
            );
        }
    }

    #[test]
    fn every_bit_flip_of_the_blob_string_is_rejected() {
        let (ring, blob) = sealed_fixture();
        for i in 0..blob.len() * 8 {
            let mut bytes = blob.clone().into_bytes();
            bytes[i / 8] ^= 1 << (i % 8);
            // Not UTF-8 counts as rejected: no `&str` can carry it to `open`.
            if let Ok(flipped) = String::from_utf8(bytes) {
                assert!(open1(&ring, &flipped).is_err(), "{flipped} accepted");
            }
        }
    }

    #[test]
    fn every_bit_flip_of_iv_ciphertext_and_tag_is_unauthentic() {
        let (ring, blob) = sealed_fixture();
        let b = blob::decode(&blob).unwrap();
        let flip = |bytes: &[u8], bit: usize| {
            let mut bytes = bytes.to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            bytes
        };
        let mut flipped = Vec::new();
        for bit in 0..b.iv.len() * 8 {
            flipped.push(blob::encode(&flip(&b.iv, bit), &b.ciphertext, &b.tag));
        }
        for bit in 0..b.ciphertext.len() * 8 {
            flipped.push(blob::encode(&b.iv, &flip(&b.ciphertext, bit), &b.tag));
        }
        for bit in 0..b.tag.len() * 8 {
            flipped.push(blob::encode(&b.iv, &b.ciphertext, &flip(&b.tag, bit)));
        }
        assert_eq!(flipped.len(), (12 + 30 + 16) * 8);
        for blob in flipped {
            assert_eq!(open1(&ring, &blob), Err(CryptoError::Unauthentic), "{blob}");
        }
    }

    #[test]
    fn identical_plaintexts_seal_to_different_blobs() {
        let ring = random_ring();
        let [a, b] = [(); 2].map(|()| ring.seal(AAD, b"same").unwrap().blob);
        assert_ne!(a, b);
    }

    #[test]
    fn value_sealed_under_v1_opens_after_v2_becomes_current() {
        let k1: [u8; 32] = random_bytes().unwrap();
        let old = Keyring::single(Key::from_bytes(k1))
            .seal(AAD, b"old")
            .unwrap();
        let k2 = Key::from_bytes(random_bytes().unwrap());
        let keys = BTreeMap::from([(v(1), Key::from_bytes(k1)), (v(2), k2)]);
        let ring = Keyring::new(v(2), keys).unwrap();
        assert_eq!(*ring.open(old.key_version, &old.blob, AAD).unwrap(), b"old");
        let new = ring.seal(AAD, b"new").unwrap();
        assert_eq!(new.key_version, v(2));
        assert_eq!(*ring.open(v(2), &new.blob, AAD).unwrap(), b"new");
        let canary = ring.seal_with(v(1), AAD, b"canary").unwrap();
        assert_eq!(*open1(&ring, &canary.blob).unwrap(), b"canary");
    }

    #[test]
    fn unknown_versions_are_refused() {
        let (ring, blob) = sealed_fixture();
        let unknown = Some(CryptoError::UnknownKeyVersion(v(2)));
        assert_eq!(ring.open(v(2), &blob, AAD).err(), unknown);
        assert_eq!(ring.seal_with(v(2), AAD, b"x").err(), unknown);
        let keys = BTreeMap::from([(v(1), Key::from_bytes([7; 32]))]);
        assert_eq!(Keyring::new(v(2), keys).err(), unknown);
    }

    #[test]
    fn keyring_lists_versions_ascending_and_debug_shows_only_versions() {
        let keys = BTreeMap::from([
            (v(3), Key::from_bytes([0xab; 32])),
            (v(1), Key::from_bytes([0xcd; 32])),
        ]);
        let ring = Keyring::new(v(3), keys).unwrap();
        assert_eq!(ring.versions().collect::<Vec<_>>(), [v(1), v(3)]);
        assert!(ring.contains(v(1)) && !ring.contains(v(2)));
        assert_eq!(ring.current(), v(3));
        let debug = "Keyring { current: KeyVersion(3), versions: [KeyVersion(1), KeyVersion(3)] }";
        assert_eq!(format!("{ring:?}"), debug);
    }

    #[test]
    fn key_versions_parse_as_positive_decimal_integers() {
        assert_eq!("1".parse::<KeyVersion>().unwrap().get(), 1);
        assert_eq!(
            "4294967295".parse::<KeyVersion>(),
            KeyVersion::new(u32::MAX)
        );
        for bad in ["0", "-1", "+1", "x", "", " 1", "4294967296", "01", "007"] {
            let parsed = bad.parse::<KeyVersion>();
            assert_eq!(parsed, Err(CryptoError::InvalidKeyVersion), "{bad:?}");
        }
        assert_eq!(KeyVersion::new(0), Err(CryptoError::InvalidKeyVersion));
        assert_eq!(v(42).to_string(), "42");
    }

    #[test]
    fn sha256_hex_matches_the_fips_180_vector() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
    }
}
