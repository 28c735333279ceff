//! The node-wide stream directory: which core publishes a stream, and which cores have
//! players for it (with the [`Interest`] each of them registered).
//!
//! Touched only on the control path (publish, unpublish, a core's first player joining or last
//! player leaving, a pull starting or ending), never per frame, so a plain mutex is the
//! simplest correct tool: every core's [`ControlPlane`](super::ControlPlane) holds an `Arc` of
//! the same directory. Every decision that must be atomic across cores is made under it:
//! - a publisher claims a name and, in the same step, learns which cores already wait for it;
//! - a core registering its first player learns, in the same step, who publishes (if anyone).
//!
//! Exactly one of the two sees the other, so a waiting core is subscribed exactly once.
//!
//! It also keeps the book of an edge's pulls, since it already sees every one (a pull is a
//! claim): how many run ([`Directory::claim_pull`] refuses one past the node's cap), the
//! names refused at the cap, in order (the next pull that ends hands its place to the oldest
//! one that players still wait for: a client churning pulls cannot starve a real viewer),
//! and the names no upstream had moments ago (a short negative cache, so a client looping
//! over unknown names does not make the edge ask its upstreams for each of them again and
//! again). Time is passed in; the directory reads no clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::{CoreId, Generation, Interest};

/// A live publisher (or pull): where it runs and which incarnation it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherRef {
    /// The core the publisher's connection (or the pull task) lives on.
    pub core: CoreId,
    /// Unique per publish, so stale messages about an earlier incarnation are ignored.
    pub generation: Generation,
}

#[derive(Debug, Default)]
struct Entry {
    publisher: Option<PublisherRef>,
    /// The cores with at least one player, and the registration each made.
    players: Vec<(CoreId, Interest)>,
    /// The claim is a pull's (counted in [`Book::pulls`] while held).
    pull: bool,
    /// Refused at the pull cap and queued in [`Book::starved`] (so it is queued once).
    starved: bool,
}

impl Entry {
    fn unused(&self) -> bool {
        self.publisher.is_none() && self.players.is_empty()
    }
}

/// The stream name is already published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream is already published")]
pub struct AlreadyPublished;

/// Why [`Directory::claim_pull`] started no pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PullRefusal {
    /// Someone (a publisher or another pull) holds the name already: nothing to start.
    #[error("the stream is already claimed")]
    Claimed,
    /// The node runs its maximum of pulls already.
    #[error("the node runs its maximum of pulls")]
    Capped,
    /// No upstream had the stream moments ago (the negative cache).
    #[error("no upstream had the stream moments ago")]
    Missing,
}

impl PullRefusal {
    /// A static name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PullRefusal::Claimed => "claimed",
            PullRefusal::Capped => "pulls_capped",
            PullRefusal::Missing => "pull_not_found_cached",
        }
    }
}

/// Names remembered as missing at most; past it, expired ones are dropped first and new ones
/// are not remembered (a flood of distinct names must not grow the map without bound; the
/// pull cap still holds them back).
pub const MAX_MISSING: usize = 4096;

#[derive(Debug, Default)]
struct Book {
    entries: HashMap<String, Entry>,
    /// Claims held by pulls.
    pulls: usize,
    /// Names no upstream had, until when they are refused without asking again.
    missing: HashMap<String, Instant>,
    /// Names refused at the cap, oldest first. Removed lazily: a name whose entry is gone or
    /// no longer `starved` is skipped when it comes up, so no refusal scans the queue.
    starved: VecDeque<String>,
}

/// Shared by all cores.
#[derive(Debug, Default)]
pub struct Directory {
    book: Mutex<Book>,
}

impl Directory {
    /// Claims `key` for `publisher`. Returns the cores (other than the publisher's) that have
    /// players waiting, each with its registration.
    pub fn claim(
        &self,
        key: &str,
        publisher: PublisherRef,
    ) -> Result<Vec<(CoreId, Interest)>, AlreadyPublished> {
        let mut book = self.lock();
        let entry = book.entries.entry(key.to_owned()).or_default();
        if entry.publisher.is_some() {
            return Err(AlreadyPublished);
        }
        entry.publisher = Some(publisher);
        entry.pull = false;
        Ok(others(&entry.players, publisher.core))
    }

