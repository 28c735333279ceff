//! One reader thread of HTTP players (plain HLS or HTTP-FLV): an epoll loop (mio) over its
//! share of the players, like [`crate::reactor`]'s for RTMP, plus a per-thread timer heap for
//! the HLS viewers' playlist reloads, which drives `epoll_wait`'s timeout.
//!
//! Each player is one keep-alive connection, a [`ResponseDecoder`] and either an
//! [`HlsViewer`] (which says what to GET next and when) or an [`FlvWalker`]. Reads go into
//! the thread's one scratch buffer; body slices are walked (FLV), collected (HLS playlists
//! only) or just counted (HLS segments), so no media byte is copied.
//!
//! # What is counted
//! - **HLS:** the body bytes of every response from the first segment's on (segments, later
//!   playlists, a changed init segment); not the set-up playlist or the first init segment,
//!   not heads or chunk framing. A player's "key frame" is the first segment's 200 head:
//!   plain HLS segments start with one.
//! - **FLV:** the body bytes after the first video key frame tag's data ([`crate::flv`]), as
//!   the RTMP mode counts after its first key frame; chunk framing is not counted.
//!
//! # Tricky parts
//! - **Reads stop at a short read** (see [`crate::reactor`]): one `read` per wake-up.
//! - **Stale timers:** a player that failed leaves its timer in the heap; a timer only fires
//!   for a player still there whose viewer is waiting.
//! - **Deadlines:** a player must get its first segment (HLS) or key frame (FLV) within the
//!   set-up limit; a thread whose players all failed returns early.
//! - **One connection for the whole run:** a server that closes it (`Connection: close`, an
//!   idle timeout) fails the player (`closed_by_server`) rather than being reconnected: the
//!   servers under test keep HLS connections open, and a reconnect would be a cost to count.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::flv::FlvWalker;
use crate::hls::{Action, Fetch, HlsViewer};
use crate::http::{self, Part, ResponseDecoder};
use crate::reactor::{connect_due, connect_time, io_label, read, ThreadPlan, HOUSEKEEPING};
use crate::summary::PlayerRecord;
use crate::url::HttpTarget;

/// Longest playlist accepted.
const MAX_PLAYLIST: usize = 1024 * 1024;

/// What the HTTP players of a run read.
#[derive(Debug, Clone)]
pub struct HttpPlayers {
    /// The server and path.
    pub target: HttpTarget,
    /// A plain HLS playlist (`true`) or an FLV stream.
    pub hls: bool,
}

/// How a player reads its responses.
enum Reading {
    Hls(Box<HlsViewer>),
    Flv(FlvWalker),
}

/// A player's socket and state.
struct Player {
    socket: TcpStream,
    connected: bool,
    decoder: ResponseDecoder,
    reading: Reading,
    /// The request not yet written (a suffix of it, once partly written).
    out: Vec<u8>,
    /// The current response's status.
    status: u16,
    /// The playlist being received.
    body: Vec<u8>,
    /// HLS: counting body bytes (from the first segment's request on).
    counting: bool,
    /// HLS: bytes counted.
    counted: u64,
    record: PlayerRecord,
    /// `host:port`, for the requests' `Host`.
    authority: Arc<str>,
}

/// A reload due for the player in `slot`.
type Timer = Reverse<(Instant, usize)>;

