//! Byte pipes a session runs over: TCP here; TLS (`crate::tls`) and the HTTP tunnel implement
//! the same trait.
//!
//! Why not glommio's `write_vectored`: glommio 0.9's `TcpStream` implements only `poll_write`,
//! so `write_vectored` silently writes the first buffer only. The TCP pipe therefore calls
//! `sendmsg(MSG_DONTWAIT)` with the whole iovec array
//! ([`corecast_transport::socket::send_vectored`], where every raw socket call lives) and,
//! only when the socket is full (EAGAIN), awaits an ordinary write of the first slice, which
//! is how glommio waits for writability.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;

use bytes::BytesMut;
use corecast_transport::socket;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// Bytes in, bytes out; shared by a connection's reader and writer tasks on one core.
pub trait Transport {
    /// Reads into the spare capacity of `buf`; Ok(0) at end of stream.
    fn read_into(&self, buf: &mut BytesMut)
        -> impl std::future::Future<Output = io::Result<usize>>;
    /// Reads whatever is already waiting, without blocking and without arming a wake-up
    /// (at most [`TRY_READ_MAX`] bytes); Ok(0) at end of stream, Err(WouldBlock) when nothing
    /// waits. A pipe that cannot (the HTTP tunnel, whose input waits in memory anyway)
    /// always answers WouldBlock, and the caller falls back to [`Transport::read_into`].
    fn try_read_into(&self, _buf: &mut BytesMut) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    /// Writes as much of `slices` as the pipe takes now without blocking; Err(WouldBlock) when
    /// nothing could be written.
    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Waits until the pipe can take bytes, writing some of `buf`; returns how many.
    fn write_some(&self, buf: &[u8]) -> impl std::future::Future<Output = io::Result<usize>>;
    /// Waits until bytes the pipe accepted earlier have reached the socket. A pipe that
    /// transforms what it is given (TLS encrypts into records) may accept bytes it cannot send
    /// yet; the writer calls this when its queue is empty so they are never stranded. TCP
    /// hands bytes straight to the kernel, so by default there is nothing to wait for.
    fn flush(&self) -> impl std::future::Future<Output = io::Result<()>> {
        std::future::ready(Ok(()))
    }
    /// Bounds the kernel's send buffer of the socket under the pipe to `bytes` (a player's:
    /// see `player.socket_send_buffer_bytes`). A pipe with no socket of its own (the HTTP
    /// tunnel) has nothing to bound.
    fn set_send_buffer_size(&self, _bytes: usize) -> io::Result<()> {
        Ok(())
    }
    /// The connection will send little from now on (a player: acknowledgements and pings), so
    /// the next reads ask for little; a peer that sends more grows them again, a read at a time.
    fn expect_little_input(&self) {}
    /// The plain socket under the pipe, where bytes written to it go out unchanged (TCP
    /// only): the zero-delay send pass ([`crate::sendpass`]) writes it directly.
    fn plain_socket_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The kernel's receive buffer of the socket under the pipe (`SO_RCVBUF`), or what the
    /// pipe itself holds for its reader (the HTTP tunnel's input): a publisher read at a
    /// pace learns from it whether its reads keep the window open
    /// ([`crate::session::pace`]).
    fn receive_buffer_bytes(&self) -> Option<usize> {
        None
    }
    /// Closes the write side.
    fn shutdown(&self);
    /// Transport label for logs, metrics and the API.
    fn label(&self) -> &'static str {
        "rtmp"
    }
    /// Whether the pipe can switch to RTMPE's RC4 after the handshake
    /// ([`crate::rtmpe::RtmpeTransport`] only); the session accepts C0 6 only then.
    fn rtmpe_capable(&self) -> bool {
        false
    }
    /// RTMPE: from now on decrypt what is read and encrypt what is written, except the first
    /// `handshake_out` bytes written since the start (S0+S1+S2, possibly still queued).
    /// `pending` holds what was read past C2 already and is decrypted in place.
    fn start_rtmpe(
        &self,
        _cipher: corecast_common::rtmpe::RtmpeCipher,
        _handshake_out: usize,
        _pending: &mut BytesMut,
    ) {
    }
}

/// The first read of a connection asks for this much; players send almost nothing, so most
/// connections never need more (a 64 KiB buffer per player would dominate its memory).
const READ_MIN: usize = 4 * 1024;
/// What a player's reads ask for once it plays ([`Transport::expect_little_input`]): its
/// acknowledgements and pings are a few dozen bytes, and its read buffer is held while it waits.
const READ_IDLE: usize = 512;
/// Reads grow (doubling each time one fills what it asked for) up to this, for publishers.
const READ_MAX: usize = 64 * 1024;
/// Most bytes one [`Transport::try_read_into`] takes: a publisher's input of one tick at
/// tens of Mbit/s, while keeping one connection from holding the core for long.
pub const TRY_READ_MAX: usize = 1024 * 1024;

/// A plain TCP connection.
pub struct TcpTransport {
    stream: RefCell<TcpStream>,
    /// Bytes the next read asks for (adapts between READ_IDLE or READ_MIN and READ_MAX).
    read_size: std::cell::Cell<usize>,
    /// Room the next paced read ([`Transport::try_read_into`]) makes in the buffer, if less is
    /// free: twice what the last one brought (between READ_MIN and READ_MAX).
    paced_room: std::cell::Cell<usize>,
}

