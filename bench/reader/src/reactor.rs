//! One reader thread: an epoll loop (mio) over its share of the players, from the TCP connect
//! to the end of the run.
//!
//! Each player is a non-blocking socket and a [`Session`]. Until the first key frame, reads
//! go into the player's own buffer and are decoded; from then on they go into the thread's one
//! large scratch buffer and are only counted, so a counting player costs a `read` per wake-up
//! and nothing per byte beyond the kernel's copy.
//!
//! # Tricky parts
//! - **Edge-triggered reads stop at a short read.** mio registers sockets edge-triggered, which
//!   normally means reading until `EAGAIN`. A `read` that returns less than the buffer took
//!   everything the socket held at that moment, and bytes that arrive after it raise a new
//!   edge, so the loop stops there and saves the `EAGAIN` call: one `read` per wake-up.
//! - **Writes are rare and small** (C0/C1/C2, three commands, acknowledgements). They are
//!   written at once; what the socket does not take waits for the next writable event.
//! - **Deadlines:** a player must be playing within the set-up limit, and the whole run ends
//!   at its end time. A thread whose players have all failed returns early, so a refused play
//!   ends the program quickly.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::session::{Phase, Session, KEEPALIVE};
use crate::summary::PlayerRecord;
use crate::url::Target;

/// How much a player's own buffer reads at a time before its key frame.
const SETUP_READ: usize = 64 * 1024;

/// How often the loop checks deadlines and keep-alives when no event wakes it.
pub const HOUSEKEEPING: Duration = Duration::from_millis(200);

/// What one thread runs; `T` says what to play ([`Target`] for RTMP).
#[derive(Debug, Clone)]
pub struct ThreadPlan<T> {
    /// The server.
    pub addr: SocketAddr,
    /// What to play.
    pub target: Arc<T>,
    /// The global indices of this thread's players, in connect order.
    pub players: Vec<usize>,
    /// Players connected per second, over all threads.
    pub ramp_per_sec: u32,
    /// When the run started (player `i` connects at `start + i / ramp`).
    pub start: Instant,
    /// When the run ends.
    pub end: Instant,
    /// Limit from the TCP connect to `Play.Start`.
    pub setup_timeout: Duration,
    /// Size of the scratch buffer counting reads go into.
    pub read_bytes: usize,
}

impl ThreadPlan<()> {
    /// This plan, playing `target`.
    pub fn with<T>(self, target: Arc<T>) -> ThreadPlan<T> {
        ThreadPlan {
            addr: self.addr,
            target,
            players: self.players,
            ramp_per_sec: self.ramp_per_sec,
            start: self.start,
            end: self.end,
            setup_timeout: self.setup_timeout,
            read_bytes: self.read_bytes,
        }
    }
}

/// A player's socket and state.
struct Player {
    socket: TcpStream,
    session: Session,
    /// Bytes read and not yet decoded (before the key frame only).
    buf: BytesMut,
    connected: bool,
    record: PlayerRecord,
    next_keepalive: Instant,
}

/// Runs the thread's players until `plan.end` (or until all of them failed); returns one record
/// per player, in `plan.players` order.
pub fn run(plan: &ThreadPlan<Target>) -> io::Result<Vec<PlayerRecord>> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; plan.read_bytes.max(4096)];
    let mut players: Vec<Option<Player>> = Vec::with_capacity(plan.players.len());
    let mut records: Vec<Option<PlayerRecord>> = vec![None; plan.players.len()];
    let mut next_housekeeping = Instant::now();
    loop {
        let now = Instant::now();
        if now >= plan.end {
            break;
        }
        connect_due(plan, &mut players, &mut records, now, |slot| {
            open(&poll, plan, slot, now)
        });
        if now >= next_housekeeping {
            next_housekeeping = now + HOUSEKEEPING;
            housekeeping(plan, &mut players, &mut records, now);
        }
        let all_started = players.len() == plan.players.len();
        if all_started && players.iter().all(Option::is_none) {
            break; // every player failed: nothing left to measure
        }
        let wake = if all_started {
            plan.end
        } else {
            connect_time(plan, players.len())
        };
        let timeout = wake
            .min(next_housekeeping)
            .saturating_duration_since(Instant::now());
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            let slot = event.token().0;
            let Some(player) = players.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if let Err(label) = on_event(player, &mut scratch, plan.start) {
                if let Some(mut player) = players[slot].take() {
                    let _ = poll.registry().deregister(&mut player.socket);
                    records[slot] = Some(close(player, Some(label), plan.start));
                }
            }
        }
    }
    for (slot, player) in players.into_iter().enumerate() {
        if let Some(player) = player {
            records[slot] = Some(close(player, None, plan.start));
        }
    }
    // Players never connected (the run ended first) count as failed.
    Ok(records
        .into_iter()
        .map(|r| r.unwrap_or_else(|| PlayerRecord::failed("not_started", plan.end - plan.start)))
        .collect())
}

/// Ends a player (closing its socket), with `error` if it ended early; returns its record.
fn close(player: Player, error: Option<&'static str>, start: Instant) -> PlayerRecord {
    let mut record = player.record;
    record.finish(player.session.counted(), start.elapsed());
    record.error = error;
    record
}

