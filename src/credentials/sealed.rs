//! The store's cryptography: one 32-byte key, each value sealed on its own with ChaCha20-Poly1305.
//!
//! - A fresh random 96-bit nonce per sealed value (from the OS), so re-sealing the same value
//!   never repeats a (key, nonce) pair in practice (2^-32 collision odds after 2^32 seals).
//! - The associated data binds a ciphertext to its identity:
//!   `"polydev-credential-v1\0<namespace>\0<user>\0<provider>\0<VARIABLE>"`. A value copied into
//!   another user's, namespace's or provider's entry, or renamed to another variable, fails to
//!   open. (Names cannot contain NUL, so the encoding is unambiguous.)
//!
//! Invariants: plaintext only ever lives in buffers that are zeroized when dropped
//! ([`Zeroizing`], [`SecretString`]), sized up front so that no reallocation leaves a copy
//! behind; the key is zeroized on drop (the cipher does it); nothing here implements `Debug` in a
//! way that shows a key or a value.

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::credential_model::EntryId;

/// Length of the store key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a nonce in bytes (96 bits).
pub const NONCE_LEN: usize = 12;
/// Length of the Poly1305 tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Version tag at the start of the associated data.
const AAD_CONTEXT: &str = "polydev-credential-v1";

/// A value as stored: its nonce and its ciphertext (with the tag at the end). Not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Why a sealed value did not open. Carries nothing about the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "authentication failed: it was altered, moved from another user's, namespace's or \
         provider's entry, or sealed with another key"
    )]
    Authentication,
    #[error("it decrypts to something that is not UTF-8 text")]
    NotText,
}

/// The store key, ready to seal and open. Zeroized on drop.
pub struct StoreKey {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// 32 fresh random bytes from the operating system.
    pub fn generate() -> std::io::Result<Zeroizing<[u8; KEY_LEN]>> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng
            .try_fill_bytes(bytes.as_mut_slice())
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        Ok(bytes)
    }

    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        StoreKey {
            cipher: ChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// Seal `value` as `variable` of entry `id`, under a fresh random nonce.
    pub fn seal(&self, id: &EntryId, variable: &str, value: &SecretString) -> Sealed {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let plain = value.expose_secret().as_bytes();
        // Room for the tag up front: encrypting in place must not reallocate a plaintext copy.
        let mut buffer = Zeroizing::new(Vec::with_capacity(plain.len() + TAG_LEN));
        buffer.extend_from_slice(plain);
        self.cipher
            .encrypt_in_place(&nonce, &aad(id, variable), &mut *buffer)
            .expect("ChaCha20-Poly1305 seals any value shorter than 256 GiB");
        Sealed {
            nonce: nonce.into(),
            ciphertext: buffer.to_vec(),
        }
    }

    /// Open a value sealed as `variable` of entry `id`.
    pub fn open(
        &self,
        id: &EntryId,
        variable: &str,
        sealed: &Sealed,
    ) -> Result<SecretString, OpenError> {
        let mut buffer = Zeroizing::new(sealed.ciphertext.clone());
        self.cipher
            .decrypt_in_place(
                Nonce::from_slice(&sealed.nonce),
                &aad(id, variable),
                &mut *buffer,
            )
            .map_err(|_| OpenError::Authentication)?;
        secret_from_utf8(&buffer).ok_or(OpenError::NotText)
    }
}

/// Copy UTF-8 `bytes` into a [`SecretString`] without leaving an unzeroized copy behind.
pub fn secret_from_utf8(bytes: &[u8]) -> Option<SecretString> {
    let text = std::str::from_utf8(bytes).ok()?;
    // Exactly sized (byte buffers are allocated to the capacity asked for), so turning it into
    // the boxed str inside `SecretString` does not reallocate and leave a copy behind.
    let mut exact = String::with_capacity(text.len());
    exact.push_str(text);
    Some(SecretString::from(exact))
}

/// The associated data binding a ciphertext to its place.
fn aad(id: &EntryId, variable: &str) -> Vec<u8> {
    [
        AAD_CONTEXT,
        id.namespace(),
        id.user(),
        id.provider(),
        variable,
    ]
    .join("\0")
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(namespace: &str, user: &str, provider: &str) -> EntryId {
        EntryId::new(namespace, user, provider).unwrap()
    }

    fn key() -> StoreKey {
        StoreKey::from_bytes(&StoreKey::generate().unwrap())
    }

    fn secret(text: &str) -> SecretString {
        SecretString::from(text)
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let key = key();
        let a = id("default", "u1", "openai");
        let one = key.seal(&a, "OPENAI_API_KEY", &secret("sk-live-123"));
        let two = key.seal(&a, "OPENAI_API_KEY", &secret("sk-live-123"));
        assert_ne!(one.nonce, two.nonce, "a fresh nonce per seal");
        assert_ne!(one.ciphertext, two.ciphertext);
        assert_eq!(one.ciphertext.len(), "sk-live-123".len() + TAG_LEN);
        assert!(!contains(&one.ciphertext, b"sk-live"));
        for sealed in [one, two] {
            let value = key.open(&a, "OPENAI_API_KEY", &sealed).unwrap();
            assert_eq!(value.expose_secret(), "sk-live-123");
        }
        let empty = key.seal(&a, "X", &secret(""));
        assert_eq!(key.open(&a, "X", &empty).unwrap().expose_secret(), "");
    }

    #[test]
    fn the_identity_is_bound_to_the_ciphertext() {
        let key = key();
        let sealed = key.seal(&id("ns-a", "u1", "openai"), "OPENAI_API_KEY", &secret("v"));
        for (other, variable) in [
            (id("ns-b", "u1", "openai"), "OPENAI_API_KEY"),
            (id("ns-a", "u2", "openai"), "OPENAI_API_KEY"),
            (id("ns-a", "u1", "anthropic"), "OPENAI_API_KEY"),
            (id("ns-a", "u1", "openai"), "OTHER_KEY"),
            // Shifting a separator must not give the same associated data.
            (id("ns-a", "u1", "openai"), "OPENAI_API_KEY_"),
        ] {
            assert_eq!(
                key.open(&other, variable, &sealed).unwrap_err(),
                OpenError::Authentication,
                "{other} {variable}"
            );
        }
        assert_ne!(aad(&id("a", "bc", "d"), "X"), aad(&id("ab", "c", "d"), "X"));
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let key = key();
        let a = id("default", "u1", "openai");
        let sealed = key.seal(&a, "K", &secret("sk-value"));
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 0x01;
            assert!(key.open(&a, "K", &bad).is_err(), "flipped byte {i}");
        }
        let mut bad = sealed.clone();
        bad.nonce[0] ^= 0x80;
        assert!(key.open(&a, "K", &bad).is_err());
        let mut short = sealed.clone();
        short.ciphertext.truncate(TAG_LEN - 1);
        assert!(key.open(&a, "K", &short).is_err());
        assert_eq!(
            self::key().open(&a, "K", &sealed).unwrap_err(),
            OpenError::Authentication
        );
    }

    #[test]
    fn debug_shows_no_key() {
        let bytes = [7u8; KEY_LEN];
        let text = format!("{:?}", StoreKey::from_bytes(&bytes));
        assert_eq!(text, "StoreKey(..)");
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
}
