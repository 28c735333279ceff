//! HTTP/1.1 chunked framing around what the RTMP players' writer ([`crate::writer`]) sends,
//! so that an HTTP-FLV viewer is written exactly as an RTMP player is.
//!
//! [`Chunked`] is a [`Transport`] over the socket taken back from hyper after the response
//! head: each write the writer makes (the queue's shared FLV tag slices, a merge window of
//! them, borrowed, never copied or cloned) becomes one chunk, its size line and its CRLF two
//! small extra slices of the same `sendmsg`. The writer only ever sees payload bytes: a write
//! the kernel takes only part of leaves the chunk open ([`OpenChunk`], sans-IO), and the next
//! write continues it from where the queue's front now is, which is exactly where the chunk's
//! body goes on (the writer advances the queue by the payload bytes reported). At a merge
//! window the core's tick pass writes the viewer too: the open chunk is shared with it
//! ([`ChunkState`]), and it frames its sends with the same [`OpenChunk`] (see
//! [`crate::sendpass::register_framed`]), so either continues where the other stopped.
//!
//! An HTTP/1.0 request has no chunked encoding (hyper answers it close-delimited): then the
//! bytes go out as they are.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::rc::Rc;

use bytes::BytesMut;

use crate::transport::Transport;

/// Closes a chunk.
const CRLF: &[u8; 2] = b"\r\n";
/// The last chunk of a body, and the empty trailer: the response's clean end.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The chunk being written: its size line, and how much of it, of its body and of its CRLF
/// is still to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenChunk {
    /// The size line: hex digits (at most 16) and CRLF.
    head: [u8; 18],
    head_len: u8,
    head_done: u8,
    body_left: usize,
    tail_done: u8,
}

impl OpenChunk {
    /// A chunk of `len` body bytes (more than zero: an empty chunk is the last one).
    pub fn new(len: usize) -> OpenChunk {
        let mut head = [0u8; 18];
        let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, byte) in head[..digits].iter_mut().enumerate() {
            let nibble = (len >> (4 * (digits - 1 - i))) & 0xF;
            *byte = b"0123456789abcdef"[nibble];
        }
        head[digits..digits + 2].copy_from_slice(CRLF);
        OpenChunk {
            head,
            head_len: (digits + 2) as u8,
            head_done: 0,
            body_left: len,
            tail_done: 0,
        }
    }

    /// The slices of one write: the rest of the size line, `payload` (the body's next bytes)
    /// cut at the chunk's end, and the CRLF when the payload reaches it.
    pub fn slices<'a>(&'a self, payload: &'a [IoSlice<'_>], out: &mut Vec<IoSlice<'a>>) {
        if self.head_done < self.head_len {
            let head = &self.head[self.head_done as usize..self.head_len as usize];
            out.push(IoSlice::new(head));
        }
        let mut room = self.body_left;
        for slice in payload {
            if room == 0 {
                break;
            }
            let take = slice.len().min(room);
            out.push(IoSlice::new(&slice[..take]));
            room -= take;
        }
        if room == 0 {
            out.push(IoSlice::new(&CRLF[self.tail_done as usize..]));
        }
    }

    /// Accounts for `n` bytes of [`OpenChunk::slices`] written; returns how many of them were
    /// body (payload) bytes.
    pub fn advance(&mut self, mut n: usize) -> usize {
        let head = n.min((self.head_len - self.head_done) as usize);
        self.head_done += head as u8;
        n -= head;
        let body = n.min(self.body_left);
        self.body_left -= body;
        n -= body;
        let tail = n.min(CRLF.len() - self.tail_done as usize);
        self.tail_done += tail as u8;
        body
    }

    /// True once the CRLF is written.
    pub fn is_done(&self) -> bool {
        self.tail_done as usize == CRLF.len()
    }

    /// Body bytes still to go.
    pub fn body_left(&self) -> usize {
        self.body_left
    }

    /// The chunk a write of `offered` payload bytes goes into: `open` (a partial write left
    /// it), or a new one of exactly that size (None when there is nothing to write). The
    /// writer ([`Chunked`]) and the tick pass ([`crate::sendpass`]) both ask this.
    pub fn for_write(open: Option<OpenChunk>, offered: usize) -> Option<OpenChunk> {
        match open {
            Some(open) => Some(open),
            None if offered == 0 => None,
            None => Some(OpenChunk::new(offered)),
        }
    }

    /// `self` once `n` bytes of its slices are written: the chunk still open (None once its
    /// CRLF is out) and how many of the `n` were body bytes (what the queue advances by).
    pub fn after(mut self, n: usize) -> (Option<OpenChunk>, usize) {
        let body = self.advance(n);
        ((!self.is_done()).then_some(self), body)
    }
}

