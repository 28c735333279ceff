//! `/metrics` of the real node: process CPU time with its fraction of a second (the kernel's
//! ticks, checked against `/proc` of the node's pid), which build runs, the drain, and when
//! the RTMPS certificate expires (also after a reload).

mod support;

use std::process::Command;
use std::time::Duration;

use support::media::{play_to_file, publish, shared_flv, wait_exit};
use support::node::Node;
use support::process::output_with_deadline;
use support::tls::{rtmps_section, CertFiles, TestCert};
use support::wait_for;

/// Every sample of `name` in a text exposition: (labels as written, value).
fn samples(exposition: &str, name: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = match series.split_once('{') {
                Some((metric, labels)) if metric == name => labels.trim_end_matches('}'),
                None if series == name => "",
                _ => return None,
            };
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(node: &Node) -> String {
    let (status, body) = node.http_request("GET", "/metrics", None);
    assert_eq!(status, 200, "/metrics answered {status}: {body}");
    body
}

fn single(node: &Node, name: &str) -> Option<f64> {
    samples(&scrape(node), name).first().map(|(_, v)| *v)
}

/// User plus system CPU seconds of `pid`, read from `/proc` here.
fn cpu_seconds_of(pid: u32) -> f64 {
    let pid = i32::try_from(pid).expect("pid");
    let stat = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .expect("the node's /proc/PID/stat");
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

#[test]
fn process_cpu_seconds_keep_their_fraction_and_match_the_kernels_count_while_the_node_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "", dir.path());
    // Work for the node: a publisher fanned out to two players.
    let media = shared_flv(20);
    let mut publisher = publish(&media, &node.url("live/burn"));
    let mut players: Vec<_> = (0..2)
        .map(|i| {
            play_to_file(
                &node.url("live/burn"),
                &dir.path().join(format!("p{i}.flv")),
            )
        })
        .collect();
    // Each scrape lies between two readings of /proc (CPU time only grows); the integer
    // counter this replaces read whole seconds, below the first reading as soon as the node
    // had used any fraction of a second. The wait ends at a value with a fraction.
    let mut scrapes = 0;
    let fractional = wait_for(Duration::from_secs(60), || {
        let before = cpu_seconds_of(node.pid());
        let body = scrape(&node);
        let after = cpu_seconds_of(node.pid());
        let exported = samples(&body, "process_cpu_seconds_total")
            .first()
            .map(|(_, v)| *v)
            .expect("cpu series");
        let sent: f64 = samples(&body, "corecast_sent_bytes_total")
            .iter()
            .map(|(_, v)| v)
            .sum();
        scrapes += 1;
        assert!(
            before - 1e-9 <= exported && exported <= after + 1e-9,
            "process_cpu_seconds_total {exported} is not between /proc's {before} and {after}"
        );
        std::thread::sleep(Duration::from_millis(200));
        // Under load: the players have been sent a second or more of media.
        (sent > 100_000.0 && exported > 0.0 && exported.fract() != 0.0).then_some(exported)
    });
    assert!(
        fractional.is_some(),
        "no fractional process_cpu_seconds_total with media flowing in {scrapes} scrapes over 60 s"
    );
    for child in players.iter_mut().chain([&mut publisher]) {
        let _ = child.kill();
        let _ = wait_exit(child, Duration::from_secs(5));
    }
    let body = scrape(&node);
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let value = samples(&body, name).first().map(|(_, v)| *v);
        assert!(value.is_some_and(|v| v > 0.0), "{name}: {value:?}");
    }
}

/// What the build script should have found: `git rev-parse --short HEAD`, or `unknown`
/// outside a git checkout (or `CORECAST_COMMIT` when the build was given one).
fn expected_commit() -> String {
    if let Ok(commit) = std::env::var("CORECAST_COMMIT") {
        return commit;
    }
    let out = output_with_deadline(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        Duration::from_secs(30),
    );
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !commit.is_empty() {
        commit
    } else {
        "unknown".to_owned()
    }
}

#[test]
fn build_info_names_the_crate_version_and_the_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "", dir.path());
    let info = samples(&scrape(&node), "corecast_build_info");
    let version = env!("CARGO_PKG_VERSION");
    let commit = expected_commit();
    assert_eq!(
        info,
        vec![(format!("commit=\"{commit}\",version=\"{version}\""), 1.0)]
    );
}