/// Runs the thread's players until `plan.end` (or until all of them failed); returns one record
/// per player, in `plan.players` order.
pub fn run(plan: &ThreadPlan<HttpPlayers>) -> io::Result<Vec<PlayerRecord>> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; plan.read_bytes.max(4096)];
    let mut players: Vec<Option<Player>> = Vec::with_capacity(plan.players.len());
    let mut records: Vec<Option<PlayerRecord>> = vec![None; plan.players.len()];
    let mut timers: BinaryHeap<Timer> = BinaryHeap::new();
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
            housekeeping(plan, &mut poll, &mut players, &mut records, now);
        }
        fire_timers(
            plan,
            &mut poll,
            &mut timers,
            &mut players,
            &mut records,
            now,
        );
        let all_started = players.len() == plan.players.len();
        if all_started && players.iter().all(Option::is_none) {
            break; // every player failed: nothing left to measure
        }
        let wake = if all_started {
            plan.end
        } else {
            connect_time(plan, players.len())
        };
        let timer = timers.peek().map_or(wake, |Reverse((at, _))| *at);
        let timeout = wake
            .min(next_housekeeping)
            .min(timer)
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
            match on_event(player, &mut scratch, plan.start) {
                Ok(Some(wait)) => timers.push(Reverse((Instant::now() + wait, slot))),
                Ok(None) => {}
                Err(label) => end(&mut poll, &mut players, &mut records, slot, label, plan),
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

/// Ends the player in `slot` with `label`.
fn end(
    poll: &mut Poll,
    players: &mut [Option<Player>],
    records: &mut [Option<PlayerRecord>],
    slot: usize,
    label: &'static str,
    plan: &ThreadPlan<HttpPlayers>,
) {
    if let Some(mut player) = players[slot].take() {
        let _ = poll.registry().deregister(&mut player.socket);
        records[slot] = Some(close(player, Some(label), plan.start));
    }
}

/// Ends a player (closing its socket), with `error` if it ended early; returns its record.
fn close(player: Player, error: Option<&'static str>, start: Instant) -> PlayerRecord {
    let mut record = player.record;
    let counted = match &player.reading {
        Reading::Hls(viewer) => {
            record.segments = viewer.segments;
            record.segments_skipped = viewer.skipped;
            player.counted
        }
        Reading::Flv(walker) => {
            record.tags = walker.tags;
            walker.counted
        }
    };
    record.finish(counted, start.elapsed());
    record.error = error;
    record
}

/// Starts the TCP connect of the `slot`-th player; its first request waits in `out`.
fn open(
    poll: &Poll,
    plan: &ThreadPlan<HttpPlayers>,
    slot: usize,
    now: Instant,
) -> io::Result<Player> {
    let mut socket = TcpStream::connect(plan.addr)?;
    socket.set_nodelay(true)?;
    poll.registry().register(
        &mut socket,
        Token(slot),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let target = &plan.target.target;
    let mut player = Player {
        socket,
        connected: false,
        decoder: ResponseDecoder::default(),
        reading: if plan.target.hls {
            Reading::Hls(Box::new(HlsViewer::new(&target.path)))
        } else {
            Reading::Flv(FlvWalker::default())
        },
        out: Vec::new(),
        status: 0,
        body: Vec::new(),
        counting: false,
        counted: 0,
        record: PlayerRecord::started(now.duration_since(plan.start)),
        authority: Arc::from(target.authority.as_str()),
    };
    let first = match &mut player.reading {
        Reading::Hls(viewer) => viewer.start(),
        Reading::Flv(_) => Action::Get(target.path.clone()),
    };
    // The first action is always a GET: nothing to wait for.
    let _ = act(&mut player, first);
    Ok(player)
}

/// Applies a viewer's action: queues a GET, or returns the wait before the reload.
fn act(player: &mut Player, action: Action) -> Option<Duration> {
    match action {
        Action::Get(path) => {
            if let Reading::Hls(viewer) = &player.reading {
                player.counting |= matches!(viewer.in_flight(), Some(Fetch::Segment(_)));
            }
            player.out = http::get(&player.authority, &path);
            player.record.requests += 1;
            None
        }
        Action::Wait(wait) => Some(wait),
    }
}

/// Sends the reloads that are due.
fn fire_timers(
    plan: &ThreadPlan<HttpPlayers>,
    poll: &mut Poll,
    timers: &mut BinaryHeap<Timer>,
    players: &mut [Option<Player>],
    records: &mut [Option<PlayerRecord>],
    now: Instant,
) {
    while let Some(&Reverse((at, slot))) = timers.peek() {
        if at > now {
            break;
        }
        timers.pop();
        let Some(player) = players.get_mut(slot).and_then(Option::as_mut) else {
            continue; // a player that failed since
        };
        let Reading::Hls(viewer) = &mut player.reading else {
            continue;
        };
        if viewer.in_flight().is_some() {
            continue; // not waiting
        }
        let action = viewer.reload();
        let _ = act(player, action);
        if let Err(label) = flush(player) {
            end(poll, players, records, slot, label, plan);
        }
    }
}

/// Set-up deadlines.
fn housekeeping(
    plan: &ThreadPlan<HttpPlayers>,
    poll: &mut Poll,
    players: &mut [Option<Player>],
    records: &mut [Option<PlayerRecord>],
    now: Instant,
) {
    for slot in 0..players.len() {
        let Some(player) = &players[slot] else {
            continue;
        };
        let since = plan.start + player.record.started;
        if player.record.keyframe_at.is_some() || now.duration_since(since) <= plan.setup_timeout {
            continue;
        }
        let label = match (player.connected, player.record.playing_at, plan.target.hls) {
            (false, ..) => "timeout_tcp",
            (true, None, true) => "timeout_playlist",
            (true, None, false) => "timeout_response",
            (true, Some(_), true) => "timeout_segment",
            (true, Some(_), false) => "timeout_keyframe",
        };
        end(poll, players, records, slot, label, plan);
    }
}

/// Handles one readiness event; returns a reload wait to schedule, or an error label that
/// ends the player.
fn on_event(
    player: &mut Player,
    scratch: &mut [u8],
    start: Instant,
) -> Result<Option<Duration>, &'static str> {
    if !player.connected {
        if let Ok(Some(e)) | Err(e) = player.socket.take_error() {
            return Err(io_label(&e));
        }
        match player.socket.peer_addr() {
            Ok(_) => player.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
            Err(e) => return Err(io_label(&e)),
        }
    }
    flush(player)?;
    let mut wait = None;
    loop {
        let n = read(&mut player.socket, scratch)?;
        if n > 0 {
            if let Some(w) = on_bytes(player, &scratch[..n], start)? {
                wait = Some(w);
            }
            flush(player)?;
        }
        if n < scratch.len() {
            return Ok(wait); // drained: see the module docs
        }
    }
}

/// Decodes the responses in `bytes`; returns a reload wait when the viewer asked for one.
fn on_bytes(
    player: &mut Player,
    mut bytes: &[u8],
    start: Instant,
) -> Result<Option<Duration>, &'static str> {
    let mut wait = None;
    while let Some(part) = player.decoder.next(&mut bytes).map_err(|e| e.as_str())? {
        match part {
            Part::Head(head) => on_head(player, head.status, start)?,
            Part::Body(body) => on_body(player, body, start)?,
            Part::End => {
                let Reading::Hls(viewer) = &mut player.reading else {
                    return Err("flv_ended");
                };
                let action = viewer
                    .on_response(player.status, &player.body)
                    .map_err(|e| e.as_str())?;
                player.body.clear();
                wait = act(player, action);
            }
        }
    }
    Ok(wait)
}

