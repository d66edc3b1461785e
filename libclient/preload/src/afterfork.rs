//! Locks held across fork.
//!
//! A lock that a forked child needs must be free in the child, whatever the parent's
//! other threads were doing: `pthread_atfork`'s prepare handler takes it (so no other
//! thread is inside it when the process forks) and hands the guard to [`hold`]; the
//! parent and child handlers [`release`] it. These locks are `std::sync` ones on
//! purpose: parking_lot's unlock may hand the lock straight to a thread parked on it
//! (its fair unlock), and in the child such a thread never runs, so the lock would stay
//! taken for good (a forked child hung in its first `open` this way). std's futex locks
//! just clear their state and wake whoever sleeps on it.

use std::any::Any;
use std::cell::RefCell;

thread_local! {
    /// Guards taken by the prepare handler in the forking thread.
    static HELD: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `guard` until [`release`] (atfork prepare, in the forking thread).
pub fn hold<G: Any>(guard: G) {
    HELD.with(|h| h.borrow_mut().push(Box::new(guard)));
}

/// Drops the guards [`hold`] kept, last taken first (atfork parent and child).
pub fn release() {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        while let Some(g) = h.pop() {
            drop(g);
        }
    });
}
