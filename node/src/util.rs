//! Small helpers shared by the node's tasks: a timeout for any future, and peer strings made
//! safe to log.

use std::future::Future;
use std::time::Duration;

use futures_lite::future;

/// Runs `fut` for at most `limit`; None when the time ran out first.
pub async fn with_timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// How many characters of a peer's string a log line or an error shows.
const LOGGED_CHARS: usize = 64;

/// A peer-supplied string as a log line may show it: escaped (no forged lines, no terminal
/// codes) and cut to a few dozen characters, with its full length when it was cut.
pub fn loggable(value: &str) -> String {
    let mut shown: String = value
        .chars()
        .take(LOGGED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(LOGGED_CHARS).is_some() {
        shown.push_str(&format!("… ({} bytes)", value.len()));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggable_escapes_and_cuts_long_strings() {
        assert_eq!(loggable("live"), "live");
        assert_eq!(loggable("a\nb\u{1b}"), "a\\nb\\u{1b}");
        let long = "x".repeat(4 << 20);
        let shown = loggable(&long);
        assert!(shown.starts_with(&"x".repeat(64)));
        assert!(shown.ends_with("… (4194304 bytes)"), "{shown}");
        assert!(shown.len() < 100);
    }
}
