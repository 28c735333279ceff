//! What a `keys` publish's authorization costs: `Registry::authorize` from a caller to the
//! registry thread and back (a key lookup by hash, the lease and the outbox row written in
//! one transaction) on an embedded SQLite file on this machine. Prints p50/p99/max over
//! `CORECAST_BENCH_N` (default 2000) publishes of distinct livestreams.
//!
//!   cargo bench -p corecast-node --bench registry

use std::sync::Arc;
use std::time::Instant;

use corecast_node::config::Config;
use corecast_node::metrics::NodeMetrics;
use corecast_node::registry::{key, now_ms, store, Registry};
use futures_lite::future::block_on;

fn main() {
    let n: usize = std::env::var("CORECAST_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.registry.path = dir.path().join("registry.db").display().to_string();
    config.webhooks.urls = Vec::new();
    let config = Arc::new(config);
    let metrics = NodeMetrics::new();
    let registry = Registry::start(&config, &metrics)
        .expect("registry opens")
        .expect("registry configured");
    let keys: Vec<String> = (0..n)
        .map(|i| {
            let k = key::new_key();
            let (id, hash) = (format!("ls_bench{i}"), key::hash(&k));
            block_on(registry.call(move |db, _| {
                store::create(db, &id, "bench", &hash, &serde_json::json!({}), now_ms())
            }))
            .expect("create");
            k
        })
        .collect();
    let mut took: Vec<u128> = keys
        .iter()
        .map(|k| {
            let start = Instant::now();
            block_on(registry.authorize("live", k, 0)).expect("authorized");
            start.elapsed().as_micros()
        })
        .collect();
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    println!(
        "registry authorize (sqlite, {n} publishes): p50 {} us, p99 {} us, max {} us",
        at(0.50),
        at(0.99),
        took[took.len() - 1]
    );
}
