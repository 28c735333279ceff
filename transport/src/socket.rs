//! Every raw socket call Corecast makes, in one place: non-blocking vectored `sendmsg`, a
//! non-blocking `recv`, `shutdown`, and the socket options glommio does not offer.
//!
//! The calls go through `rustix`, which checks nothing we could get wrong here and takes
//! borrowed descriptors ([`BorrowedFd`]), so they are safe functions. The one `unsafe` left
//! is [`AsSocket`] for glommio's `TcpStream`: glommio 0.9 exposes only `AsRawFd`, so the
//! borrowed descriptor is made from the raw one, tied to the stream's lifetime.
//!
//! Why `sendmsg` and not glommio's `write_vectored`: glommio 0.9's `TcpStream` implements
//! only `poll_write`, so `write_vectored` writes the first buffer only. [`send_vectored`]
//! hands the whole iovec array to the kernel in one call; a caller that gets `WouldBlock`
//! waits for writability through glommio (see [`crate::poll_write_vectored`]).

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, Shutdown};

/// Most slices one [`send_vectored`] passes on: Linux refuses more than `UIO_MAXIOV` (1024)
/// with `EMSGSIZE`, so the rest waits for the next call.
pub const MAX_SLICES: usize = 1024;

/// Something that owns a socket descriptor for as long as it is borrowed.
pub trait AsSocket {
    /// The descriptor, borrowed for as long as `self` is.
    fn as_socket(&self) -> BorrowedFd<'_>;
}

impl AsSocket for glommio::net::TcpStream {
    #[allow(unsafe_code)]
    fn as_socket(&self) -> BorrowedFd<'_> {
        // SAFETY: the stream owns this descriptor and closes it only when it is dropped,
        // which cannot happen while `self` is borrowed for the returned lifetime.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl AsSocket for std::net::TcpStream {
    fn as_socket(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl AsSocket for BorrowedFd<'_> {
    fn as_socket(&self) -> BorrowedFd<'_> {
        *self
    }
}

/// One `sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL)` of up to [`MAX_SLICES`] of `slices`: the bytes
/// the kernel took, `Err(WouldBlock)` when the socket is full. A closed peer is an error
/// (`EPIPE`), never a SIGPIPE.
pub fn send_vectored(socket: &impl AsSocket, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    if slices.is_empty() {
        return Ok(0);
    }
    let slices = &slices[..slices.len().min(MAX_SLICES)];
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    let sent = rustix::net::sendmsg(
        socket.as_socket(),
        slices,
        &mut SendAncillaryBuffer::default(),
        flags,
    )?;
    Ok(sent)
}

/// One `recv(MSG_DONTWAIT)` into `buf`: Ok(0) at the end of the stream, `Err(WouldBlock)`
/// when nothing waits. It arms no wake-up.
pub fn recv_nonblocking(socket: &impl AsSocket, buf: &mut [u8]) -> io::Result<usize> {
    let (n, _) = rustix::net::recv(socket.as_socket(), buf, RecvFlags::DONTWAIT)?;
    Ok(n)
}

/// [`recv_nonblocking`] into memory nobody initialised (a buffer's spare capacity, which
/// would otherwise be zeroed or read into elsewhere and copied): the bytes read, at the front
/// of `buf`.
pub fn recv_nonblocking_uninit<'a>(
    socket: &impl AsSocket,
    buf: &'a mut [std::mem::MaybeUninit<u8>],
) -> io::Result<&'a mut [u8]> {
    let ((read, _), _) = rustix::net::recv(socket.as_socket(), buf, RecvFlags::DONTWAIT)?;
    Ok(read)
}

/// `shutdown(SHUT_RDWR)`, best effort (glommio's own shutdown is async). Errors (the peer
/// already gone) are ignored: the descriptor closes when its owner drops it anyway.
pub fn shutdown(socket: &impl AsSocket) {
    let _ = rustix::net::shutdown(socket.as_socket(), Shutdown::Both);
}

/// `shutdown(SHUT_WR)`, best effort: sends our FIN while the peer may still be read.
pub fn shutdown_write(socket: &impl AsSocket) {
    let _ = rustix::net::shutdown(socket.as_socket(), Shutdown::Write);
}

