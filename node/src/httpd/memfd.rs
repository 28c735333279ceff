//! Immutable media in memfd pages, sent with `sendfile` instead of being copied into the
//! socket: the way nginx sends a file from the page cache.
//!
//! [`place`] copies bytes once into a fresh memfd, maps it read-only and hands it out as
//! `Bytes` whose owner is the mapping. Every mapping is listed in a process-wide registry by
//! address, so the connection's write path ([`poll_send`]) can tell, from the `IoSlice`
//! hyper gives it, that a body chunk lies in a memfd and send it with `sendfile(2)` from that
//! file: the kernel then references the pages instead of copying them (on loopback, the
//! reader's copy is the only one). The mapping lives as long as any `Bytes` of it, and hyper
//! holds the `Bytes` while it writes the slice, so the file descriptor found is never closed
//! (or reused) under a write. The pages are never written after [`place`], which `sendfile`
//! needs: queued pages are sent as they are when the kernel gets to them.

use std::collections::BTreeMap;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::RwLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::AsyncWrite;
use glommio::net::TcpStream;

/// Mapped memfds by start address: (length, file).
static REGISTRY: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());

/// One read-only mapping of a memfd; unlisted, unmapped and closed on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    _fd: OwnedFd,
}

// SAFETY: the mapping is read-only and never changes after `place`; the pointer is only read.
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
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

fn registry_write() -> std::sync::RwLockWriteGuard<'static, BTreeMap<usize, (usize, RawFd)>> {
    REGISTRY.write().unwrap_or_else(|p| p.into_inner())
}

/// `data` copied into a memfd of its own, as `Bytes` that [`poll_send`] sends with
/// `sendfile`.
pub fn place(data: &[u8]) -> io::Result<Bytes> {
    if data.is_empty() {
        return Ok(Bytes::new());
    }
    // SAFETY: a NUL-terminated name and valid flags; the result is checked.
    let raw = unsafe { libc::memfd_create(c"corecast-media".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    std::fs::File::from(fd.try_clone()?).write_all(data)?;
    // SAFETY: maps the file just written, read-only; the result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    registry_write().insert(ptr as usize, (data.len(), fd.as_raw_fd()));
    Ok(Bytes::from_owner(Mapping {
        ptr,
        len: data.len(),
        _fd: fd,
    }))
}

/// The memfd and offset `slice` lies in, if [`place`] made it.
fn locate(slice: &[u8]) -> Option<(RawFd, usize)> {
    if slice.is_empty() {
        return None;
    }
    let addr = slice.as_ptr() as usize;
    let registry = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let (&start, &(len, fd)) = registry.range(..=addr).next_back()?;
    (addr + slice.len() <= start + len).then_some((fd, addr - start))
}

/// Writes `bufs` as [`corecast_transport::poll_write_vectored`] does, except that a slice
/// in a memfd goes with `sendfile`: the slices before it in one `sendmsg` (`MSG_MORE`, so the
/// head joins the body's first packet), then the slice itself.
pub fn poll_send(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let placed = bufs.iter().position(|b| locate(b).is_some());
    let sent = match placed {
        None => return corecast_transport::poll_write_vectored(stream, cx, bufs),
        Some(0) => {
            let Some((file, offset)) = locate(&bufs[0]) else {
                return corecast_transport::poll_write_vectored(stream, cx, bufs);
            };
            sendfile(stream.as_raw_fd(), file, offset, bufs[0].len())
        }
        Some(k) => sendmsg_more(stream.as_raw_fd(), &bufs[..k]),
    };
    match sent {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            // glommio's write waits for room (copying this one slice, as before).
            let first = bufs.iter().find(|s| !s.is_empty()).map_or(&[][..], |s| s);
            Pin::new(stream).poll_write(cx, first)
        }
        other => Poll::Ready(other),
    }
}

fn sendfile(socket: RawFd, file: RawFd, offset: usize, len: usize) -> io::Result<usize> {
    let mut offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: valid descriptors (the file is held by the `Bytes` being written) and offset.
    let n = unsafe { libc::sendfile(socket, file, &mut offset, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn sendmsg_more(socket: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid; the iovecs point at `bufs`, alive for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(1024) as _;
    let flags = libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `msg` is valid for the call; IoSlice is ABI-compatible with iovec.
    let n = unsafe { libc::sendmsg(socket, &msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_bytes_read_back_and_are_located_until_dropped() {
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let placed = place(&data).expect("memfd");
        assert_eq!(&placed[..], &data[..]);
        let (_, offset) = locate(&placed[100..200]).expect("in the memfd");
        assert_eq!(offset, 100);
        assert!(locate(&data[..]).is_none(), "heap bytes are not placed");
        let start = placed.as_ptr() as usize;
        drop(placed);
        assert!(!REGISTRY.read().expect("lock").contains_key(&start));
    }
}
