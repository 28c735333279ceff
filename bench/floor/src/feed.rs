//! The writers: one thread per core, each owning its players' sockets, and once per merge
//! window one `sendmsg` per player with every prepared slice that fell due since the last.
//! Nothing else happens on these threads: no reactor, no tasks, no queues, no wake-ups but
//! the window's timer. That is the floor.

use std::io::IoSlice;
use std::net::TcpStream;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use corecast_transport::socket::send_vectored;

use crate::stream::PreparedStream;

/// Most slices handed to one `sendmsg`, as Corecast's writer.
const MAX_SLICES: usize = 512;

/// One player being fed.
struct Feed {
    stream: TcpStream,
    /// What is left of the header (metadata, sequence headers).
    prefix: Vec<Bytes>,
    /// Next frame to write.
    next: usize,
    /// Bytes of that frame already written.
    offset: usize,
}

/// What one writer did.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterTotals {
    /// Bytes written to players.
    pub bytes: u64,
    /// CPU seconds of the writer thread.
    pub cpu_seconds: f64,
    /// Players it fed.
    pub players: u64,
}

/// Feeds the players that arrive on `joins` until `until` after `start`; `window` zero writes
/// every frame as it falls due.
pub fn run_writer(
    stream: &Arc<PreparedStream>,
    joins: &Receiver<TcpStream>,
    start: Instant,
    window: Duration,
    until: Duration,
) -> WriterTotals {
    let cpu0 = thread_cpu_seconds();
    let mut totals = WriterTotals::default();
    let mut feeds: Vec<Feed> = Vec::new();
    loop {
        let now = start.elapsed();
        if now >= until {
            break;
        }
        let now_ms = now.as_millis() as u64;
        while let Ok(socket) = joins.try_recv() {
            if socket.set_nonblocking(true).is_ok() {
                totals.players += 1;
                feeds.push(Feed {
                    stream: socket,
                    prefix: stream.header.clone(),
                    next: stream.join_index(now_ms),
                    offset: 0,
                });
            }
        }
        // A player whose socket failed (it hung up) is dropped; one that is merely full waits.
        feeds.retain_mut(|feed| match write_due(feed, stream, now_ms) {
            Ok(n) => {
                totals.bytes += n;
                true
            }
            Err(_) => false,
        });
        let next = if window.is_zero() {
            let due = stream.frames.partition_point(|f| f.due_ms <= now_ms);
            stream
                .frames
                .get(due)
                .map_or(now + Duration::from_millis(10), |f| {
                    Duration::from_millis(f.due_ms)
                })
        } else {
            let w = window.as_millis() as u64;
            Duration::from_millis((now_ms / w + 1) * w)
        };
        std::thread::sleep(next.min(until).saturating_sub(start.elapsed()));
    }
    totals.cpu_seconds = thread_cpu_seconds() - cpu0;
    totals
}

/// Writes everything due by `now_ms` that the socket takes; returns the bytes written.
fn write_due(feed: &mut Feed, stream: &PreparedStream, now_ms: u64) -> std::io::Result<u64> {
    let frames = &stream.frames;
    let mut total = 0u64;
    loop {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(64);
        slices.extend(feed.prefix.iter().map(|p| IoSlice::new(p)));
        let mut skip = feed.offset;
        'frames: for frame in frames[feed.next..]
            .iter()
            .take_while(|f| f.due_ms <= now_ms)
        {
            for part in &frame.parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices.push(IoSlice::new(&part[skip..]));
                skip = 0;
                if slices.len() >= MAX_SLICES {
                    break 'frames;
                }
            }
        }
        if slices.is_empty() {
            return Ok(total);
        }
        let written = match send_vectored(&feed.stream, &slices) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += written as u64;
        let mut n = written;
        while n > 0 {
            let Some(first) = feed.prefix.first_mut() else {
                break;
            };
            let take = n.min(first.len());
            first.advance(take);
            n -= take;
            if first.is_empty() {
                feed.prefix.remove(0);
            }
        }
        n += feed.offset;
        while let Some(frame) = frames.get(feed.next) {
            if n < frame.len {
                break;
            }
            n -= frame.len;
            feed.next += 1;
        }
        feed.offset = n;
    }
}

/// CPU seconds of the calling thread.
pub(crate) fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