    /// Claims `key` for a pull by `publisher`, unless it is claimed already, no upstream had
    /// it before `now` (see [`Directory::release_pull`]), or `max_pulls` pulls run already.
    pub fn claim_pull(
        &self,
        key: &str,
        publisher: PublisherRef,
        max_pulls: usize,
        now: Instant,
    ) -> Result<(), PullRefusal> {
        let mut book = self.lock();
        if book.entries.get(key).is_some_and(|e| e.publisher.is_some()) {
            return Err(PullRefusal::Claimed);
        }
        match book.missing.get(key) {
            Some(until) if *until > now => return Err(PullRefusal::Missing),
            Some(_) => {
                book.missing.remove(key);
            }
            None => {}
        }
        if book.pulls >= max_pulls {
            book.starve(key);
            return Err(PullRefusal::Capped);
        }
        book.claim_for_pull(key, publisher);
        Ok(())
    }

    /// Claims, for a pull by `publisher`, the oldest name refused at the cap that players
    /// still wait for (unclaimed, not missing at `now`), if the cap leaves room. Names nobody
    /// waits for any more are dropped on the way.
    pub fn claim_starved_pull(
        &self,
        publisher: PublisherRef,
        max_pulls: usize,
        now: Instant,
    ) -> Option<String> {
        let mut book = self.lock();
        while book.pulls < max_pulls {
            let key = book.starved.pop_front()?;
            let missing = book.missing.get(&key).is_some_and(|until| *until > now);
            let Some(entry) = book.entries.get_mut(&key).filter(|e| e.starved) else {
                continue; // gone, or claimed since
            };
            entry.starved = false;
            if entry.publisher.is_none() && !entry.players.is_empty() && !missing {
                book.claim_for_pull(&key, publisher);
                return Some(key);
            }
        }
        None
    }

    /// Releases `key` if `publisher` still holds it.
    pub fn release(&self, key: &str, publisher: PublisherRef) {
        let mut book = self.lock();
        book.release(key, publisher);
    }

    /// Releases a pull's claim. With `missing_until` (no upstream had the stream), the name is
    /// remembered as missing until then, unless players wait for it: then they get a new pull
    /// rather than a refusal. True when players wait and nobody claims the name, so the
    /// caller should start a new pull.
    pub fn release_pull(
        &self,
        key: &str,
        publisher: PublisherRef,
        missing_until: Option<Instant>,
        now: Instant,
    ) -> bool {
        let mut book = self.lock();
        book.release(key, publisher);
        let waiting = book
            .entries
            .get(key)
            .is_some_and(|e| e.publisher.is_none() && !e.players.is_empty());
        if let (false, Some(until)) = (waiting, missing_until) {
            book.remember_missing(key, until, now);
        }
        waiting
    }

    /// Pulls running now (claims held by pulls).
    pub fn pulls(&self) -> usize {
        self.lock().pulls
    }

    /// True when `key` is remembered as missing at `now`.
    pub fn is_missing(&self, key: &str, now: Instant) -> bool {
        self.lock()
            .missing
            .get(key)
            .is_some_and(|until| *until > now)
    }

    /// Records that `core` now has players of `key` (registration `interest`); returns the
    /// live publisher, if any.
    pub fn add_player_core(
        &self,
        key: &str,
        core: CoreId,
        interest: Interest,
    ) -> Option<PublisherRef> {
        let mut book = self.lock();
        let entry = book.entries.entry(key.to_owned()).or_default();
        entry.players.retain(|(c, _)| *c != core);
        entry.players.push((core, interest));
        entry.publisher
    }

    /// Records that `core` has no players of `key` left; returns the live publisher, if any.
    pub fn remove_player_core(&self, key: &str, core: CoreId) -> Option<PublisherRef> {
        let mut book = self.lock();
        let entry = book.entries.get_mut(key)?;
        entry.players.retain(|(c, _)| *c != core);
        let publisher = entry.publisher;
        if entry.unused() {
            book.entries.remove(key);
        }
        publisher
    }

    /// The cores other than `except` with players of `key`, each with its registration.
    pub fn player_cores(&self, key: &str, except: CoreId) -> Vec<(CoreId, Interest)> {
        self.lock()
            .entries
            .get(key)
            .map_or_else(Vec::new, |e| others(&e.players, except))
    }

    /// True when some core has players of `key`.
    pub fn has_players(&self, key: &str) -> bool {
        self.lock()
            .entries
            .get(key)
            .is_some_and(|e| !e.players.is_empty())
    }

    /// The live publisher of `key`, if any.
    pub fn publisher(&self, key: &str) -> Option<PublisherRef> {
        self.lock().entries.get(key).and_then(|e| e.publisher)
    }

    /// Streams with an entry (a publisher or players). Names remembered as missing are not
    /// entries.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no stream has an entry: nothing is published or played.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single field write or a retain), so a poisoned lock is still consistent.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Book {
    fn claim_for_pull(&mut self, key: &str, publisher: PublisherRef) {
        self.pulls += 1;
        let entry = self.entries.entry(key.to_owned()).or_default();
        entry.publisher = Some(publisher);
        entry.pull = true;
        entry.starved = false;
    }

