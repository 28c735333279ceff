//! The RTMPE pipe: a [`Transport`] that passes bytes through until the handshake says RTMPE,
//! then RC4-decrypts every byte read and RC4-encrypts every byte written.
//!
//! Only listeners with `rtmp.rtmpe = true` wrap their connections in it; the session offers
//! RTMPE in the handshake only over a pipe that says it can ([`Transport::rtmpe_capable`]).
//! The handshake itself travels in the clear; when it is done the session hands the keystreams
//! over with [`Transport::start_rtmpe`], together with the bytes it already read past C2
//! (encrypted, decrypted there) and how many handshake bytes it queued for the writer (S0, S1,
//! S2: those still go out in the clear, however much of them the writer has sent by then).
//!
//! Media fan-out stays shared: the writer hands this pipe the same `Bytes` every player gets,
//! and the pipe copies them into a per-connection buffer to encrypt (RC4 cannot work in
//! place on shared bytes). That copy, per player and per byte, is why RTMPE is off by
//! default. The buffer holds at most [`MAX_STAGED`] bytes: beyond it the pipe reports
//! WouldBlock, so a slow player's backlog stays in its queue, where the keyframe-skip
//! policy sees it, as with TLS.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};

use bytes::BytesMut;
use corecast_common::rtmpe::RtmpeCipher;

use crate::transport::Transport;

/// Most encrypted bytes waiting for the socket.
pub const MAX_STAGED: usize = 256 * 1024;

/// A pipe that turns into RTMPE once the handshake asks for it.
pub struct RtmpeTransport<T> {
    inner: T,
    /// The keystreams, once the handshake is done and was RTMPE.
    cipher: RefCell<Option<RtmpeCipher>>,
    /// Bytes taken from the writer so far (sent or staged), to tell S0+S1+S2 from the rest.
    taken: Cell<usize>,
    /// How many of the first bytes written stay in the clear (the handshake's).
    plain_until: Cell<usize>,
    /// Encrypted bytes accepted from the writer and not sent yet.
    staged: RefCell<Vec<u8>>,
}

impl<T: Transport> RtmpeTransport<T> {
    /// Wraps `inner`; it passes bytes through until [`Transport::start_rtmpe`].
    pub fn new(inner: T) -> RtmpeTransport<T> {
        RtmpeTransport {
            inner,
            cipher: RefCell::new(None),
            taken: Cell::new(0),
            plain_until: Cell::new(usize::MAX),
            staged: RefCell::new(Vec::new()),
        }
    }

    fn armed(&self) -> bool {
        self.cipher.borrow().is_some()
    }

    /// Decrypts the `n` bytes `inner` just appended to `buf` at `start`.
    fn decrypt_new(&self, buf: &mut BytesMut, start: usize, n: usize) {
        if let (Some(cipher), Some(new)) = (
            self.cipher.borrow_mut().as_mut(),
            buf.get_mut(start..start + n),
        ) {
            cipher.decrypt(new);
        }
    }

    /// Copies what fits of `slices` into the staging buffer, encrypting all but the
    /// handshake's bytes; returns how many bytes it took.
    fn stage(&self, slices: &[IoSlice<'_>]) -> usize {
        let mut staged = self.staged.borrow_mut();
        let room = MAX_STAGED.saturating_sub(staged.len());
        let from = staged.len();
        for slice in slices {
            let want = room - (staged.len() - from);
            if want == 0 {
                break;
            }
            staged.extend_from_slice(&slice[..slice.len().min(want)]);
        }
        let taken = staged.len() - from;
        // The first bytes may still be S0+S1+S2, which go out in the clear.
        let plain = self
            .plain_until
            .get()
            .saturating_sub(self.taken.get())
            .min(taken);
        if let (Some(cipher), Some(tail)) = (
            self.cipher.borrow_mut().as_mut(),
            staged.get_mut(from + plain..),
        ) {
            cipher.encrypt(tail);
        }
        self.taken.set(self.taken.get() + taken);
        taken
    }

    /// Sends staged bytes without waiting: Ok once none are left, WouldBlock while some are.
    fn send_staged(&self) -> io::Result<()> {
        let mut staged = self.staged.borrow_mut();
        while !staged.is_empty() {
            let n = self.inner.try_write_vectored(&[IoSlice::new(&staged)])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            staged.drain(..n);
        }
        Ok(())
    }

    /// Waits until the socket takes some staged bytes.
    async fn send_staged_some(&self) -> io::Result<()> {
        // Taken out for the wait: a `RefCell` borrow must not live across an await.
        let staged = std::mem::take(&mut *self.staged.borrow_mut());
        let result = self.inner.write_some(&staged).await;
        let n = *result.as_ref().unwrap_or(&0);
        let mut slot = self.staged.borrow_mut();
        let newer = std::mem::replace(&mut *slot, staged);
        let sent = n.min(slot.len());
        slot.drain(..sent);
        slot.extend_from_slice(&newer);
        result.map(|_| ())
    }
}

impl<T: Transport> Transport for RtmpeTransport<T> {
    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let start = buf.len();
        let n = self.inner.read_into(buf).await?;
        self.decrypt_new(buf, start, n);
        Ok(n)
    }

    fn try_read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let start = buf.len();
        let n = self.inner.try_read_into(buf)?;
        self.decrypt_new(buf, start, n);
        Ok(n)
    }

    fn receive_buffer_bytes(&self) -> Option<usize> {
        self.inner.receive_buffer_bytes()
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.armed() {
            let n = self.inner.try_write_vectored(slices)?;
            self.taken.set(self.taken.get() + n);
            return Ok(n);
        }
        self.send_staged()?;
        let taken = self.stage(slices);
        match self.send_staged() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        if !self.armed() {
            let n = self.inner.write_some(buf).await?;
            self.taken.set(self.taken.get() + n);
            return Ok(n);
        }
        while !self.staged.borrow().is_empty() {
            self.send_staged_some().await?;
        }
        let taken = self.stage(&[IoSlice::new(buf)]);
        match self.send_staged() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    async fn flush(&self) -> io::Result<()> {
        while !self.staged.borrow().is_empty() {
            self.send_staged_some().await?;
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
        self.inner.label()
    }

    fn rtmpe_capable(&self) -> bool {
        true
    }

    fn start_rtmpe(&self, mut cipher: RtmpeCipher, handshake_out: usize, pending: &mut BytesMut) {
        cipher.decrypt(pending);
        self.plain_until.set(handshake_out);
        *self.cipher.borrow_mut() = Some(cipher);
    }
}

#[cfg(test)]
mod tests;
