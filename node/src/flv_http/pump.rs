//! The pump of one HTTP-FLV viewer: its queue's bytes into its response body, zero-copy
//! (each chunk is a slice of a shared FLV tag part).

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::Poll;

use bytes::Bytes;

use crate::httpd::body::BodySender;
use crate::queue::SubscriberQueue;

/// Moves what `queue` holds into `body` until either ends; `sent` is told each chunk's
/// length once the body took it. Returns why it ended (a static label).
pub async fn run(
    queue: &RefCell<SubscriberQueue>,
    mut body: BodySender,
    sent: &dyn Fn(usize),
) -> &'static str {
    loop {
        let Some(chunk) = next(queue).await else {
            return if queue.borrow().overflowed() {
                "slow_consumer"
            } else {
                "closed"
            };
        };
        let n = chunk.len();
        // Waits while the body's channel is full: the queue meanwhile fills and applies the
        // slow-viewer policy.
        if body.send(chunk).await.is_err() {
            return "peer_closed";
        }
        queue.borrow_mut().advance(n);
        sent(n);
    }
}

/// The queue's next unsent bytes, once there are some; None once it is closed.
async fn next(queue: &RefCell<SubscriberQueue>) -> Option<Bytes> {
    poll_fn(|cx| {
        let mut q = queue.borrow_mut();
        if q.is_closed() {
            return Poll::Ready(None);
        }
        match q.front_slice() {
            Some(chunk) => Poll::Ready(Some(chunk)),
            None => {
                q.set_writer(cx.waker());
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::frame::{FrameData, LocalFrame, MediaKind};
    use crate::httpd::body::Body;
    use crate::queue::QueueLimits;
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
                let mut out = Vec::new();
                while out.len() < expected.len() {
                    let frame =
                        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx))
                            .await;
                    let data = frame
                        .expect("a frame")
                        .expect("ok")
                        .into_data()
                        .expect("data");
                    out.extend_from_slice(&data);
                }
                queue.borrow_mut().finish();
                out
            };
            let (reason, out) = futures_lite::future::zip(run(&queue, tx, &sent), drain).await;
            assert_eq!(out, expected);
            reason
        });
        assert_eq!(reason, "closed");
        assert_eq!(total.get(), expected.len());
    }
}
