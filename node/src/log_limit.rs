//! Log lines limited per kind: each callsite (one `info!`/`warn!`/… in the source) may write
//! `limit` lines per interval; the rest are counted, and the callsite's next line after the
//! interval is preceded by one "suppressed K similar lines" line in the same format.
//!
//! Why: a flood of refused connections or bad commands writes one line each; unlimited, one
//! client grew the log by 168 MB (issue 13). A kind is the callsite, not the message text,
//! so lines that differ only in an address or a name are still one kind, and one noisy kind
//! does not silence the others.
//!
//! Only `error`, `warn` and `info` lines are limited: `debug` and `trace` are off unless an
//! operator turns them on to see every line (per frame, per request), and they get them.
//!
//! [`CallsiteWindow`] is the sans-IO counting; [`RateLimited`] wraps the formatting layer and
//! applies it. The summary is written when the callsite logs again (no timer thread): a flood
//! that stops leaves its count for the next line of that kind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::display;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// What [`CallsiteWindow::admit`] decided for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write the line; first write a summary when `suppressed` > 0.
    Write {
        /// Lines of this kind dropped since the last one written.
        suppressed: u64,
    },
    /// Drop the line (it is counted).
    Drop,
}

/// One callsite's interval: how many lines it wrote and dropped since the interval began.
#[derive(Debug, Clone, Copy)]
pub struct CallsiteWindow {
    started: Instant,
    written: u32,
    suppressed: u64,
}

impl CallsiteWindow {
    /// A window starting at `now`.
    pub fn new(now: Instant) -> CallsiteWindow {
        CallsiteWindow {
            started: now,
            written: 0,
            suppressed: 0,
        }
    }

    /// Decides for a line at `now`, with `limit` lines allowed per `interval`.
    pub fn admit(&mut self, now: Instant, limit: u32, interval: Duration) -> Admit {
        if now.saturating_duration_since(self.started) >= interval {
            self.started = now;
            self.written = 0;
        }
        if self.written >= limit {
            self.suppressed += 1;
            return Admit::Drop;
        }
        self.written += 1;
        Admit::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

/// A layer that passes at most `limit` events per callsite per `interval` to `inner`.
pub struct RateLimited<L> {
    inner: L,
    limit: u32,
    interval: Duration,
    windows: Mutex<HashMap<Identifier, CallsiteWindow>>,
}

impl<L> RateLimited<L> {
    /// Wraps `inner`; `limit` 0 passes everything.
    pub fn new(inner: L, limit: u32, interval: Duration) -> RateLimited<L> {
        RateLimited {
            inner,
            limit,
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn admit(&self, metadata: &'static Metadata<'static>) -> Admit {
        if self.limit == 0 || *metadata.level() > Level::INFO {
            return Admit::Write { suppressed: 0 };
        }
        let now = Instant::now();
        // A poisoned lock only means a panic elsewhere while counting: the counts are still
        // usable.
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        windows
            .entry(metadata.callsite())
            .or_insert_with(|| CallsiteWindow::new(now))
            .admit(now, self.limit, self.interval)
    }
}

impl<S: Subscriber, L: Layer<S>> Layer<S> for RateLimited<L> {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let Admit::Write { suppressed } = self.admit(metadata) else {
            return;
        };
        if suppressed > 0 {
            // The summary goes straight to the inner layer with the callsite's own metadata
            // (level, target, location): dispatching a new event from here would be dropped,
            // since tracing does not re-enter a subscriber that is handling an event.
            let fields = metadata.fields();
            if let Some(message) = fields.field("message") {
                // The callsite's name says which line it was ("event src/file.rs:NN").
                let text = display(format!(
                    "suppressed {suppressed} similar lines ({})",
                    metadata.name()
                ));
                let values = [(&message, Some(&text as &dyn tracing::Value))];
                let set = fields.value_set(&values);
                self.inner
                    .on_event(&Event::new(metadata, &set), ctx.clone());
            }
        }
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::Arc;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_window_admits_its_limit_then_counts_until_the_next_interval() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut window = CallsiteWindow::new(start);
        for _ in 0..3 {
            assert_eq!(
                window.admit(start, 3, second),
                Admit::Write { suppressed: 0 }
            );
        }
        for _ in 0..1000 {
            assert_eq!(
                window.admit(start + Duration::from_millis(999), 3, second),
                Admit::Drop
            );
        }
        let next = start + second;
        assert_eq!(
            window.admit(next, 3, second),
            Admit::Write { suppressed: 1000 }
        );
        assert_eq!(
            window.admit(next, 3, second),
            Admit::Write { suppressed: 0 }
        );
    }

    #[test]
    fn a_zero_limit_drops_everything_in_the_window() {
        let start = Instant::now();
        let mut window = CallsiteWindow::new(start);
        assert_eq!(window.admit(start, 0, Duration::from_secs(1)), Admit::Drop);
    }

    /// Collects what the fmt layer writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lines")).into_owned()
        }
    }

    fn noisy(i: u32) {
        tracing::warn!(conn = i, "refused: too many connections");
    }

    fn quiet() {
        tracing::info!("something else");
    }

    #[test]
    fn a_flood_from_one_callsite_is_cut_and_summarised_and_others_pass() {
        let lines = Lines::default();
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(lines.clone())
            .with_ansi(false);
        let interval = Duration::from_secs(1);
        let subscriber = tracing_subscriber::registry().with(RateLimited::new(fmt, 5, interval));
        tracing::subscriber::with_default(subscriber, || {
            let start = Instant::now();
            for i in 0..1000 {
                noisy(i);
            }
            quiet();
            // The summary comes with the callsite's first line of a later interval.
            std::thread::sleep(interval.saturating_sub(start.elapsed()));
            noisy(1000);
        });
        let text = lines.text();
        let refused = text.matches("refused: too many connections").count();
        // If the loop outlasted the interval, a second window let a few more through.
        assert!((6..=11).contains(&refused), "{refused} lines:\n{text}");
        assert_eq!(text.matches("something else").count(), 1, "{text}");
        let summary = text
            .lines()
            .find(|l| l.contains("similar lines"))
            .expect("a summary line");
        assert!(summary.contains("WARN"), "{summary}");
        let suppressed: u64 = summary
            .split_whitespace()
            .skip_while(|w| *w != "suppressed")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("a count");
        assert!(suppressed >= 989, "{summary}");
        assert!(text.lines().last().is_some_and(|l| l.contains("conn=1000")));
    }

    #[test]
    fn debug_lines_are_not_limited() {
        let lines = Lines::default();
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(lines.clone())
            .with_ansi(false);
        let subscriber =
            tracing_subscriber::registry().with(RateLimited::new(fmt, 5, Duration::from_secs(60)));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                tracing::debug!(i, "per frame");
            }
        });
        assert_eq!(lines.text().matches("per frame").count(), 100);
    }

    #[test]
    fn a_zero_limit_passes_everything() {
        let lines = Lines::default();
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(lines.clone())
            .with_ansi(false);
        let subscriber =
            tracing_subscriber::registry().with(RateLimited::new(fmt, 0, Duration::from_secs(1)));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                noisy(i);
            }
        });
        assert_eq!(
            lines
                .text()
                .matches("refused: too many connections")
                .count(),
            100
        );
    }
}
