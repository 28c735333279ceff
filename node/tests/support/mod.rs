//! Test support: start the real `corecast` binary, make media with ffmpeg, drive raw RTMP.
#![allow(dead_code)]

pub mod callback;
pub mod client;
pub mod frames;
pub mod http;
pub mod livestreams;
pub mod media;
pub mod netns;
pub mod node;
pub mod process;
pub mod prometheus;
pub mod rss;
pub mod rtmpt;
pub mod tls;
pub mod token;

use std::time::{Duration, Instant};

/// Polls `f` until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
