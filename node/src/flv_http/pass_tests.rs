//! HTTP-FLV viewers on the tick pass ([`crate::sendpass::register_framed`]) against a socket
//! pair with a small send buffer, on a real executor: whatever the frame sizes, and however
//! the pass and the viewer's writer (the [`Chunked`] transport, sharing the open chunk)
//! alternate on a socket that fills, the peer decodes the log's bytes exactly and every
//! chunk's size line matches its body.

use std::cell::Cell;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::chunked::Chunked;
use crate::config::PlayerConfig;
use crate::frame::{FrameData, LocalFrame, MediaKind};
use crate::framelog::FrameLog;
use crate::outbound::Outbound;
use crate::queue::QueueLimits;
use crate::sendpass::{register_framed, window, RawSocket, Registration};
use crate::transport::Transport;

/// A non-blocking socket pair end as a plain transport (what `TcpTransport` is to a viewer).
struct Plain(UnixStream);

impl Transport for Plain {
    async fn read_into(&self, _buf: &mut BytesMut) -> io::Result<usize> {
        Ok(0)
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.0).write_vectored(slices)
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.0).write(buf)
    }

    fn plain_socket_fd(&self) -> Option<RawFd> {
        Some(self.0.as_raw_fd())
    }

    fn shutdown(&self) {}
}

struct Socket(Rc<Chunked<Plain>>);

impl RawSocket for Socket {
    fn raw_fd(&self) -> RawFd {
        self.0.inner_socket_fd().unwrap_or(-1)
    }
}

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

/// A batching follower of a log, written by the tick pass through chunk framing.
struct Viewer {
    out: Rc<Outbound>,
    transport: Rc<Chunked<Plain>>,
    _registration: Registration,
    theirs: UnixStream,
    body_sent: Rc<Cell<usize>>,
}

fn viewer(log: &Rc<FrameLog>, chunked: bool) -> Viewer {
    crate::tick::start(Duration::from_secs(3600));
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    ours.set_nonblocking(true).expect("nonblocking");
    theirs.set_nonblocking(true).expect("nonblocking");
    // Small, so that a window rarely fits whole: partial writes at every place of a chunk.
    socket2::SockRef::from(&ours)
        .set_send_buffer_size(4096)
        .expect("send buffer");
    let out = Outbound::new(QueueLimits {
        soft_max_bytes: 64 << 20,
        hard_max_bytes: 128 << 20,
    });
    let transport = Rc::new(Chunked::new(Plain(ours), chunked));
    let body_sent = Rc::new(Cell::new(0));
    let counted = Rc::clone(&body_sent);
    let player = PlayerConfig {
        merge_window_ms: 100,
        ..PlayerConfig::default()
    };
    let registration = register_framed(
        &player,
        Rc::new(Socket(Rc::clone(&transport))),
        &out,
        Rc::new(move |n| counted.set(counted.get() + n)),
        transport.chunk_state(),
    )
    .expect("registered with the tick pass");
    {
        let mut q = out.queue.borrow_mut();
        q.set_batching(true);
        assert!(q.follow(log));
    }
    Viewer {
        out,
        transport,
        _registration: registration,
        theirs,
        body_sent,
    }
}

impl Viewer {
    /// What the viewer's writer does once woken: one write of the queue's front through the
    /// chunk framing (with nothing queued, it finishes an open chunk's CRLF, as its flush).
    fn writer_write(&self) {
        let n = {
            let q = self.out.queue.borrow();
            let mut slices = Vec::new();
            q.gather(&mut slices, 512, 1 << 20);
            match self.transport.try_write_vectored(&slices) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => panic!("write: {e}"),
            }
        };
        self.body_sent.set(self.body_sent.get() + n);
        self.out.queue.borrow_mut().advance(n);
    }

    fn read(&mut self, got: &mut Vec<u8>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.theirs.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads and writes (by the pass and the writer, in turn) until all is out and no chunk
    /// is left open.
    fn finish(&mut self, got: &mut Vec<u8>) {
        for k in 0..100_000 {
            self.read(got);
            let open = self
                .transport
                .chunk_state()
                .is_some_and(|s| s.borrow().is_some());
            if self.out.queue.borrow().is_empty() && !open {
                return;
            }
            if k % 2 == 0 {
                window::pass();
            } else {
                self.writer_write();
            }
        }
        panic!("never written out");
    }
}

/// Decodes chunked `wire` (all chunks non-empty): the body; panics where a size line does
/// not match its chunk.
fn unchunk(mut wire: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while !wire.is_empty() {
        let line = wire
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = std::str::from_utf8(&wire[..line]).expect("hex size");
        let len = usize::from_str_radix(size, 16).expect("size");
        assert!(len > 0, "an empty chunk before the end");
        let start = line + 2;
        assert!(wire.len() >= start + len + 2, "a cut chunk");
        body.extend_from_slice(&wire[start..start + len]);
        assert_eq!(&wire[start + len..start + len + 2], b"\r\n", "chunk end");
        wire = &wire[start + len + 2..];
    }
    body
}

fn wire(frame: &LocalFrame) -> Vec<u8> {
    frame.parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// What one step between appends does.
#[derive(Debug, Clone, Copy)]
enum Step {
    Pass,
    Writer,
    Read,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![Just(Step::Pass), Just(Step::Writer), Just(Step::Read)]
}

fn run(groups: &[(Vec<usize>, Vec<Step>)], chunked: bool) {
    let log = Rc::new(FrameLog::new());
    let mut v = viewer(&log, chunked);
    let (mut expected, mut got) = (Vec::new(), Vec::new());
    for (k, (sizes, steps)) in groups.iter().enumerate() {
        for size in sizes {
            let frame = video(*size, k as u8);
            expected.extend(wire(&frame));
            log.append(frame);
        }
        for s in steps {
            match s {
                Step::Pass => window::pass(),
                Step::Writer => v.writer_write(),
                Step::Read => v.read(&mut got),
            }
        }
    }
    v.finish(&mut got);
    let body = if chunked { unchunk(&got) } else { got };
    assert_eq!(body.len(), expected.len());
    assert!(body == expected, "the body is the log's bytes");
    assert_eq!(v.body_sent.get(), expected.len(), "body bytes counted once");
}

#[test]
fn windows_go_out_as_whole_chunks_by_the_pass() {
    on_executor(|| {
        let log = Rc::new(FrameLog::new());
        let mut v = viewer(&log, true);
        let mut got = Vec::new();
        let mut expected = Vec::new();
        for k in 0..50u8 {
            let frame = video(300 + usize::from(k) * 11, k);
            expected.extend(wire(&frame));
            log.append(frame);
            window::pass();
            v.read(&mut got);
        }
        v.finish(&mut got);
        assert_eq!(unchunk(&got), expected);
        // One chunk per window that fit the socket whole: 50 size lines.
        let lines = got.windows(2).filter(|w| w == b"\r\n").count();
        assert!(lines >= 100, "{lines} CRLFs for 50 windows");
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any frame sizes, any order of passes, writer writes and peer reads: the peer decodes
    /// exactly the log's bytes, each chunk framed by its own size (chunked), or gets them
    /// raw (HTTP/1.0).
    #[test]
    fn the_pass_and_the_writer_continue_each_others_chunks(
        groups in proptest::collection::vec(
            (
                proptest::collection::vec(2usize..20_000, 0..5),
                proptest::collection::vec(step(), 0..5),
            ),
            1..14,
        ),
        chunked in any::<bool>(),
    ) {
        on_executor(move || run(&groups, chunked));
    }
}