/// Sets `SO_SNDBUF` to `bytes` (Linux doubles it for its own bookkeeping). A set size also
/// switches off the kernel's send-buffer autotuning, which would otherwise let a peer that
/// stopped reading absorb megabytes (tens of seconds of a stream) before the sender notices.
pub fn set_send_buffer_size(socket: &impl AsSocket, bytes: usize) -> io::Result<()> {
    rustix::net::sockopt::set_socket_send_buffer_size(socket.as_socket(), bytes)?;
    Ok(())
}

/// `SO_RCVBUF`: the memory the kernel may hold for the socket's unread input now (its
/// autotuning grows it; a usable receive window is about half of it or more). A reader that
/// reads rarely learns from it whether its reads keep the window open.
pub fn receive_buffer_size(socket: &impl AsSocket) -> io::Result<usize> {
    Ok(rustix::net::sockopt::socket_recv_buffer_size(
        socket.as_socket(),
    )?)
}

/// Sets `TCP_QUICKACK`: the kernel acknowledges the next segments at once instead of
/// delaying the ACK. Linux leaves quick-ACK mode by itself, so callers set it after each
/// read where they want it.
pub fn set_quickack(socket: &impl AsSocket) -> io::Result<()> {
    rustix::net::sockopt::set_tcp_quickack(socket.as_socket(), true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    #[test]
    fn one_sendmsg_carries_every_slice_in_order() {
        let (client, mut server) = pair();
        let parts: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let total: usize = parts.iter().map(Vec::len).sum();
        assert_eq!(send_vectored(&client, &slices).expect("send"), total);
        drop(client);
        let mut got = Vec::new();
        server.read_to_end(&mut got).expect("read");
        assert_eq!(got, parts.concat());
    }

    #[test]
    fn more_slices_than_the_kernel_takes_are_cut_not_refused() {
        let (client, mut server) = pair();
        let byte = [7u8];
        let slices = vec![IoSlice::new(&byte); MAX_SLICES + 10];
        assert_eq!(send_vectored(&client, &slices).expect("send"), MAX_SLICES);
        drop(client);
        let mut got = Vec::new();
        server.read_to_end(&mut got).expect("read");
        assert_eq!(got.len(), MAX_SLICES);
    }

    #[test]
    fn recv_into_uninitialised_memory_returns_the_bytes_read_at_its_front() {
        let (client, server) = pair();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        let e = recv_nonblocking_uninit(&server, &mut buf).expect_err("nothing sent yet");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let sent = b"publisher bytes";
        assert_eq!(
            send_vectored(&client, &[IoSlice::new(sent)]).expect("send"),
            sent.len()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match recv_nonblocking_uninit(&server, &mut buf[..4]) {
                Ok(read) => {
                    assert!(read.len() <= 4, "never past the slice given");
                    got.extend_from_slice(read);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "bytes never came");
                    std::thread::yield_now();
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn recv_without_data_would_block_and_sees_the_end_after_shutdown() {
        let (client, server) = pair();
        let mut buf = [0u8; 16];
        let e = recv_nonblocking(&server, &mut buf).expect_err("nothing sent yet");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        set_quickack(&server).expect("quickack");
        assert_eq!(
            send_vectored(&client, &[IoSlice::new(b"hi")]).expect("send"),
            2
        );
        shutdown_write(&client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut got = Vec::new();
        loop {
            match recv_nonblocking(&server, &mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no EOF");
                    std::thread::yield_now();
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert_eq!(got, b"hi");
        shutdown(&server);
    }

    #[test]
    fn a_set_send_buffer_stays_near_its_size() {
        let (client, _server) = pair();
        set_send_buffer_size(&client, 64 * 1024).expect("SO_SNDBUF");
        let size = rustix::net::sockopt::socket_send_buffer_size(client.as_socket())
            .expect("read SO_SNDBUF");
        // Linux reports twice the size asked for; the point is it is not the autotuned MBs.
        assert!((64 * 1024..=128 * 1024).contains(&size), "SO_SNDBUF {size}");
    }

    #[test]
    fn sending_to_a_closed_peer_is_an_error_not_a_signal() {
        let (client, server) = pair();
        drop(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let data = [0u8; 1024];
        loop {
            match send_vectored(&client, &[IoSlice::new(&data)]) {
                Ok(_) | Err(_) if std::time::Instant::now() >= deadline => {
                    panic!("no error from a closed peer")
                }
                Ok(_) => std::thread::yield_now(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => {
                    assert!(matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ));
                    break;
                }
            }
        }
    }
}