#[test]
fn draining_is_exported_while_the_node_drains() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::start(1, "[node]\nshutdown_grace_secs = 30\n", dir.path());
    assert_eq!(single(&node, "corecast_draining"), Some(0.0));
    // A connection holds the drain open, so the node keeps serving /metrics while it drains.
    let held = support::client::RtmpClient::connect(node.addr, "live").expect("connect");
    node.terminate();
    let draining = wait_for(Duration::from_secs(10), || {
        (single(&node, "corecast_draining") == Some(1.0)).then_some(())
    });
    assert!(draining.is_some(), "corecast_draining never became 1");
    assert_eq!(node.http_request("GET", "/readyz", None).0, 503);
    drop(held);
    assert_eq!(node.wait_exit(Duration::from_secs(30)), Some(0));
}

/// A self-signed `localhost` certificate valid until midnight UTC of `year`-01-02.
fn certificate_until(year: i32) -> TestCert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.not_after = rcgen::date_time_ymd(year, 1, 2);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn expiries(node: &Node) -> Vec<(String, f64)> {
    samples(
        &scrape(node),
        "corecast_tls_certificate_expiry_timestamp_seconds",
    )
}

#[test]
fn the_served_certificates_expiry_is_exported_per_core_and_follows_a_reload() {
    // 2030-01-02 and 2031-01-02, midnight UTC.
    const FIRST: f64 = 1_893_542_400.0;
    const SECOND: f64 = 1_925_078_400.0;
    let dir = tempfile::tempdir().expect("temp dir");
    let files = CertFiles::in_dir(dir.path());
    files.install(&certificate_until(2030));
    let (toml, _) = rtmps_section(&files, "reload_check_secs = 1\n");
    let node = Node::start(2, &toml, dir.path());
    assert_eq!(
        expiries(&node),
        vec![
            ("core=\"0\"".to_owned(), FIRST),
            ("core=\"1\"".to_owned(), FIRST)
        ]
    );
    files.install(&certificate_until(2031));
    let reloaded = wait_for(Duration::from_secs(20), || {
        let now = expiries(&node);
        (now.len() == 2 && now.iter().all(|(_, v)| *v == SECOND)).then_some(())
    });
    assert!(reloaded.is_some(), "after a reload: {:?}", expiries(&node));
}

#[test]
fn no_certificate_expiry_without_rtmps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "", dir.path());
    assert_eq!(expiries(&node), vec![]);
}

/// The sum of every sample of `name`.
fn total(node: &Node, name: &str) -> f64 {
    samples(&scrape(node), name).iter().map(|(_, v)| v).sum()
}

/// Issue 19 item 5: the merge window's tick runs while a stream is live and parks once no
/// core has one, so an idle node is not woken once per window. `corecast_tick_wakeups_total`
/// counts the ticks: it grows while a player plays and stays flat once everyone has left.
#[test]
fn the_flush_tick_stops_on_a_node_with_no_streams() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "", dir.path());
    let media = shared_flv(20);
    let mut publisher = publish(&media, &node.url("live/tick"));
    let mut player = play_to_file(&node.url("live/tick"), &dir.path().join("p.flv"));
    let ticking = wait_for(Duration::from_secs(30), || {
        (total(&node, "corecast_tick_wakeups_total") >= 10.0).then_some(())
    });
    assert!(
        ticking.is_some(),
        "the tick never ran while a stream played"
    );
    let _ = player.kill();
    let _ = publisher.kill();
    wait_exit(&mut player, Duration::from_secs(10)).expect("player ends");
    wait_exit(&mut publisher, Duration::from_secs(10)).expect("publisher ends");
    let closed = wait_for(Duration::from_secs(30), || {
        (total(&node, "corecast_connections_open") == 0.0).then_some(())
    });
    assert!(closed.is_some(), "the node still holds connections");
    // The last tick may still be on its way (one window); then the count must stay put.
    let mut last = total(&node, "corecast_tick_wakeups_total");
    let settled = wait_for(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = total(&node, "corecast_tick_wakeups_total");
        std::mem::replace(&mut last, now).eq(&now).then_some(now)
    })
    .expect("the tick count never settled");
    // Twenty windows of 100 ms: a running tick would add about twenty.
    std::thread::sleep(Duration::from_secs(2));
    let after = total(&node, "corecast_tick_wakeups_total");
    assert_eq!(
        after, settled,
        "the tick kept waking a node with no streams ({settled} -> {after} in 2 s)"
    );
}
