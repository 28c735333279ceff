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

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

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

/// Shared by all cores.
#[derive(Debug, Default)]
pub struct Directory {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Directory {
    /// Claims `key` for `publisher`. Returns the cores (other than the publisher's) that have
    /// players waiting, each with its registration.
    pub fn claim(
        &self,
        key: &str,
        publisher: PublisherRef,
    ) -> Result<Vec<(CoreId, Interest)>, AlreadyPublished> {
        let mut entries = self.lock();
        let entry = entries.entry(key.to_owned()).or_default();
        if entry.publisher.is_some() {
            return Err(AlreadyPublished);
        }
        entry.publisher = Some(publisher);
        Ok(others(&entry.players, publisher.core))
    }

    /// Releases `key` if `publisher` still holds it.
    pub fn release(&self, key: &str, publisher: PublisherRef) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            if entry.publisher == Some(publisher) {
                entry.publisher = None;
            }
            if entry.unused() {
                entries.remove(key);
            }
        }
    }

    /// Records that `core` now has players of `key` (registration `interest`); returns the
    /// live publisher, if any.
    pub fn add_player_core(
        &self,
        key: &str,
        core: CoreId,
        interest: Interest,
    ) -> Option<PublisherRef> {
        let mut entries = self.lock();
        let entry = entries.entry(key.to_owned()).or_default();
        entry.players.retain(|(c, _)| *c != core);
        entry.players.push((core, interest));
        entry.publisher
    }

    /// Records that `core` has no players of `key` left; returns the live publisher, if any.
    pub fn remove_player_core(&self, key: &str, core: CoreId) -> Option<PublisherRef> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
        entry.players.retain(|(c, _)| *c != core);
        let publisher = entry.publisher;
        if entry.unused() {
            entries.remove(key);
        }
        publisher
    }

    /// The cores other than `except` with players of `key`, each with its registration.
    pub fn player_cores(&self, key: &str, except: CoreId) -> Vec<(CoreId, Interest)> {
        self.lock()
            .get(key)
            .map_or_else(Vec::new, |e| others(&e.players, except))
    }

    /// True when some core has players of `key`.
    pub fn has_players(&self, key: &str) -> bool {
        self.lock().get(key).is_some_and(|e| !e.players.is_empty())
    }

    /// The live publisher of `key`, if any.
    pub fn publisher(&self, key: &str) -> Option<PublisherRef> {
        self.lock().get(key).and_then(|e| e.publisher)
    }

    /// Streams with an entry (a publisher or players).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no stream has an entry: nothing is published or played.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single field write or a retain), so a poisoned lock is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
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
    fn entries_vanish_when_unused() {
        let d = Directory::default();
        d.add_player_core("live/a", CoreId(1), Interest(1));
        assert_eq!(d.remove_player_core("live/a", CoreId(1)), None);
        assert!(d.is_empty());
    }
}
