//! Per-file exclusion between sends from a chunk file's mapping and cuts of the file: a
//! mapped byte past a file's end raises SIGBUS, so a cut waits for the file's sends in
//! flight, and sends of the file wait while it is cut. Only the file's own sends and
//! cuts wait for each other: a client that stalls in the middle of a transfer (up to the
//! RMA deadline) holds up cuts of that file alone, not of the files that happen to share
//! a lock with it.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The files being sent from or cut now.
#[derive(Default)]
pub struct Uncut {
    held: Mutex<Held>,
    /// Signalled when a send or a cut ends while somebody waits.
    ended: Condvar,
}

/// What [`Uncut`] guards.
#[derive(Default)]
struct Held {
    files: HashMap<u64, Users>,
    /// Threads waiting on [`Uncut::ended`] (none almost always: a send that ends then
    /// makes no futex call; every remote read ends one).
    waiting: u32,
}

/// Who holds one file now.
#[derive(Default)]
struct Users {
    sends: u32,
    /// A cut holds the file or waits for its sends to end (new sends then wait too, so
    /// a stream of reads cannot keep a cut out).
    cut: bool,
}

/// A send of a file's bytes from its mapping: the file is not cut until this is dropped.
pub struct Sending<'a> {
    uncut: &'a Uncut,
    id: u64,
}

/// A cut of a file: nothing is sent from its mappings until this is dropped.
pub struct FileCut<'a> {
    uncut: &'a Uncut,
    id: u64,
}

impl Uncut {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits, with `g` let go meanwhile, while `busy` says file `id` is held.
    fn wait_while<'a>(
        &self,
        mut g: MutexGuard<'a, Held>,
        id: u64,
        busy: impl Fn(&Users) -> bool,
    ) -> MutexGuard<'a, Held> {
        while g.files.get(&id).is_some_and(&busy) {
            g.waiting += 1;
            g = self.ended.wait(g).unwrap_or_else(|e| e.into_inner());
            g.waiting -= 1;
        }
        g
    }

    /// Waits while file `id` is cut, then keeps it from being cut until dropped.
    pub fn sending(&self, id: u64) -> Sending<'_> {
        let mut g = self.wait_while(self.held(), id, |u| u.cut);
        g.files.entry(id).or_default().sends += 1;
        Sending { uncut: self, id }
    }

    /// Waits for another cut of file `id` and for its sends to end, then keeps new
    /// sends of it out until dropped.
    pub fn cutting(&self, id: u64) -> FileCut<'_> {
        let mut g = self.wait_while(self.held(), id, |u| u.cut);
        g.files.entry(id).or_default().cut = true;
        drop(self.wait_while(g, id, |u| u.sends > 0));
        FileCut { uncut: self, id }
    }

    /// Lets go of file `id` by `end` (a send or the cut), forgetting the file once
    /// nobody holds it, and wakes whoever waits.
    fn end(&self, id: u64, end: impl FnOnce(&mut Users)) {
        let mut g = self.held();
        if let Some(u) = g.files.get_mut(&id) {
            end(u);
            if u.sends == 0 && !u.cut {
                g.files.remove(&id);
            }
        }
        let waiting = g.waiting > 0;
        drop(g);
        if waiting {
            self.ended.notify_all();
        }
    }

    /// Files held now (sent from or cut).
    #[cfg(test)]
    fn files_held(&self) -> usize {
        self.held().files.len()
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.uncut.end(self.id, |u| u.sends -= 1);
    }
}

impl Drop for FileCut<'_> {
    fn drop(&mut self) {
        self.uncut.end(self.id, |u| u.cut = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Runs `f` on a thread of `s`; the flag says when it has returned.
    fn spawn<'s>(
        s: &'s std::thread::Scope<'s, '_>,
        f: impl FnOnce() + Send + 's,
    ) -> Arc<AtomicBool> {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        s.spawn(move || {
            f();
            d.store(true, Ordering::SeqCst);
        });
        done
    }

    /// Did it return (within 10 s)?
    fn returns(done: &AtomicBool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while !done.load(Ordering::SeqCst) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        done.load(Ordering::SeqCst)
    }

    /// Does it still wait after 100 ms?
    fn waits(done: &AtomicBool) -> bool {
        std::thread::sleep(Duration::from_millis(100));
        !done.load(Ordering::SeqCst)
    }

    #[test]
    fn a_send_holds_up_cuts_of_its_own_file_only() {
        let u = Uncut::default();
        // Files 1 and 65 shared one lock when the files were split in 64 shards.
        let send = u.sending(1);
        std::thread::scope(|s| {
            let other = spawn(s, || drop(u.cutting(65)));
            assert!(returns(&other), "a cut of another file waited for a send");
            let own = spawn(s, || drop(u.cutting(1)));
            assert!(waits(&own), "a cut did not wait for its file's send");
            drop(send);
            assert!(returns(&own), "the cut did not go on after the send ended");
        });
        assert_eq!(u.files_held(), 0);
    }

    #[test]
    fn a_waiting_cut_keeps_new_sends_of_its_file_out_and_others_go_on() {
        let u = Uncut::default();
        let first = u.sending(7);
        std::thread::scope(|s| {
            let cut = spawn(s, || drop(u.cutting(7)));
            assert!(waits(&cut));
            // The cut waits: a new send of file 7 waits behind it, one of file 71 does not.
            let late = spawn(s, || drop(u.sending(7)));
            assert!(
                returns(&spawn(s, || drop(u.sending(71)))),
                "a send of another file waited"
            );
            assert!(waits(&late), "a new send went past a waiting cut");
            drop(first);
            assert!(returns(&cut) && returns(&late));
        });
        assert_eq!(u.files_held(), 0);
    }

    #[test]
    fn sends_of_one_file_share_it_and_its_cuts_take_turns() {
        let u = Uncut::default();
        let a = u.sending(3);
        let b = u.sending(3);
        drop(a);
        drop(b);
        let c = u.cutting(3);
        std::thread::scope(|s| {
            let second = spawn(s, || drop(u.cutting(3)));
            assert!(waits(&second), "two cuts of one file at once");
            drop(c);
            assert!(returns(&second));
        });
        assert_eq!(u.files_held(), 0);
    }
}
