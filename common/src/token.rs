//! Signed tokens: who may publish, play or pull one stream, for how long, without a database.
//!
//! A token is `BASE64URL(canonical) "." BASE64URL(HMAC-SHA256(secret, canonical))`, unpadded,
//! so it travels in a URL query (`cam1?token=…`) without escaping. The canonical string is the
//! version, then each claim length-prefixed, one per line:
//!
//! ```text
//! v1
//! 2:k1
//! 7:publish
//! 4:live
//! 4:cam1
//! 10:1700000000
//! 10:1700003600
//! ```
//!
//! (key id, action, app, stream, not-before and expiry in Unix seconds). Length prefixes make
//! the string unambiguous whatever bytes a name holds: no field can be shifted into another.
//!
//! This module owns minting ([`Keyring::sign`]) and checking ([`Keyring::verify`]) with a
//! [`Keyring`] of keys in three states, for rotation without downtime: `active` keys sign and
//! verify, `verify`-only keys still verify what they signed before a rotation, `retired` keys
//! are refused by name (a clear reason in the log instead of "unknown key").
//!
//! # Tricky parts
//! - **Sans-IO.** The caller passes `now` (Unix seconds); nothing here reads a clock.
//! - **Order of checks.** The key id is read before the signature is checked (it picks the
//!   secret), but no other claim is believed until the signature matches, so a forged token is
//!   refused as forged whatever its claims say. The MAC is compared in constant time
//!   ([`Mac::verify_slice`]).
//! - **Canonical only.** A payload that decodes but is not exactly what [`Claims::canonical`]
//!   writes (leading zeros, trailing bytes) is refused before any key is looked up.
//! - **Clock skew.** Nodes and the service minting tokens disagree a little about the time:
//!   not-before and expiry are both widened by the caller's skew allowance.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The version this module writes and reads.
pub const VERSION: &str = "v1";
/// The longest token accepted, in characters (longer input is refused before decoding).
pub const MAX_TOKEN_LEN: usize = 2048;
/// The longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;
/// The shortest secret a key may have, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// HMAC-SHA256's output length.
const TAG_LEN: usize = 32;

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Publish the stream.
    Publish,
    /// Play the stream.
    Play,
    /// Pull the stream from another node (node-to-node).
    Pull,
}

impl Action {
    /// The name used in the canonical string, the CLI and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
            Action::Pull => "pull",
        }
    }

    /// The action named `name`, if any.
    pub fn from_name(name: &str) -> Option<Action> {
        match name {
            "publish" => Some(Action::Publish),
            "play" => Some(Action::Play),
            "pull" => Some(Action::Pull),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Which key signed it.
    pub key_id: String,
    /// What it allows.
    pub action: Action,
    /// The application (`live`).
    pub app: String,
    /// The stream name, without query string.
    pub stream: String,
    /// Not valid before this Unix second.
    pub not_before: u64,
    /// Not valid from this Unix second on.
    pub expires: u64,
}

impl Claims {
    /// The exact bytes that are signed (see the module doc).
    pub fn canonical(&self) -> String {
        let mut out = String::from(VERSION);
        for field in [
            self.key_id.as_str(),
            self.action.as_str(),
            &self.app,
            &self.stream,
            &self.not_before.to_string(),
            &self.expires.to_string(),
        ] {
            out.push('\n');
            out.push_str(&field.len().to_string());
            out.push(':');
            out.push_str(field);
        }
        out
    }

    /// Reads a canonical string back; `None` unless it is exactly canonical.
    fn parse(bytes: &[u8]) -> Option<Claims> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut rest = text.strip_prefix(VERSION)?;
        let mut fields = Vec::with_capacity(6);
        for _ in 0..6 {
            rest = rest.strip_prefix('\n')?;
            let (len, after) = rest.split_once(':')?;
            let len: usize = len.parse().ok()?;
            let field = after.get(..len)?;
            rest = &after[len..];
            fields.push(field);
        }
        let claims = Claims {
            key_id: fields[0].to_owned(),
            action: Action::from_name(fields[1])?,
            app: fields[2].to_owned(),
            stream: fields[3].to_owned(),
            not_before: fields[4].parse().ok()?,
            expires: fields[5].parse().ok()?,
        };
        // Leading zeros, a `+` sign, trailing bytes: anything but the one spelling is refused.
        (rest.is_empty() && claims.canonical() == text).then_some(claims)
    }
}

/// Where a key is in its rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyState {
    /// Signs new tokens and verifies.
    Active,
    /// Verifies tokens signed before a rotation; signs nothing.
    VerifyOnly,
    /// Refused: tokens it signed no longer work.
    Retired,
}

