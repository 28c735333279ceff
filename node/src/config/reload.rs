//! What a live reload (SIGHUP, `POST /api/v1/reload`) may change. Sockets, executors and
//! the log format are made once at start: a new config that changes one of them is refused
//! whole, naming the fields, and the running config stays. Everything else applies live.

use super::Config;

/// A setting that only a restart changes, and how to compare it.
type Fixed = (&'static str, fn(&Config, &Config) -> bool);

/// The settings a reload cannot change (each compares the running and the new config).
const FIXED: &[Fixed] = &[
    ("node.cores", |a, b| a.node.cores == b.node.cores),
    ("node.pin_cores", |a, b| {
        a.node.pin_cores == b.node.pin_cores
    }),
    ("node.io_memory_bytes", |a, b| {
        a.node.io_memory_bytes == b.node.io_memory_bytes
    }),
    ("node.io_ring_depth", |a, b| {
        a.node.io_ring_depth == b.node.io_ring_depth
    }),
    ("node.core_channel_capacity", |a, b| {
        a.node.core_channel_capacity == b.node.core_channel_capacity
    }),
    ("rtmp.listen", |a, b| a.rtmp.listen == b.rtmp.listen),
    ("rtmps.enabled", |a, b| a.rtmps.enabled == b.rtmps.enabled),
    ("rtmps.listen", |a, b| a.rtmps.listen == b.rtmps.listen),
    ("http.enabled", |a, b| a.http.enabled == b.http.enabled),
    ("http.listen", |a, b| a.http.listen == b.http.listen),
    ("rtmpt.enabled", |a, b| a.rtmpt.enabled == b.rtmpt.enabled),
    ("rtmpt.listen", |a, b| a.rtmpt.listen == b.rtmpt.listen),
    ("cluster.role", |a, b| a.cluster.role == b.cluster.role),
    ("cluster.pull_listen", |a, b| {
        a.cluster.pull_listen == b.cluster.pull_listen
    }),
    ("cluster.pull_tls", |a, b| {
        a.cluster.pull_tls == b.cluster.pull_tls
    }),
    // Pull-ins start once; at run time they change through /api/v1/pulls.
    ("ingest.pull", |a, b| a.ingest.pull == b.ingest.pull),
    ("log.format", |a, b| a.log.format == b.log.format),
];

impl Config {
    /// The settings `next` changes that only a restart can: empty when `next` can be
    /// applied live.
    pub fn fixed_changes(&self, next: &Config) -> Vec<&'static str> {
        FIXED
            .iter()
            .filter(|(_, same)| !same(self, next))
            .map(|(name, _)| *name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        toml::from_str(text).expect("config")
    }

    #[test]
    fn live_settings_may_change_and_fixed_ones_are_named() {
        let running = Config::default();
        let live = parse("[http]\napi_token = \"new\"\n[player]\nmerge_window_ms = 50\n[log]\nlevel = \"debug\"\n");
        assert!(running.fixed_changes(&live).is_empty());
        let fixed = parse("[rtmp]\nlisten = \"127.0.0.1:1999\"\n[node]\ncores = 7\n");
        assert_eq!(
            running.fixed_changes(&fixed),
            vec!["node.cores", "rtmp.listen"]
        );
    }

    #[test]
    fn auth_changes_apply_live() {
        // Each core rebuilds its authorizer (modes, keyring) when [auth] changes.
        let running = Config::default();
        let next = parse("[auth]\nplay = \"callback\"\ncallback_url = \"http://127.0.0.1:9/\"\n");
        assert!(running.fixed_changes(&next).is_empty());
    }

    #[test]
    fn every_fixed_setting_has_a_distinct_name() {
        for (i, (name, _)) in FIXED.iter().enumerate() {
            assert!(FIXED[..i].iter().all(|(other, _)| other != name), "{name}");
        }
    }
}
