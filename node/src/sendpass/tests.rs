//! The pass against a socket pair on a real executor: no writer wake where it wrote
//! everything, one send for the frames queued before it ran, a busy writer left alone; held
//! audio rides with the next video frame, or goes alone once it waited its bound, not before;
//! with the due bound, only audio whose video frame is due within it waits.

use std::future::Future;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::frame::{FrameData, LocalFrame};
use crate::queue::QueueLimits;

/// Counts its wakes: stands in for the writer task (the tick pass's tests use it too).
pub(super) struct CountingWaker(pub(super) AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    pub(super) fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// One end of a socket pair as the pass's socket.
pub(super) struct Pair(pub(super) UnixStream);

impl RawSocket for Pair {
    fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

fn on_executor<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(512 * 1024)
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("test body");
}

/// Lets the core's other tasks (the pass task) run.
async fn yield_now() {
    glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
}

fn video(size: usize) -> LocalFrame {
    let mut payload = vec![7u8; size];
    payload[0] = 0x17;
    payload[1] = 1;
    LocalFrame::new(Arc::new(FrameData::encode(
        MediaKind::Video,
        0,
        Bytes::from(payload),
        4096,
    )))
}

fn audio(size: usize) -> LocalFrame {
    let mut payload = vec![5u8; size];
    payload[0] = 0xAF;
    payload[1] = 1;
    LocalFrame::new(Arc::new(FrameData::encode(
        MediaKind::Audio,
        0,
        Bytes::from(payload),
        4096,
    )))
}

/// One registered player writing into a socket pair, its writer parked on a counting
/// waker; the sends the pass makes are counted.
struct One {
    players: Vec<Player>,
    _registration: Registration,
    theirs: UnixStream,
    writer: Arc<CountingWaker>,
    sends: Rc<Cell<usize>>,
}

fn player(mode: ZeroDelaySend) -> One {
    coalescing_player(mode, None)
}

fn coalescing_player(mode: ZeroDelaySend, coalesce: Option<Duration>) -> One {
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    theirs.set_nonblocking(true).expect("nonblocking");
    let out = Outbound::new(QueueLimits {
        soft_max_bytes: 8 << 20,
        hard_max_bytes: 16 << 20,
    });
    let writer = Arc::new(CountingWaker(AtomicUsize::new(0)));
    out.queue
        .borrow_mut()
        .set_writer(&Waker::from(Arc::clone(&writer)));
    let sends = Rc::new(Cell::new(0));
    let counted = Rc::clone(&sends);
    let sent: Rc<dyn Fn(usize)> = Rc::new(move |_| counted.set(counted.get() + 1));
    let target = PassTarget::new(Rc::new(Pair(ours)), sent, mode, coalesce);
    let registration = Registration::new(&out, target);
    let players = vec![Player {
        connection: 1,
        out,
        audio: true,
        video: true,
        paused: false,
    }];
    One {
        players,
        _registration: registration,
        theirs,
        writer,
        sends,
    }
}

/// What the replica does per frame: hold, queue to every player, flush.
fn on_frame(players: &[Player], frame: LocalFrame) {
    on_frame_due(players, frame, None);
}

/// The same, the stream's next video frame due in `due` ms (for audio).
fn on_frame_due(players: &[Player], frame: LocalFrame, due: Option<i64>) {
    let held = hold(players, frame.kind, due);
    for p in players {
        p.out.queue.borrow_mut().push_frame(frame.clone());
    }
    flush(held);
}

fn drain(socket: &mut UnixStream) -> usize {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}

async fn a_pass_that_writes_everything_wakes_no_writer(mode: ZeroDelaySend) {
    let mut one = player(mode);
    let frame = video(1000);
    let wire = frame.wire_len;
    for _ in 0..20 {
        on_frame(&one.players, frame.clone());
        yield_now().await;
        assert!(
            one.players[0].out.queue.borrow().is_empty(),
            "the pass wrote it"
        );
    }
    assert_eq!(drain(&mut one.theirs), 20 * wire);
    assert_eq!(one.sends.get(), 20, "a send per frame");
    assert_eq!(one.writer.wakes(), 0, "no writer woken");

    // A frame larger than the socket takes: the writer is woken once for the rest.
    on_frame(&one.players, video(4 << 20));
    yield_now().await;
    assert!(!one.players[0].out.queue.borrow().is_empty(), "bytes left");
    assert_eq!(one.writer.wakes(), 1, "the writer takes over");
}

#[test]
fn a_sendmsg_pass_that_writes_everything_wakes_no_writer() {
    on_executor(|| a_pass_that_writes_everything_wakes_no_writer(ZeroDelaySend::Pass));
}

#[test]
fn a_uring_pass_that_writes_everything_wakes_no_writer() {
    on_executor(|| async {
        BATCH.with(|b| b.set(1));
        a_pass_that_writes_everything_wakes_no_writer(ZeroDelaySend::Uring).await;
    });
}

#[test]
fn frames_queued_before_the_pass_runs_go_out_in_one_send() {
    on_executor(|| async {
        let mut one = player(ZeroDelaySend::Uring);
        let frame = video(1000);
        // The first frame starts the core's pass task (which may run it at once).
        on_frame(&one.players, frame.clone());
        yield_now().await;
        assert_eq!(one.sends.get(), 1);
        for _ in 0..5 {
            on_frame(&one.players, frame.clone());
        }
        yield_now().await;
        assert_eq!(drain(&mut one.theirs), 6 * frame.wire_len);
        assert_eq!(one.sends.get(), 2, "one send for the five frames");
        assert_eq!(one.writer.wakes(), 0, "no writer woken");
    });
}

#[test]
fn a_busy_writer_is_left_alone_and_woken_as_before() {
    on_executor(|| async {
        let mut one = player(ZeroDelaySend::Pass);
        let busy = WriterBusy::enter(&one.players[0].out.queue);
        on_frame(&one.players, video(1000));
        yield_now().await;
        let queue = &one.players[0].out.queue;
        assert!(!queue.borrow().is_empty(), "the pass skipped it");
        assert_eq!(one.writer.wakes(), 1, "queueing woke the writer");
        drop(busy);
        assert_eq!(drain(&mut one.theirs), 0);
    });
}

#[test]
fn held_audio_rides_with_the_next_video_frame() {
    on_executor(|| async {
        let mut one = coalescing_player(ZeroDelaySend::Uring, Some(Duration::from_secs(5)));
        let (a, v) = (audio(300), video(1000));
        on_frame(&one.players, a.clone());
        on_frame(&one.players, a.clone());
        yield_now().await;
        assert_eq!(one.sends.get(), 0, "audio is held");
        assert!(!one.players[0].out.queue.borrow().is_empty());
        on_frame(&one.players, v.clone());
        yield_now().await;
        assert_eq!(one.sends.get(), 1, "one send for the audio and the video");
        assert_eq!(drain(&mut one.theirs), 2 * a.wire_len + v.wire_len);
        assert_eq!(one.writer.wakes(), 0, "no writer woken");
    });
}

/// Waits (up to 5 s) until `one` made `sends` sends.
async fn until_sends(one: &One, sends: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while one.sends.get() < sends {
        assert!(Instant::now() < deadline, "{sends} sends within 5 s");
        yield_now().await;
    }
}

#[test]
fn audio_alone_waits_its_bound_then_goes() {
    on_executor(|| async {
        let bound = Duration::from_millis(100);
        let mut one = coalescing_player(ZeroDelaySend::Uring, Some(bound));
        let a = audio(300);
        let held_at = Instant::now();
        on_frame(&one.players, a.clone());
        until_sends(&one, 1).await;
        assert!(held_at.elapsed() >= bound, "not before its bound");
        assert_eq!(drain(&mut one.theirs), a.wire_len);
        assert_eq!(one.writer.wakes(), 0, "no writer woken");
    });
}

/// The core's timer, armed by one hold, writes a later hold only once that waited its bound
/// too (the first version wrote every held player whenever the timer fired, so audio went
/// alone a few ms before the video frame that would have taken it).
#[test]
fn a_timer_armed_for_earlier_audio_leaves_later_audio_for_the_next_video() {
    on_executor(|| async {
        let bound = Duration::from_millis(300);
        let mut one = coalescing_player(ZeroDelaySend::Uring, Some(bound));
        let (a, v) = (audio(300), video(1000));
        // Held audio arms the timer for `bound` from now; a video frame takes it at once.
        let armed_at = Instant::now();
        on_frame(&one.players, a.clone());
        on_frame(&one.players, v.clone());
        until_sends(&one, 1).await;
        // Audio held after that is due `bound` after its own arrival, not at the timer.
        glommio::timer::sleep(bound / 2).await;
        let held_at = Instant::now();
        on_frame(&one.players, a.clone());
        glommio::timer::sleep(armed_at + bound + bound / 4 - Instant::now()).await;
        let sends = one.sends.get();
        if held_at.elapsed() < bound {
            assert_eq!(sends, 1, "the timer left the later audio held");
        }
        on_frame(&one.players, v.clone());
        until_sends(&one, sends + 1).await;
        assert_eq!(drain(&mut one.theirs), 2 * (a.wire_len + v.wire_len));
        assert_eq!(one.writer.wakes(), 0, "no writer woken");
    });
}

/// `zero_delay_coalesce_due_ms`: audio whose stream's next video frame is due within the bound
/// (less the margin) waits for it; audio with video further off, or no cadence known, goes at
/// once, as without coalescing.
#[test]
fn only_audio_with_video_due_within_the_bound_waits() {
    on_executor(|| async {
        let bound = Duration::from_millis(200);
        let mut one = coalescing_player(ZeroDelaySend::Uring, Some(bound));
        one.players[0]
            .out
            .pass
            .borrow_mut()
            .as_mut()
            .expect("registered")
            .only_when_due = true;
        let (a, v) = (audio(300), video(1000));
        let started = Instant::now();
        on_frame_due(&one.players, a.clone(), Some(150));
        yield_now().await;
        assert_eq!(one.sends.get(), 0, "video due within the bound: audio held");
        on_frame_due(&one.players, v.clone(), None);
        until_sends(&one, 1).await;
        assert!(
            started.elapsed() < bound,
            "the video frame, not the timer, took it"
        );
        assert_eq!(drain(&mut one.theirs), a.wire_len + v.wire_len);

        for due in [Some(199), Some(250), Some(-201), None] {
            let sends = one.sends.get();
            on_frame_due(&one.players, a.clone(), due);
            yield_now().await;
            assert_eq!(
                one.sends.get(),
                sends + 1,
                "due {due:?}: audio goes at once"
            );
            assert!(one.players[0].out.queue.borrow().is_empty());
        }
        assert_eq!(drain(&mut one.theirs), 4 * a.wire_len);
        assert_eq!(one.writer.wakes(), 0, "no writer woken");
    });
}
