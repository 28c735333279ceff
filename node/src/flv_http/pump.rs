//! The pump of one HTTP-FLV viewer: its queue's bytes into its response body, a merge window
//! at a time, zero-copy.
//!
//! It batches as an RTMP player's writer does ([`crate::writer`]): queued media waits for the
//! core's flush tick (`player.merge_window_ms`), a join's snapshot goes at once, and what is
//! queued then leaves as one [`Batch`] of the shared FLV tag parts: one body frame, which
//! hyper writes as one chunk in one vectored `sendmsg`. The pump takes a batch from the queue
//! only once the body's channel has room, so a viewer that stops reading leaves its bytes in
//! the queue, where the slow-viewer bounds apply.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use bytes::Buf;

use crate::httpd::batch::Batch;
use crate::httpd::body::BodySender;
use crate::queue::SubscriberQueue;

/// Most slices in one batch: hyper gathers at most 64 slices per write, two of them the
/// chunk's size line and trailer.
const MAX_SLICES: usize = 60;
/// Most bytes in one batch (a join's snapshot, a whole GOP, goes in a few).
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Moves what `queue` holds into `body` until either ends, batched by `merge_window` (zero:
/// whatever is queued at each wake-up); `sent` is told each batch's length once the body
/// took it. Returns why it ended (a static label).
pub async fn run(
    queue: &RefCell<SubscriberQueue>,
    mut body: BodySender,
    merge_window: Duration,
    sent: &dyn Fn(usize),
) -> &'static str {
    start_batching(queue, merge_window);
    loop {
        if body.ready().await.is_err() {
            return "peer_closed";
        }
        if !ready(queue).await {
            return if queue.borrow().overflowed() {
                "slow_consumer"
            } else {
                "closed"
            };
        }
        let batch = take(&mut queue.borrow_mut(), MAX_SLICES, MAX_BATCH_BYTES);
        let n = batch.remaining();
        // The channel had room and only this task sends: this never waits.
        if body.send(batch).await.is_err() {
            return "peer_closed";
        }
        sent(n);
    }
}

/// Makes `queue` wait for the core's flush tick when `merge_window` is set (starting this
/// core's clock if nothing did yet).
pub fn start_batching(queue: &RefCell<SubscriberQueue>, merge_window: Duration) {
    let batching = !merge_window.is_zero();
    if batching {
        crate::tick::start(merge_window);
    }
    queue.borrow_mut().set_batching(batching);
}

/// Waits until `queue` should be written (true; see [`SubscriberQueue::ready_to_write`]) or is
/// closed (false), as the RTMP writer does.
pub async fn ready(queue: &RefCell<SubscriberQueue>) -> bool {
    poll_fn(|cx| {
        let mut q = queue.borrow_mut();
        if q.is_closed() {
            return Poll::Ready(false);
        }
        if q.ready_to_write() {
            return Poll::Ready(true);
        }
        // Closing wakes the pump at once; queued media waits for the tick.
        q.set_writer(cx.waker());
        if !q.is_empty() {
            q.defer_writer();
        }
        Poll::Pending
    })
    .await
}

/// Takes the queue's front bytes as one batch of shared slices (no byte copied), at most
/// `max_slices` slices and about `max_bytes` bytes.
pub fn take(queue: &mut SubscriberQueue, max_slices: usize, max_bytes: usize) -> Batch {
    let mut batch = Batch::with_capacity(16);
    while batch.slices() < max_slices && batch.remaining() < max_bytes {
        let slice = match queue.front_slice() {
            Some(slice) => slice,
            None if queue.is_empty() => break,
            None => {
                // An empty item at the front: advancing by nothing drops it.
                queue.advance(0);
                match queue.front_slice() {
                    Some(slice) => slice,
                    None => break,
                }
            }
        };
        queue.advance(slice.len());
        batch.push(slice);
    }
    batch
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::frame::{FrameData, LocalFrame, MediaKind};
    use crate::httpd::body::Body;
    use crate::queue::QueueLimits;
    use bytes::Bytes;
    use hyper::body::Body as _;

    fn frame(ts: u32) -> LocalFrame {
        LocalFrame::new(Arc::new(FrameData::encode(
            MediaKind::Audio,
            ts,
            Bytes::from_static(&[0xAF, 0x01, 7, 7]),
            4096,
        )))
    }

    #[test]
    fn the_body_carries_the_queued_tags_in_order_and_ends_with_the_queue() {
        let queue = RefCell::new(SubscriberQueue::new_flv(QueueLimits {
            soft_max_bytes: 1 << 20,
            hard_max_bytes: 1 << 21,
        }));
        let (tx, mut body) = Body::channel(64);
        let (a, b) = (frame(1), frame(2));
        let expected = [a.flv_parts().concat(), b.flv_parts().concat()].concat();
        queue.borrow_mut().push_frame(a);
        queue.borrow_mut().push_frame(b);
        let total = std::cell::Cell::new(0);
        let sent = |n: usize| total.set(total.get() + n);
        let reason = futures_lite::future::block_on(async {
            let drain = async {
                let (mut out, mut frames) = (Vec::new(), 0);
                while out.len() < expected.len() {
                    let frame =
                        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx))
                            .await;
                    let data = frame
                        .expect("a frame")
                        .expect("ok")
                        .into_data()
                        .expect("data");
                    out.extend_from_slice(&data.collect_bytes());
                    frames += 1;
                }
                assert_eq!(frames, 1, "one wake-up's tags leave as one body frame");
                queue.borrow_mut().finish();
                out
            };
            let pump = run(&queue, tx, Duration::ZERO, &sent);
            let (reason, out) = futures_lite::future::zip(pump, drain).await;
            assert_eq!(out, expected);
            reason
        });
        assert_eq!(reason, "closed");
        assert_eq!(total.get(), expected.len());
    }

    #[test]
    fn a_batch_is_bounded_and_leaves_the_rest_queued() {
        let mut queue = SubscriberQueue::new_flv(QueueLimits {
            soft_max_bytes: 1 << 20,
            hard_max_bytes: 1 << 21,
        });
        let frames: Vec<LocalFrame> = (0..4).map(frame).collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.flv_parts().concat()).collect();
        let parts = frames[0].flv_parts().len();
        for f in frames {
            queue.push_frame(f);
        }
        let first = take(&mut queue, parts + 1, usize::MAX);
        assert_eq!(first.slices(), parts + 1);
        assert_eq!(queue.queued_bytes(), wire.len() - first.remaining());
        let rest = take(&mut queue, 64, usize::MAX);
        assert!(queue.is_empty());
        assert_eq!([first.collect_bytes(), rest.collect_bytes()].concat(), wire);
        assert_eq!(take(&mut queue, 64, usize::MAX).remaining(), 0);
    }
}
