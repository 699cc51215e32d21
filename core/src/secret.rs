//! Secrets: a value that never prints, credentials encrypted at rest, hashed API keys.
//!
//! Bot credentials are sealed with AES-256-GCM under the master key; each sealed value carries
//! the id of the key that sealed it and its own random nonce, so the master key can be rotated
//! (old keys stay readable while listed in the [`Cipher`]). Tenant API keys are high-entropy
//! random strings (`sk_...`), so a SHA-256 digest is a sufficient at-rest form; comparisons of
//! presented secrets are constant-time.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret string. `Debug` and `Display` print `***`; the value is reachable only through
/// [`Secret::expose`], which makes every use greppable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Constant-time byte comparison (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key must be 32 bytes encoded as base64 (got {0} bytes)")]
    BadKeyLength(usize),
    #[error("master key is not valid base64")]
    BadKeyEncoding,
    #[error("credentials were sealed with key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("credentials could not be decrypted (wrong master key or corrupted value)")]
    Decrypt,
    #[error("sealed credentials are malformed")]
    Malformed,
}

/// A sealed value as stored: key id, nonce and ciphertext, base64.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    pub kid: String,
    pub nonce: String,
    pub ct: String,
}

/// AES-256-GCM with a current key and any number of older keys kept for reading.
#[derive(Clone)]
pub struct Cipher {
    current: (String, Aes256Gcm),
    older: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cipher(kid={})", self.current.0)
    }
}

impl Cipher {
    /// Builds a cipher from a base64 32-byte master key. The key id is derived from the key
    /// (first 8 hex digits of its SHA-256), so no extra configuration is needed to rotate.
    pub fn from_base64(key_b64: &str) -> Result<Self, CryptoError> {
        let key = decode_key(key_b64)?;
        Ok(Cipher {
            current: (
                key_id(&key),
                Aes256Gcm::new_from_slice(&key)
                    .map_err(|_| CryptoError::BadKeyLength(key.len()))?,
            ),
            older: Vec::new(),
        })
    }

    /// Adds an older key that can still open values sealed before a rotation.
    pub fn with_older_key(mut self, key_b64: &str) -> Result<Self, CryptoError> {
        let key = decode_key(key_b64)?;
        let aead =
            Aes256Gcm::new_from_slice(&key).map_err(|_| CryptoError::BadKeyLength(key.len()))?;
        self.older.push((key_id(&key), aead));
        Ok(self)
    }

    /// A fresh random key, base64 (for `demo`, tests and `switchboard` first runs).
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    pub fn key_id(&self) -> &str {
        &self.current.0
    }

    pub fn seal(&self, plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .current
            .1
            .encrypt(&Nonce::from(nonce), plaintext)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        Sealed {
            kid: self.current.0.clone(),
            nonce: STANDARD.encode(nonce),
            ct: STANDARD.encode(ct),
        }
    }

    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let aead = if sealed.kid == self.current.0 {
            &self.current.1
        } else {
            &self
                .older
                .iter()
                .find(|(kid, _)| *kid == sealed.kid)
                .ok_or_else(|| CryptoError::UnknownKey(sealed.kid.clone()))?
                .1
        };
        let nonce = STANDARD
            .decode(&sealed.nonce)
            .map_err(|_| CryptoError::Malformed)?;
        let ct = STANDARD
            .decode(&sealed.ct)
            .map_err(|_| CryptoError::Malformed)?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
        aead.decrypt(&Nonce::from(nonce), ct.as_slice())
            .map_err(|_| CryptoError::Decrypt)
    }
}

fn decode_key(key_b64: &str) -> Result<Vec<u8>, CryptoError> {
    let key = STANDARD
        .decode(key_b64.trim())
        .map_err(|_| CryptoError::BadKeyEncoding)?;
    if key.len() != 32 {
        return Err(CryptoError::BadKeyLength(key.len()));
    }
    Ok(key)
}

fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..4])
}

/// Prefix of every tenant API key, so secret scanners recognise leaked keys.
pub const API_KEY_PREFIX: &str = "sk_";

/// A secret kept in a text column: sealed with the master key when one is configured
/// (`sealed:` and the [`Sealed`] JSON), else as it is (`plain:`), like the config file holds
/// secrets without one.
pub fn store_secret(cipher: Option<&Cipher>, plain: &str) -> String {
    match cipher {
        Some(c) => format!(
            "sealed:{}",
            serde_json::to_string(&c.seal(plain.as_bytes())).unwrap_or_default()
        ),
        None => format!("plain:{plain}"),
    }
}

/// The secret [`store_secret`] stored.
pub fn read_secret(cipher: Option<&Cipher>, stored: &str) -> Result<Secret, String> {
    if let Some(plain) = stored.strip_prefix("plain:") {
        return Ok(Secret::new(plain));
    }
    let sealed = stored
        .strip_prefix("sealed:")
        .ok_or("a stored secret in an unknown form")?;
    let sealed: Sealed = serde_json::from_str(sealed).map_err(|e| e.to_string())?;
    let cipher = cipher.ok_or("the secret is sealed but no master key is configured")?;
    let plain = cipher.open(&sealed).map_err(|e| e.to_string())?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| "the stored secret is not UTF-8".to_string())
}

/// A new random tenant API key: `sk_` + 32 random bytes, base64url.
pub fn generate_api_key() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// The at-rest form of an API key or admin token: lowercase hex SHA-256.
pub fn hash_api_key(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
    }

    #[test]
    fn sealed_value_opens_with_same_key_and_after_rotation() {
        let old_key = Cipher::generate_key();
        let old = Cipher::from_base64(&old_key).unwrap();
        let sealed = old.seal(b"token-123");
        assert_ne!(sealed.ct, "token-123");
        assert_eq!(old.open(&sealed).unwrap(), b"token-123");
        let rotated = Cipher::from_base64(&Cipher::generate_key())
            .unwrap()
            .with_older_key(&old_key)
            .unwrap();
        assert_eq!(rotated.open(&sealed).unwrap(), b"token-123");
        let stranger = Cipher::from_base64(&Cipher::generate_key()).unwrap();
        assert!(matches!(
            stranger.open(&sealed),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let c = Cipher::from_base64(&Cipher::generate_key()).unwrap();
        let mut sealed = c.seal(b"abc");
        let mut ct = STANDARD.decode(&sealed.ct).unwrap();
        ct[0] ^= 1;
        sealed.ct = STANDARD.encode(ct);
        assert!(matches!(c.open(&sealed), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn short_master_key_is_refused_with_its_length() {
        let err = Cipher::from_base64(&STANDARD.encode([1u8; 16])).unwrap_err();
        assert!(err.to_string().contains("16 bytes"));
    }
}
