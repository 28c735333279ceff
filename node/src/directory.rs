//! The node-wide stream directory: which core publishes a stream, and which cores have
//! players for it.
//!
//! Touched only on the control path (publish, unpublish, a core's first player joining or last
//! player leaving), never per frame, so a plain mutex is the simplest correct tool. Every
//! decision that must be atomic across cores is made under it:
//! - a publisher claims a name and, in the same step, learns which cores already wait for it;
//! - a core registering its first player learns, in the same step, who publishes (if anyone).
//!
//! Exactly one of the two sees the other, so a waiting core is subscribed exactly once.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::mesh::CoreId;

/// A live publisher: where it runs and which incarnation it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherRef {
    /// The core the publisher's connection lives on.
    pub core: CoreId,
    /// Unique per publish, so stale messages about an earlier incarnation are ignored.
    pub generation: u64,
}

#[derive(Debug, Default)]
struct Entry {
    publisher: Option<PublisherRef>,
    /// Bit N set: core N has at least one player of this stream.
    player_cores: u64,
}

/// The stream name is already published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyPublished;

/// Shared by all cores.
#[derive(Debug, Default)]
pub struct Directory {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Directory {
    /// Claims `key` for `publisher`. Returns the cores (other than the publisher's) that have
    /// players waiting, as a bit mask.
    pub fn claim(&self, key: &str, publisher: PublisherRef) -> Result<u64, AlreadyPublished> {
        let mut entries = self.lock();
        let entry = entries.entry(key.to_owned()).or_default();
        if entry.publisher.is_some() {
            return Err(AlreadyPublished);
        }
        entry.publisher = Some(publisher);
        Ok(entry.player_cores & !publisher.core.bit())
    }

    /// Releases `key` if `publisher` still holds it.
    pub fn release(&self, key: &str, publisher: PublisherRef) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            if entry.publisher == Some(publisher) {
                entry.publisher = None;
            }
            if entry.publisher.is_none() && entry.player_cores == 0 {
                entries.remove(key);
            }
        }
    }

    /// Records that `core` now has players of `key`; returns the live publisher, if any.
    pub fn add_player_core(&self, key: &str, core: CoreId) -> Option<PublisherRef> {
        let mut entries = self.lock();
        let entry = entries.entry(key.to_owned()).or_default();
        entry.player_cores |= core.bit();
        entry.publisher
    }

    /// Records that `core` has no players of `key` left; returns the live publisher, if any.
    pub fn remove_player_core(&self, key: &str, core: CoreId) -> Option<PublisherRef> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
        entry.player_cores &= !core.bit();
        let publisher = entry.publisher;
        if publisher.is_none() && entry.player_cores == 0 {
            entries.remove(key);
        }
        publisher
    }

    /// The cores with players of `key`, as a bit mask.
    pub fn player_cores(&self, key: &str) -> u64 {
        self.lock().get(key).map_or(0, |e| e.player_cores)
    }

    /// The live publisher of `key`, if any.
    pub fn publisher(&self, key: &str) -> Option<PublisherRef> {
        self.lock().get(key).and_then(|e| e.publisher)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single field write), so a poisoned lock is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(core: usize, generation: u64) -> PublisherRef {
        PublisherRef {
            core: CoreId(core),
            generation,
        }
    }

    #[test]
    fn second_claim_is_refused_until_release() {
        let d = Directory::default();
        assert_eq!(d.claim("live/a", publisher(0, 1)), Ok(0));
        assert_eq!(d.claim("live/a", publisher(1, 2)), Err(AlreadyPublished));
        d.release("live/a", publisher(1, 2)); // not the holder: no effect
        assert_eq!(d.publisher("live/a"), Some(publisher(0, 1)));
        d.release("live/a", publisher(0, 1));
        assert_eq!(d.claim("live/a", publisher(1, 2)), Ok(0));
    }

    #[test]
    fn waiting_cores_are_seen_by_exactly_one_side() {
        let d = Directory::default();
        // Core 1 waits before the publish: the claim reports it.
        assert_eq!(d.add_player_core("live/a", CoreId(1)), None);
        assert_eq!(d.claim("live/a", publisher(0, 7)), Ok(0b10));
        // Core 2 arrives after: it learns the publisher instead.
        assert_eq!(
            d.add_player_core("live/a", CoreId(2)),
            Some(publisher(0, 7))
        );
        // The publisher's own core is never reported as waiting.
        d.release("live/a", publisher(0, 7));
        assert_eq!(d.add_player_core("live/a", CoreId(0)), None);
        assert_eq!(d.claim("live/a", publisher(0, 8)), Ok(0b110));
    }

    #[test]
    fn entries_vanish_when_unused() {
        let d = Directory::default();
        d.add_player_core("live/a", CoreId(1));
        assert_eq!(d.remove_player_core("live/a", CoreId(1)), None);
        assert!(d.lock().is_empty());
    }
}