/// One key of a [`Keyring`]. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Key {
    id: String,
    /// HMAC keyed once with the secret: each use clones it rather than hashing the key's
    /// pads again (a third of a verification's hashing).
    mac: HmacSha256,
    /// Kept for the length check only.
    secret_len: usize,
    state: KeyState,
}

impl Key {
    /// A key; see [`Keyring::new`] for what is checked.
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>, state: KeyState) -> Key {
        let secret = secret.into();
        Key {
            id: id.into(),
            mac: HmacSha256::new_from_slice(&secret).expect("HMAC takes keys of any length"),
            secret_len: secret.len(),
            state,
        }
    }

    /// The key id tokens name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the key is in its rotation.
    pub fn state(&self) -> KeyState {
        self.state
    }

    fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("state", &self.state)
            .finish()
    }
}

/// Why a keyring cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// A key id that is empty, too long, or has characters other than `A-Z a-z 0-9 _ -`.
    #[error("key id {0:?} must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -")]
    BadKeyId(String),
    /// Two keys with one id.
    #[error("key id {0:?} is used twice")]
    DuplicateKeyId(String),
    /// A secret shorter than [`MIN_SECRET_LEN`] (retired keys need none).
    #[error("key {0:?}: the secret must be at least 16 bytes")]
    ShortSecret(String),
}

/// The keys a node signs and verifies tokens with.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

/// What a token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The action asked for.
    pub action: Action,
    /// The application asked for.
    pub app: &'a str,
    /// The stream asked for (without query string).
    pub stream: &'a str,
    /// The current Unix time, seconds.
    pub now: u64,
    /// How far clocks may disagree, seconds.
    pub skew_secs: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token: bad base64, no signature, not canonical, too long.
    #[error("malformed token")]
    Malformed,
    /// The key id is not in the keyring.
    #[error("unknown key id")]
    UnknownKeyId,
    /// The key id names a retired key.
    #[error("signed by a retired key")]
    RetiredKey,
    /// The signature does not match: forged, or signed with another secret.
    #[error("bad signature")]
    BadSignature,
    /// Signed for another action.
    #[error("token is for another action")]
    WrongAction,
    /// Signed for another app or stream.
    #[error("token is for another stream")]
    WrongStream,
    /// Not valid yet.
    #[error("token not yet valid")]
    NotYetValid,
    /// Expired.
    #[error("token expired")]
    Expired,
}

impl TokenError {
    /// A short static label (logs, metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenError::Malformed => "bad_token",
            TokenError::UnknownKeyId => "unknown_key_id",
            TokenError::RetiredKey => "retired_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongAction => "wrong_action",
            TokenError::WrongStream => "wrong_stream",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Expired => "expired",
        }
    }
}

impl Keyring {
    /// A keyring of `keys`: ids unique and URL-safe, secrets of active and verify-only keys
    /// at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(keys: Vec<Key>) -> Result<Keyring, KeyringError> {
        for (i, key) in keys.iter().enumerate() {
            let id_ok = !key.id.is_empty()
                && key.id.len() <= MAX_KEY_ID_LEN
                && key
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(KeyringError::BadKeyId(key.id.clone()));
            }
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(KeyringError::DuplicateKeyId(key.id.clone()));
            }
            if key.state != KeyState::Retired && key.secret_len < MIN_SECRET_LEN {
                return Err(KeyringError::ShortSecret(key.id.clone()));
            }
        }
        Ok(Keyring { keys })
    }

    /// True when the keyring has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that signs: `id` when given (it must not be retired), else the first active.
    pub fn signing_key(&self, id: Option<&str>) -> Option<&Key> {
        match id {
            Some(id) => self
                .keys
                .iter()
                .find(|k| k.id == id && k.state != KeyState::Retired),
            None => self.keys.iter().find(|k| k.state == KeyState::Active),
        }
    }

    /// Mints a token for `claims` with the key `claims.key_id` names; `None` when the keyring
    /// has no such usable key.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let key = self.signing_key(Some(&claims.key_id))?;
        Some(sign_with(key, claims))
    }

    /// Checks `token` against `expected`; the claims when it allows exactly that.
    pub fn verify(&self, token: &str, expected: &Expected<'_>) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        if tag.len() != TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let claims = Claims::parse(&payload).ok_or(TokenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == claims.key_id)
            .ok_or(TokenError::UnknownKeyId)?;
        if key.state == KeyState::Retired {
            return Err(TokenError::RetiredKey);
        }
        let mut mac = key.mac();
        mac.update(&payload);
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        check_claims(&claims, expected)?;
        Ok(claims)
    }
}

