//! Play tokens signed the way `corecast token` signs them, for tests of the HTTP deliveries
//! that check them (HLS playlists, HTTP-FLV, the player page).

use corecast_common::token::{Action, Claims, Key, KeyState, Keyring};

/// A play token for `live/{stream}` signed with `secret` under key `k1`, valid from
/// `not_before` to `expires` (seconds from now; negative is in the past).
pub fn play_token_between(secret: &str, stream: &str, not_before: i64, expires: i64) -> String {
    let ring =
        Keyring::new(vec![Key::new("k1", secret.as_bytes(), KeyState::Active)]).expect("keyring");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    ring.sign(&Claims {
        key_id: "k1".to_owned(),
        action: Action::Play,
        app: "live".to_owned(),
        stream: stream.to_owned(),
        not_before: (now + not_before) as u64,
        expires: (now + expires) as u64,
    })
    .expect("signed")
}

/// A play token for `live/{stream}` valid from a minute ago for an hour.
pub fn play_token(secret: &str, stream: &str) -> String {
    play_token_between(secret, stream, -60, 3600)
}
