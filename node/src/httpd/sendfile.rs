//! Immutable media in sealed memfds, sent with one `sendfile(2)` instead of being copied into
//! every viewer's socket: what nginx does with a file in the page cache. The one module of
//! the node's HTTP path with `unsafe`: the mapping (`mmap`, `munmap`, the slice over it) and
//! the memfd's descriptor borrowed from the registry for a `sendfile`; the system calls
//! themselves go through `rustix`'s safe wrappers (session 8: `libc` before), and the socket
//! is borrowed from glommio's stream by `corecast_transport::socket::AsSocket`. Everything
//! else sees `Bytes`.
//!
//! - [`place`] copies a body (HLS: a finished segment's parts, see `crate::hls`) once into a
//!   fresh memfd, seals it (no write, grow, shrink or further seal: the pages `sendfile`
//!   hands the kernel never change), maps it read-only and returns it as `Bytes` whose owner
//!   is the mapping. The mapping is listed in a process-wide registry by address, so the
//!   write path can tell, from the `IoSlice` hyper hands it, that a body lies in a memfd.
//! - [`poll_send`] is the plain-TCP write of [`super::io::Io`]: as
//!   `corecast_transport::poll_write_vectored`, except that a slice of at least
//!   [`MIN_SENDFILE`] bytes in a placed memfd goes with `sendfile` from that file: the
//!   slices before it (the response head) in one `sendmsg(MSG_MORE)`, so the head shares the
//!   body's first packet, then the body in one `sendfile`. The kernel references the pages
//!   instead of copying them. Smaller slices (LL-HLS parts, playlists) are copied as before:
//!   one `sendfile` per part measured no better than the copy (BENCHMARKS.md).
//!
//! Lifetimes: the mapping (and its descriptor) lives as long as any `Bytes` of it; hyper
//! holds the body's `Bytes` while it writes the slice, so a descriptor found in the registry
//! is never closed (or reused) under a write. Pages the kernel still holds in a socket
//! buffer keep their own references after the mapping goes.
//!
//! glommio's accepted sockets are blocking (it sends with `MSG_DONTWAIT` and waits with
//! io_uring polls), and `sendfile` has no flags, so the first `sendfile` on a connection sets
//! `O_NONBLOCK` on it, once. glommio's stream path only uses `MSG_DONTWAIT` calls and
//! readiness polls, which behave the same on a non-blocking socket.

use std::collections::BTreeMap;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{RwLock, RwLockWriteGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use corecast_transport::socket::{self, AsSocket};
use glommio::net::TcpStream;
use rustix::fs::{self, MemfdFlags, SealFlags};
use rustix::mm::{self, MapFlags, ProtFlags};
use rustix::net::{SendAncillaryBuffer, SendFlags};

use super::hub::Member;

/// Slices shorter than this are copied: below it a `sendfile` call costs about what the copy
/// saves (an HLS part is 20–30 KB at 1 Mbit/s; a 2 s segment ten times that).
pub const MIN_SENDFILE: usize = 64 * 1024;

/// Mapped memfds by start address: (length, file).
static REGISTRY: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());

/// One read-only mapping of a sealed memfd; unlisted, unmapped and closed on drop.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
    _fd: OwnedFd,
}

// SAFETY: the mapping is read-only and sealed against writes; the pointer is only read.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        registry_write().remove(&(self.ptr as usize));
        // SAFETY: `ptr`/`len` are the mapping `place` made; nothing borrows it any more.
        let _ = unsafe { mm::munmap(self.ptr, self.len) };
    }
}

fn registry_write() -> RwLockWriteGuard<'static, BTreeMap<usize, (usize, RawFd)>> {
    REGISTRY.write().unwrap_or_else(|p| p.into_inner())
}

/// `chunks`, in order, copied into a sealed memfd of their own, as one `Bytes` that
/// [`poll_send`] sends with `sendfile`. Fails (the caller keeps its heap bytes) when no
/// memfd can be made: descriptors or memory exhausted.
pub fn place(chunks: &[Bytes]) -> io::Result<Bytes> {
    let len: usize = chunks.iter().map(Bytes::len).sum();
    if len == 0 {
        return Ok(Bytes::new());
    }
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let mut file = std::fs::File::from(fs::memfd_create(c"corecast-media", flags)?);
    for chunk in chunks {
        file.write_all(chunk)?;
    }
    let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL;
    fs::fcntl_add_seals(&file, seals)?;
    // SAFETY: maps the sealed file just written, read-only and shared (nothing can change
    // its pages), faulted in now (not on every core's first read); `Mapping` unmaps it.
    let ptr = unsafe {
        mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::SHARED | MapFlags::POPULATE,
            &file,
            0,
        )
    }?;
    let fd = OwnedFd::from(file);
    registry_write().insert(ptr as usize, (len, fd.as_raw_fd()));
    Ok(Bytes::from_owner(Mapping { ptr, len, _fd: fd }))
}

/// The memfd and offset `slice` lies in, if [`place`] made it.
fn locate(slice: &[u8]) -> Option<(RawFd, usize)> {
    let addr = slice.as_ptr() as usize;
    let registry = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let (&start, &(len, fd)) = registry.range(..=addr).next_back()?;
    (addr + slice.len() <= start + len).then_some((fd, addr - start))
}

