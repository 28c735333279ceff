//! `corecast-floor`: the least CPU a server could spend delivering a live stream.
//!
//! It prepares a synthetic ~2.5 Mbit/s stream (25 fps video with a keyframe every 2 s, AAC-like
//! audio) in its final RTMP chunked form once, opens N loopback TCP connections to itself, and
//! writes the same bytes to every connection in real time with `writev`, batching everything
//! due within the merge window into one call per socket. Only the writer threads' CPU time is
//! counted (reader threads stand in for players, which run elsewhere in a real benchmark). The
//! result, CPU-seconds per delivered GB, is what a server's own figure is divided by.

use std::io::{IoSlice, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use corecast_common::chunk::encode_shared;
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Write prepared RTMP bytes to N loopback sockets; report writer CPU per GB")]
struct Cli {
    /// Connections to feed.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Seconds to run (bounded: at most 600).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Merge window in milliseconds (0 = write each frame as it is due).
    #[arg(long, default_value_t = 0)]
    merge_window_ms: u64,
    /// Writer threads (one per core, as a server would).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Stream bitrate in kbit/s.
    #[arg(long, default_value_t = 2500)]
    kbps: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// One prepared frame: when it is due and its chunked bytes.
struct Frame {
    due_ms: u64,
    parts: Vec<Bytes>,
}

/// A deterministic synthetic stream of `seconds` at `kbps`.
fn prepare(seconds: u64, kbps: u64) -> Vec<Frame> {
    let mut frames = Vec::new();
    let video_bytes_per_sec = (kbps * 1000 / 8).saturating_sub(64_000 / 8);
    let per_gop = video_bytes_per_sec * 2;
    let key = (per_gop / 5) as usize;
    let inter = ((per_gop as usize - key) / 49).max(16);
    let mut seed = 0x1234_5678u32;
    for i in 0..seconds * 25 {
        let t = i * 40;
        let is_key = i % 50 == 0;
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let jitter = (seed >> 16) as usize % (inter / 4 + 1);
        let size = if is_key {
            key
        } else {
            inter - inter / 8 + jitter
        };
        let mut payload = vec![0u8; size.max(5)];
        payload[0] = if is_key { 0x17 } else { 0x27 };
        payload[1] = 1;
        frames.push(frame(t, MessageType::VIDEO, ChunkStreamId::VIDEO, payload));
    }
    for i in 0..seconds * 1000 / 23 {
        let mut payload = vec![0u8; 180];
        payload[0] = 0xAF;
        payload[1] = 1;
        frames.push(frame(
            i * 23,
            MessageType::AUDIO,
            ChunkStreamId::AUDIO,
            payload,
        ));
    }
    frames.sort_by_key(|f| f.due_ms);
    frames
}

fn frame(t: u64, message_type: MessageType, csid: ChunkStreamId, payload: Vec<u8>) -> Frame {
    let message = RtmpMessage {
        chunk_stream_id: csid,
        timestamp: t as u32,
        message_type,
        message_stream_id: MessageStreamId::MEDIA,
        payload: Bytes::from(payload),
    };
    let mut parts = Vec::new();
    encode_shared(&message, 60_000, &mut parts);
    Frame { due_ms: t, parts }
}

/// CPU seconds of the calling thread.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A socket being fed: how far into the frame list it is, and into the current frame.
struct Feed {
    stream: TcpStream,
    next: usize,
    offset: usize,
}

fn writev(fd: i32, slices: &[IoSlice<'_>]) -> isize {
    // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = slices.len().min(1024) as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }
}

/// Writes every frame due by `now_ms` to `feed`; returns bytes written.
fn feed_due(feed: &mut Feed, frames: &[Frame], now_ms: u64) -> u64 {
    let mut total = 0u64;
    loop {
        let mut slices = Vec::with_capacity(64);
        let mut skip = feed.offset;
        for f in frames[feed.next..]
            .iter()
            .take_while(|f| f.due_ms <= now_ms)
        {
            for p in &f.parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                slices.push(IoSlice::new(&p[skip..]));
                skip = 0;
            }
            if slices.len() >= 512 {
                break;
            }
        }
        if slices.is_empty() {
            return total;
        }
        let n = writev(feed.stream.as_raw_fd(), &slices);
        if n <= 0 {
            return total;
        }
        total += n as u64;
        let mut n = n as usize + feed.offset;
        while feed.next < frames.len() {
            let len: usize = frames[feed.next].parts.iter().map(Bytes::len).sum();
            if n >= len {
                n -= len;
                feed.next += 1;
            } else {
                break;
            }
        }
        feed.offset = n;
    }
}

/// Reads every socket until `stop`, sleeping in `epoll_wait` when none has data.
fn read_with_epoll(mut socks: Vec<TcpStream>, stop: &AtomicBool, received: &AtomicU64) {
    // SAFETY: plain epoll syscalls on descriptors this thread owns for its whole life; the
    // event array outlives each call.
    let epoll = unsafe { libc::epoll_create1(0) };
    if epoll < 0 {
        return;
    }
    for (i, s) in socks.iter().enumerate() {
        s.set_nonblocking(true).expect("nonblocking");
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut event) };
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while !stop.load(Ordering::Relaxed) {
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 100) };
        for event in events.iter().take(n.max(0) as usize) {
            let Some(s) = socks.get_mut(event.u64 as usize) else {
                continue;
            };
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    unsafe { libc::close(epoll) };
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let duration = cli.duration.clamp(1, 600);
    let frames = Arc::new(prepare(duration, cli.kbps));
    let listener = TcpListener::bind("127.0.0.1:0").context("bind loopback")?;
    let addr = listener.local_addr()?;
    let mut writers: Vec<Vec<Feed>> = (0..cli.threads.max(1)).map(|_| Vec::new()).collect();
    let mut readers = Vec::new();
    for i in 0..cli.connections {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        server.set_nonblocking(true)?;
        readers.push(client);
        let w = i % writers.len();
        writers[w].push(Feed {
            stream: server,
            next: 0,
            offset: 0,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    // Readers: drain every client socket, blocking in epoll as real players do (their CPU is
    // not counted, but waking a blocked reader is part of what every write costs the sender,
    // so busy-polling readers would flatter the floor).
    let reader_threads: Vec<_> = readers
        .chunks(readers.len().div_ceil(2).max(1))
        .map(|chunk| {
            let socks: Vec<TcpStream> = chunk
                .iter()
                .map(|s| s.try_clone().expect("clone socket"))
                .collect();
            let stop = Arc::clone(&stop);
            let received = Arc::clone(&received);
            std::thread::spawn(move || read_with_epoll(socks, &stop, &received))
        })
        .collect();
    let start = Instant::now();
    let window = cli.merge_window_ms.max(1);
    let writer_threads: Vec<_> = writers
        .into_iter()
        .map(|mut feeds| {
            let frames = Arc::clone(&frames);
            std::thread::spawn(move || {
                let mut written = 0u64;
                let cpu0 = thread_cpu_seconds();
                loop {
                    let now = start.elapsed().as_millis() as u64;
                    if now > duration * 1000 {
                        break;
                    }
                    for feed in &mut feeds {
                        written += feed_due(feed, &frames, now);
                    }
                    // Sleep until the next frame is due, or a whole merge window.
                    let next_due = frames
                        .get(frames.partition_point(|f| f.due_ms <= now))
                        .map_or(now + window, |f| f.due_ms);
                    let wake = if cli.merge_window_ms == 0 {
                        next_due
                    } else {
                        now + window
                    };
                    let wait = wake.saturating_sub(start.elapsed().as_millis() as u64);
                    std::thread::sleep(Duration::from_millis(wait));
                }
                (written, thread_cpu_seconds() - cpu0)
            })
        })
        .collect();
    let mut written = 0u64;
    let mut cpu = 0.0;
    for t in writer_threads {
        let (w, c) = t.join().map_err(|_| anyhow::anyhow!("writer panicked"))?;
        written += w;
        cpu += c;
    }
    stop.store(true, Ordering::Relaxed);
    for t in reader_threads {
        let _ = t.join();
    }
    let gb = written as f64 / 1e9;
    let per_gb = if gb > 0.0 { cpu / gb } else { 0.0 };
    let mbps = written as f64 * 8.0 / 1e6 / duration as f64;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "connections": cli.connections,
                "merge_window_ms": cli.merge_window_ms,
                "seconds": duration,
                "bytes_written": written,
                "writer_cpu_seconds": cpu,
                "cpu_seconds_per_gb": per_gb,
                "delivered_mbps": mbps,
            })
        );
    } else {
        println!(
            "floor: {} connections, window {} ms: {:.1} Mbit/s, writer CPU {:.2} s, {:.3} CPU-s/GB",
            cli.connections, cli.merge_window_ms, mbps, cpu, per_gb
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prepared_stream_has_the_asked_bitrate() {
        let frames = prepare(10, 2500);
        let bytes: usize = frames.iter().flat_map(|f| &f.parts).map(Bytes::len).sum();
        let kbps = bytes as f64 * 8.0 / 10.0 / 1000.0;
        assert!((2300.0..2700.0).contains(&kbps), "{kbps} kbit/s");
        assert!(frames.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
    }
}
