//! Secrets at rest: model API keys are stored encrypted in `models.api_key`.
//!
//! A stored value is `enc:v1:<base64(nonce ‖ ciphertext)>`: XChaCha20-Poly1305 with a random
//! 24-byte nonce (random nonces of that size never repeat in practice) and a 16-byte tag. The
//! caller passes *associated data* naming where the value lives (see
//! [`crate::model::api_key_context`]): it is authenticated but not stored, so a ciphertext
//! copied to another row, or altered in any bit, fails to decrypt.
//!
//! Keys come from `RAGQ_SECRET_KEY` (encrypts and decrypts) and `RAGQ_SECRET_KEY_PREVIOUS`
//! (decrypts only), each 32 bytes written as 64 hex digits or base64. Rotation: make the old key
//! the previous one, set a new current key, run `ragq reencrypt-secrets`, then drop the previous
//! key. A stored value without the `enc:v1:` prefix is legacy plaintext: it is still read, and
//! reported as such so `reencrypt-secrets` can encrypt it.
//!
//! Nothing here puts key material or plaintext into an error message or a `Debug` output.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use clap::Args;
use rand::RngCore;

/// Prefix of an encrypted value; the version names the algorithm and layout.
pub const PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Why a key could not be read, or a value could not be encrypted or decrypted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{var} must be 32 bytes written as 64 hex digits or as base64: {reason}")]
    BadKey {
        var: &'static str,
        reason: &'static str,
    },
    #[error(
        "RAGQ_SECRET_KEY is not set: it is needed to store a model API key (32 bytes as 64 hex \
         digits or base64, e.g. the output of `openssl rand -hex 32`)"
    )]
    NoKey,
    #[error(
        "the stored API key is encrypted but neither RAGQ_SECRET_KEY nor \
         RAGQ_SECRET_KEY_PREVIOUS is set"
    )]
    NoKeyToDecrypt,
    #[error("the stored API key is not valid `enc:v1:` data")]
    Malformed,
    #[error(
        "the stored API key does not decrypt with RAGQ_SECRET_KEY or RAGQ_SECRET_KEY_PREVIOUS \
         (encrypted with another key, altered, or copied from another row)"
    )]
    Undecryptable,
    #[error("encrypting the API key failed")]
    Encrypt,
}

/// A 32-byte XChaCha20-Poly1305 key. Its `Debug` shows no key material.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    /// Parses 64 hex digits or base64 of 32 bytes (surrounding whitespace ignored). `var` names
    /// the setting in the error.
    pub fn parse(var: &'static str, text: &str) -> Result<SecretKey, SecretError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| SecretError::BadKey {
                var,
                reason: "not valid hex",
            })?
        } else {
            BASE64.decode(text).map_err(|_| SecretError::BadKey {
                var,
                reason: "neither 64 hex digits nor valid base64",
            })?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey {
            var,
            reason: "the value does not decode to 32 bytes",
        })?;
        Ok(SecretKey(key))
    }

    /// A fresh random key (tests, and `ragq` can print one for an operator).
    pub fn generate() -> SecretKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        SecretKey(key)
    }

    /// The key as 64 hex digits — key material: only for handing it to a child process or an
    /// operator, never for logs.
    pub fn expose_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.0))
    }

    fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let payload = Payload {
            msg: ciphertext,
            aad: context,
        };
        self.cipher().decrypt(&XNonce::from(nonce), payload).ok()
    }
}

/// Where a decrypted value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Nothing stored (a model without a key).
    Empty,
    /// Legacy plaintext (stored before encryption existed).
    Plaintext,
    /// Encrypted with the current key.
    Current,
    /// Encrypted with the previous key.
    Previous,
}

impl Stored {
    /// `reencrypt-secrets` rewrites these with the current key.
    pub fn needs_reencrypt(self) -> bool {
        matches!(self, Stored::Plaintext | Stored::Previous)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Stored::Empty => "none",
            Stored::Plaintext => "plaintext",
            Stored::Current => "current",
            Stored::Previous => "previous",
        }
    }
}

/// A decrypted value and where it came from. `Debug` masks the plaintext.
#[derive(Clone)]
pub struct Opened {
    pub plaintext: String,
    pub stored: Stored,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("plaintext", &mask(&self.plaintext))
            .field("stored", &self.stored)
            .finish()
    }
}

/// The configured keys: `current` encrypts and decrypts, `previous` only decrypts (rotation).
#[derive(Clone, Default)]
pub struct SecretKeys {
    pub current: Option<SecretKey>,
    pub previous: Option<SecretKey>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |k: &Option<SecretKey>| if k.is_some() { "set" } else { "unset" };
        f.debug_struct("SecretKeys")
            .field("current", &set(&self.current))
            .field("previous", &set(&self.previous))
            .finish()
    }
}

