//! What the plain-HTTP fast lane ([`crate::httpd::fastlane`]) answers of HLS without hyper:
//! an object that exists now, answered exactly as [`super::serve`] answers it.
//!
//! - `/hls/{app}/{name}/{prefix}/{file}`: the init segment, a segment or a part of the live
//!   publish with that prefix, when it is in the window. Anything that would wait (the hinted
//!   part), or be refused (404, 400), is left to hyper and the route.
//! - `/hls/{app}/{name}/plain.m3u8`: the plain playlist once rendered, where play is `open`
//!   for the app and the node does not pull (an edge's playlist request counts as a viewer,
//!   which the route does). A token check, a callback or a wait is the route's.
//!
//! Paths come from the lane with no query and nothing percent-encoded ([`target`], sans-IO),
//! so a segment is what the router's decoding would give. Nothing here allocates: the stream
//! key is joined on the stack and the body is the object's shared `Bytes`.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use corecast_hls::{Flavor, Resource};

use super::serve::{MEDIA_CACHE, PLAYLIST_CACHE, PLAYLIST_TYPE};
use super::HlsStream;
use crate::config::AuthMode;
use crate::core::CoreContext;
use crate::httpd::lane::Meta;

/// Longest `app/name` looked up from the lane (longer: the route's).
const MAX_KEY: usize = 256;

/// An HLS path the lane may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/hls/{app}/{name}/plain.m3u8`.
    Playlist {
        /// The app.
        app: &'a str,
        /// The stream's name.
        name: &'a str,
    },
    /// `/hls/{app}/{name}/{prefix}/{file}`.
    Media {
        /// The app.
        app: &'a str,
        /// The stream's name.
        name: &'a str,
        /// The publish's prefix.
        prefix: &'a str,
        /// `init.mp4`, `s{n}.m4s`, `p{n}.{i}.m4s` (or anything: the route's 404).
        file: &'a str,
    },
}

/// The HLS object `path` names, when it has exactly the routes' shape (no empty segment, no
/// trailing slash: the router's looser forms are its own).
pub fn target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix("/hls/")?;
    let mut segments = [""; 4];
    let mut count = 0;
    for segment in rest.split('/') {
        if segment.is_empty() || count == segments.len() {
            return None;
        }
        segments[count] = segment;
        count += 1;
    }
    match (count, segments) {
        (3, [app, name, "plain.m3u8", _]) => Some(Target::Playlist { app, name }),
        (4, [app, name, prefix, file]) => Some(Target::Media {
            app,
            name,
            prefix,
            file,
        }),
        _ => None,
    }
}

/// The lane's answer to a `GET` of `path` (see the module's doc); None leaves it to hyper.
pub fn answer(ctx: &Rc<CoreContext>, path: &str, body: &mut Vec<Bytes>) -> Option<Meta> {
    match target(path)? {
        Target::Media {
            app,
            name,
            prefix,
            file,
        } => {
            let resource = Resource::parse(file)?;
            let stream = lookup(ctx, app, name).filter(|s| s.prefix == prefix)?;
            media(&stream, resource, body)
        }
        Target::Playlist { app, name } => {
            if ctx.config().cluster.pulls() || ctx.auth().play_mode(app) != AuthMode::Open {
                return None;
            }
            let stream = lookup(ctx, app, name)?;
            let text = stream.rendered.get(&stream.muxer(), Flavor::Plain)?;
            body.push(text);
            Some(Meta {
                content_type: PLAYLIST_TYPE,
                cache: PLAYLIST_CACHE,
            })
        }
    }
}

/// `resource` of `stream` if it exists now (as `corecast_hls::blocking::resource` finds it).
fn media(stream: &HlsStream, resource: Resource, body: &mut Vec<Bytes>) -> Option<Meta> {
    let muxer = stream.muxer();
    let content_type = match resource {
        Resource::Init => {
            body.push(muxer.init()?.clone());
            "video/mp4"
        }
        Resource::Segment { msn } => {
            let segment = muxer.window().segment(msn)?;
            match &segment.whole {
                Some(whole) => body.push(whole.clone()),
                None => body.extend(segment.parts.iter().map(|p| p.bytes.clone())),
            }
            "video/iso.segment"
        }
        Resource::Part { msn, index } => {
            body.push(muxer.window().part(msn, index)?.bytes.clone());
            "video/iso.segment"
        }
    };
    Some(Meta {
        content_type,
        cache: MEDIA_CACHE,
    })
}

/// The live stream `app/name`, its key joined on the stack.
fn lookup(ctx: &CoreContext, app: &str, name: &str) -> Option<Arc<HlsStream>> {
    let mut key = [0u8; MAX_KEY];
    let len = app.len() + 1 + name.len();
    if len > MAX_KEY {
        return None;
    }
    key[..app.len()].copy_from_slice(app.as_bytes());
    key[app.len()] = b'/';
    key[app.len() + 1..len].copy_from_slice(name.as_bytes());
    ctx.shared.hls.get(std::str::from_utf8(&key[..len]).ok()?)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_the_routes_exact_shapes_are_targets() {
        assert_eq!(
            target("/hls/live/cam/plain.m3u8"),
            Some(Target::Playlist {
                app: "live",
                name: "cam"
            })
        );
        assert_eq!(
            target("/hls/live/cam/AbC_9/s12.m4s"),
            Some(Target::Media {
                app: "live",
                name: "cam",
                prefix: "AbC_9",
                file: "s12.m4s"
            })
        );
        for path in [
            "/hls/live/cam/index.m3u8",
            "/hls/live/cam/master.m3u8",
            "/hls/live/cam/plain.m3u8/",
            "/hls//cam/plain.m3u8",
            "/hls/live/cam/p/s1.m4s/",
            "/hls/live/cam/p/s1.m4s/x",
            "/hls/live/cam",
            "/api/v1/streams",
            "/live/cam.flv",
            "hls/live/cam/plain.m3u8",
        ] {
            assert_eq!(target(path), None, "{path}");
        }
    }

    proptest! {
        #[test]
        fn a_target_is_what_the_segments_say(
            segments in prop::collection::vec("[a-zA-Z0-9._~-]{0,6}", 0..7),
        ) {
            let path = format!("/{}", segments.join("/"));
            if let Some(found) = target(&path) {
                prop_assert_eq!(&segments[0], "hls");
                let (app, name) = match found {
                    Target::Playlist { app, name } => {
                        prop_assert_eq!(segments.len(), 4);
                        prop_assert_eq!(&segments[3], "plain.m3u8");
                        (app, name)
                    }
                    Target::Media { app, name, prefix, file } => {
                        prop_assert_eq!(segments.len(), 5);
                        prop_assert_eq!((prefix, file), (&*segments[3], &*segments[4]));
                        (app, name)
                    }
                };
                prop_assert_eq!((app, name), (&*segments[1], &*segments[2]));
                prop_assert!(segments.iter().all(|s| !s.is_empty()));
            }
        }
    }
}
