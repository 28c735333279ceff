//! Stream keys and livestream ids: making them, and how a key is kept.
//!
//! A stream key is 32 random bytes in base64url behind `sk_` (a prefix that secret scanners
//! and people recognise). The registry keeps only its SHA-256: a leaked database reveals no
//! key, and a lookup is one indexed equality on the hash. No password hashing: a key has 256
//! bits of entropy, so a slow hash would add publish latency and no safety. The hash found is
//! compared again in constant time, so the answer's timing never depends on how much of a
//! guess was right.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What every stream key starts with.
pub const KEY_PREFIX: &str = "sk_";
/// What every livestream id starts with.
pub const ID_PREFIX: &str = "ls_";

/// A new stream key (shown once, never stored).
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A new livestream id: 12 random bytes, base64url (a valid stream name).
pub fn new_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("{ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of a key: what the registry stores and looks up.
pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Whether `stored` is the hash of `key`, compared in constant time.
pub fn matches(key: &str, stored: &[u8]) -> bool {
    bool::from(hash(key).ct_eq(stored))
}

/// Whether `text` has a stream key's form (checked before any lookup, so junk costs nothing).
pub fn looks_like_key(text: &str) -> bool {
    text.strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| rest.len() == 43 && URL_SAFE_NO_PAD.decode(rest).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_recognised() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 43);
        assert!(looks_like_key(&a));
        assert!(!looks_like_key("sk_short"));
        assert!(!looks_like_key(&a[3..]));
        assert!(!looks_like_key(&format!("{}!", &a[..a.len() - 1])));
    }

    #[test]
    fn a_key_matches_only_its_own_hash() {
        let key = new_key();
        let stored = hash(&key);
        assert_eq!(stored.len(), 32);
        assert!(matches(&key, &stored));
        assert!(!matches(&new_key(), &stored));
        assert!(!matches(&key, &stored[..31]));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_judged_without_panicking(text in ".{0,80}") {
            let judged = looks_like_key(&text);
            proptest::prop_assert!(!judged || (text.starts_with(KEY_PREFIX) && text.len() == 46));
        }
    }

    #[test]
    fn ids_are_stream_names() {
        let id = new_id();
        assert!(id.starts_with(ID_PREFIX));
        assert_eq!(id.len(), 3 + 16);
        assert!(id[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