/// The chunk a partial write left open, shared by the viewer's [`Chunked`] transport and
/// the tick pass's target, so that each continues exactly where the other stopped.
pub type ChunkState = Rc<RefCell<Option<OpenChunk>>>;

/// A [`Transport`] that frames what is written as chunks (or passes it through, for an
/// HTTP/1.0 client). Reads, the send buffer and shutdown are the socket's own.
pub struct Chunked<T> {
    inner: T,
    chunked: bool,
    /// The chunk a partial write left open (shared with the tick pass: [`Chunked::chunk_state`]).
    open: ChunkState,
}

impl<T: Transport> Chunked<T> {
    /// Frames writes to `inner` as chunks when `chunked`.
    pub fn new(inner: T, chunked: bool) -> Chunked<T> {
        Chunked {
            inner,
            chunked,
            open: Rc::new(RefCell::new(None)),
        }
    }

    /// The open-chunk state the tick pass frames its sends with (None when the body is not
    /// chunked: an HTTP/1.0 body goes out as it is).
    pub fn chunk_state(&self) -> Option<ChunkState> {
        self.chunked.then(|| Rc::clone(&self.open))
    }

    /// The plain socket under the framing (TCP only), for the tick pass.
    pub fn inner_socket_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.plain_socket_fd()
    }

    /// The chunk a write of `offered` payload bytes goes into (see [`OpenChunk::for_write`]).
    fn chunk_for(&self, offered: usize) -> Option<OpenChunk> {
        OpenChunk::for_write(*self.open.borrow(), offered)
    }

    /// Keeps `chunk`, `n` bytes further, open unless it is done; returns the payload bytes.
    fn wrote(&self, chunk: OpenChunk, n: usize) -> usize {
        let (open, body) = chunk.after(n);
        *self.open.borrow_mut() = open;
        body
    }

    /// Writes all of `bytes` as they are (under any chunk framing: the caller frames them),
    /// waiting for the socket when it is full.
    pub async fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            let n = match self
                .inner
                .try_write_vectored(&[IoSlice::new(&bytes[done..])])
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.inner.write_some(&bytes[done..]).await?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                other => other?,
            };
            done += n;
        }
        self.inner.flush().await
    }

    /// Writes `body` whole as a chunk of its own (the FLV header, before the writer starts:
    /// no chunk may be open).
    pub async fn write_chunk(&self, body: &[u8]) -> io::Result<()> {
        if !self.chunked || body.is_empty() {
            return self.write_raw(body).await;
        }
        let chunk = OpenChunk::new(body.len());
        let payload = [IoSlice::new(body)];
        let mut framed = Vec::with_capacity(3);
        chunk.slices(&payload, &mut framed);
        let bytes: Vec<u8> = framed.iter().flat_map(|s| s.iter().copied()).collect();
        self.write_raw(&bytes).await
    }

    /// Ends the body: the last chunk when chunked and no chunk is left open (an open one
    /// cannot be completed: its bytes were dropped with the queue), then whatever a buffering
    /// pipe (TLS) still holds. False when the body could not be ended cleanly.
    pub async fn finish(&self) -> io::Result<bool> {
        if !self.chunked {
            self.inner.flush().await?;
            return Ok(true);
        }
        if self.open.borrow().is_some() {
            return Ok(false);
        }
        self.write_raw(LAST_CHUNK).await?;
        Ok(true)
    }
}

