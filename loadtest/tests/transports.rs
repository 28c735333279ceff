//! The harness over `rtmps://` and `rtmpt://` against Corecast with its TLS listener (a
//! certificate generated here with rcgen) and its RTMPT listener, each on a free loopback
//! port: the same healthy-run checks as over plain RTMP, certificate verification (a
//! self-signed certificate is refused with a TLS reason unless `--insecure` or `--ca-file`
//! says otherwise), the README's test-CA recipe (a CA and a leaf it signed; the CA file
//! verifies the leaf), the mistakes that recipe avoids (a CA certificate as the server's,
//! a leaf as the CA file) with their hints, and the TLS options' own checks.

// Test helpers unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::cell::Cell;
use std::path::Path;

use serde_json::Value;
use support::{
    assert_healthy, assert_server_measured, free_port, loadtest, loadtest_with_env, num,
    one_at_a_time, start_corecast_with, Server,
};

/// A self-signed certificate (PEM) for `localhost` and 127.0.0.1, and its key.
fn self_signed() -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// A CA certificate (PEM) that has signed nothing the node presents, with its own name.
fn unrelated_ca() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Unrelated test CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// Corecast with RTMPS and RTMPT on; returns it, its RTMPS and RTMPT ports, and the
/// certificate it presents (PEM).
fn start_node() -> (Server, u16, u16, String) {
    let (cert, key) = self_signed();
    let (server, rtmps, rtmpt) = start_node_with(&cert, &key);
    (server, rtmps, rtmpt, cert)
}

/// What the README's openssl recipe makes: a test CA, and a leaf for `localhost` and
/// 127.0.0.1 that it signed (CA:FALSE, serverAuth). Returns the CA (PEM), the leaf (PEM)
/// and the leaf's key.
fn test_ca_and_leaf() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Corecast test CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    leaf.is_ca = rcgen::IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&leaf_key, &ca).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// What `openssl req -x509` makes by default: a self-signed certificate that is also a CA
/// (basicConstraints CA:TRUE), for `localhost` and 127.0.0.1. Returns it and its key.
fn self_signed_ca_as_server() -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// A `sleep` process, killed when dropped: a second "server process" for `--server-pid`.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        support::process::kill_and_reap(&mut self.0);
    }
}

fn sleeper() -> Sleeper {
    Sleeper(
        std::process::Command::new("sleep")
            .arg("120")
            .spawn()
            .unwrap(),
    )
}

/// Corecast with RTMPS (presenting `cert`, with `key`) and RTMPT on; returns it and its
/// RTMPS and RTMPT ports.
fn start_node_with(cert: &str, key: &str) -> (Server, u16, u16) {
    let ports = Cell::new((0, 0));
    let server = start_corecast_with(|dir: &Path| {
        let (rtmps, rtmpt) = (free_port(), free_port());
        ports.set((rtmps, rtmpt));
        let cert_path = dir.join("fullchain.pem");
        let key_path = dir.join("privkey.pem");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let config = dir.join("corecast.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nenabled = false\n\n[rtmps]\nenabled = true\nlisten = \
                 \"127.0.0.1:{rtmps}\"\ncert_chain_path = \"{}\"\nprivate_key_path = \"{}\"\n",
                cert_path.display(),
                key_path.display()
            ),
        )
        .unwrap();
        vec![
            "--config".to_owned(),
            config.display().to_string(),
            "--rtmpt-listen".to_owned(),
            format!("127.0.0.1:{rtmpt}"),
        ]
    });
    let (rtmps, rtmpt) = ports.get();
    (server, rtmps, rtmpt)
}

/// `e2e` with 10 players for 5 s at `url`, server measured.
fn e2e_10_players(server: &Server, url: &str, extra: &[&str]) -> support::Run {
    let pid = server.pid().to_string();
    let mut args = vec![
        "e2e",
        url,
        "--players",
        "10",
        "--duration",
        "5",
        "--cores",
        "1",
        "--ramp",
        "0",
        "--gop-frames",
        "30",
        "--server-pid",
        &pid,
    ];
    args.extend_from_slice(extra);
    loadtest(&args)
}

#[test]
fn e2e_over_rtmps_with_a_self_signed_certificate() {
    let _serial = one_at_a_time();
    let (server, rtmps, _, _) = start_node();
    let url = format!("rtmps://127.0.0.1:{rtmps}/live/tls");
    let run = e2e_10_players(&server, &url, &["--insecure"]);
    assert_healthy(&run, &server, 1.0, 10.0, false);
    assert_server_measured(&run, &server);
    let r = &run.report;
    assert_eq!(r["scenario"]["tls"]["insecure"], Value::Bool(true));
    // Every player read the whole stream as plaintext RTMP bytes.
    assert!(num(r, &["throughput", "bytes_in"]) >= num(r, &["throughput", "media_bytes_in"]));
}

