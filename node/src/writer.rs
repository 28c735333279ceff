//! The connection writer: drains a [`SubscriberQueue`] onto a [`Transport`] with vectored
//! writes, many frames per syscall.
//!
//! With `merge_window_ms` > 0, queued media waits for the core's next flush tick
//! ([`crate::tick`], at most one window), so frames batch up: less CPU per byte, more latency.
//! Replies, a joining player's first frames and a full batch skip the wait. Under load batches
//! grow by themselves: while one write waits for the socket, more frames queue behind it.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use crate::queue::SubscriberQueue;
use crate::tick;
use crate::transport::Transport;
use crate::util::with_timeout;

/// Most slices handed to one `sendmsg` (the kernel's IOV_MAX is 1024).
const MAX_SLICES: usize = 512;
/// Most bytes offered to one `sendmsg`.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

thread_local! {
    /// The core's slice list, kept between writes (each write would allocate one otherwise:
    /// one per player per window; issue 19). Only one write gathers at a time on a core.
    static SLICES: Cell<Vec<IoSlice<'static>>> = const { Cell::new(Vec::new()) };
}

/// Empties `v` and hands back its allocation as a list for slices of another lifetime (the
/// standard library collects a map of a `Vec`'s own iterator in place; no slice survives).
fn recycle<'b>(mut v: Vec<IoSlice<'_>>) -> Vec<IoSlice<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("emptied")).collect()
}

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Wait this long for more frames before writing (zero: write at once).
    pub merge_window: Duration,
    /// Give up on a socket that accepts nothing for this long.
    pub send_timeout: Duration,
}

/// Why a writer stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The socket failed.
    #[error("write failed: {0}")]
    Io(#[from] io::Error),
    /// The peer read nothing for the whole send timeout.
    #[error("peer accepted no bytes for {0:?}")]
    Stalled(Duration),
}

/// Writes until the queue is closed (Ok) or the socket fails.
/// `sent` is told every byte count written (for metrics and per-client counters).
pub async fn run_writer<T: Transport>(
    transport: &T,
    queue: &Rc<RefCell<SubscriberQueue>>,
    settings: WriterSettings,
    sent: &dyn Fn(usize),
) -> Result<(), WriteError> {
    let batching = !settings.merge_window.is_zero();
    if batching {
        tick::start(settings.merge_window);
    }
    queue.borrow_mut().set_batching(batching);
    loop {
        let closed = poll_fn(|cx| {
            let mut q = queue.borrow_mut();
            if q.is_closed() {
                return Poll::Ready(true);
            }
            if q.ready_to_write() {
                return Poll::Ready(false);
            }
            // Replies and closing wake the writer at once; queued media waits for the tick.
            q.set_writer(cx.waker());
            if !q.is_empty() {
                q.defer_writer();
            }
            Poll::Pending
        })
        .await;
        if closed {
            if !queue.borrow().overflowed() {
                // A finished queue is written out entirely, including what a buffering pipe
                // (TLS) still holds; an overflowed one is abandoned at once.
                with_timeout(settings.send_timeout, transport.flush())
                    .await
                    .ok_or(WriteError::Stalled(settings.send_timeout))??;
            }
            return Ok(());
        }
        let _busy = crate::sendpass::WriterBusy::enter(queue);
        drain(transport, queue, settings.send_timeout, sent).await?;
    }
}

/// Writes everything queued right now (and whatever is queued meanwhile).
///
/// The slices borrow the queue's `Bytes` rather than cloning them: a clone bumps the payload's
/// reference count, which is shared with every other core's players. Only when the socket is
/// full is the front slice cloned, to be held across the wait.
async fn drain<T: Transport>(
    transport: &T,
    queue: &Rc<RefCell<SubscriberQueue>>,
    send_timeout: Duration,
    sent: &dyn Fn(usize),
) -> Result<(), WriteError> {
    loop {
        let result = {
            let q = queue.borrow();
            if q.is_closed() {
                return Ok(());
            }
            if q.is_empty() {
                None
            } else {
                // The slices borrow the queue only for this block: no await while they live.
                let mut slices = recycle(SLICES.take());
                q.gather(&mut slices, MAX_SLICES, MAX_BATCH_BYTES);
                let result = transport.try_write_vectored(&slices);
                SLICES.set(recycle(slices));
                Some(result)
            }
        };
        let Some(result) = result else {
            // Everything queued was accepted; a buffering pipe (TLS) may still hold some of it.
            with_timeout(send_timeout, transport.flush())
                .await
                .ok_or(WriteError::Stalled(send_timeout))??;
            return Ok(());
        };
        match result {
            Ok(n) => {
                sent(n);
                queue.borrow_mut().advance(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let Some(front) = queue.borrow().front_slice() else {
                    return Ok(());
                };
                let n = with_timeout(send_timeout, transport.write_some(&front))
                    .await
                    .ok_or(WriteError::Stalled(send_timeout))??;
                sent(n);
                queue.borrow_mut().advance(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_slice_list_keeps_its_room() {
        let bytes = [1u8; 4];
        let mut v = vec![IoSlice::new(&bytes); 40];
        v.reserve(24);
        let (cap, ptr) = (v.capacity(), v.as_ptr() as usize);
        let back: Vec<IoSlice<'static>> = recycle(v);
        assert!(back.is_empty());
        assert_eq!((back.capacity(), back.as_ptr() as usize), (cap, ptr));
    }
}
