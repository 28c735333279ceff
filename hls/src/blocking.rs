//! Blocking requests as answers, not waits: given the muxer's state, is a playlist or part
//! request ready now, to be parked until the next [`Event::Part`](crate::Event), or refused?
//!
//! RFC 8216bis 6.2.5.2 (playlist delivery directives `_HLS_msn`, `_HLS_part`) and 6.2.6
//! (the preload hint). The caller parks a "wait" answer on its core and asks again on each
//! part event; nothing here sleeps or polls.
//!
//! # Tricky parts
//! - Out of range is a 400 at once: `_HLS_msn` more than two past the last segment in the
//!   playlist, or `_HLS_part` more than the Advance Part Limit past the last part (three, or
//!   three divided by the part target when that is under a second), or `_HLS_part` alone.
//! - A request for segment M, part P is satisfied by anything later: once M is finished, every
//!   P is ready (the player moves on to M+1).
//! - Only the hinted part (the next one of the current segment) is waited for; when its
//!   segment ends instead, the parked request gets 404, as for any part that will never exist.

use bytes::Bytes;

use crate::muxer::Muxer;
use crate::names::Resource;

/// The delivery directives of a playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaylistQuery {
    /// `_HLS_msn`.
    pub msn: Option<u64>,
    /// `_HLS_part`.
    pub part: Option<usize>,
}

/// Why a query string was refused (answer 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// `_HLS_msn` or `_HLS_part` is not a decimal integer.
    #[error("{0} is not a decimal integer")]
    NotANumber(&'static str),
    /// A directive appears twice.
    #[error("{0} appears twice")]
    Repeated(&'static str),
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
}

impl QueryError {
    /// A short static name, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueryError::NotANumber(_) => "not_a_number",
            QueryError::Repeated(_) => "repeated",
            QueryError::PartWithoutMsn => "part_without_msn",
        }
    }
}

/// Parses a playlist URL's query string (without `?`); other parameters are ignored.
pub fn parse_query(query: &str) -> Result<PlaylistQuery, QueryError> {
    let mut out = PlaylistQuery::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "_HLS_msn" => set(&mut out.msn, "_HLS_msn", value)?,
            "_HLS_part" => {
                let mut part = None;
                set(&mut part, "_HLS_part", value)?;
                if out.part.is_some() {
                    return Err(QueryError::Repeated("_HLS_part"));
                }
                out.part = part.and_then(|p: u64| usize::try_from(p).ok());
                if out.part.is_none() {
                    return Err(QueryError::NotANumber("_HLS_part"));
                }
            }
            _ => {}
        }
    }
    if out.part.is_some() && out.msn.is_none() {
        return Err(QueryError::PartWithoutMsn);
    }
    Ok(out)
}

fn set(slot: &mut Option<u64>, name: &'static str, value: &str) -> Result<(), QueryError> {
    if slot.is_some() {
        return Err(QueryError::Repeated(name));
    }
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let number = value.parse().ok().filter(|_| digits);
    *slot = Some(number.ok_or(QueryError::NotANumber(name))?);
    Ok(())
}

/// What to do with a request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Answer now with this.
    Ready(T),
    /// Park it and ask again on the next part event.
    Wait,
    /// 400: the request is out of range.
    BadRequest,
    /// 404: it does not exist and never will (or no longer does).
    NotFound,
}

/// The Advance Part Limit (6.2.5.2): how many parts past the last one a request may ask for.
fn advance_part_limit(part_target_ms: u32) -> usize {
    if part_target_ms < 1000 {
        (3000 / part_target_ms.max(1)) as usize
    } else {
        3
    }
}

/// Whether a playlist request with these directives can be answered now.
pub fn playlist_readiness(muxer: &Muxer, query: PlaylistQuery) -> Answer<()> {
    let Some(msn) = query.msn else {
        return Answer::Ready(());
    };
    let current = muxer.window().current();
    let (current_msn, parts_done) = (current.msn, current.parts.len());
    let last_listed = if parts_done > 0 {
        Some(current_msn)
    } else {
        current_msn.checked_sub(1)
    };
    if msn > last_listed.map_or(2, |last| last.saturating_add(2)) {
        return Answer::BadRequest;
    }
    if muxer.ended() || msn < current_msn {
        return Answer::Ready(());
    }
    let Some(part) = query.part else {
        return Answer::Wait; // segment `msn` is not finished
    };
    if msn == current_msn && part < parts_done {
        return Answer::Ready(());
    }
    let limit = advance_part_limit(muxer.config().part_target_ms);
    let ahead = if msn == current_msn {
        part + 1 - parts_done
    } else {
        part + 1
    };
    if ahead > limit {
        Answer::BadRequest
    } else {
        Answer::Wait
    }
}

/// The body of a resource, waiting only for the hinted part.
pub fn resource(muxer: &Muxer, resource: Resource) -> Answer<Vec<Bytes>> {
    let window = muxer.window();
    let found = match resource {
        Resource::Init => muxer.init().map(|init| vec![init.clone()]),
        Resource::Segment { msn } => window.segment(msn).map(|s| s.body()),
        Resource::Part { msn, index } => window.part(msn, index).map(|p| vec![p.bytes.clone()]),
    };
    if let Some(body) = found {
        return Answer::Ready(body);
    }
    let current = window.current();
    let hinted = Resource::Part {
        msn: current.msn,
        index: current.parts.len(),
    };
    if resource == hinted && !muxer.ended() && muxer.init().is_some() {
        Answer::Wait
    } else {
        Answer::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_directives_are_parsed_and_checked() {
        assert_eq!(
            parse_query("_HLS_msn=12&_HLS_part=3&x=1"),
            Ok(PlaylistQuery {
                msn: Some(12),
                part: Some(3)
            })
        );
        assert_eq!(parse_query(""), Ok(PlaylistQuery::default()));
        assert_eq!(parse_query("_HLS_part=1"), Err(QueryError::PartWithoutMsn));
        assert_eq!(
            parse_query("_HLS_msn=-1"),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_query("_HLS_msn=+1"),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_query("_HLS_msn=1&_HLS_msn=2"),
            Err(QueryError::Repeated("_HLS_msn"))
        );
        assert_eq!(
            parse_query("_HLS_msn=99999999999999999999999"),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
    }

    #[test]
    fn advance_part_limit_is_three_seconds_of_parts() {
        assert_eq!(advance_part_limit(333), 9);
        assert_eq!(advance_part_limit(200), 15);
        assert_eq!(advance_part_limit(1000), 3);
    }
}
