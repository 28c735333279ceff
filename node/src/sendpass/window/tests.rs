//! The tick pass against a socket pair on a real executor: a follower's appended frames wake
//! nobody and go out in one send per pass, byte for byte; a full socket wakes the writer for
//! what it left; a pushed player (its own queue) goes out by the pass too; any frame sizes
//! and any interleaving of passes and peer reads deliver the log's bytes in order (property).

use std::cell::Cell;
use std::io::Read;

use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::super::tests::{CountingWaker, Pair};
use super::super::{PassTarget, Registration, ZeroDelaySend};
use crate::frame::{FrameData, LocalFrame, MediaKind};
use crate::framelog::FrameLog;
use crate::outbound::Outbound;
use crate::queue::QueueLimits;

fn on_executor(f: impl FnOnce() + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(512 * 1024)
        .spawn(move || async move { f() })
        .expect("executor")
        .join()
        .expect("test body");
}

fn video(size: usize, fill: u8) -> LocalFrame {
    let mut payload = vec![fill; size.max(2)];
    payload[0] = 0x27;
    payload[1] = 1;
    LocalFrame::new(Arc::new(FrameData::encode(
        MediaKind::Video,
        0,
        Bytes::from(payload),
        4096,
    )))
}

fn wire(frame: &LocalFrame) -> Vec<u8> {
    frame.parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// A batching follower of `log` the tick writes, its writer parked on a counting waker.
struct Follower {
    out: Rc<Outbound>,
    _registration: Registration,
    theirs: UnixStream,
    writer: Arc<CountingWaker>,
    sends: Rc<Cell<usize>>,
}

fn follower(log: &Rc<FrameLog>) -> Follower {
    // A clock that never fires by itself: the test runs the passes.
    crate::tick::start(Duration::from_secs(3600));
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    theirs.set_nonblocking(true).expect("nonblocking");
    let out = Outbound::new(QueueLimits {
        soft_max_bytes: 8 << 20,
        hard_max_bytes: 16 << 20,
    });
    let sends = Rc::new(Cell::new(0));
    let counted = Rc::clone(&sends);
    let sent: Rc<dyn Fn(usize)> = Rc::new(move |_| counted.set(counted.get() + 1));
    let target = PassTarget::new(Rc::new(Pair(ours)), sent, ZeroDelaySend::Uring, None);
    let registration = Registration::windowed(&out, target);
    let writer = Arc::new(CountingWaker(AtomicUsize::new(0)));
    {
        let mut q = out.queue.borrow_mut();
        q.set_batching(true);
        assert!(q.follow(log));
        q.set_writer(&Waker::from(Arc::clone(&writer)));
    }
    Follower {
        out,
        _registration: registration,
        theirs,
        writer,
        sends,
    }
}

fn read_all(s: &mut UnixStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return got,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Passes (the peer reading between them) until `f`'s queue is written out; what it read.
fn drain(f: &mut Follower) -> Vec<u8> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        got.extend(read_all(&mut f.theirs));
        if f.out.queue.borrow().is_empty() {
            break;
        }
        super::pass();
    }
    got.extend(read_all(&mut f.theirs));
    got
}

#[test]
fn a_window_goes_out_in_one_send_and_wakes_no_writer() {
    on_executor(|| {
        let log = Rc::new(FrameLog::new());
        let mut f = follower(&log);
        let mut expected = Vec::new();
        for k in 0..5u8 {
            let frame = video(900 + usize::from(k) * 37, k);
            expected.extend(wire(&frame));
            log.append(frame);
        }
        assert_eq!(f.writer.wakes(), 0, "an append wakes nobody");
        super::pass();
        assert_eq!(f.sends.get(), 1, "one send for the window");
        assert_eq!(read_all(&mut f.theirs), expected);
        assert!(f.out.queue.borrow().is_empty());
        assert_eq!(f.writer.wakes(), 0, "all written: no wake");
        // Nothing queued: the next pass sends nothing.
        super::pass();
        assert_eq!(f.sends.get(), 1);
    });
}

#[test]
fn a_full_socket_wakes_the_writer_for_what_is_left() {
    on_executor(|| {
        let log = Rc::new(FrameLog::new());
        let mut f = follower(&log);
        let mut expected = Vec::new();
        // More than a socket pair's buffer takes at once.
        for k in 0..64u8 {
            let frame = video(16 * 1024, k);
            expected.extend(wire(&frame));
            log.append(frame);
        }
        super::pass();
        assert!(
            !f.out.queue.borrow().is_empty(),
            "the socket took only part"
        );
        assert_eq!(f.writer.wakes(), 1, "woken for the rest");
        // The writer would now wait for the socket; here later passes finish the job.
        assert_eq!(drain(&mut f), expected);
    });
}

#[test]
fn a_dropped_registration_leaves_the_pass() {
    on_executor(|| {
        let log = Rc::new(FrameLog::new());
        let f = follower(&log);
        assert!(super::any());
        drop(f);
        assert!(!super::any());
    });
}

/// A socket that records, when it is dropped (its descriptor closed), whether the tick's list
/// still held a player then.
struct Watched {
    stream: UnixStream,
    listed_at_close: Rc<Cell<Option<bool>>>,
}

impl super::super::RawSocket for Watched {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.stream.as_raw_fd()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Panics (failing the test) if the list is being changed right now, too.
        self.listed_at_close.set(Some(super::any()));
    }
}