impl SecretKeys {
    /// Encrypts `plaintext` for the place `context` names. An empty plaintext stays empty (a
    /// model without a key needs no secret key configured).
    pub fn encrypt(&self, plaintext: &str, context: &[u8]) -> Result<String, SecretError> {
        if plaintext.is_empty() {
            return Ok(String::new());
        }
        let key = self.current.as_ref().ok_or(SecretError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context,
        };
        let ciphertext = key
            .cipher()
            .encrypt(&XNonce::from(nonce), payload)
            .map_err(|_| SecretError::Encrypt)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(format!("{PREFIX}{}", BASE64.encode(sealed)))
    }

    /// Decrypts a stored value with the current key, then the previous one. A value without
    /// the prefix is legacy plaintext and is returned as is ([`Stored::Plaintext`]).
    pub fn decrypt(&self, stored: &str, context: &[u8]) -> Result<Opened, SecretError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            let kind = if stored.is_empty() {
                Stored::Empty
            } else {
                Stored::Plaintext
            };
            return Ok(Opened {
                plaintext: stored.to_string(),
                stored: kind,
            });
        };
        let sealed = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Malformed);
        }
        if self.current.is_none() && self.previous.is_none() {
            return Err(SecretError::NoKeyToDecrypt);
        }
        let tries = [
            (self.current.as_ref(), Stored::Current),
            (self.previous.as_ref(), Stored::Previous),
        ];
        for (key, kind) in tries {
            if let Some(bytes) = key.and_then(|k| k.open(&sealed, context)) {
                // Only this code encrypts, and only `&str`: invalid UTF-8 means corruption.
                let plaintext = String::from_utf8(bytes).map_err(|_| SecretError::Malformed)?;
                return Ok(Opened {
                    plaintext,
                    stored: kind,
                });
            }
        }
        Err(SecretError::Undecryptable)
    }
}

/// Keys that encrypt model API keys at rest (`ragq-worker` and `ragq`). Values are hidden from
/// `--help` and `Debug`; they are checked by [`SecretConfig::keys`] when the process starts.
#[derive(Clone, Default, Args)]
pub struct SecretConfig {
    /// Key encrypting model API keys at rest: 32 bytes as 64 hex digits or base64 (e.g.
    /// `openssl rand -hex 32`). Prefer the environment variable over the flag.
    #[arg(
        id = "secret_key",
        long = "secret-key",
        env = "RAGQ_SECRET_KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// The key before the last rotation: still decrypts, never encrypts.
    #[arg(
        id = "secret_key_previous",
        long = "secret-key-previous",
        env = "RAGQ_SECRET_KEY_PREVIOUS",
        hide_env_values = true
    )]
    pub previous: Option<String>,
}

impl std::fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |k: &Option<String>| if k.is_some() { "set" } else { "unset" };
        f.debug_struct("SecretConfig")
            .field("key", &set(&self.key))
            .field("previous", &set(&self.previous))
            .finish()
    }
}

impl SecretConfig {
    /// Parses the configured keys (an empty value counts as unset).
    pub fn keys(&self) -> Result<SecretKeys, SecretError> {
        let parse = |var, v: &Option<String>| {
            v.as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| SecretKey::parse(var, s))
                .transpose()
        };
        Ok(SecretKeys {
            current: parse("RAGQ_SECRET_KEY", &self.key)?,
            previous: parse("RAGQ_SECRET_KEY_PREVIOUS", &self.previous)?,
        })
    }
}

