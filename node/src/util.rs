//! Small helpers shared by the node's tasks: a timeout for any future, a sleep on a grid the
//! core's slow chores share, and peer strings made safe to log.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use glommio::timer::Timer;

/// Runs `fut` for at most `limit`; None when the time ran out first.
///
/// A hand-written future rather than an `async fn`: an `async fn` that awaits a future it
/// was given holds it twice (the argument and the awaited copy), and every connection task
/// holds a few of these, the handshake's among them.
pub fn with_timeout<F: Future>(limit: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        limit,
        timer: None,
    }
}

pin_project_lite::pin_project! {
    /// [`with_timeout`]'s future: the guarded future, and its timer once the future waits.
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        limit: Duration,
        timer: Option<Timer>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.fut.poll(cx) {
            return Poll::Ready(Some(output));
        }
        // The clock starts when the future first waits, as a timer awaited beside it would.
        let limit = *this.limit;
        let timer = this.timer.get_or_insert_with(|| Timer::new(limit));
        Pin::new(timer).poll(cx).map(|_fired| None)
    }
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

/// The instant every [`sleep_on_grid`] and every core's flush tick (`tick`) count from (one
/// per process), so chores and ticks whose periods divide one another fall due together.
pub static GRID_ORIGIN: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// Sleeps until the next whole multiple of `period` since one process-wide instant. Chores
/// of a core that sleep on the same grid (an unwatched publisher's reads, the housekeeping of
/// a core whose clock is parked: `session::pace`) have timers with equal deadlines, which
/// the executor fires in one wake-up instead of one each.
pub async fn sleep_on_grid(period: Duration) {
    let period_ns = period.as_nanos().max(1);
    let into = GRID_ORIGIN.elapsed().as_nanos() % period_ns;
    let left = u64::try_from(period_ns - into).unwrap_or(u64::MAX);
    glommio::timer::sleep(Duration::from_nanos(left)).await;
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
