//! A target's stop signal: set from the stream's core when the stream ends or the codec guard
//! refuses the target; awaited by the target's task in every wait it makes.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Set once; wakes the one task waiting on it.
#[derive(Default)]
pub struct Stop {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Stop {
    /// Sets the signal and wakes the waiter.
    pub fn set(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Resolves once the signal is set.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.get() {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}
