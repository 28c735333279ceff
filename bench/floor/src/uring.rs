//! io_uring batched sends for the zero-delay floor (`--send uring`): a pass queues one
//! `IORING_OP_SENDMSG` per player with what is due for it and submits them all with one
//! `io_uring_enter`, waiting for every completion before the players move on.
//!
//! The sends carry `MSG_DONTWAIT`, so a full socket completes at once with `-EAGAIN` (the
//! player waits for the next wake, as with `sendmsg`) and a partial write completes with its
//! length (no `MSG_WAITALL`, so io_uring does not retry it): exactly `sendmsg`'s semantics,
//! with one syscall per pass instead of one per player.

use std::io::IoSlice;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};

use crate::cursor::Cursor;
use crate::stream::Frame;

/// Submission queue entries: the most sends in one submit; a larger pass is cut in batches.
const ENTRIES: u32 = 1024;

/// Passes over the players while one of them took all it was offered and has more due.
const MAX_ROUNDS: usize = 8;

/// A ring and the per-send headers it points into while a batch is in flight.
pub struct UringSender {
    ring: IoUring,
    headers: Vec<libc::msghdr>,
}

impl UringSender {
    /// A ring of [`ENTRIES`] entries.
    pub fn new() -> std::io::Result<UringSender> {
        Ok(UringSender {
            ring: IoUring::new(ENTRIES)?,
            headers: Vec::with_capacity(ENTRIES as usize),
        })
    }

    /// Writes every player what is due by `now_ms`, in batches of one submission; marks in
    /// `failed` the players whose socket failed. Returns the bytes written.
    pub fn pass(
        &mut self,
        players: &mut [Cursor],
        frames: &[Frame],
        now_ms: u64,
        failed: &mut [bool],
    ) -> std::io::Result<u64> {
        let mut total = 0;
        let mut pending: Vec<usize> = (0..players.len()).collect();
        for _ in 0..MAX_ROUNDS {
            let mut again = Vec::new();
            for batch in pending.chunks(ENTRIES as usize) {
                total += self.batch(players, batch, frames, now_ms, failed, &mut again)?;
            }
            if again.is_empty() {
                break;
            }
            pending = again;
        }
        Ok(total)
    }

    /// One submission for the players at `batch`; those that took everything offered go on
    /// `again` (more may be due).
    fn batch(
        &mut self,
        players: &mut [Cursor],
        batch: &[usize],
        frames: &[Frame],
        now_ms: u64,
        failed: &mut [bool],
        again: &mut Vec<usize>,
    ) -> std::io::Result<u64> {
        // The slices and headers must stay put until every completion is in: both live here
        // and are only read by the kernel inside `submit_and_wait` below.
        let mut slices: Vec<Vec<IoSlice<'_>>> = Vec::with_capacity(batch.len());
        let mut offered = Vec::with_capacity(batch.len());
        for &i in batch {
            let mut s = Vec::new();
            offered.push(players[i].due(frames, now_ms, &mut s));
            slices.push(s);
        }
        self.headers.clear();
        for s in &slices {
            // SAFETY: an all-zero msghdr is a valid empty one.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSlice is ABI-compatible with iovec on Unix.
            h.msg_iov = s.as_ptr() as *mut libc::iovec;
            h.msg_iovlen = s.len() as _;
            self.headers.push(h);
        }
        let mut queued = 0;
        {
            let mut sq = self.ring.submission();
            for (k, &i) in batch.iter().enumerate() {
                if offered[k] == 0 {
                    continue;
                }
                let fd = types::Fd(players[i].stream.as_raw_fd());
                let entry = opcode::SendMsg::new(fd, &self.headers[k])
                    .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
                    .build()
                    .user_data(k as u64);
                // SAFETY: the header and the slices it points to outlive the submission (see
                // above); the queue has room, since a batch is at most ENTRIES long.
                unsafe { sq.push(&entry) }.map_err(|_| std::io::Error::other("sq full"))?;
                queued += 1;
            }
        }
        if queued == 0 {
            return Ok(0);
        }
        // The kernel may still read the slices until every completion is in, so an interrupted
        // wait is resumed, and any other failure ends the process rather than free them early.
        loop {
            match self.ring.submit_and_wait(queued) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("corecast-floor: io_uring wait failed with sends in flight: {e}");
                    std::process::abort();
                }
            }
        }
        let mut written = vec![None; batch.len()];
        for cqe in self.ring.completion() {
            written[cqe.user_data() as usize] = Some(cqe.result());
        }
        drop(slices);
        let mut total = 0;
        for (k, &i) in batch.iter().enumerate() {
            match written[k] {
                Some(n) if n >= 0 => {
                    let n = n as usize;
                    total += n as u64;
                    players[i].advance(frames, n);
                    if n == offered[k] && n > 0 {
                        again.push(i);
                    }
                }
                Some(e) if -e == libc::EAGAIN || -e == libc::EINTR => {}
                Some(_) => failed[i] = true,
                None => {}
            }
        }
        Ok(total)
    }
}