impl<T: Transport> Transport for Chunked<T> {
    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        self.inner.read_into(buf).await
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.chunked {
            return self.inner.try_write_vectored(slices);
        }
        let offered = slices.iter().map(|s| s.len()).sum();
        let Some(chunk) = self.chunk_for(offered) else {
            return Ok(0);
        };
        let mut framed = Vec::with_capacity(slices.len() + 2);
        chunk.slices(slices, &mut framed);
        let n = self.inner.try_write_vectored(&framed)?;
        Ok(self.wrote(chunk, n))
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        if !self.chunked {
            return self.inner.write_some(buf).await;
        }
        let Some(chunk) = self.chunk_for(buf.len()) else {
            return Ok(0);
        };
        let payload = [IoSlice::new(buf)];
        let mut framed = Vec::with_capacity(3);
        chunk.slices(&payload, &mut framed);
        // One slice at a time (the pipe's wait takes one buffer): the size line, the body or
        // the CRLF; the writer comes back for the rest, as after any partial write.
        let Some(first) = framed.first() else {
            return Ok(0);
        };
        let n = self.inner.write_some(first).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(self.wrote(chunk, n))
    }

    async fn flush(&self) -> io::Result<()> {
        // A chunk whose body is all written but whose CRLF is not: finish it now, the writer
        // has nothing more to send.
        loop {
            let open = *self.open.borrow();
            match open {
                Some(chunk) if chunk.body_left() == 0 => {
                    let mut framed = Vec::with_capacity(1);
                    chunk.slices(&[], &mut framed);
                    let n = self.inner.write_some(&framed[0]).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    self.wrote(chunk, n);
                }
                _ => break,
            }
        }
        self.inner.flush().await
    }

    fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.inner.set_send_buffer_size(bytes)
    }

    fn expect_little_input(&self) {
        self.inner.expect_little_input();
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }

    fn label(&self) -> &'static str {
        "http_flv"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes `payload` through chunks opened for `offers` (payload bytes offered per write)
    /// with the kernel taking `takes` bytes each time; returns the wire bytes.
    fn wire(payload: &[u8], offers: &[usize], takes: &[usize]) -> Vec<u8> {
        let (mut out, mut front, mut open) = (Vec::new(), 0, None::<OpenChunk>);
        let mut takes = takes.iter().cycle();
        let mut offers = offers.iter().cycle();
        while front < payload.len() || open.is_some() {
            let rest = &payload[front..];
            let offered = (*offers.next().expect("offers")).clamp(1, rest.len().max(1));
            let chunk = open.unwrap_or_else(|| OpenChunk::new(offered.min(rest.len())));
            let slices = [IoSlice::new(&rest[..offered.min(rest.len())])];
            let mut framed = Vec::new();
            chunk.slices(&slices, &mut framed);
            let all: Vec<u8> = framed.iter().flat_map(|s| s.to_vec()).collect();
            let n = (*takes.next().expect("takes")).clamp(1, all.len());
            out.extend_from_slice(&all[..n]);
            let mut chunk = chunk;
            front += chunk.advance(n);
            open = (!chunk.is_done()).then_some(chunk);
        }
        out
    }

    /// Decodes chunked `wire` (all chunks non-empty), returning the body.
    fn unchunk(mut wire: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        while !wire.is_empty() {
            let line = wire.windows(2).position(|w| w == CRLF).expect("size line");
            let len = usize::from_str_radix(std::str::from_utf8(&wire[..line]).expect("hex"), 16)
                .expect("size");
            assert!(len > 0, "an empty chunk before the end");
            let start = line + 2;
            body.extend_from_slice(&wire[start..start + len]);
            assert_eq!(&wire[start + len..start + len + 2], CRLF, "chunk end");
            wire = &wire[start + len + 2..];
        }
        body
    }

    #[test]
    fn a_whole_write_is_one_chunk_with_its_size_in_hex() {
        let chunk = OpenChunk::new(0x1a2b);
        let payload = vec![7u8; 0x1a2b];
        let slices = [
            IoSlice::new(&payload[..0x1000]),
            IoSlice::new(&payload[0x1000..]),
        ];
        let mut framed = Vec::new();
        chunk.slices(&slices, &mut framed);
        assert_eq!(framed.len(), 4, "size line, two payload slices, CRLF");
        assert_eq!(&*framed[0], b"1a2b\r\n");
        assert_eq!(&*framed[3], b"\r\n");
        assert_eq!(&OpenChunk::new(1).head[..3], b"1\r\n");
        assert_eq!(&OpenChunk::new(16).head[..4], b"10\r\n");
    }

    #[test]
    fn an_open_chunk_takes_no_more_than_its_body() {
        let mut chunk = OpenChunk::new(5);
        assert_eq!(chunk.advance(4), 1, "the size line, then one body byte");
        let payload = [IoSlice::new(b"bcdefgh")];
        let mut framed = Vec::new();
        chunk.slices(&payload, &mut framed);
        assert_eq!(framed.len(), 2);
        assert_eq!(&*framed[0], b"bcde");
        assert_eq!(&*framed[1], b"\r\n");
        assert_eq!(chunk.advance(5), 4);
        assert!(!chunk.is_done());
        assert_eq!(chunk.advance(1), 0);
        assert!(chunk.is_done());
    }

    proptest! {
        #[test]
        fn any_partial_writes_frame_the_payload_exactly(
            payload in proptest::collection::vec(any::<u8>(), 1..600),
            offers in proptest::collection::vec(1usize..300, 1..8),
            takes in proptest::collection::vec(1usize..200, 1..8),
        ) {
            let wire = wire(&payload, &offers, &takes);
            prop_assert_eq!(unchunk(&wire), payload);
        }
    }
}