/// Starts the connects that are due by `now` (`open` starts the `slot`-th player's); a
/// connect that fails at once is recorded. Both loops' (RTMP here, HTTP in
/// [`crate::http_reactor`]).
pub fn connect_due<T, P>(
    plan: &ThreadPlan<T>,
    players: &mut Vec<Option<P>>,
    records: &mut [Option<PlayerRecord>],
    now: Instant,
    mut open: impl FnMut(usize) -> io::Result<P>,
) {
    while players.len() < plan.players.len() && now >= connect_time(plan, players.len()) {
        let slot = players.len();
        match open(slot) {
            Ok(player) => players.push(Some(player)),
            Err(e) => {
                let started = now.duration_since(plan.start);
                records[slot] = Some(PlayerRecord::failed(io_label(&e), started));
                players.push(None);
            }
        }
    }
}

/// When the thread's `slot`-th player connects.
pub fn connect_time<T>(plan: &ThreadPlan<T>, slot: usize) -> Instant {
    let index = plan.players.get(slot).copied().unwrap_or(0) as f64;
    plan.start + Duration::from_secs_f64(index / f64::from(plan.ramp_per_sec.max(1)))
}

/// Starts the TCP connect of the `slot`-th player.
fn open(poll: &Poll, plan: &ThreadPlan<Target>, slot: usize, now: Instant) -> io::Result<Player> {
    // C1/C2's random part: distinct per player, no need for more.
    let seed = (plan.players.get(slot).copied().unwrap_or(0) as u64) ^ 0x9E37_79B9_7F4A_7C15;
    let random = seed.to_le_bytes();
    let mut socket = TcpStream::connect(plan.addr)?;
    socket.set_nodelay(true)?;
    poll.registry().register(
        &mut socket,
        Token(slot),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(Player {
        socket,
        session: Session::new(Arc::clone(&plan.target), &random),
        buf: BytesMut::new(),
        connected: false,
        record: PlayerRecord::started(now.duration_since(plan.start)),
        next_keepalive: now + KEEPALIVE,
    })
}

/// Set-up deadlines and keep-alive acknowledgements.
fn housekeeping(
    plan: &ThreadPlan<Target>,
    players: &mut [Option<Player>],
    records: &mut [Option<PlayerRecord>],
    now: Instant,
) {
    for (slot, entry) in players.iter_mut().enumerate() {
        let Some(player) = entry else { continue };
        let phase = player.session.phase();
        let since = plan.start + player.record.started;
        let setting_up = !matches!(phase, Phase::Keyframe | Phase::Counting);
        let failure = if setting_up && now.duration_since(since) > plan.setup_timeout {
            Some(setup_timeout_label(phase, player.connected))
        } else if phase == Phase::Counting && now >= player.next_keepalive {
            player.next_keepalive = now + KEEPALIVE;
            player.session.keepalive();
            flush(player).err()
        } else {
            None
        };
        if let Some(label) = failure {
            if let Some(player) = entry.take() {
                records[slot] = Some(close(player, Some(label), plan.start));
            }
        }
    }
}

/// Handles one readiness event; an error label ends the player.
fn on_event(player: &mut Player, scratch: &mut [u8], start: Instant) -> Result<(), &'static str> {
    if !player.connected {
        if let Ok(Some(e)) | Err(e) = player.socket.take_error() {
            return Err(io_label(&e));
        }
        match player.socket.peer_addr() {
            Ok(_) => player.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(io_label(&e)),
        }
    }
    flush(player)?;
    loop {
        if player.session.phase() == Phase::Counting {
            let n = read(&mut player.socket, scratch)?;
            player.session.count(n);
            flush(player)?;
            if n < scratch.len() {
                return Ok(()); // drained: see the module docs
            }
            continue;
        }
        let at = player.buf.len();
        player.buf.resize(at + SETUP_READ, 0);
        let result = read(&mut player.socket, &mut player.buf[at..]);
        player.buf.truncate(at + *result.as_ref().unwrap_or(&0));
        let n = result?;
        let before = player.session.phase();
        player
            .session
            .handle_input(&mut player.buf)
            .map_err(|e| e.as_str())?;
        if before != Phase::Counting && player.session.phase() == Phase::Counting {
            player.record.keyframe_at = Some(start.elapsed());
            player.buf = BytesMut::new(); // counting needs no buffer of its own
        }
        if player.session.phase() >= Phase::Keyframe && player.record.playing_at.is_none() {
            player.record.playing_at = Some(start.elapsed());
        }
        flush(player)?;
        if n < SETUP_READ {
            return Ok(());
        }
    }
}

/// One `read`; `Ok(0)` means nothing more now (the socket would block), and the end of the
/// stream is an error.
pub fn read(socket: &mut TcpStream, into: &mut [u8]) -> Result<usize, &'static str> {
    loop {
        return match socket.read(into) {
            Ok(0) => Err("closed_by_server"),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(io_label(&e)),
        };
    }
}

/// Writes what the session queued, as far as the socket takes it.
fn flush(player: &mut Player) -> Result<(), &'static str> {
    if !player.connected {
        return Ok(());
    }
    let out = player.session.output();
    while !out.is_empty() {
        match player.socket.write(out) {
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_label(&e)),
        }
    }
    Ok(())
}

fn setup_timeout_label(phase: Phase, connected: bool) -> &'static str {
    match phase {
        _ if !connected => "timeout_tcp",
        Phase::Handshake => "timeout_handshake",
        Phase::Connect => "timeout_connect",
        Phase::CreateStream => "timeout_create_stream",
        _ => "timeout_play",
    }
}

/// A short label for a socket error.
pub fn io_label(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection_refused",
        io::ErrorKind::ConnectionReset => "connection_reset",
        io::ErrorKind::BrokenPipe => "broken_pipe",
        io::ErrorKind::TimedOut => "timeout_tcp",
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => "no_local_port",
        _ if e.raw_os_error() == Some(24) => "too_many_open_files",
        _ => "io_error",
    }
}