    /// Queues `key`, refused at the cap, for the next free place: once, and only while
    /// players wait for it (they registered before asking). A full queue first drops the
    /// names that no longer wait; past [`MAX_MISSING`] waiting names, more are not queued
    /// (their players wait for their own wait to end).
    fn starve(&mut self, key: &str) {
        match self.entries.get(key) {
            Some(entry) if !entry.starved && !entry.players.is_empty() => {}
            _ => return,
        }
        if self.starved.len() >= MAX_MISSING {
            let entries = &self.entries;
            self.starved
                .retain(|k| entries.get(k).is_some_and(|e| e.starved));
        }
        if self.starved.len() < MAX_MISSING {
            self.starved.push_back(key.to_owned());
            if let Some(entry) = self.entries.get_mut(key) {
                entry.starved = true;
            }
        }
    }

    fn release(&mut self, key: &str, publisher: PublisherRef) {
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.publisher == Some(publisher) {
                entry.publisher = None;
                if std::mem::take(&mut entry.pull) {
                    self.pulls = self.pulls.saturating_sub(1);
                }
            }
            if entry.unused() {
                self.entries.remove(key);
            }
        }
    }

    fn remember_missing(&mut self, key: &str, until: Instant, now: Instant) {
        if self.missing.len() >= MAX_MISSING {
            self.missing.retain(|_, t| *t > now);
        }
        if self.missing.len() < MAX_MISSING || self.missing.contains_key(key) {
            self.missing.insert(key.to_owned(), until);
        }
    }
}