fn sign_with(key: &Key, claims: &Claims) -> String {
    let canonical = claims.canonical();
    let mut mac = key.mac();
    mac.update(canonical.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(canonical),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The checks a genuine token must still pass: action, stream, validity window.
fn check_claims(claims: &Claims, expected: &Expected<'_>) -> Result<(), TokenError> {
    if claims.action != expected.action {
        return Err(TokenError::WrongAction);
    }
    if claims.app != expected.app || claims.stream != expected.stream {
        return Err(TokenError::WrongStream);
    }
    if expected.now.saturating_add(expected.skew_secs) < claims.not_before {
        return Err(TokenError::NotYetValid);
    }
    if expected.now >= claims.expires.saturating_add(expected.skew_secs) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// The token in a URL query string (`a=1&token=…`), if there is one. The value is taken as
/// is: tokens are URL-safe and need no decoding.
pub fn from_query(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn keyring() -> Keyring {
        Keyring::new(vec![
            Key::new("k2", *b"the new secret, 32 bytes long..!", KeyState::Active),
            Key::new(
                "k1",
                *b"the old secret, 32 bytes long..!",
                KeyState::VerifyOnly,
            ),
            Key::new("k0", Vec::new(), KeyState::Retired),
        ])
        .unwrap()
    }

    fn claims(key_id: &str) -> Claims {
        Claims {
            key_id: key_id.to_owned(),
            action: Action::Publish,
            app: "live".to_owned(),
            stream: "cam1".to_owned(),
            not_before: NOW - 10,
            expires: NOW + 3600,
        }
    }

    fn expected(now: u64) -> Expected<'static> {
        Expected {
            action: Action::Publish,
            app: "live",
            stream: "cam1",
            now,
            skew_secs: 30,
        }
    }

    #[test]
    fn canonical_string_is_length_prefixed() {
        assert_eq!(
            claims("k1").canonical(),
            "v1\n2:k1\n7:publish\n4:live\n4:cam1\n10:1699999990\n10:1700003600"
        );
    }

    #[test]
    fn a_signed_token_verifies_and_returns_its_claims() {
        let ring = keyring();
        let token = ring.sign(&claims("k2")).unwrap();
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(ring.verify(&token, &expected(NOW)), Ok(claims("k2")));
    }

    #[test]
    fn a_verify_only_key_verifies_but_does_not_sign_by_default() {
        let ring = keyring();
        assert_eq!(ring.signing_key(None).unwrap().id(), "k2");
        let old = ring.sign(&claims("k1")).unwrap();
        assert!(ring.verify(&old, &expected(NOW)).is_ok());
    }

    #[test]
    fn a_retired_key_is_refused_by_name() {
        let before = Keyring::new(vec![Key::new(
            "k0",
            *b"a secret that was retired later.",
            KeyState::Active,
        )])
        .unwrap();
        let token = before.sign(&claims("k0")).unwrap();
        assert_eq!(
            keyring().verify(&token, &expected(NOW)),
            Err(TokenError::RetiredKey)
        );
        assert_eq!(keyring().sign(&claims("k0")), None);
    }

    #[test]
    fn an_unknown_key_id_is_refused() {
        let other = Keyring::new(vec![Key::new("k9", [7u8; 32], KeyState::Active)]).unwrap();
        let token = other.sign(&claims("k9")).unwrap();
        assert_eq!(
            keyring().verify(&token, &expected(NOW)),
            Err(TokenError::UnknownKeyId)
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_is_forged() {
        let other = Keyring::new(vec![Key::new("k2", [7u8; 32], KeyState::Active)]).unwrap();
        let token = other.sign(&claims("k2")).unwrap();
        assert_eq!(
            keyring().verify(&token, &expected(NOW)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn validity_window_allows_the_skew_and_no_more() {
        let ring = keyring();
        let token = ring.sign(&claims("k2")).unwrap();
        let nbf = NOW - 10;
        let exp = NOW + 3600;
        assert!(ring.verify(&token, &expected(nbf - 30)).is_ok());
        assert_eq!(
            ring.verify(&token, &expected(nbf - 31)),
            Err(TokenError::NotYetValid)
        );
        assert!(ring.verify(&token, &expected(exp + 29)).is_ok());
        assert_eq!(
            ring.verify(&token, &expected(exp + 30)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn swapped_action_or_stream_is_refused() {
        let ring = keyring();
        let token = ring.sign(&claims("k2")).unwrap();
        let play = Expected {
            action: Action::Play,
            ..expected(NOW)
        };
        assert_eq!(ring.verify(&token, &play), Err(TokenError::WrongAction));
        let other_stream = Expected {
            stream: "cam2",
            ..expected(NOW)
        };
        assert_eq!(
            ring.verify(&token, &other_stream),
            Err(TokenError::WrongStream)
        );
        let other_app = Expected {
            app: "other",
            ..expected(NOW)
        };
        assert_eq!(
            ring.verify(&token, &other_app),
            Err(TokenError::WrongStream)
        );
    }

    #[test]
    fn a_non_canonical_payload_is_malformed_even_when_signed() {
        // Leading zero on a length: signed with the real key, still refused.
        let ring = keyring();
        let text = "v1\n02:k2\n7:publish\n4:live\n4:cam1\n10:1699999990\n10:1700003600";
        let mut mac = ring.signing_key(None).unwrap().mac();
        mac.update(text.as_bytes());
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(text),
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(
            ring.verify(&token, &expected(NOW)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn keyring_refuses_bad_ids_duplicates_and_short_secrets() {
        let key = |id: &str, secret: &[u8]| Key::new(id, secret, KeyState::Active);
        assert!(matches!(
            Keyring::new(vec![key("a b", &[1; 32])]),
            Err(KeyringError::BadKeyId(_))
        ));
        assert!(matches!(
            Keyring::new(vec![key("a", &[1; 32]), key("a", &[2; 32])]),
            Err(KeyringError::DuplicateKeyId(_))
        ));
        assert!(matches!(
            Keyring::new(vec![key("a", b"short")]),
            Err(KeyringError::ShortSecret(_))
        ));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let shown = format!("{:?}", keyring());
        assert!(!shown.contains("secret, 32"), "{shown}");
    }

    #[test]
    fn the_token_is_found_in_a_query() {
        assert_eq!(from_query("token=abc"), Some("abc"));
        assert_eq!(from_query("a=1&token=abc&b=2"), Some("abc"));
        assert_eq!(from_query("a=1&xtoken=abc"), None);
        assert_eq!(from_query("token="), None);
    }

    fn arb_claims() -> impl Strategy<Value = Claims> {
        (
            "[A-Za-z0-9_-]{1,8}",
            prop::sample::select(vec![Action::Publish, Action::Play, Action::Pull]),
            "\\PC{0,12}",
            "\\PC{0,12}",
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(key_id, action, app, stream, not_before, expires)| Claims {
                    key_id,
                    action,
                    app,
                    stream,
                    not_before,
                    expires,
                },
            )
    }

    /// Each claim changed on its own, with the rest as signed.
    fn mutate(claims: &Claims, field: usize) -> Claims {
        let mut c = claims.clone();
        match field {
            0 => c.key_id.push('x'),
            1 => {
                c.action = match c.action {
                    Action::Publish => Action::Play,
                    _ => Action::Publish,
                }
            }
            2 => c.app.push('x'),
            3 => c.stream.push('x'),
            4 => c.not_before = c.not_before.wrapping_add(1),
            _ => c.expires = c.expires.wrapping_add(1),
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn canonical_round_trips(claims in arb_claims()) {
            prop_assert_eq!(Claims::parse(claims.canonical().as_bytes()), Some(claims));
        }

        #[test]
        fn any_single_claim_changed_under_the_old_signature_is_refused(
            claims in arb_claims(),
            field in 0usize..6,
        ) {
            let ring = Keyring::new(vec![
                Key::new(claims.key_id.clone(), [3u8; 32], KeyState::Active),
                Key::new(format!("{}x", claims.key_id), [3u8; 32], KeyState::Active),
            ]).unwrap();
            let token = ring.sign(&claims).unwrap();
            let (_, tag) = token.split_once('.').unwrap();
            let changed = mutate(&claims, field);
            let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(changed.canonical()));
            let expected = Expected {
                action: changed.action,
                app: &changed.app,
                stream: &changed.stream,
                now: changed.not_before,
                skew_secs: 0,
            };
            prop_assert_eq!(ring.verify(&forged, &expected), Err(TokenError::BadSignature));
        }

        #[test]
        fn random_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = keyring().verify(&text, &expected(NOW));
            let b64 = URL_SAFE_NO_PAD.encode(&bytes);
            let _ = keyring().verify(&format!("{b64}.{b64}"), &expected(NOW));
            let _ = Claims::parse(&bytes);
        }
    }
}
