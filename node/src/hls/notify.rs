//! A change counter that requests on any core can wait on and the owning core bumps.
//!
//! Parked HLS requests live on whichever core received them; the muxer's owner runs on
//! another thread. glommio wakers may be woken from a foreign thread, so the owner takes the
//! waiters' wakers under a lock and wakes them; each woken request asks the muxer again. The
//! counter is read under the same lock a waiter registers under, so no change is missed.
//! (A waiter that gave up leaves its waker until the next change: at most one per parked
//! request, dropped at the next part.)
//!
//! The owner may also ask to be woken when a request parks ([`Notify::wake_on_wait`]): an
//! unwatched publisher's input is read only every few hundred milliseconds
//! (`session::pace`), and a parked request needs the next part now.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// The counter and its waiters.
#[derive(Default)]
pub struct Notify(Mutex<State>);

#[derive(Default)]
struct State {
    version: u64,
    waiters: Vec<Waker>,
    /// Woken (once) when a waiter registers.
    on_wait: Option<Waker>,
}

impl Notify {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counter now.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Counts a change and wakes every waiter.
    pub fn bump(&self) {
        let wakers = {
            let mut state = self.lock();
            state.version += 1;
            std::mem::take(&mut state.waiters)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether a request waits for the next change (or gave up since the last one).
    pub fn has_waiters(&self) -> bool {
        !self.lock().waiters.is_empty()
    }

    /// Wakes `waker` once, when the next waiter registers (the latest waker given replaces
    /// the one before).
    pub fn wake_on_wait(&self, waker: &Waker) {
        let mut state = self.lock();
        if !state.on_wait.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.on_wait = Some(waker.clone());
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
        if state.version != self.seen {
            return Poll::Ready(());
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        let owner = state.on_wait.take();
        drop(state);
        if let Some(owner) = owner {
            owner.wake();
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
        assert!(!notify.has_waiters(), "wakers taken");
    }

    #[test]
    fn a_request_that_parks_wakes_the_owner_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let owner = Arc::new(Count(AtomicUsize::new(0)));
        let notify = Notify::default();
        notify.wake_on_wait(&Waker::from(Arc::clone(&owner)));
        assert!(!notify.has_waiters());
        let waker = futures_task_noop();
        let mut cx = Context::from_waker(&waker);
        let mut first = Box::pin(notify.changed(notify.version()));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(notify.has_waiters());
        assert_eq!(
            owner.0.load(Ordering::SeqCst),
            1,
            "woken when the request parked"
        );
        let mut second = Box::pin(notify.changed(notify.version()));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(owner.0.load(Ordering::SeqCst), 1, "once per wake_on_wait");
        notify.bump();
        assert!(!notify.has_waiters());
    }

    fn futures_task_noop() -> Waker {
        Waker::noop().clone()
    }
}