fn others(players: &[(CoreId, Interest)], except: CoreId) -> Vec<(CoreId, Interest)> {
    players
        .iter()
        .copied()
        .filter(|(c, _)| *c != except)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(core: usize, generation: u64) -> PublisherRef {
        PublisherRef {
            core: CoreId(core),
            generation: Generation(generation),
        }
    }

    #[test]
    fn a_second_claim_is_refused_until_the_holder_releases() {
        let d = Directory::default();
        assert_eq!(d.claim("live/a", publisher(0, 1)), Ok(vec![]));
        assert_eq!(d.claim("live/a", publisher(1, 2)), Err(AlreadyPublished));
        d.release("live/a", publisher(1, 2)); // not the holder: no effect
        assert_eq!(d.publisher("live/a"), Some(publisher(0, 1)));
        d.release("live/a", publisher(0, 1));
        assert_eq!(d.claim("live/a", publisher(1, 2)), Ok(vec![]));
    }

    #[test]
    fn waiting_cores_are_seen_by_exactly_one_side() {
        let d = Directory::default();
        // Core 1 waits before the publish: the claim reports it.
        assert_eq!(d.add_player_core("live/a", CoreId(1), Interest(5)), None);
        assert_eq!(
            d.claim("live/a", publisher(0, 7)),
            Ok(vec![(CoreId(1), Interest(5))])
        );
        // Core 2 arrives after: it learns the publisher instead.
        assert_eq!(
            d.add_player_core("live/a", CoreId(2), Interest(6)),
            Some(publisher(0, 7))
        );
        // The publisher's own core is never reported as waiting.
        d.release("live/a", publisher(0, 7));
        assert_eq!(d.add_player_core("live/a", CoreId(0), Interest(8)), None);
        assert_eq!(
            d.claim("live/a", publisher(0, 8)),
            Ok(vec![(CoreId(1), Interest(5)), (CoreId(2), Interest(6))])
        );
    }

    #[test]
    fn pulls_are_counted_and_capped() {
        let d = Directory::default();
        let now = Instant::now();
        assert_eq!(d.claim_pull("live/a", publisher(0, 1), 2, now), Ok(()));
        assert_eq!(
            d.claim_pull("live/a", publisher(1, 2), 2, now),
            Err(PullRefusal::Claimed)
        );
        assert_eq!(d.claim_pull("live/b", publisher(0, 3), 2, now), Ok(()));
        assert_eq!(
            d.claim_pull("live/c", publisher(0, 4), 2, now),
            Err(PullRefusal::Capped)
        );
        assert_eq!(d.pulls(), 2);
        // A publisher's claim is not a pull.
        assert_eq!(d.claim("live/d", publisher(1, 5)), Ok(vec![]));
        assert_eq!(d.pulls(), 2);
        assert!(!d.release_pull("live/a", publisher(0, 1), None, now));
        assert_eq!(d.pulls(), 1);
        d.release("live/a", publisher(0, 1)); // released already: no effect
        assert_eq!(d.pulls(), 1);
        assert_eq!(d.claim_pull("live/c", publisher(0, 4), 2, now), Ok(()));
    }

    #[test]
    fn a_place_freed_goes_to_the_oldest_name_players_still_wait_for() {
        let d = Directory::default();
        let now = Instant::now();
        assert_eq!(d.claim_pull("live/a", publisher(0, 1), 1, now), Ok(()));
        for key in ["live/gone", "live/b", "live/c"] {
            d.add_player_core(key, CoreId(1), Interest(1));
            assert_eq!(
                d.claim_pull(key, publisher(1, 2), 1, now),
                Err(PullRefusal::Capped)
            );
        }
        d.remove_player_core("live/gone", CoreId(1));
        // No room yet.
        assert_eq!(d.claim_starved_pull(publisher(0, 3), 1, now), None);
        d.release_pull("live/a", publisher(0, 1), None, now);
        assert_eq!(
            d.claim_starved_pull(publisher(0, 3), 1, now).as_deref(),
            Some("live/b")
        );
        assert_eq!(d.publisher("live/b"), Some(publisher(0, 3)));
        assert_eq!(d.pulls(), 1);
        d.release_pull("live/b", publisher(0, 3), None, now);
        assert_eq!(
            d.claim_starved_pull(publisher(0, 4), 1, now).as_deref(),
            Some("live/c")
        );
        assert_eq!(d.claim_starved_pull(publisher(0, 5), 2, now), None);
    }

    #[test]
    fn a_churn_of_refused_names_cannot_crowd_out_one_that_waits() {
        let d = Directory::default();
        let now = Instant::now();
        assert_eq!(d.claim_pull("live/held", publisher(0, 1), 1, now), Ok(()));
        // Far more refused names than the queue holds, each gone right after.
        for i in 0..3 * MAX_MISSING {
            let key = format!("churn/{i}");
            d.add_player_core(&key, CoreId(1), Interest(1));
            assert_eq!(
                d.claim_pull(&key, publisher(1, 2), 1, now),
                Err(PullRefusal::Capped)
            );
            d.remove_player_core(&key, CoreId(1));
        }
        d.add_player_core("live/viewer", CoreId(1), Interest(2));
        assert_eq!(
            d.claim_pull("live/viewer", publisher(1, 3), 1, now),
            Err(PullRefusal::Capped)
        );
        assert!(d.lock().starved.len() <= MAX_MISSING);
        d.release_pull("live/held", publisher(0, 1), None, now);
        assert_eq!(
            d.claim_starved_pull(publisher(0, 4), 1, now).as_deref(),
            Some("live/viewer")
        );
    }

    #[test]
    fn a_missing_name_is_refused_until_its_time_passes() {
        let d = Directory::default();
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        assert_eq!(d.claim_pull("live/x", publisher(0, 1), 9, now), Ok(()));
        assert!(!d.release_pull("live/x", publisher(0, 1), Some(later), now));
        assert!(d.is_missing("live/x", now));
        assert_eq!(
            d.claim_pull("live/x", publisher(0, 2), 9, now),
            Err(PullRefusal::Missing)
        );
        assert_eq!(d.claim_pull("live/x", publisher(0, 3), 9, later), Ok(()));
        assert!(!d.is_missing("live/x", later));
        assert_eq!(d.pulls(), 1);
    }

    #[test]
    fn waiting_players_get_a_new_pull_instead_of_a_missing_mark() {
        let d = Directory::default();
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        assert_eq!(d.claim_pull("live/x", publisher(0, 1), 9, now), Ok(()));
        d.add_player_core("live/x", CoreId(1), Interest(1));
        assert!(d.release_pull("live/x", publisher(0, 1), Some(later), now));
        assert!(!d.is_missing("live/x", now));
        assert_eq!(d.claim_pull("live/x", publisher(1, 2), 9, now), Ok(()));
    }

    #[test]
    fn the_missing_names_stay_bounded() {
        let d = Directory::default();
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        for i in 0..MAX_MISSING + 10 {
            let key = format!("live/{i}");
            assert_eq!(d.claim_pull(&key, publisher(0, 1), 1, now), Ok(()));
            d.release_pull(&key, publisher(0, 1), Some(later), now);
        }
        assert_eq!(d.lock().missing.len(), MAX_MISSING);
        // Once they expired, room is made.
        d.release_pull(
            "live/new",
            publisher(0, 1),
            Some(later + later.duration_since(now)),
            later,
        );
        assert!(d.is_missing("live/new", later));
        assert_eq!(d.lock().missing.len(), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn entries_vanish_when_unused() {
        let d = Directory::default();
        d.add_player_core("live/a", CoreId(1), Interest(1));
        assert_eq!(d.remove_player_core("live/a", CoreId(1)), None);
        assert!(d.is_empty());
    }
}
