//! Resource names under a publish's prefix: what the playlist links to and what the server looks
//! up.
//!
//! `init.mp4`, `s{msn}.m4s` for a segment and `p{msn}.{index}.m4s` for a part. The caller's
//! random prefix changes with every publish and the media sequence number only grows within
//! one, so a name is never reused: that is what lets a CDN cache them as immutable.

/// A resource of one stream, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The init segment.
    Init,
    /// A media segment.
    Segment {
        /// Its media sequence number.
        msn: u64,
    },
    /// A partial segment.
    Part {
        /// Its segment's media sequence number.
        msn: u64,
        /// Its index in the segment.
        index: usize,
    },
}

impl Resource {
    /// The file name (without the prefix).
    pub fn name(&self) -> String {
        match self {
            Resource::Init => "init.mp4".to_string(),
            Resource::Segment { msn } => format!("s{msn}.m4s"),
            Resource::Part { msn, index } => format!("p{msn}.{index}.m4s"),
        }
    }

    /// Parses a file name (without the prefix); `None` for anything else.
    pub fn parse(name: &str) -> Option<Resource> {
        if name == "init.mp4" {
            return Some(Resource::Init);
        }
        let stem = name.strip_suffix(".m4s")?;
        if let Some(msn) = stem.strip_prefix('s') {
            return Some(Resource::Segment { msn: number(msn)? });
        }
        let (msn, index) = stem.strip_prefix('p')?.split_once('.')?;
        Some(Resource::Part {
            msn: number(msn)?,
            index: usize::try_from(number(index)?).ok()?,
        })
    }
}

/// A decimal number with no sign, no leading zero and no other spelling, so one resource has
/// exactly one name (a cache never holds two copies).
fn number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn other_spellings_are_not_names() {
        for bad in [
            "s01.m4s", "s+1.m4s", "p1.m4s", "p1..m4s", "s1.mp4", "", "init.m4s", "s.m4s",
        ] {
            assert_eq!(Resource::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn names_round_trip(msn in any::<u64>(), index in 0usize..10_000, which in 0u8..3) {
            let resource = match which {
                0 => Resource::Init,
                1 => Resource::Segment { msn },
                _ => Resource::Part { msn, index },
            };
            prop_assert_eq!(Resource::parse(&resource.name()), Some(resource));
        }

        #[test]
        fn parse_never_panics(name in ".{0,24}") {
            let _ = Resource::parse(&name);
        }
    }
}