/// A response head arrived.
fn on_head(player: &mut Player, status: u16, start: Instant) -> Result<(), &'static str> {
    player.status = status;
    let now = Some(start.elapsed());
    match &player.reading {
        Reading::Flv(_) if status != 200 => return Err("http_status"),
        Reading::Flv(_) => player.record.playing_at = now,
        Reading::Hls(viewer) => match viewer.in_flight() {
            Some(Fetch::Playlist) if status == 200 && player.record.playing_at.is_none() => {
                player.record.playing_at = now;
            }
            Some(Fetch::Segment(_)) if status == 200 && player.record.keyframe_at.is_none() => {
                player.record.keyframe_at = now;
                player.record.setup_requests = player.record.requests;
            }
            _ => {}
        },
    }
    Ok(())
}

/// Body bytes arrived.
fn on_body(player: &mut Player, body: &[u8], start: Instant) -> Result<(), &'static str> {
    match &mut player.reading {
        Reading::Flv(walker) => {
            let keyed = walker.keyed();
            walker.feed(body).map_err(|e| e.as_str())?;
            if !keyed && walker.keyed() {
                player.record.keyframe_at = Some(start.elapsed());
                player.record.setup_requests = player.record.requests;
            }
        }
        Reading::Hls(viewer) => {
            if player.counting {
                player.counted += body.len() as u64;
            }
            if viewer.in_flight() == Some(Fetch::Playlist) {
                if player.body.len() + body.len() > MAX_PLAYLIST {
                    return Err("hls_playlist_too_long");
                }
                player.body.extend_from_slice(body);
            }
        }
    }
    Ok(())
}

/// Writes the pending request, as far as the socket takes it.
fn flush(player: &mut Player) -> Result<(), &'static str> {
    if !player.connected {
        return Ok(());
    }
    while !player.out.is_empty() {
        match player.socket.write(&player.out) {
            Ok(n) => {
                player.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_label(&e)),
        }
    }
    Ok(())
}