impl TcpTransport {
    /// Wraps an accepted or connected stream.
    pub fn new(stream: TcpStream) -> TcpTransport {
        TcpTransport {
            stream: RefCell::new(stream),
            read_size: std::cell::Cell::new(READ_MIN),
            paced_room: std::cell::Cell::new(READ_MIN),
        }
    }
}

impl Transport for TcpTransport {
    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let start = buf.len();
        let want = self.read_size.get();
        buf.resize(start + want, 0);
        let result = poll_fn(|cx| {
            let mut stream = self.stream.borrow_mut();
            Pin::new(&mut *stream).poll_read(cx, &mut buf[start..])
        })
        .await;
        let n = *result.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        if n == want {
            self.read_size.set((want * 2).min(READ_MAX));
        }
        result
    }

    /// Paced reads (a publisher's input once per tick) land in the buffer's spare capacity,
    /// uninitialised: reading into the buffer's initialised length would first zero the whole
    /// read size (`BytesMut::resize`, 64 KiB per tick for a few KiB of stream: 14 % of a
    /// core's instructions at 100 players), and reading into a scratch buffer (as before)
    /// copied every byte of the stream once more.
    fn try_read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut total = 0;
        let mut room = self.paced_room.get();
        while total < TRY_READ_MAX {
            if buf.capacity() - buf.len() < room {
                buf.reserve(room);
            }
            let spare = buf.spare_capacity_mut();
            // Each recv at most READ_MAX, as the reads that wait.
            let len = spare.len().min(READ_MAX);
            match socket::recv_nonblocking_uninit(&*self.stream.borrow(), &mut spare[..len]) {
                Ok(read) => {
                    let n = read.len();
                    // SAFETY: the recv initialised the first `n` bytes of the spare capacity.
                    #[allow(unsafe_code)]
                    unsafe {
                        buf.set_len(buf.len() + n)
                    };
                    total += n;
                    if n < len {
                        // Drained (or the end of the stream, which the next read reports
                        // as 0).
                        break;
                    }
                    room = (room * 2).min(READ_MAX);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => break,
                Err(e) => return Err(e),
            }
        }
        self.paced_room.set((total * 2).clamp(READ_MIN, READ_MAX));
        Ok(total)
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        socket::send_vectored(&*self.stream.borrow(), slices)
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut stream = self.stream.borrow_mut();
            Pin::new(&mut *stream).poll_write(cx, buf)
        })
        .await
    }

    fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        socket::set_send_buffer_size(&*self.stream.borrow(), bytes)
    }

    fn receive_buffer_bytes(&self) -> Option<usize> {
        socket::receive_buffer_size(&*self.stream.borrow()).ok()
    }

    fn plain_socket_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.stream.borrow().as_raw_fd())
    }

    fn expect_little_input(&self) {
        self.read_size.set(READ_IDLE);
    }

    fn shutdown(&self) {
        socket::shutdown(&*self.stream.borrow());
    }
}

/// Sets TCP_NODELAY so small replies (connect's answer) are not held back by Nagle.
pub fn set_nodelay(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

#[cfg(test)]
mod tests {
    //! Paced reads land in the buffer's spare capacity: whatever the buffer held before
    //! (bytes left over, a front shared with frames already taken), what follows is exactly
    //! what the peer sent, in order.

    use std::io::Write;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;

    /// Reads until `want` more bytes are in `buf` (a deadline, never a hang).
    fn read_exactly(t: &TcpTransport, buf: &mut BytesMut, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < want {
            match t.try_read_into(buf) {
                Ok(0) => panic!("end of stream after {got} of {want}"),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "{got} of {want} bytes came");
                    std::thread::yield_now();
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got, want, "no more than was sent");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn paced_reads_bring_exactly_the_bytes_sent(
            steps in proptest::collection::vec((1usize..150_000, 0usize..3000, any::<bool>()), 1..8)
        ) {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .spawn(move || async move {
                    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                    let addr = listener.local_addr().expect("addr");
                    let mut peer = std::net::TcpStream::connect(addr).expect("connect");
                    let t = TcpTransport::new(listener.accept().await.expect("accept"));
                    let mut buf = BytesMut::new();
                    let mut taken = Vec::new();
                    for (k, (size, keep, share)) in steps.into_iter().enumerate() {
                        // What the decoder left: the front taken (shared, as a frame keeps
                        // it, or dropped), `keep` bytes still to decode.
                        let keep = keep.min(buf.len());
                        let front = buf.split_to(buf.len() - keep);
                        if share {
                            taken.push(front.freeze());
                        }
                        let before = buf.to_vec();
                        let sent: Vec<u8> = (0..size).map(|i| (i * 31 + k) as u8).collect();
                        // A writer thread: the socket may not take it all at once.
                        let writer = {
                            let mut peer = peer.try_clone().expect("clone");
                            let sent = sent.clone();
                            std::thread::spawn(move || peer.write_all(&sent).expect("write"))
                        };
                        read_exactly(&t, &mut buf, size);
                        writer.join().expect("writer");
                        assert_eq!(&buf[..keep], &before[..]);
                        assert_eq!(&buf[keep..], &sent[..]);
                    }
                    peer.flush().expect("flush");
                })
                .expect("executor")
                .join()
                .expect("test body");
        }
    }
}
