//! A change counter that requests on any core can wait on and the owning core bumps.
//!
//! Parked HLS requests live on whichever core received them; the muxer's owner runs on
//! another thread. glommio wakers may be woken from a foreign thread, so the owner takes the
//! waiters' wakers under a lock and wakes them; each woken request asks the muxer again. The
//! counter is read under the same lock a waiter registers under, so no change is missed.
//! (A waiter that gave up leaves its waker until the next change: at most one per parked
//! request, dropped at the next part.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// The counter and its waiters.
#[derive(Default)]
pub struct Notify(Mutex<(u64, Vec<Waker>)>);

impl Notify {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Waker>)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counter now.
    pub fn version(&self) -> u64 {
        self.lock().0
    }

    /// Counts a change and wakes every waiter.
    pub fn bump(&self) {
        let wakers = {
            let mut state = self.lock();
            state.0 += 1;
            std::mem::take(&mut state.1)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once the counter is past `seen`.
    pub fn changed(&self, seen: u64) -> Changed<'_> {
        Changed { notify: self, seen }
    }
}

/// See [`Notify::changed`].
pub struct Changed<'a> {
    notify: &'a Notify,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.notify.lock();
        if state.0 != self.seen {
            return Poll::Ready(());
        }
        if !state.1.iter().any(|w| w.will_wake(cx.waker())) {
            state.1.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_after_registering_wakes_and_resolves() {
        let notify = Notify::default();
        let seen = notify.version();
        let mut changed = Box::pin(notify.changed(seen));
        let waker = futures_task_noop();
        let mut cx = Context::from_waker(&waker);
        assert!(changed.as_mut().poll(&mut cx).is_pending());
        notify.bump();
        assert!(changed.as_mut().poll(&mut cx).is_ready());
        assert!(notify.0.lock().unwrap().1.is_empty(), "wakers taken");
    }

    fn futures_task_noop() -> Waker {
        Waker::noop().clone()
    }
}
