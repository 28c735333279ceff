//! Where one player stands in the prepared stream, for the zero-delay writers ([`crate::pass`]):
//! what is due for it next as I/O slices, and how far a write of `n` bytes moves it.
//!
//! It is the bookkeeping of [`crate::feed`]'s `write_due`, split into "what to send" and "what
//! was sent" so that a writer may hand the send to the kernel in a batch (io_uring) and learn
//! the result later.

use std::io::IoSlice;
use std::net::TcpStream;

use bytes::{Buf, Bytes};

use crate::stream::{Frame, PreparedStream};

/// Most slices handed to one send, as Corecast's writer.
pub const MAX_SLICES: usize = 512;

/// One player being fed.
pub struct Cursor {
    /// Its socket (non-blocking).
    pub stream: TcpStream,
    /// What is left of the header (metadata, sequence headers).
    prefix: Vec<Bytes>,
    /// Next frame to write.
    next: usize,
    /// Bytes of that frame already written.
    offset: usize,
}

impl Cursor {
    /// A player that joins at `now_ms`: the header, then the newest key frame.
    pub fn new(stream: TcpStream, prepared: &PreparedStream, now_ms: u64) -> Cursor {
        Cursor {
            stream,
            prefix: prepared.header.clone(),
            next: prepared.join_index(now_ms),
            offset: 0,
        }
    }

    /// Pushes onto `slices` what is due by `now_ms` and not yet written (at most
    /// [`MAX_SLICES`]); returns its length in bytes.
    pub fn due<'a>(
        &'a self,
        frames: &'a [Frame],
        now_ms: u64,
        slices: &mut Vec<IoSlice<'a>>,
    ) -> usize {
        let mut len = 0;
        for p in &self.prefix {
            slices.push(IoSlice::new(p));
            len += p.len();
        }
        let mut skip = self.offset;
        let due = frames
            .get(self.next..)
            .unwrap_or_default()
            .iter()
            .take_while(|f| f.due_ms <= now_ms);
        for part in due.flat_map(|f| &f.parts) {
            if slices.len() >= MAX_SLICES {
                break;
            }
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(IoSlice::new(&part[skip..]));
            len += part.len() - skip;
            skip = 0;
        }
        len
    }

    /// Moves past `written` bytes of what [`Cursor::due`] offered.
    pub fn advance(&mut self, frames: &[Frame], written: usize) {
        let mut n = written;
        while n > 0 {
            let Some(first) = self.prefix.first_mut() else {
                break;
            };
            let take = n.min(first.len());
            first.advance(take);
            n -= take;
            if first.is_empty() {
                self.prefix.remove(0);
            }
        }
        n += self.offset;
        while let Some(frame) = frames.get(self.next) {
            if n < frame.len {
                break;
            }
            n -= frame.len;
            self.next += 1;
        }
        self.offset = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecast_loadtest::source::SyntheticSettings;
    use std::net::TcpListener;

    fn stream() -> PreparedStream {
        let settings = SyntheticSettings {
            bitrate_kbps: 1000,
            audio_kbps: 64,
            fps: 30,
            gop_frames: 60,
        };
        PreparedStream::new(settings, 3, 0)
    }

    fn socket() -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        TcpStream::connect(listener.local_addr().unwrap()).unwrap()
    }

    #[test]
    fn partial_writes_offer_exactly_the_rest_in_order() {
        let s = stream();
        let mut whole = Vec::new();
        let c = Cursor::new(socket(), &s, 0);
        let mut slices = Vec::new();
        c.due(&s.frames, 1000, &mut slices);
        for sl in &slices {
            whole.extend_from_slice(sl);
        }
        // The same bytes, taken 777 at a time.
        let mut c = Cursor::new(socket(), &s, 0);
        let mut pieces = Vec::new();
        loop {
            let mut slices = Vec::new();
            let len = c.due(&s.frames, 1000, &mut slices);
            if len == 0 {
                break;
            }
            let take = len.min(777);
            let mut left = take;
            for sl in &slices {
                let t = left.min(sl.len());
                pieces.extend_from_slice(&sl[..t]);
                left -= t;
            }
            c.advance(&s.frames, take);
        }
        assert_eq!(pieces, whole);
        assert!(!whole.is_empty());
    }
}