/// The pass sends to a descriptor it asked for once: it must never outlive the player's
/// entry. The entry owns the socket, so the descriptor closes only once the entry left the
/// list, and a later pass cannot reach it (the kernel may give the number to another
/// connection).
#[test]
fn a_descriptor_closes_only_after_its_player_left_the_pass() {
    on_executor(|| {
        crate::tick::start(Duration::from_secs(3600));
        let log = Rc::new(FrameLog::new());
        let (ours, mut theirs) = UnixStream::pair().expect("socket pair");
        theirs.set_nonblocking(true).expect("nonblocking");
        let listed_at_close = Rc::new(Cell::new(None));
        let socket = Rc::new(Watched {
            stream: ours,
            listed_at_close: Rc::clone(&listed_at_close),
        });
        let out = Outbound::new(QueueLimits {
            soft_max_bytes: 8 << 20,
            hard_max_bytes: 16 << 20,
        });
        let sends = Rc::new(Cell::new(0));
        let counted = Rc::clone(&sends);
        let sent: Rc<dyn Fn(usize)> = Rc::new(move |_| counted.set(counted.get() + 1));
        let registration = Registration::windowed(
            &out,
            PassTarget::new(socket, sent, ZeroDelaySend::Uring, None),
        );
        assert!(out.queue.borrow_mut().follow(&log));
        let frame = video(1000, 1);
        let expected = wire(&frame);
        log.append(frame);
        super::pass();
        assert_eq!(read_all(&mut theirs), expected);
        assert_eq!(listed_at_close.get(), None, "open while registered");
        drop(registration);
        assert_eq!(
            listed_at_close.get(),
            Some(false),
            "closed, and only after it left the list"
        );
        log.append(video(1000, 2));
        super::pass();
        assert_eq!(sends.get(), 1, "no send after it left");
        assert!(read_all(&mut theirs).is_empty(), "the peer sees the close");
    });
}

/// A writer inside a write keeps its socket: the pass leaves that player alone and writes the
/// others, and writes it at the next pass once the writer is out.
#[test]
fn a_busy_writer_is_skipped_and_the_others_go_out() {
    on_executor(|| {
        let log = Rc::new(FrameLog::new());
        let mut players: Vec<Follower> = (0..3).map(|_| follower(&log)).collect();
        let frame = video(1500, 7);
        let expected = wire(&frame);
        log.append(frame);
        let busy = super::super::WriterBusy::enter(&players[1].out.queue);
        super::pass();
        for (k, f) in players.iter_mut().enumerate() {
            let got = read_all(&mut f.theirs);
            if k == 1 {
                assert!(got.is_empty(), "the busy player is skipped");
                assert!(!f.out.queue.borrow().is_empty());
            } else {
                assert_eq!(got, expected);
                assert_eq!(f.sends.get(), 1);
            }
            assert_eq!(f.writer.wakes(), 0, "nobody woken");
        }
        drop(busy);
        super::pass();
        assert_eq!(read_all(&mut players[1].theirs), expected);
        assert_eq!(players[0].sends.get(), 1, "nothing new for the others");
    });
}

/// A closed queue is not written: its writer (woken by the close) ends the connection.
#[test]
fn a_closed_queue_is_left_to_its_writer() {
    on_executor(|| {
        let log = Rc::new(FrameLog::new());
        let mut f = follower(&log);
        log.append(video(800, 3));
        f.out.queue.borrow_mut().close();
        super::pass();
        assert_eq!(f.sends.get(), 0);
        assert!(read_all(&mut f.theirs).is_empty());
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Frames of any size appended in any grouping, passes between the groups and the peer
    /// reading at any point: the peer gets the log's bytes, in order, none twice.
    #[test]
    fn any_windows_arrive_byte_for_byte(
        groups in proptest::collection::vec(
            (proptest::collection::vec(2usize..40_000, 0..6), any::<bool>()),
            1..12,
        )
    ) {
        on_executor(move || {
            let log = Rc::new(FrameLog::new());
            let mut f = follower(&log);
            let mut expected = Vec::new();
            let mut got = Vec::new();
            for (k, (sizes, read)) in groups.iter().enumerate() {
                for size in sizes {
                    let frame = video(*size, k as u8);
                    expected.extend(wire(&frame));
                    log.append(frame);
                }
                super::pass();
                if *read {
                    got.extend(read_all(&mut f.theirs));
                }
            }
            got.extend(drain(&mut f));
            assert_eq!(got, expected);
        });
    }
}

/// A pushed player (its own queue, not the log: slow, paused, single-track) is written by the
/// pass too, and its queued media wakes nobody before it.
#[test]
fn a_pushed_players_frames_go_out_by_the_pass() {
    on_executor(|| {
        let log = Rc::new(FrameLog::new());
        let mut f = follower(&log);
        f.out.queue.borrow_mut().leave_log();
        let mut expected = Vec::new();
        for k in 0..4u8 {
            let frame = video(1200, k);
            expected.extend(wire(&frame));
            let _ = f.out.queue.borrow_mut().push_frame(frame);
        }
        assert_eq!(f.writer.wakes(), 0, "queued media waits for the tick");
        super::pass();
        assert_eq!(f.sends.get(), 1);
        assert_eq!(read_all(&mut f.theirs), expected);
        assert_eq!(f.writer.wakes(), 0);
    });
}