/// Writes `bufs` to `stream` as `corecast_transport::poll_write_vectored` does, except that
/// the first slice of at least [`MIN_SENDFILE`] bytes in a memfd goes with `sendfile` (the
/// slices before it first, in one `sendmsg(MSG_MORE)`). `nonblocking` is the connection's
/// note that its socket is already `O_NONBLOCK`; `hub`, the connection's place in the core's
/// read hub, waits for room when the socket is full on a busy core.
pub fn poll_send(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
    nonblocking: &mut bool,
    hub: Option<&Member>,
) -> Poll<io::Result<usize>> {
    let placed = bufs.iter().enumerate().find_map(|(i, b)| {
        let found = (b.len() >= MIN_SENDFILE).then(|| locate(b)).flatten();
        found.map(|(file, offset)| (i, file, offset))
    });
    let sent = match placed {
        None => return corecast_transport::poll_write_vectored(stream, cx, bufs),
        Some((0, file, offset)) => set_nonblocking(stream.as_socket(), nonblocking)
            .and_then(|()| sendfile(stream.as_socket(), file, offset, bufs[0].len())),
        Some((k, ..)) => sendmsg_more(stream.as_socket(), &bufs[..k]),
    };
    match sent {
        // On a busy core the hub's tick waits for room; otherwise glommio's write does (it
        // copies what it then sends, as before).
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            match hub.and_then(|h| h.poll_writable(cx)) {
                Some(Poll::Pending) => Poll::Pending,
                _ => corecast_transport::poll_write_vectored(stream, cx, bufs),
            }
        }
        other => Poll::Ready(other),
    }
}

fn set_nonblocking(socket: BorrowedFd<'_>, done: &mut bool) -> io::Result<()> {
    if !*done {
        rustix::io::ioctl_fionbio(socket, true)?;
        *done = true;
    }
    Ok(())
}

/// One `sendfile` of `len` bytes of the placed memfd `file` from `offset`.
fn sendfile(socket: BorrowedFd<'_>, file: RawFd, offset: usize, len: usize) -> io::Result<usize> {
    let mut offset = u64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `file` was found in the registry for a slice of `Bytes` that the caller is
    // writing, and those `Bytes` own the mapping, which owns the descriptor: it stays open
    // (and is not reused) for the call.
    let file = unsafe { BorrowedFd::borrow_raw(file) };
    Ok(fs::sendfile(socket, file, Some(&mut offset), len)?)
}

/// The head before a placed body: `sendmsg(MSG_MORE)`, so it shares the body's first packet.
fn sendmsg_more(socket: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let bufs = &bufs[..bufs.len().min(socket::MAX_SLICES)];
    let flags = SendFlags::MORE | SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    Ok(rustix::net::sendmsg(
        socket,
        bufs,
        &mut SendAncillaryBuffer::default(),
        flags,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_bytes_read_back_are_sealed_and_located_until_dropped() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let chunks = [
            Bytes::copy_from_slice(&data[..30_000]),
            Bytes::copy_from_slice(&data[30_000..]),
        ];
        let placed = place(&chunks).expect("memfd");
        assert_eq!(&placed[..], &data[..]);
        let (fd, offset) = locate(&placed[100..200]).expect("in the memfd");
        assert_eq!(offset, 100);
        // SAFETY: a descriptor the mapping holds, alive while `placed` is.
        let seals = fs::fcntl_get_seals(unsafe { BorrowedFd::borrow_raw(fd) }).expect("seals");
        assert!(seals.contains(SealFlags::WRITE), "sealed against writes");
        assert!(locate(&data[..]).is_none(), "heap bytes are not placed");
        let start = placed.as_ptr() as usize;
        drop(placed);
        assert!(!REGISTRY.read().expect("lock").contains_key(&start));
        assert_eq!(place(&[]).expect("nothing to place").len(), 0);
    }

    /// A head and a placed body through [`poll_send`] to a reader that starts reading only
    /// once the socket was full: the bytes arrive whole and in order, through `sendmsg`,
    /// `sendfile` and glommio's wait for room.
    #[test]
    fn a_head_and_a_placed_body_arrive_whole_even_when_the_socket_fills() {
        use std::cell::Cell;
        use std::rc::Rc;
        use std::time::{Duration, Instant};

        use futures_lite::AsyncReadExt;
        use glommio::net::TcpListener;

        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async move {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                let addr = listener.local_addr().expect("addr");
                // More than loopback's send and receive buffers hold together.
                let body: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
                let placed = place(&[Bytes::copy_from_slice(&body)]).expect("memfd");
                let head = HEAD.to_vec();
                let full = Rc::new(Cell::new(false));
                let writer_full = Rc::clone(&full);
                let writer = glommio::spawn_local(async move {
                    let mut stream = listener.accept().await.expect("accept");
                    let (mut sent, mut nonblocking) = (0, false);
                    while sent < head.len() + placed.len() {
                        let n = futures_lite::future::poll_fn(|cx| {
                            let bufs = if sent < head.len() {
                                vec![IoSlice::new(&head[sent..]), IoSlice::new(&placed)]
                            } else {
                                vec![IoSlice::new(&placed[sent - head.len()..])]
                            };
                            let polled = poll_send(&mut stream, cx, &bufs, &mut nonblocking, None);
                            if polled.is_pending() {
                                writer_full.set(true);
                            }
                            polled
                        })
                        .await
                        .expect("send");
                        sent += n;
                    }
                    assert!(nonblocking, "the body went with sendfile");
                });
                let mut client = glommio::net::TcpStream::connect(addr)
                    .await
                    .expect("connect");
                let deadline = Instant::now() + Duration::from_secs(20);
                while !full.get() {
                    assert!(Instant::now() < deadline, "the socket never filled");
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                let (want, mut got) = (HEAD.len() + body.len(), Vec::new());
                let mut buf = vec![0u8; 1 << 20];
                while got.len() < want {
                    let n = client.read(&mut buf).await.expect("read");
                    assert!(n > 0, "closed after {} of {want} bytes", got.len());
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(&got[..HEAD.len()], HEAD);
                assert!(got[HEAD.len()..] == body[..], "the body arrived whole");
                writer.await;
            })
            .expect("executor")
            .join()
            .expect("test body");
    }
}