#[test]
fn e2e_over_rtmpt() {
    let _serial = one_at_a_time();
    let (server, _, rtmpt, _) = start_node();
    let url = format!("rtmpt://127.0.0.1:{rtmpt}/live/tunnel");
    let run = e2e_10_players(&server, &url, &[]);
    assert_healthy(&run, &server, 1.0, 10.0, false);
    assert_server_measured(&run, &server);
    let r = &run.report;
    // The tunnel is not free, but it must not hold frames back: polling is answered as soon
    // as the server has bytes, and the publisher sends without polling.
    let p50 = num(r, &["latency", "p50_ms"]);
    assert!(
        p50 < 100.0,
        "latency p50 {p50} ms over rtmpt\n{}",
        run.text()
    );
    let ready = num(r, &["players", "ready_ms", "max"]);
    assert!(
        ready < 1000.0,
        "play start {ready} ms over rtmpt\n{}",
        run.text()
    );
}

#[test]
fn rtmps_verifies_the_certificate_unless_told_otherwise() {
    let _serial = one_at_a_time();
    let (server, rtmps, _, cert) = start_node();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("rtmps://127.0.0.1:{rtmps}/live/verified");

    // The system's CA bundle (here: one unrelated CA, via SSL_CERT_FILE, and no SSL_CERT_DIR)
    // does not know the node's self-signed certificate: every connection fails, with a TLS
    // reason.
    let unrelated = dir.path().join("unrelated-ca.pem");
    std::fs::write(&unrelated, unrelated_ca()).unwrap();
    let run = loadtest_with_env(
        &[
            "play",
            &url,
            "--players",
            "3",
            "--duration",
            "2",
            "--allow-failed",
            "100%",
        ],
        &[
            ("SSL_CERT_FILE", &unrelated),
            ("SSL_CERT_DIR", Path::new("")),
        ],
    );
    assert!(run.output.status.success(), "{}", run.text());
    let r = &run.report;
    assert_eq!(num(r, &["connections", "failed"]), 3.0, "{}", run.text());
    let failure = &r["connections"]["failures"][0];
    assert_eq!(
        failure["reason"],
        "tls_invalid_certificate",
        "{}",
        run.text()
    );
    assert!(
        failure["example"]
            .as_str()
            .is_some_and(|e| e.contains("TLS handshake") && e.contains("UnknownIssuer")),
        "{failure}"
    );
    assert!(String::from_utf8_lossy(&run.output.stdout).contains("tls_invalid_certificate"));

    // Trusting that very certificate (--ca-file) verifies it for real, SNI and all.
    let ca = dir.path().join("node.pem");
    std::fs::write(&ca, cert).unwrap();
    let run = loadtest(&[
        "e2e",
        &url,
        "--players",
        "2",
        "--duration",
        "2",
        "--ramp",
        "0",
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert_healthy(&run, &server, 1.0, 2.0, false);
}

#[test]
fn tls_options_are_checked_before_anything_connects() {
    let port = free_port();
    // --insecure means nothing without TLS: refused as a scenario error (exit 2).
    let run = loadtest(&[
        "play",
        &format!("rtmp://127.0.0.1:{port}/live/x"),
        "--insecure",
    ]);
    assert_eq!(run.output.status.code(), Some(2), "{}", run.text());
    assert!(run.text().contains("rtmps://"), "{}", run.text());
    let run = loadtest(&[
        "play",
        &format!("rtmps://127.0.0.1:{port}/live/x"),
        "--insecure",
        "--ca-file",
        "ca.pem",
    ]);
    assert_eq!(run.output.status.code(), Some(2), "{}", run.text());
    // A CA file that cannot be read stops the run before it starts (exit 1).
    let run = loadtest(&[
        "play",
        &format!("rtmps://127.0.0.1:{port}/live/x"),
        "--ca-file",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(run.output.status.code(), Some(1), "{}", run.text());
    assert!(run.text().contains("reading CA file"), "{}", run.text());
    // So does a system trust store that cannot be read (here: SSL_CERT_FILE names nothing).
    let run = loadtest_with_env(
        &["play", &format!("rtmps://127.0.0.1:{port}/live/x")],
        &[
            ("SSL_CERT_FILE", Path::new("/nonexistent/ca-bundle.pem")),
            // An empty SSL_CERT_DIR names no directory: only the file counts.
            ("SSL_CERT_DIR", Path::new("")),
        ],
    );
    assert_eq!(run.output.status.code(), Some(1), "{}", run.text());
    assert!(
        run.text().contains("reading the system's CA certificates")
            && run.text().contains("/nonexistent/ca-bundle.pem"),
        "{}",
        run.text()
    );
    // Nothing listens there: over TLS and over the tunnel the failure is the TCP connect's.
    for (scheme, extra) in [("rtmps", &["--insecure"][..]), ("rtmpt", &[])] {
        let url = format!("{scheme}://127.0.0.1:{port}/live/x");
        let mut args = vec!["play", &url, "--duration", "1", "--allow-failed", "100%"];
        args.extend_from_slice(extra);
        let run = loadtest(&args);
        assert!(run.output.status.success(), "{}", run.text());
        assert_eq!(
            run.report["connections"]["failures"][0]["reason"],
            "tcp_refused",
            "{}",
            run.text()
        );
    }
}

/// The README's recipe: a test CA and a leaf it signed. `--ca-file ca.pem` verifies the leaf
/// for real (by name and by address); the report also shows the server's processes summed
/// (`--server-pid` repeated and as a list), the thresholds that held, and the HTML header.
#[test]
fn rtmps_verified_with_a_test_ca_and_a_leaf() {
    let _serial = one_at_a_time();
    let (ca, leaf, key) = test_ca_and_leaf();
    let (server, rtmps, _) = start_node_with(&leaf, &key);
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    let html = dir.path().join("report.html");
    let (a, b) = (sleeper(), sleeper());
    let others = format!("{} {}", a.0.id(), b.0.id());
    let url = format!("rtmps://localhost:{rtmps}/live/ca");
    let run = e2e_10_players(
        &server,
        &url,
        &[
            "--ca-file",
            ca_path.to_str().unwrap(),
            "--server-pid",
            &others,
            "--fail-on",
            "ttff_p99>30s",
            "--fail-on",
            "e2e_p99 > 10s",
            "--html",
            html.to_str().unwrap(),
        ],
    );
    assert_healthy(&run, &server, 1.0, 10.0, false);
    assert_server_measured(&run, &server);
    let r = &run.report;
    assert_eq!(r["scenario"]["tls"]["insecure"], Value::Bool(false));
    let pids: Vec<u64> = r["server"]["pids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(
        pids,
        [server.pid(), a.0.id(), b.0.id()].map(u64::from),
        "{}",
        run.text()
    );
    assert_eq!(r["verdict"]["passed"], true, "{}", run.text());
    assert_eq!(r["verdict"]["thresholds"].as_array().unwrap().len(), 2);
    let page = std::fs::read_to_string(&html).unwrap();
    let version = format!("corecast-loadtest {}", env!("CARGO_PKG_VERSION"));
    let host = r["host"].as_str().unwrap();
    let started = r["started_at"].as_str().unwrap();
    assert!(!host.is_empty());
    assert!(started.len() >= 20 && started.ends_with('Z'), "{started}");
    for expected in [version.as_str(), host, started, "Resident memory (MiB)"] {
        assert!(page.contains(expected), "{expected} not in the HTML report");
    }

    // The same CA verifies the node at its address too (the leaf names 127.0.0.1).
    let url = format!("rtmps://127.0.0.1:{rtmps}/live/ca-ip");
    let run = loadtest(&[
        "play",
        &url,
        "--players",
        "2",
        "--duration",
        "1",
        "--ca-file",
        ca_path.to_str().unwrap(),
    ]);
    assert!(run.output.status.success(), "{}", run.text());
    assert_eq!(
        num(&run.report, &["connections", "ok"]),
        2.0,
        "{}",
        run.text()
    );

    // The leaf itself as the CA file trusts nothing the node presents: refused, with a hint.
    let leaf_path = dir.path().join("leaf.pem");
    std::fs::write(&leaf_path, &leaf).unwrap();
    let run = loadtest(&[
        "play",
        &url,
        "--players",
        "2",
        "--duration",
        "1",
        "--ca-file",
        leaf_path.to_str().unwrap(),
    ]);
    assert_eq!(run.output.status.code(), Some(4), "{}", run.text());
    let failure = &run.report["connections"]["failures"][0];
    assert!(
        failure["example"]
            .as_str()
            .is_some_and(|e| e.contains("UnknownIssuer")),
        "{failure}"
    );
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(stdout.contains("pass the CA that signed it"), "{stdout}");
}

/// A self-signed certificate that is also a CA (what `openssl req -x509` makes by default)
/// cannot be a server's certificate: TLS refuses a CA as an end entity, even when the
/// harness trusts it. The run fails with a hint to the recipe; `--insecure` (tests only:
/// no verification at all) connects.
#[test]
fn a_ca_certificate_as_the_servers_own_is_refused_with_a_hint() {
    let _serial = one_at_a_time();
    let (cert, key) = self_signed_ca_as_server();
    let (_server, rtmps, _) = start_node_with(&cert, &key);
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("self.pem");
    std::fs::write(&ca_path, &cert).unwrap();
    let url = format!("rtmps://127.0.0.1:{rtmps}/live/x");
    let args = ["play", &url, "--players", "2", "--duration", "1"];
    let run = loadtest(&[&args[..], &["--ca-file", ca_path.to_str().unwrap()]].concat());
    assert_eq!(run.output.status.code(), Some(4), "{}", run.text());
    let failure = &run.report["connections"]["failures"][0];
    assert_eq!(failure["reason"], "tls_invalid_certificate", "{failure}");
    assert!(
        failure["example"]
            .as_str()
            .is_some_and(|e| e.contains("CaUsedAsEndEntity")),
        "{failure}"
    );
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(
        stdout.contains("presents a CA certificate") && stdout.contains("A test CA for RTMPS"),
        "{stdout}"
    );

    let run = loadtest(&[&args[..], &["--insecure"]].concat());
    assert!(run.output.status.success(), "{}", run.text());
    assert_eq!(
        num(&run.report, &["connections", "ok"]),
        2.0,
        "{}",
        run.text()
    );
}