/// A secret shown for recognition, RAGFlow style: the first and last four characters around
/// `******`; short values (under 16 characters) show only `******`, and empty stays empty.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    match chars.len() {
        0 => String::new(),
        n if n < 16 => "******".into(),
        n => {
            let head: String = chars[..4].iter().collect();
            let tail: String = chars[n - 4..].iter().collect();
            format!("{head}******{tail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: &[u8] = b"ragq:test\0tenant\0chat\0gpt";

    fn keys(current: &SecretKey, previous: Option<&SecretKey>) -> SecretKeys {
        SecretKeys {
            current: Some(current.clone()),
            previous: previous.cloned(),
        }
    }

    #[test]
    fn round_trip() {
        let k = keys(&SecretKey::generate(), None);
        let stored = k.encrypt("sk-live-1234567890", CTX).expect("encrypts");
        assert!(stored.starts_with(PREFIX), "{stored}");
        assert!(!stored.contains("sk-live"));
        let opened = k.decrypt(&stored, CTX).expect("decrypts");
        assert_eq!(opened.plaintext, "sk-live-1234567890");
        assert_eq!(opened.stored, Stored::Current);
        // A fresh nonce each time.
        assert_ne!(
            stored,
            k.encrypt("sk-live-1234567890", CTX).expect("encrypts")
        );
    }

    #[test]
    fn tampering_is_detected() {
        let k = keys(&SecretKey::generate(), None);
        let stored = k.encrypt("secret", CTX).expect("encrypts");
        let mut sealed = BASE64.decode(&stored[PREFIX.len()..]).expect("base64");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let altered = format!("{PREFIX}{}", BASE64.encode(&sealed));
        assert_eq!(
            k.decrypt(&altered, CTX).unwrap_err(),
            SecretError::Undecryptable
        );
        assert_eq!(
            k.decrypt("enc:v1:!!!", CTX).unwrap_err(),
            SecretError::Malformed
        );
        assert_eq!(
            k.decrypt("enc:v1:AAAA", CTX).unwrap_err(),
            SecretError::Malformed
        );
    }

    #[test]
    fn wrong_key_fails_and_previous_key_decrypts() {
        let (old, new) = (SecretKey::generate(), SecretKey::generate());
        let stored = keys(&old, None).encrypt("secret", CTX).expect("encrypts");
        assert_eq!(
            keys(&new, None).decrypt(&stored, CTX).unwrap_err(),
            SecretError::Undecryptable
        );
        let opened = keys(&new, Some(&old))
            .decrypt(&stored, CTX)
            .expect("decrypts");
        assert_eq!(opened.plaintext, "secret");
        assert_eq!(opened.stored, Stored::Previous);
        assert!(opened.stored.needs_reencrypt());
        assert_eq!(
            SecretKeys::default().decrypt(&stored, CTX).unwrap_err(),
            SecretError::NoKeyToDecrypt
        );
    }

    #[test]
    fn associated_data_binds_the_row() {
        let k = keys(&SecretKey::generate(), None);
        let stored = k.encrypt("secret", CTX).expect("encrypts");
        assert_eq!(
            k.decrypt(&stored, b"ragq:test\0tenant\0chat\0other")
                .unwrap_err(),
            SecretError::Undecryptable
        );
    }

    #[test]
    fn legacy_plaintext_and_empty_values() {
        let none = SecretKeys::default();
        let opened = none.decrypt("sk-plain", CTX).expect("reads plaintext");
        assert_eq!(
            (opened.plaintext.as_str(), opened.stored),
            ("sk-plain", Stored::Plaintext)
        );
        assert!(opened.stored.needs_reencrypt());
        assert_eq!(none.decrypt("", CTX).expect("empty").stored, Stored::Empty);
        assert_eq!(none.encrypt("", CTX).expect("empty needs no key"), "");
        assert_eq!(none.encrypt("x", CTX).unwrap_err(), SecretError::NoKey);
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_errors_hide_them() {
        let hex = "00".repeat(31) + "ff";
        assert!(SecretKey::parse("RAGQ_SECRET_KEY", &hex).is_ok());
        let b64 = BASE64.encode([7u8; 32]);
        assert!(SecretKey::parse("RAGQ_SECRET_KEY", &format!(" {b64}\n")).is_ok());
        for bad in ["short", &BASE64.encode([1u8; 16]), &"zz".repeat(32)] {
            let e = SecretKey::parse("RAGQ_SECRET_KEY", bad)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("RAGQ_SECRET_KEY must be 32 bytes"), "{e}");
            assert!(!e.contains(bad), "{e}");
        }
        let cfg = SecretConfig {
            key: Some(hex.clone()),
            previous: Some(String::new()),
        };
        let parsed = cfg.keys().expect("valid");
        assert!(parsed.current.is_some() && parsed.previous.is_none());
        let shown = format!("{cfg:?} {parsed:?} {:?}", parsed.current);
        assert!(!shown.contains(&hex) && !shown.contains("ff"), "{shown}");
        assert!(shown.contains("SecretKey(…)"), "{shown}");
    }

    #[test]
    fn masks_like_ragflow() {
        assert_eq!(mask(""), "");
        assert_eq!(mask("short-key"), "******");
        assert_eq!(mask("sk-abcdefghijklmnop1234"), "sk-a******1234");
        let opened = Opened {
            plaintext: "sk-abcdefghijklmnop1234".into(),
            stored: Stored::Current,
        };
        assert!(!format!("{opened:?}").contains("abcdefgh"));
    }
}
